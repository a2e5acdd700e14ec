package main

// The command-line client: `stmdb VERB [flags]` runs one request against a
// server and prints its result, readable by default or as one compact JSON
// object per line with --json. The same verbs run inside `stmdb repl`.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// cliDefaultAddr is where the client connects without --addr or RSTMDB_ADDR.
const cliDefaultAddr = "127.0.0.1:7401"

// cliEnv is everything one CLI invocation reads from and writes to.
type cliEnv struct {
	ctx    context.Context // cancelled on SIGINT
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	prompt bool // repl: print prompts (stdin is a terminal)
}

// cliMain runs a client verb. ok is false when args[0] is neither a client
// verb nor a client global flag, so the caller can report it.
func cliMain(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if !cliIsInvocation(args) {
		return 0, false
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	env := &cliEnv{ctx: ctx, stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, prompt: cliIsTerminal(os.Stdin)}
	return cliRun(env, args), true
}

// cliIsTerminal reports whether f is a character device (a terminal).
func cliIsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// cliIsInvocation reports whether args start with a client verb or a
// client global flag.
func cliIsInvocation(args []string) bool {
	if len(args) == 0 {
		return false
	}
	if cliLookup(args[0]) != nil {
		return true
	}
	_, ok := cliGlobalFlags[cliFlagName(args[0])]
	return ok && strings.HasPrefix(args[0], "-")
}

// cliUsage lists the client verbs.
func cliUsage(w io.Writer) {
	fmt.Fprintln(w, "client commands (stmdb VERB --help for flags and an example):")
	var lines []string
	for _, v := range cliVerbs {
		lines = append(lines, "  "+v.name+"\t"+v.summary)
	}
	cliTabs(w, lines)
	fmt.Fprintln(w, "\nglobal flags (before or after the verb):")
	cliPrintGlobals(w)
}

// cliRun runs one command line: global flags, a verb, its flags and args.
func cliRun(env *cliEnv, args []string) int {
	var pre []string
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-"; i++ {
		name := cliFlagName(args[i])
		if name == "help" || name == "h" {
			cliUsage(env.stdout)
			return 0
		}
		isBool, ok := cliGlobalFlags[name]
		if !ok {
			fmt.Fprintf(env.stderr, "stmdb: unknown global flag %s\n", args[i])
			cliUsage(env.stderr)
			return 2
		}
		pre = append(pre, args[i])
		if !isBool && !strings.Contains(args[i], "=") && i+1 < len(args) {
			i++
			pre = append(pre, args[i])
		}
	}
	if i == len(args) {
		fmt.Fprintln(env.stderr, "stmdb: missing command")
		cliUsage(env.stderr)
		return 2
	}
	v := cliLookup(args[i])
	if v == nil {
		fmt.Fprintf(env.stderr, "stmdb: unknown command %q\n", args[i])
		cliUsage(env.stderr)
		return 2
	}
	sess := newCLISession(env)
	defer sess.close()
	return sess.exec(v, append(pre, args[i+1:]...), false)
}

// ---- options and flag parsing ----

// cliOptions are the global flags: where and how to connect, and --json.
type cliOptions struct {
	addr, token                   string
	tls, insecure                 bool
	caCert, clientCert, clientKey string
	json                          bool
}

// cliGlobalFlags maps each global flag name to whether it is boolean.
var cliGlobalFlags = map[string]bool{
	"addr": false, "token": false, "tls": true, "ca-cert": false,
	"client-cert": false, "client-key": false, "insecure": true, "json": true,
}

func (o *cliOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "addr", o.addr, "server `ADDR`ess (env RSTMDB_ADDR)")
	fs.StringVar(&o.token, "token", o.token, "bearer `TOKEN` sent with AUTH after connecting (env RSTMDB_TOKEN)")
	fs.BoolVar(&o.tls, "tls", o.tls, "connect with TLS")
	fs.StringVar(&o.caCert, "ca-cert", o.caCert, "PEM `FILE` of CA certificates to trust (implies --tls)")
	fs.StringVar(&o.clientCert, "client-cert", o.clientCert, "PEM client certificate `FILE` (implies --tls)")
	fs.StringVar(&o.clientKey, "client-key", o.clientKey, "PEM client key `FILE` (implies --tls)")
	fs.BoolVar(&o.insecure, "insecure", o.insecure, "do not verify the server's certificate (implies --tls)")
	fs.BoolVar(&o.json, "json", o.json, "print results as compact JSON, one object per line")
}

// cliPrintGlobals prints the global flags, one a line.
func cliPrintGlobals(w io.Writer) {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var o cliOptions
	o.register(fs)
	cliPrintFlags(w, fs, nil)
}

