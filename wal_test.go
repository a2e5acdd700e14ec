package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const walTestSeg = 4 << 10

// walTestRec is a record as the tests compare it.
type walTestRec struct {
	LSN     uint64
	Type    uint8
	Payload string
}

// walTestPayload is the deterministic payload of the record with this LSN
// (varying lengths, so padding and segment ends fall in different places).
func walTestPayload(lsn uint64) string {
	return fmt.Sprintf("lsn=%d;", lsn) + strings.Repeat(string(rune('a'+lsn%26)), int(lsn*37%150))
}

func walTestType(lsn uint64) uint8 { return uint8(lsn % 7) }

// walTestWant lists the records [from, to] as walTestAppend writes them.
func walTestWant(from, to uint64) []walTestRec {
	var out []walTestRec
	for l := from; l <= to; l++ {
		out = append(out, walTestRec{l, walTestType(l), walTestPayload(l)})
	}
	return out
}

// walTestAppend appends n records whose contents follow from their LSN.
func walTestAppend(t testing.TB, w *wal, n int) uint64 {
	t.Helper()
	var lsn uint64
	for range n {
		want := w.nextLSN()
		var err error
		lsn, err = w.append(walTestType(want), []byte(walTestPayload(want)))
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if lsn != want {
			t.Fatalf("append returned LSN %d, want %d", lsn, want)
		}
	}
	return lsn
}

func walTestReadAll(t testing.TB, w *wal, from uint64) []walTestRec {
	t.Helper()
	var out []walTestRec
	if err := w.read(from, func(r walRecord) bool {
		out = append(out, walTestRec{r.LSN, r.Type, string(r.Payload)})
		return true
	}); err != nil {
		t.Fatalf("read(%d): %v", from, err)
	}
	return out
}

func walTestOpen(t testing.TB, dir string, opts walOptions) *wal {
	t.Helper()
	w, err := openWAL(dir, opts)
	if err != nil {
		t.Fatalf("openWAL: %v", err)
	}
	return w
}

func walTestClose(t testing.TB, w *wal) {
	t.Helper()
	if err := w.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// walTestFiles lists the file names in dir.
func walTestFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// walTestWaitFor polls cond for up to 5 s.
func walTestWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWALRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		opts    walOptions
		n1, n2  int
		minSegs uint64
	}{
		{"tiny segments", walOptions{SegmentSize: walTestSeg}, 150, 70, 4},
		{"one segment", walOptions{}, 150, 70, 1},
		{"never policy", walOptions{SegmentSize: walTestSeg, Policy: fsyncPolicy{Kind: "never"}}, 100, 10, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w := walTestOpen(t, dir, tt.opts)
			if got := w.firstLSN(); got != 1 {
				t.Errorf("firstLSN of an empty log = %d, want 1", got)
			}
			last := walTestAppend(t, w, tt.n1)
			if err := w.waitDurable(last); err != nil {
				t.Fatal(err)
			}
			want := walTestWant(1, uint64(tt.n1))
			if diff := cmp.Diff(want, walTestReadAll(t, w, 0)); diff != "" {
				t.Fatalf("read (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want[40:], walTestReadAll(t, w, 41)); diff != "" {
				t.Errorf("read from 41 (-want +got):\n%s", diff)
			}
			var early []uint64
			w.read(10, func(r walRecord) bool { early = append(early, r.LSN); return r.LSN < 12 })
			if diff := cmp.Diff([]uint64{10, 11, 12}, early); diff != "" {
				t.Errorf("read stopping early (-want +got):\n%s", diff)
			}
			st := w.stats()
			var size int64
			for _, r := range want {
				size += walRecordSize(len(r.Payload))
			}
			if st.EntryCount != uint64(tt.n1) || st.SegmentCount < tt.minSegs || st.TotalSizeBytes != size ||
				st.FirstLSN != 1 || st.LastLSN != last || st.DurableLSN != last || st.Writes != uint64(tt.n1) ||
				st.BytesWritten != uint64(size) {
				t.Errorf("stats = %+v; want %d entries, >= %d segments, %d bytes", st, tt.n1, tt.minSegs, size)
			}
			walTestClose(t, w)

			w = walTestOpen(t, dir, tt.opts)
			if got := w.nextLSN(); got != last+1 {
				t.Fatalf("nextLSN after reopen = %d, want %d", got, last+1)
			}
			if diff := cmp.Diff(want, walTestReadAll(t, w, 1)); diff != "" {
				t.Fatalf("read after reopen (-want +got):\n%s", diff)
			}
			if st2 := w.stats(); st2.TotalSizeBytes != size || st2.SegmentCount != st.SegmentCount {
				t.Errorf("stats after reopen = %+v, want size %d and %d segments", st2, size, st.SegmentCount)
			}
			last = walTestAppend(t, w, tt.n2)
			walTestClose(t, w)

			w = walTestOpen(t, dir, tt.opts)
			defer walTestClose(t, w)
			want = walTestWant(1, last)
			if diff := cmp.Diff(want, walTestReadAll(t, w, 1)); diff != "" {
				t.Fatalf("read after second reopen (-want +got):\n%s", diff)
			}
			rep, err := verifyWAL(dir)
			if err != nil || rep.Problem != nil || rep.Records != last || rep.FirstLSN != 1 || rep.LastLSN != last {
				t.Errorf("verifyWAL = %+v, %v; want %d clean records", rep, err, last)
			}
		})
	}
}

