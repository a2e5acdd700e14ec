package main

// Crash testing: `stmdb crashtest` runs the server as a child process of
// this same binary, drives it with concurrent pipelined writers (plus
// atomic batches and COMPACT calls), kills it with SIGKILL at a random
// moment, sometimes appends garbage to the WAL tail, restarts it, and
// checks that
//
//   - every acknowledged APPLY_EVENT is there (each writer owns a counter
//     instance whose ctx.n is the number of its last applied event), and
//     nothing that was never sent is;
//   - every acknowledged atomic batch is there whole, and no batch is there
//     in part (each batch creates one instance and bumps a counter);
//   - idempotency keys still dedupe after the restart, and a key whose
//     request was lost does not;
//   - restart equality: a state read just before a kill is exactly the
//     state after the restart.
//
// The test suite runs the same loop for a few cycles (crash_test.go).

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// crashConfig describes one crash-test run.
type crashConfig struct {
	Exe     string   // binary to run as the server: `Exe serve ...`
	Env     []string // extra environment for the server
	Dir     string   // data directory
	Cycles  int
	Writers int
	Seed    int64
	Garbage float64       // probability of appending garbage to the WAL after a kill
	MaxRun  time.Duration // longest time writers run before the kill
	Log     io.Writer     // progress, one line per cycle; nil: none
}

// crashReport is what a run did.
type crashReport struct {
	Cycles, GarbageTails, EqualityChecks, Compactions int
	AckedEvents, AckedBatches                         int64
	MaxLSN                                            uint64
	TimerFires                                        int64 // batch instances archived by their timer
}

// crashProc is a running server child.
type crashProc struct {
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	tail []string // last lines of its stderr
	done chan struct{}
}

var crashListenRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// crashStartServer runs `exe serve` on dir, with extra flags, and waits
// until it listens.
func crashStartServer(exe string, env []string, dir string, extra ...string) (*crashProc, error) {
	cmd := exec.Command(exe, append([]string{"serve", "--bind", "127.0.0.1:0", "--data", dir}, extra...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &crashProc{cmd: cmd, done: make(chan struct{})}
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.addLine(sc.Text())
		if m := crashListenRE.FindStringSubmatch(sc.Text()); m != nil {
			p.addr = m[1]
			break
		}
	}
	if p.addr == "" {
		cmd.Wait()
		return nil, fmt.Errorf("server did not start: %s", strings.Join(p.lines(), "\n"))
	}
	go func() {
		for sc.Scan() {
			p.addLine(sc.Text())
		}
		close(p.done)
	}()
	return p, nil
}

func (p *crashProc) addLine(l string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tail = append(p.tail, l)
	if len(p.tail) > 50 {
		p.tail = p.tail[len(p.tail)-50:]
	}
}

func (p *crashProc) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
}

// kill sends SIGKILL (TerminateProcess on Windows) and reaps the process.
func (p *crashProc) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// stop asks for a graceful shutdown (SIGTERM) and waits. Windows cannot
// send a child a signal it could handle, so there stop is a kill.
func (p *crashProc) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.cmd.Process.Kill()
	}
	return p.cmd.Wait()
}

const crashCounterMachine = `{"machine":"crash-ctr","version":1,"definition":{"states":["s"],"initial":"s","transitions":[{"from":"s","event":"INC","to":"s","guard":"ctx.n >= 0"}]}}`

// crashBatchMachine's instances are archived by a timer 100 ms after
// their batch, so the loop also crashes between arming and firing, and
// right after fires.
const crashBatchMachine = `{"machine":"crash-bat","version":1,"definition":{"states":["new","done","archived"],"initial":"new","transitions":[{"from":"new","event":"FIN","to":"done"},{"from":"done","event":"ARCHIVE","to":"archived","after_ms":100}]}}`

// crashTimerWait bounds how long after a restart every armed timer of a
// batch instance (all due by then: nothing is written meanwhile) must
// have fired.
const crashTimerWait = 15 * time.Second

