package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const httpTestMachine = `{"states":["created","paid","shipped","cancelled"],"initial":"created","transitions":[
 {"from":"created","event":"PAY","to":"paid","guard":"ctx.amount > 0"},
 {"from":"paid","event":"SHIP","to":"shipped"},
 {"from":["created","paid"],"event":"CANCEL","to":"cancelled"},
 {"from":"shipped","event":"NOTE","to":"shipped"}]}`

// httpEnv is a test server with its HTTP front door.
type httpEnv struct {
	t     *testing.T
	ts    *testServer
	web   *httptest.Server
	token string
}

func startHTTP(t *testing.T, mod func(*config)) *httpEnv {
	t.Helper()
	ts := startServer(t, mod)
	web := httptest.NewServer(ts.srv.httpHandler())
	t.Cleanup(web.Close)
	return &httpEnv{t: t, ts: ts, web: web}
}

// do sends a request and returns status, headers and body.
func (e *httpEnv) do(method, path, body string, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.web.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// ok sends a request that must succeed and decodes its JSON body.
func (e *httpEnv) ok(method, path, body string, hdr ...string) (map[string]any, http.Header) {
	e.t.Helper()
	st, h, b := e.do(method, path, body, hdr...)
	if st != 200 {
		e.t.Fatalf("%s %s: status %d: %s", method, path, st, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
	return m, h
}

// fail sends a request that must fail with status and code.
func (e *httpEnv) fail(status int, code, method, path, body string, hdr ...string) map[string]any {
	e.t.Helper()
	st, h, b := e.do(method, path, body, hdr...)
	var m struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Error == nil {
		e.t.Fatalf("%s %s: not an error body (%v): %s", method, path, err, b)
	}
	if st != status || m.Error["code"] != code {
		e.t.Fatalf("%s %s: got %d %v, want %d %s: %s", method, path, st, m.Error["code"], status, code, b)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return m.Error
}

func (e *httpEnv) setup() {
	e.t.Helper()
	e.ok("PUT", "/v1/machines/order/1", httpTestMachine)
	e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-1","initial_ctx":{"amount":5}}`)
}

func TestHTTPRoutes(t *testing.T) {
	e := startHTTP(t, nil)
	m, h := e.ok("PUT", "/v1/machines/order/1", httpTestMachine)
	if m["created"] != true || h.Get("X-Wal-Offset") != "1" {
		t.Errorf("PUT machine: %v, X-Wal-Offset %q", m, h.Get("X-Wal-Offset"))
	}
	m, _ = e.ok("PUT", "/v1/machines/order/1", httpTestMachine)
	if m["created"] != false {
		t.Errorf("re-put: %v", m)
	}
	m, _ = e.ok("GET", "/v1/machines/order/1", "")
	if m["checksum"] == "" || m["definition"].(map[string]any)["initial"] != "created" {
		t.Errorf("GET machine: %v", m)
	}
	m, _ = e.ok("GET", "/v1/machines", "")
	if diff := cmp.Diff([]any{map[string]any{"machine": "order", "versions": []any{1.0}}}, m["items"]); diff != "" {
		t.Errorf("list machines (-want +got):\n%s", diff)
	}
	// Create with the Idempotency-Key header: the retry is the same result.
	m, h = e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-1","initial_ctx":{"amount":5}}`, "Idempotency-Key", "k1")
	m2, h2 := e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-1","initial_ctx":{"amount":5}}`, "Idempotency-Key", "k1")
	if m["instance_id"] != "o-1" || m["state"] != "created" || h.Get("X-Wal-Offset") != "2" || h2.Get("X-Wal-Offset") != "2" || m2["instance_id"] != "o-1" {
		t.Errorf("create: %v %v, offsets %q %q", m, m2, h.Get("X-Wal-Offset"), h2.Get("X-Wal-Offset"))
	}
	e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-2"}`)
	m, _ = e.ok("GET", "/v1/instances/o-1", "")
	if m["state"] != "created" || m["ctx"].(map[string]any)["amount"] != 5.0 {
		t.Errorf("GET instance: %v", m)
	}
	m, h = e.ok("POST", "/v1/instances/o-1/events", `{"event":"PAY","payload":{"by":"card"},"expected_state":"created"}`)
	if m["from_state"] != "created" || m["to_state"] != "paid" || h.Get("X-Wal-Offset") != "4" {
		t.Errorf("apply: %v, offset %q", m, h.Get("X-Wal-Offset"))
	}
	m, _ = e.ok("GET", "/v1/instances?machine=order&state=paid", "")
	if items := m["instances"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != "o-1" && items[0].(map[string]any)["instance_id"] != "o-1" {
		t.Errorf("list by state: %v", m)
	}
	m, _ = e.ok("GET", "/v1/instances?limit=1&offset=1", "")
	if items := m["instances"].([]any); len(items) != 1 || m["has_more"] != false {
		t.Errorf("list page: %v", m)
	}
	m, h = e.ok("POST", "/v1/batch", `{"mode":"atomic","ops":[{"op":"APPLY_EVENT","params":{"instance_id":"o-1","event":"SHIP"}},{"op":"APPLY_EVENT","params":{"instance_id":"o-1","event":"NOTE","payload":{"n":1}}}]}`)
	if len(m["results"].([]any)) != 2 || h.Get("X-Wal-Offset") != "5" {
		t.Errorf("batch: %v %q", m, h.Get("X-Wal-Offset"))
	}
	m, _ = e.ok("GET", "/v1/instances/o-1/history", "")
	var events []string
	for _, it := range m["items"].([]any) {
		it := it.(map[string]any)
		ev, _ := it["event"].(string)
		events = append(events, fmt.Sprintf("%v:%s:%v", it["offset"], ev, it["source"]))
	}
	if diff := cmp.Diff([]string{"5:NOTE:batch", "5:SHIP:batch", "4:PAY:apply_event", "2::create_instance"}, events); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if m["complete"] != true || m["retained_from"] != 1.0 {
		t.Errorf("history: %v", m)
	}
	m, _ = e.ok("GET", "/v1/wal?from_offset=1&limit=2", "")
	if len(m["records"].([]any)) != 2 || m["next_offset"] != 3.0 {
		t.Errorf("wal read: %v", m)
	}
	m, _ = e.ok("GET", "/v1/wal/stats", "")
	if m["latest_offset"] != 5.0 {
		t.Errorf("wal stats: %v", m)
	}
	m, _ = e.ok("GET", "/v1/info", "")
	if m["server_name"] != "stmdb" {
		t.Errorf("info: %v", m)
	}
	m, h = e.ok("DELETE", "/v1/instances/o-2", "")
	if h.Get("X-Wal-Offset") != "6" {
		t.Errorf("delete: %v %q", m, h.Get("X-Wal-Offset"))
	}
	e.fail(404, "INSTANCE_NOT_FOUND", "GET", "/v1/instances/o-2", "")
	m, _ = e.ok("GET", "/v1/openapi.json", "")
	if m["openapi"] != "3.1.0" {
		t.Errorf("openapi: %v", m["openapi"])
	}
	st, h, b := e.do("GET", "/v1/machines/order/1/diagram.svg?highlight=shipped", "")
	if st != 200 || h.Get("Content-Type") != "image/svg+xml" {
		t.Fatalf("diagram: %d %s", st, b)
	}
	for _, want := range []string{`data-state="created"`, `data-state="cancelled"`, `class="node cur" data-state="shipped" data-count="1"`, `PAY [ctx.amount &gt; 0]`, `data-from="created" data-to="cancelled"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("diagram lacks %s:\n%s", want, b)
		}
	}
	st, h, b = e.do("GET", "/", "")
	if st != 200 || !strings.Contains(h.Get("Content-Type"), "text/html") || !strings.Contains(string(b), "stmdb") {
		t.Errorf("console: %d %s", st, h.Get("Content-Type"))
	}
}

// Every generated route is in the OpenAPI document, and the document's
// paths are all served.
func TestHTTPOpenAPIMatchesRoutes(t *testing.T) {
	b, err := consoleFS.ReadFile("console/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, rt := range httpRoutes {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if doc.Paths[path][strings.ToLower(method)] == nil {
			t.Errorf("route %s is not in openapi.json", rt.pattern)
		}
	}
}

func TestHTTPErrorMapping(t *testing.T) {
	e := startHTTP(t, nil)
	e.setup()
	e.fail(404, "INSTANCE_NOT_FOUND", "GET", "/v1/instances/nope", "")
	e.fail(404, "MACHINE_NOT_FOUND", "GET", "/v1/machines/nope/1", "")
	e.fail(404, "MACHINE_NOT_FOUND", "POST", "/v1/instances", `{"machine":"nope","version":1}`)
	e.fail(409, "INSTANCE_EXISTS", "POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-1"}`)
	e.fail(409, "MACHINE_VERSION_EXISTS", "PUT", "/v1/machines/order/1", `{"states":["a"],"initial":"a","transitions":[]}`)
	e.fail(409, "INVALID_TRANSITION", "POST", "/v1/instances/o-1/events", `{"event":"SHIP"}`)
	det := e.fail(409, "CONFLICT", "POST", "/v1/instances/o-1/events", `{"event":"PAY","expected_state":"paid"}`)
	if d := det["details"].(map[string]any); d["actual"] != "created" || det["retryable"] != false {
		t.Errorf("conflict details: %v", det)
	}
	e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"zero","initial_ctx":{"amount":0}}`)
	e.fail(412, "GUARD_FAILED", "POST", "/v1/instances/zero/events", `{"event":"PAY"}`)
	e.fail(400, "BAD_REQUEST", "POST", "/v1/instances/o-1/events", `{"event":`)
	e.fail(400, "BAD_REQUEST", "POST", "/v1/instances/o-1/events", `[1]`)
	e.fail(400, "BAD_REQUEST", "POST", "/v1/instances/o-1/events", `{}`)
	e.fail(400, "BAD_REQUEST", "POST", "/v1/instances/o-1/events", `{"event":"PAY","payload":[1]}`)
	e.fail(400, "BAD_REQUEST", "POST", "/v1/instances/o-1/events", `{"event":"PAY","instance_id":"other"}`)
	e.fail(400, "BAD_REQUEST", "GET", "/v1/machines/order/x", "")
	e.fail(400, "BAD_REQUEST", "GET", "/v1/instances?limit=5000", "")
	e.fail(400, "BAD_REQUEST", "GET", "/v1/wal", "")
	e.fail(400, "BAD_REQUEST", "POST", "/v1/batch", `{"mode":"sometimes","ops":[]}`)
	e.fail(400, "BAD_REQUEST", "PUT", "/v1/machines/x/1", "")
	e.fail(404, "NOT_FOUND", "GET", "/v1/nope", "")
	e.fail(400, "BAD_REQUEST", "POST", "/v1/instances", `{"machine":"order","version":1,"idempotency_key":"a"}`, "Idempotency-Key", "b")
	// An idempotency key reused with other params.
	e.ok("POST", "/v1/instances/o-1/events", `{"event":"PAY"}`, "Idempotency-Key", "pay-1")
	e.fail(409, "CONFLICT", "POST", "/v1/instances/o-1/events", `{"event":"CANCEL"}`, "Idempotency-Key", "pay-1")

	for code, want := range map[string]int{codeBadRequest: 400, codeUnsupportedProtocol: 400, codeUnauthorized: 401, codeAuthFailed: 401,
		codeNotFound: 404, codeMachineNotFound: 404, codeInstanceNotFound: 404, codeConflict: 409, codeInstanceExists: 409,
		codeMachineVersionExists: 409, codeMachineVersionLimit: 409, codeInvalidTransition: 409, codeGuardFailed: 412,
		codeRateLimited: 429, codeWALIOError: 503, codeInternalError: 500} {
		if got := httpStatus(code); got != want {
			t.Errorf("httpStatus(%s) = %d, want %d", code, got, want)
		}
	}
}

func TestHTTPBodyLimit(t *testing.T) {
	e := startHTTP(t, func(c *config) { c.MaxFrameBytes = 2048 })
	e.setup()
	big := `{"event":"PAY","payload":{"x":"` + strings.Repeat("a", 4096) + `"}}`
	e.fail(413, "BAD_REQUEST", "POST", "/v1/instances/o-1/events", big)
	// Without a Content-Length (chunked), the reader stops at the limit.
	req, _ := http.NewRequest("POST", e.web.URL+"/v1/instances/o-1/events", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked over the limit: %d", resp.StatusCode)
	}
	e.ok("POST", "/v1/instances/o-1/events", `{"event":"PAY"}`)
}

func TestHTTPAuth(t *testing.T) {
	sum := sha256.Sum256([]byte("s3cret"))
	e := startHTTP(t, func(c *config) {
		c.AuthRequired = true
		c.AuthTokenHashes = []string{hex.EncodeToString(sum[:])}
	})
	paths := map[string]string{"/v1/events": "GET", "/v1/openapi.json": "GET", "/v1/machines/m/1/diagram.svg": "GET", "/v1/nope": "GET"}
	var all []string
	for _, rt := range httpRoutes {
		method, path, _ := strings.Cut(rt.pattern, " ")
		all = append(all, method+" "+regexp.MustCompile(`\{[a-z_]+\}`).ReplaceAllString(path, "1"))
	}
	for p, m := range paths {
		all = append(all, m+" "+p)
	}
	for _, r := range all {
		method, path, _ := strings.Cut(r, " ")
		e.token = ""
		e.fail(401, "UNAUTHORIZED", method, path, "{}")
		e.token = "wrong"
		e.fail(401, "AUTH_FAILED", method, path, "{}")
		e.token = ""
		e.fail(401, "UNAUTHORIZED", method, path+"?token=s3cret&access_token=s3cret", "{}")
	}
	e.token = "s3cret"
	e.setup()
	e.ok("GET", "/v1/instances/o-1", "")
	// The console's files are public: they hold no data.
	e.token = ""
	if st, _, _ := e.do("GET", "/", ""); st != 200 {
		t.Errorf("console without a token: %d", st)
	}
}

func TestHTTPCORS(t *testing.T) {
	e := startHTTP(t, func(c *config) { c.HTTPCORSOrigins = "https://ok.example" })
	_, h, _ := e.do("OPTIONS", "/v1/info", "", "Origin", "https://ok.example", "Access-Control-Request-Method", "GET")
	if h.Get("Access-Control-Allow-Origin") != "https://ok.example" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("allowed preflight: %v", h)
	}
	_, h, _ = e.do("GET", "/v1/info", "", "Origin", "https://evil.example")
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin got CORS headers: %v", h)
	}
	off := startHTTP(t, nil)
	_, h, _ = off.do("GET", "/v1/info", "", "Origin", "https://ok.example")
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS off by default, got %v", h)
	}
}

// sseEvent is one event read from a stream.
type sseEvent struct {
	id   string
	data map[string]any
}

// sseStream reads events (and comments) from an event stream.
type sseStream struct {
	resp     *http.Response
	events   chan sseEvent
	comments chan string
}

func (e *httpEnv) sse(path string, hdr ...string) *sseStream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", e.web.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("events: %d %s", resp.StatusCode, b)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 100), comments: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.data != nil {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				s.comments <- line
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(line[6:]), &ev.data)
			}
		}
		close(s.events)
	}()
	return s
}

func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sseEvent{}
}

func TestHTTPEventsResume(t *testing.T) {
	e := startHTTP(t, nil)
	e.setup()
	e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-2","initial_ctx":{"amount":1}}`)
	one := e.sse("/v1/events?instance_id=o-1")
	all := e.sse("/v1/events?machine=order&to_state=paid,shipped")
	e.ok("POST", "/v1/instances/o-1/events", `{"event":"PAY"}`)
	e.ok("POST", "/v1/instances/o-2/events", `{"event":"PAY"}`)
	e.ok("POST", "/v1/instances/o-1/events", `{"event":"SHIP"}`)
	a, b := one.next(t), one.next(t)
	if a.data["event"] != "PAY" || b.data["event"] != "SHIP" || a.id != "4" || b.id != "6" || a.data["wal_offset"] != 4.0 {
		t.Fatalf("instance stream: %+v %+v", a, b)
	}
	if a.data["ctx"] == nil || a.data["instance_id"] != "o-1" {
		t.Errorf("event shape: %v", a.data)
	}
	var got []string
	for range 3 {
		ev := all.next(t)
		got = append(got, ev.id+":"+ev.data["instance_id"].(string)+":"+ev.data["to_state"].(string))
	}
	if diff := cmp.Diff([]string{"4:o-1:paid", "5:o-2:paid", "6:o-1:shipped"}, got); diff != "" {
		t.Errorf("filtered stream (-want +got):\n%s", diff)
	}
	// Cut the stream after the first event, write more, resume with
	// Last-Event-ID: the rest arrive once each, in order.
	all.resp.Body.Close()
	e.ok("POST", "/v1/instances/o-2/events", `{"event":"CANCEL"}`) // filtered out
	e.ok("POST", "/v1/batch", `{"mode":"atomic","ops":[{"op":"APPLY_EVENT","params":{"instance_id":"o-1","event":"NOTE"}},{"op":"APPLY_EVENT","params":{"instance_id":"o-1","event":"NOTE"}}]}`)
	re := e.sse("/v1/events?machine=order&to_state=paid,shipped", "Last-Event-ID", "4")
	got = nil
	for range 4 {
		ev := re.next(t)
		got = append(got, ev.id+":"+ev.data["instance_id"].(string)+":"+ev.data["event"].(string))
	}
	// The batch's two events share offset 8; only the last carries the id.
	if diff := cmp.Diff([]string{"5:o-2:PAY", "6:o-1:SHIP", ":o-1:NOTE", "8:o-1:NOTE"}, got); diff != "" {
		t.Errorf("resumed stream (-want +got):\n%s", diff)
	}
	select {
	case ev := <-re.events:
		t.Errorf("duplicate or extra event: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
	e.fail(404, "INSTANCE_NOT_FOUND", "GET", "/v1/events?instance_id=nope", "")
	e.fail(400, "BAD_REQUEST", "GET", "/v1/events", "", "Last-Event-ID", "x")
}

func TestHTTPEventsHeartbeat(t *testing.T) {
	old := sseHeartbeat
	sseHeartbeat = 20 * time.Millisecond
	t.Cleanup(func() { sseHeartbeat = old })
	e := startHTTP(t, nil)
	s := e.sse("/v1/events")
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-s.comments:
			if c == ": heartbeat" {
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat")
		}
	}
}

func TestHTTPEventsOldOffset(t *testing.T) {
	e := startHTTP(t, nil)
	e.setup()
	for range 3 {
		e.ok("POST", "/v1/instances/o-1/events", `{"event":"CANCEL"}`)
		break
	}
	if _, err := e.ts.srv.compact(); err != nil {
		t.Fatal(err)
	}
	e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-9"}`)
	if _, err := e.ts.srv.compact(); err != nil {
		t.Fatal(err)
	}
	if e.ts.srv.log.firstLSN() > 1 {
		det := e.fail(400, "BAD_REQUEST", "GET", "/v1/events?from_offset=0", "")
		if det["details"].(map[string]any)["oldest_offset"] == nil {
			t.Errorf("details: %v", det)
		}
	}
}
