package main

// The load tool's latency histogram, its report and its progress line.

import (
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// benchHistSub is the number of linear sub-buckets per power of two: values
// are kept to within 1/64 (1.6%) of their size, from 1 ns to 2^64 ns, in a
// fixed 30 KB table per connection. Recording is one Len64 and an add.
const benchHistSub = 64

const benchHistBuckets = (64-6)*benchHistSub + benchHistSub

type benchHist struct {
	counts [benchHistBuckets]uint64
	n      uint64
	sum    float64
	max    uint64
}

func benchHistIndex(v uint64) int {
	if v < benchHistSub {
		return int(v)
	}
	e := bits.Len64(v) - 7 // v>>e is in [64, 128)
	return (e+1)*benchHistSub + int(v>>uint(e)) - benchHistSub
}

// benchHistValue is the midpoint of bucket i.
func benchHistValue(i int) uint64 {
	if i < benchHistSub {
		return uint64(i)
	}
	e := uint(i/benchHistSub - 1)
	m := uint64(i%benchHistSub + benchHistSub)
	lo := m << e
	return lo + (uint64(1)<<e)/2
}

func (h *benchHist) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[benchHistIndex(v)]++
	h.n++
	h.sum += float64(v)
	h.max = max(h.max, v)
}

func (h *benchHist) merge(o *benchHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the value below which a fraction q of the samples fall
// (to the histogram's resolution, never above the maximum).
func (h *benchHist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(benchHistValue(i), h.max)
		}
	}
	return h.max
}

// ---- report ----

type benchLatency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type benchReport struct {
	Op             string            `json:"op"`
	Baseline       string            `json:"baseline,omitempty"` // fsync-baseline: append or prealloc
	Addr           string            `json:"addr,omitempty"`
	Conns          int               `json:"conns"`
	Pipeline       int               `json:"pipeline"`
	Instances      int               `json:"instances"`
	PayloadBytes   int               `json:"payload_bytes"`
	WarmupSec      float64           `json:"warmup_s"`
	ElapsedSec     float64           `json:"elapsed_s"`
	Ops            uint64            `json:"ops"`
	OpsPerSec      float64           `json:"ops_per_sec"`
	OpsByKind      map[string]uint64 `json:"ops_by_kind,omitempty"`
	Errors         map[string]uint64 `json:"errors"`
	LatencyUS      benchLatency      `json:"latency_us"`
	SetupSec       float64           `json:"setup_s,omitempty"`
	Fsyncs         *uint64           `json:"server_fsyncs,omitempty"`        // WAL_STATS io_stats.fsyncs delta over the measured run
	OpsPerFsync    *float64          `json:"server_ops_per_fsync,omitempty"` // completed ops (warmup tail included) per fsync
	ReplicaLag     []benchLagReport  `json:"replica_lag,omitempty"`          // --lag (bench_lag.go)
	TransportError string            `json:"transport_error,omitempty"`
}

func (r *benchReport) fill(h *benchHist) {
	us := func(v uint64) float64 { return math.Round(float64(v)/10) / 100 }
	r.LatencyUS = benchLatency{
		P50: us(h.quantile(0.50)), P90: us(h.quantile(0.90)), P99: us(h.quantile(0.99)),
		P999: us(h.quantile(0.999)), Max: us(h.max),
	}
	if h.n > 0 {
		r.LatencyUS.Mean = us(uint64(h.sum / float64(h.n)))
	}
	if r.ElapsedSec > 0 {
		r.OpsPerSec = math.Round(float64(r.Ops) / r.ElapsedSec)
	}
}

func (r *benchReport) print(w io.Writer) {
	if r.Op == "fsync-baseline" {
		fmt.Fprintf(w, "fsync-baseline (%s): %d writes of %d bytes, each followed by fdatasync, in %.2fs\n", r.Baseline, r.Ops, r.PayloadBytes, r.ElapsedSec)
	} else {
		fmt.Fprintf(w, "%s against %s: %d conns x pipeline %d, %d instances, %d-byte payloads\n",
			r.Op, r.Addr, r.Conns, r.Pipeline, r.Instances, r.PayloadBytes)
		fmt.Fprintf(w, "setup %.2fs, warmup %.2fs, measured %.2fs\n", r.SetupSec, r.WarmupSec, r.ElapsedSec)
	}
	fmt.Fprintf(w, "ops        %d\n", r.Ops)
	fmt.Fprintf(w, "ops/s      %.0f\n", r.OpsPerSec)
	if len(r.OpsByKind) > 1 {
		for _, k := range benchSortedKeys(r.OpsByKind) {
			fmt.Fprintf(w, "  %-16s %d\n", k, r.OpsByKind[k])
		}
	}
	fmt.Fprintf(w, "latency µs p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (mean %.1f)\n",
		r.LatencyUS.P50, r.LatencyUS.P90, r.LatencyUS.P99, r.LatencyUS.P999, r.LatencyUS.Max, r.LatencyUS.Mean)
	if r.Fsyncs != nil {
		fmt.Fprintf(w, "server fsyncs %d (%.1f ops per fsync)\n", *r.Fsyncs, *r.OpsPerFsync)
	}
	if len(r.Errors) == 0 {
		fmt.Fprintln(w, "errors     none")
	} else {
		fmt.Fprintln(w, "errors")
		for _, k := range benchSortedKeys(r.Errors) {
			fmt.Fprintf(w, "  %-24s %d\n", k, r.Errors[k])
		}
	}
	benchLagPrint(w, r.ReplicaLag)
	if r.TransportError != "" {
		fmt.Fprintf(w, "transport error: %s\n", r.TransportError)
	}
}

// ---- progress ----

// benchProgress prints one status line per interval while the load runs:
// overwritten in place on a terminal, one line each otherwise.
type benchProgress struct {
	w        io.Writer
	tty      bool
	interval time.Duration
	done     *atomic.Uint64
	errs     *atomic.Uint64
	phase    func() string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func benchIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *benchProgress) start() {
	if p.interval <= 0 {
		return
	}
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(p.interval)
		defer t.Stop()
		begin := time.Now()
		var last uint64
		lastT := begin
		for {
			select {
			case <-p.stop:
				if p.tty {
					fmt.Fprint(p.w, "\r\033[K")
				}
				return
			case now := <-t.C:
				d := p.done.Load()
				rate := float64(d-last) / now.Sub(lastT).Seconds()
				last, lastT = d, now
				line := fmt.Sprintf("[%5.1fs] %-7s %10d ops %10.0f ops/s %6d errors",
					now.Sub(begin).Seconds(), p.phase(), d, rate, p.errs.Load())
				if p.tty {
					fmt.Fprintf(p.w, "\r%s\033[K", line)
				} else {
					fmt.Fprintln(p.w, line)
				}
			}
		}
	}()
}

func (p *benchProgress) end() {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
	}
}
