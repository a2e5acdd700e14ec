package main

// `stmdb bench --op A,B[,C] --rounds N`: the ops run in turn, N times, and
// each is compared with every later one round by round. On a machine whose
// speed drifts, a ratio is only meaningful between runs taken minutes apart
// at most; this is how the load tool takes them.

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// benchComparison is the report of a comparison run.
type benchComparison struct {
	Ops          []string         `json:"ops"`
	Conns        int              `json:"conns"`
	Pipeline     int              `json:"pipeline"`
	PayloadBytes int              `json:"payload_bytes"`
	Rounds       [][]*benchReport `json:"rounds"` // [round][op], in --op order
	Medians      []benchOpMedian  `json:"medians"`
	Ratios       []benchRatio     `json:"ratios"`
	Failed       string           `json:"failed,omitempty"` // the run that stopped the comparison
}

type benchOpMedian struct {
	Op        string  `json:"op"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P99US     float64 `json:"p99_us"`
}

// benchRatio is Of's ops/s over To's, per round and their median.
type benchRatio struct {
	Of       string    `json:"of"`
	To       string    `json:"to"`
	Median   float64   `json:"median"`
	PerRound []float64 `json:"per_round"`
}

func benchCompare(cfg *benchConfig, stdout, stderr io.Writer) int {
	cmp := &benchComparison{Ops: cfg.ops, Conns: cfg.conns, Pipeline: cfg.pipeline, PayloadBytes: cfg.payloadBytes}
	for round := 1; round <= cfg.rounds && cmp.Failed == ""; round++ {
		var reps []*benchReport
		for _, op := range cfg.ops {
			one := *cfg
			one.op, one.ops, one.rounds = op, nil, 1
			if cfg.progress > 0 {
				fmt.Fprintf(stderr, "round %d/%d: %s\n", round, cfg.rounds, op)
			}
			rep, err := benchOnce(&one, stderr)
			switch {
			case err != nil:
				cmp.Failed = fmt.Sprintf("round %d, %s: %v", round, op, err)
			case rep.TransportError != "":
				cmp.Failed = fmt.Sprintf("round %d, %s: %s", round, op, rep.TransportError)
			}
			if cmp.Failed != "" {
				break
			}
			reps = append(reps, rep)
		}
		if cmp.Failed == "" {
			cmp.Rounds = append(cmp.Rounds, reps)
		}
	}
	cmp.summarize()
	benchOutput(stdout, cfg.jsonOut, cmp)
	if cmp.Failed != "" {
		fmt.Fprintf(stderr, "stmdb bench: %s\n", cmp.Failed)
		return 1
	}
	return 0
}

// summarize fills the medians and the ratios from the complete rounds.
func (c *benchComparison) summarize() {
	if len(c.Rounds) == 0 {
		return
	}
	for i, op := range c.Ops {
		var ops, p99 []float64
		for _, r := range c.Rounds {
			ops = append(ops, r[i].OpsPerSec)
			p99 = append(p99, r[i].LatencyUS.P99)
		}
		c.Medians = append(c.Medians, benchOpMedian{Op: op, OpsPerSec: benchMedian(ops), P99US: benchMedian(p99)})
	}
	for i := range c.Ops {
		for j := i + 1; j < len(c.Ops); j++ {
			r := benchRatio{Of: c.Ops[i], To: c.Ops[j]}
			for _, round := range c.Rounds {
				q := 0.0
				if round[j].OpsPerSec > 0 {
					q = round[i].OpsPerSec / round[j].OpsPerSec
				}
				r.PerRound = append(r.PerRound, math.Round(q*1000)/1000)
			}
			r.Median = math.Round(benchMedian(r.PerRound)*1000) / 1000
			c.Ratios = append(c.Ratios, r)
		}
	}
}

func (c *benchComparison) print(w io.Writer) {
	rounds := "rounds"
	if len(c.Rounds) == 1 {
		rounds = "round"
	}
	fmt.Fprintf(w, "%s: %d conns x pipeline %d, %d-byte payloads, %d %s\n", strings.Join(c.Ops, ", "), c.Conns, c.Pipeline, c.PayloadBytes, len(c.Rounds), rounds)
	for n, round := range c.Rounds {
		var parts []string
		for _, r := range round {
			parts = append(parts, fmt.Sprintf("%s %.0f ops/s (p99 %.2f ms%s)", r.Op, r.OpsPerSec, r.LatencyUS.P99/1000, benchErrNote(r)))
		}
		fmt.Fprintf(w, "round %d: %s\n", n+1, strings.Join(parts, " | "))
	}
	for _, m := range c.Medians {
		fmt.Fprintf(w, "median %-14s %.0f ops/s, p99 %.2f ms\n", m.Op, m.OpsPerSec, m.P99US/1000)
	}
	for _, r := range c.Ratios {
		per := make([]string, len(r.PerRound))
		for i, q := range r.PerRound {
			per[i] = fmt.Sprintf("%.3f", q)
		}
		fmt.Fprintf(w, "%s / %s: median %.3f (rounds: %s)\n", r.Of, r.To, r.Median, strings.Join(per, " "))
	}
	if c.Failed != "" {
		fmt.Fprintf(w, "stopped: %s\n", c.Failed)
	}
}

func benchErrNote(r *benchReport) string {
	var n uint64
	for _, v := range r.Errors {
		n += v
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d errors", n)
}

// benchMedian is the median of v (the mean of the middle two for an even
// count); 0 for none.
func benchMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