// cliPrintFlags prints fs's flags except those in skip.
func cliPrintFlags(w io.Writer, fs *flag.FlagSet, skip map[string]bool) {
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		if skip[f.Name] {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		if arg != "" {
			arg = " " + strings.ToUpper(arg)
		}
		lines = append(lines, "  "+dash+f.Name+arg+"\t"+usage)
	})
	cliTabs(w, lines)
}

// cliFlagName is the name of a flag argument: "--addr=x" -> "addr".
func cliFlagName(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if k := strings.IndexByte(a, '='); k >= 0 {
		a = a[:k]
	}
	return a
}

// cliParse parses fs from args where flags and positional arguments may
// be mixed in any order ("--" ends the flags); it returns the positionals.
func cliParse(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		if strings.Contains(a, "=") {
			continue
		}
		f := fs.Lookup(cliFlagName(a))
		if f == nil {
			continue // fs.Parse reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if err := fs.Parse(flags); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &cliUsageError{err.Error()}
	}
	return append(fs.Args(), pos...), nil
}

// cliList is a flag holding a list of strings: comma-separated, repeatable.
type cliList []string

func (l *cliList) String() string { return strings.Join(*l, ",") }

func (l *cliList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// ---- errors ----

// cliUsageError is a mistake on the command line: exit status 2.
type cliUsageError struct{ msg string }

func (e *cliUsageError) Error() string { return e.msg }

func cliUsagef(format string, args ...any) error {
	return &cliUsageError{fmt.Sprintf(format, args...)}
}

// cliExitError ends a verb with a status and no further message.
type cliExitError struct{ code int }

func (e *cliExitError) Error() string { return "exit status " + strconv.Itoa(e.code) }

// cliWriteError prints err in the client's error format.
func cliWriteError(w io.Writer, err error) {
	var re *rcpError
	if errors.As(err, &re) {
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s: %s\n", re.Code, re.Message)
		for _, k := range cliSortedKeys(re.Details) {
			fmt.Fprintf(&b, "  %s: %s\n", k, cliScalar(re.Details[k]))
		}
		w.Write(b.Bytes())
		return
	}
	fmt.Fprintf(w, "stmdb: %v\n", err)
}

// cliScalar renders a decoded JSON value: strings bare, the rest as JSON.
func cliScalar(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// ---- session: one connection shared by the commands it runs ----

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

// ---- commands ----

// cliVerb is one client command.
type cliVerb struct {
	name    string
	args    string // synopsis after the verb
	summary string
	example string
	// setup defines the verb's flags on x.fs and returns its body, which
	// gets the positional arguments.
	setup func(x *cliCmd) func(args []string) error
}

// synopsis is the verb's usage line.
func (v *cliVerb) synopsis() string {
	return strings.TrimSpace("stmdb " + v.name + " " + v.args)
}

// cliCmd is one running command.
type cliCmd struct {
	sess *cliSession
	verb *cliVerb
	fs   *flag.FlagSet
	opts cliOptions
	out  bytes.Buffer // stdout, written in one piece when the verb ends
}

func (x *cliCmd) help(w io.Writer) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "usage: %s\n\n%s\n", x.verb.synopsis(), x.verb.summary)
	skip := map[string]bool{}
	for k := range cliGlobalFlags {
		skip[k] = true
	}
	own := 0
	x.fs.VisitAll(func(f *flag.Flag) {
		if !skip[f.Name] {
			own++
		}
	})
	if own > 0 {
		b.WriteString("\nflags:\n")
		cliPrintFlags(&b, x.fs, skip)
	}
	b.WriteString("\nglobal flags: --addr ADDR --token TOKEN --tls --ca-cert FILE --client-cert FILE\n")
	b.WriteString("              --client-key FILE --insecure --json (see stmdb --help)\n")
	fmt.Fprintf(&b, "\nexample:\n  %s\n", x.verb.example)
	w.Write(b.Bytes())
}

// finish reports err and turns it into an exit status.
func (x *cliCmd) finish(err error) int {
	if err == nil {
		return 0
	}
	stderr := x.sess.env.stderr
	var ue *cliUsageError
	var xe *cliExitError
	switch {
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "stmdb %s: %s\nusage: %s\nrun 'stmdb %s --help' for details\n", x.verb.name, ue.msg, x.verb.synopsis(), x.verb.name)
		return 2
	case x.sess.env.ctx.Err() != nil:
		fmt.Fprintln(stderr, "stmdb: interrupted")
		return 130
	}
	cliWriteError(stderr, err)
	return 1
}

// nargs checks the number of positional arguments.
func (x *cliCmd) nargs(args []string, names ...string) error {
	if len(args) < len(names) {
		return cliUsagef("missing %s", names[len(args)])
	}
	if len(args) > len(names) {
		return cliUsagef("unexpected argument %q", args[len(names)])
	}
	return nil
}

// required checks that each named flag was given.
func (x *cliCmd) required(names ...string) error {
	set := map[string]bool{}
	x.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, n := range names {
		if !set[n] {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			return cliUsagef("missing required flag %s%s", dash, n)
		}
	}
	return nil
}

