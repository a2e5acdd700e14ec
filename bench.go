package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// stmdb bench: a load generator that speaks RCP to any server.
//
// It opens --conns connections, sets up its own machine and instances
// (partitioned across the connections), then keeps --pipeline requests in
// flight on every connection for --duration (or until -n operations
// completed), after a --warmup whose operations are not counted. It reports
// throughput, errors by code and a latency distribution measured from the
// moment a request is handed to the connection's buffer to the moment its
// response is decoded.
//
// --op fsync-baseline measures the disk instead of a server: write a
// record-sized block and fdatasync it, in a loop, in a file under --dir: the
// most a server that syncs every write on its own can acknowledge, the
// baseline for the group-commit ratio. --baseline append writes each block
// at the end of a growing file, as a log without preallocation does (every
// fdatasync then also commits the new file size); --baseline prealloc
// writes into a preallocated, zero-filled file, the best case for such a
// server on that disk.

const (
	benchMachine        = "stmdb-bench"
	benchMachineVersion = 1
	// benchMachineDef is a one-state machine whose only transition is a
	// guarded self-loop, so every APPLY_EVENT succeeds, evaluates a guard
	// and merges its payload into the ctx.
	benchMachineDef = `{"states":["live"],"initial":"live","transitions":[{"from":"live","event":"TICK","to":"live","guard":"ctx.n >= 0"}]}`
)

// benchOp is one kind of request the tool sends.
type benchOp uint8

const (
	benchOpApply benchOp = iota
	benchOpGet
	benchOpCreate
	benchOpPing
	benchOpKinds
)

var benchOpNames = [benchOpKinds]string{"APPLY_EVENT", "GET_INSTANCE", "CREATE_INSTANCE", "PING"}

// benchConfig is the parsed command line.
type benchConfig struct {
	addr         string
	token        string
	conns        int
	pipeline     int
	duration     time.Duration
	n            int64
	warmup       time.Duration
	op           string
	instances    int
	payloadBytes int
	jsonOut      bool
	hello        bool
	dir          string
	baseline     string
	timeout      time.Duration
	progress     time.Duration
	rounds       int
	ops          []string      // --op split at commas (set by validate)
	lag          string        // --lag: replica addresses, comma-separated (bench_lag.go)
	lagGrace     time.Duration // --lag-grace
	lagAddrs     []string      // --lag split at commas (set by validate)
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	var cfg benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:7401", "server address (host:port)")
	fs.StringVar(&cfg.token, "token", "", "bearer token: AUTH on every connection before anything else")
	fs.IntVar(&cfg.conns, "conns", 8, "connections")
	fs.IntVar(&cfg.pipeline, "pipeline", 1, "requests in flight per connection")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured run time (ignored with -n)")
	fs.Int64Var(&cfg.n, "n", 0, "measured operations in total (instead of --duration)")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "load before measuring; not counted")
	fs.StringVar(&cfg.op, "op", "apply", "apply, get, create, ping, mix (70% apply, 20% get, 10% create) or fsync-baseline; a comma-separated list runs each in turn and compares them (see --rounds)")
	fs.IntVar(&cfg.rounds, "rounds", 1, "how many times to run the --op list; each op is compared with every later one round by round")
	fs.IntVar(&cfg.instances, "instances", 1000, "instances created for apply/get/mix, partitioned across connections")
	fs.IntVar(&cfg.payloadBytes, "payload-bytes", 100, "padding bytes in each created ctx and each event payload (fsync-baseline: bytes per write)")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print the report as one JSON object")
	fs.BoolVar(&cfg.hello, "hello", true, "send HELLO (protocol 1, binary_json) on every connection")
	fs.StringVar(&cfg.dir, "dir", ".", "fsync-baseline: directory for the scratch file (put it on the server's data disk)")
	fs.StringVar(&cfg.baseline, "baseline", "append", "fsync-baseline: append (each write extends the file) or prealloc (writes into a preallocated, zero-filled file)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "dial timeout, and how long a response may take before the connection is declared dead")
	fs.DurationVar(&cfg.progress, "progress", time.Second, "progress line interval on stderr (0: none)")
	fs.StringVar(&cfg.lag, "lag", "", "replica addresses (host:port, comma-separated): measure each one's lag behind --addr over the measured window (--op apply or mix)")
	fs.DurationVar(&cfg.lagGrace, "lag-grace", benchLagGrace, "--lag: how long after the window a replica may take to deliver what the primary did before it counts as not delivered")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "stmdb bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "stmdb bench: %v\n", err)
		return 2
	}
	var rep *benchReport
	var err error
	// STMDB_BENCH_CPUPROFILE=FILE profiles the load tool itself: it shares
	// the machine with the server, so its CPU per operation matters too.
	if path := os.Getenv("STMDB_BENCH_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	if len(cfg.ops) > 1 || cfg.rounds > 1 {
		return benchCompare(&cfg, stdout, stderr)
	}
	rep, err = benchOnce(&cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "stmdb bench: %v\n", err)
		return 1
	}
	benchOutput(stdout, cfg.jsonOut, rep)
	if rep.TransportError != "" {
		return 1
	}
	return 0
}

