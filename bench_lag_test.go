package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchLag runs `stmdb bench --lag` against a real primary and replica
// (processes, as in replica_test.go), both requiring a token so the
// watchers' HELLO and AUTH are those of the bench's own connections. A
// replica that follows must have timed samples and nothing undelivered; a
// server that does not follow the primary (as a replica stopped or
// attached elsewhere would) must have every sample reported as not
// delivered once --lag-grace has passed, not hang the run.
func TestBenchLag(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	auth := []string{"--auth-required", "--auth-token-hash", testTokenHash()}
	p := replStart(t, filepath.Join(root, "p"), auth...)
	r := replStart(t, filepath.Join(root, "r"), append([]string{"--replica-of", p.addr, "--replication-token", testToken}, auth...)...)
	other := startServer(t, func(c *config) {
		c.AuthRequired = true
		c.AuthTokenHashes = []string{testTokenHash()}
	})

	const grace = time.Second
	bench := func(t *testing.T, lag string) (benchReport, time.Duration) {
		t.Helper()
		var out, errb bytes.Buffer
		start := time.Now()
		code := benchMain([]string{"--addr", p.addr, "--token", testToken, "--op", "apply", "--conns", "2", "--pipeline", "4",
			"--instances", "16", "--payload-bytes", "16", "--duration", "1s", "--warmup", "200ms", "--progress", "0",
			"--json", "--lag", lag, "--lag-grace", grace.String()}, &out, &errb)
		took := time.Since(start)
		if code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
		}
		var rep benchReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, out.String())
		}
		if rep.Ops == 0 || len(rep.Errors) != 0 {
			t.Fatalf("the load itself failed: %s", out.String())
		}
		t.Logf("%d applies in %v: %+v", rep.Ops, took.Round(time.Millisecond), rep.ReplicaLag)
		return rep, took
	}
	follows := func(t *testing.T, l benchLagReport) {
		t.Helper()
		if l.Addr != r.addr || l.Error != "" || l.Samples == 0 || l.Undelivered != 0 {
			t.Errorf("following replica: want samples > 0, none undelivered, no error: %+v", l)
		}
		// A replica applies and syncs a record after the primary did: its
		// median is above 0 (a lag computed backwards is clamped to 0).
		if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) || l.P99 >= 5000 {
			t.Errorf("following replica: want 0 < p50 <= p90 <= p99 <= max, p99 under 5 s: %+v", l)
		}
	}

	t.Run("replica", func(t *testing.T) {
		rep, _ := bench(t, r.addr)
		if len(rep.ReplicaLag) != 1 {
			t.Fatalf("want one replica_lag entry: %+v", rep.ReplicaLag)
		}
		follows(t, rep.ReplicaLag[0])
		// The samples are every 16th offset of the measured window's applies.
		if l := rep.ReplicaLag[0]; l.Samples+l.Undelivered > rep.Ops/benchLagEvery+64 {
			t.Errorf("%d samples for %d measured applies", l.Samples, rep.Ops)
		}
	})

	t.Run("not-following", func(t *testing.T) {
		rep, took := bench(t, r.addr+","+other.addr)
		if len(rep.ReplicaLag) != 2 {
			t.Fatalf("want two replica_lag entries: %+v", rep.ReplicaLag)
		}
		follows(t, rep.ReplicaLag[0])
		if l := rep.ReplicaLag[1]; l.Addr != other.addr || l.Samples != 0 || l.Undelivered == 0 || l.Error != "" {
			t.Errorf("server not following the primary: want no samples and some undelivered: %+v", l)
		}
		// warmup + duration + grace, and the rest is setup and slack.
		if took > 1200*time.Millisecond+grace+5*time.Second {
			t.Errorf("the run took %v", took)
		}
	})

	t.Run("refused", func(t *testing.T) {
		var errb bytes.Buffer
		code := benchMain([]string{"--addr", p.addr, "--token", testToken, "--op", "apply", "--conns", "1", "--instances", "4",
			"--duration", "100ms", "--warmup", "0", "--progress", "0", "--timeout", "2s", "--lag", "127.0.0.1:1"}, &bytes.Buffer{}, &errb)
		if code != 1 || !strings.Contains(errb.String(), "--lag: 127.0.0.1:1") {
			t.Errorf("an unreachable --lag address: exit %d, %q", code, errb.String())
		}
		errb.Reset()
		if code := benchMain([]string{"--op", "create", "--lag", r.addr}, &bytes.Buffer{}, &errb); code != 2 || !strings.Contains(errb.String(), "--lag needs") {
			t.Errorf("--lag with --op create: exit %d, %q", code, errb.String())
		}
	})
}