// isSet reports whether the flag was given.
func (x *cliCmd) isSet(name string) bool {
	set := false
	x.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// jsonArg reads a JSON argument: inline, @path, or @- for stdin.
func (x *cliCmd) jsonArg(what, s string) (json.RawMessage, error) {
	b := []byte(s)
	if strings.HasPrefix(s, "@") {
		var err error
		if s == "@-" {
			b, err = io.ReadAll(x.sess.env.stdin)
		} else {
			b, err = os.ReadFile(s[1:])
		}
		if err != nil {
			return nil, cliUsagef("%s: %v", what, err)
		}
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, cliUsagef("%s: invalid JSON: %v", what, err)
	}
	var c bytes.Buffer
	json.Compact(&c, b)
	return c.Bytes(), nil
}

// jsonObjectArg is jsonArg for arguments that must be JSON objects.
func (x *cliCmd) jsonObjectArg(what, s string) (json.RawMessage, error) {
	b, err := x.jsonArg(what, s)
	if err == nil && b[0] != '{' {
		err = cliUsagef("%s: must be a JSON object", what)
	}
	return b, err
}

// call sends one request and returns its result; an error response is
// returned as an *rcpError. onResult, when not nil, runs on the result
// before any message that follows it is handled.
func (x *cliCmd) call(op string, params any, onResult func(json.RawMessage)) (json.RawMessage, error) {
	c, err := x.sess.connect()
	if err != nil {
		return nil, err
	}
	m, err := c.call(op, params, onResult)
	if err != nil {
		return nil, err
	}
	if e := m.rcpErr(); e != nil {
		return nil, e
	}
	return m.Result, nil
}

// do is call plus printing: --json prints the result, otherwise human
// renders it.
func (x *cliCmd) do(op string, params any, human func(res json.RawMessage) error) error {
	res, err := x.call(op, params, nil)
	if err != nil {
		return err
	}
	return x.print(res, human)
}

func (x *cliCmd) print(res json.RawMessage, human func(res json.RawMessage) error) error {
	if x.opts.json {
		x.printJSON(res)
		return nil
	}
	return human(res)
}

// printJSON prints one compact JSON value on its own line.
func (x *cliCmd) printJSON(b []byte) {
	if err := json.Compact(&x.out, b); err != nil {
		x.out.Write(b)
	}
	x.out.WriteByte('\n')
}

// kv prints a result object as aligned "key: value" lines: keys in order
// first, then the rest sorted. Objects named in flatten print their fields
// as "key.field".
func (x *cliCmd) kv(res json.RawMessage, order []string, flatten ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(res, &m); err != nil {
		return fmt.Errorf("unexpected result %s", res)
	}
	type row struct{ k, v string }
	var rows []row
	for _, k := range cliKeyOrder(m, order) {
		if cliContains(flatten, k) {
			var sub map[string]json.RawMessage
			if json.Unmarshal(m[k], &sub) == nil {
				for _, sk := range cliSortedKeys(sub) {
					rows = append(rows, row{k + "." + sk, cliValue(sk, sub[sk])})
				}
				continue
			}
		}
		rows = append(rows, row{k, cliValue(k, m[k])})
	}
	w := 0
	for _, r := range rows {
		w = max(w, len(r.k))
	}
	for _, r := range rows {
		fmt.Fprintf(&x.out, "%-*s %s\n", w+1, r.k+":", r.v)
	}
	return nil
}

// cliKeyOrder is order's keys present in m, then m's other keys sorted.
func cliKeyOrder(m map[string]json.RawMessage, order []string) []string {
	var keys []string
	for _, k := range order {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
		}
	}
	for _, k := range cliSortedKeys(m) {
		if !cliContains(order, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func cliContains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// cliValue renders one JSON value for humans: strings bare, lists of
// strings comma-separated, *_at milliseconds as UTC times, the rest as
// compact JSON.
func cliValue(key string, raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	switch t := v.(type) {
	case string:
		return t
	case float64:
		if strings.HasSuffix(key, "_at") {
			if ms, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return cliTime(ms)
			}
		}
		return string(raw)
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return cliCompact(raw)
			}
			parts = append(parts, s)
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ", ")
	case nil:
		return "-"
	}
	return cliCompact(raw)
}

// cliTime formats Unix milliseconds as a UTC timestamp.
func cliTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

func cliCompact(raw []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// table prints rows under a header, columns aligned.
func (x *cliCmd) table(header []string, rows [][]string) {
	lines := []string{strings.Join(header, "\t")}
	for _, r := range rows {
		lines = append(lines, strings.Join(r, "\t"))
	}
	cliTabs(&x.out, lines)
}

// cliTabs writes tab-separated lines to w with the columns aligned and no
// trailing spaces.
func cliTabs(w io.Writer, lines []string) {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintln(tw, l)
	}
	tw.Flush()
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l != "" {
			io.WriteString(w, strings.TrimRight(l, " \n")+"\n")
		}
	}
}

