package main

// Crash tests of the log on its own: a child process killed while it
// appends, and a copy of the directory at every sync; and its benchmarks.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestWALCrash kills a child process that appends with every_write at a
// random moment, then checks that every LSN it reported durable is there.
func TestWALCrash(t *testing.T) {
	if dir := os.Getenv("WAL_CRASH_CHILD"); dir != "" {
		walCrashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	var lastSeen uint64
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWALCrash$", "-test.count=1")
		cmd.Env = append(os.Environ(), "WAL_CRASH_CHILD="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan []uint64)
		started := make(chan struct{})
		go func() {
			var got []uint64
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if lsn, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
					if got = append(got, lsn); len(got) == 1 {
						close(started)
					}
				}
			}
			io.Copy(io.Discard, out)
			lines <- got
		}()
		select { // kill at a random moment once the child is writing
		case <-started:
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		case <-time.After(10 * time.Second):
		}
		cmd.Process.Signal(syscall.SIGKILL)
		durable := <-lines
		cmd.Wait()
		if len(durable) == 0 {
			t.Fatalf("round %d: the child reported nothing durable", round)
		}
		w := walTestOpen(t, dir, walOptions{SegmentSize: 16 << 10})
		recs := walTestReadAll(t, w, 0)
		walTestClose(t, w)
		if diff := cmp.Diff(walTestWant(1, uint64(len(recs))), recs); diff != "" {
			t.Fatalf("round %d: records are not dense and intact (-want +got):\n%s", round, diff)
		}
		have := uint64(len(recs))
		if have < lastSeen {
			t.Fatalf("round %d: log ends at %d, the previous round recovered %d", round, have, lastSeen)
		}
		for _, lsn := range durable {
			if lsn > have {
				t.Fatalf("round %d: LSN %d was reported durable, log ends at %d", round, lsn, have)
			}
		}
		t.Logf("round %d: %d records reported durable, %d in the log", round, len(durable), have)
		lastSeen = have
	}
}

func walCrashChild(dir string) {
	w, err := openWAL(dir, walOptions{SegmentSize: 16 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu, outMu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second)
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				mu.Lock()
				next := w.nextLSN()
				lsn, err := w.append(walTestType(next), []byte(walTestPayload(next)))
				mu.Unlock()
				if err == nil {
					err = w.waitDurable(lsn)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				outMu.Lock()
				fmt.Fprintln(os.Stdout, lsn)
				outMu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

func BenchmarkWALAppendCommit(b *testing.B) {
	w := walTestOpen(b, b.TempDir(), walOptions{})
	defer w.close()
	payload := bytes.Repeat([]byte("p"), 128)
	before := w.stats().Fsyncs
	b.ReportAllocs()
	b.SetParallelism(32) // 64 appenders on 2 CPUs, like 64 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			lsn, err := w.append(1, payload)
			if err == nil {
				err = w.waitDurable(lsn)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(w.stats().Fsyncs-before)/float64(b.N), "fsyncs/op")
}

func BenchmarkWALReplay(b *testing.B) {
	dir := b.TempDir()
	const records = 500_000
	w := walTestOpen(b, dir, walOptions{Policy: fsyncPolicy{Kind: "never"}})
	payload := bytes.Repeat([]byte("r"), 100)
	for range records {
		if _, err := w.append(3, payload); err != nil {
			b.Fatal(err)
		}
	}
	walTestClose(b, w)
	b.ResetTimer()
	for b.Loop() {
		w, err := openWAL(dir, walOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var n, sum int
		if err := w.read(0, func(r walRecord) bool { n++; sum += len(r.Payload); return true }); err != nil {
			b.Fatal(err)
		}
		w.close()
		if n != records {
			b.Fatalf("replayed %d records, want %d", n, records)
		}
	}
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestWALCrashPoints copies the log directory at every fdatasync and
// directory fsync while six goroutines append (4 KiB segments, some records
// larger than a segment, so rotations happen under pending commits) and a
// seventh trims and reads; each copy must recover, densely, with every
// record that was durable at that moment. It covers the deferred naming of
// rotated-in segments at each point a kill -9 could land between syncs.
func TestWALCrashPoints(t *testing.T) {
	dir := t.TempDir()
	opts := walOptions{SegmentSize: 4 << 10}
	w := walTestOpen(t, dir, opts)
	var copyMu sync.Mutex // no trimming while a copy is taken
	var trimming atomic.Bool
	var points atomic.Int64
	check := func(where string) {
		copyMu.Lock()
		defer copyMu.Unlock()
		durable := w.durableLSN()
		cp := t.TempDir()
		walTestCopyDir(t, dir, cp)
		r, err := openWAL(cp, opts)
		if err != nil {
			t.Errorf("at %s: the crash copy does not recover: %v", where, err)
			return
		}
		defer r.close()
		var prev uint64
		first := r.firstLSN()
		if err := r.read(0, func(rec walRecord) bool {
			if prev != 0 && rec.LSN != prev+1 {
				t.Errorf("at %s: gap %d -> %d", where, prev, rec.LSN)
			}
			if want := fmt.Sprintf("lsn=%d;", rec.LSN); !strings.HasPrefix(string(rec.Payload), want) {
				t.Errorf("at %s: LSN %d holds %.20q", where, rec.LSN, rec.Payload)
			}
			prev = rec.LSN
			return true
		}); err != nil {
			t.Errorf("at %s: read: %v", where, err)
		}
		if last := r.lastLSN(); last < durable && first <= durable {
			t.Errorf("at %s: LSN %d was durable, the crash copy ends at %d", where, durable, last)
		}
		points.Add(1)
	}
	w.mu.Lock()
	w.fdatasync = func(f *os.File) error { check("fdatasync"); return syncData(f) }
	w.syncDir = func(d string) error {
		if !trimming.Load() {
			check("directory fsync")
		}
		return syncDir(d)
	}
	w.mu.Unlock()

	var appendMu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(1500 * time.Millisecond)
	for g := range 6 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				appendMu.Lock()
				next := w.nextLSN()
				size := int(next*37%300) + 1
				if (i+g)%23 == 0 {
					size = 6 << 10 // a segment of its own
				}
				lsn, err := w.append(1, []byte(fmt.Sprintf("lsn=%d;", next)+strings.Repeat("x", size)))
				appendMu.Unlock()
				if err == nil {
					err = w.waitDurable(lsn)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for time.Now().Before(deadline) {
			d := w.durableLSN()
			copyMu.Lock()
			trimming.Store(true)
			_, _, err := w.removeThrough(d - d/4)
			trimming.Store(false)
			copyMu.Unlock()
			if err != nil {
				t.Error(err)
			}
			var prev uint64
			w.read(0, func(rec walRecord) bool {
				if prev != 0 && rec.LSN != prev+1 {
					t.Errorf("live read: gap %d -> %d", prev, rec.LSN)
				}
				prev = rec.LSN
				return true
			})
			time.Sleep(5 * time.Millisecond)
		}
	})
	wg.Wait()
	walTestClose(t, w)
	if points.Load() < 50 {
		t.Errorf("only %d crash points checked", points.Load())
	}
	t.Logf("%d crash points checked", points.Load())
}
