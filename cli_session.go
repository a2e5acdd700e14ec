package main

// CLI session: the one connection a command or a whole repl shares, how a
// verb runs on it, and the reader goroutine that sorts responses from
// subscription events.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
)

// cliSession holds the connection a one-shot command or a whole repl uses,
// and serializes everything written to stdout (events arrive on their own
// goroutine).
type cliSession struct {
	env    *cliEnv
	opts   cliOptions
	conn   *cliConn
	inREPL bool

	outMu    sync.Mutex
	atPrompt bool            // a prompt is showing: events redraw it
	subJSON  map[string]bool // subscription id -> print its events as JSON
}

func newCLISession(env *cliEnv) *cliSession {
	o := cliOptions{addr: env.getenv("RSTMDB_ADDR"), token: env.getenv("RSTMDB_TOKEN")}
	if o.addr == "" {
		o.addr = cliDefaultAddr
	}
	return &cliSession{env: env, opts: o, subJSON: map[string]bool{}}
}

func (s *cliSession) close() {
	if s.conn != nil {
		s.conn.close()
	}
}

// write sends p to stdout in one piece.
func (s *cliSession) write(p []byte) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	s.env.stdout.Write(p)
	s.atPrompt = false
}

// connect dials the server on first use.
func (s *cliSession) connect() (*cliConn, error) {
	if s.conn != nil {
		return s.conn, nil
	}
	o := dialOptions{Token: s.opts.token}
	if s.opts.tls || s.opts.caCert != "" || s.opts.clientCert != "" || s.opts.clientKey != "" || s.opts.insecure {
		cfg, err := clientTLSConfig(s.opts.addr, s.opts.caCert, s.opts.clientCert, s.opts.clientKey, s.opts.insecure)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		o.TLS = cfg
	}
	c, err := dialClientOpts(s.opts.addr, o)
	if err != nil {
		return nil, err
	}
	s.conn = newCLIConn(s.env.ctx, c, s.event)
	return s.conn, nil
}

// event prints one subscription event.
func (s *cliSession) event(m *message) {
	var ev struct {
		SubscriptionID string          `json:"subscription_id"`
		InstanceID     string          `json:"instance_id"`
		Machine        string          `json:"machine"`
		Version        uint32          `json:"version"`
		WalOffset      uint64          `json:"wal_offset"`
		FromState      string          `json:"from_state"`
		ToState        string          `json:"to_state"`
		Event          string          `json:"event"`
		Payload        json.RawMessage `json:"payload"`
		Ctx            json.RawMessage `json:"ctx"`
	}
	json.Unmarshal(m.Raw, &ev)
	s.outMu.Lock()
	defer s.outMu.Unlock()
	asJSON, ok := s.subJSON[ev.SubscriptionID]
	if !ok {
		asJSON = s.opts.json
	}
	var b bytes.Buffer
	if s.atPrompt {
		b.WriteString("\r")
	}
	if asJSON {
		json.Compact(&b, m.Raw)
	} else {
		fmt.Fprintf(&b, "event %s (%s v%d) %s --%s--> %s  wal_offset=%d", ev.InstanceID, ev.Machine, ev.Version, ev.FromState, ev.Event, ev.ToState, ev.WalOffset)
		if len(ev.Payload) > 0 {
			b.WriteString("  payload=")
			json.Compact(&b, ev.Payload)
		}
		if len(ev.Ctx) > 0 {
			b.WriteString("  ctx=")
			json.Compact(&b, ev.Ctx)
		}
	}
	b.WriteByte('\n')
	if s.atPrompt {
		b.WriteString(replPrompt)
	}
	s.env.stdout.Write(b.Bytes())
}

// exec runs one verb with its arguments and returns the exit status.
func (s *cliSession) exec(v *cliVerb, args []string, inREPL bool) int {
	x := &cliCmd{sess: s, verb: v, opts: s.opts}
	x.fs = flag.NewFlagSet(v.name, flag.ContinueOnError)
	x.fs.SetOutput(io.Discard)
	x.opts.register(x.fs)
	run := v.setup(x)
	pos, err := cliParse(x.fs, args)
	if err == flag.ErrHelp {
		x.help(s.env.stdout)
		return 0
	}
	if err == nil && inREPL {
		x.fs.Visit(func(f *flag.Flag) {
			if _, global := cliGlobalFlags[f.Name]; global && f.Name != "json" && err == nil {
				err = cliUsagef("--%s applies to the whole session: give it when starting the repl", f.Name)
			}
		})
	}
	if err == nil {
		if !inREPL {
			s.opts = x.opts
		}
		err = run(pos)
	}
	if x.out.Len() > 0 {
		s.write(x.out.Bytes())
	}
	return x.finish(err)
}

// ---- connection with a reader goroutine ----

// cliConn runs a client with a goroutine reading every message: responses
// go to the one waiting call, events to onEvent as they arrive.
type cliConn struct {
	c       *client
	onEvent func(*message)
	resp    chan *message
	done    chan struct{} // closed when the reader stops; err says why
	err     error

	mu       sync.Mutex
	onResult func(json.RawMessage) // run by the reader on the next ok response
	stop     func() bool
}

func newCLIConn(ctx context.Context, c *client, onEvent func(*message)) *cliConn {
	cc := &cliConn{c: c, onEvent: onEvent, resp: make(chan *message, 4), done: make(chan struct{})}
	cc.stop = context.AfterFunc(ctx, func() { c.close() })
	go cc.read()
	return cc
}

func (cc *cliConn) read() {
	defer close(cc.done)
	for {
		m, err := cc.c.recv()
		if err != nil {
			cc.err = err
			return
		}
		if m.Type == "event" {
			cc.onEvent(m)
			continue
		}
		cc.mu.Lock()
		hook := cc.onResult
		cc.onResult = nil
		cc.mu.Unlock()
		if hook != nil && m.Status == "ok" {
			hook(m.Result)
		}
		cc.resp <- m
	}
}

// call sends one request and waits for its response.
func (cc *cliConn) call(op string, params any, onResult func(json.RawMessage)) (*message, error) {
	cc.mu.Lock()
	cc.onResult = onResult
	cc.mu.Unlock()
	id, err := cc.c.send(op, params)
	if err == nil {
		err = cc.c.flush()
	}
	if err != nil {
		return nil, err
	}
	var m *message
	select {
	case m = <-cc.resp:
	case <-cc.done:
		select {
		case m = <-cc.resp:
		default:
			if cc.err == io.EOF {
				return nil, errors.New("the server closed the connection")
			}
			return nil, cc.err
		}
	}
	if m.ID != id {
		if e := m.connErr(); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("response for request %q while waiting for %q", m.ID, id)
	}
	return m, nil
}

// lost says why the connection ended, once the reader has stopped: the
// connection-level error the server sent last before closing, if any, else
// the read error.
func (cc *cliConn) lost() error {
	var last *rcpError
	for {
		select {
		case m := <-cc.resp:
			if e := m.connErr(); e != nil {
				last = e
			}
		default:
			if last != nil {
				return last
			}
			return fmt.Errorf("connection lost: %v", cc.err)
		}
	}
}

func (cc *cliConn) close() {
	cc.stop()
	cc.c.close()
	<-cc.done
}
