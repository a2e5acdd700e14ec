package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var cliUpdate = flag.Bool("update", false, "rewrite testdata/cli/*.golden from the CLI's output")

// cliCase is one command line run by a golden test.
type cliCase struct {
	args   []string
	stdin  string
	mask   []string // extra regexps whose matches become <masked>
	merged bool     // stdout and stderr in one stream, to keep their order
}

// cliHarness runs command lines against one server and records a
// transcript for a golden file.
type cliHarness struct {
	t      *testing.T
	ts     *testServer
	tmp    string
	prompt bool
	env    map[string]string // environment besides RSTMDB_ADDR
	out    bytes.Buffer
}

func newCLIHarness(t *testing.T, mod func(*config)) *cliHarness {
	return &cliHarness{t: t, ts: startServer(t, mod), tmp: t.TempDir()}
}

// run executes one case and returns stdout, stderr and the exit status.
func (h *cliHarness) run(ctx context.Context, c cliCase) (string, string, int) {
	var stdout, stderr bytes.Buffer
	var errw io.Writer = &stderr
	if c.merged {
		errw = &stdout
	}
	env := &cliEnv{ctx: ctx, stdin: strings.NewReader(c.stdin), stdout: &stdout, stderr: errw, prompt: h.prompt,
		getenv: func(k string) string {
			if k == "RSTMDB_ADDR" {
				return h.ts.addr
			}
			return h.env[k]
		}}
	code := cliRun(env, c.args)
	return stdout.String(), stderr.String(), code
}

// cliMasks make outputs deterministic: generated ids, times, counters.
var cliMasks = []struct {
	re   *regexp.Regexp
	repl string
}{
	// Same widths as what they replace, so that tables stay aligned.
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`), "00000000-0000-4000-8000-000000000000"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`), "2000-01-01T00:00:00.000Z"},
	{regexp.MustCompile(`"(created_at|updated_at|ts)":\d+`), `"$1":<ms>`},
	// Counters and sizes that depend on the server, not on the client.
	{regexp.MustCompile(`((io_stats\.\w+|total_size_bytes): +|"(bytes_read|bytes_written|fsyncs|reads|writes|total_size_bytes)":)\d+`), "$1<n>"},
	{regexp.MustCompile(`(features: +).*`), "$1<features>"},
	{regexp.MustCompile(`"features":\[[^\]]*\]`), `"features":<features>`},
}

func (h *cliHarness) mask(s string, extra []string) string {
	s = strings.ReplaceAll(s, h.tmp, "$TMP")
	s = strings.ReplaceAll(s, h.ts.addr, "$ADDR")
	for _, m := range cliMasks {
		s = m.re.ReplaceAllString(s, m.repl)
	}
	for _, e := range extra {
		s = regexp.MustCompile(e).ReplaceAllString(s, "<masked>")
	}
	return s
}

// step runs a case and appends it to the transcript.
func (h *cliHarness) step(c cliCase) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stdout, stderr, code := h.run(ctx, c)
	h.record(c, stdout, stderr, code)
}

func (h *cliHarness) record(c cliCase, stdout, stderr string, code int) {
	fmt.Fprintf(&h.out, "$ stmdb %s\n", h.mask(cliQuote(c.args), nil))
	if c.stdin != "" {
		fmt.Fprintf(&h.out, "--- stdin\n%s", h.mask(c.stdin, nil))
		if !strings.HasSuffix(c.stdin, "\n") {
			h.out.WriteString("\n")
		}
	}
	fmt.Fprintf(&h.out, "--- exit %d\n", code)
	if stdout != "" {
		fmt.Fprintf(&h.out, "--- stdout\n%s", h.mask(stdout, c.mask))
	}
	if stderr != "" {
		fmt.Fprintf(&h.out, "--- stderr\n%s", h.mask(stderr, c.mask))
	}
	h.out.WriteString("\n")
}