// benchOutput prints a report as one JSON object (--json) or as text.
func benchOutput(w io.Writer, asJSON bool, rep interface{ print(io.Writer) }) {
	if !asJSON {
		rep.print(w)
		return
	}
	b, _ := json.Marshal(rep)
	fmt.Fprintf(w, "%s\n", b)
}

// benchOnce runs cfg.op (a single op) once.
func benchOnce(cfg *benchConfig, stderr io.Writer) (*benchReport, error) {
	if cfg.op == "fsync-baseline" {
		return benchFsyncBaseline(cfg, stderr)
	}
	return benchRun(cfg, stderr)
}

func (c *benchConfig) validate() error {
	c.ops = strings.Split(c.op, ",")
	seen := map[string]bool{}
	for _, op := range c.ops {
		switch op {
		case "apply", "get", "create", "ping", "mix", "fsync-baseline":
		default:
			return fmt.Errorf("--op %q: want apply, get, create, ping, mix or fsync-baseline (or a comma-separated list of them)", op)
		}
		if seen[op] {
			return fmt.Errorf("--op %s: %s is listed twice", c.op, op)
		}
		seen[op] = true
		if (op == "apply" || op == "get" || op == "mix") && c.instances < 1 {
			return fmt.Errorf("--instances %d: --op %s needs at least one", c.instances, op)
		}
	}
	if c.rounds < 1 || c.rounds > 1000 {
		return fmt.Errorf("--rounds %d: want 1..1000", c.rounds)
	}
	if c.baseline != "append" && c.baseline != "prealloc" {
		return fmt.Errorf("--baseline %q: want append or prealloc", c.baseline)
	}
	switch {
	case c.conns < 1 || c.conns > 4096:
		return fmt.Errorf("--conns %d: want 1..4096", c.conns)
	case c.pipeline < 1 || c.pipeline > 4096:
		return fmt.Errorf("--pipeline %d: want 1..4096", c.pipeline)
	case c.n < 0:
		return fmt.Errorf("-n %d: want >= 0", c.n)
	case c.n == 0 && c.duration <= 0:
		return fmt.Errorf("--duration %v: want > 0 (or set -n)", c.duration)
	case c.warmup < 0:
		return fmt.Errorf("--warmup %v: want >= 0", c.warmup)
	case c.payloadBytes < 0 || c.payloadBytes > 1<<20:
		return fmt.Errorf("--payload-bytes %d: want 0..1048576", c.payloadBytes)
	case c.timeout <= 0:
		return fmt.Errorf("--timeout %v: want > 0", c.timeout)
	}
	if c.instances < 0 {
		return fmt.Errorf("--instances %d: want >= 0", c.instances)
	}
	return c.validateLag()
}