// cliLookup finds a verb by name.
func cliLookup(name string) *cliVerb {
	for _, v := range cliVerbs {
		if v.name == name {
			return v
		}
	}
	return nil
}

// cliVerbs is every client command, in help order. Filled by init to
// break the initialization cycle through repl.
var cliVerbs []*cliVerb

func init() {
	cliVerbs = []*cliVerb{
		{name: "ping", args: "", summary: "Checks that the server answers.", example: "stmdb ping", setup: cliPing},
		{name: "info", args: "", summary: "Shows the server's name, version, features and limits.", example: "stmdb info --json", setup: cliInfo},
		{name: "put-machine", args: "-n NAME -v VER DEF|@file", summary: "Registers a machine version from its JSON definition (inline, @file, or @- for stdin).",
			example: `stmdb put-machine -n order -v 1 '{"states":["new","paid"],"initial":"new","transitions":[{"from":"new","event":"PAY","to":"paid"}]}'`, setup: cliPutMachine},
		{name: "get-machine", args: "-n NAME -v VER", summary: "Shows a machine version's definition and checksum.", example: "stmdb get-machine -n order -v 1", setup: cliGetMachine},
		{name: "list-machines", args: "", summary: "Lists machines and their versions.", example: "stmdb list-machines", setup: cliListMachines},
		{name: "create-instance", args: "-m MACHINE -V VER [-i ID] [-c CTX] [--idempotency-key K]", summary: "Creates an instance in the machine's initial state (id generated when -i is not given).",
			example: `stmdb create-instance -m order -V 1 -i order-1 -c '{"amount":5}'`, setup: cliCreateInstance},
		{name: "get-instance", args: "ID", summary: "Shows an instance's state, context and offsets.", example: "stmdb get-instance order-1", setup: cliGetInstance},
		{name: "list-instances", args: "[--machine M] [--state S] [--limit N] [--offset N]", summary: "Lists instances ordered by id.", example: "stmdb list-instances --machine order --state paid --limit 20", setup: cliListInstances},
		{name: "delete-instance", args: "ID [--idempotency-key K]", summary: "Deletes an instance.", example: "stmdb delete-instance order-1", setup: cliDeleteInstance},
		{name: "apply-event", args: "-i ID -e EVENT [-p PAYLOAD] [--expected-state S] [--expected-offset N] [--event-id E] [--idempotency-key K]",
			summary: "Applies an event to an instance; the payload is merged into its context.", example: `stmdb apply-event -i order-1 -e PAY -p '{"paid_by":"card"}'`, setup: cliApplyEvent},
		{name: "batch", args: "[--atomic] OPS|@file", summary: "Runs several writes in one request. OPS is a JSON array of {\"op\",\"params\"} (or an object with \"ops\"); exit status 1 if any op failed.",
			example: "stmdb batch --atomic @ops.json", setup: cliBatch},
		{name: "watch-instance", args: "ID [--no-ctx] [--from-offset N]", summary: "Prints one instance's events as they happen, until interrupted.", example: "stmdb watch-instance order-1 --json | jq .to_state", setup: cliWatchInstance},
		{name: "watch-all", args: "[--machines a,b] [--events E,...] [--from-states S,...] [--to-states S,...] [--no-ctx] [--from-offset N]",
			summary: "Prints matching events of all instances as they happen, until interrupted.", example: "stmdb watch-all --machines order --to-states shipped --json", setup: cliWatchAll},
		{name: "unwatch", args: "SUBSCRIPTION_ID", summary: "Ends a subscription of this connection (useful in the repl).", example: "stmdb repl, then: unwatch sub-...", setup: cliUnwatch},
		{name: "wal-read", args: "[--from N] [--limit N]", summary: "Reads write-ahead log records from an offset.", example: "stmdb wal-read --from 1 --limit 10", setup: cliWalRead},
		{name: "wal-stats", args: "", summary: "Shows write-ahead log statistics.", example: "stmdb wal-stats", setup: cliWalStats},
		{name: "compact", args: "[--force]", summary: "Writes a snapshot and deletes the log segments it covers.", example: "stmdb compact --force", setup: cliCompactVerb},
		{name: "snapshot-instance", args: "ID", summary: "Writes one instance's state to a snapshot file on the server.", example: "stmdb snapshot-instance order-1", setup: cliSnapshotInstance},
		{name: "flush-all", args: "", summary: "Removes all machines and instances (only if the server allows it).", example: "stmdb flush-all", setup: cliFlushAll},
		{name: "hash-token", args: "TOKEN", summary: "Prints the SHA-256 (lowercase hex) of a token, as configured in auth.token_hashes. Needs no server.", example: "stmdb hash-token s3cret", setup: cliHashToken},
		{name: "describe-machine", args: "NAME VER [--format mermaid|dot]", summary: "Renders a machine version as a state diagram (Mermaid stateDiagram-v2 or Graphviz dot).",
			example: "stmdb describe-machine order 1 --format dot | dot -Tsvg > order.svg", setup: cliDescribeMachine},
		{name: "repl", args: "", summary: "Reads commands from stdin on one connection; events of its subscriptions print as they arrive.", example: "stmdb repl --addr 127.0.0.1:7401", setup: replSetup},
	}
}