// cliQuote renders args for the transcript, quoting where a shell would.
func cliQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"{}[]$*?;&|<>()\\#") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// golden compares the transcript with testdata/cli/name.golden.
func (h *cliHarness) golden(name string) {
	h.t.Helper()
	cliGolden(h.t, name, h.out.String())
}

func cliGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "cli", name+".golden")
	if *cliUpdate {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestCLI -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got); go test -run TestCLI -update refreshes it:\n%s", path, diff)
	}
}

// writeFile writes a file in the harness's temporary directory.
func (h *cliHarness) writeFile(name, content string) string {
	h.t.Helper()
	p := filepath.Join(h.tmp, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

const cliOrderDef = `{"states":["created","paid","shipped","cancelled"],"initial":"created","transitions":[` +
	`{"from":"created","event":"PAY","to":"paid","guard":"ctx.amount > 0"},` +
	`{"from":["created","paid"],"event":"CANCEL","to":"cancelled"},` +
	`{"from":"paid","event":"SHIP","to":"shipped"}]}`

// cliVerbCases is a session exercising every non-streaming verb.
func cliVerbCases(h *cliHarness) []cliCase {
	defFile := h.writeFile("order.json", cliOrderDef)
	batchFile := h.writeFile("batch.json", `[
 {"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"b-1","initial_ctx":{"amount":3}}},
 {"op":"APPLY_EVENT","params":{"instance_id":"b-1","event":"SHIP"}},
 {"op":"APPLY_EVENT","params":{"instance_id":"b-1","event":"PAY"}}
]`)
	return []cliCase{
		{args: []string{"ping"}},
		{args: []string{"info"}},
		{args: []string{"put-machine", "-n", "order", "-v", "1", cliOrderDef}},
		{args: []string{"put-machine", "-n", "order", "-v", "1", "@" + defFile}},
		{args: []string{"put-machine", "-n", "order", "-v", "2", "@-"}, stdin: cliOrderDef + "\n"},
		{args: []string{"get-machine", "-n", "order", "-v", "1"}},
		{args: []string{"list-machines"}},
		{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "order-1", "-c", `{"amount":5,"customer":"alice"}`}},
		{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "order-2", "-c", "@-", "--idempotency-key", "k1"}, stdin: `{"amount": 0}`},
		{args: []string{"create-instance", "-m", "order", "-V", "2"}},
		{args: []string{"get-instance", "order-1"}},
		{args: []string{"apply-event", "-i", "order-1", "-e", "PAY", "-p", `{"paid_by":"card"}`, "--event-id", "ev-1", "--expected-state", "created"}},
		{args: []string{"apply-event", "-i", "order-1", "-e", "SHIP", "--expected-offset", "5", "--idempotency-key", "ship-1"}},
		{args: []string{"get-instance", "order-1"}},
		{args: []string{"list-instances"}},
		{args: []string{"list-instances", "--machine", "order", "--state", "created", "--limit", "1"}},
		{args: []string{"list-instances", "--limit", "1", "--offset", "1"}},
		{args: []string{"batch", "@" + batchFile}},
		{args: []string{"batch", "--atomic", `[{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"b-2"}},{"op":"APPLY_EVENT","params":{"instance_id":"b-2","event":"CANCEL"}}]`}},
		{args: []string{"delete-instance", "order-2", "--idempotency-key", "del-1"}},
		{args: []string{"wal-read", "--from", "2", "--limit", "3"}},
		{args: []string{"wal-stats"}},
		{args: []string{"snapshot-instance", "order-1"}, mask: []string{`[0-9a-f]{64}`}},
		{args: []string{"compact", "--force"}},
		{args: []string{"describe-machine", "order", "1"}},
		{args: []string{"hash-token", "secret"}},
		{args: []string{"flush-all"}},
		{args: []string{"list-machines"}},
	}
}

func TestCLIVerbs(t *testing.T) {
	for _, mode := range []string{"human", "json"} {
		t.Run(mode, func(t *testing.T) {
			h := newCLIHarness(t, func(c *config) { c.AllowFlushAll = true })
			for _, c := range cliVerbCases(h) {
				if mode == "json" {
					c.args = append([]string{"--json"}, c.args...)
				}
				h.step(c)
			}
			h.golden("verbs_" + mode)
		})
	}
}

