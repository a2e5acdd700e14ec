package main

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// server owns the state, the WAL and the connections.
//
// Lock order: st.mu, then the WAL's own locks. A connection's goroutines
// never hold st.mu while doing network I/O.
type server struct {
	cfg    config
	st     *state
	log    *wal
	logger *slog.Logger
	skewMS atomic.Int64 // added to the clock; a seam for TTL tests

	stop        chan struct{} // closed by close: ends background loops
	compactMu   sync.Mutex    // one compaction at a time
	lastCompact atomic.Int64  // Unix ms of the last compaction
	compactedAt atomic.Uint64 // LSN the newest snapshot covers
	disk        *diskSpace    // quota and reserve of the data directory (disk.go)
	repl        *replication  // role, following, replica acks (replica.go)

	hub         *watchHub
	frameBudget *frameBudget // shared bound on large request buffers
	outBudget   *outBudget   // shared bound on queued output (maxQueuedTotal)
	connQueue   int          // per-connection bound on queued output (maxQueuedBytes)
	metrics     *metrics
	tlsConfig   *tls.Config

	ln      net.Listener
	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup

	// fatal is called when the WAL fails in a way that cannot be recovered
	// from in-process (a failed fsync). The default logs and exits non-zero.
	// Call it through die, which calls it once.
	fatal     func(error)
	fatalOnce sync.Once

	recBuf []byte // record encoding buffer; guarded by st.mu
}

// largeRequestBudget is the memory all connections together may hold for
// request frames larger than a small buffer: 16 full-size requests at once.
const largeRequestBudget = 16 * maxPayload

// slowFsync is when a group commit's fdatasync is worth a log line.
const slowFsync = 500 * time.Millisecond

