package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const counterMachine = `{"machine":"ctr","version":1,"definition":{"states":["on"],"initial":"on","transitions":[{"from":"on","event":"INC","to":"on"}]}}`

// ack is one acknowledged write: the offset it got and what it left.
type ack struct {
	offset uint64
	id     string
	state  string
	ctx    string
}

// ackLog collects the acknowledged writes of every writer.
type ackLog struct {
	mu   sync.Mutex
	acks []ack
}

func (l *ackLog) add(a ack) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.mu.Unlock()
}

// stateAt is the model: each instance as the last acknowledged write at or
// before offset left it.
func (l *ackLog) stateAt(offset uint64) map[string]ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]ack{}
	for _, a := range l.acks {
		if a.offset <= offset {
			if prev, ok := m[a.id]; !ok || prev.offset < a.offset {
				m[a.id] = a
			}
		}
	}
	return m
}

// writeLoad creates n instances, then applies INC events to them over
// pipelined connections until stop is closed (or count events, if > 0).
func writeLoad(t *testing.T, ts *testServer, log *ackLog, prefix string, n, count int, stop <-chan struct{}) {
	writeLoadPad(t, ts, log, prefix, n, count, 0, stop)
}

// writeLoadPad is writeLoad with pad bytes of padding in every payload.
func writeLoadPad(t *testing.T, ts *testServer, log *ackLog, prefix string, n, count, pad int, stop <-chan struct{}) {
	t.Helper()
	c := ts.dial()
	for i := range n {
		res := mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"%s%d","initial_ctx":{"n":0}}`, prefix, i))
		var r struct {
			State     string `json:"state"`
			WalOffset uint64 `json:"wal_offset"`
		}
		json.Unmarshal(res, &r)
		log.add(ack{r.WalOffset, fmt.Sprintf("%s%d", prefix, i), r.State, `{"n":0}`})
	}
	const depth = 32
	k := 0
	for count <= 0 || k < count {
		select {
		case <-stop:
			return
		default:
		}
		batch := depth
		if count > 0 {
			batch = min(depth, count-k)
		}
		ids := make([]string, batch)
		for j := range batch {
			ids[j] = fmt.Sprintf("%s%d", prefix, (k+j)%n)
			if _, err := c.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"%s","event":"INC","payload":{"n":%d,"pad":"%s"}}`, ids[j], k+j+1, strings.Repeat("p", pad))); err != nil {
				t.Error(err)
				return
			}
		}
		if err := c.flush(); err != nil {
			t.Error(err)
			return
		}
		for j := range batch {
			m, err := c.recv()
			if err != nil || m.Status != "ok" {
				t.Errorf("APPLY_EVENT: %v %s", err, m.Raw)
				return
			}
			var r struct {
				Ctx       json.RawMessage `json:"ctx"`
				ToState   string          `json:"to_state"`
				WalOffset uint64          `json:"wal_offset"`
			}
			json.Unmarshal(m.Result, &r)
			log.add(ack{r.WalOffset, ids[j], r.ToState, string(r.Ctx)})
		}
		k += batch
	}
}

// checkRestored opens dir as a server and checks every instance against
// the model at offset n, and that nothing after n was applied.
func checkRestored(t *testing.T, dir string, log *ackLog, n uint64) {
	t.Helper()
	rs := startServer(t, func(c *config) { c.DataDir = dir })
	defer rs.stop()
	st := rs.srv.st
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.applied != n {
		t.Errorf("restored to %d: the server's state is at offset %d", n, st.applied)
	}
	want := log.stateAt(n)
	got := map[string]ack{}
	for id, in := range st.instances {
		got[id] = ack{in.lastLSN, id, in.state, string(in.ctx)}
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(ack{})); diff != "" {
		t.Errorf("restored to %d (-acknowledged +restored):\n%s", n, diff)
	}
}

func runBackup(t *testing.T, ctx context.Context, o backupOptions) string {
	t.Helper()
	var out bytes.Buffer
	if err := backupRun(ctx, o, &out, io.Discard); err != nil {
		t.Fatalf("backup: %v", err)
	}
	return out.String()
}

