package main

// The command-line client: `stmdb VERB [flags]` runs one request against a
// server and prints its result, readable by default or as one compact JSON
// object per line with --json. The same verbs run inside `stmdb repl`.
//
// This file holds the entry points and error reporting; cli_flags.go the
// global flags and the flag parsing, cli_cmd.go the verb table and what
// every verb uses, cli_output.go the rendering of results, cli_session.go
// the connection a command line or a repl runs on, and cli_admin.go,
// cli_machines.go, cli_instances.go and cli_watch.go the verbs by group.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