// openServer recovers the state from the data directory.
func openServer(cfg config, logger *slog.Logger) (*server, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &server{
		cfg: cfg, logger: logger, conns: map[*conn]struct{}{}, metrics: newMetrics(),
		frameBudget: newFrameBudget(largeRequestBudget),
		outBudget:   newOutBudget(maxQueuedTotal, queueReserve), connQueue: maxQueuedBytes,
	}
	if cfg.TLSEnabled {
		tc, err := buildTLSConfig(cfg)
		if err != nil {
			return nil, err
		}
		s.tlsConfig = tc
	}
	s.fatal = func(err error) {
		logger.Error("fatal write-ahead log failure; exiting so that a restart recovers from disk", "err", err)
		os.Exit(1)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	s.repl = newReplication(s)
	start := time.Now()
	st, snapPath, err := loadNewestSnapshot(filepath.Join(cfg.DataDir, "snapshots"), cfg.IdempotencyTTL.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("loading snapshot: %w", err)
	}
	s.st = st
	st.armAll() // the snapshot's instances' timers; replay keeps them current
	if cfg.AllowInstanceRecreate {
		st.tombstones = nil
	} else if st.tombstones == nil {
		st.tombstones = new(tombstoneSet)
	}
	snapLSN := st.applied
	s.disk = newDiskSpace(cfg, logger)
	s.disk.open(snapPath, len(st.instances))
	s.disk.instances = func() int {
		st.mu.RLock()
		defer st.mu.RUnlock()
		return len(st.instances)
	}
	w, err := openWAL(filepath.Join(cfg.DataDir, "wal"), walOptions{
		SegmentSize: cmp.Or(cfg.segmentBytes, cfg.SegmentSizeMB<<20), Policy: cfg.Fsync, Logger: logger, StartLSN: snapLSN + 1,
		// A failed sync is fatal under every policy, not only when a reply
		// waits for it; s.fatal is read when the failure happens, so a test
		// may replace it after open.
		OnFail:  s.die,
		Admit:   s.disk.admit,
		NoSpace: s.disk.noSpaceHit,
		OnSync: func(d time.Duration, records int) {
			s.metrics.fsync(d, records)
			if d > slowFsync {
				logger.Warn("slow fsync", "duration", d, "records", records)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	s.log = w
	s.disk.log = w
	s.hub = newWatchHub(w)

	if first := w.firstLSN(); first > snapLSN+1 {
		w.close()
		if snapPath == "" {
			return nil, fmt.Errorf("the WAL starts at record %d and there is no snapshot: records 1..%d are missing (was a snapshot in %s deleted?)", first, first-1, filepath.Join(cfg.DataDir, "snapshots"))
		}
		return nil, fmt.Errorf("the WAL starts at record %d but the newest snapshot (%s) covers only through %d: records %d..%d are missing", first, snapPath, snapLSN, snapLSN+1, first-1)
	}
	if w.nextLSN() <= snapLSN {
		w.close()
		return nil, fmt.Errorf("the WAL ends at record %d but the newest snapshot (%q) covers through %d: the WAL was truncated or replaced", w.nextLSN()-1, snapPath, snapLSN)
	}
	n, err := replayInto(s.st, w, snapLSN)
	if err != nil {
		w.close()
		return nil, err
	}
	s.compactedAt.Store(snapLSN)
	s.lastCompact.Store(s.now())
	s.st.pruneIdem(s.now()) // replay brings back keys that have expired since
	s.disk.ensureReserve()
	s.stop = make(chan struct{})
	// The background loops; close waits for them.
	for _, loop := range []func(){
		func() { s.diskLoop(s.stop, cfg.compactTick) },
		func() { s.autoCompact(s.stop, cfg.compactTick) },
		func() { s.idemPruneLoop(s.stop, cfg.idemPruneTick) },
		func() { s.timerLoop(s.stop) },
	} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			loop()
		}()
	}
	logger.Info("recovered", "snapshot", snapPath, "snapshot_lsn", snapLSN, "records_replayed", n,
		"machines", len(s.st.machines), "instances", len(s.st.instances), "last_lsn", w.lastLSN(), "elapsed", time.Since(start))
	return s, nil
}

// replayInto applies every record after `after` to st.
func replayInto(st *state, w *wal, after uint64) (n int, err error) {
	// Replay allocates the whole state at once; collecting less often
	// while it runs makes recovery markedly faster.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	var cur uint64
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("replaying record %d: %v", cur, p)
		}
	}()
	var decodeErr error
	err = w.read(after+1, func(wr walRecord) bool {
		cur = wr.LSN
		r, e := decodeRecord(wr.Type, wr.Payload)
		if e != nil {
			decodeErr = fmt.Errorf("record %d: undecodable payload: %v", wr.LSN, e)
			return false
		}
		r.lsn = wr.LSN
		st.apply(r)
		n++
		return true
	})
	if err == nil {
		err = decodeErr
	}
	return n, err
}

// now is the server's clock in Unix ms: record timestamps and TTLs.
func (s *server) now() int64 { return time.Now().UnixMilli() + s.skewMS.Load() }

// metricsSnapshot reads the gauges a scrape reports, so none is stale.
func (s *server) metricsSnapshot() metricsSnapshot {
	s.st.mu.RLock()
	inst := len(s.st.instances)
	machines := 0
	for _, vs := range s.st.machines {
		machines += len(vs)
	}
	s.st.mu.RUnlock()
	ws := s.log.stats()
	return metricsSnapshot{
		Instances: uint64(inst), Machines: uint64(machines),
		WalEntries: ws.EntryCount, WalSegments: ws.SegmentCount, WalSizeBytes: uint64(ws.TotalSizeBytes),
		WalBytesWritten: ws.BytesWritten, WalBytesRead: ws.BytesRead, WalWrites: ws.Writes, WalReads: ws.Reads,
		WalFsyncs: ws.Fsyncs, WalLastLSN: ws.LastLSN, OutputQueuedBytes: uint64(max(s.outBudget.queued.Load(), 0)),
		TimersArmed: uint64(s.st.timers.armed.Load()), TimersFired: s.st.timers.fired.Load(), TimersGuardFailed: s.st.timers.guardFailed.Load(),
		Disk: s.disk.info(ws.AllocatedBytes),
		Repl: s.repl.metrics(),
	}
}

// serveMetrics serves /metrics, /health and /healthz on ln until close.
func (s *server) serveMetrics(ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("/", s.metrics.handler(s.metricsSnapshot))
	mux.HandleFunc("GET /healthz", s.healthHandler(false)) // JSON: role, epoch, offset, lag (replica.go)
	mux.HandleFunc("GET /readyz", s.healthHandler(true))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-s.stop
		hs.Close()
	}()
	if err := hs.Serve(ln); err != nil && err != http.ErrServerClosed {
		s.logger.Error("metrics listener failed", "err", err)
	}
}

// Accept errors are retried after a pause that starts at acceptBackoffMin
// and doubles up to acceptBackoffMax while they last (as net/http does);
// they are logged at most once per acceptLogEvery.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	acceptLogEvery   = 5 * time.Second
)