// followBackup runs a --follow backup into dir: it waits for the snapshot,
// runs during, waits until the backup holds everything durable, and
// interrupts it.
func followBackup(t *testing.T, ts *testServer, dir string, during func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	syncedTo := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- backupRun(ctx, backupOptions{addr: ts.addr, out: dir, follow: true, synced: func(last uint64) {
			select {
			case syncedTo <- last:
			default:
			}
		}}, io.Discard, io.Discard)
	}()
	select {
	case <-syncedTo: // the snapshot is in
	case err := <-done:
		t.Fatalf("backup --follow: %v", err)
	}
	during()
	head := ts.srv.log.durableLSN()
	for last := uint64(0); last < head; {
		select {
		case last = <-syncedTo:
		case <-time.After(20 * time.Second):
			t.Fatal("the backup did not catch up")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("backup --follow: %v", err)
	}
}

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustRestore(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := runCmd(append([]string{"restore"}, args...)...)
	if code != 0 {
		t.Fatalf("restore %v: exit %d: %s", args, code, errs)
	}
	return out
}

// A backup taken under pipelined write load, restored without a target and
// to several offsets: each gives exactly the acknowledged state at that
// offset, never one record more; targets outside the range are refused.
func TestBackupUnderLoad(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", counterMachine)
	log := &ackLog{}
	writeLoad(t, ts, log, "a", 50, 3000, nil) // a log to snapshot
	mustOK(t, c, "COMPACT", "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeLoad(t, ts, log, fmt.Sprintf("w%d-", w), 20, 0, stop)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	// A one-shot backup: it ends at the offset it reached.
	bdir := filepath.Join(t.TempDir(), "b")
	out := runBackup(t, context.Background(), backupOptions{addr: ts.addr, out: bdir})
	m, err := readManifest(bdir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("final offset %d", m.LastOffset)) {
		t.Errorf("backup output %q lacks the final offset %d", out, m.LastOffset)
	}
	if code, vout, verr := runCmd("verify", "--data", bdir); code != 0 {
		t.Fatalf("verify backup: exit %d\n%s%s", code, vout, verr)
	}
	oneShot, oneShotLast := bdir, m.LastOffset

	// A continuous one, stopped while the load goes on.
	bdir = filepath.Join(t.TempDir(), "f")
	followBackup(t, ts, bdir, func() { time.Sleep(300 * time.Millisecond) })
	close(stop)
	wg.Wait()
	// The model is complete only now: a write in the backup may have been
	// acknowledged to its pipelined writer after the backup ended.
	dst := filepath.Join(t.TempDir(), "full")
	mustRestore(t, "--from", oneShot, "--data", dst)
	checkRestored(t, dst, log, oneShotLast)
	if m, err = readManifest(bdir); err != nil {
		t.Fatal(err)
	}
	if m.SnapshotOffset < 3000 || m.LastOffset <= m.SnapshotOffset+100 || m.LastOffset >= ts.srv.log.lastLSN() {
		t.Errorf("backup range %d..%d (live server at %d): want a snapshot after the compaction and records under load", m.SnapshotOffset, m.LastOffset, ts.srv.log.lastLSN())
	}
	t.Logf("backup %d..%d; live server at %d", m.FirstOffset, m.LastOffset, ts.srv.log.lastLSN())
	dst = filepath.Join(t.TempDir(), "full2")
	mustRestore(t, "--from", bdir, "--data", dst)
	checkRestored(t, dst, log, m.LastOffset)

	S, L := m.SnapshotOffset, m.LastOffset
	for _, n := range []uint64{S, S + 1, S + (L-S)/3, L - 1, L} {
		dst := filepath.Join(t.TempDir(), fmt.Sprint(n))
		mustRestore(t, "--from", bdir, "--data", dst, "--to-offset", fmt.Sprint(n))
		checkRestored(t, dst, log, n)
	}
	for _, n := range []uint64{S - 1, L + 1} {
		code, _, errs := runCmd("restore", "--from", bdir, "--data", filepath.Join(t.TempDir(), "x"), "--to-offset", fmt.Sprint(n))
		if want := fmt.Sprintf("outside the backup's range %d..%d", S, L); code == 0 || !strings.Contains(errs, want) {
			t.Errorf("--to-offset %d: exit %d %q, want a refusal naming %q", n, code, errs, want)
		}
	}
	code, _, errs := runCmd("restore", "--from", bdir, "--data", dst)
	if code == 0 || !strings.Contains(errs, "not empty") {
		t.Errorf("restore into a non-empty directory: exit %d %q", code, errs)
	}
}

// --follow: interrupted, resumed into the same directory, then restored to
// the live state exactly; --to-time picks the last record at or before
// the time.
func TestBackupFollowResume(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", counterMachine)
	log := &ackLog{}
	bdir := filepath.Join(t.TempDir(), "b")

	head := func() uint64 { return ts.srv.log.durableLSN() }

	writeLoad(t, ts, log, "a", 10, 500, nil)
	var aEnd uint64
	var cut time.Time
	followBackup(t, ts, bdir, func() {
		writeLoad(t, ts, log, "b", 10, 300, nil)
		aEnd = head()
		time.Sleep(20 * time.Millisecond)
		cut = time.Now()
		time.Sleep(20 * time.Millisecond)
		writeLoad(t, ts, log, "c", 10, 300, nil)
	})
	m1, err := readManifest(bdir)
	if err != nil || m1.Stopped != "interrupted" || m1.LastOffset != head() {
		t.Fatalf("after SIGINT: manifest %+v, %v (head %d)", m1, err, head())
	}
	// More writes while no backup runs, then resume.
	writeLoad(t, ts, log, "d", 10, 400, nil)
	followBackup(t, ts, bdir, func() { writeLoad(t, ts, log, "e", 10, 100, nil) })
	m2, err := readManifest(bdir)
	if err != nil || m2.SnapshotOffset != m1.SnapshotOffset || m2.LastOffset != head() {
		t.Fatalf("after resuming: manifest %+v, %v (head %d)", m2, err, head())
	}

	dst := filepath.Join(t.TempDir(), "r")
	mustRestore(t, "--from", bdir, "--data", dst)
	live := dumpState(ts.srv.st)
	rs := startServer(t, func(c *config) { c.DataDir = dst })
	if diff := cmp.Diff(live, dumpState(rs.srv.st)); diff != "" {
		t.Errorf("restored state differs from the live state (-live +restored):\n%s", diff)
	}
	rs.stop()

	dst = filepath.Join(t.TempDir(), "t")
	mustRestore(t, "--from", bdir, "--data", dst, "--to-time", cut.Format(time.RFC3339Nano))
	checkRestored(t, dst, log, aEnd)
	code, _, errs := runCmd("restore", "--from", bdir, "--data", filepath.Join(t.TempDir(), "x"), "--to-time", "2001-01-01T00:00:00Z")
	if code == 0 || !strings.Contains(errs, "outside the backup's range") {
		t.Errorf("--to-time before the backup: exit %d %q", code, errs)
	}
}

// Damaged backups are refused by restore and verify, naming the file.
func TestRestoreRefusesDamage(t *testing.T) {
	defer func(n int64) { backupSegmentSize = n }(backupSegmentSize)
	backupSegmentSize = 64 << 10
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", counterMachine)
	log := &ackLog{}
	writeLoad(t, ts, log, "a", 20, 200, nil)
	mustOK(t, c, "COMPACT", "")
	bdir := filepath.Join(t.TempDir(), "b")
	followBackup(t, ts, bdir, func() { writeLoad(t, ts, log, "b", 20, 2000, nil) })
	m, err := readManifest(bdir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []backupFile
	var snap backupFile
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, "wal/") {
			segs = append(segs, f)
		} else {
			snap = f
		}
	}
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments, got %d", len(segs))
	}
	flip := func(path string, off int64) func(dir string) error {
		return func(dir string) error {
			p := filepath.Join(dir, path)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[off] ^= 0x40
			return os.WriteFile(p, b, 0o644)
		}
	}
	tests := []struct {
		name    string
		corrupt func(dir string) error
		want    string // in the error
	}{
		{"flipped byte in a segment", flip(segs[1].Path, 1000), segs[1].Path + ": offset "},
		{"flipped byte in the last segment", flip(segs[len(segs)-1].Path, 100), segs[len(segs)-1].Path + ": offset "},
		{"flipped byte in the snapshot", flip(snap.Path, snap.Size/2), snap.Path + ": offset "},
		{"missing segment", func(dir string) error { return os.Remove(filepath.Join(dir, segs[1].Path)) }, segs[1].Path + ": offset 0: listed in the manifest but missing"},
		{"truncated manifest", func(dir string) error {
			p := filepath.Join(dir, backupManifestName)
			b, _ := os.ReadFile(p)
			return os.WriteFile(p, b[:len(b)/2], 0o644)
		}, backupManifestName + ": offset "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			if err := os.CopyFS(dir, os.DirFS(bdir)); err != nil {
				t.Fatal(err)
			}
			if err := tc.corrupt(dir); err != nil {
				t.Fatal(err)
			}
			code, _, errs := runCmd("restore", "--from", dir, "--data", filepath.Join(t.TempDir(), "r"))
			if code == 0 || !strings.Contains(errs, "does not verify") || !strings.Contains(errs, tc.want) {
				t.Errorf("restore: exit %d %q, want a refusal naming %q", code, errs, tc.want)
			}
			code, out, errs := runCmd("verify", "--data", dir)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("verify: exit %d %q %q, want a problem naming %q", code, out, errs, tc.want)
			}
		})
	}
}

