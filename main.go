// Command stmdb is a state machine database server speaking rstmdb's RCP
// protocol: define machines, create instances, apply events; every write
// is durable before it is acknowledged.
//
// Usage:
//
//	stmdb serve [--config FILE] [--bind ADDR] [--data DIR] [--fsync-policy P] ... (stmdb serve --help)
//	stmdb wal verify|repair [--data DIR]
//	stmdb backup --addr HOST:PORT --out DIR [--token T] [--follow]
//	stmdb restore --from DIR --data NEWDIR [--to-offset N | --to-time RFC3339]
//	stmdb verify --data DIR
//	stmdb serve --replica-of HOST:PORT [--rebootstrap] ...; stmdb promote --addr HOST:PORT
//	stmdb version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "bench":
		return benchMain(args[1:], stdout, stderr)
	case "wal":
		return cmdWAL(args[1:], stdout, stderr)
	case "backup":
		return cmdBackup(args[1:], stdout, stderr)
	case "restore":
		return cmdRestore(args[1:], stdout, stderr)
	case "verify":
		return cmdVerify(args[1:], stdout, stderr)
	case "crashtest":
		return crashMain(args[1:], stdout, stderr)
	case "version", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	if code, ok := cliMain(args, stdout, stderr); ok {
		return code
	}
	fmt.Fprintf(stderr, "stmdb: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: stmdb <command> [flags]

commands:
  serve          run the server (stmdb serve --help for its flags)
  wal verify     check every WAL record without changing anything
  wal repair     truncate the WAL at its first bad record
  backup         copy a running server into a backup directory (--follow: keep archiving)
  restore        build a data directory from a backup, optionally to an offset or a time
  verify         check a data directory or a backup without changing anything
  crashtest      kill -9 loop: writers, SIGKILL, restart, verify (stmdb crashtest --help)
  bench          load generator for any RCP server (stmdb bench --help)
  version        print the version

`)
	cliUsage(w)
}

func cmdServe(args []string, stderr io.Writer) int {
	// --rebootstrap is an action of this start, not a setting.
	rebootstrap := false
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool {
		if a == "--rebootstrap" || a == "-rebootstrap" || a == "--rebootstrap=true" {
			rebootstrap = true
			return true
		}
		return false
	})
	cfg, err := loadConfig(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "  --rebootstrap\tmove the data directory aside and copy the primary afresh (with --replica-of)")
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		return 2
	}
	if rebootstrap && cfg.ReplicaOf == "" {
		fmt.Fprintln(stderr, "stmdb: --rebootstrap needs --replica-of (replication.primary_addr)")
		return 2
	}
	cfg.replicaRebootstrap = rebootstrap
	// STMDB_CPUPROFILE=FILE profiles the server until it shuts down (for
	// PERFORMANCE.md work: profile, don't guess).
	if path := os.Getenv("STMDB_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(stderr, "stmdb: STMDB_CPUPROFILE: %v\n", err)
			return 2
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	// STMDB_TRACE=FILE records a runtime execution trace (go tool trace):
	// where requests wait, not only where CPU goes.
	if path := os.Getenv("STMDB_TRACE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(stderr, "stmdb: STMDB_TRACE: %v\n", err)
			return 2
		}
		trace.Start(f)
		defer func() { trace.Stop(); f.Close() }()
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		status, again := serveOnce(ctx, &cfg, logger, stderr)
		if !again {
			return status
		}
		// A replica whose next record the primary no longer holds: copy
		// it afresh and serve again on the same addresses.
		cfg.replicaRebootstrap, cfg.replicaRecopy = false, true
	}
}

// serveOnce opens the data directory (a replica first copies its primary
// when it has to) and serves until a signal, a failure, or (again) a
// replica that must copy its primary afresh. The bind addresses are
// updated to those bound, so that a second round binds the same ports.
func serveOnce(ctx context.Context, cfg *config, logger *slog.Logger, stderr io.Writer) (status int, again bool) {
	if cfg.ReplicaOf != "" {
		if err := replicaBootstrap(ctx, *cfg, logger); err != nil {
			fmt.Fprintf(stderr, "stmdb: %v\n", err)
			return 1, false
		}
	}
	s, err := openServer(*cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		return 1, false
	}
	ln, err := net.Listen("tcp", cfg.Bind)
	if err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		s.close()
		return 1, false
	}
	cfg.Bind = ln.Addr().String()
	if cfg.MetricsEnabled {
		mln, err := net.Listen("tcp", cfg.MetricsBind)
		if err != nil {
			fmt.Fprintf(stderr, "stmdb: metrics.bind_addr: %v\n", err)
			s.close()
			return 1, false
		}
		cfg.MetricsBind = mln.Addr().String()
		logger.Info("metrics listening", "addr", mln.Addr().String())
		go s.serveMetrics(mln)
	}
	if cfg.HTTPBind != "" {
		hln, err := net.Listen("tcp", cfg.HTTPBind)
		if err != nil {
			fmt.Fprintf(stderr, "stmdb: http.bind_addr: %v\n", err)
			s.close()
			return 1, false
		}
		cfg.HTTPBind = hln.Addr().String()
		logger.Info("http API and console", "http_addr", hln.Addr().String())
		go s.serveHTTP(hln)
	}
	replFail := make(chan error, 1)
	replCopy := make(chan struct{}, 1)
	s.repl.fail = func(err error) {
		select {
		case replFail <- err:
		default:
		}
	}
	s.repl.rebootstrap = func() {
		select {
		case replCopy <- struct{}{}:
		default:
		}
	}
	if err := s.repl.start(); err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		s.close()
		return 1, false
	}
	logger.Info("listening", "addr", ln.Addr().String(), "data", cfg.DataDir, "fsync", cfg.Fsync.Kind, "role", s.repl.info().Role)
	done := make(chan error, 1)
	go func() { done <- s.serve(ln) }()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-done:
		// serve returns by itself only when something else closed the
		// listener: the server stops, and says so in its exit status.
		logger.Error("listener failed; shutting down", "err", err)
		status = 1
	case err := <-replFail:
		logger.Error("replication: refusing to serve; shutting down", "err", err)
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		status = 1
	case <-replCopy:
		again = true
	}
	s.repl.stopFollowing()
	if err := s.close(); err != nil {
		logger.Error("closing the write-ahead log", "err", err)
		return 1, false
	}
	return status, again
}

func cmdWAL(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "repair") {
		fmt.Fprintln(stderr, "usage: stmdb wal verify|repair [--data DIR]")
		return 2
	}
	cfg := defaultConfig()
	if err := cfg.applyEnv(os.Getenv); err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		return 2
	}
	fs := flag.NewFlagSet("wal "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory (env RSTMDB_DATA)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	dir := filepath.Join(cfg.DataDir, "wal")
	var rep walReport
	var err error
	if args[0] == "verify" {
		rep, err = verifyWAL(dir)
	} else {
		rep, err = repairWAL(dir)
	}
	for _, seg := range rep.Segments {
		fmt.Fprintf(stdout, "%s  records %d..%d (%d)  %d data bytes\n", seg.Name, seg.FirstLSN, seg.LastLSN, seg.Records, seg.DataBytes)
	}
	fmt.Fprintf(stdout, "%d good records (LSN %d..%d)\n", rep.Records, rep.FirstLSN, rep.LastLSN)
	if err != nil {
		fmt.Fprintf(stderr, "stmdb: %v\n", err)
		return 1
	}
	if rep.Truncated || len(rep.Removed) > 0 {
		if rep.Truncated {
			fmt.Fprintf(stdout, "repaired: cut %s at offset %d (%s)\n", rep.Problem.Segment, rep.Problem.Cut, rep.Problem.Reason)
		}
		if len(rep.Removed) > 0 {
			fmt.Fprintf(stdout, "repaired: removed segments %s\n", strings.Join(rep.Removed, " "))
		}
		if rep.Dropped > 0 {
			fmt.Fprintf(stdout, "dropped %d intact records after the damage (up to LSN %d); the log now ends at LSN %d\n", rep.Dropped, rep.DroppedLast, rep.LastLSN)
		} else {
			fmt.Fprintf(stdout, "dropped no intact record; the log now ends at LSN %d\n", rep.LastLSN)
		}
		return 0
	}
	if rep.Problem != nil {
		kind := "corruption before the tail: the server will refuse to start (stmdb wal repair truncates here)"
		if rep.Problem.TornTail {
			kind = "torn tail: the server truncates it at start"
		}
		fmt.Fprintf(stdout, "problem: %s\n%s\n", rep.Problem, kind)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// newLogger builds the server's slog logger from logging.level and
// logging.format. At info it logs connections and notable events (recovery,
// compaction, slow fsyncs), never individual requests.
func newLogger(cfg config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("logging.level: %q is not one of debug, info, warn, error", cfg.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("logging.format: %q is not one of text, json", cfg.LogFormat)
}