func cliPing(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("PING", nil, func(json.RawMessage) error {
			x.out.WriteString("pong\n")
			return nil
		})
	}
}

func cliInfo(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("INFO", nil, func(res json.RawMessage) error {
			return x.kv(res, []string{"server_name", "server_version", "protocol_version", "features"})
		})
	}
}

func cliPutMachine(x *cliCmd) func([]string) error {
	name := x.fs.String("n", "", "machine `NAME` (required)")
	ver := x.fs.Uint("v", 0, "machine `VER`sion, 1 or more (required)")
	return func(args []string) error {
		if err := x.required("n", "v"); err != nil {
			return err
		}
		if err := x.nargs(args, "DEF"); err != nil {
			return err
		}
		def, err := x.jsonObjectArg("DEF", args[0])
		if err != nil {
			return err
		}
		p := map[string]any{"machine": *name, "version": *ver, "definition": def}
		return x.do("PUT_MACHINE", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"machine", "version", "created", "stored_checksum"})
		})
	}
}

// cliMachineDef is a machine definition as GET_MACHINE returns it.
type cliMachineDef struct {
	States      []string `json:"states"`
	Initial     string   `json:"initial"`
	Transitions []struct {
		From  []string `json:"from"`
		Event string   `json:"event"`
		To    string   `json:"to"`
		Guard string   `json:"guard"`
	} `json:"transitions"`
	Meta json.RawMessage `json:"meta"`
}

