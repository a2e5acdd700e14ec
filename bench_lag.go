package main

// stmdb bench --lag ADDR[,ADDR...]: how far replicas trail the primary
// under the bench's load.
//
// Over the measured window the tool holds one WATCH_ALL subscription
// (without ctx) on the primary and one on each replica. A replica's log
// has the primary's offsets, and a server publishes a record to its
// watchers once it is durable there, so for one offset the time between
// its event arriving from the primary and from a replica is how long the
// record took from being durable on the primary to being applied and
// durable on the replica (plus the difference of the two watch paths,
// which are the same code; should the primary's be the slower one, a
// sample counts as 0). Both times come from this process's monotonic
// clock, so the hosts' clocks play no part.
//
// Only every benchLagEvery-th offset is timed, and an event's offset is
// found without decoding the event, so a watcher stays cheap at 100k+
// events/s; the arrivals are kept in a slice indexed by offset (8 bytes a
// sample: 30 MB for ten minutes at 100k records/s). When the window ends,
// the primary's watcher stops and its sampled offsets are the ones each
// replica owes; a replica has until --lag-grace after the end to deliver
// them, and those it has not delivered by then are reported as not
// delivered (a stopped or diverged replica ends the run that way instead
// of hanging it).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// benchLagEvery: offsets divisible by it are timed.
	benchLagEvery = 16
	// benchLagGrace is the default --lag-grace.
	benchLagGrace = 5 * time.Second
)