// serve accepts connections until close. It returns nil after close, and
// an error only if the listener was closed by something else: every other
// accept error (out of file descriptors, an aborted connection) is
// counted, logged and retried after a pause, so that it cannot take the
// server down.
func (s *server) serve(ln net.Listener) error {
	if s.tlsConfig != nil {
		ln = tls.NewListener(ln, s.tlsConfig)
	}
	s.mu.Lock()
	s.ln = ln
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.mu.Unlock()
	var backoff time.Duration
	var lastLog time.Time
	suppressed := 0
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("the listener closed unexpectedly: %w", err)
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			s.metrics.acceptError()
			if now := time.Now(); now.Sub(lastLog) >= acceptLogEvery {
				s.logger.Warn("accept failed; retrying", "err", err, "retry_in", backoff, "suppressed", suppressed)
				lastLog, suppressed = now, 0
			} else {
				suppressed++
			}
			select {
			case <-time.After(backoff):
			case <-s.stop:
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		if len(s.conns) >= s.cfg.MaxConnections {
			s.mu.Unlock()
			s.metrics.connRejected()
			go s.reject(nc)
			continue
		}
		c := s.newConn(nc)
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		s.metrics.connOpened()
		s.logger.Info("connection opened", "remote", c.remote)
		go c.readLoop()
		go c.writeLoop()
	}
}

// rejectPeek is how long a rejected connection is given to send its first
// byte, which decides the framing of the refusal; rejectLinger is how long
// its unread input is then drained, so that closing does not reset the
// connection before the client has read the refusal.
const (
	rejectPeek   = 200 * time.Millisecond
	rejectLinger = time.Second
)

// reject tells a connection over max_connections why, in the client's
// framing when its first byte has arrived, then closes it.
func (s *server) reject(nc net.Conn) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if tc, ok := nc.(*tls.Conn); ok && tc.Handshake() != nil {
		return
	}
	mode := modeBinary
	nc.SetReadDeadline(time.Now().Add(rejectPeek))
	var first [1]byte
	if n, _ := nc.Read(first[:]); n == 1 && first[0] == '{' {
		mode = modeJSONL
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	e := newError(codeRateLimited, "too many connections (limit %d); try again later", s.cfg.MaxConnections).
		with("max_connections", s.cfg.MaxConnections)
	p := appendErrorPayload(nil, nil, e)
	s.logger.Warn("connection rejected: max_connections reached", "remote", nc.RemoteAddr().String(), "limit", s.cfg.MaxConnections)
	if _, err := nc.Write(appendFrame(nil, mode, p)); err != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		nc.SetReadDeadline(time.Now().Add(rejectLinger))
		io.CopyN(io.Discard, nc, 64<<10)
	}
}

// close shuts down gracefully: stop accepting, stop reading new requests,
// answer every request already read (once durable), then the final sync.
func (s *server) close() error {
	s.mu.Lock()
	if !s.closing {
		close(s.stop)
	}
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		// Wakes the reader, which sees the server closing and stops; the
		// writer still sends what is queued.
		c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// A client that stopped reading must not hold shutdown hostage.
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	return s.log.close()
}

// die reports a fatal log failure once, however many paths see it.
func (s *server) die(err error) { s.fatalOnce.Do(func() { s.fatal(err) }) }