// cliGetMachineDef fetches and decodes a machine version.
func (x *cliCmd) getMachine(name string, ver uint) (json.RawMessage, *cliMachineDef, string, error) {
	res, err := x.call("GET_MACHINE", map[string]any{"machine": name, "version": ver}, nil)
	if err != nil {
		return nil, nil, "", err
	}
	var r struct {
		Checksum   string        `json:"checksum"`
		Definition cliMachineDef `json:"definition"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, nil, "", fmt.Errorf("unexpected GET_MACHINE result: %v", err)
	}
	return res, &r.Definition, r.Checksum, nil
}

func cliGetMachine(x *cliCmd) func([]string) error {
	name := x.fs.String("n", "", "machine `NAME` (required)")
	ver := x.fs.Uint("v", 0, "machine `VER`sion (required)")
	return func(args []string) error {
		if err := x.required("n", "v"); err != nil {
			return err
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		res, def, sum, err := x.getMachine(*name, *ver)
		if err != nil {
			return err
		}
		if x.opts.json {
			x.printJSON(res)
			return nil
		}
		fmt.Fprintf(&x.out, "machine:  %s\nversion:  %d\nchecksum: %s\ninitial:  %s\nstates:   %s\n", *name, *ver, sum, def.Initial, strings.Join(def.States, ", "))
		if len(def.Meta) > 0 && string(def.Meta) != "null" {
			fmt.Fprintf(&x.out, "meta:     %s\n", cliCompact(def.Meta))
		}
		x.out.WriteString("transitions:\n")
		if len(def.Transitions) == 0 {
			x.out.WriteString("  (none)\n")
		}
		for _, t := range def.Transitions {
			fmt.Fprintf(&x.out, "  %s --%s--> %s", strings.Join(t.From, ","), t.Event, t.To)
			if t.Guard != "" {
				fmt.Fprintf(&x.out, "  [%s]", t.Guard)
			}
			x.out.WriteByte('\n')
		}
		return nil
	}
}

func cliListMachines(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("LIST_MACHINES", nil, func(res json.RawMessage) error {
			var r struct {
				Items []struct {
					Machine  string   `json:"machine"`
					Versions []uint32 `json:"versions"`
				} `json:"items"`
			}
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Items))
			for _, it := range r.Items {
				vs := make([]string, len(it.Versions))
				for i, v := range it.Versions {
					vs[i] = strconv.FormatUint(uint64(v), 10)
				}
				rows = append(rows, []string{it.Machine, strings.Join(vs, ",")})
			}
			x.table([]string{"MACHINE", "VERSIONS"}, rows)
			fmt.Fprintf(&x.out, "(%s)\n", cliCount(len(rows), "machine"))
			return nil
		})
	}
}

func cliCreateInstance(x *cliCmd) func([]string) error {
	machine := x.fs.String("m", "", "`MACHINE` name (required)")
	ver := x.fs.Uint("V", 0, "machine `VER`sion (required)")
	id := x.fs.String("i", "", "instance `ID` (default: a generated UUID)")
	ctx := x.fs.String("c", "", "initial context `CTX`: a JSON object, @file or @- (default {})")
	key := x.fs.String("idempotency-key", "", "idempotency `KEY`: a retry with the same key returns the first result")
	return func(args []string) error {
		if err := x.required("m", "V"); err != nil {
			return err
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{"machine": *machine, "version": *ver}
		if x.isSet("i") {
			p["instance_id"] = *id
		}
		if x.isSet("c") {
			c, err := x.jsonObjectArg("-c", *ctx)
			if err != nil {
				return err
			}
			p["initial_ctx"] = c
		}
		if x.isSet("idempotency-key") {
			p["idempotency_key"] = *key
		}
		return x.do("CREATE_INSTANCE", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"instance_id", "state", "wal_offset"})
		})
	}
}

func cliGetInstance(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		return x.do("GET_INSTANCE", map[string]any{"instance_id": args[0]}, func(res json.RawMessage) error {
			fmt.Fprintf(&x.out, "instance_id:     %s\n", args[0])
			return x.kv(res, []string{"machine", "version", "state", "ctx", "last_event_id", "last_wal_offset", "created_at", "updated_at"})
		})
	}
}

func cliListInstances(x *cliCmd) func([]string) error {
	machine := x.fs.String("machine", "", "only instances of `MACHINE`")
	state := x.fs.String("state", "", "only instances in `STATE`")
	limit := x.fs.Uint("limit", 100, "at most `N` instances (max 1000)")
	offset := x.fs.Uint64("offset", 0, "skip the first `N` instances")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{}
		if x.isSet("machine") {
			p["machine"] = *machine
		}
		if x.isSet("state") {
			p["state"] = *state
		}
		if x.isSet("limit") {
			p["limit"] = *limit
		}
		if x.isSet("offset") {
			p["offset"] = *offset
		}
		return x.do("LIST_INSTANCES", p, func(res json.RawMessage) error {
			var r struct {
				HasMore   bool `json:"has_more"`
				Instances []struct {
					ID            string `json:"id"`
					Machine       string `json:"machine"`
					Version       uint32 `json:"version"`
					State         string `json:"state"`
					LastWalOffset uint64 `json:"last_wal_offset"`
					CreatedAt     int64  `json:"created_at"`
					UpdatedAt     int64  `json:"updated_at"`
				} `json:"instances"`
				Total uint64 `json:"total"`
			}
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Instances))
			for _, in := range r.Instances {
				rows = append(rows, []string{in.ID, in.Machine, strconv.FormatUint(uint64(in.Version), 10), in.State,
					strconv.FormatUint(in.LastWalOffset, 10), cliTime(in.UpdatedAt)})
			}
			x.table([]string{"ID", "MACHINE", "VERSION", "STATE", "LAST_WAL_OFFSET", "UPDATED_AT"}, rows)
			fmt.Fprintf(&x.out, "(%d of %d instances", len(rows), r.Total)
			if r.HasMore {
				fmt.Fprintf(&x.out, "; more with --offset %d", *offset+uint64(len(rows)))
			}
			x.out.WriteString(")\n")
			return nil
		})
	}
}

func cliDeleteInstance(x *cliCmd) func([]string) error {
	key := x.fs.String("idempotency-key", "", "idempotency `KEY`")
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		p := map[string]any{"instance_id": args[0]}
		if x.isSet("idempotency-key") {
			p["idempotency_key"] = *key
		}
		return x.do("DELETE_INSTANCE", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"instance_id", "deleted", "wal_offset"})
		})
	}
}

func cliApplyEvent(x *cliCmd) func([]string) error {
	id := x.fs.String("i", "", "instance `ID` (required)")
	event := x.fs.String("e", "", "`EVENT` name (required)")
	payload := x.fs.String("p", "", "`PAYLOAD` merged into the context: a JSON object, @file or @- (default {})")
	expState := x.fs.String("expected-state", "", "fail with CONFLICT unless the instance is in `STATE`")
	expOffset := x.fs.Uint64("expected-offset", 0, "fail with CONFLICT unless the instance's last_wal_offset is `N`")
	eventID := x.fs.String("event-id", "", "`ID` recorded as the instance's last_event_id")
	key := x.fs.String("idempotency-key", "", "idempotency `KEY`")
	return func(args []string) error {
		if err := x.required("i", "e"); err != nil {
			return err
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{"instance_id": *id, "event": *event}
		if x.isSet("p") {
			b, err := x.jsonObjectArg("-p", *payload)
			if err != nil {
				return err
			}
			p["payload"] = b
		}
		if x.isSet("expected-state") {
			p["expected_state"] = *expState
		}
		if x.isSet("expected-offset") {
			p["expected_wal_offset"] = *expOffset
		}
		if x.isSet("event-id") {
			p["event_id"] = *eventID
		}
		if x.isSet("idempotency-key") {
			p["idempotency_key"] = *key
		}
		return x.do("APPLY_EVENT", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"applied", "from_state", "to_state", "event_id", "wal_offset", "ctx"})
		})
	}
}

func cliBatch(x *cliCmd) func([]string) error {
	atomic := x.fs.Bool("atomic", false, "all ops apply or none does (default: best effort, one by one)")
	return func(args []string) error {
		if err := x.nargs(args, "OPS"); err != nil {
			return err
		}
		raw, err := x.jsonArg("OPS", args[0])
		if err != nil {
			return err
		}
		var ops json.RawMessage
		if raw[0] == '[' {
			ops = raw
		} else {
			var obj struct {
				Ops json.RawMessage `json:"ops"`
			}
			if json.Unmarshal(raw, &obj) != nil || len(obj.Ops) == 0 || obj.Ops[0] != '[' {
				return cliUsagef("OPS: want a JSON array of {\"op\",\"params\"} or an object with an \"ops\" array")
			}
			ops = obj.Ops
		}
		mode := "best_effort"
		if *atomic {
			mode = "atomic"
		}
		res, err := x.call("BATCH", map[string]any{"mode": mode, "ops": ops}, nil)
		if err != nil {
			return err
		}
		var r struct {
			Results []struct {
				Status string          `json:"status"`
				Result json.RawMessage `json:"result"`
				Error  *errorBody      `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return err
		}
		failed := 0
		rows := make([][]string, 0, len(r.Results))
		for i, s := range r.Results {
			detail := cliCompact(s.Result)
			if s.Status != "ok" {
				failed++
				if s.Error != nil {
					detail = s.Error.Code + ": " + s.Error.Message
				}
			}
			rows = append(rows, []string{strconv.Itoa(i), s.Status, detail})
		}
		if x.opts.json {
			x.printJSON(res)
		} else {
			x.table([]string{"#", "STATUS", "RESULT"}, rows)
			fmt.Fprintf(&x.out, "(%d ok, %d failed)\n", len(rows)-failed, failed)
		}
		if failed > 0 {
			return &cliExitError{1}
		}
		return nil
	}
}

