package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// FuzzRequest sends arbitrary request payloads, one per line of the input,
// through a real connection (reader, dispatch, ordered writer) of a fresh
// server that already holds a guarded machine and two instances. Every
// payload must get exactly one well-formed response with the right id (or
// the contract's error-then-close for a malformed frame), the state
// invariants must hold afterwards, and reopening the data directory must
// rebuild exactly the live state.
func FuzzRequest(f *testing.F) {
	for _, s := range fzRequestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fzRunRequests(t, data)
	})
}

// fzRequestSeeds are also in testdata/fuzz/FuzzRequest; these cover each op.
var fzRequestSeeds = []string{
	`{"id":"1","op":"PING"}`,
	`{"id":"h","op":"HELLO","params":{"protocol_version":1,"wire_modes":["jsonl"],"features":["batch","idempotency"]}}` + "\n" + `{"id":"2","op":"GET_INSTANCE","params":{"instance_id":"o1"}}`,
	`{"id":"a","op":"APPLY_EVENT","params":{"instance_id":"o1","event":"PAY","payload":{"x":1},"idempotency_key":"k"}}` + "\n" + `{"id":"b","op":"APPLY_EVENT","params":{"instance_id":"o1","event":"PAY","payload":{"x":1},"idempotency_key":"k"}}` + "\n" + `{"id":"c","op":"APPLY_EVENT","params":{"instance_id":"o1","event":"PAY","payload":{"x":2},"idempotency_key":"k"}}`,
	`{"id":"b","op":"BATCH","params":{"mode":"atomic","ops":[{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"n","initial_ctx":{"amount":3}}},{"op":"APPLY_EVENT","params":{"instance_id":"n","event":"PAY"}},{"op":"APPLY_EVENT","params":{"instance_id":"n","event":"NOPE"}}]}}`,
	`{"id":"b","op":"BATCH","params":{"mode":"best_effort","ops":[{"op":"DELETE_INSTANCE","params":{"instance_id":"o2","idempotency_key":"d"}},{"op":"PING"},{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"o2"}}]}}`,
	`{"id":"p","op":"PUT_MACHINE","params":{"machine":"m","version":2,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"E","to":"b","guard":"ctx.n > 2 && ctx.s == \"x\""}],"meta":{"z":1,"a":[1]}}}}` + "\n" + `{"id":"q","op":"CREATE_INSTANCE","params":{"machine":"m","version":2,"initial_ctx":{"n":3,"s":"x"}}}`,
	`{"id":"c","op":"COMPACT"}` + "\n" + `{"id":"w","op":"WAL_READ","params":{"from_offset":0,"limit":2}}` + "\n" + `{"id":"s","op":"WAL_STATS"}` + "\n" + `{"id":"l","op":"LIST_INSTANCES","params":{"machine":"order","limit":1,"offset":1}}`,
	`{"id":"e","op":"APPLY_EVENT","params":{"instance_id":"o1","event":"CANCEL","expected_state":"paid"}}` + "\n" + `{"id":"f","op":"APPLY_EVENT","params":{"instance_id":"o1","event":"CANCEL","expected_wal_offset":2}}`,
	`{"id":"x","op":"FLUSH_ALL"}` + "\n" + `{"id":"y","op":"LIST_MACHINES"}` + "\n" + `{"id":"z","op":"BYE"}` + "\n" + `{"id":"never","op":"PING"}`,
	`{"id":7,"op":"PING"}` + "\n" + `[1]` + "\n" + `{"id":"u","op":"NOPE","params":[]}` + "\n" + `{"id":"v","op":"GET_MACHINE","params":{"machine":"order","version":1.0}}` + "\n" + `{"id":"w"`,
	"{\"id\":\"bad\xff\",\"op\":\"PING\"}",
	`{"id":"w","op":"WATCH_ALL","params":{}}` + "\n" + `{"id":"a","op":"APPLY_EVENT","params":{"instance_id":"o1","event":"PAY"}}` + "\n" + `{"id":"u","op":"UNWATCH","params":{"subscription_id":"nope"}}`,
	`{"id":"i","op":"INFO"}` + "\n" + `{"id":"s","op":"SNAPSHOT_INSTANCE","params":{"instance_id":"o2"}}` + "\n" + `{"id":"d","op":"DELETE_INSTANCE","params":{"instance_id":"o2"}}` + "\n" + `{"id":"d2","op":"DELETE_INSTANCE","params":{"instance_id":"o2"}}`,
}