func TestCLIErrors(t *testing.T) {
	h := newCLIHarness(t, nil)
	for _, c := range []cliCase{
		{args: []string{"put-machine", "-n", "order", "-v", "1", cliOrderDef}},
		{args: []string{"get-instance", "nope"}},
		{args: []string{"get-instance", "nope", "--json"}},
		{args: []string{"apply-event", "-i", "nope", "-e", "PAY"}},
		{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "o-1"}},
		{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "o-1"}},
		{args: []string{"apply-event", "-i", "o-1", "-e", "SHIP"}},
		{args: []string{"apply-event", "-i", "o-1", "-e", "PAY"}},
		{args: []string{"apply-event", "-i", "o-1", "-e", "CANCEL", "--expected-state", "paid"}},
		{args: []string{"put-machine", "-n", "order", "-v", "1", `{"states":["x"],"initial":"x","transitions":[]}`}},
		{args: []string{"get-machine", "-n", "order", "-v", "9"}},
		{args: []string{"flush-all"}},
		{args: []string{"create-instance", "-m", "order", "-V", "1", "-c", `{"amount":`}},
		{args: []string{"apply-event", "-i", "o-1", "-e", "PAY", "-p", `[1,2]`}},
		{args: []string{"put-machine", "-n", "order", "-v", "3", "@" + filepath.Join(h.tmp, "missing.json")}},
		{args: []string{"batch", `{"mode":"atomic"}`}},
		{args: []string{"put-machine", "-n", "order", cliOrderDef}},
		{args: []string{"apply-event", "-i", "o-1"}},
		{args: []string{"get-instance"}},
		{args: []string{"get-instance", "a", "b"}},
		{args: []string{"list-instances", "--limit", "many"}},
		{args: []string{"ping", "--bogus"}},
		{args: []string{"describe-machine", "order", "1", "--format", "svg"}},
		{args: []string{"describe-machine", "order", "x"}},
		{args: []string{"frobnicate"}},
		{args: []string{"--json"}},
		{args: []string{"--nope", "ping"}},
	} {
		h.step(c)
	}
	h.golden("errors")
}