// watch subscribes with op and params; outside the repl it then waits,
// printing events, until interrupted or the connection ends.
func (x *cliCmd) watch(op string, params map[string]any, what string) error {
	asJSON := x.opts.json
	res, err := x.call(op, params, func(res json.RawMessage) {
		var r struct {
			ID string `json:"subscription_id"`
		}
		json.Unmarshal(res, &r)
		x.sess.outMu.Lock()
		x.sess.subJSON[r.ID] = asJSON
		x.sess.outMu.Unlock()
	})
	if err != nil {
		return err
	}
	if x.sess.inREPL {
		return x.print(res, func(res json.RawMessage) error {
			return x.kv(res, []string{"subscription_id", "instance_id", "current_state", "current_wal_offset", "wal_offset"})
		})
	}
	var r struct {
		ID string `json:"subscription_id"`
	}
	json.Unmarshal(res, &r)
	fmt.Fprintf(x.sess.env.stderr, "watching %s (subscription %s); interrupt to stop\n", what, r.ID)
	c := x.sess.conn
	select {
	case <-x.sess.env.ctx.Done():
		return nil
	case <-c.done:
		if x.sess.env.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("connection lost: %v", c.err)
	}
}

func cliWatchInstance(x *cliCmd) func([]string) error {
	noCtx := x.fs.Bool("no-ctx", false, "leave the instance context out of events")
	from := x.fs.Uint64("from-offset", 0, "first replay the instance's events after WAL offset `N`")
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		p := map[string]any{"instance_id": args[0]}
		if *noCtx {
			p["include_ctx"] = false
		}
		if x.isSet("from-offset") {
			p["from_offset"] = *from
		}
		return x.watch("WATCH_INSTANCE", p, "instance "+args[0])
	}
}

func cliWatchAll(x *cliCmd) func([]string) error {
	var machines, events, fromStates, toStates cliList
	x.fs.Var(&machines, "machines", "only these `MACHINES` (comma-separated, repeatable)")
	x.fs.Var(&events, "events", "only these `EVENTS`")
	x.fs.Var(&fromStates, "from-states", "only transitions from these `STATES`")
	x.fs.Var(&toStates, "to-states", "only transitions to these `STATES`")
	noCtx := x.fs.Bool("no-ctx", false, "leave instance contexts out of events")
	from := x.fs.Uint64("from-offset", 0, "first replay matching events after WAL offset `N`")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{}
		for k, l := range map[string]cliList{"machines": machines, "events": events, "from_states": fromStates, "to_states": toStates} {
			if len(l) > 0 {
				p[k] = []string(l)
			}
		}
		if *noCtx {
			p["include_ctx"] = false
		}
		if x.isSet("from-offset") {
			p["from_offset"] = *from
		}
		return x.watch("WATCH_ALL", p, "all instances")
	}
}

