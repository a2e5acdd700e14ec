package main

// metrics.go is the Prometheus endpoint (§12.3). It is written by hand rather
// than with a client library so the module keeps its stdlib-only dependency
// set. Hot-path methods touch only atomics and a copy-on-write map, so they
// never lock or allocate once a label value has been seen; everything that
// costs (sorting, formatting, reading runtime stats) happens at scrape time.

import (
	"bytes"
	"math"
	"net/http"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bucket upper bounds. Durations are kept as integer nanoseconds so observing
// is a compare-and-add on integers and the sum stays exact.
var (
	metricsRequestBuckets = []uint64{
		1e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9,
	}
	// fsync latency spans page-cache syncs (tens of µs) to slow disks (1 s).
	metricsFsyncBuckets = []uint64{
		50e3, 100e3, 250e3, 500e3,
		1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9,
	}
	// Timer fire lag, due time to durable: milliseconds to minutes.
	metricsTimerLagBuckets = []uint64{
		1e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9, 5e9, 30e9, 120e9,
	}
	// Records per group commit, powers of two up to 4096.
	metricsGroupCommitBuckets = []uint64{
		1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
	}
)

// metricsStartTime approximates process start; it is captured at package
// init, which is as close as portable Go gets without reading /proc.
var metricsStartTime = time.Now()

// metricsHistogram is a fixed-bucket histogram over non-negative integers.
// counts holds per-bucket (non-cumulative) counts with one extra slot for
// +Inf; the count is derived from them at scrape time so _count always equals
// the +Inf bucket.
type metricsHistogram struct {
	bounds []uint64
	counts []atomic.Uint64
	sum    atomic.Uint64
}

func newMetricsHistogram(bounds []uint64) *metricsHistogram {
	return &metricsHistogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// observe records v. Bucket lists are short, so a linear scan beats a binary
// search and keeps the code obvious.
func (h *metricsHistogram) observe(v uint64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// metricsHistogramData is a scrape-time copy of a histogram with cumulative
// buckets; the last element of cumulative is the +Inf bucket (= count).
type metricsHistogramData struct {
	cumulative []uint64
	sum        uint64
}

func (h *metricsHistogram) read() metricsHistogramData {
	d := metricsHistogramData{cumulative: make([]uint64, len(h.counts))}
	var acc uint64
	for i := range h.counts {
		acc += h.counts[i].Load()
		d.cumulative[i] = acc
	}
	d.sum = h.sum.Load()
	return d
}

func (d metricsHistogramData) count() uint64 { return d.cumulative[len(d.cumulative)-1] }

// metricsLabeled maps a label value to a per-value *T. Reads are a lock-free
// atomic load plus a map lookup (no allocation); a new value copies the map
// under mu, which happens once per distinct label value.
type metricsLabeled[T any] struct {
	mu   sync.Mutex
	m    atomic.Pointer[map[string]*T]
	newT func() *T
}

func newMetricsLabeled[T any](mk func() *T, seed ...string) *metricsLabeled[T] {
	l := &metricsLabeled[T]{newT: mk}
	m := make(map[string]*T, len(seed))
	for _, s := range seed {
		m[s] = mk()
	}
	l.m.Store(&m)
	return l
}

func (l *metricsLabeled[T]) get(key string) *T {
	if v, ok := (*l.m.Load())[key]; ok {
		return v
	}
	return l.slowGet(key)
}

// slowGet is split out so get stays small enough to inline.
func (l *metricsLabeled[T]) slowGet(key string) *T {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.m.Load()
	if v, ok := old[key]; ok {
		return v
	}
	next := make(map[string]*T, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	v := l.newT()
	// Clone the key: callers may pass a string aliasing a reused buffer.
	next[strings.Clone(key)] = v
	l.m.Store(&next)
	return v
}

// sorted returns the current label values in order, for deterministic output.
func (l *metricsLabeled[T]) sorted() ([]string, map[string]*T) {
	m := *l.m.Load()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, m
}

// metricsOp is the per-operation state; requests_total is the histogram's
// count, so the two can never disagree.
type metricsOp struct {
	dur *metricsHistogram
}

// metrics holds every server-side series. All methods are safe for concurrent
// use.
type metrics struct {
	ops       *metricsLabeled[metricsOp]
	errors    *metricsLabeled[atomic.Uint64]
	subs      *metricsLabeled[atomic.Int64]
	forwarded *metricsLabeled[atomic.Uint64]

	connsTotal    atomic.Uint64
	connsActive   atomic.Int64
	connsRejected atomic.Uint64
	authFailures  atomic.Uint64
	acceptErrors  atomic.Uint64

	fsyncDur     *metricsHistogram
	groupRecords *metricsHistogram
	timerLagDur  *metricsHistogram
}

func newMetrics() *metrics {
	return &metrics{
		ops: newMetricsLabeled(func() *metricsOp {
			return &metricsOp{dur: newMetricsHistogram(metricsRequestBuckets)}
		}),
		errors: newMetricsLabeled(func() *atomic.Uint64 { return new(atomic.Uint64) }),
		// Seeded so dashboards see explicit zeros before the first WATCH.
		subs:         newMetricsLabeled(func() *atomic.Int64 { return new(atomic.Int64) }, "all", "instance"),
		forwarded:    newMetricsLabeled(func() *atomic.Uint64 { return new(atomic.Uint64) }, "all", "instance"),
		fsyncDur:     newMetricsHistogram(metricsFsyncBuckets),
		groupRecords: newMetricsHistogram(metricsGroupCommitBuckets),
		timerLagDur:  newMetricsHistogram(metricsTimerLagBuckets),
	}
}

// metricsNanos clamps negative durations (clock steps) to zero.
func metricsNanos(d time.Duration) uint64 {
	if d < 0 {
		return 0
	}
	return uint64(d)
}

// request records one completed request; code is the RCP error code, or ""
// on success.
func (m *metrics) request(op string, code string, d time.Duration) {
	m.ops.get(op).dur.observe(metricsNanos(d))
	if code != "" {
		m.errors.get(code).Add(1)
	}
}

// connOpened counts an accepted connection; rejected ones go to connRejected
// only.
func (m *metrics) connOpened() {
	m.connsTotal.Add(1)
	m.connsActive.Add(1)
}

func (m *metrics) connClosed()   { m.connsActive.Add(-1) }
func (m *metrics) connRejected() { m.connsRejected.Add(1) }
func (m *metrics) authFailure()  { m.authFailures.Add(1) }
func (m *metrics) acceptError()  { m.acceptErrors.Add(1) }

func (m *metrics) subscriptionAdded(kind string)   { m.subs.get(kind).Add(1) }
func (m *metrics) subscriptionRemoved(kind string) { m.subs.get(kind).Add(-1) }

func (m *metrics) eventsForwarded(kind string, n int) {
	if n > 0 {
		m.forwarded.get(kind).Add(uint64(n))
	}
}

// fsync records one WAL sync and how many records it made durable.
func (m *metrics) fsync(d time.Duration, records int) {
	m.fsyncDur.observe(metricsNanos(d))
	if records < 0 {
		records = 0
	}
	m.groupRecords.observe(uint64(records))
}

// timerLag records how long after its due time a fired timer's record was
// durable.
func (m *metrics) timerLag(d time.Duration) { m.timerLagDur.observe(metricsNanos(d)) }

// metricsSnapshot holds gauges the server computes at scrape time, so they
// are never stale (unlike the reference, which refreshes them only on writes).
type metricsSnapshot struct {
	Instances, Machines                                           uint64
	WalEntries, WalSegments, WalSizeBytes                         uint64
	WalBytesWritten, WalBytesRead, WalWrites, WalReads, WalFsyncs uint64
	WalLastLSN                                                    uint64
	OutputQueuedBytes                                             uint64
	TimersArmed, TimersFired, TimersGuardFailed                   uint64
	Repl                                                          replMetrics
	Disk                                                          diskInfo
}

// metricsFamily is one metric family ready to print. Samples are already in
// output order.
type metricsFamily struct {
	name, help, typ string
	samples         []metricsSample
}

type metricsSample struct {
	suffix string   // "", "_bucket", "_sum", "_count"
	labels []string // name, value, name, value, ...
	value  string
}

func metricsUint(v uint64) string { return strconv.FormatUint(v, 10) }
func metricsInt(v int64) string   { return strconv.FormatInt(v, 10) }

func metricsFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// metricsScalar builds a single-sample family.
func metricsScalar(name, typ, help, value string) metricsFamily {
	return metricsFamily{name: name, typ: typ, help: help, samples: []metricsSample{{value: value}}}
}

// metricsHistogramSamples appends the bucket/_sum/_count series for one label
// set. scale converts stored units to the exported unit (1e9 for ns → s).
func metricsHistogramSamples(dst []metricsSample, bounds []uint64, d metricsHistogramData, scale float64, labels []string) []metricsSample {
	le := func(s string) []string {
		return append(slices.Clip(labels), "le", s)
	}
	for i, b := range bounds {
		dst = append(dst, metricsSample{"_bucket", le(strconv.FormatFloat(float64(b)/scale, 'f', -1, 64)), metricsUint(d.cumulative[i])})
	}
	dst = append(dst,
		metricsSample{"_bucket", le("+Inf"), metricsUint(d.count())},
		metricsSample{"_sum", labels, metricsFloat(float64(d.sum) / scale)},
		metricsSample{"_count", labels, metricsUint(d.count())},
	)
	return dst
}

// metricsRuntimeNames are the runtime/metrics read at scrape time.
var metricsRuntimeNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/sched/gomaxprocs:threads",
}

// collect gathers every family, sorted by name.
func (m *metrics) collect(snap metricsSnapshot) []metricsFamily {
	var fams []metricsFamily

	// Per-operation requests and durations.
	opKeys, ops := m.ops.sorted()
	reqs := metricsFamily{name: "rstmdb_requests_total", typ: "counter", help: "Requests handled, by operation."}
	durs := metricsFamily{name: "rstmdb_request_duration_seconds", typ: "histogram", help: "Request handling latency in seconds, by operation."}
	for _, op := range opKeys {
		d := ops[op].dur.read()
		labels := []string{"operation", op}
		reqs.samples = append(reqs.samples, metricsSample{labels: labels, value: metricsUint(d.count())})
		durs.samples = metricsHistogramSamples(durs.samples, metricsRequestBuckets, d, 1e9, labels)
	}
	fams = append(fams, reqs, durs)

	errKeys, errs := m.errors.sorted()
	ef := metricsFamily{name: "rstmdb_errors_total", typ: "counter", help: "Error responses, by error code."}
	for _, c := range errKeys {
		ef.samples = append(ef.samples, metricsSample{labels: []string{"code", c}, value: metricsUint(errs[c].Load())})
	}
	fams = append(fams, ef)

	subKeys, subs := m.subs.sorted()
	sf := metricsFamily{name: "rstmdb_subscriptions_active", typ: "gauge", help: "Active subscriptions, by type."}
	for _, k := range subKeys {
		sf.samples = append(sf.samples, metricsSample{labels: []string{"type", k}, value: metricsInt(subs[k].Load())})
	}
	fams = append(fams, sf)

	fwdKeys, fwd := m.forwarded.sorted()
	ff := metricsFamily{name: "rstmdb_events_forwarded_total", typ: "counter", help: "Events forwarded to subscribers, by subscription type."}
	for _, k := range fwdKeys {
		ff.samples = append(ff.samples, metricsSample{labels: []string{"type", k}, value: metricsUint(fwd[k].Load())})
	}
	fams = append(fams, ff)

	fsync := metricsFamily{name: "rstmdb_wal_fsync_duration_seconds", typ: "histogram", help: "WAL fsync latency in seconds."}
	fsync.samples = metricsHistogramSamples(nil, metricsFsyncBuckets, m.fsyncDur.read(), 1e9, nil)
	group := metricsFamily{name: "rstmdb_wal_group_commit_records", typ: "histogram", help: "WAL records made durable per fsync."}
	group.samples = metricsHistogramSamples(nil, metricsGroupCommitBuckets, m.groupRecords.read(), 1, nil)
	fams = append(fams, fsync, group)
	lag := metricsFamily{name: "rstmdb_timer_fire_lag_seconds", typ: "histogram", help: "Time from a timer's due time until its fired record is durable, in seconds."}
	lag.samples = metricsHistogramSamples(nil, metricsTimerLagBuckets, m.timerLagDur.read(), 1e9, nil)
	fams = append(fams, lag)

	fams = append(fams,
		metricsScalar("rstmdb_connections_total", "counter", "Client connections accepted.", metricsUint(m.connsTotal.Load())),
		metricsScalar("rstmdb_connections_active", "gauge", "Client connections currently open.", metricsInt(m.connsActive.Load())),
		metricsScalar("rstmdb_connections_rejected_total", "counter", "Client connections refused because max_connections was reached.", metricsUint(m.connsRejected.Load())),
		metricsScalar("rstmdb_auth_failures_total", "counter", "Failed AUTH attempts.", metricsUint(m.authFailures.Load())),
		metricsScalar("rstmdb_output_queued_bytes", "gauge", "Bytes of replies and events queued for clients that have not read them yet, over all connections.", metricsUint(snap.OutputQueuedBytes)),
		metricsScalar("rstmdb_accept_errors_total", "counter", "Failed accepts of client connections (out of file descriptors and the like), each retried after a pause.", metricsUint(m.acceptErrors.Load())),

		metricsScalar("rstmdb_instances_total", "gauge", "Instances that are not deleted.", metricsUint(snap.Instances)),
		metricsScalar("rstmdb_machines_total", "gauge", "Machine definitions, counting each (name, version) pair.", metricsUint(snap.Machines)),
		metricsScalar("rstmdb_wal_entries", "gauge", "Entries in the WAL.", metricsUint(snap.WalEntries)),
		metricsScalar("rstmdb_wal_segments", "gauge", "WAL segment files.", metricsUint(snap.WalSegments)),
		metricsScalar("rstmdb_wal_size_bytes", "gauge", "Total size of WAL segment files in bytes.", metricsUint(snap.WalSizeBytes)),
		metricsScalar("rstmdb_wal_bytes_written_total", "counter", "Bytes written to the WAL.", metricsUint(snap.WalBytesWritten)),
		metricsScalar("rstmdb_wal_bytes_read_total", "counter", "Bytes read from the WAL.", metricsUint(snap.WalBytesRead)),
		metricsScalar("rstmdb_wal_writes_total", "counter", "WAL record writes.", metricsUint(snap.WalWrites)),
		metricsScalar("rstmdb_wal_reads_total", "counter", "WAL record reads.", metricsUint(snap.WalReads)),
		metricsScalar("rstmdb_wal_fsyncs_total", "counter", "WAL fsync calls.", metricsUint(snap.WalFsyncs)),
		metricsScalar("rstmdb_wal_last_offset", "gauge", "Offset (LSN) of the last WAL entry.", metricsUint(snap.WalLastLSN)),
		metricsScalar("rstmdb_disk_used_bytes", "gauge", "Bytes of the files in the data directory: WAL segments as preallocated, snapshots, the emergency reserve.", metricsInt(snap.Disk.UsedBytes)),
		metricsScalar("rstmdb_disk_quota_bytes", "gauge", "The data directory's quota (storage.max_disk_mb) in bytes; 0 = no quota.", metricsInt(snap.Disk.QuotaBytes)),
		metricsScalar("rstmdb_disk_reserve_bytes", "gauge", "Bytes of the emergency reserve file; 0 while it is released (the disk was full).", metricsInt(snap.Disk.ReserveBytes)),
		metricsScalar("rstmdb_timers_armed", "gauge", "Timers armed (transitions with after_ms waiting to fire).", metricsUint(snap.TimersArmed)),
		metricsScalar("rstmdb_timers_fired_total", "counter", "Timers fired: their event applied and logged.", metricsUint(snap.TimersFired)),
		metricsScalar("rstmdb_timers_guard_failed_total", "counter", "Timers spent without a write because their transition's guard failed.", metricsUint(snap.TimersGuardFailed)),
	)

	fams = append(fams, snap.Repl.families()...) // replica.go
	fams = append(fams, metricsProcessFamilies()...)

	slices.SortFunc(fams, func(a, b metricsFamily) int { return strings.Compare(a.name, b.name) })
	return fams
}

// metricsProcessFamilies reads the standard Go and process series. They are
// cheap enough to read on every scrape (runtime/metrics does not stop the
// world).
func metricsProcessFamilies() []metricsFamily {
	samples := make([]rtmetrics.Sample, len(metricsRuntimeNames))
	for i, n := range metricsRuntimeNames {
		samples[i].Name = n
	}
	rtmetrics.Read(samples)
	u := func(s rtmetrics.Sample) uint64 {
		if s.Value.Kind() == rtmetrics.KindUint64 {
			return s.Value.Uint64()
		}
		return 0
	}
	fams := []metricsFamily{
		metricsScalar("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
			metricsFloat(float64(metricsStartTime.UnixNano())/1e9)),
		metricsScalar("go_goroutines", "gauge", "Number of goroutines that currently exist.", metricsInt(int64(runtime.NumGoroutine()))),
		metricsScalar("go_memstats_heap_alloc_bytes", "gauge", "Number of heap bytes allocated and still in use.", metricsUint(u(samples[0]))),
		metricsScalar("go_gomaxprocs", "gauge", "Value of GOMAXPROCS.", metricsUint(u(samples[1]))),
	}
	if cpu, ok := processCPUTime(); ok { // rusage_unix.go, rusage_windows.go
		fams = append(fams, metricsScalar("process_cpu_seconds_total", "counter",
			"Total user and system CPU time spent in seconds.", metricsFloat(cpu.Seconds())))
	}
	return fams
}

// metricsWrite renders families in text exposition format 0.0.4.
func metricsWrite(buf *bytes.Buffer, fams []metricsFamily) {
	for _, f := range fams {
		buf.WriteString("# HELP ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		metricsEscape(buf, f.help, false)
		buf.WriteString("\n# TYPE ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		buf.WriteString(f.typ)
		buf.WriteByte('\n')
		for _, s := range f.samples {
			buf.WriteString(f.name)
			buf.WriteString(s.suffix)
			if len(s.labels) > 0 {
				buf.WriteByte('{')
				for i := 0; i+1 < len(s.labels); i += 2 {
					if i > 0 {
						buf.WriteByte(',')
					}
					buf.WriteString(s.labels[i])
					buf.WriteString(`="`)
					metricsEscape(buf, s.labels[i+1], true)
					buf.WriteByte('"')
				}
				buf.WriteByte('}')
			}
			buf.WriteByte(' ')
			buf.WriteString(s.value)
			buf.WriteByte('\n')
		}
	}
}

// metricsEscape escapes backslash and newline (HELP text) and additionally
// double quotes (label values), as the text format requires.
func metricsEscape(buf *bytes.Buffer, s string, quote bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			buf.WriteString(`\\`)
		case c == '\n':
			buf.WriteString(`\n`)
		case c == '"' && quote:
			buf.WriteString(`\"`)
		default:
			buf.WriteByte(c)
		}
	}
}

const metricsIndexHTML = `<!DOCTYPE html>
<html><head><title>stmdb metrics</title></head>
<body><h1>stmdb metrics</h1><p><a href="/metrics">/metrics</a></p></body></html>
`

// handler serves the metrics listener. Any method is accepted, as in the
// reference; snap may be nil, which reports zero for the snapshot gauges.
func (m *metrics) handler(snap func() metricsSnapshot) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			var s metricsSnapshot
			if snap != nil {
				s = snap()
			}
			var buf bytes.Buffer
			buf.Grow(16 << 10) // a typical scrape; avoids repeated regrowth
			metricsWrite(&buf, m.collect(s))
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(buf.Bytes())
		case "/health", "/healthz":
			metricsText(w, http.StatusOK, "OK")
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(metricsIndexHTML))
		default:
			metricsText(w, http.StatusNotFound, "Not Found")
		}
	})
}

func metricsText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
