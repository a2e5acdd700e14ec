package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Benchmarks of the budgets in DESIGN.md. They report figures; none of them
// asserts a timing. Run them with, for example,
//
//	go test -run '^$' -bench . -benchmem
//	go test -run '^$' -bench Heap1M -benchtime 1x   # 1M instances, only when named
//
// The load tool itself is exercised by TestBenchTool; the figures from
// `stmdb bench` are in PERFORMANCE.md.

// benchDef is the machine the benchmarks drive: a guarded self-loop, so an
// APPLY_EVENT always succeeds, evaluates a guard and merges its payload.
const benchDef = benchMachineDef

// benchCtx returns a JSON object of exactly size bytes (size >= 20):
// {"n":0,"pad":"xxx..."}.
func benchCtx(size int) []byte {
	const frame = len(`{"n":0,"pad":""}`)
	return []byte(`{"n":0,"pad":"` + strings.Repeat("x", max(size-frame, 0)) + `"}`)
}

// benchCPU starts measuring the process's CPU time (user + system, every
// goroutine, GC included); the returned func reports it per op as
// "cpu-ns/op". On a shared machine wall time (ns/op) includes waiting for a
// CPU; cpu-ns/op does not.
func benchCPU(b *testing.B) func() {
	start := benchRusage()
	return func() {
		b.ReportMetric(float64(benchRusage()-start)/float64(b.N), "cpu-ns/op")
	}
}

func benchRusage() int64 {
	d, _ := processCPUTime()
	return int64(d)
}

// benchOpen opens a server in a temporary directory with the given fsync
// policy, registers the bench machine and creates n instances with a ctx of
// ctxBytes bytes. Automatic compaction is off so it cannot interfere.
func benchOpen(tb testing.TB, policy string, n, ctxBytes int) (*server, []string) {
	tb.Helper()
	cfg := defaultConfig()
	cfg.DataDir = tb.TempDir()
	cfg.Fsync = fsyncPolicy{Kind: policy}
	cfg.CompactEnabled = false
	s, err := openServer(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.close() })
	if _, rerr := s.handlePutMachine(nil, &PutMachineParams{Machine: benchMachine, Version: benchMachineVersion, Definition: json.RawMessage(benchDef)}); rerr != nil {
		tb.Fatal(rerr)
	}
	ids := make([]string, n)
	ctx := benchCtx(ctxBytes)
	for i := range ids {
		id := "bench-" + strconv.Itoa(i)
		ids[i] = id
		if _, rerr := s.handleCreateInstance(nil, &CreateInstanceParams{InstanceID: &id, Machine: benchMachine, Version: benchMachineVersion, InitialCtx: ctx}); rerr != nil {
			tb.Fatal(rerr)
		}
	}
	return s, ids
}

// benchDiscardWrites makes s's log encode records without writing them.
// Under every_write, append only encodes into the pending buffer and the
// committer writes whole groups; the request benchmarks measure the
// request's own CPU, so they run under policy never (no committer) with
// its per-record pwrite taken out.
func benchDiscardWrites(s *server) {
	s.log.mu.Lock()
	s.log.writeAt = func(_ *os.File, b []byte, _ int64) (int, error) { return len(b), nil }
	s.log.mu.Unlock()
}

