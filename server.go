package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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

	ln      net.Listener
	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup

	// fatal is called when the WAL fails in a way that cannot be recovered
	// from in-process (a failed fsync). The default logs and exits non-zero.
	fatal func(error)
}

// openServer recovers the state from the data directory.
func openServer(cfg config, logger *slog.Logger) (*server, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &server{
		cfg: cfg, logger: logger, conns: map[*conn]struct{}{},
	}
	s.fatal = func(err error) {
		logger.Error("fatal write-ahead log failure; exiting so that a restart recovers from disk", "err", err)
		os.Exit(1)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	start := time.Now()
	st, snapPath, err := loadNewestSnapshot(filepath.Join(cfg.DataDir, "snapshots"), cfg.IdempotencyTTL.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("loading snapshot: %w", err)
	}
	s.st = st
	snapLSN := st.applied
	w, err := openWAL(filepath.Join(cfg.DataDir, "wal"), walOptions{
		SegmentSize: cfg.SegmentSizeMB << 20, Policy: cfg.Fsync, Logger: logger, StartLSN: snapLSN + 1,
	})
	if err != nil {
		return nil, err
	}
	s.log = w
	if first := w.firstLSN(); first > snapLSN+1 {
		w.close()
		return nil, fmt.Errorf("the WAL starts at record %d but the newest snapshot (%q) covers only through %d: records are missing", first, snapPath, snapLSN)
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
	s.stop = make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.autoCompact(s.stop, cfg.compactTick)
	}()
	logger.Info("recovered", "snapshot", snapPath, "snapshot_lsn", snapLSN, "records_replayed", n,
		"machines", len(s.st.machines), "instances", len(s.st.instances), "last_lsn", w.lastLSN(), "elapsed", time.Since(start))
	return s, nil
}

// replayInto applies every record after `after` to st.
func replayInto(st *state, w *wal, after uint64) (n int, err error) {
	var cur uint64
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("replaying record %d: %v", cur, p)
		}
	}()
	var decodeErr error
	err = w.read(after+1, func(wr walRecord) bool {
		cur = wr.LSN
		r := new(record)
		if e := json.Unmarshal(wr.Payload, r); e != nil {
			decodeErr = fmt.Errorf("record %d: undecodable payload: %v", wr.LSN, e)
			return false
		}
		r.typ, r.lsn = wr.Type, wr.LSN
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

// serve accepts connections until close.
func (s *server) serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		c := s.newConn(nc)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		s.logger.Debug("connection opened", "remote", nc.RemoteAddr().String())
		go c.readLoop()
		go c.writeLoop()
	}
}

// close stops accepting, closes every connection, waits for them and
// syncs and closes the WAL.
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
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.log.close()
}

// conn is one client connection: a reader goroutine that decodes and runs
// requests, and a writer goroutine that sends replies in request order,
// each once the record it depends on is durable.
type conn struct {
	s   *server
	nc  net.Conn
	fr  *frameReader
	out chan outMsg

	// Touched only by the reader goroutine (handlers run there).
	switchTo *wireMode
	closing  bool
	scratch  []byte
}

type outMsg struct {
	buf   []byte
	lsn   uint64 // send only once durable
	close bool   // close the connection after this message
}

func (s *server) newConn(nc net.Conn) *conn {
	return &conn{s: s, nc: nc, fr: newFrameReader(nc), out: make(chan outMsg, 256)}
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer close(c.out)
	for {
		payload, err := c.fr.next()
		if err != nil {
			var re *rcpError
			if errors.As(err, &re) {
				// Malformed input: one error frame, then close.
				c.out <- outMsg{buf: c.encodeError(nil, re), close: true}
			}
			return
		}
		msg := c.handle(payload)
		c.out <- msg
		if c.switchTo != nil {
			c.fr.setMode(*c.switchTo)
			c.switchTo = nil
		}
		if msg.close {
			return
		}
	}
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer func() {
		c.nc.Close()
		for range c.out { // let the reader finish if it is blocked on us
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.logger.Debug("connection closed", "remote", c.nc.RemoteAddr().String())
	}()
	bw := bufio.NewWriterSize(c.nc, 32<<10)
	for m := range c.out {
		if m.lsn > 0 {
			if err := c.s.log.waitDurable(m.lsn); err != nil {
				c.s.fatal(err)
				return
			}
		}
		if _, err := bw.Write(m.buf); err != nil {
			return
		}
		if m.close || len(c.out) == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
		if m.close {
			return
		}
	}
}

// handle runs one request payload and returns the encoded response.
func (c *conn) handle(payload []byte) outMsg {
	var env struct {
		ID     json.RawMessage `json:"id"`
		Op     json.RawMessage `json:"op"`
		Params json.RawMessage `json:"params"`
	}
	if !json.Valid(payload) {
		return outMsg{buf: c.encodeError(nil, newError(codeBadRequest, "request is not valid JSON")), close: true}
	}
	if t := bytes.TrimSpace(payload); len(t) == 0 || t[0] != '{' {
		return outMsg{buf: c.encodeError(nil, newError(codeBadRequest, "request must be a JSON object"))}
	}
	if err := json.Unmarshal(payload, &env); err != nil {
		return outMsg{buf: c.encodeError(nil, newError(codeBadRequest, "invalid request envelope: %v", err))}
	}
	var id string
	if env.ID == nil || json.Unmarshal(env.ID, &id) != nil || isJSONNull(env.ID) {
		return outMsg{buf: c.encodeError(nil, badParam("id", "request 'id' must be a string"))}
	}
	if len(id) > 256 {
		return outMsg{buf: c.encodeError(nil, badParam("id", "request 'id' is %d bytes; the limit is 256", len(id)))}
	}
	var opName string
	if env.Op == nil || json.Unmarshal(env.Op, &opName) != nil || isJSONNull(env.Op) {
		return outMsg{buf: c.encodeError(&id, badParam("op", "request 'op' must be a string"))}
	}
	op, ok := lookupOp(opName)
	if !ok {
		return outMsg{buf: c.encodeError(&id, badParam("op", "unknown op '%s'", opName))}
	}
	r, rerr := c.s.dispatch(c, op, env.Params)
	if rerr != nil {
		return outMsg{buf: c.encodeError(&id, rerr), lsn: c.s.readLSN()}
	}
	return outMsg{buf: c.encodeReply(id, r), lsn: r.lsn, close: c.closing}
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

func (c *conn) encodeReply(id string, r reply) []byte {
	p := c.scratch[:0]
	p = append(p, `{"type":"response","id":`...)
	p = encAppendString(p, id)
	p = append(p, `,"status":"ok","result":`...)
	p = append(p, r.result...)
	if r.meta {
		p = append(p, `,"meta":{"wal_offset":`...)
		p = strconv.AppendUint(p, r.lsn, 10)
		p = append(p, '}')
	}
	p = append(p, '}')
	c.scratch = p
	return appendFrame(nil, c.fr.mode(), p)
}

func (c *conn) encodeError(id *string, e *rcpError) []byte {
	p := c.scratch[:0]
	p = append(p, `{"type":"response","id":`...)
	if id != nil {
		p = encAppendString(p, *id)
	} else {
		p = append(p, `""`...)
	}
	p = append(p, `,"status":"error","error":`...)
	p = append(p, encMarshal(errBody(e))...)
	p = append(p, '}')
	c.scratch = p
	return appendFrame(nil, c.fr.mode(), p)
}
