package main

// The interactive client: `stmdb repl` reads command lines from stdin and
// runs them as client verbs on one connection, so subscriptions stay open
// and their events print as they arrive.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// replPrompt is shown before each line when stdin is a terminal.
const replPrompt = "stmdb> "

func replSetup(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if x.sess.inREPL {
			return cliUsagef("already in the repl")
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		return replRun(x.sess)
	}
}

// replRun reads and runs lines until quit, exit, end of input or SIGINT.
func replRun(s *cliSession) error {
	if _, err := s.connect(); err != nil {
		return err
	}
	s.inREPL = true
	env := s.env
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(env.stdin)
		sc.Buffer(make([]byte, 64<<10), maxPayload)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-env.ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
		close(lines)
	}()
	for {
		if env.prompt {
			s.outMu.Lock()
			io.WriteString(env.stdout, replPrompt)
			s.atPrompt = true
			s.outMu.Unlock()
		}
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-env.ctx.Done():
			ok = false
		case <-s.conn.done:
			return errors.New("the server closed the connection")
		}
		s.outMu.Lock()
		s.atPrompt = false
		s.outMu.Unlock()
		if !ok {
			if env.prompt {
				s.write([]byte("\n"))
			}
			select {
			case err := <-readErr:
				return err
			default:
				return nil
			}
		}
		if !replLine(s, line) {
			return nil
		}
	}
}

// replLine runs one input line; false means the session should end.
func replLine(s *cliSession, line string) bool {
	words, err := replSplit(line)
	if err != nil {
		fmt.Fprintf(s.env.stderr, "stmdb: %v\n", err)
		return true
	}
	if len(words) == 0 {
		return true
	}
	switch words[0] {
	case "quit", "exit":
		return false
	case "help", "?":
		if len(words) > 1 {
			if v := cliLookup(words[1]); v != nil {
				s.exec(v, []string{"--help"}, true)
				return true
			}
			fmt.Fprintf(s.env.stderr, "stmdb: unknown command %q\n", words[1])
			return true
		}
		s.write([]byte(replHelp()))
		return true
	}
	v := cliLookup(words[0])
	if v == nil {
		fmt.Fprintf(s.env.stderr, "stmdb: unknown command %q (try help)\n", words[0])
		return true
	}
	s.exec(v, words[1:], true)
	if s.conn != nil {
		select {
		case <-s.conn.done:
			fmt.Fprintln(s.env.stderr, "stmdb: the connection is closed; leaving the repl")
			return false
		default:
		}
	}
	return true
}

// replHelp lists what the repl understands.
func replHelp() string {
	var b strings.Builder
	b.WriteString("commands (VERB --help for flags; JSON may be quoted with '...'):\n")
	var lines []string
	for _, v := range cliVerbs {
		if v.name != "repl" {
			lines = append(lines, "  "+v.name+"\t"+v.args)
		}
	}
	lines = append(lines, "  help [VERB]\tthis list, or one verb's help", "  quit, exit\tleave (so does end of input)")
	cliTabs(&b, lines)
	return b.String()
}

// replSplit splits a line into words like a POSIX shell does, without
// expansions: whitespace separates words, '...' is literal, "..." allows
// \" \\ \$ and \` escapes, a backslash outside quotes escapes the next
// character, and # at the start of a word begins a comment.
func replSplit(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case c == '\\':
			if i+1 < len(line) {
				i++
				cur.WriteByte(line[i])
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