// ---- the load run ----

// benchShared is what the workers of one run share.
type benchShared struct {
	cfg          *benchConfig
	run          string
	measureStart time.Time
	measureEnd   time.Time // duration mode: responses after it are not counted
	claimed      atomic.Int64
	done         atomic.Uint64 // responses received, any phase (progress)
	errs         atomic.Uint64
	applyTail    string // payload suffix of APPLY_EVENT params
	ctxJSON      string // initial_ctx of created instances
}

// benchPending is a request in flight.
type benchPending struct {
	id       string
	kind     benchOp
	start    time.Time
	measured bool
}

type benchWorker struct {
	sh      *benchShared
	idx     int
	c       *client
	ids     []string // instances this connection drives
	apply   []string // prebuilt APPLY_EVENT params, one per id
	get     []string // prebuilt GET_INSTANCE params, one per id
	next    int
	created int
	rng     uint64
	q       []benchPending // ring of in-flight requests
	qHead   int
	qLen    int

	hist    benchHist
	ops     uint64
	byKind  [benchOpKinds]uint64
	errs    map[string]uint64
	lastAt  time.Time // completion time of the last measured response
	tporErr error
}

func benchRunID() string {
	return strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
}

func benchPad(n int) string { return strings.Repeat("x", n) }

func benchRun(cfg *benchConfig, stderr io.Writer) (*benchReport, error) {
	sh := &benchShared{cfg: cfg, run: benchRunID()}
	pad := benchPad(cfg.payloadBytes)
	sh.ctxJSON = `{"n":0,"pad":"` + pad + `"}`
	sh.applyTail = `,"event":"TICK","payload":{"n":1,"pad":"` + pad + `"}}`

	setupStart := time.Now()
	workers := make([]*benchWorker, cfg.conns)
	closeAll := func() {
		for _, w := range workers {
			if w != nil && w.c != nil {
				w.c.close()
			}
		}
	}
	defer closeAll()
	for i := range workers {
		w := &benchWorker{sh: sh, idx: i, errs: map[string]uint64{}, rng: uint64(i)*0x9E3779B97F4A7C15 + 1,
			q: make([]benchPending, cfg.pipeline)}
		workers[i] = w
		if err := w.connect(); err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
	}
	needInstances := cfg.op == "apply" || cfg.op == "get" || cfg.op == "mix"
	if needInstances || cfg.op == "create" {
		if err := workers[0].putMachine(); err != nil {
			return nil, err
		}
	}
	if needInstances {
		all := make([]string, cfg.instances)
		for i := range all {
			all[i] = "bench-" + sh.run + "-" + strconv.Itoa(i)
		}
		for i, w := range workers {
			for j := i; j < len(all); j += cfg.conns {
				w.ids = append(w.ids, all[j])
			}
		}
		errc := make(chan error, len(workers))
		for _, w := range workers {
			go func() { errc <- w.createOwn() }()
		}
		var firstErr error
		for range workers {
			if err := <-errc; err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if firstErr != nil {
			return nil, fmt.Errorf("setup: %w", firstErr)
		}
		for i, w := range workers {
			if len(w.ids) == 0 { // fewer instances than connections: share
				w.ids = []string{all[i%len(all)]}
			}
			w.apply = make([]string, len(w.ids))
			w.get = make([]string, len(w.ids))
			for j, id := range w.ids {
				q := string(encAppendString(nil, id))
				w.apply[j] = `{"instance_id":` + q + sh.applyTail
				w.get[j] = `{"instance_id":` + q + `}`
			}
		}
	}
	setup := time.Since(setupStart)
	var lag *benchLag
	if len(cfg.lagAddrs) > 0 {
		var err error
		if lag, err = benchLagDial(cfg); err != nil {
			return nil, err
		}
		defer lag.close()
	}

	fsyncsBefore, haveFsyncs := workers[0].walFsyncs()

	start := time.Now()
	sh.measureStart = start.Add(cfg.warmup)
	if cfg.n == 0 {
		sh.measureEnd = sh.measureStart.Add(cfg.duration)
	} else {
		sh.measureEnd = time.Time{}
	}
	if lag != nil {
		lag.start(sh.measureStart)
	}
	prog := &benchProgress{
		w: stderr, tty: benchIsTerminal(stderr), interval: cfg.progress, done: &sh.done, errs: &sh.errs,
		phase: func() string {
			if time.Now().Before(sh.measureStart) {
				return "warmup"
			}
			return "run"
		},
	}
	prog.start()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop()
		}()
	}
	wg.Wait()
	prog.end()
	var lagRep []benchLagReport
	if lag != nil {
		lagRep = lag.stop()
	}

	rep := &benchReport{
		Op: cfg.op, Addr: cfg.addr, Conns: cfg.conns, Pipeline: cfg.pipeline, Instances: cfg.instances,
		PayloadBytes: cfg.payloadBytes, WarmupSec: cfg.warmup.Seconds(), SetupSec: math.Round(setup.Seconds()*1000) / 1000,
		Errors: map[string]uint64{}, OpsByKind: map[string]uint64{}, ReplicaLag: lagRep,
	}
	if !needInstances {
		rep.Instances = 0
	}
	var h benchHist
	var last time.Time
	for _, w := range workers {
		h.merge(&w.hist)
		rep.Ops += w.ops
		for k, n := range w.byKind {
			if n > 0 {
				rep.OpsByKind[benchOpNames[k]] += n
			}
		}
		for code, n := range w.errs {
			rep.Errors[code] += n
		}
		if w.lastAt.After(last) {
			last = w.lastAt
		}
		if w.tporErr != nil && rep.TransportError == "" {
			rep.TransportError = fmt.Sprintf("connection %d: %v", w.idx, w.tporErr)
		}
	}
	elapsed := cfg.duration
	if cfg.n > 0 {
		elapsed = max(last.Sub(sh.measureStart), 0)
	}
	rep.ElapsedSec = math.Round(elapsed.Seconds()*1000) / 1000
	rep.fill(&h)
	if rep.TransportError == "" && haveFsyncs {
		if after, ok := workers[0].walFsyncs(); ok {
			d := after - fsyncsBefore
			rep.Fsyncs = &d
			per := 0.0
			if d > 0 {
				per = math.Round(float64(rep.Ops)/float64(d)*10) / 10
			}
			rep.OpsPerFsync = &per
		}
	}
	return rep, nil
}