func cliUnwatch(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "SUBSCRIPTION_ID"); err != nil {
			return err
		}
		return x.do("UNWATCH", map[string]any{"subscription_id": args[0]}, func(res json.RawMessage) error {
			return x.kv(res, []string{"subscription_id", "removed"})
		})
	}
}

func cliWalRead(x *cliCmd) func([]string) error {
	from := x.fs.Uint64("from", 0, "first WAL offset `N` to read (0 or 1: the oldest retained)")
	limit := x.fs.Uint("limit", 100, "at most `N` records (max 1000)")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{"from_offset": *from}
		if x.isSet("limit") {
			p["limit"] = *limit
		}
		return x.do("WAL_READ", p, func(res json.RawMessage) error {
			var r struct {
				NextOffset uint64 `json:"next_offset"`
				Records    []struct {
					Offset uint64                     `json:"offset"`
					Entry  map[string]json.RawMessage `json:"entry"`
				} `json:"records"`
			}
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Records))
			for _, rec := range r.Records {
				typ := cliValue("type", rec.Entry["type"])
				delete(rec.Entry, "type")
				ts := "-"
				if raw, ok := rec.Entry["ts"]; ok {
					ts = cliValue("ts_at", raw)
					delete(rec.Entry, "ts")
				}
				rows = append(rows, []string{strconv.FormatUint(rec.Offset, 10), ts, typ, cliMarshal(rec.Entry)})
			}
			x.table([]string{"OFFSET", "TIME", "TYPE", "ENTRY"}, rows)
			fmt.Fprintf(&x.out, "(%s; next_offset %d)\n", cliCount(len(rows), "record"), r.NextOffset)
			return nil
		})
	}
}

func cliWalStats(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("WAL_STATS", nil, func(res json.RawMessage) error {
			return x.kv(res, []string{"entry_count", "latest_offset", "segment_count", "total_size_bytes"}, "io_stats")
		})
	}
}

func cliCompactVerb(x *cliCmd) func([]string) error {
	force := x.fs.Bool("force", false, "also re-snapshot instances changed since their last snapshot")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("COMPACT", map[string]any{"force_snapshot": *force}, func(res json.RawMessage) error {
			return x.kv(res, nil)
		})
	}
}

func cliSnapshotInstance(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		return x.do("SNAPSHOT_INSTANCE", map[string]any{"instance_id": args[0]}, func(res json.RawMessage) error {
			return x.kv(res, []string{"instance_id", "snapshot_id", "wal_offset", "size_bytes", "checksum"})
		})
	}
}

func cliFlushAll(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("FLUSH_ALL", nil, func(res json.RawMessage) error {
			return x.kv(res, []string{"flushed", "machines_removed", "instances_removed"})
		})
	}
}

func cliHashToken(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "TOKEN"); err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(args[0]))
		h := hex.EncodeToString(sum[:])
		if x.opts.json {
			x.printJSON([]byte(cliMarshal(map[string]string{"token_hash": h})))
			return nil
		}
		x.out.WriteString(h + "\n")
		return nil
	}
}

func cliDescribeMachine(x *cliCmd) func([]string) error {
	format := x.fs.String("format", "mermaid", "diagram `FORMAT`: mermaid or dot")
	return func(args []string) error {
		if err := x.nargs(args, "NAME", "VER"); err != nil {
			return err
		}
		ver, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil || ver == 0 {
			return cliUsagef("VER: want a version number of 1 or more, got %q", args[1])
		}
		var render func(name string, ver uint, def *cliMachineDef) string
		switch *format {
		case "mermaid":
			render = diagramMermaid
		case "dot":
			render = diagramDot
		default:
			return cliUsagef("--format: want mermaid or dot, got %q", *format)
		}
		_, def, _, err := x.getMachine(args[0], uint(ver))
		if err != nil {
			return err
		}
		text := render(args[0], uint(ver), def)
		if x.opts.json {
			x.printJSON([]byte(cliMarshal(map[string]string{"format": *format, "diagram": text})))
			return nil
		}
		x.out.WriteString(text)
		return nil
	}
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
		return nil, fmt.Errorf("response for request %q while waiting for %q", m.ID, id)
	}
	return m, nil
}

func (cc *cliConn) close() {
	cc.stop()
	cc.c.close()
	<-cc.done
}

// cliSortedKeys returns m's keys in order.
func cliSortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// cliMarshal encodes v as compact JSON without HTML escaping.
func cliMarshal(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// cliCount is "1 thing" or "n things".
func cliCount(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}