// crashWaitFires waits until no batch instance is still waiting for its
// timer: a timer lost in a crash would leave one "done" for ever. It
// returns how many are archived.
func crashWaitFires(c *client) (int64, error) {
	deadline := time.Now().Add(crashTimerWait)
	for {
		res, err := crashCall(c, "LIST_INSTANCES", `{"machine":"crash-bat","state":"done","limit":1}`)
		if err != nil {
			return 0, err
		}
		var l struct{ Total int64 }
		json.Unmarshal(res, &l)
		if l.Total == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("LOST TIMER: %d batch instances still wait for a timer due %s ago", l.Total, crashTimerWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res, err := crashCall(c, "LIST_INSTANCES", `{"machine":"crash-bat","state":"archived","limit":1}`)
	if err != nil {
		return 0, err
	}
	var l struct{ Total int64 }
	json.Unmarshal(res, &l)
	return l.Total, nil
}

// crashCall runs one request and requires success.
func crashCall(c *client, op, params string) (json.RawMessage, error) {
	var p any
	if params != "" {
		p = params
	}
	// A server that stops answering fails the run instead of hanging it.
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	m, err := c.call(op, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if m.Status != "ok" {
		return nil, fmt.Errorf("%s %s: %s", op, params, m.Raw)
	}
	return m.Result, nil
}

// crashCounter reads ctx.n of a counter instance.
func crashCounter(c *client, id string) (int64, error) {
	res, err := crashCall(c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id))
	if err != nil {
		return 0, err
	}
	var got struct {
		Ctx struct {
			N *int64 `json:"n"`
		} `json:"ctx"`
	}
	if err := json.Unmarshal(res, &got); err != nil || got.Ctx.N == nil {
		return 0, fmt.Errorf("instance %s has no ctx.n: %s", id, res)
	}
	return *got.Ctx.N, nil
}

// crashView reads every instance through the protocol: the state as a
// client sees it, for restart equality.
func crashView(c *client) (map[string]string, uint64, error) {
	view := map[string]string{}
	var maxLSN uint64
	for off := 0; ; off += 1000 {
		res, err := crashCall(c, "LIST_INSTANCES", fmt.Sprintf(`{"limit":1000,"offset":%d}`, off))
		if err != nil {
			return nil, 0, err
		}
		var page struct {
			Instances []struct {
				ID string `json:"id"`
			} `json:"instances"`
			HasMore bool `json:"has_more"`
		}
		if err := json.Unmarshal(res, &page); err != nil {
			return nil, 0, err
		}
		for _, in := range page.Instances {
			full, err := crashCall(c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, in.ID))
			if err != nil {
				return nil, 0, err
			}
			var lsn struct {
				L uint64 `json:"last_wal_offset"`
			}
			json.Unmarshal(full, &lsn)
			maxLSN = max(maxLSN, lsn.L)
			view[in.ID] = string(full)
		}
		if !page.HasMore {
			return view, maxLSN, nil
		}
	}
}

// crashRun runs the crash loop.
func crashRun(cfg crashConfig) (rep crashReport, err error) {
	if cfg.Writers < 1 {
		cfg.Writers = 4
	}
	if cfg.MaxRun <= 0 {
		cfg.MaxRun = 300 * time.Millisecond
	}
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", args...)
		}
	}
	rng := rand.New(rand.NewSource(cfg.Seed))
	env := append([]string{"RSTMDB_WAL_SEGMENT_SIZE_MB=1", "RSTMDB_COMPACT_EVENTS=3000", "RSTMDB_COMPACT_INTERVAL=0"}, cfg.Env...)
	fail := func(cycle int, p *crashProc, format string, args ...any) error {
		msg := fmt.Sprintf("cycle %d (seed %d): %s", cycle, cfg.Seed, fmt.Sprintf(format, args...))
		if p != nil {
			msg += "\nserver log tail:\n  " + strings.Join(p.lines(), "\n  ")
		}
		return errors.New(msg)
	}

	// Setup: machines and the counter instances.
	p, err := crashStartServer(cfg.Exe, env, cfg.Dir)
	if err != nil {
		return rep, err
	}
	c, err := dialClient(p.addr, 5*time.Second)
	if err != nil {
		p.kill()
		return rep, err
	}
	setup := [][2]string{{"PUT_MACHINE", crashCounterMachine}, {"PUT_MACHINE", crashBatchMachine},
		{"CREATE_INSTANCE", `{"machine":"crash-ctr","version":1,"instance_id":"crash-batches","initial_ctx":{"n":0}}`}}
	for w := 0; w < cfg.Writers; w++ {
		setup = append(setup, [2]string{"CREATE_INSTANCE", fmt.Sprintf(`{"machine":"crash-ctr","version":1,"instance_id":"crash-w%d","initial_ctx":{"n":0}}`, w)})
	}
	for _, rq := range setup {
		if m, err := c.call(rq[0], rq[1]); err != nil || (m.Status != "ok" && !strings.Contains(string(m.Raw), "EXISTS")) {
			c.close()
			p.kill()
			return rep, fmt.Errorf("setup %s: %v %s", rq[0], err, crashRawOf(m))
		}
	}
	c.close()
	p.kill()

	acked := make([]int64, cfg.Writers) // last acknowledged event per writer
	sent := make([]int64, cfg.Writers)  // last event sent per writer
	var ackedBatch, sentBatch int64
	first := true
	for cycle := 0; cycle < cfg.Cycles; cycle++ {
		p, err := crashStartServer(cfg.Exe, env, cfg.Dir)
		if err != nil {
			return rep, fail(cycle, nil, "restart: %v", err)
		}
		c, err := dialClient(p.addr, 5*time.Second)
		if err != nil {
			p.kill()
			return rep, fail(cycle, p, "dial: %v", err)
		}
		c.nc.SetDeadline(time.Now().Add(60 * time.Second))
		check := func() error {
			for w := 0; w < cfg.Writers; w++ {
				id := fmt.Sprintf("crash-w%d", w)
				n, err := crashCounter(c, id)
				if err != nil {
					return err
				}
				if first && n > acked[w] {
					acked[w], sent[w] = n, n // resuming an existing directory
				}
				if n < acked[w] {
					return fmt.Errorf("LOST: writer %d: event %d was acknowledged but the recovered counter is %d", w, acked[w], n)
				}
				if n > sent[w] {
					return fmt.Errorf("INVENTED: writer %d: counter %d but only %d events were sent", w, n, sent[w])
				}
				if n > 0 {
					// The key of the last applied event still dedupes.
					m, err := c.call("APPLY_EVENT", crashEvent(w, n))
					if err != nil {
						return err
					}
					var r struct {
						Applied *bool `json:"applied"`
						Ctx     struct{ N int64 }
					}
					if m.Status != "ok" || json.Unmarshal(m.Result, &r) != nil || r.Applied == nil || *r.Applied || r.Ctx.N != n {
						return fmt.Errorf("retry of %s-%d after restart was not deduplicated: %s", id, n, m.Raw)
					}
				}
				if sent[w] > n {
					// A request lost in the crash left no key behind.
					m, err := c.call("APPLY_EVENT", crashEvent(w, n+1))
					if err != nil {
						return err
					}
					var r struct {
						Applied *bool `json:"applied"`
					}
					if m.Status != "ok" || json.Unmarshal(m.Result, &r) != nil || r.Applied == nil || !*r.Applied {
						return fmt.Errorf("resending lost event %s-%d: want applied:true, got %s", id, n+1, m.Raw)
					}
					n++
				}
				acked[w], sent[w] = n, n
			}
			b, err := crashCounter(c, "crash-batches")
			if err != nil {
				return err
			}
			if first && b > ackedBatch {
				ackedBatch, sentBatch = b, b
			}
			if b < ackedBatch {
				return fmt.Errorf("LOST: batch %d was acknowledged but the batch counter is %d", ackedBatch, b)
			}
			if b > sentBatch {
				return fmt.Errorf("INVENTED: batch counter %d but only %d batches were sent", b, sentBatch)
			}
			res, err := crashCall(c, "LIST_INSTANCES", `{"machine":"crash-bat","limit":1}`)
			if err != nil {
				return err
			}
			var l struct{ Total int64 }
			json.Unmarshal(res, &l)
			if l.Total != b {
				return fmt.Errorf("PARTIAL BATCH: the batch counter is %d but %d batch instances exist", b, l.Total)
			}
			ackedBatch, sentBatch = b, b
			// Every timer armed before the kill fires once after it: all
			// are due by now, and a fire moves its instance on for good.
			fires, err := crashWaitFires(c)
			if err != nil {
				return err
			}
			if fires != b {
				return fmt.Errorf("TIMERS: %d batch instances archived of %d", fires, b)
			}
			rep.TimerFires = fires
			return nil
		}
		if err := check(); err != nil {
			c.close()
			p.kill()
			return rep, fail(cycle, p, "%v", err)
		}
		first = false

		// Restart equality, now and then: what a client reads just
		// before a kill is exactly what it reads after the restart.
		if rng.Intn(4) == 0 {
			before, _, err := crashView(c)
			if err != nil {
				c.close()
				p.kill()
				return rep, fail(cycle, p, "view: %v", err)
			}
			c.close()
			p.kill()
			if p, err = crashStartServer(cfg.Exe, env, cfg.Dir); err != nil {
				return rep, fail(cycle, nil, "restart for equality: %v", err)
			}
			if c, err = dialClient(p.addr, 5*time.Second); err != nil {
				p.kill()
				return rep, fail(cycle, p, "dial: %v", err)
			}
			c.nc.SetDeadline(time.Now().Add(60 * time.Second))
			after, _, err := crashView(c)
			if err != nil {
				c.close()
				p.kill()
				return rep, fail(cycle, p, "view: %v", err)
			}
			if d := crashDiff(before, after); d != "" {
				c.close()
				p.kill()
				return rep, fail(cycle, p, "state changed across a kill with no writes in between: %s", d)
			}
			rep.EqualityChecks++
		}
		if res, err := crashCall(c, "WAL_STATS", ""); err == nil {
			var ws struct {
				L uint64 `json:"latest_offset"`
			}
			json.Unmarshal(res, &ws)
			rep.MaxLSN = max(rep.MaxLSN, ws.L)
		}
		c.close()

		// Load until the kill.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var loadErr error
		stop := make(chan struct{})
		setErr := func(err error) {
			mu.Lock()
			if loadErr == nil {
				loadErr = err
			}
			mu.Unlock()
		}
		for w := 0; w < cfg.Writers; w++ {
			wg.Add(1)
			depth := 1 + rng.Intn(32)
			go func(w, depth int) {
				defer wg.Done()
				c, err := dialClient(p.addr, 5*time.Second)
				if err != nil {
					return
				}
				defer c.close()
				for {
					mu.Lock()
					next := sent[w] + 1
					sent[w] += int64(depth)
					mu.Unlock()
					for k := 0; k < depth; k++ {
						c.send("APPLY_EVENT", crashEvent(w, next+int64(k)))
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
							setErr(fmt.Errorf("writer %d: event %d: %s", w, next+int64(k), m.Raw))
							return
						}
						mu.Lock()
						acked[w] = next + int64(k)
						rep.AckedEvents++
						mu.Unlock()
					}
				}
			}(w, depth)
		}
		wg.Add(2)
		go func() { // atomic batches, pipelined a few at a time
			defer wg.Done()
			c, err := dialClient(p.addr, 5*time.Second)
			if err != nil {
				return
			}
			defer c.close()
			for {
				mu.Lock()
				next := sentBatch + 1
				sentBatch += 4
				mu.Unlock()
				for k := int64(0); k < 4; k++ {
					c.send("BATCH", crashBatch(next+k))
				}
				if c.flush() != nil {
					return
				}
				for k := int64(0); k < 4; k++ {
					m, err := c.recv()
					if err != nil {
						return
					}
					if m.Status != "ok" {
						setErr(fmt.Errorf("batch %d: %s", next+k, m.Raw))
						return
					}
					mu.Lock()
					ackedBatch = next + k
					rep.AckedBatches++
					mu.Unlock()
				}
			}
		}()
		compactEvery := time.Duration(20+rng.Intn(150)) * time.Millisecond
		go func() { // COMPACT now and then
			defer wg.Done()
			c, err := dialClient(p.addr, 5*time.Second)
			if err != nil {
				return
			}
			defer c.close()
			for {
				select {
				case <-stop:
					return
				case <-time.After(compactEvery):
				}
				m, err := c.call("COMPACT", nil)
				if err != nil {
					return
				}
				if m.Status != "ok" {
					setErr(fmt.Errorf("COMPACT: %s", m.Raw))
					return
				}
				mu.Lock()
				rep.Compactions++
				mu.Unlock()
			}
		}()
		time.Sleep(time.Duration(rng.Int63n(int64(cfg.MaxRun))))
		p.kill()
		close(stop)
		wg.Wait()
		if loadErr != nil {
			return rep, fail(cycle, p, "%v", loadErr)
		}
		garbage := rng.Float64() < cfg.Garbage
		if garbage {
			wrote, err := crashGarbageTail(cfg.Dir, rng)
			if err != nil {
				return rep, fail(cycle, p, "damaging the WAL tail: %v", err)
			}
			if wrote {
				// The damage must have landed where recovery will see it.
				vr, _ := verifyWAL(filepath.Join(cfg.Dir, "wal"))
				if vr.Problem == nil || !vr.Problem.TornTail {
					return rep, fail(cycle, p, "garbage appended to the WAL is not seen as a torn tail: %+v", vr.Problem)
				}
				rep.GarbageTails++
			}
		}
		rep.Cycles++
		logf("cycle %d: acked events %v, batches %d, garbage %v", cycle, acked, ackedBatch, garbage)
	}
	// A last restart checks the final kill.
	p, err = crashStartServer(cfg.Exe, env, cfg.Dir)
	if err != nil {
		return rep, fail(cfg.Cycles, nil, "final restart: %v", err)
	}
	defer p.stop()
	c, err = dialClient(p.addr, 5*time.Second)
	if err != nil {
		return rep, fail(cfg.Cycles, p, "dial: %v", err)
	}
	defer c.close()
	for w := 0; w < cfg.Writers; w++ {
		n, err := crashCounter(c, fmt.Sprintf("crash-w%d", w))
		if err != nil {
			return rep, fail(cfg.Cycles, p, "%v", err)
		}
		if n < acked[w] || n > sent[w] {
			return rep, fail(cfg.Cycles, p, "writer %d: counter %d, acknowledged %d, sent %d", w, n, acked[w], sent[w])
		}
	}
	b, err := crashCounter(c, "crash-batches")
	if err != nil {
		return rep, fail(cfg.Cycles, p, "%v", err)
	}
	if b < ackedBatch || b > sentBatch {
		return rep, fail(cfg.Cycles, p, "batch counter %d, acknowledged %d, sent %d", b, ackedBatch, sentBatch)
	}
	if rep.TimerFires, err = crashWaitFires(c); err != nil {
		return rep, fail(cfg.Cycles, p, "%v", err)
	}
	if rep.TimerFires != b {
		return rep, fail(cfg.Cycles, p, "TIMERS: %d batch instances archived of %d", rep.TimerFires, b)
	}
	return rep, nil
}

