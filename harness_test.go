package main

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testServer is a real server on a loopback port over a temporary data
// directory. Closing it checks restart equality: reopening the directory
// must rebuild exactly the live state.
type testServer struct {
	t    *testing.T
	cfg  config
	srv  *server
	addr string
	done chan error
}

func startServer(t *testing.T, mod func(*config)) *testServer {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.SegmentSizeMB = 1
	if mod != nil {
		mod(&cfg)
	}
	ts := &testServer{t: t, cfg: cfg}
	ts.start()
	t.Cleanup(ts.stopAndCheck)
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	s, err := openServer(ts.cfg, nil)
	if err != nil {
		ts.t.Fatalf("openServer: %v", err)
	}
	s.fatal = func(err error) { ts.t.Errorf("fatal WAL error: %v", err) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.srv, ts.addr, ts.done = s, ln.Addr().String(), make(chan error, 1)
	go func() { ts.done <- s.serve(ln) }()
}

// stop closes the server (final sync included).
func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	if err := ts.srv.close(); err != nil {
		ts.t.Errorf("close: %v", err)
	}
	if err := <-ts.done; err != nil {
		ts.t.Errorf("serve: %v", err)
	}
	ts.srv = nil
}

// restart closes the server and reopens the same data directory, checking
// that the recovered state equals the state before.
func (ts *testServer) restart() {
	ts.t.Helper()
	checkSlots(ts.t, ts.srv.st)
	before := dumpState(ts.srv.st)
	ts.stop()
	ts.start()
	checkSlots(ts.t, ts.srv.st)
	if diff := cmp.Diff(before, dumpState(ts.srv.st)); diff != "" {
		ts.t.Errorf("state after restart differs (-live +recovered):\n%s", diff)
	}
}

func (ts *testServer) stopAndCheck() {
	if ts.srv == nil || ts.t.Failed() {
		ts.stop()
		return
	}
	ts.restart()
	ts.stop()
}

// stateDump is a comparable picture of everything the state holds.
type stateDump struct {
	Machines  map[string]string // "name/version" -> checksum + def
	Instances map[string]string
	Idem      map[string]string
	Applied   uint64
}

func dumpState(st *state) stateDump {
	st.mu.RLock()
	defer st.mu.RUnlock()
	d := stateDump{Machines: map[string]string{}, Instances: map[string]string{}, Idem: map[string]string{}, Applied: st.applied}
	for name, vs := range st.machines {
		for v, mv := range vs {
			d.Machines[fmt.Sprintf("%s/%d", name, v)] = fmt.Sprintf("%s %s lsn=%d", mv.checksum, mv.def, mv.lsn)
		}
	}
	for id, in := range st.instances {
		d.Instances[id] = fmt.Sprintf("%s/%d state=%s ctx=%s last_event_id=%q lsn=%d created=%d updated=%d",
			in.mv.name, in.mv.version, in.state, in.ctx, in.lastEventID, in.lastLSN, in.createdAt, in.updatedAt)
	}
	if st.tombstones != nil {
		st.tombstones.each(func(id string, _ struct{}) bool {
			d.Instances[id] = "deleted"
			return true
		})
	}
	st.idem.each(func(k idemKey, e *idemEntry) bool {
		d.Idem[fmt.Sprintf("%d/%s", k.typ, k.key)] = fmt.Sprintf("%s lsn=%d exp=%d %s", e.hash, e.lsn, e.expires, e.result)
		return true
	})
	return d
}

func (ts *testServer) dial() *client {
	ts.t.Helper()
	c, err := dialClient(ts.addr, 5*time.Second)
	if err != nil {
		ts.t.Fatal(err)
	}
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	ts.t.Cleanup(func() { c.close() })
	return c
}

// call runs one request and fails the test on a transport error.
func call(t *testing.T, c *client, op string, params string) *message {
	t.Helper()
	var p any
	if params != "" {
		p = params
	}
	m, err := c.call(op, p)
	if err != nil {
		t.Fatalf("%s %s: %v", op, params, err)
	}
	return m
}