// connect dials, says HELLO and authenticates.
func (w *benchWorker) connect() error {
	c, err := benchDial(w.sh.cfg, w.sh.cfg.addr)
	if err != nil {
		return err
	}
	w.c = c
	return nil
}

// benchDial opens a connection to addr as every bench connection is
// opened (the --lag watchers too): HELLO unless --hello=false, then AUTH
// with --token.
func benchDial(cfg *benchConfig, addr string) (*client, error) {
	c, err := dialClient(addr, cfg.timeout)
	if err != nil {
		return nil, err
	}
	if cfg.hello {
		if err := benchSetupCall(c, cfg.timeout, "HELLO", `{"protocol_version":1,"client_name":"stmdb-bench","wire_modes":["binary_json"]}`); err != nil {
			c.close()
			return nil, err
		}
	}
	if cfg.token != "" {
		p := `{"method":"bearer","token":` + string(encAppendString(nil, cfg.token)) + `}`
		if err := benchSetupCall(c, cfg.timeout, "AUTH", p); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (w *benchWorker) deadline() {
	w.c.nc.SetDeadline(time.Now().Add(w.sh.cfg.timeout))
}

// setupCall runs one request that must succeed.
func (w *benchWorker) setupCall(op, params string) error {
	return benchSetupCall(w.c, w.sh.cfg.timeout, op, params)
}

// benchSetupCall runs one request on c that must succeed within timeout.
func benchSetupCall(c *client, timeout time.Duration, op, params string) error {
	c.nc.SetDeadline(time.Now().Add(timeout))
	m, err := c.call(op, params)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if m.Status != "ok" {
		return fmt.Errorf("%s failed: %s", op, m.Raw)
	}
	return nil
}

func (w *benchWorker) putMachine() error {
	return w.setupCall("PUT_MACHINE", `{"machine":"`+benchMachine+`","version":`+strconv.Itoa(benchMachineVersion)+`,"definition":`+benchMachineDef+`}`)
}

func (w *benchWorker) createParams(id string) string {
	return `{"machine":"` + benchMachine + `","version":` + strconv.Itoa(benchMachineVersion) +
		`,"instance_id":` + string(encAppendString(nil, id)) + `,"initial_ctx":` + w.sh.ctxJSON + `}`
}

// createOwn creates this connection's instances, pipelined.
func (w *benchWorker) createOwn() error {
	depth := max(w.sh.cfg.pipeline, 64)
	sent, got := 0, 0
	for got < len(w.ids) {
		for sent < len(w.ids) && sent-got < depth {
			if _, err := w.c.send("CREATE_INSTANCE", w.createParams(w.ids[sent])); err != nil {
				return err
			}
			sent++
		}
		w.deadline()
		if err := w.c.flush(); err != nil {
			return err
		}
		for {
			m, err := w.c.recv()
			if err != nil {
				return err
			}
			if m.Type != "response" {
				continue
			}
			if m.Status != "ok" {
				return fmt.Errorf("CREATE_INSTANCE %s: %s", w.ids[got], m.Raw)
			}
			got++
			if got == sent || !w.buffered() {
				break
			}
		}
	}
	return nil
}

// walFsyncs asks WAL_STATS for the server's fsync count (best effort: a
// server without it just gets no fsync figures).
func (w *benchWorker) walFsyncs() (uint64, bool) {
	w.deadline()
	m, err := w.c.call("WAL_STATS", nil)
	if err != nil || m.Status != "ok" {
		return 0, false
	}
	var r struct {
		IO *struct {
			Fsyncs uint64 `json:"fsyncs"`
		} `json:"io_stats"`
	}
	if json.Unmarshal(m.Result, &r) != nil || r.IO == nil {
		return 0, false
	}
	return r.IO.Fsyncs, true
}

// buffered reports whether the client holds received bytes not yet decoded,
// so another recv will not block: the loop then reads on before refilling
// the pipeline, and one flush carries many requests.
func (w *benchWorker) buffered() bool { return w.c.fr.wpos > w.c.fr.rpos }

func (w *benchWorker) rand() uint64 {
	w.rng ^= w.rng << 13
	w.rng ^= w.rng >> 7
	w.rng ^= w.rng << 17
	return w.rng
}

func (w *benchWorker) pick() benchOp {
	switch w.sh.cfg.op {
	case "apply":
		return benchOpApply
	case "get":
		return benchOpGet
	case "create":
		return benchOpCreate
	case "ping":
		return benchOpPing
	}
	switch r := w.rand() % 100; {
	case r < 70:
		return benchOpApply
	case r < 90:
		return benchOpGet
	default:
		return benchOpCreate
	}
}

// sendOne buffers the next request.
func (w *benchWorker) sendOne(kind benchOp, now time.Time, measured bool) error {
	var id string
	var err error
	switch kind {
	case benchOpApply:
		id, err = w.c.send("APPLY_EVENT", w.apply[w.next])
		w.next = (w.next + 1) % len(w.apply)
	case benchOpGet:
		id, err = w.c.send("GET_INSTANCE", w.get[w.next])
		w.next = (w.next + 1) % len(w.get)
	case benchOpCreate:
		w.created++
		id, err = w.c.send("CREATE_INSTANCE", w.createParams("bench-"+w.sh.run+"-c"+strconv.Itoa(w.idx)+"-"+strconv.Itoa(w.created)))
	default:
		id, err = w.c.send("PING", nil)
	}
	if err != nil {
		return err
	}
	w.q[(w.qHead+w.qLen)%len(w.q)] = benchPending{id: id, kind: kind, start: now, measured: measured}
	w.qLen++
	return nil
}

// mayStart decides whether a request sent now starts, and whether it counts.
func (w *benchWorker) mayStart(now time.Time) (ok, measured bool) {
	sh := w.sh
	if now.Before(sh.measureStart) {
		return true, false
	}
	if sh.cfg.n > 0 {
		return sh.claimed.Add(1) <= sh.cfg.n, true
	}
	return now.Before(sh.measureEnd), true
}

func (w *benchWorker) loop() {
	stopped := false
	for {
		for !stopped && w.qLen < len(w.q) {
			now := time.Now()
			ok, measured := w.mayStart(now)
			if !ok {
				stopped = true
				break
			}
			if err := w.sendOne(w.pick(), now, measured); err != nil {
				w.tporErr = err
				return
			}
		}
		if w.qLen == 0 {
			return
		}
		w.deadline()
		if err := w.c.flush(); err != nil {
			w.tporErr = err
			return
		}
		for {
			if err := w.recvOne(); err != nil {
				w.tporErr = err
				return
			}
			if w.qLen == 0 || !w.buffered() {
				break
			}
		}
	}
}

// benchOKPrefix is how this server starts a successful response; anything
// else is decoded in full (other servers may order keys differently).
const benchOKPrefix = `{"type":"response","id":"`

// recvOne reads the response to the oldest request in flight and accounts
// for it. Events are skipped.
func (w *benchWorker) recvOne() error {
	p, err := w.c.fr.next()
	if err != nil {
		return err
	}
	now := time.Now()
	pend := &w.q[w.qHead]
	code := ""
	if id, ok := benchFastOK(p); ok {
		if id != pend.id {
			return fmt.Errorf("response for request %q while %q was next", id, pend.id)
		}
	} else {
		var m message
		if err := json.Unmarshal(p, &m); err != nil {
			return fmt.Errorf("undecodable message %q: %w", p, err)
		}
		if m.Type != "response" {
			return nil // an event: not ours to count
		}
		if m.ID != pend.id {
			return fmt.Errorf("response for request %q while %q was next", m.ID, pend.id)
		}
		if m.Status != "ok" {
			code = "UNKNOWN"
			if m.Error != nil && m.Error.Code != "" {
				code = m.Error.Code
			}
		}
	}
	w.qHead = (w.qHead + 1) % len(w.q)
	w.qLen--
	w.sh.done.Add(1)
	if code != "" {
		w.sh.errs.Add(1)
	}
	if !pend.measured || (w.sh.cfg.n == 0 && now.After(w.sh.measureEnd)) {
		return nil
	}
	w.lastAt = now
	if code != "" {
		w.errs[code]++
		return nil
	}
	w.ops++
	w.byKind[pend.kind]++
	w.hist.record(now.Sub(pend.start))
	return nil
}

// benchFastOK recognises `{"type":"response","id":"<id>","status":"ok"...`
// without decoding, returning the id (which is a plain decimal string, as
// the shared client numbers its requests).
func benchFastOK(p []byte) (string, bool) {
	if !bytes.HasPrefix(p, []byte(benchOKPrefix)) {
		return "", false
	}
	rest := p[len(benchOKPrefix):]
	i := bytes.IndexByte(rest, '"')
	if i <= 0 || !bytes.HasPrefix(rest[i:], []byte(`","status":"ok"`)) {
		return "", false
	}
	return string(rest[:i]), true
}

func benchSortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