// benchLagReport is one replica's line of the report.
type benchLagReport struct {
	Addr        string  `json:"addr"`
	Samples     uint64  `json:"samples"` // sampled offsets both watchers delivered
	P50         float64 `json:"p50_ms"`
	P90         float64 `json:"p90_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
	Undelivered uint64  `json:"undelivered"` // sampled on the primary, not on the replica by the grace deadline
	Error       string  `json:"error,omitempty"`
}

// validateLag checks --lag and --lag-grace (called by validate, after
// c.ops is set).
func (c *benchConfig) validateLag() error {
	c.lagAddrs = nil
	if c.lag == "" {
		return nil
	}
	for _, a := range strings.Split(c.lag, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("--lag %q: want host:port[,host:port...]: %v", c.lag, err)
		}
		c.lagAddrs = append(c.lagAddrs, a)
	}
	// Only applied events reach watchers: CREATE_INSTANCE, GET_INSTANCE
	// and PING runs would have nothing to time.
	if len(c.ops) != 1 || c.rounds != 1 || (c.op != "apply" && c.op != "mix") {
		return fmt.Errorf("--lag needs a single --op apply or mix (only applied events are published to watchers) and --rounds 1")
	}
	if c.lagGrace <= 0 {
		return fmt.Errorf("--lag-grace %v: want > 0", c.lagGrace)
	}
	return nil
}

// benchLag is the watchers of one run.
type benchLag struct {
	cfg      *benchConfig
	primary  *benchLagWatch
	replicas []*benchLagWatch
	quit     chan struct{} // closed by stop (or close): no subscribing after it
	quitOnce sync.Once
	begun    chan struct{} // closed when the subscribing is over, done or not
}

// benchLagWatch is one WATCH_ALL connection and what it saw.
type benchLagWatch struct {
	addr  string
	c     *client
	floor uint64          // offsets up to it were logged before the watch began: never delivered to it
	t0    time.Time       // arrivals are kept as time since t0 (the same for all)
	seen  []time.Duration // arrivals of the sampled offsets after floor (index, offset), 0: none; the reader's until done
	hi    atomic.Uint64   // highest offset delivered
	want  atomic.Uint64   // the reader may stop once hi reaches it (0: not known yet)
	quiet atomic.Bool     // stop has set the read deadline: a timeout is the end, not a failure
	err   error           // the reader's or the subscription's failure; read after done
	done  chan struct{}   // closed when the reader exits (nil: it never started)
}

// benchLagDial connects to the primary and the replicas, before the load
// starts, so an unreachable or refusing replica fails the run at once.
func benchLagDial(cfg *benchConfig) (*benchLag, error) {
	l := &benchLag{cfg: cfg, quit: make(chan struct{}), begun: make(chan struct{})}
	t0 := time.Now()
	for i, addr := range append([]string{cfg.addr}, cfg.lagAddrs...) {
		c, err := benchDial(cfg, addr)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("--lag: %s: %w", addr, err)
		}
		lw := &benchLagWatch{addr: addr, c: c, t0: t0}
		if i == 0 {
			l.primary = lw
		} else {
			l.replicas = append(l.replicas, lw)
		}
	}
	return l, nil
}

// start subscribes at the start of the measured window, the primary first:
// a replica's watch then begins at or after the primary's (floor).
func (l *benchLag) start(at time.Time) {
	go func() {
		defer close(l.begun)
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.quit:
			return
		}
		p := l.primary
		if p.floor, p.err = p.subscribe(l.cfg.timeout); p.err != nil {
			return
		}
		p.run()
		for _, r := range l.replicas {
			var head uint64
			if head, r.err = r.subscribe(l.cfg.timeout); r.err == nil {
				r.floor = max(head, p.floor)
				r.run()
			}
		}
	}()
}

// stop ends the window: it stops the primary's watcher, gives each replica
// until the grace deadline to deliver the primary's sampled offsets, and
// reports.
func (l *benchLag) stop() []benchLagReport {
	l.quitOnce.Do(func() { close(l.quit) })
	<-l.begun
	end := time.Now()
	p := l.primary
	p.halt(end)
	var wg sync.WaitGroup
	for _, r := range l.replicas {
		if r.done == nil {
			continue
		}
		want := p.last()
		if want <= r.floor {
			want = 0 // none owed
		}
		// Events come in offset order: once the replica delivered want, it
		// delivered every sampled offset it ever will.
		r.want.Store(want)
		r.quiet.Store(true)
		r.c.nc.SetReadDeadline(end.Add(l.cfg.lagGrace))
		if want == 0 || r.hi.Load() >= want {
			r.c.nc.SetReadDeadline(time.Now())
		}
		wg.Add(1)
		go func() { defer wg.Done(); <-r.done }()
	}
	wg.Wait()
	reps := make([]benchLagReport, len(l.replicas))
	for i, r := range l.replicas {
		reps[i] = l.report(r)
	}
	return reps
}

// report compares a replica's arrivals with the primary's.
func (l *benchLag) report(r *benchLagWatch) benchLagReport {
	rep := benchLagReport{Addr: r.addr}
	p := l.primary
	switch {
	case p.err != nil:
		rep.Error = "primary " + p.addr + ": " + p.err.Error()
		return rep
	case r.err != nil:
		rep.Error = r.err.Error()
	}
	var h benchHist
	for i, tp := range p.seen {
		off := p.offset(i)
		if tp == 0 || off <= r.floor {
			continue
		}
		if tr := r.arrival(off); tr != 0 {
			h.record(tr - tp)
		} else {
			rep.Undelivered++
		}
	}
	ms := func(v uint64) float64 { return math.Round(float64(v)/1e3) / 1e3 }
	rep.Samples = h.n
	rep.P50, rep.P90, rep.P99, rep.Max = ms(h.quantile(0.50)), ms(h.quantile(0.90)), ms(h.quantile(0.99)), ms(h.max)
	return rep
}

// close ends everything; the readers exit on their closed connections.
func (l *benchLag) close() {
	l.quitOnce.Do(func() { close(l.quit) })
	for _, lw := range append([]*benchLagWatch{l.primary}, l.replicas...) {
		if lw != nil {
			lw.c.close()
		}
	}
}

// subscribe sends WATCH_ALL and returns the server's head offset at that
// moment: the watch delivers the records after it.
func (lw *benchLagWatch) subscribe(timeout time.Duration) (uint64, error) {
	lw.c.nc.SetDeadline(time.Now().Add(timeout))
	m, err := lw.c.call("WATCH_ALL", `{"include_ctx":false}`)
	if err != nil {
		return 0, fmt.Errorf("WATCH_ALL: %w", err)
	}
	if m.Status != "ok" {
		return 0, fmt.Errorf("WATCH_ALL failed: %s", m.Raw)
	}
	var res struct {
		WalOffset uint64 `json:"wal_offset"`
	}
	if err := json.Unmarshal(m.Result, &res); err != nil {
		return 0, fmt.Errorf("WATCH_ALL: %w", err)
	}
	lw.c.nc.SetDeadline(time.Time{}) // a quiet window is no failure
	return res.WalOffset, nil
}

// index and offset map the sampled offsets after floor to seen's indexes
// and back.
func (lw *benchLagWatch) index(off uint64) uint64 {
	return off/benchLagEvery - (lw.floor/benchLagEvery + 1)
}
func (lw *benchLagWatch) offset(i int) uint64 {
	return (lw.floor/benchLagEvery + 1 + uint64(i)) * benchLagEvery
}

// benchLagMaxGap bounds how far past the last sample one offset may jump
// (16M samples, 128 MB), so an absurd offset cannot exhaust memory.
const benchLagMaxGap = 1 << 24

// record notes the first arrival of a sampled offset (a batch's events
// share their record's offset).
func (lw *benchLagWatch) record(off uint64, now time.Time) {
	i := lw.index(off)
	if i >= uint64(len(lw.seen)) {
		if i-uint64(len(lw.seen)) > benchLagMaxGap {
			return
		}
		for uint64(len(lw.seen)) <= i {
			lw.seen = append(lw.seen, 0)
		}
	}
	if lw.seen[i] == 0 {
		lw.seen[i] = max(now.Sub(lw.t0), 1)
	}
}

// arrival is when a sampled offset after floor arrived (0: it did not).
func (lw *benchLagWatch) arrival(off uint64) time.Duration {
	if i := lw.index(off); i < uint64(len(lw.seen)) {
		return lw.seen[i]
	}
	return 0
}

// last is the highest sampled offset that arrived (0: none).
func (lw *benchLagWatch) last() uint64 {
	for i := len(lw.seen) - 1; i >= 0; i-- {
		if lw.seen[i] != 0 {
			return lw.offset(i)
		}
	}
	return 0
}

// run starts the reader.
func (lw *benchLagWatch) run() {
	lw.done = make(chan struct{})
	go lw.read()
}

// halt stops a watcher whose reader may be running and waits for it.
func (lw *benchLagWatch) halt(at time.Time) {
	if lw.done == nil {
		return
	}
	lw.quiet.Store(true)
	lw.c.nc.SetReadDeadline(at)
	<-lw.done
}

// read records the arrival of sampled offsets until want is reached, the
// deadline stop set passes, or the connection fails.
func (lw *benchLagWatch) read() {
	defer close(lw.done)
	for {
		p, err := lw.c.fr.next()
		if err != nil {
			var ne net.Error
			if !(lw.quiet.Load() && errors.As(err, &ne) && ne.Timeout()) {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // the server closed the watch
				}
				lw.err = fmt.Errorf("watch: %w", err)
			}
			return
		}
		now := time.Now()
		off, ok, err := benchLagOffset(p)
		if err != nil {
			lw.err = err
			return
		}
		if !ok {
			continue
		}
		if off%benchLagEvery == 0 && off > lw.floor {
			lw.record(off, now)
		}
		if off > lw.hi.Load() {
			lw.hi.Store(off)
		}
		if w := lw.want.Load(); w != 0 && off >= w {
			return
		}
	}
}

var (
	benchLagEventPrefix = []byte(`{"type":"event",`)
	benchLagOffsetKey   = []byte(`"wal_offset":`)
	benchLagPayloadKey  = []byte(`"payload":`)
)

// benchLagOffset returns an event's wal_offset (ok false for anything else
// the server may send on a watch; an error response that closes the
// connection is an error). This server writes the offset before the
// payload, the only nested value: a key's quotes cannot occur unescaped
// inside a string, so the first `"wal_offset":` ahead of `"payload":` is
// the event's own and needs no decoding. Other layouts are decoded.
func benchLagOffset(p []byte) (uint64, bool, error) {
	if bytes.HasPrefix(p, benchLagEventPrefix) {
		i := bytes.Index(p, benchLagOffsetKey)
		if j := bytes.Index(p, benchLagPayloadKey); i >= 0 && (j < 0 || i < j) {
			rest := p[i+len(benchLagOffsetKey):]
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			if v, err := strconv.ParseUint(string(rest[:n]), 10, 64); err == nil {
				return v, true, nil
			}
		}
	}
	var m struct {
		message
		WalOffset *uint64 `json:"wal_offset"`
	}
	if err := json.Unmarshal(p, &m); err != nil {
		return 0, false, fmt.Errorf("watch: undecodable message %q: %w", p, err)
	}
	if m.Type == "event" && m.WalOffset != nil {
		return *m.WalOffset, true, nil
	}
	if e := m.connErr(); e != nil {
		return 0, false, fmt.Errorf("watch: %s: %s", e.Code, e.Message)
	}
	return 0, false, nil
}

// benchLagPrint is the text report's replica lag section.
func benchLagPrint(w io.Writer, reps []benchLagReport) {
	if len(reps) == 0 {
		return
	}
	fmt.Fprintf(w, "replica lag ms (primary's watcher to the replica's, every %dth offset)\n", benchLagEvery)
	for _, r := range reps {
		fmt.Fprintf(w, "  %-21s samples %d  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  not delivered %d\n",
			r.Addr, r.Samples, r.P50, r.P90, r.P99, r.Max, r.Undelivered)
		if r.Error != "" {
			fmt.Fprintf(w, "  %-21s error: %s\n", "", r.Error)
		}
	}
}