func TestCLIMain(t *testing.T) {
	ts := startServer(t, nil)
	var stdout, stderr bytes.Buffer
	code, ok := cliMain([]string{"--addr", ts.addr, "ping"}, &stdout, &stderr)
	if !ok || code != 0 || stdout.String() != "pong\n" || stderr.Len() != 0 {
		t.Errorf("ping: ok=%v code=%d stdout=%q stderr=%q", ok, code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	code, ok = cliMain([]string{"ping", "--json", "--addr=" + ts.addr}, &stdout, &stderr)
	if !ok || code != 0 || stdout.String() != "{\"pong\":true}\n" {
		t.Errorf("ping --json: ok=%v code=%d stdout=%q stderr=%q", ok, code, stdout.String(), stderr.String())
	}
	if _, ok := cliMain([]string{"frobnicate"}, &stdout, &stderr); ok {
		t.Error("cliMain claimed an unknown verb")
	}
	if _, ok := cliMain([]string{"serve"}, &stdout, &stderr); ok {
		t.Error("cliMain claimed serve")
	}
	stdout.Reset()
	code, ok = cliMain([]string{"hash-token", "secret"}, &stdout, &stderr)
	if want := "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n"; !ok || code != 0 || stdout.String() != want {
		t.Errorf("hash-token secret = %q (code %d), want %q", stdout.String(), code, want)
	}
	// A server that is not there: exit 1 with the dial error.
	ts.stop()
	stdout.Reset()
	stderr.Reset()
	code, _ = cliMain([]string{"--addr", ts.addr, "ping"}, &stdout, &stderr)
	if code != 1 || !strings.HasPrefix(stderr.String(), "stmdb: dial tcp") {
		t.Errorf("ping to a stopped server: code %d stderr %q", code, stderr.String())
	}
	ts.start()
}

func TestCLIHelp(t *testing.T) {
	h := newCLIHarness(t, nil)
	h.step(cliCase{args: []string{"--help"}})
	for _, v := range cliVerbs {
		h.step(cliCase{args: []string{v.name, "--help"}})
	}
	h.step(cliCase{args: []string{"ping", "-h"}})
	h.golden("help")
}

func TestCLIDescribeMachine(t *testing.T) {
	h := newCLIHarness(t, nil)
	odd := `{"states":["new order","say \"hi\"","a\\b","end","done;#1"],"initial":"new order","transitions":[` +
		`{"from":["new order","end"],"event":"GO: now","to":"say \"hi\"","guard":"ctx.name == \"x;y\" && ctx.n >= 2"},` +
		`{"from":"say \"hi\"","event":"STEP","to":"a\\b"},` +
		`{"from":"a\\b","event":"FIN","to":"done;#1"}]}`
	for _, c := range []cliCase{
		{args: []string{"put-machine", "-n", "order", "-v", "1", cliOrderDef}},
		{args: []string{"put-machine", "-n", "odd", "-v", "1", odd}},
		{args: []string{"describe-machine", "order", "1"}},
		{args: []string{"describe-machine", "order", "1", "--format", "dot"}},
		{args: []string{"describe-machine", "--format=dot", "odd", "1"}},
		{args: []string{"describe-machine", "odd", "1", "--format", "mermaid"}},
		{args: []string{"describe-machine", "order", "1", "--json", "--format", "mermaid"}},
		{args: []string{"describe-machine", "order", "2"}},
	} {
		h.step(c)
	}
	h.golden("describe")
}

func TestCLIRepl(t *testing.T) {
	script := strings.Join([]string{
		"# comments and blank lines are skipped",
		"",
		"ping",
		`put-machine -n order -v 1 '` + cliOrderDef + `'`,
		`create-instance -m order -V 1 -i "order 1" -c '{"amount": 5, "note": "it''s"}'`,
		`apply-event -i 'order 1' -e PAY -p "{\"by\": \"card\"}"`,
		"get-instance 'order 1' --json",
		"apply-event -i 'order 1' -e PAY",
		"list-instances",
		"bogus",
		"get-instance",
		"ping --addr 127.0.0.1:1",
		"repl",
		`echo 'unterminated`,
		"help",
		"help ping",
		"hash-token secret",
		"quit",
		"ping",
	}, "\n") + "\n"
	h := newCLIHarness(t, nil)
	h.step(cliCase{args: []string{"repl"}, stdin: script, merged: true})
	h.prompt = true
	h.step(cliCase{args: []string{"repl", "--json"}, stdin: "ping\nget-instance 'order 1'\nnope\nlist-machines\n", merged: true})
	h.golden("repl")
}

func TestReplSplit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "", want: nil},
		{in: "  a  b\tc ", want: []string{"a", "b", "c"}},
		{in: `a '{"x": 1}'`, want: []string{"a", `{"x": 1}`}},
		{in: `a "x \"y\" \\ \n"`, want: []string{"a", `x "y" \ \n`}},
		{in: `a\ b c`, want: []string{"a b", "c"}},
		{in: `x'y'"z"`, want: []string{"xyz"}},
		{in: `'' ""`, want: []string{"", ""}},
		{in: "a # comment", want: []string{"a"}},
		{in: "a#b", want: []string{"a#b"}},
		{in: "'open", err: true},
		{in: `"open`, err: true},
	} {
		got, err := replSplit(c.in)
		if (err != nil) != c.err {
			t.Errorf("replSplit(%q) error %v, want error %v", c.in, err, c.err)
			continue
		}
		if !c.err && !cmp.Equal(got, c.want) {
			t.Errorf("replSplit(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCLIParse(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	n := fs.String("n", "", "")
	b := fs.Bool("b", false, "")
	pos, err := cliParse(fs, []string{"p1", "-n", "v", "p2", "-b", "--", "-n"})
	if err != nil || *n != "v" || !*b || !cmp.Equal(pos, []string{"p1", "p2", "-n"}) {
		t.Errorf("cliParse: n=%q b=%v pos=%q err=%v", *n, *b, pos, err)
	}
}

// cliSyncBuf is a buffer safe for concurrent writes and reads.
type cliSyncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *cliSyncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *cliSyncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cliBackground is a command running on its own goroutine.
type cliBackground struct {
	h              *cliHarness
	c              cliCase
	stdout, stderr *cliSyncBuf
	cancel         context.CancelFunc
	done           chan int
}

// start runs c in the background with stdin (or c.stdin when nil).
func (h *cliHarness) start(c cliCase, stdin io.Reader) *cliBackground {
	ctx, cancel := context.WithCancel(context.Background())
	b := &cliBackground{h: h, c: c, stdout: &cliSyncBuf{}, stderr: &cliSyncBuf{}, cancel: cancel, done: make(chan int, 1)}
	if stdin == nil {
		stdin = strings.NewReader(c.stdin)
	}
	var errw io.Writer = b.stderr
	if c.merged {
		errw = b.stdout
	}
	env := &cliEnv{ctx: ctx, stdin: stdin, stdout: b.stdout, stderr: errw, prompt: h.prompt,
		getenv: func(k string) string {
			if k == "RSTMDB_ADDR" {
				return h.ts.addr
			}
			return h.env[k]
		}}
	go func() { b.done <- cliRun(env, c.args) }()
	h.t.Cleanup(func() {
		cancel()
		<-b.done
	})
	return b
}

// waitFor waits until buf contains want n times.
func (b *cliBackground) waitFor(buf *cliSyncBuf, want string, n int) {
	b.h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(buf.String(), want) < n {
		if time.Now().After(deadline) {
			b.h.t.Fatalf("%v: timed out waiting for %d× %q; stdout:\n%s\nstderr:\n%s", b.c.args, n, want, b.stdout, b.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop interrupts the command (as SIGINT does), waits for it and records
// it in the transcript.
func (b *cliBackground) stop() {
	b.h.t.Helper()
	b.cancel()
	b.finish()
}

// finish waits for the command to end by itself and records it.
func (b *cliBackground) finish() {
	b.h.t.Helper()
	var code int
	select {
	case code = <-b.done:
		b.done <- code // for the cleanup
	case <-time.After(10 * time.Second):
		b.h.t.Fatalf("%v did not end", b.c.args)
	}
	b.h.record(b.c, b.stdout.String(), b.stderr.String(), code)
}

func TestCLIWatch(t *testing.T) {
	h := newCLIHarness(t, nil)
	h.step(cliCase{args: []string{"put-machine", "-n", "order", "-v", "1", cliOrderDef}})
	h.step(cliCase{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "o-1", "-c", `{"amount":5}`}})

	w := h.start(cliCase{args: []string{"watch-instance", "o-1"}}, nil)
	w.waitFor(w.stderr, "watching", 1)
	h.step(cliCase{args: []string{"apply-event", "-i", "o-1", "-e", "PAY", "-p", `{"by":"card"}`}})
	h.step(cliCase{args: []string{"apply-event", "-i", "o-1", "-e", "SHIP"}})
	w.waitFor(w.stdout, "\n", 2)
	w.stop()

	w = h.start(cliCase{args: []string{"--json", "watch-all", "--machines", "order,other", "--to-states", "cancelled", "--events=CANCEL"}}, nil)
	w.waitFor(w.stderr, "watching", 1)
	h.step(cliCase{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "o-2", "-c", `{"amount":1}`}})
	h.step(cliCase{args: []string{"apply-event", "-i", "o-2", "-e", "PAY"}})
	h.step(cliCase{args: []string{"apply-event", "-i", "o-2", "-e", "CANCEL", "-p", `{"reason":"late"}`}})
	w.waitFor(w.stdout, "\n", 1)
	w.stop()
	for _, line := range strings.Split(strings.TrimSpace(w.stdout.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev["type"] != "event" {
			t.Errorf("watch-all --json line %q is not an event object (%v)", line, err)
		}
	}

	w = h.start(cliCase{args: []string{"watch-instance", "o-1", "--no-ctx", "--from-offset", "0"}}, nil)
	w.waitFor(w.stdout, "\n", 2)
	w.stop()

	h.step(cliCase{args: []string{"watch-instance", "nope"}})
	h.step(cliCase{args: []string{"unwatch", "sub-none"}})
	h.step(cliCase{args: []string{"--json", "unwatch", "sub-none"}})

	// The repl keeps its subscriptions and prints their events between
	// commands; unwatch ends one.
	h.step(cliCase{args: []string{"create-instance", "-m", "order", "-V", "1", "-i", "o-3", "-c", `{"amount":2}`}})
	pr, pw := io.Pipe()
	defer pw.Close()
	r := h.start(cliCase{args: []string{"repl"}, merged: true}, pr)
	io.WriteString(pw, "watch-instance o-3\n")
	r.waitFor(r.stdout, "subscription_id", 1)
	other := h.ts.dial()
	mustOK(t, other, "APPLY_EVENT", `{"instance_id":"o-3","event":"PAY","payload":{"n":1}}`)
	r.waitFor(r.stdout, "event o-3", 1)
	io.WriteString(pw, "watch-all --json --no-ctx --events CANCEL\n")
	r.waitFor(r.stdout, "subscription_id", 2)
	mustOK(t, other, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o-4"}`)
	mustOK(t, other, "APPLY_EVENT", `{"instance_id":"o-4","event":"CANCEL"}`)
	r.waitFor(r.stdout, `"type":"event"`, 1)
	sub := regexp.MustCompile(`subscription_id:\s+(sub-\S+)`).FindStringSubmatch(r.stdout.String())
	if sub == nil {
		t.Fatalf("no subscription id in %s", r.stdout)
	}
	io.WriteString(pw, "unwatch "+sub[1]+"\n")
	r.waitFor(r.stdout, "removed:", 1)
	mustOK(t, other, "APPLY_EVENT", `{"instance_id":"o-3","event":"SHIP"}`)
	io.WriteString(pw, "ping\n")
	r.waitFor(r.stdout, "pong", 1)
	io.WriteString(pw, "quit\n")
	r.finish()
	if n := strings.Count(r.stdout.String(), "event o-3"); n != 1 {
		t.Errorf("repl printed %d events of o-3, want 1 (none after unwatch)", n)
	}
	h.golden("watch")
}

func TestCLIAuth(t *testing.T) {
	h := newCLIHarness(t, func(c *config) {
		c.AuthRequired = true
		c.AuthTokenHashes = []string{"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}
	})
	for _, c := range []cliCase{
		{args: []string{"ping"}},
		{args: []string{"list-machines"}},
		{args: []string{"--token", "secret", "list-machines"}},
		{args: []string{"list-machines", "--token=wrong"}},
	} {
		h.step(c)
	}
	h.env = map[string]string{"RSTMDB_TOKEN": "secret"}
	h.step(cliCase{args: []string{"--json", "list-machines"}})
	h.step(cliCase{args: []string{"repl"}, stdin: "list-machines\n", merged: true})
	h.golden("auth")
}

// cliTestPKI writes a CA and a certificate it signs for 127.0.0.1 (usable
// by server and client) into dir and returns their paths.
func cliTestPKI(t *testing.T, dir string) (caPath, certPath, keyPath string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stmdb test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

func TestCLITLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := cliTestPKI(t, dir)
	h := newCLIHarness(t, func(c *config) {
		c.TLSEnabled, c.TLSCertPath, c.TLSKeyPath = true, cert, key
		c.TLSRequireClientCert, c.TLSClientCAPath = true, ca
	})
	ctx := context.Background()
	for _, c := range []struct {
		args     []string
		code     int
		stdout   string
		stderrRe string
	}{
		{args: []string{"--ca-cert", ca, "--client-cert", cert, "--client-key", key, "ping"}, stdout: "pong\n"},
		{args: []string{"ping", "--tls", "--insecure", "--client-cert", cert, "--client-key", key}, stdout: "pong\n"},
		{args: []string{"--tls", "--client-cert", cert, "--client-key", key, "ping"}, code: 1, stderrRe: `^stmdb: .*certificate`},
		{args: []string{"--ca-cert", ca, "ping"}, code: 1, stderrRe: `^stmdb: `},
		{args: []string{"--ca-cert", ca, "--client-cert", cert, "ping"}, code: 1, stderrRe: `^stmdb: TLS: a client certificate needs both`},
		{args: []string{"--ca-cert", filepath.Join(dir, "missing.pem"), "ping"}, code: 1, stderrRe: `^stmdb: TLS: open `},
	} {
		stdout, stderr, code := h.run(ctx, cliCase{args: c.args})
		if code != c.code || stdout != c.stdout || !regexp.MustCompile(c.stderrRe).MatchString(stderr) || (c.stderrRe == "" && stderr != "") {
			t.Errorf("%v: code %d stdout %q stderr %q; want code %d stdout %q stderr matching %q", c.args, code, stdout, stderr, c.code, c.stdout, c.stderrRe)
		}
	}
}

// TestCLIServerFull: over max_connections the server answers with an error
// frame for no request (empty id) and closes; the CLI prints that error as
// the reason, not as a response to the wrong request.
func TestCLIServerFull(t *testing.T) {
	h := newCLIHarness(t, func(c *config) { c.MaxConnections = 1 })
	held := h.ts.dial()
	mustOK(t, held, "PING", "") // the server has counted it
	const wantErr = "RATE_LIMITED: too many connections (limit 1); try again later\n  max_connections: 1\n"
	for _, args := range [][]string{
		{"ping"},
		{"--json", "list-machines"},
		{"--token", "secret", "ping"}, // refused before AUTH gets an answer
	} {
		stdout, stderr, code := h.run(context.Background(), cliCase{args: args})
		if diff := cmp.Diff([]any{1, "", wantErr}, []any{code, stdout, stderr}); diff != "" {
			t.Errorf("%v: exit status, stdout, stderr differ (-want +got):\n%s", args, diff)
		}
	}

	// The client on its own returns the same error.
	c, err := dialClient(h.ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	m, err := c.call("PING", nil)
	var re *rcpError
	if !errors.As(err, &re) || re.Code != codeRateLimited {
		t.Errorf("client.call over max_connections: message %+v, error %v; want a %s *rcpError", m, err, codeRateLimited)
	}

	// Once the held connection is gone there is room again.
	held.close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stdout, stderr, code := h.run(context.Background(), cliCase{args: []string{"ping"}})
		if code == 0 && stdout == "pong\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping after the held connection closed: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCLIWatchConnectionError: a connection-level error frame (empty id)
// that ends a running watch is printed as the reason it ended.
func TestCLIWatchConnectionError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		if _, err := newFrameReader(nc).next(); err != nil { // the WATCH_ALL request, id "1"
			return
		}
		ok := `{"type":"response","id":"1","status":"ok","result":{"subscription_id":"sub-1"}}`
		nc.Write(appendFrame(nil, modeBinary, []byte(ok)))
		e := newError(codeRateLimited, "frame budget exhausted")
		nc.Write(appendFrame(nil, modeBinary, appendErrorPayload(nil, nil, e)))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	env := &cliEnv{ctx: ctx, stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string {
			if k == "RSTMDB_ADDR" {
				return ln.Addr().String()
			}
			return ""
		}}
	code := cliRun(env, []string{"watch-all"})
	want := "watching all instances (subscription sub-1); interrupt to stop\nRATE_LIMITED: frame budget exhausted\n"
	if diff := cmp.Diff([]any{1, "", want}, []any{code, stdout.String(), stderr.String()}); diff != "" {
		t.Errorf("exit status, stdout, stderr differ (-want +got):\n%s", diff)
	}
}