func TestWALStartLSN(t *testing.T) {
	tests := []struct {
		name      string
		before    int    // records appended in a first life starting at 1
		start     uint64 // StartLSN of the second life
		wantFirst uint64 // firstLSN in the second life
		wantNext  uint64
	}{
		{"empty dir, start 1000", -1, 1000, 1000, 1000},
		{"empty dir, start 0", -1, 0, 1, 1},
		{"empty log reopened with another start", 0, 500, 500, 500},
		{"records, start = last+1", 30, 31, 1, 31},
		{"records, start behind the log", 30, 5, 1, 31},
		{"records, start beyond the log drops them", 30, 100, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.before >= 0 {
				w := walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg})
				walTestAppend(t, w, tt.before)
				walTestClose(t, w)
			}
			w := walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg, StartLSN: tt.start})
			if got := [2]uint64{w.firstLSN(), w.nextLSN()}; got != [2]uint64{tt.wantFirst, tt.wantNext} {
				t.Fatalf("firstLSN, nextLSN = %v, want %d, %d", got, tt.wantFirst, tt.wantNext)
			}
			last := walTestAppend(t, w, 50)
			walTestClose(t, w)
			w = walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg, StartLSN: tt.start})
			defer walTestClose(t, w)
			if diff := cmp.Diff(walTestWant(tt.wantFirst, last), walTestReadAll(t, w, 0)); diff != "" {
				t.Fatalf("records (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWALOversizedRecords(t *testing.T) {
	dir := t.TempDir()
	w := walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg})
	big := func(lsn uint64) string { return strings.Repeat(fmt.Sprint(lsn%10), 3*walTestSeg+5) }
	var want []walTestRec
	add := func(p string) {
		lsn, err := w.append(9, []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, walTestRec{lsn, 9, p})
	}
	add(big(1)) // first record: replaces the empty first segment
	add("small")
	add(big(3))
	add(big(4))
	add("small again")
	if _, err := w.append(1, make([]byte, walMaxPayload+1)); !errors.Is(err, walErrTooLarge) {
		t.Errorf("append of %d bytes: err = %v, want walErrTooLarge", walMaxPayload+1, err)
	}
	add("still works")
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, walTestReadAll(t, w, 0)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	walTestClose(t, w)
	w = walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg})
	defer walTestClose(t, w)
	if diff := cmp.Diff(want, walTestReadAll(t, w, 0)); diff != "" {
		t.Fatalf("after reopen (-want +got):\n%s", diff)
	}
	if n := w.stats().SegmentCount; n != 5 {
		t.Errorf("SegmentCount = %d, want 5 (%v)", n, walTestFiles(t, dir))
	}
}