// fzPreamble sets up every run: a guarded machine and two instances.
var fzPreamble = []string{
	`{"id":"pre1","op":"PUT_MACHINE","params":` + orderMachine + `}`,
	`{"id":"pre2","op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"o1","initial_ctx":{"amount":5}}}`,
	`{"id":"pre3","op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"o2","initial_ctx":{"amount":5000,"tags":["a"]}}}`,
}

const fzMaxRequests = 64

// fzRequestConfig is the server FuzzRequest runs: syncing never (the
// close syncs) keeps it fast; small limits make them reachable.
func fzRequestConfig(dir string) config {
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.SegmentSizeMB = 1
	cfg.Fsync = fsyncPolicy{Kind: "never"}
	cfg.AllowFlushAll = true
	cfg.MaxMachineVersions = 3
	cfg.MaxBatchOps = 8
	cfg.CompactEnabled = false
	return cfg
}

// fzTempDir is a temporary directory on tmpfs when there is one: fuzz
// iterations fsync, and tmpfs makes that free.
func fzTempDir(tb testing.TB) string {
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	if base == "" {
		return tb.TempDir()
	}
	dir, err := os.MkdirTemp(base, "stmdb-fz-")
	if err != nil {
		return tb.TempDir()
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fzAttach runs a connection on one end of a pipe, as serve does for an
// accepted connection, and returns the client end.
func fzAttach(s *server) net.Conn {
	cli, srv := net.Pipe()
	c := s.newConn(srv)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	s.metrics.connOpened()
	go c.readLoop()
	go c.writeLoop()
	return cli
}

// fzExpect is what one payload must get back.
type fzExpect struct {
	id        string
	closeNext bool // malformed: error with id "" and then the connection closes
	op        string
}

// fzExpectFor derives, from the contract alone, what payload p must get.
func fzExpectFor(p []byte) fzExpect {
	if !utf8.Valid(p) || !json.Valid(p) {
		return fzExpect{closeNext: true}
	}
	var env map[string]json.RawMessage
	if json.Unmarshal(p, &env) != nil || env == nil {
		return fzExpect{}
	}
	var id, op string
	if json.Unmarshal(env["id"], &id) != nil || isJSONNull(env["id"]) || len(id) > 256 {
		return fzExpect{}
	}
	if json.Unmarshal(env["op"], &op) != nil {
		op = ""
	}
	return fzExpect{id: id, op: op}
}

var fzCodes = map[string]bool{
	"UNSUPPORTED_PROTOCOL": false, "BAD_REQUEST": false, "UNAUTHORIZED": false, "AUTH_FAILED": false,
	"NOT_FOUND": false, "MACHINE_NOT_FOUND": false, "MACHINE_VERSION_EXISTS": false,
	"MACHINE_VERSION_LIMIT_EXCEEDED": false, "INSTANCE_NOT_FOUND": false, "INSTANCE_EXISTS": false,
	"INVALID_TRANSITION": false, "GUARD_FAILED": false, "CONFLICT": false,
	"WAL_IO_ERROR": true, "INTERNAL_ERROR": true, "RATE_LIMITED": true,
}

// fzResponse is a response decoded strictly.
type fzResponse struct {
	id, status string
	result     json.RawMessage
	code       string
	walOffset  uint64
	hasMeta    bool
}

// fzCheckResponse decodes raw and checks the envelope shape of rcp.md §2.
func fzCheckResponse(raw []byte) (fzResponse, error) {
	var r fzResponse
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return r, fmt.Errorf("response is not a JSON object: %v", err)
	}
	for k := range top {
		switch k {
		case "type", "id", "status", "result", "error", "meta":
		default:
			return r, fmt.Errorf("unexpected response field %q", k)
		}
	}
	var typ string
	if json.Unmarshal(top["type"], &typ) != nil || typ != "response" {
		return r, fmt.Errorf("type is %s, want \"response\"", top["type"])
	}
	if json.Unmarshal(top["id"], &r.id) != nil || isJSONNull(top["id"]) {
		return r, fmt.Errorf("id is %s, want a string", top["id"])
	}
	if json.Unmarshal(top["status"], &r.status) != nil {
		return r, fmt.Errorf("status is %s", top["status"])
	}
	switch r.status {
	case "ok":
		if _, ok := top["error"]; ok {
			return r, errors.New("ok response carries an error")
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(top["result"], &obj) != nil || obj == nil {
			return r, fmt.Errorf("result %s is not an object", top["result"])
		}
		r.result = top["result"]
		if m, ok := top["meta"]; ok {
			var meta struct {
				WalOffset *uint64 `json:"wal_offset"`
			}
			if json.Unmarshal(m, &meta) != nil || meta.WalOffset == nil {
				return r, fmt.Errorf("meta %s has no integer wal_offset", m)
			}
			r.hasMeta, r.walOffset = true, *meta.WalOffset
		}
	case "error":
		if _, ok := top["result"]; ok {
			return r, errors.New("error response carries a result")
		}
		if _, ok := top["meta"]; ok {
			return r, errors.New("error response carries meta")
		}
		var e struct {
			Code      *string         `json:"code"`
			Message   *string         `json:"message"`
			Retryable *bool           `json:"retryable"`
			Details   json.RawMessage `json:"details"`
		}
		if err := json.Unmarshal(top["error"], &e); err != nil || e.Code == nil || e.Message == nil || e.Retryable == nil {
			return r, fmt.Errorf("error object %s lacks code, message or retryable", top["error"])
		}
		retry, known := fzCodes[*e.Code]
		if !known {
			return r, fmt.Errorf("unknown error code %q", *e.Code)
		}
		if retry != *e.Retryable {
			return r, fmt.Errorf("code %s has retryable=%v", *e.Code, *e.Retryable)
		}
		if strings.TrimSpace(*e.Message) == "" {
			return r, errors.New("empty error message")
		}
		if e.Details != nil {
			var d map[string]json.RawMessage
			if json.Unmarshal(e.Details, &d) != nil || d == nil {
				return r, fmt.Errorf("details %s is not an object", e.Details)
			}
		}
		r.code = *e.Code
	default:
		return r, fmt.Errorf("status %q", r.status)
	}
	return r, nil
}

// fzRunRequests is the body of FuzzRequest.
func fzRunRequests(t *testing.T, data []byte) {
	var payloads [][]byte
	for _, l := range fzPreamble {
		payloads = append(payloads, []byte(l))
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(l) > 0 && len(payloads) < fzMaxRequests {
			payloads = append(payloads, l)
		}
	}
	cfg := fzRequestConfig(fzTempDir(t))
	s, err := openServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.fatal = func(err error) { t.Errorf("fatal WAL error: %v", err) }
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	cli := fzAttach(s)
	defer cli.Close()
	fr := newFrameReader(cli)
	mode := modeBinary
	closed := false
	for i, p := range payloads {
		if mode == modeJSONL {
			p = bytes.TrimRight(p, "\r")
			if len(p) == 0 {
				continue // an empty line is no request
			}
		}
		want := fzExpectFor(p)
		cli.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := cli.Write(appendFrame(nil, mode, p)); err != nil {
			t.Fatalf("request %d %q: write: %v", i, p, err)
		}
		raw, err := fzNextResponse(fr)
		if err != nil {
			t.Fatalf("request %d %q: no response: %v", i, p, err)
		}
		r, err := fzCheckResponse(raw)
		if err != nil {
			t.Fatalf("request %d %q: bad response %s: %v", i, p, raw, err)
		}
		if r.id != want.id {
			t.Fatalf("request %d %q: response id %q, want %q: %s", i, p, r.id, want.id, raw)
		}
		if i < len(fzPreamble) && r.status != "ok" {
			t.Fatalf("preamble %d failed: %s", i, raw)
		}
		if r.hasMeta && (r.walOffset == 0 || r.walOffset > s.log.lastLSN()) {
			t.Fatalf("request %d %q: meta.wal_offset %d outside 1..%d", i, p, r.walOffset, s.log.lastLSN())
		}
		bye := r.status == "ok" && want.op == "BYE"
		if want.closeNext {
			if r.status != "error" || r.code != codeBadRequest {
				t.Fatalf("request %d %q: malformed payload got %s, want BAD_REQUEST", i, p, raw)
			}
		}
		if want.closeNext || bye {
			// The connection must close now, with nothing more sent.
			if extra, err := fzNextResponse(fr); err == nil {
				t.Fatalf("request %d %q: message after the close: %s", i, p, extra)
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("request %d %q: want the connection closed, got %v", i, p, err)
			}
			closed = true
			break
		}
		if r.status == "ok" && want.op == "HELLO" {
			var h struct {
				WireMode string `json:"wire_mode"`
			}
			json.Unmarshal(r.result, &h)
			switch h.WireMode {
			case "jsonl":
				mode = modeJSONL
			case "binary_json":
				mode = modeBinary
			default:
				t.Fatalf("HELLO answered wire_mode %q", h.WireMode)
			}
			fr.setMode(mode)
		}
	}
	_ = closed
	cli.Close()
	fzCheckInvariants(t, s)
	before := dumpState(s.st)
	if err := s.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s = nil
	s2, err := openServer(cfg, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.close()
	if diff := cmp.Diff(before, dumpState(s2.st)); diff != "" {
		t.Fatalf("state after restart differs (-live +recovered):\n%s", diff)
	}
	fzCheckInvariants(t, s2)
}

// fzNextResponse reads the next response, skipping (and checking the
// shape of) subscription events, which may arrive at any time.
func fzNextResponse(fr *frameReader) ([]byte, error) {
	for {
		raw, err := fr.next()
		if err != nil {
			return nil, err
		}
		var ev struct {
			Type string  `json:"type"`
			Sub  *string `json:"subscription_id"`
		}
		if json.Unmarshal(raw, &ev) == nil && ev.Type == "event" {
			if ev.Sub == nil {
				return nil, fmt.Errorf("event without a subscription_id: %s", raw)
			}
			continue
		}
		return raw, nil
	}
}

// fzCheckInvariants checks what must hold of any state the server reaches.
func fzCheckInvariants(t *testing.T, s *server) {
	t.Helper()
	st := s.st
	st.mu.RLock()
	defer st.mu.RUnlock()
	if last := s.log.lastLSN(); st.applied != last {
		t.Fatalf("state applied through %d but the WAL ends at %d", st.applied, last)
	}
	for name, vs := range st.machines {
		for v, mv := range vs {
			if mv.name != name || mv.version != v {
				t.Fatalf("machine %s v%d is filed as %s v%d", mv.name, mv.version, name, v)
			}
			if _, ok := mv.states[mv.initial]; !ok {
				t.Fatalf("machine %s v%d: initial %q not a state", name, v, mv.initial)
			}
			if mv.lsn == 0 || mv.lsn > st.applied {
				t.Fatalf("machine %s v%d: lsn %d outside 1..%d", name, v, mv.lsn, st.applied)
			}
		}
	}
	for id, in := range st.instances {
		if in.id != id {
			t.Fatalf("instance %q filed as %q", in.id, id)
		}
		if st.machines[in.mv.name][in.mv.version] != in.mv {
			t.Fatalf("instance %q references machine %s v%d that is not registered", id, in.mv.name, in.mv.version)
		}
		if _, ok := in.mv.states[in.state]; !ok {
			t.Fatalf("instance %q is in state %q, not a state of its machine", id, in.state)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(in.ctx, &obj) != nil || obj == nil {
			t.Fatalf("instance %q: ctx %s is not an object", id, in.ctx)
		}
		if in.lastLSN == 0 || in.lastLSN > st.applied {
			t.Fatalf("instance %q: last_wal_offset %d outside 1..%d", id, in.lastLSN, st.applied)
		}
		if in.createdAt > in.updatedAt {
			t.Fatalf("instance %q: created_at %d after updated_at %d", id, in.createdAt, in.updatedAt)
		}
	}
	st.idem.each(func(k idemKey, e *idemEntry) bool {
		if !json.Valid(e.result) || e.lsn == 0 || e.lsn > st.applied {
			t.Fatalf("idempotency entry %v: result %s lsn %d", k, e.result, e.lsn)
		}
		return true
	})
	// The log is dense: every retained record is the previous one + 1.
	prev := uint64(0)
	if err := s.log.read(s.log.firstLSN(), func(r walRecord) bool {
		if prev != 0 && r.LSN != prev+1 {
			t.Errorf("WAL record %d follows %d", r.LSN, prev)
			return false
		}
		prev = r.LSN
		return true
	}); err != nil {
		t.Fatalf("reading the WAL: %v", err)
	}
	if prev != st.applied && prev != 0 {
		t.Fatalf("WAL ends at %d, state applied %d", prev, st.applied)
	}
}
