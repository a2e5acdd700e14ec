package main

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

var (
	crashCycles = flag.Int("crash.cycles", 3, "kill -9 cycles in TestCrashRecovery (CI runs a few; soak with hundreds)")
	crashSeed   = flag.Int64("crash.seed", 0, "seed for TestCrashRecovery (0: time-based)")
)

// TestMain lets the test binary act as the server process for crash tests.
func TestMain(m *testing.M) {
	if os.Getenv("STMDB_TEST_SERVE") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// Server processes the tests start must not all want the default HTTP
	// port (http.bind_addr): they inherit a port-0 bind instead.
	if _, ok := os.LookupEnv("RSTMDB_HTTP_BIND"); !ok {
		os.Setenv("RSTMDB_HTTP_BIND", "127.0.0.1:0")
	}
	os.Exit(m.Run())
}

// crashServerProc is a real stmdb process (this test binary) over a data
// directory.
type crashServerProc struct {
	*crashProc
}

func crashStartProc(t *testing.T, dir string, extraEnv ...string) *crashServerProc {
	t.Helper()
	env := append([]string{"STMDB_TEST_SERVE=1", "RSTMDB_WAL_SEGMENT_SIZE_MB=1"}, extraEnv...)
	p, err := crashStartServer(os.Args[0], env, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.kill()
		}
	})
	return &crashServerProc{p}
}

// TestCrashRecovery runs the crash loop of `stmdb crashtest` (crashtest.go)
// with this test binary as the server: pipelined writers, atomic batches
// and COMPACT calls, SIGKILL at random moments, garbage appended to the
// WAL tail after some kills; nothing acknowledged may be lost, nothing
// partial or invented may appear, keys must still dedupe.
// go test -run TestCrashRecovery -crash.cycles=200 soaks it.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	seed := *crashSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	var log strings.Builder
	cfg := crashConfig{
		Exe: os.Args[0], Env: []string{"STMDB_TEST_SERVE=1"}, Dir: t.TempDir(),
		Cycles: *crashCycles, Writers: 4, Seed: seed, Garbage: 0.4, MaxRun: 250 * time.Millisecond, Log: &log,
	}
	rep, err := crashRun(cfg)
	t.Logf("seed %d: %+v", seed, rep)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, log.String())
	}
	if rep.Cycles != *crashCycles {
		t.Fatalf("ran %d cycles, want %d", rep.Cycles, *crashCycles)
	}
}

// TestCrashGarbageTailAlways damages the tail after every kill.
func TestCrashGarbageTailAlways(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	cfg := crashConfig{
		Exe: os.Args[0], Env: []string{"STMDB_TEST_SERVE=1"}, Dir: t.TempDir(),
		Cycles: 2, Writers: 2, Seed: 7, Garbage: 1, MaxRun: 100 * time.Millisecond,
	}
	rep, err := crashRun(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.GarbageTails != 2 {
		t.Fatalf("garbage tails %d, want 2", rep.GarbageTails)
	}
}