func crashRawOf(m *message) string {
	if m == nil {
		return ""
	}
	return string(m.Raw)
}

// crashEvent is writer w's event number n: it sets ctx.n = n.
func crashEvent(w int, n int64) string {
	return fmt.Sprintf(`{"instance_id":"crash-w%d","event":"INC","payload":{"n":%d},"idempotency_key":"crash-w%d-%d"}`, w, n, w, n)
}

// crashBatch is atomic batch number n: it creates one instance, moves it
// and bumps the batch counter to n; all of it or none must survive.
func crashBatch(n int64) string {
	return fmt.Sprintf(`{"mode":"atomic","ops":[`+
		`{"op":"CREATE_INSTANCE","params":{"machine":"crash-bat","version":1,"instance_id":"crash-b%08d","initial_ctx":{"n":%d},"idempotency_key":"crash-b-%d"}},`+
		`{"op":"APPLY_EVENT","params":{"instance_id":"crash-b%08d","event":"FIN"}},`+
		`{"op":"APPLY_EVENT","params":{"instance_id":"crash-batches","event":"INC","payload":{"n":%d}}}]}`, n, n, n, n, n)
}

// crashDiff describes how two views differ ("" when equal).
func crashDiff(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("%s vanished (was %s)", k, v))
		} else if v != w {
			out = append(out, fmt.Sprintf("%s: %s became %s", k, v, w))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s appeared: %s", k, v))
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("... %d more", len(out)-5))
	}
	return strings.Join(out, "; ")
}

