package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

var crashCycles = flag.Int("crash.cycles", 3, "kill -9 cycles in TestCrashRecovery (CI runs a few; soak with hundreds)")

// TestMain lets the test binary act as the server process for crash tests.
func TestMain(m *testing.M) {
	if os.Getenv("STMDB_TEST_SERVE") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// serverProc is a real stmdb process over a data directory.
type serverProc struct {
	cmd  *exec.Cmd
	addr string
}

var listenRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

func startProc(t *testing.T, dir string, extraEnv ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--bind", "127.0.0.1:0", "--data", dir)
	cmd.Env = append(os.Environ(), append([]string{"STMDB_TEST_SERVE=1", "RSTMDB_WAL_SEGMENT_SIZE_MB=1"}, extraEnv...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd}
	sc := bufio.NewScanner(stderr)
	lines := []string{}
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
			p.addr = m[1]
			break
		}
	}
	if p.addr == "" {
		cmd.Wait()
		t.Fatalf("server did not start: %v", lines)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return p
}

func (p *serverProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// TestCrashRecovery runs pipelined writers on several connections, kills
// the server with SIGKILL at a random moment, optionally appends garbage
// to the WAL tail, restarts, and checks that every acknowledged write is
// there and idempotency keys still dedupe.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	const writers = 4
	acked := make([]int, writers) // highest acknowledged n per writer
	for i := range acked {
		acked[i] = -1
	}
	{
		p := startProc(t, dir)
		c, err := dialClient(p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		mustOK(t, c, "PUT_MACHINE", `{"machine":"ctr","version":1,"definition":{"states":["s"],"initial":"s","transitions":[{"from":"s","event":"INC","to":"s"}]}}`)
		for w := 0; w < writers; w++ {
			mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"w%d","initial_ctx":{"n":-1}}`, w))
		}
		c.close()
		p.kill()
	}
	for cycle := 0; cycle < *crashCycles; cycle++ {
		p := startProc(t, dir)
		// Everything acknowledged before must be there.
		c, err := dialClient(p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for w := 0; w < writers; w++ {
			var got struct {
				Ctx struct{ N int } `json:"ctx"`
			}
			json.Unmarshal(mustOK(t, c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":"w%d"}`, w)), &got)
			if got.Ctx.N < acked[w] {
				t.Fatalf("cycle %d (seed %d): writer %d acknowledged n=%d but recovered n=%d", cycle, seed, w, acked[w], got.Ctx.N)
			}
			acked[w] = got.Ctx.N
			// The last applied event's key still dedupes.
			if got.Ctx.N >= 0 {
				m := call(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":"w%d","event":"INC","payload":{"n":%d},"idempotency_key":"w%d-%d"}`, w, got.Ctx.N, w, got.Ctx.N))
				if m.Status != "ok" || !json.Valid(m.Result) || string(m.Result[:16]) != `{"applied":false` {
					t.Fatalf("cycle %d: retry of w%d-%d was not deduplicated: %s", cycle, w, got.Ctx.N, m.Raw)
				}
			}
		}
		c.close()
		// Concurrent pipelined writers until the kill.
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				c, err := dialClient(p.addr, 5*time.Second)
				if err != nil {
					return
				}
				defer c.close()
				next := acked[w] + 1
				for {
					const depth = 16
					for k := 0; k < depth; k++ {
						n := next + k
						c.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"w%d","event":"INC","payload":{"n":%d},"idempotency_key":"w%d-%d"}`, w, n, w, n))
					}
					if c.flush() != nil {
						return
					}
					for k := 0; k < depth; k++ {
						m, err := c.recv()
						if err != nil {
							return
						}
						if m.Status != "ok" {
							t.Errorf("writer %d: %s", w, m.Raw)
							return
						}
						mu.Lock()
						acked[w] = next + k
						mu.Unlock()
					}
					next += depth
				}
			}(w)
		}
		time.Sleep(time.Duration(20+rng.Intn(200)) * time.Millisecond)
		p.kill()
		wg.Wait()
		if rng.Intn(3) == 0 {
			appendGarbage(t, dir, rng)
		}
	}
}

// appendGarbage writes random bytes into the preallocated space after the
// last record of the newest segment, as a torn write would leave.
func appendGarbage(t *testing.T, dir string, rng *rand.Rand) {
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*"))
	if len(segs) == 0 {
		return
	}
	last := segs[len(segs)-1]
	rep, err := verifyWAL(filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatalf("verify before damage: %v", err)
	}
	_ = rep
	f, err := os.OpenFile(last, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	// Find the end of data: the first all-zero 8-byte word at an aligned
	// offset after which the file is zero.
	data := make([]byte, st.Size())
	f.ReadAt(data, 0)
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	end = (end + 7) &^ 7
	junk := make([]byte, 1+rng.Intn(64))
	rng.Read(junk)
	if end+len(junk) <= len(data) {
		f.WriteAt(junk, int64(end))
	}
}