func (s *server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// conn is one client connection: a reader goroutine that decodes and runs
// requests, a writer goroutine that sends replies in request order, each
// once the record it depends on is durable, and (once it watches) a pump
// goroutine that queues subscription events.
type conn struct {
	s      *server
	nc     net.Conn
	remote string
	fr     *frameReader
	out    chan outMsg
	quit   chan struct{} // closed when the reader stops: the pump exits

	lastActivity atomic.Int64 // Unix ns of the last request or event

	watch connWatch
	gate  byteGate      // bytes queued on out
	dead  chan struct{} // closed when the writer stops: nobody drains out

	// The write side, shared by the writer goroutine and the reader's
	// direct replies (reply), under wmu: the buffered writer, the
	// framing of the stream at this point, and the write deadline.
	wmu       sync.Mutex
	bw        *bufio.Writer
	wmode     wireMode
	wdeadline deadlineTimer
	// replies counts replies queued on out and not yet written; the
	// reader writes a reply itself only when none is ahead of it.
	replies atomic.Int32

	// Touched only by the reader goroutine (handlers run there).
	switchTo     *wireMode
	stream       func() // set by REPLICATE: the reader hands the connection to it (replicate.go)
	closing      bool
	authed       bool
	authFailures int
	scratch      []byte
	rec          record // a single APPLY_EVENT's record, reused
	mayLead      bool   // the request being handled is alone: none buffered after it, no reply queued
	leased       bool   // handle took a log lease (wal.lease): readLoop leads
}

func (s *server) newConn(nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), fr: newFrameReader(nc),
		out: make(chan outMsg, 256), quit: make(chan struct{}), dead: make(chan struct{})}
	c.bw = bufio.NewWriterSize(nc, 32<<10)
	c.fr.setLimit(s.cfg.MaxFrameBytes)
	c.fr.budget = s.frameBudget
	c.gate.limit, c.gate.budget = s.connQueue, s.outBudget
	c.lastActivity.Store(time.Now().UnixNano())
	return c
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer func() {
		c.fr.releaseBudget()
		close(c.quit)
		c.dropSubscriptions()
		c.watch.done.Wait()
		close(c.out)
	}()
	idle := c.s.cfg.IdleTimeout
	var deadline deadlineTimer
	if idle > 0 {
		deadline.arm(c.nc.SetReadDeadline, time.Now(), idle)
	}
	for {
		payload, err := c.fr.next()
		if err != nil {
			var re *rcpError
			var ne net.Error
			switch {
			case errors.As(err, &re):
				// Malformed input: one error frame, then close.
				c.enqueue(outMsg{buf: c.encodeError(nil, re), close: true, next: c.fr.mode()})
			case errors.As(err, &ne) && ne.Timeout() && !c.s.isClosing():
				// Idle only if nothing was sent either (events keep a
				// subscriber alive). The deadline may also have been set
				// early (deadlineTimer): then wait for the rest of the
				// timeout, counted from the last activity.
				if last := time.Unix(0, c.lastActivity.Load()); time.Since(last) < idle {
					deadline.at = last.Add(idle)
					c.nc.SetReadDeadline(deadline.at)
					continue
				}
				c.s.logger.Info("closing idle connection", "remote", c.remote, "idle_timeout", idle)
			}
			return
		}
		now := time.Now()
		c.lastActivity.Store(now.UnixNano())
		if idle > 0 {
			deadline.arm(c.nc.SetReadDeadline, now, idle)
		}
		// A request that neither a buffered request follows nor a queued
		// reply precedes is answered as soon as it is durable: its write
		// leads the log's commit and its reply is written here (reply).
		c.mayLead = c.fr.buffered() == 0 && c.replies.Load() == 0
		msg := c.handle(payload, now)
		msg.local = msg.local || c.stream != nil // REPLICATE's reply waits for no replica
		msg.next = c.fr.mode()
		if c.switchTo != nil {
			msg.next = *c.switchTo
			c.fr.setMode(*c.switchTo)
			c.switchTo = nil
		}
		if !c.reply(msg) {
			return
		}
		c.activateSubscriptions()
		if msg.close {
			return
		}
		if c.stream != nil {
			c.stream()
			return
		}
	}
}