// BenchmarkApplyEventHandler is the APPLY_EVENT handler on its own: state
// lock, instance lookup, guard, ctx merge, record encoding, WAL append
// (encoding only, see benchDiscardWrites), apply and the result. Params are
// decoded once, outside the loop.
func BenchmarkApplyEventHandler(b *testing.B) {
	for _, ctxBytes := range []int{32, 100, 1000} {
		b.Run(fmt.Sprintf("ctx=%d", ctxBytes), func(b *testing.B) {
			s, ids := benchOpen(b, "never", 1000, ctxBytes)
			benchDiscardWrites(s)
			params := make([]ApplyEventParams, len(ids))
			payload := json.RawMessage(`{"n":1}`)
			for i, id := range ids {
				params[i] = ApplyEventParams{InstanceID: id, Event: "TICK", Payload: payload}
			}
			b.ReportAllocs()
			b.ResetTimer()
			defer benchCPU(b)()
			for i := range b.N {
				if _, err := s.handleApplyEvent(nil, &params[i%len(params)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRequest is one request payload through conn.handle: envelope
// decode, op lookup, generated params decode, handler, response encode and
// framing (binary). No network.
func BenchmarkRequest(b *testing.B) {
	s, ids := benchOpen(b, "never", 1000, 100)
	benchDiscardWrites(s)
	c := &conn{s: s, fr: newFrameReader(nil)}
	pad := strings.Repeat("x", 100) // what stmdb bench sends by default
	reqs := map[string]func(i int) []byte{
		"PING": func(int) []byte { return []byte(`{"type":"request","id":"1","op":"PING"}`) },
		"GET_INSTANCE": func(i int) []byte {
			return []byte(`{"type":"request","id":"1","op":"GET_INSTANCE","params":{"instance_id":"` + ids[i] + `"}}`)
		},
		"APPLY_EVENT": func(i int) []byte {
			return []byte(`{"type":"request","id":"1","op":"APPLY_EVENT","params":{"instance_id":"` + ids[i] + `","event":"TICK","payload":{"n":1,"pad":"` + pad + `"}}}`)
		},
	}
	for _, name := range []string{"PING", "GET_INSTANCE", "APPLY_EVENT"} {
		b.Run(name, func(b *testing.B) {
			payloads := make([][]byte, 64)
			for i := range payloads {
				payloads[i] = reqs[name](i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			defer benchCPU(b)()
			for i := range b.N {
				m := c.handle(payloads[i%len(payloads)], time.Now())
				if !bytes.Contains(m.buf[:min(len(m.buf), 64)], []byte(`"status":"ok"`)) {
					b.Fatalf("%s", m.buf)
				}
				m.written() // as the connection's writer does
			}
		})
	}
}

// Frame encode and decode have their benchmarks beside the codec, in
// frame_test.go (BenchmarkFrameEncode, BenchmarkFrameDecode), and a test
// there asserts they allocate nothing.

// BenchmarkReplay replays a WAL of 1000 creates and 200k APPLY_EVENTs
// (100-byte ctx) into a fresh state: recovery's per-record cost.
func BenchmarkReplay(b *testing.B) {
	const events = 200_000
	s, ids := benchOpen(b, "never", 1000, 100)
	payload := json.RawMessage(`{"n":1}`)
	for i := range events {
		if _, err := s.handleApplyEvent(nil, &ApplyEventParams{InstanceID: ids[i%len(ids)], Event: "TICK", Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
	dir := filepath.Join(s.cfg.DataDir, "wal")
	if err := s.close(); err != nil {
		b.Fatal(err)
	}
	w, err := openWAL(dir, walOptions{SegmentSize: s.cfg.SegmentSizeMB << 20, Policy: fsyncPolicy{Kind: "never"}})
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := benchRusage()
	total := 0
	for range b.N {
		st := newState(s.cfg.IdempotencyTTL.Milliseconds())
		n, err := replayInto(st, w, 0)
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}
	cpu := float64(benchRusage()-cpu0) / 1e9
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(total)/cpu, "records/cpu-s")
	b.ReportMetric(float64(total)/float64(b.N), "records/op")
}

// benchBuildState builds a state of n instances with a ctxBytes ctx the way
// replay does: one put_machine record, then one create record per
// instance, each with its own ctx slice, through st.apply.
func benchBuildState(tb testing.TB, n, ctxBytes int) *state {
	tb.Helper()
	st := newState(defaultConfig().IdempotencyTTL.Milliseconds())
	mv, rerr := compileMachine(benchMachine, benchMachineVersion, json.RawMessage(benchDef))
	if rerr != nil {
		tb.Fatal(rerr)
	}
	st.apply(&record{typ: recPutMachine, lsn: 1, Machine: benchMachine, Version: benchMachineVersion, Def: mv.def, Checksum: mv.checksum, mv: mv})
	ctx := benchCtx(ctxBytes)
	now := time.Now().UnixMilli()
	r := &record{typ: recCreateInstance, Time: now, Machine: benchMachine, Version: benchMachineVersion, InitialState: "live"}
	for i := range n {
		r.lsn = uint64(i + 2)
		r.InstanceID = "inst-" + strconv.Itoa(i)
		r.InitialCtx = bytes.Clone(ctx)
		st.apply(r)
	}
	return st
}

// BenchmarkSnapshot writes (fsync included) and loads a full snapshot of
// 100k instances with a 100-byte ctx.
func BenchmarkSnapshot(b *testing.B) {
	const n = 100_000
	st := benchBuildState(b, n, 100)
	dir := b.TempDir()
	b.Run("write", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			st.mu.Lock()
			img := st.capture()
			st.mu.Unlock()
			if _, _, err := writeSnapshot(dir, img); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "instances/s")
	})
	b.Run("load", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			got, _, err := loadNewestSnapshot(dir, st.idemTTL)
			if err != nil {
				b.Fatal(err)
			}
			if len(got.instances) != n {
				b.Fatalf("loaded %d instances, want %d", len(got.instances), n)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "instances/s")
	})
}

// BenchmarkSnapshotPause measures how long a compaction holds the state
// lock at 1M instances and 1M live idempotency keys (budget: < 10 ms):
// capture shares the instance table and the key table copy-on-write. It
// also reports the time of the expiry scan before it, which takes the lock
// once per key shard. Runs only when named:
// go test -run '^$' -bench SnapshotPause -benchtime 5x.
func BenchmarkSnapshotPause(b *testing.B) {
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), "SnapshotPause") {
		b.Skip("runs only when named: -bench SnapshotPause")
	}
	st := benchBuildState(b, 1_000_000, 100)
	result := []byte(`{"applied":true,"ctx":{"n":1},"from_state":"a","to_state":"b","wal_offset":1}`)
	for i := range 1_000_000 {
		st.idem.set(idemKey{recApplyEvent, "key-" + strconv.Itoa(i)}, &idemEntry{hash: "0123456789abcdef", lsn: uint64(i + 1), expires: math.MaxInt64, result: result})
	}
	b.ResetTimer()
	var paused, worst, pruning time.Duration
	for range b.N {
		start := time.Now()
		st.pruneIdem(0)
		pruning += time.Since(start)
		start = time.Now()
		st.mu.Lock()
		img := st.capture()
		st.mu.Unlock()
		d := time.Since(start)
		paused += d
		worst = max(worst, d)
		_ = img
	}
	b.ReportMetric(float64(paused.Microseconds())/1000/float64(b.N), "ms-paused/op")
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-worst")
	b.ReportMetric(float64(pruning.Microseconds())/1000/float64(b.N), "ms-expiry-scan/op")
}

// BenchmarkHeap1M reports the live heap of a state holding 1M instances
// with a 100-byte ctx (budget: 400 MB). It takes a few seconds and runs
// only when named: go test -run '^$' -bench Heap1M -benchtime 1x.
func BenchmarkHeap1M(b *testing.B) {
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), "Heap1M") {
		b.Skip("runs only when named: -bench Heap1M")
	}
	const n = 1_000_000
	var before, after runtime.MemStats
	for range b.N {
		runtime.GC()
		runtime.ReadMemStats(&before)
		st := benchBuildState(b, n, 100)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(st.instances) != n {
			b.Fatal("wrong instance count")
		}
		runtime.KeepAlive(st)
	}
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportMetric(heap/(1<<20), "heap-MB")
	b.ReportMetric(heap/n, "heap-B/instance")
}

// TestBenchTool runs the load tool for about a second against an
// in-process server and checks its JSON report. It asserts no timing.
func TestBenchTool(t *testing.T) {
	ts := startServer(t, nil)
	for _, op := range []string{"mix", "ping"} {
		var out, errb bytes.Buffer
		code := benchMain([]string{"--addr", ts.addr, "--conns", "4", "--pipeline", "4", "--duration", "500ms",
			"--warmup", "100ms", "--instances", "16", "--payload-bytes", "32", "--op", op, "--json", "--progress", "200ms"}, &out, &errb)
		if code != 0 {
			t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", op, code, out.String(), errb.String())
		}
		var rep benchReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%s: report is not JSON: %v\n%s", op, err, out.String())
		}
		if rep.Ops == 0 || rep.OpsPerSec <= 0 {
			t.Errorf("%s: no operations: %s", op, out.String())
		}
		if len(rep.Errors) != 0 || rep.TransportError != "" {
			t.Errorf("%s: errors: %s", op, out.String())
		}
		if rep.LatencyUS.P50 <= 0 || rep.LatencyUS.P50 > rep.LatencyUS.P99 || rep.LatencyUS.P99 > rep.LatencyUS.Max {
			t.Errorf("%s: latency quantiles out of order: %+v", op, rep.LatencyUS)
		}
		if op == "mix" && (rep.OpsByKind["APPLY_EVENT"] == 0 || rep.OpsByKind["GET_INSTANCE"] == 0) {
			t.Errorf("mix: missing kinds: %v", rep.OpsByKind)
		}
		if !strings.Contains(errb.String(), "ops/s") {
			t.Errorf("%s: no progress line on stderr: %q", op, errb.String())
		}
	}
	// -n: exactly that many measured operations.
	var out bytes.Buffer
	if code := benchMain([]string{"--addr", ts.addr, "--conns", "2", "--pipeline", "3", "-n", "500", "--warmup", "0",
		"--instances", "4", "--op", "apply", "--json", "--progress", "0"}, &out, io.Discard); code != 0 {
		t.Fatalf("-n run: exit %d: %s", code, out.String())
	}
	var rep benchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Ops != 500 {
		t.Errorf("-n 500: got %d ops (%v): %s", rep.Ops, err, out.String())
	}
}

// TestBenchCompare runs a list of ops in turn, twice, and checks the
// comparison: every run is there, and each op is compared with every later
// one, round by round.
func TestBenchCompare(t *testing.T) {
	ts := startServer(t, nil)
	args := []string{"--addr", ts.addr, "--conns", "2", "--pipeline", "2", "-n", "200", "--warmup", "0",
		"--instances", "4", "--op", "apply,ping,fsync-baseline", "--rounds", "2", "--dir", t.TempDir(), "--progress", "0"}
	var out, errb bytes.Buffer
	if code := benchMain(append(args, "--json"), &out, &errb); code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var c benchComparison
	if err := json.Unmarshal(out.Bytes(), &c); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if len(c.Rounds) != 2 || c.Failed != "" {
		t.Fatalf("want 2 complete rounds: %s", out.String())
	}
	for n, round := range c.Rounds {
		for i, op := range []string{"apply", "ping", "fsync-baseline"} {
			if r := round[i]; r.Op != op || r.Ops != 200 || r.OpsPerSec <= 0 || len(r.Errors) != 0 {
				t.Errorf("round %d, run %d: want 200 %s ops without errors, got %+v", n+1, i, op, r)
			}
		}
	}
	pairs := []string{"apply/ping", "apply/fsync-baseline", "ping/fsync-baseline"}
	if len(c.Ratios) != len(pairs) {
		t.Fatalf("want ratios %v, got %+v", pairs, c.Ratios)
	}
	for k, r := range c.Ratios {
		if r.Of+"/"+r.To != pairs[k] || len(r.PerRound) != 2 {
			t.Errorf("ratio %d: want %s over 2 rounds, got %+v", k, pairs[k], r)
			continue
		}
		of, to := slices.Index(c.Ops, r.Of), slices.Index(c.Ops, r.To)
		for n, q := range r.PerRound {
			want := c.Rounds[n][of].OpsPerSec / c.Rounds[n][to].OpsPerSec
			if math.Abs(q-want) > 0.001*want+0.001 {
				t.Errorf("%s round %d: ratio %v, the runs give %v", pairs[k], n+1, q, want)
			}
		}
		if mid := (r.PerRound[0] + r.PerRound[1]) / 2; math.Abs(r.Median-mid) > 0.001 {
			t.Errorf("%s: median %v of %v", pairs[k], r.Median, r.PerRound)
		}
	}
	// The text form names each ratio.
	out.Reset()
	if code := benchMain(append(args, "--rounds", "1"), &out, &errb); code != 0 {
		t.Fatalf("text run: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "apply / ping: median ") || !strings.Contains(out.String(), "round 1: apply ") {
		t.Errorf("text report:\n%s", out.String())
	}
	for _, bad := range [][]string{{"--op", "ping,nope"}, {"--op", "ping,ping"}, {"--op", "ping,apply", "--rounds", "0"}} {
		if code := benchMain(append([]string{"--addr", ts.addr}, bad...), io.Discard, io.Discard); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}

// TestBenchFsyncBaseline runs both baselines: each write is synced, the
// append file grows by one block per write, and the scratch file is gone
// afterwards.
func TestBenchFsyncBaseline(t *testing.T) {
	for _, mode := range []string{"append", "prealloc"} {
		dir := t.TempDir()
		var out, errb bytes.Buffer
		if code := benchMain([]string{"--op", "fsync-baseline", "--baseline", mode, "--dir", dir, "-n", "50",
			"--warmup", "0", "--json", "--progress", "0"}, &out, &errb); code != 0 {
			t.Fatalf("%s: exit %d: %s %s", mode, code, out.String(), errb.String())
		}
		var rep benchReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Ops != 50 || rep.Baseline != mode {
			t.Errorf("%s: got %d ops, baseline %q (%v): %s", mode, rep.Ops, rep.Baseline, err, out.String())
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("%s: scratch files left behind: %v", mode, left)
		}
	}
	if code := benchMain([]string{"--op", "fsync-baseline", "--baseline", "mmap"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("--baseline mmap: exit %d, want 2", code)
	}
}

// TestBenchHist checks the histogram's bucketing and quantiles.
func TestBenchHist(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v += 1 + v/97 {
		i := benchHistIndex(v)
		if i < prev {
			t.Fatalf("index not monotonic at %d", v)
		}
		prev = i
		if mid := benchHistValue(i); v >= 64 && (float64(mid) < float64(v)*0.98 || float64(mid) > float64(v)*1.02) {
			t.Fatalf("value %d lands in bucket %d with midpoint %d", v, i, mid)
		}
	}
	if i := benchHistIndex(^uint64(0)); i >= benchHistBuckets {
		t.Fatalf("max value index %d out of range", i)
	}
	var h benchHist
	for v := 1; v <= 1000; v++ {
		h.record(time.Duration(v) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 500e3}, {0.9, 900e3}, {0.99, 990e3}, {1, 1000e3}} {
		got := float64(h.quantile(c.q))
		if got < c.want*0.98 || got > c.want*1.02 {
			t.Errorf("quantile(%v) = %v, want about %v", c.q, got, c.want)
		}
	}
}