// mustOK runs a request that must succeed and returns its result.
func mustOK(t *testing.T, c *client, op, params string) json.RawMessage {
	t.Helper()
	m := call(t, c, op, params)
	if m.Status != "ok" {
		t.Fatalf("%s %s: %s", op, params, m.Raw)
	}
	return m.Result
}

// step is one row of an op table: a request and what must come back.
// want is the expected result (or error) as JSON, where the string "<any>"
// matches any value and "<int>" any number. Error rows compare the whole
// error object minus the message, plus messageHas.
type step struct {
	name       string
	op         string
	params     string
	want       string // result for ok, error object (without message) for errors
	code       string // expected error code; "" means success
	messageHas string
	meta       bool // success must carry meta.wal_offset
}

func runSteps(t *testing.T, c *client, steps []step) {
	t.Helper()
	for _, s := range steps {
		m := call(t, c, s.op, s.params)
		name := s.name
		if name == "" {
			name = s.op + " " + s.params
		}
		if s.code == "" {
			if m.Status != "ok" {
				t.Errorf("%s: want ok, got %s", name, m.Raw)
				continue
			}
			if s.meta && m.Meta == nil {
				t.Errorf("%s: missing meta.wal_offset: %s", name, m.Raw)
			}
			if s.want != "" {
				matchJSON(t, name, s.want, m.Result)
			}
			continue
		}
		if m.Status != "error" || m.Error == nil {
			t.Errorf("%s: want %s, got %s", name, s.code, m.Raw)
			continue
		}
		if m.Error.Code != s.code {
			t.Errorf("%s: code %s, want %s (%s)", name, m.Error.Code, s.code, m.Error.Message)
		}
		if s.messageHas != "" && !strings.Contains(m.Error.Message, s.messageHas) {
			t.Errorf("%s: message %q does not mention %q", name, m.Error.Message, s.messageHas)
		}
		if s.want != "" {
			b, _ := json.Marshal(struct {
				Retryable bool           `json:"retryable"`
				Details   map[string]any `json:"details,omitempty"`
			}{m.Error.Retryable, m.Error.Details})
			matchJSON(t, name, s.want, b)
		}
	}
}

// matchJSON compares got with want, honouring "<any>" and "<int>".
func matchJSON(t *testing.T, name, want string, got []byte) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad want JSON %s: %v", name, want, err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: result is not JSON: %s", name, got)
		return
	}
	if diff := cmp.Diff(w, g, cmp.FilterValues(func(a, b any) bool {
		return isPlaceholder(a) || isPlaceholder(b)
	}, cmp.Comparer(func(a, b any) bool {
		p, v := a, b
		if isPlaceholder(b) {
			p, v = b, a
		}
		if p == "<int>" {
			_, ok := v.(float64)
			return ok
		}
		return true
	}))); diff != "" {
		t.Errorf("%s: result mismatch (-want +got):\n%s\ngot: %s", name, diff, got)
	}
}

func isPlaceholder(v any) bool {
	s, ok := v.(string)
	return ok && (s == "<any>" || s == "<int>")
}

// orderMachine is the machine most tests use: guarded transitions, several
// per (state, event).
const orderMachine = `{"machine":"order","version":1,"definition":{
 "states":["created","paid","shipped","review","cancelled"],
 "initial":"created",
 "transitions":[
  {"from":"created","event":"PAY","to":"review","guard":"ctx.amount > 1000"},
  {"from":"created","event":"PAY","to":"paid","guard":"ctx.amount > 0"},
  {"from":["created","paid"],"event":"CANCEL","to":"cancelled"},
  {"from":"review","event":"APPROVE","to":"paid"},
  {"from":"paid","event":"SHIP","to":"shipped"}
 ]}}`

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