// handle runs one request payload, read at start, and returns the encoded
// response. Malformed JSON closes the connection (after the error); an
// envelope that is JSON but wrong is a BAD_REQUEST and the connection stays
// open.
func (c *conn) handle(payload []byte, start time.Time) outMsg {
	if t := paramTrim(payload); len(t) == 0 || t[0] != '{' {
		if !paramJSONValid(payload) {
			return outMsg{buf: c.encodeError(nil, newError(codeBadRequest, "request is not valid JSON")), close: true}
		}
		return outMsg{buf: c.encodeError(nil, newError(codeBadRequest, "request must be a JSON object"))}
	}
	// One pass: the scanner validates everything it walks over, params
	// included, so malformed JSON anywhere is caught here.
	var idRaw, opRaw, params []byte
	sc, _ := scanObject(payload)
	for sc.next() {
		switch string(sc.key) {
		case "id":
			idRaw = sc.val
		case "op":
			opRaw = sc.val
		case "params":
			params = sc.val
		}
	}
	if sc.err != nil {
		return outMsg{buf: c.encodeError(nil, newError(codeBadRequest, "request is not valid JSON")), close: true}
	}
	// The id is only copied into the reply, so it may alias the request.
	id, err := parseJSONStringBorrowed(idRaw)
	if idRaw == nil || err != nil {
		return outMsg{buf: c.encodeError(nil, badParam("id", "request 'id' must be a string"))}
	}
	if len(id) > 256 {
		return outMsg{buf: c.encodeError(nil, badParam("id", "request 'id' is %d bytes; the limit is 256", len(id)))}
	}
	var op opCode
	var opName string
	ok := false
	if n := len(opRaw); n >= 2 && opRaw[0] == '"' && opRaw[n-1] == '"' && bytes.IndexByte(opRaw, '\\') < 0 {
		// The common case, a plain name: look it up without allocating.
		if op, ok = lookupOp(string(opRaw[1 : n-1])); ok {
			opName = opTable[op].name
		}
	}
	if !ok {
		if opName, err = parseJSONString(opRaw); opRaw == nil || err != nil {
			return outMsg{buf: c.encodeError(&id, badParam("op", "request 'op' must be a string"))}
		}
		op, ok = lookupOp(opName)
	}
	if !ok {
		c.s.metrics.request("UNKNOWN", codeBadRequest, 0)
		return outMsg{buf: c.encodeError(&id, badParam("op", "unknown op '%s'", opName))}
	}
	var r reply
	var rerr *rcpError
	if c.s.cfg.AuthRequired && !c.authed && opTable[op].flags&flagPreAuth == 0 {
		rerr = newError(codeUnauthorized, "authentication required: send AUTH before %s", opName)
	} else if rerr = c.s.writeGate(op); rerr == nil {
		if c.mayLead && opTable[op].flags&flagWrite != 0 && op != opCompact && op != opPromote && c.s.log.deferWrites {
			// A quick write whose reply nothing queued precedes: its
			// record is committed by readLoop (reply), not the committer.
			c.s.log.lease()
			c.leased = true
		}
		r, rerr = c.s.dispatch(c, op, params)
	}
	if rerr != nil {
		c.s.metrics.request(opName, rerr.Code, time.Since(start))
		lsn := c.s.readLSN() // an error can describe state too (not found, conflict)
		if rerr.Code == codeWALIOError {
			lsn = 0 // the log is what failed: nothing to wait for
		}
		return outMsg{buf: c.encodeError(&id, rerr), lsn: lsn, local: true}
	}
	c.s.metrics.request(opName, "", time.Since(start))
	bp := replyBufs.Get().(*[]byte)
	// Only a write's reply waits for replica acks (sync_replicas): reads
	// and errors wait for the local sync alone.
	return outMsg{buf: c.encodeReply(*bp, id, r), pool: bp, lsn: r.lsn, close: c.closing, local: r.local || opTable[op].flags&flagWrite == 0}
}

// buildTLSConfig loads the server certificate and, for mTLS, the CA that
// client certificates must chain to.
func buildTLSConfig(cfg config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertPath, cfg.TLSKeyPath)
	if err != nil {
		return nil, fmt.Errorf("tls: loading tls.cert_path/tls.key_path: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSRequireClientCert {
		pem, err := os.ReadFile(cfg.TLSClientCAPath)
		if err != nil {
			return nil, fmt.Errorf("tls: reading tls.client_ca_path: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: tls.client_ca_path %s holds no PEM certificate", cfg.TLSClientCAPath)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// errorBody is the wire form of an rcpError.
type errorBody struct {
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	Retryable bool           `json:"retryable"`
	Details   map[string]any `json:"details,omitempty"`
}

func errBody(e *rcpError) *errorBody {
	return &errorBody{e.Code, e.Message, e.retryable(), e.Details}
}

// encodeReply builds the reply frame in one buffer (dst's storage, grown as
// needed): header room, envelope, the result (rendered in place for a
// single write), then the header.
func (c *conn) encodeReply(dst []byte, id string, r reply) []byte {
	m := c.fr.mode()
	size := frameHeaderLen + 96 + len(id) + len(r.result)
	if r.rec != nil {
		size += resultSize(r.rec)
	}
	p := frameStart(slices.Grow(dst[:0], size), m)
	p = append(p, `{"type":"response","id":`...)
	p = encAppendString(p, id)
	p = append(p, `,"status":"ok","result":`...)
	if r.rec != nil {
		p = appendResult(p, r.rec, true)
	} else {
		p = append(p, r.result...)
	}
	if r.meta {
		p = append(p, `,"meta":{"wal_offset":`...)
		p = strconv.AppendUint(p, r.lsn, 10)
		p = append(p, '}')
	}
	p = append(p, '}')
	return frameFinish(p, m)
}

func (c *conn) encodeError(id *string, e *rcpError) []byte {
	c.scratch = appendErrorPayload(c.scratch[:0], id, e)
	return appendFrame(nil, c.fr.mode(), c.scratch)
}

// appendErrorPayload appends an error response envelope; a nil id is "".
func appendErrorPayload(p []byte, id *string, e *rcpError) []byte {
	p = append(p, `{"type":"response","id":`...)
	if id != nil {
		p = encAppendString(p, *id)
	} else {
		p = append(p, `""`...)
	}
	p = append(p, `,"status":"error","error":`...)
	p = append(p, encMarshal(errBody(e))...)
	return append(p, '}')
}
