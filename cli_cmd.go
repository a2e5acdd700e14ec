package main

// CLI commands: the verb table and what every verb body uses (arguments,
// required flags, JSON arguments, one request).

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

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
		{name: "history", args: "ID [--limit N] [--before OFFSET]", summary: "Shows an instance's events, newest first, from the retained log.", example: "stmdb history order-1 --limit 20", setup: cliHistory},
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
		{name: "promote", args: "", summary: "Turns a replica into a primary: it stops following, starts a new epoch and takes writes.", example: "stmdb promote --addr replica:7401", setup: cliPromote},
		{name: "snapshot-instance", args: "ID", summary: "Writes one instance's state to a snapshot file on the server.", example: "stmdb snapshot-instance order-1", setup: cliSnapshotInstance},
		{name: "flush-all", args: "", summary: "Removes all machines and instances (only if the server allows it).", example: "stmdb flush-all", setup: cliFlushAll},
		{name: "hash-token", args: "TOKEN", summary: "Prints the SHA-256 (lowercase hex) of a token, as configured in auth.token_hashes. Needs no server.", example: "stmdb hash-token s3cret", setup: cliHashToken},
		{name: "describe-machine", args: "NAME VER [--format mermaid|dot]", summary: "Renders a machine version as a state diagram (Mermaid stateDiagram-v2 or Graphviz dot).",
			example: "stmdb describe-machine order 1 --format dot | dot -Tsvg > order.svg", setup: cliDescribeMachine},
		{name: "repl", args: "", summary: "Reads commands from stdin on one connection; events of its subscriptions print as they arrive.", example: "stmdb repl --addr 127.0.0.1:7401", setup: replSetup},
	}
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
