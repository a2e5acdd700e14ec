// Command fuzz is a black-box, model-based protocol fuzzer for RCP servers
// (rstmdb's protocol, as pinned down by stmdb's rcp.md). Point it at any
// server:
//
//	go run ./fuzz --addr HOST:PORT --duration 60s --seed N
//
// It drives several connections with random sequences of valid and invalid
// operations — machines with guards, instances, events, atomic and
// best-effort batches, idempotent retries (same and changed params),
// expected_state / expected_wal_offset conflicts, pipelined bursts,
// invalid envelopes, hostile frames on throw-away connections, and watches
// and unwatches when the server advertises them — and predicts every answer
// from its own model of what the server must hold. Limits come from INFO:
// a connection holding max_subscriptions_per_connection subscriptions must
// get BAD_REQUEST for another WATCH, and only then (a server that does not
// advertise the limit is expected to have none). It stops at the first divergence
// and prints the seed and a minimal replay (JSON lines, one step each; names
// are written with the placeholder %P%, which a replay replaces by a fresh
// prefix). It also checks that the server stays up and answers PING on
// every connection throughout.
//
//	go run ./fuzz --addr HOST:PORT --replay steps.jsonl
//
// replays a saved sequence. All names the fuzzer creates start with a
// unique prefix, so it can run against a server holding other data; with
// --exclusive (the default) it also checks that WAL offsets are dense (each
// write record is the previous + 1), which needs no other writers.
//
// This is a separate program with its own small RCP codec rather than part
// of stmdb's package: it is a black-box tool for any implementation and must
// not share code with the server it checks.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7401", "server address")
	duration := flag.Duration("duration", 60*time.Second, "how long to fuzz")
	seed := flag.Int64("seed", time.Now().UnixNano(), "random seed")
	conns := flag.Int("conns", 4, "connections")
	exclusive := flag.Bool("exclusive", true, "no other client writes: check that WAL offsets are dense")
	replay := flag.String("replay", "", "replay the steps in this JSON-lines file instead of fuzzing")
	out := flag.String("out", "", "write the minimal replay of a divergence to this file")
	flag.Parse()

	if *replay != "" {
		steps, err := loadSteps(*replay)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fuzz:", err)
			os.Exit(2)
		}
		_, div, err := runSteps(*addr, *conns, *exclusive, steps)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fuzz:", err)
			os.Exit(2)
		}
		if div != nil {
			fmt.Printf("DIVERGENCE at step %d: %s\n", div.step, div.msg)
			os.Exit(1)
		}
		fmt.Printf("replay of %d steps: no divergence\n", len(steps))
		return
	}

	f, err := newFuzzer(*addr, *conns, *exclusive, uniquePrefix())
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzz:", err)
		os.Exit(2)
	}
	g := &gen{rng: rand.New(rand.NewSource(*seed)), nconns: *conns}
	deadline := time.Now().Add(*duration)
	var steps []step
	var div *divergence
	for time.Now().Before(deadline) && div == nil {
		st := g.next(f)
		steps = append(steps, st)
		div = f.do(len(steps)-1, st)
		if div == nil && len(steps)%25 == 0 {
			div = f.checkpoint(len(steps) - 1)
		}
	}
	if div == nil {
		div = f.checkpoint(len(steps))
	}
	f.close()
	fmt.Printf("seed %d: %d steps, %d requests (%d ok, %d errors as predicted), %d hostile frames, %d pipelined bursts, %d batches, %d idempotent retries, %d watch events, %d unwatches, %d watches refused at the subscription limit (%s); features %v\n",
		*seed, len(steps), f.stats.requests, f.stats.ok, f.stats.errors, f.stats.hostile, f.stats.bursts, f.stats.batches, f.stats.retries, f.stats.events, f.stats.unwatches, f.stats.atLimit, f.limitText(), f.features)
	if div == nil {
		fmt.Println("no divergence")
		return
	}
	fmt.Printf("DIVERGENCE (seed %d) at step %d: %s\n", *seed, div.step, div.msg)
	min := shrink(*addr, *conns, *exclusive, steps[:div.step+1])
	fmt.Printf("minimal replay (%d of %d steps; save as a file and run with --replay):\n", len(min), div.step+1)
	var sb strings.Builder
	for _, st := range min {
		b, _ := json.Marshal(st)
		sb.Write(b)
		sb.WriteByte('\n')
	}
	fmt.Print(sb.String())
	if *out != "" {
		os.WriteFile(*out, []byte(sb.String()), 0o644)
	}
	os.Exit(1)
}

func uniquePrefix() string {
	return fmt.Sprintf("fz%x-", time.Now().UnixNano()&0xffffffffff)
}

func loadSteps(path string) ([]step, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var steps []step
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var st step
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		steps = append(steps, st)
	}
	return steps, sc.Err()
}

// runSteps replays steps on fresh connections under a fresh prefix.
func runSteps(addr string, nconns int, exclusive bool, steps []step) (*fuzzer, *divergence, error) {
	f, err := newFuzzer(addr, nconns, exclusive, uniquePrefix())
	if err != nil {
		return nil, nil, err
	}
	defer f.close()
	for i, st := range steps {
		if div := f.do(i, st); div != nil {
			return f, div, nil
		}
	}
	return f, f.checkpoint(len(steps) - 1), nil
}

// shrink finds a short sequence that still diverges at its last step:
// drop chunks of earlier steps while the divergence persists (a simple
// delta debugging over replays of prefixes).
func shrink(addr string, nconns int, exclusive bool, steps []step) []step {
	fails := func(s []step) bool {
		_, div, err := runSteps(addr, nconns, exclusive, s)
		return err == nil && div != nil && div.step == len(s)-1
	}
	if !fails(steps) {
		return steps // not reproducible in isolation: print it all
	}
	budget := 200
	for chunk := len(steps) / 2; chunk >= 1 && budget > 0; chunk /= 2 {
		for i := 0; i+chunk < len(steps) && budget > 0; {
			cand := append(append([]step(nil), steps[:i]...), steps[i+chunk:]...)
			budget--
			if fails(cand) {
				steps = cand
			} else {
				i += chunk
			}
		}
	}
	return steps
}

// divergence is the first answer the model did not predict.
type divergence struct {
	step int
	msg  string
}

type stats struct {
	requests, ok, errors, hostile, bursts, batches, retries, events int
	unwatches, atLimit                                              int // subscriptions removed; WATCHes refused at the limit
}

var errClosed = errors.New("connection closed")

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		(err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")))
}
