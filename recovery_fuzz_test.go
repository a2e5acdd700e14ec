package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzRecovery damages the files of a data directory (a snapshot and
// several WAL segments with a known history) in arbitrary ways and opens
// the server on it. Opening must never panic; it either refuses with an
// error naming what is wrong, or recovers a state equal to the live state
// after some prefix of the history (never an invented one), which then
// survives a write and another restart.
//
// The input is a small program of damage steps (see fzDamage). Steps with
// kind fzForge re-seal the checksum of what they damaged; then the files
// are "valid" but meaningless, and only "no panic, refusal or a usable
// server" is required.
func FuzzRecovery(f *testing.F) {
	fx := fzRecoveryFixture(f)
	// The seeds are in testdata/fuzz/FuzzRecovery (fzRecoverySeeds wrote them).
	f.Fuzz(func(t *testing.T, prog []byte) {
		fzRunRecovery(t, fx, prog)
	})
}

// Damage kinds: the first byte of each 8-byte step, modulo fzKinds.
const (
	fzOverwrite   = iota // write the step's 3 data bytes at the offset
	fzFlip               // flip one bit at the offset
	fzTruncate           // cut the file at the offset
	fzDelete             // remove the file
	fzZero               // zero len bytes from the offset
	fzGarbageTail        // write len random-looking bytes just after the data
	fzForge              // overwrite, then fix the checksum over it
	fzCopy               // replace the file's bytes with another file's
	fzKinds
)

// fzRecoverySeeds are the seed corpus, kept in testdata/fuzz/FuzzRecovery.
// File 0 is the snapshot, then the segments in order (the last one is 3).
var fzRecoverySeeds = [][]byte{
	{},
	{fzGarbageTail, 2, 0, 0, 40, 0xde, 0xad, 0xbe},
	{fzFlip, 1, 3, 1, 0, 0, 0, 0},
	{fzFlip, 2, 200, 9, 0, 0, 0, 0},
	{fzTruncate, 2, 3, 5, 0, 0, 0, 0},
	{fzTruncate, 1, 2, 0, 0, 0, 0, 0},
	{fzDelete, 0, 0, 0, 0, 0, 0, 0},
	{fzDelete, 1, 0, 0, 0, 0, 0, 0},
	{fzDelete, 2, 0, 0, 0, 0, 0, 0},
	{fzZero, 2, 1, 0, 24, 0, 0, 0},
	{fzZero, 0, 0, 40, 200, 0, 0, 0},
	{fzOverwrite, 0, 0, 8, 0, 0xff, 0xff, 0xff},
	{fzForge, 0, 0, 8, 0, 0x7f, 0xff, 0xff},
	{fzForge, 2, 2, 30, 0, '{', '"', 'x'},
	{fzForge, 1, 1, 8, 0, 0xff, 0, 0},
	{fzCopy, 1, 2, 0, 0, 0, 0, 0},
	{fzOverwrite, 2, 255, 0, 0, 1, 0, 0, fzOverwrite, 2, 255, 8, 0, 3, 0, 0},
	// The last segment: a torn tail is cut, keeping a prefix.
	{fzGarbageTail, 3, 0, 0, 63, 1, 2, 3},
	{fzFlip, 3, 2, 20, 3, 0, 0, 0},
	{fzTruncate, 3, 4, 7, 0, 0, 0, 0},
	{fzZero, 3, 1, 0, 23, 0, 0, 0},
	{fzForge, 3, 3, 40, 0, '"', 'x', '"'},
	{fzForge, 3, 0, 8, 0, 99, 0, 0},
	{fzDelete, 3, 0, 0, 0, 0, 0, 0},
	{fzDelete, 0, 0, 0, 0, 0, 0, 0, fzDelete, 1, 0, 0, 0, 0, 0, 0, fzDelete, 2, 0, 0, 0, 0, 0, 0, fzDelete, 3, 0, 0, 0, 0, 0, 0},
}

// fzFixture is the undamaged data directory and what its history was.
type fzFixture struct {
	files   []fzFile          // snapshot first, then segments in order
	prefix  map[string]uint64 // dump fingerprint -> LSN after which the live state was that
	snapLSN uint64
	lastLSN uint64
}

type fzFile struct {
	rel    string  // path under the data directory
	data   []byte  // the bytes up to the end of data
	size   int64   // the file size (preallocated segments are larger)
	starts []int64 // segments: offsets of the records, then the end of data
}

// fzDumpKey fingerprints a state dump.
func fzDumpKey(d stateDump) string {
	h := sha256.New()
	for _, m := range []map[string]string{d.Machines, d.Instances, d.Idem} {
		for _, k := range sortedKeys(m) {
			fmt.Fprintf(h, "%d:%s=%d:", len(k), k, len(m[k]))
			io.WriteString(h, m[k])
		}
		h.Write([]byte{0})
	}
	fmt.Fprintf(h, "applied=%d", d.Applied)
	return hex.EncodeToString(h.Sum(nil))
}

// fzDispatch runs one request on s as a connection would.
func fzDispatch(s *server, op, params string) (reply, *rcpError) {
	code, ok := lookupOp(op)
	if !ok {
		panic("unknown op " + op)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	return s.dispatch(s.newConn(a), code, []byte(params))
}

// fzRecoveryFixture writes the fixture: big payloads spread the history
// over several 1 MiB segments; a compaction in the middle leaves a
// snapshot and removes the first segment.
func fzRecoveryFixture(f *testing.F) *fzFixture { return fzBuildFixture(f) }

// fzRecoveryFixtureT builds the fixture for a plain test.
func fzRecoveryFixtureT(t *testing.T) *fzFixture { return fzBuildFixture(t) }

func fzBuildFixture(f testing.TB) *fzFixture {
	dir := fzTempDir(f)
	cfg := fzRequestConfig(dir)
	s, err := openServer(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	fx := &fzFixture{prefix: map[string]uint64{}}
	record := func() { fx.prefix[fzDumpKey(dumpState(s.st))] = s.st.applied }
	record()
	big := func(n int) string { return strings.Repeat(fmt.Sprintf("%x", n%16), 150<<10) }
	do := func(op, params string) {
		if _, rerr := fzDispatch(s, op, params); rerr != nil {
			f.Fatalf("fixture %s %s: %v", op, params[:min(len(params), 80)], rerr)
		}
		record()
	}
	do("PUT_MACHINE", orderMachine)
	do("PUT_MACHINE", `{"machine":"ctr","version":1,"definition":{"states":["s"],"initial":"s","transitions":[{"from":"s","event":"INC","to":"s","guard":"ctx.n >= 0"}]}}`)
	do("CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o1","initial_ctx":{"amount":5}}`)
	do("CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"c1","initial_ctx":{"n":0},"idempotency_key":"create-c1"}`)
	for i := 1; i <= 9; i++ {
		do("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"c1","event":"INC","payload":{"n":%d,"blob":%q},"idempotency_key":"inc-%d","event_id":"e%d"}`, i, big(i), i, i))
	}
	do("COMPACT", `{}`)
	for i := 10; i <= 13; i++ {
		do("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"c1","event":"INC","payload":{"n":%d,"blob":%q},"idempotency_key":"inc-%d"}`, i, big(i), i))
	}
	do("APPLY_EVENT", `{"instance_id":"c1","event":"INC","payload":{"n":14,"blob":""},"idempotency_key":"inc-14"}`)
	do("APPLY_EVENT", `{"instance_id":"o1","event":"PAY","idempotency_key":"pay"}`)
	do("BATCH", `{"mode":"atomic","ops":[{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"o2","initial_ctx":{"amount":9}}},{"op":"APPLY_EVENT","params":{"instance_id":"o2","event":"PAY"}},{"op":"DELETE_INSTANCE","params":{"instance_id":"o1"}}]}`)
	do("BATCH", `{"mode":"best_effort","ops":[{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"c2"}},{"op":"APPLY_EVENT","params":{"instance_id":"c2","event":"INC","payload":{"n":1}}}]}`)
	do("DELETE_INSTANCE", `{"instance_id":"c2","idempotency_key":"del-c2"}`)
	fx.snapLSN = s.compactedAt.Load()
	fx.lastLSN = s.st.applied
	if err := s.close(); err != nil {
		f.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "full-*.snap"))
	segs, err := walListSegments(filepath.Join(dir, "wal"))
	if err != nil || len(snaps) != 1 || len(segs) < 2 {
		f.Fatalf("fixture: want one snapshot and several segments, got %v and %v (%v)", snaps, segs, err)
	}
	add := func(rel string, seg bool) {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			f.Fatal(err)
		}
		ff := fzFile{rel: rel, size: int64(len(b))}
		end := int64(len(b))
		if seg {
			off := int64(0)
			for off+walHeaderSize <= int64(len(b)) && walFirstNonZero(b[off:off+walHeaderSize]) >= 0 {
				ff.starts = append(ff.starts, off)
				off += walRecordSize(int(binary.LittleEndian.Uint32(b[off:])))
			}
			ff.starts = append(ff.starts, off)
			end = off
		}
		ff.data = b[:end]
		fx.files = append(fx.files, ff)
	}
	add(filepath.Join("snapshots", filepath.Base(snaps[0])), false)
	for _, sf := range segs {
		add(filepath.Join("wal", sf.name), true)
	}
	return fx
}

// fzMaterialize writes the fixture into dir: data, then (sparse) zeros up
// to the preallocated size.
func fzMaterialize(t *testing.T, fx *fzFixture, dir string) {
	for _, sub := range []string{"snapshots", "wal"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, ff := range fx.files {
		p := filepath.Join(dir, ff.rel)
		if err := os.WriteFile(p, ff.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, ff.size); err != nil {
			t.Fatal(err)
		}
	}
}

// fzDamage applies the damage program to the files in dir and reports
// whether any step forged a checksum.
func fzDamage(t *testing.T, fx *fzFixture, dir string, prog []byte) (forged bool, steps []string) {
	for i := 0; i+8 <= len(prog) && i < 8*6; i += 8 {
		st := prog[i : i+8]
		kind := int(st[0]) % fzKinds
		ff := fx.files[int(st[1])%len(fx.files)]
		p := filepath.Join(dir, ff.rel)
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue // deleted or emptied by an earlier step
		}
		size := int64(len(b))
		// The offset: near a record boundary for segments (so headers get
		// hit), spread over the file for the snapshot.
		var off int64
		delta := int64(int8(st[3]))
		if ff.starts != nil {
			off = ff.starts[int(st[2])%len(ff.starts)] + delta
		} else {
			off = int64(st[2])*int64(len(ff.data))/256 + delta
		}
		off = max(0, min(off, size-1))
		n := int64(st[4]) + 1
		data := st[5:8]
		steps = append(steps, fmt.Sprintf("kind=%d file=%s off=%d n=%d data=%x", kind, ff.rel, off, n, data))
		switch kind {
		case fzOverwrite, fzForge:
			copy(b[off:], data)
			if kind == fzForge {
				forged = true
				fzReseal(b, ff, off)
			}
		case fzFlip:
			b[off] ^= 1 << (st[4] % 8)
		case fzTruncate:
			b = b[:off]
		case fzDelete:
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			continue
		case fzZero:
			clear(b[off:min(off+n, size)])
		case fzGarbageTail:
			end := int64(len(ff.data))
			for k := int64(0); k < n && end+k < size; k++ {
				b[end+k] = data[k%3] ^ byte(k*31)
			}
		case fzCopy:
			other := fx.files[(int(st[1])+1+int(st[2]))%len(fx.files)]
			ob, err := os.ReadFile(filepath.Join(dir, other.rel))
			if err != nil {
				continue
			}
			b = ob
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return forged, steps
}

// fzReseal recomputes the checksum covering offset off: the record's CRC
// in a segment, the trailer CRC of a snapshot.
func fzReseal(b []byte, ff fzFile, off int64) {
	if ff.starts == nil {
		tail := len(snapEndMagic) + 4
		if len(b) >= len(snapMagic)+tail {
			body := b[:len(b)-tail]
			binary.LittleEndian.PutUint32(b[len(body):], crc32.Checksum(body, snapCRC))
		}
		return
	}
	i := sort.Search(len(ff.starts), func(i int) bool { return ff.starts[i] > off }) - 1
	if i < 0 {
		return
	}
	start := ff.starts[i]
	if start+walHeaderSize > int64(len(b)) {
		return
	}
	h := b[start : start+walHeaderSize]
	n := int64(binary.LittleEndian.Uint32(h[0:]))
	if start+walHeaderSize+n > int64(len(b)) {
		return
	}
	payload := b[start+walHeaderSize : start+walHeaderSize+n]
	binary.LittleEndian.PutUint32(h[16:], crc32.Update(crc32.Checksum(h[:16], walCRCTable), walCRCTable, payload))
}

// fzClearError reports whether a refusal says what is wrong and where.
func fzClearError(err error) bool {
	m := err.Error()
	for _, w := range []string{".wal", ".snap", "segment", "record", "snapshot"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

func fzRunRecovery(t *testing.T, fx *fzFixture, prog []byte) {
	dir := fzTempDir(t)
	fzMaterialize(t, fx, dir)
	forged, steps := fzDamage(t, fx, dir, prog)
	cfg := fzRequestConfig(dir)
	s, err := openServer(cfg, nil)
	if err != nil {
		t.Logf("damage %v: refused: %v", steps, err)
		if !fzClearError(err) {
			t.Fatalf("damage %v: refusal does not name the file or record: %v", steps, err)
		}
		return
	}
	s.fatal = func(err error) { t.Errorf("fatal WAL error: %v", err) }
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	if !forged {
		d := dumpState(s.st)
		k, ok := fx.prefix[fzDumpKey(d)]
		if !ok {
			t.Fatalf("damage %v: recovered a state that was never live (applied=%d, %d instances, machines %v)",
				steps, d.Applied, len(d.Instances), sortedKeys(d.Machines))
		}
		if k != s.st.applied {
			t.Fatalf("damage %v: state of LSN %d but applied=%d", steps, k, s.st.applied)
		}
		fzCheckInvariants(t, s)
		t.Logf("damage %v: recovered through LSN %d of %d (snapshot %d)", steps, k, fx.lastLSN, fx.snapLSN)
	}
	// The recovered server must take writes and survive another restart.
	for _, rq := range [][2]string{
		{"PUT_MACHINE", `{"machine":"after","version":1,"definition":{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"E","to":"a"}]}}`},
		{"CREATE_INSTANCE", `{"machine":"after","version":1,"instance_id":"after-1"}`},
		{"LIST_INSTANCES", `{}`},
		{"APPLY_EVENT", `{"instance_id":"after-1","event":"E","payload":{"n":99},"idempotency_key":"after"}`},
	} {
		if _, rerr := fzDispatch(s, rq[0], rq[1]); rerr != nil && !forged {
			t.Fatalf("damage %v: after recovery %s: %v", steps, rq[0], rerr)
		}
	}
	before := dumpState(s.st)
	if err := s.close(); err != nil {
		t.Fatalf("damage %v: close after recovery: %v", steps, err)
	}
	s = nil
	s2, err := openServer(cfg, nil)
	if err != nil {
		t.Fatalf("damage %v: a recovered directory does not reopen: %v", steps, err)
	}
	defer s2.close()
	if diff := cmp.Diff(before, dumpState(s2.st)); diff != "" && !forged {
		t.Fatalf("damage %v: state after the second restart differs (-live +recovered):\n%s", steps, diff)
	}
}

// TestFzRecoverySeedCorpus keeps testdata/fuzz/FuzzRecovery in step with
// fzRecoverySeeds.
func TestFzRecoverySeedCorpus(t *testing.T) {
	for i, s := range fzRecoverySeeds {
		name := filepath.Join("testdata", "fuzz", "FuzzRecovery", fmt.Sprintf("seed-%02d", i))
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		got, err := os.ReadFile(name)
		if err != nil || string(got) != want {
			t.Errorf("%s: want %q (err %v)", name, want, err)
		}
	}
}

// TestFzRecoveryNoSnapshotMessage: found by FuzzRecovery (seed-06, the
// snapshot deleted after compaction removed the first segments). The
// refusal must say plainly that there is no snapshot, not name a snapshot
// "" covering record 0.
func TestFzRecoveryNoSnapshotMessage(t *testing.T) {
	fx := fzRecoveryFixtureT(t)
	dir := fzTempDir(t)
	fzMaterialize(t, fx, dir)
	if err := os.Remove(filepath.Join(dir, fx.files[0].rel)); err != nil {
		t.Fatal(err)
	}
	_, err := openServer(fzRequestConfig(dir), nil)
	if err == nil {
		t.Fatal("opened without the snapshot the WAL depends on")
	}
	if msg := err.Error(); strings.Contains(msg, `("")`) || !strings.Contains(msg, "no snapshot") {
		t.Errorf("unclear refusal: %v", err)
	}
}
