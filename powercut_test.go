package main

// The power-cut simulator. kill -9 leaves the page cache alone, so the
// crash tests cannot see a missing fsync; a power cut loses whatever was
// not synced. This test records every change the server makes to its files
// (diskTrace, under the platform layer) while a workload with rotations,
// snapshots and compactions runs, then rebuilds the disk as a power cut at
// random points could leave it:
//
//   - everything synced before the cut is there;
//   - of each write not yet synced, an arbitrary subset of its 512-byte
//     sectors is there (torn writes), and a size change may or may not be;
//   - each create, rename and delete not yet followed by a sync of its
//     directory is there or not, in order.
//
// Each image is recovered, and the recovered state must be exactly the
// state after some prefix of the appended records (nothing invented,
// nothing partial) that includes every record acknowledged before the cut
// (fsync policy every_write).
//
//	go test -run TestPowerCut -powercut.cuts=100000 .   # the long run

import (
	"flag"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	powerCuts = flag.Int("powercut.cuts", 1000, "cut points TestPowerCut checks")
	powerSeed = flag.Int64("powercut.seed", 0, "seed for TestPowerCut (0: time-based)")
)

const simSector = 512

// simInode is one file of the simulated disk.
type simInode struct {
	durable []byte  // contents as of the last sync
	cur     []byte  // contents now (the page cache)
	pending []simOp // writes and size changes since the last sync, in order
	name    string  // for messages
	synced  bool    // ever synced
	dirOf   string  // directory it was created in
}

// simOp is a pending change to a file (write, or size when data is nil) or
// to a directory.
type simOp struct {
	off, size int64
	data      []byte
	dir       string // directory ops: the directory
	kind      diskOpKind
	path, to  string
	ino       *simInode
}

// simDisk replays a trace into files and directories with their durable
// and current states.
type simDisk struct {
	files   map[*os.File]*simInode
	cur     map[string]*simInode // path -> file, now
	durable map[string]*simInode // path -> file, as of each directory's last sync
	dirOps  []simOp              // creates, renames and deletes since their directory's sync
}

func newSimDisk() *simDisk {
	return &simDisk{files: map[*os.File]*simInode{}, cur: map[string]*simInode{}, durable: map[string]*simInode{}}
}

func simResize(b []byte, size int64) []byte {
	if int64(len(b)) >= size {
		return b[:size]
	}
	return append(b, make([]byte, size-int64(len(b)))...)
}

func simWrite(b []byte, off int64, data []byte) []byte {
	if end := off + int64(len(data)); end > int64(len(b)) {
		b = simResize(b, end)
	}
	copy(b[off:], data)
	return b
}

func (d *simDisk) apply(op diskOp) {
	switch op.kind {
	case diskOpen:
		ino := d.cur[op.path]
		if ino == nil {
			ino = &simInode{name: op.path, dirOf: filepath.Dir(op.path)}
			d.cur[op.path] = ino
			d.dirOps = append(d.dirOps, simOp{kind: diskOpen, dir: filepath.Dir(op.path), path: op.path, ino: ino})
		}
		d.files[op.f] = ino
	case diskWrite:
		ino := d.files[op.f]
		ino.cur = simWrite(ino.cur, op.off, op.data)
		ino.pending = append(ino.pending, simOp{off: op.off, data: op.data})
	case diskTruncate:
		ino := d.files[op.f]
		ino.cur = simResize(ino.cur, op.size)
		ino.pending = append(ino.pending, simOp{size: op.size})
	case diskAllocate:
		ino := d.files[op.f]
		if op.size > int64(len(ino.cur)) {
			ino.cur = simResize(ino.cur, op.size)
			ino.pending = append(ino.pending, simOp{size: op.size})
		}
	case diskSync:
		ino := d.files[op.f]
		ino.durable = slices.Clone(ino.cur)
		ino.pending = nil
		ino.synced = true
	case diskRename:
		ino := d.cur[op.path]
		delete(d.cur, op.path)
		d.cur[op.to] = ino
		d.dirOps = append(d.dirOps, simOp{kind: diskRename, dir: filepath.Dir(op.to), path: op.path, to: op.to, ino: ino})
	case diskRemove:
		ino := d.cur[op.path]
		delete(d.cur, op.path)
		d.dirOps = append(d.dirOps, simOp{kind: diskRemove, dir: filepath.Dir(op.path), path: op.path, ino: ino})
	case diskSyncDir:
		dir := filepath.Clean(op.path)
		kept := d.dirOps[:0]
		for _, o := range d.dirOps {
			if o.dir != dir {
				kept = append(kept, o)
				continue
			}
			d.applyDirOp(d.durable, o)
		}
		d.dirOps = kept
	}
}

