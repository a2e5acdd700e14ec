package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// scriptedListener hands serve whatever Accept results a test scripts,
// and net.ErrClosed once closed.
type scriptedListener struct {
	results   chan acceptResult
	closed    chan struct{}
	closeOnce sync.Once
}

type acceptResult struct {
	nc  net.Conn
	err error
}

func newScriptedListener() *scriptedListener {
	return &scriptedListener{results: make(chan acceptResult), closed: make(chan struct{})}
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	select {
	case r := <-l.results:
		return r.nc, r.err
	case <-l.closed:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
}

func (l *scriptedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Accept errors — out of file descriptors, an aborted connection, anything
// but a closed listener — are counted and retried; the server goes on
// accepting. A listener closed by anything but close ends serve with an
// error (cmdServe then exits non-zero); close ends it with nil.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	s, err := openServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ln := newScriptedListener()
	done := make(chan error, 1)
	go func() { done <- s.serve(ln) }()

	errs := []error{
		acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE), acceptErr(syscall.ECONNABORTED),
		acceptErr(syscall.ENOBUFS), errors.New("something unexpected"),
	}
	give := func(r acceptResult) {
		t.Helper()
		select {
		case ln.results <- r:
		case err := <-done:
			t.Fatalf("serve returned: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("serve stopped accepting")
		}
	}
	for _, e := range errs {
		give(acceptResult{err: e})
	}
	server, client := net.Pipe()
	give(acceptResult{nc: server})
	client.SetDeadline(time.Now().Add(10 * time.Second))
	if m, err := newClient(client).call("PING", nil); err != nil || m.Status != "ok" {
		t.Fatalf("PING after accept errors: %v %v", m, err)
	}
	client.Close()
	if got := s.metrics.acceptErrors.Load(); got != uint64(len(errs)) {
		t.Errorf("accept errors counted: %d, want %d", got, len(errs))
	}

	select {
	case err := <-done:
		t.Fatalf("serve returned on an accept error: %v", err)
	default:
	}
	ln.Close() // closed by something other than close
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve after its listener closed under it: %v, want an error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return when its listener closed")
	}

	// close ends serve with nil, also while it is backing off.
	ln = newScriptedListener()
	go func() { done <- s.serve(ln) }()
	give(acceptResult{err: acceptErr(syscall.EMFILE)})
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after close")
	}
}

// A real server process limited to 40 file descriptors, offered more
// connections than that, runs out of descriptors in accept: it logs a
// warning, keeps serving, answers PING once the connections close, and
// still exits 0 on SIGTERM.
func TestServeUnderFDLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("real process; skipped with -short")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to set ulimit -n")
	}
	const fdLimit, conns = 40, 60
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fdLimit),
		os.Args[0], "serve", "--bind", "127.0.0.1:0", "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "STMDB_TEST_SERVE=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logLines []string
	logged := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range logLines {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logLines = append(logLines, sc.Text())
			mu.Unlock()
			if m := crashListenRE.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-exited:
		t.Fatalf("server exited at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}

	var ncs []net.Conn
	for i := 0; i < conns; i++ {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		ncs = append(ncs, nc)
	}
	for deadline := time.Now().Add(30 * time.Second); !logged("too many open files"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no accept error logged with %d connections under ulimit -n %d", conns, fdLimit)
		}
	}
	for _, nc := range ncs {
		nc.Close()
	}
	// Once the connections are gone, the server serves again (after at most
	// its longest back-off, and draining the closed connections' backlog).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := dialClient(addr, 5*time.Second)
		if err == nil {
			c.nc.SetDeadline(time.Now().Add(5 * time.Second))
			var m *message
			m, err = c.call("PING", nil)
			c.close()
			if err == nil && m.Status == "ok" {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("server exited after running out of file descriptors: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PING answered after the connections closed: %v", err)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	if !logged("level=WARN msg=\"accept failed; retrying\"") {
		t.Error("no WARN for the accept errors")
	}
}