func TestWALOptionsRejected(t *testing.T) {
	for _, opts := range []walOptions{
		{Policy: fsyncPolicy{Kind: "sometimes"}},
		{Policy: fsyncPolicy{Kind: "every_n"}},
		{Policy: fsyncPolicy{Kind: "every_ms", N: -1}},
		{SegmentSize: 100},
	} {
		if w, err := openWAL(t.TempDir(), opts); err == nil {
			w.close()
			t.Errorf("openWAL(%+v) succeeded, want an error", opts)
		}
	}
}

// TestWALConcurrent runs appenders (serialized like the state engine does),
// readers following the log, a watcher on durableNotify and a compactor.
func TestWALConcurrent(t *testing.T) {
	dir := t.TempDir()
	w := walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg})
	const appenders, perAppender, readers = 4, 150, 3
	total := uint64(appenders * perAppender)
	var engineMu sync.Mutex // stands in for the state lock
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for range appenders {
		wg.Go(func() {
			for range perAppender {
				engineMu.Lock()
				next := w.nextLSN()
				lsn, err := w.append(walTestType(next), []byte(walTestPayload(next)))
				engineMu.Unlock()
				if err == nil {
					err = w.waitDurable(lsn)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	check := func(who string, r walRecord, prev uint64) error {
		if r.LSN <= prev || r.Type != walTestType(r.LSN) || string(r.Payload) != walTestPayload(r.LSN) {
			return fmt.Errorf("%s: bad record %d after %d: type %d payload %.20q", who, r.LSN, prev, r.Type, r.Payload)
		}
		if d := w.durableLSN(); r.LSN > d {
			return fmt.Errorf("%s: read record %d beyond durable %d", who, r.LSN, d)
		}
		return nil
	}
	var readersWG sync.WaitGroup
	for i := range readers {
		readersWG.Go(func() {
			var seen uint64
			for seen < total {
				ch := w.durableNotify()
				if w.durableLSN() <= seen {
					select {
					case <-ch:
					case <-time.After(5 * time.Second):
						errc <- fmt.Errorf("reader %d: stuck at %d", i, seen)
						return
					}
					continue
				}
				err := w.read(seen+1, func(r walRecord) bool {
					if err := check(fmt.Sprint("reader ", i), r, seen); err != nil {
						errc <- err
						return false
					}
					seen = r.LSN
					return true
				})
				if err != nil {
					errc <- err
					return
				}
				if len(errc) > 0 {
					return
				}
			}
		})
	}
	readersWG.Go(func() { // watcher: woken by durableNotify, never sees beyond durable
		var seen uint64
		for seen < total {
			ch := w.durableNotify()
			if d := w.durableLSN(); d > seen {
				seen = d
				continue
			}
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				errc <- fmt.Errorf("watcher: no wake-up after LSN %d", seen)
				return
			}
		}
	})
	stop := make(chan struct{})
	compactor := make(chan struct{})
	go func() {
		defer close(compactor)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if d := w.durableLSN(); d > 100 {
				if _, _, err := w.removeThrough(d - 100); err != nil {
					errc <- err
					return
				}
			}
		}
	}()
	wg.Wait()
	readersWG.Wait()
	close(stop)
	<-compactor
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	first := w.firstLSN()
	if diff := cmp.Diff(walTestWant(first, total), walTestReadAll(t, w, 0)); diff != "" {
		t.Fatalf("final read (-want +got):\n%s", diff)
	}
	walTestClose(t, w)
	w = walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg})
	defer walTestClose(t, w)
	if diff := cmp.Diff(walTestWant(first, total), walTestReadAll(t, w, 0)); diff != "" {
		t.Fatalf("after reopen (-want +got):\n%s", diff)
	}
}