func (d *simDisk) applyDirOp(names map[string]*simInode, o simOp) {
	switch o.kind {
	case diskOpen:
		names[o.path] = o.ino
	case diskRename:
		if names[o.path] == o.ino {
			delete(names, o.path)
		}
		names[o.to] = o.ino
	case diskRemove:
		if names[o.path] == o.ino {
			delete(names, o.path)
		}
	}
}

// image writes what a power cut now could leave on disk under dir.
func (d *simDisk) image(rng *rand.Rand, root, dir string) error {
	names := make(map[string]*simInode, len(d.durable))
	for p, ino := range d.durable {
		names[p] = ino
	}
	for _, o := range d.dirOps {
		if rng.Intn(2) == 0 {
			d.applyDirOp(names, o)
		}
	}
	for p, ino := range names {
		b := slices.Clone(ino.durable)
		for _, w := range ino.pending {
			if w.data == nil {
				if rng.Intn(2) == 0 {
					b = simResize(b, w.size)
				}
				continue
			}
			// Keep an arbitrary subset of the write's sectors.
			for off := w.off; off < w.off+int64(len(w.data)); {
				end := min((off/simSector+1)*simSector, w.off+int64(len(w.data)))
				if rng.Intn(2) == 0 {
					b = simWrite(b, off, w.data[off-w.off:end-w.off])
				}
				off = end
			}
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := simWriteSparse(out, b); err != nil {
			return err
		}
	}
	return nil
}

// simWriteSparse writes b to path, leaving runs of zeros as holes.
func simWriteSparse(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(int64(len(b))); err != nil {
		return err
	}
	const chunk = 4096
	for off := 0; off < len(b); off += chunk {
		c := b[off:min(off+chunk, len(b))]
		if walFirstNonZero(c) >= 0 {
			if _, err := f.WriteAt(c, int64(off)); err != nil {
				return err
			}
		}
	}
	return nil
}

// powerTrace is a recorded run.
type powerTrace struct {
	mu  sync.Mutex
	ops []diskOp
}

func (tr *powerTrace) record(op diskOp) {
	tr.mu.Lock()
	tr.ops = append(tr.ops, op)
	tr.mu.Unlock()
}

// powerWorkload runs clients against a server on dir while the trace
// records: creates, events, deletes, atomic and best-effort batches and
// compactions, over small segments so that they rotate often.
func powerWorkload(t *testing.T, dir string, rng *rand.Rand) {
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.segmentBytes = 16 << 10
	cfg.CompactEnabled = false
	s, err := openServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.fatal = func(err error) { t.Errorf("fatal: %v", err) }
	ts := &testServer{t: t, cfg: cfg, srv: s, done: make(chan error, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	go func() { ts.done <- s.serve(ln) }()
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		seed := rng.Int63()
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed))
			c, err := dialClient(ts.addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.close()
			c.nc.SetDeadline(time.Now().Add(time.Minute))
			pad := strings.Repeat("p", 100+r.Intn(400))
			for i := range 60 {
				id := fmt.Sprintf("w%d-%d", w, i)
				var reqs [][2]string
				reqs = append(reqs, [2]string{"CREATE_INSTANCE", fmt.Sprintf(`{"machine":"order","version":1,"instance_id":%q,"initial_ctx":{"amount":%d,"pad":%q},"idempotency_key":"k-%s"}`, id, i+1, pad, id)})
				reqs = append(reqs, [2]string{"APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"PAY","payload":{"n":%d}}`, id, i)})
				switch r.Intn(4) {
				case 0:
					reqs = append(reqs, [2]string{"DELETE_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id)})
				case 1:
					reqs = append(reqs, [2]string{"BATCH", fmt.Sprintf(`{"mode":"atomic","ops":[{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"b-%s"}},{"op":"APPLY_EVENT","params":{"instance_id":%q,"event":"SHIP"}}]}`, id, id)})
				case 2:
					reqs = append(reqs, [2]string{"BATCH", fmt.Sprintf(`{"mode":"best_effort","ops":[{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"e-%s"}},{"op":"APPLY_EVENT","params":{"instance_id":"e-%s","event":"INC"}}]}`, id, id)})
				}
				for _, rq := range reqs { // pipelined
					c.send(rq[0], rq[1])
				}
				c.flush()
				for range reqs {
					if m, err := c.recv(); err != nil || m.Status != "ok" {
						t.Errorf("workload: %v %s", err, crashRawOf(m))
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // compactions, racing the writers
		defer wg.Done()
		for range 6 {
			time.Sleep(time.Duration(5+rng.Intn(20)) * time.Millisecond)
			if m := call(t, c, "COMPACT", `{}`); m.Status != "ok" {
				t.Errorf("COMPACT: %s", m.Raw)
			}
		}
	}()
	wg.Wait()
	ts.stop()
}

func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("records a workload and recovers many images; skipped with -short")
	}
	seed := *powerSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with -powercut.seed=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	root := filepath.Join(t.TempDir(), "data")

	tr := &powerTrace{}
	diskTrace = tr.record
	powerWorkload(t, root, rng)
	diskTrace = nil
	if t.Failed() {
		t.Fatalf("the workload failed (seed %d)", seed)
	}
	ops := tr.ops
	var appends []diskOp
	kinds := map[diskOpKind]int{}
	for _, op := range ops {
		kinds[op.kind]++
		if op.kind == diskAppend {
			appends = append(appends, op)
		}
	}
	sort.Slice(appends, func(i, j int) bool { return appends[i].lsn < appends[j].lsn })
	for i, a := range appends {
		if a.lsn != uint64(i+1) {
			t.Fatalf("appends are not dense: #%d has LSN %d", i, a.lsn)
		}
	}
	t.Logf("trace: %d ops (%d writes, %d syncs, %d renames, %d removes, %d directory syncs), %d records",
		len(ops), kinds[diskWrite], kinds[diskSync], kinds[diskRename], kinds[diskRemove], kinds[diskSyncDir], len(appends))
	if kinds[diskRename] < 3 || kinds[diskRemove] < 3 {
		t.Fatalf("the workload did not rotate segments and compact enough: %v", kinds)
	}

	// Cut points, replayed in order.
	cuts := make([]int, *powerCuts)
	for i := range cuts {
		cuts[i] = rng.Intn(len(ops) + 1)
	}
	sort.Ints(cuts)
	type result struct {
		cut       int
		acked     uint64 // highest LSN acknowledged before the cut
		appended  uint64 // highest LSN appended before the cut
		recovered uint64
		dump      stateDump
	}
	var results []result
	disk := newSimDisk()
	pos := 0
	var acked, appended uint64
	work := t.TempDir()
	for i, cut := range cuts {
		for ; pos < cut; pos++ {
			op := ops[pos]
			switch op.kind {
			case diskAck:
				acked = max(acked, op.lsn)
			case diskAppend:
				appended = max(appended, op.lsn)
			default:
				disk.apply(op)
			}
		}
		img := filepath.Join(work, fmt.Sprint(i))
		if err := disk.image(rng, root, img); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(img, 0o755)
		cfg := defaultConfig()
		cfg.DataDir = img
		cfg.segmentBytes = 16 << 10
		cfg.CompactEnabled = false
		s, err := openServer(cfg, nil)
		if err != nil {
			t.Fatalf("cut %d of %d (op %d, seed %d): recovery failed: %v", i, len(cuts), cut, seed, err)
		}
		results = append(results, result{cut, acked, appended, s.st.applied, dumpState(s.st)})
		s.close()
		os.RemoveAll(img)
	}

	// The model: the state after each prefix, built once in LSN order.
	sort.SliceStable(results, func(i, j int) bool { return results[i].recovered < results[j].recovered })
	model := newState(defaultConfig().IdempotencyTTL.Milliseconds())
	next := 0
	for _, r := range results {
		if r.recovered < r.acked {
			t.Fatalf("cut at op %d (seed %d): LOST: recovered up to LSN %d, but LSN %d was acknowledged", r.cut, seed, r.recovered, r.acked)
		}
		if r.recovered > r.appended {
			t.Fatalf("cut at op %d (seed %d): INVENTED: recovered LSN %d, but only %d were appended", r.cut, seed, r.recovered, r.appended)
		}
		for ; uint64(next) < r.recovered; next++ {
			a := appends[next]
			rec, err := decodeRecord(a.typ, a.data)
			if err != nil {
				t.Fatal(err)
			}
			rec.lsn = a.lsn
			model.apply(rec)
		}
		if diff := cmp.Diff(dumpState(model), r.dump); diff != "" {
			t.Fatalf("cut at op %d (seed %d): the recovered state is not the state after LSN %d (-model +recovered):\n%s", r.cut, seed, r.recovered, diff)
		}
	}
	t.Logf("%d cut points: recovered LSNs %d..%d, every acknowledged record kept", len(results), results[0].recovered, results[len(results)-1].recovered)
}