// verify on a copy of a live data directory taken mid-write reports a torn
// tail and succeeds; damage in a sealed segment fails, naming it.
func TestVerifyDataDir(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", counterMachine)
	log := &ackLog{}
	writeLoadPad(t, ts, log, "a", 20, 3000, 1000, nil)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeLoad(t, ts, log, "b", 20, 0, stop)
	}()
	time.Sleep(50 * time.Millisecond)
	cp := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(cp, os.DirFS(ts.cfg.DataDir)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	os.Remove(filepath.Join(cp, "wal", walLockName))
	// Make sure the tail is torn: half a record after the last one.
	rep, err := verifyWAL(filepath.Join(cp, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	last := rep.Segments[len(rep.Segments)-1]
	rec := walAppendRecord(nil, recApplyEvent, last.LastLSN+1, bytes.Repeat([]byte("x"), 300))
	f, err := os.OpenFile(filepath.Join(cp, "wal", last.Name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(rec[:200], last.DataBytes)
	f.Close()
	code, out, errs := runCmd("verify", "--data", cp)
	if code != 0 || !strings.Contains(out, "torn tail") || !strings.Contains(out, "instances") {
		t.Errorf("verify of a torn copy: exit %d\n%s%s", code, out, errs)
	}
	if len(rep.Segments) < 2 {
		t.Fatalf("want a sealed segment, got %d segments", len(rep.Segments))
	}
	seg := "wal/" + rep.Segments[0].Name
	flip := filepath.Join(cp, seg)
	b, _ := os.ReadFile(flip)
	b[5000] ^= 1
	os.WriteFile(flip, b, 0o644)
	code, _, errs = runCmd("verify", "--data", cp)
	if code == 0 || !strings.Contains(errs, seg+": offset ") {
		t.Errorf("verify of a damaged sealed segment: exit %d %q", code, errs)
	}
}

// The REPLICATE stream at the protocol level: resuming from an offset,
// a snapshot once compaction removed it, a diverged receiver, JSONL.
func TestReplicateStream(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", counterMachine)
	log := &ackLog{}
	writeLoad(t, ts, log, "a", 5, 100, nil)
	head := ts.srv.log.durableLSN()

	from := uint64(40)
	rs, err := replicateOpen(ts.dial(), &from, false)
	if err != nil {
		t.Fatal(err)
	}
	if rs.hello.SnapshotOffset != nil || rs.hello.StartOffset != 41 {
		t.Errorf("hello %+v: want the log from 41 without a snapshot", rs.hello)
	}
	next := uint64(41)
	for {
		m, err := rs.next()
		if err != nil {
			t.Fatal(err)
		}
		if m.kind == replMsgEnd {
			if m.offset != head || next != head+1 {
				t.Errorf("end at %d after record %d, want %d", m.offset, next-1, head)
			}
			break
		}
		if m.kind == replMsgRecords {
			if m.offset != next {
				t.Fatalf("records from %d, want %d", m.offset, next)
			}
			next = m.last + 1
		}
	}
	rs.close()

	mustOK(t, c, "COMPACT", "")
	writeLoadPad(t, ts, log, "b", 5, 1000, 1000, nil) // past a segment
	mustOK(t, c, "COMPACT", "")
	if ts.srv.log.firstLSN() <= 2 {
		t.Fatalf("compaction kept record 2 (first %d)", ts.srv.log.firstLSN())
	}
	from = 1
	rs, err = replicateOpen(ts.dial(), &from, false)
	if err != nil {
		t.Fatal(err)
	}
	if rs.hello.SnapshotOffset == nil {
		t.Errorf("hello %+v: want a snapshot, record 2 is compacted", rs.hello)
	}
	rs.close()

	from = 1 << 40
	_, err = replicateOpen(ts.dial(), &from, false)
	if e, ok := err.(*rcpError); !ok || e.Code != codeBadRequest || !strings.Contains(e.Message, "diverged") {
		t.Errorf("from_offset past the end: %v", err)
	}

	jc := ts.dial()
	jc.setMode(modeJSONL)
	m := call(t, jc, "REPLICATE", `{}`)
	if m.Error == nil || m.Error.Code != codeBadRequest {
		t.Errorf("REPLICATE over JSONL: %s", m.Raw)
	}
}