func TestWALRemoveThrough(t *testing.T) {
	dir := t.TempDir()
	opts := walOptions{SegmentSize: walTestSeg}
	w := walTestOpen(t, dir, opts)
	last := walTestAppend(t, w, 200)
	if err := w.waitDurable(last); err != nil {
		t.Fatal(err)
	}
	lay := walTestLayout(t, dir)
	type result struct {
		Deleted   int
		Reclaimed int64
		First     uint64
	}
	var active int64
	for _, l := range lay {
		active = l.size // all segments of this test have the same size
	}
	steps := []struct {
		through uint64
		want    result
	}{
		{0, result{0, 0, 1}},
		{lay[0].last() - 1, result{0, 0, 1}},
		{lay[2].last(), result{3, 3 * active, lay[3].first}},
		{lay[3].last() + 1, result{1, active, lay[4].first}},
		{last + 100, result{len(lay) - 5, int64(len(lay)-5) * active, lay[len(lay)-1].first}},
	}
	for _, s := range steps {
		d, b, err := w.removeThrough(s.through)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, result{d, b, w.firstLSN()}); diff != "" {
			t.Errorf("removeThrough(%d) (-want +got):\n%s", s.through, diff)
		}
	}
	first := lay[len(lay)-1].first
	if diff := cmp.Diff(walTestWant(first, last), walTestReadAll(t, w, 1)); diff != "" {
		t.Errorf("read from 1 after removal (-want +got):\n%s", diff)
	}
	if st := w.stats(); st.SegmentCount != 1 || st.EntryCount != last-first+1 || st.FirstLSN != first {
		t.Errorf("stats = %+v", st)
	}
	walTestClose(t, w)
	if diff := cmp.Diff([]string{walSegmentName(first), walLockName}, walTestFiles(t, dir)); diff != "" {
		t.Errorf("files left (-want +got):\n%s", diff)
	}
	w = walTestOpen(t, dir, opts)
	defer walTestClose(t, w)
	if got := w.firstLSN(); got != first {
		t.Errorf("firstLSN after reopen = %d, want %d", got, first)
	}
	last = walTestAppend(t, w, 100)
	w.sync()

	// A reader keeps using a segment that is removed under it.
	var got []walTestRec
	cur := w.firstLSN()
	err := w.read(0, func(r walRecord) bool {
		if r.LSN == cur {
			if d, _, err := w.removeThrough(last - 1); err != nil || d == 0 {
				t.Errorf("removeThrough during read = %d, %v", d, err)
			}
		}
		got = append(got, walTestRec{r.LSN, r.Type, string(r.Payload)})
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[0].LSN != cur {
		t.Fatalf("read started at %v, want %d", got, cur)
	}
	// The reader finished the segment it held, then jumped to what is left.
	for i, r := range got {
		if r != walTestWant(r.LSN, r.LSN)[0] || (i > 0 && r.LSN <= got[i-1].LSN) {
			t.Fatalf("bad record %+v at %d", r, i)
		}
	}
}

// walTestCounter is an fdatasync seam that counts calls.
func walTestCounter(calls *atomic.Int64) func(*os.File) error {
	return func(f *os.File) error { calls.Add(1); return syncData(f) }
}

func TestWALEveryWriteWaitsForSync(t *testing.T) {
	w := walTestOpen(t, t.TempDir(), walOptions{})
	defer walTestClose(t, w)
	gate := make(chan struct{})
	w.fdatasync = func(f *os.File) error { <-gate; return syncData(f) }
	ch := w.durableNotify()
	lsn := walTestAppend(t, w, 3)
	done := make(chan error, 1)
	go func() { done <- w.waitDurable(lsn) }()
	select {
	case err := <-done:
		t.Fatalf("waitDurable returned %v before the sync", err)
	case <-ch:
		t.Fatal("durableNotify fired before the sync")
	case <-time.After(50 * time.Millisecond):
	}
	if d := w.durableLSN(); d != 0 {
		t.Fatalf("durableLSN = %d before the sync, want 0", d)
	}
	fsyncs := w.stats().Fsyncs
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-ch
	st := w.stats()
	if st.DurableLSN != lsn || st.SyncedLSN != lsn || st.Fsyncs <= fsyncs {
		t.Errorf("stats after sync = %+v, want durable and synced %d and more fsyncs than %d", st, lsn, fsyncs)
	}
}

func TestWALPolicies(t *testing.T) {
	tests := []struct {
		name   string
		policy fsyncPolicy
		// run appends and checks the sync calls it sees.
		run func(t *testing.T, w *wal, calls *atomic.Int64)
	}{
		{"every_n", fsyncPolicy{Kind: "every_n", N: 5}, func(t *testing.T, w *wal, calls *atomic.Int64) {
			for round := int64(1); round <= 3; round++ {
				lsn := walTestAppend(t, w, 4)
				if err := w.waitDurable(lsn); err != nil { // acknowledged at once
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
				if got := calls.Load(); got != round-1 {
					t.Fatalf("round %d: %d syncs after 4 more appends, want %d", round, got, round-1)
				}
				lsn = walTestAppend(t, w, 1)
				walTestWaitFor(t, "sync after the 5th append", func() bool { return w.stats().SyncedLSN == lsn })
				if got := calls.Load(); got != round {
					t.Fatalf("round %d: %d syncs, want %d", round, got, round)
				}
			}
		}},
		{"every_ms", fsyncPolicy{Kind: "every_ms", N: 10}, func(t *testing.T, w *wal, calls *atomic.Int64) {
			lsn := walTestAppend(t, w, 3)
			if err := w.waitDurable(lsn); err != nil || w.durableLSN() != lsn {
				t.Fatalf("waitDurable = %v, durable %d: want immediate acknowledgement", err, w.durableLSN())
			}
			walTestWaitFor(t, "timer sync", func() bool { return w.stats().SyncedLSN == lsn })
			idle := calls.Load()
			if idle < 1 {
				t.Fatalf("synced without an fdatasync?")
			}
			time.Sleep(100 * time.Millisecond) // ten ticks with nothing to sync
			if got := calls.Load(); got != idle {
				t.Errorf("%d syncs while idle, want none", got-idle)
			}
			lsn = walTestAppend(t, w, 1)
			walTestWaitFor(t, "timer sync", func() bool { return w.stats().SyncedLSN == lsn })
		}},
		{"never", fsyncPolicy{Kind: "never"}, func(t *testing.T, w *wal, calls *atomic.Int64) {
			lsn := walTestAppend(t, w, 100)
			if err := w.waitDurable(lsn); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
			if got, st := calls.Load(), w.stats(); got != 0 || st.SyncedLSN != 0 || st.DurableLSN != lsn {
				t.Errorf("%d syncs, stats %+v; want none, everything acknowledged", got, st)
			}
			if err := w.sync(); err != nil || calls.Load() != 1 || w.stats().SyncedLSN != lsn {
				t.Errorf("sync() = %v, %d calls, synced %d", err, calls.Load(), w.stats().SyncedLSN)
			}
			walTestAppend(t, w, 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w := walTestOpen(t, dir, walOptions{Policy: tt.policy})
			var calls atomic.Int64
			w.fdatasync = walTestCounter(&calls)
			before := w.stats().Fsyncs
			tt.run(t, w, &calls)
			if got := w.stats().Fsyncs - before; got != uint64(calls.Load()) {
				t.Errorf("Fsyncs counter grew by %d, the seam saw %d", got, calls.Load())
			}
			// close does a final sync of whatever is left.
			n := calls.Load()
			last := walTestAppend(t, w, 1)
			walTestClose(t, w)
			if got := calls.Load(); got != n+1 {
				t.Errorf("%d syncs for the last append and close, want 1", got-n)
			}
			if st := w.stats(); st.SyncedLSN != last {
				t.Errorf("SyncedLSN after close = %d, want %d", st.SyncedLSN, last)
			}
			w = walTestOpen(t, dir, walOptions{Policy: tt.policy})
			defer walTestClose(t, w)
			if diff := cmp.Diff(walTestWant(1, last), walTestReadAll(t, w, 0)); diff != "" {
				t.Errorf("after reopen (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWALStickyFsyncFailure(t *testing.T) {
	w := walTestOpen(t, t.TempDir(), walOptions{})
	gate := make(chan struct{})
	var calls atomic.Int64
	w.fdatasync = func(f *os.File) error {
		if calls.Add(1) == 1 {
			<-gate
			return syscall.EIO
		}
		return syncData(f)
	}
	ch := w.durableNotify()
	first := walTestAppend(t, w, 1) // the committer takes it and blocks in the seam
	walTestWaitFor(t, "the first sync", func() bool { return calls.Load() == 1 })
	last := walTestAppend(t, w, 3) // pending behind the failing sync
	errs := make(chan error, last)
	for lsn := first; lsn <= last; lsn++ {
		go func() { errs <- w.waitDurable(lsn) }()
	}
	close(gate)
	for range last {
		if err := <-errs; !errors.Is(err, walErrIO) || !errors.Is(err, syscall.EIO) {
			t.Errorf("pending waitDurable = %v, want a walErrIO wrapping EIO", err)
		}
	}
	<-ch // waiters and watchers are woken by the failure
	if _, err := w.append(1, []byte("after")); !errors.Is(err, walErrIO) {
		t.Errorf("append after the failure = %v, want walErrIO", err)
	}
	if err := w.waitDurable(first); !errors.Is(err, walErrIO) {
		t.Errorf("waitDurable after the failure = %v, want walErrIO", err)
	}
	if err := w.sync(); !errors.Is(err, walErrIO) {
		t.Errorf("sync after the failure = %v, want walErrIO", err)
	}
	time.Sleep(20 * time.Millisecond)
	if got := calls.Load(); got != 1 {
		t.Errorf("fdatasync called %d times, want 1 (never retried)", got)
	}
	if st := w.stats(); st.DurableLSN != 0 || st.SyncedLSN != 0 || st.LastLSN != last {
		t.Errorf("stats = %+v: nothing may report durable", st)
	}
	if err := w.failure(); !errors.Is(err, walErrIO) {
		t.Errorf("failure() = %v, want the sticky error", err)
	}
	select {
	case <-w.durableNotify():
	default:
		t.Error("durableNotify after the failure is not closed")
	}
	if err := w.close(); !errors.Is(err, walErrIO) {
		t.Errorf("close = %v, want the sticky error", err)
	}
}

func TestWALDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	w := walTestOpen(t, dir, walOptions{})
	if w2, err := openWAL(dir, walOptions{}); err == nil {
		w2.close()
		t.Fatal("a second openWAL of the same directory succeeded")
	}
	if _, err := repairWAL(dir); err == nil {
		t.Error("repairWAL succeeded while the log is open")
	}
	if _, err := verifyWAL(dir); err != nil {
		t.Errorf("verifyWAL while open: %v", err)
	}
	walTestClose(t, w)
	select {
	case <-w.durableNotify():
	default:
		t.Error("durableNotify after close is not closed")
	}
	if err := w.failure(); !errors.Is(err, walErrClosed) {
		t.Errorf("failure() after close = %v, want walErrClosed", err)
	}
	if _, err := w.append(1, nil); !errors.Is(err, walErrClosed) {
		t.Errorf("append after close = %v, want walErrClosed", err)
	}
	w = walTestOpen(t, dir, walOptions{})
	walTestClose(t, w)
	if _, err := repairWAL(dir); err != nil {
		t.Errorf("repairWAL after close: %v", err)
	}
}

func TestWALWriteFailureIsSticky(t *testing.T) {
	// every_write: append only queues the record, so the failed pwrite
	// surfaces in waitDurable; the other policies write in append.
	for _, policy := range []fsyncPolicy{{Kind: "every_write"}, {Kind: "never"}} {
		t.Run(policy.Kind, func(t *testing.T) {
			dir := t.TempDir()
			w := walTestOpen(t, dir, walOptions{Policy: policy})
			last := walTestAppend(t, w, 5)
			if err := w.sync(); err != nil {
				t.Fatal(err)
			}
			w.mu.Lock() // the committer may be reading the seam
			w.writeAt = func(*os.File, []byte, int64) (int, error) { return 3, syscall.EIO }
			w.mu.Unlock()
			lsn, err := w.append(1, []byte("x"))
			if policy.Kind == "every_write" {
				if err != nil {
					t.Fatalf("append = %v, want the record queued", err)
				}
				if err := w.waitDurable(lsn); !errors.Is(err, walErrIO) {
					t.Fatalf("waitDurable after a failed write = %v, want walErrIO", err)
				}
			} else if !errors.Is(err, walErrIO) {
				t.Fatalf("append = %v, want walErrIO", err)
			}
			w.mu.Lock()
			w.writeAt = func(f *os.File, b []byte, off int64) (int, error) { return f.WriteAt(b, off) }
			w.mu.Unlock()
			if _, err := w.append(1, []byte("x")); !errors.Is(err, walErrIO) {
				t.Fatalf("append after a failed write = %v, want the sticky walErrIO", err)
			}
			if err := w.sync(); !errors.Is(err, walErrIO) {
				t.Fatalf("sync after a failed write = %v, want the sticky walErrIO", err)
			}
			w.close()
			w = walTestOpen(t, dir, walOptions{})
			defer walTestClose(t, w)
			if diff := cmp.Diff(walTestWant(1, last), walTestReadAll(t, w, 0)); diff != "" {
				t.Errorf("after reopen (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWALFallocateENOSPC(t *testing.T) {
	dir := t.TempDir()
	opts := walOptions{SegmentSize: walTestSeg}
	w := walTestOpen(t, dir, opts)
	w.fallocate = func(*os.File, int64) error { return syscall.ENOSPC }
	var last uint64
	var err error
	for range 1000 {
		var lsn uint64
		next := w.nextLSN()
		if lsn, err = w.append(walTestType(next), []byte(walTestPayload(next))); err != nil {
			break
		}
		last = lsn
	}
	if !errors.Is(err, walErrIO) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk = %v, want walErrIO wrapping ENOSPC", err)
	}
	if got := w.nextLSN(); got != last+1 {
		t.Errorf("nextLSN after the failed append = %d, want %d (nothing changed)", got, last+1)
	}
	if _, err := w.append(1, make([]byte, walTestSeg)); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("second append = %v, want ENOSPC again", err)
	}
	if err := w.waitDurable(last); err != nil {
		t.Errorf("waitDurable of the last good record = %v (ENOSPC must not be sticky)", err)
	}
	walTestClose(t, w)
	if diff := cmp.Diff([]string{walSegmentName(1), walLockName}, walTestFiles(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}

	w = walTestOpen(t, dir, opts)
	if diff := cmp.Diff(walTestWant(1, last), walTestReadAll(t, w, 0)); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	// Space is back: the same log goes on with the next LSN.
	w.fallocate = func(*os.File, int64) error { return syscall.ENOSPC }
	if _, err := w.append(1, make([]byte, walTestSeg)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append = %v, want ENOSPC", err)
	}
	w.fallocate = preallocate
	last = walTestAppend(t, w, 50)
	walTestClose(t, w)
	w = walTestOpen(t, dir, opts)
	defer walTestClose(t, w)
	if diff := cmp.Diff(walTestWant(1, last), walTestReadAll(t, w, 0)); diff != "" {
		t.Errorf("after space came back (-want +got):\n%s", diff)
	}
}

// Leader commits: a writer that holds a lease syncs its own record on its
// own goroutine (one fdatasync, the committer not involved); an append
// made by someone else while a lease is held is still committed once the
// lease ends; concurrent leaders share syncs.
func TestWALLead(t *testing.T) {
	t.Run("lone writer syncs itself", func(t *testing.T) {
		w := walTestOpen(t, t.TempDir(), walOptions{})
		defer walTestClose(t, w)
		var calls atomic.Int64
		var byLeader atomic.Bool
		w.mu.Lock()
		w.fdatasync = func(f *os.File) error {
			calls.Add(1)
			byLeader.Store(strings.Contains(string(debug.Stack()), "(*wal).lead("))
			return syncData(f)
		}
		w.mu.Unlock()
		for i := range 20 {
			w.lease()
			lsn, err := w.append(1, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			before := calls.Load()
			if err := w.lead(lsn); err != nil {
				t.Fatal(err)
			}
			w.unlease()
			if d := w.durableLSN(); d < lsn {
				t.Fatalf("write %d: durable %d after lead(%d)", i, d, lsn)
			}
			if n := calls.Load() - before; n != 1 || !byLeader.Load() {
				t.Fatalf("write %d: %d fdatasyncs, by the leader: %v; want one, by the leader", i, n, byLeader.Load())
			}
		}
	})
	t.Run("append during a lease is committed after it", func(t *testing.T) {
		w := walTestOpen(t, t.TempDir(), walOptions{})
		defer walTestClose(t, w)
		w.lease()
		lsn, err := w.append(1, []byte("timer fired")) // nobody leads it
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		if d := w.durableLSN(); d >= lsn {
			t.Fatalf("durable %d while the lease holds the committer back", d)
		}
		w.unlease()
		walTestDurableWithin(t, w, lsn)
	})
	t.Run("a follower is woken when the commit lock is released", func(t *testing.T) {
		// The race this covers: a commit publishes and wakes waiters,
		// then a follower takes its channel and finds the lock still
		// held, then the lock is released. The follower's record is in
		// no commit, and its lease keeps the committer asleep.
		w := walTestOpen(t, t.TempDir(), walOptions{})
		defer walTestClose(t, w)
		w.lease()
		defer w.unlease()
		lsn, err := w.append(1, []byte("late"))
		if err != nil {
			t.Fatal(err)
		}
		w.syncMu.Lock() // a commit that has published and not yet unlocked
		done := make(chan error, 1)
		go func() { done <- w.lead(lsn) }()
		time.Sleep(20 * time.Millisecond) // the follower is waiting
		w.unlockSync()
		select {
		case err := <-done:
			if err != nil || w.durableLSN() < lsn {
				t.Fatalf("lead: %v, durable %d, want %d", err, w.durableLSN(), lsn)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the follower was never woken to lead its own record")
		}
	})
	t.Run("a lease that begins during an append and commits nothing", func(t *testing.T) {
		// An identical PUT_MACHINE or an idempotent replay takes a lease
		// and appends nothing: an append that had just seen no lease
		// must still reach the committer.
		w := walTestOpen(t, t.TempDir(), walOptions{})
		defer walTestClose(t, w)
		walLeaseSeen = func() { w.lease() }
		lsn, err := w.append(1, []byte("unled"))
		walLeaseSeen = nil
		if err != nil {
			t.Fatal(err)
		}
		w.unlease() // it led nothing
		walTestDurableWithin(t, w, lsn)
	})
	t.Run("concurrent leaders share syncs", func(t *testing.T) {
		w := walTestOpen(t, t.TempDir(), walOptions{})
		defer walTestClose(t, w)
		var calls atomic.Int64
		w.mu.Lock()
		w.fdatasync = func(f *os.File) error {
			calls.Add(1)
			time.Sleep(2 * time.Millisecond)
			return syncData(f)
		}
		w.mu.Unlock()
		const writers, each = 16, 20
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					w.lease()
					lsn, err := w.append(1, []byte("y"))
					if err == nil {
						err = w.lead(lsn)
					}
					w.unlease()
					if err == nil && w.durableLSN() < lsn {
						err = fmt.Errorf("durable %d after lead(%d)", w.durableLSN(), lsn)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := calls.Load(); n >= writers*each {
			t.Errorf("%d fdatasyncs for %d writes: leaders did not share syncs", n, writers*each)
		}
		t.Logf("%d writes, %d fdatasyncs", writers*each, calls.Load())
	})
}

// walTestDurableWithin fails unless lsn becomes durable within 5 s, with
// no further appends to carry it.
func walTestDurableWithin(t *testing.T, w *wal, lsn uint64) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.waitDurable(lsn) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("record %d never became durable (durable %d)", lsn, w.durableLSN())
	}
}