// crashGarbageTail writes random bytes just after the last record of the
// newest segment, as a torn write would leave them. It reports whether
// there was room to.
func crashGarbageTail(dir string, rng *rand.Rand) (bool, error) {
	segs, err := walListSegments(filepath.Join(dir, "wal"))
	if err != nil || len(segs) == 0 {
		return false, err
	}
	path := filepath.Join(dir, "wal", segs[len(segs)-1].name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return false, err
	}
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	end = (end + 7) &^ 7
	junk := make([]byte, 1+rng.Intn(200))
	rng.Read(junk)
	junk[0] |= 1 // never a zero header: it must look like a torn record
	if end+len(junk) > len(data) {
		return false, nil
	}
	_, err = f.WriteAt(junk, int64(end))
	return err == nil, err
}

// crashMain is `stmdb crashtest`.
func crashMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("crashtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cycles := fs.Int("cycles", 100, "kill -9 cycles")
	dir := fs.String("data", "", "data directory (default: a new temporary directory, removed on success)")
	seed := fs.Int64("seed", time.Now().UnixNano(), "random seed")
	writers := fs.Int("writers", 4, "concurrent pipelined writers")
	garbage := fs.Float64("garbage", 0.3, "probability of appending garbage to the WAL tail after a kill")
	maxRun := fs.Duration("max-run", 300*time.Millisecond, "longest time the writers run before a kill")
	quiet := fs.Bool("quiet", false, "no per-cycle progress")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "stmdb crashtest: %v\n", err)
		return 1
	}
	temp := *dir == ""
	if temp {
		if *dir, err = os.MkdirTemp("", "stmdb-crashtest-"); err != nil {
			fmt.Fprintf(stderr, "stmdb crashtest: %v\n", err)
			return 1
		}
	}
	cfg := crashConfig{Exe: exe, Dir: *dir, Cycles: *cycles, Writers: *writers, Seed: *seed, Garbage: *garbage, MaxRun: *maxRun}
	if !*quiet {
		cfg.Log = stdout
	}
	fmt.Fprintf(stdout, "crashtest: %d cycles, seed %d, data %s\n", *cycles, *seed, *dir)
	start := time.Now()
	rep, err := crashRun(cfg)
	fmt.Fprintf(stdout, "crashtest: %d cycles in %s: %d acknowledged events, %d acknowledged atomic batches, %d compactions, %d garbage tails, %d restart-equality checks, %d timer fires, last LSN %d\n",
		rep.Cycles, time.Since(start).Round(time.Millisecond), rep.AckedEvents, rep.AckedBatches, rep.Compactions, rep.GarbageTails, rep.EqualityChecks, rep.TimerFires, rep.MaxLSN)
	if err != nil {
		fmt.Fprintf(stderr, "stmdb crashtest: FAILED: %v\n(data kept in %s)\n", err, *dir)
		return 1
	}
	fmt.Fprintln(stdout, "crashtest: ok, 0 acknowledged writes lost")
	if temp {
		os.RemoveAll(*dir)
	}
	return 0
}
