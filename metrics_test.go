package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// metricsParsed is what the test parser extracts from one scrape.
type metricsParsed struct {
	families []string          // family names in output order
	types    map[string]string // family -> TYPE
	helps    map[string]string // family -> HELP
	values   map[string]float64
	order    []string // sample keys in output order
}

// metricsKey renders a series identity: name{k="v",...} with raw
// (unescaped) values, labels in the given order.
func metricsKey(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i := 0; i < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", labels[i], labels[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

// metricsParse is a strict parser for the subset of text format 0.0.4 the
// server emits. It fails the test on anything malformed, on a sample whose
// family has no preceding HELP and TYPE, and on a family that is split.
func metricsParse(t *testing.T, body string) metricsParsed {
	t.Helper()
	p := metricsParsed{types: map[string]string{}, helps: map[string]string{}, values: map[string]float64{}}
	if !strings.HasSuffix(body, "\n") {
		t.Fatalf("body does not end in newline")
	}
	cur := ""
	for ln, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: %s", ln+1, line, fmt.Sprintf(format, args...))
		}
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, help, ok := strings.Cut(rest, " ")
			if !ok || help == "" {
				fail("bad HELP")
			}
			if _, dup := p.helps[name]; dup {
				fail("family %s repeated", name)
			}
			p.helps[name] = help
			p.families = append(p.families, name)
			cur = name
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			if name != cur {
				fail("TYPE for %s not right after its HELP", name)
			}
			switch typ {
			case "counter", "gauge", "histogram", "summary", "untyped":
			default:
				fail("bad type %q", typ)
			}
			p.types[name] = typ
			continue
		}
		if strings.HasPrefix(line, "#") || line == "" {
			fail("unexpected comment or blank line")
		}
		// name[{labels}] value
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			fail("no name")
		}
		name := line[:i]
		rest := line[i:]
		var labels []string
		if rest[0] == '{' {
			rest = rest[1:]
			for rest[0] != '}' {
				eq := strings.IndexByte(rest, '=')
				if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
					fail("bad label")
				}
				lname := rest[:eq]
				rest = rest[eq+2:]
				var v strings.Builder
				for {
					if rest == "" {
						fail("unterminated label value")
					}
					c := rest[0]
					rest = rest[1:]
					if c == '"' {
						break
					}
					if c == '\n' {
						fail("raw newline in label value")
					}
					if c == '\\' {
						switch rest[0] {
						case '\\':
							v.WriteByte('\\')
						case '"':
							v.WriteByte('"')
						case 'n':
							v.WriteByte('\n')
						default:
							fail("bad escape")
						}
						rest = rest[1:]
						continue
					}
					v.WriteByte(c)
				}
				labels = append(labels, lname, v.String())
				if rest[0] == ',' {
					rest = rest[1:]
				}
			}
			rest = rest[1:]
		}
		val, ok := strings.CutPrefix(rest, " ")
		if !ok {
			fail("no space before value")
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			fail("bad value: %v", err)
		}
		fam := name
		if p.types[cur] == "histogram" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suf); ok && base == cur {
					fam = base
				}
			}
		}
		if fam != cur || p.types[cur] == "" {
			fail("sample outside its family's HELP/TYPE block (current %q)", cur)
		}
		key := metricsKey(name, labels...)
		if _, dup := p.values[key]; dup {
			fail("duplicate series")
		}
		p.values[key] = f
		p.order = append(p.order, key)
	}
	return p
}

func metricsScrape(t *testing.T, h http.Handler) metricsParsed {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}
	return metricsParse(t, rec.Body.String())
}

// metricsHist expands a histogram's expected series into want. cum holds
// the cumulative count for each le in les, then the +Inf bucket.
func metricsHist(want map[string]float64, name string, labels []string, les []string, cum []float64, sum float64) {
	if len(les)+1 != len(cum) {
		panic("cum must have one entry per le plus +Inf")
	}
	for i, le := range append(slices.Clip(les), "+Inf") {
		want[metricsKey(name+"_bucket", append(slices.Clip(labels), "le", le)...)] = cum[i]
	}
	want[metricsKey(name+"_sum", labels...)] = sum
	want[metricsKey(name+"_count", labels...)] = cum[len(cum)-1]
}

var (
	metricsTestReqLEs   = []string{"0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1"}
	metricsTestFsyncLEs = []string{"0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1"}
	metricsTestGroupLEs = []string{"1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "2048", "4096"}
)

func TestMetricsExposition(t *testing.T) {
	m := newMetrics()
	weird := "we\"ird\\op\nx"

	m.request("PING", "", 500*time.Microsecond)
	m.request("PING", "", 3*time.Millisecond)
	m.request("PING", "", 2*time.Second)
	m.request("APPLY_EVENT", "GUARD_FAILED", time.Millisecond) // on a bound: le is inclusive
	m.request("APPLY_EVENT", "GUARD_FAILED", 10*time.Millisecond)
	m.request(weird, "", -time.Second) // clamped to 0
	m.connOpened()
	m.connOpened()
	m.connClosed()
	m.connRejected()
	m.authFailure()
	m.subscriptionAdded("instance")
	m.subscriptionAdded("instance")
	m.subscriptionRemoved("instance")
	m.subscriptionAdded("all")
	m.eventsForwarded("all", 5)
	m.eventsForwarded("instance", 0)
	m.fsync(40*time.Microsecond, 1)
	m.fsync(50*time.Microsecond, 3)
	m.fsync(2*time.Millisecond, 4096)
	m.fsync(3*time.Second, 5000)

	snap := metricsSnapshot{
		Instances: 7, Machines: 2, WalEntries: 11, WalSegments: 1, WalSizeBytes: 4096,
		WalBytesWritten: 5000, WalBytesRead: 300, WalWrites: 11, WalReads: 4, WalFsyncs: 4,
		WalLastLSN: 1099511627786, TimersArmed: 3, TimersFired: 5, TimersGuardFailed: 1,
		Repl: replMetrics{Connected: 2, Lags: []replicaInfo{{ID: "r1", LagMS: 12, LagRecords: 3}}, Applied: 9, Degradations: 1, Synchronous: true, Epoch: 2},
		Disk: diskInfo{UsedBytes: 3 << 20, QuotaBytes: 8 << 20, ReserveBytes: 1 << 20},
	}
	m.timerLag(2 * time.Millisecond)
	m.timerLag(40 * time.Second)
	p := metricsScrape(t, m.handler(func() metricsSnapshot { return snap }))

	want := map[string]float64{
		metricsKey("rstmdb_requests_total", "operation", "APPLY_EVENT"): 2,
		metricsKey("rstmdb_requests_total", "operation", "PING"):        3,
		metricsKey("rstmdb_requests_total", "operation", weird):         1,
		metricsKey("rstmdb_errors_total", "code", "GUARD_FAILED"):       2,
		"rstmdb_connections_total":                                      2,
		"rstmdb_connections_active":                                     1,
		"rstmdb_connections_rejected_total":                             1,
		"rstmdb_auth_failures_total":                                    1,
		"rstmdb_accept_errors_total":                                    0,
		metricsKey("rstmdb_subscriptions_active", "type", "all"):        1,
		metricsKey("rstmdb_subscriptions_active", "type", "instance"):   1,
		metricsKey("rstmdb_events_forwarded_total", "type", "all"):      5,
		metricsKey("rstmdb_events_forwarded_total", "type", "instance"): 0,
		"rstmdb_instances_total":                                        7,
		"rstmdb_machines_total":                                         2,
		"rstmdb_output_queued_bytes":                                    0,
		"rstmdb_wal_entries":                                            11,
		"rstmdb_wal_segments":                                           1,
		"rstmdb_wal_size_bytes":                                         4096,
		"rstmdb_wal_bytes_written_total":                                5000,
		"rstmdb_wal_bytes_read_total":                                   300,
		"rstmdb_wal_writes_total":                                       11,
		"rstmdb_wal_reads_total":                                        4,
		"rstmdb_wal_fsyncs_total":                                       4,
		"rstmdb_wal_last_offset":                                        1099511627786,
		"rstmdb_timers_armed":                                           3,
		"rstmdb_disk_used_bytes":                                        3 << 20,
		"rstmdb_disk_quota_bytes":                                       8 << 20,
		"rstmdb_disk_reserve_bytes":                                     1 << 20,
		"rstmdb_timers_fired_total":                                     5,
		"rstmdb_timers_guard_failed_total":                              1,
		"rstmdb_replication_is_replica":                                 0,
		"rstmdb_replication_epoch":                                      2,
		"rstmdb_replication_connected_replicas":                         2,
		`rstmdb_replication_replica_lag_ms{replica="r1"}`:               12,
		`rstmdb_replication_replica_lag_records{replica="r1"}`:          3,
		"rstmdb_replication_lag_ms":                                     0,
		"rstmdb_replication_lag_records":                                0,
		"rstmdb_replication_applied_records_total":                      9,
		"rstmdb_replication_synchronous":                                1,
		"rstmdb_replication_sync_degradations_total":                    1,
	}
	metricsHist(want, "rstmdb_timer_fire_lag_seconds", nil,
		[]string{"0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "5", "30", "120"},
		[]float64{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2}, 40.002)
	const rd = "rstmdb_request_duration_seconds"
	metricsHist(want, rd, []string{"operation", "APPLY_EVENT"}, metricsTestReqLEs,
		[]float64{1, 1, 2, 2, 2, 2, 2, 2, 2, 2}, 0.011)
	metricsHist(want, rd, []string{"operation", "PING"}, metricsTestReqLEs,
		[]float64{1, 2, 2, 2, 2, 2, 2, 2, 2, 3}, float64(2003500000)/1e9)
	metricsHist(want, rd, []string{"operation", weird}, metricsTestReqLEs,
		[]float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 0)
	metricsHist(want, "rstmdb_wal_fsync_duration_seconds", nil, metricsTestFsyncLEs,
		[]float64{2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4}, float64(3002090000)/1e9)
	metricsHist(want, "rstmdb_wal_group_commit_records", nil, metricsTestGroupLEs,
		[]float64{1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4}, 1+3+4096+5000)

	got := map[string]float64{}
	for k, v := range p.values {
		if strings.HasPrefix(k, "rstmdb_") {
			got[k] = v
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rstmdb series mismatch (-want +got):\n%s", diff)
	}

	// Process and runtime series: present and plausible.
	for _, name := range []string{"process_start_time_seconds", "go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "go_gomaxprocs"} {
		if v, ok := p.values[name]; !ok || v <= 0 {
			t.Errorf("%s = %v, present %v; want > 0", name, v, ok)
		}
	}
	if st := p.values["process_start_time_seconds"]; st > float64(time.Now().Unix())+1 || st < float64(time.Now().Add(-24*time.Hour).Unix()) {
		t.Errorf("process_start_time_seconds = %v, implausible", st)
	}

	wantTypes := map[string]string{
		"rstmdb_requests_total":                      "counter",
		"rstmdb_errors_total":                        "counter",
		"rstmdb_request_duration_seconds":            "histogram",
		"rstmdb_connections_total":                   "counter",
		"rstmdb_connections_active":                  "gauge",
		"rstmdb_connections_rejected_total":          "counter",
		"rstmdb_auth_failures_total":                 "counter",
		"rstmdb_accept_errors_total":                 "counter",
		"rstmdb_subscriptions_active":                "gauge",
		"rstmdb_events_forwarded_total":              "counter",
		"rstmdb_wal_fsync_duration_seconds":          "histogram",
		"rstmdb_wal_group_commit_records":            "histogram",
		"rstmdb_instances_total":                     "gauge",
		"rstmdb_machines_total":                      "gauge",
		"rstmdb_output_queued_bytes":                 "gauge",
		"rstmdb_wal_entries":                         "gauge",
		"rstmdb_wal_segments":                        "gauge",
		"rstmdb_wal_size_bytes":                      "gauge",
		"rstmdb_wal_bytes_written_total":             "counter",
		"rstmdb_wal_bytes_read_total":                "counter",
		"rstmdb_wal_writes_total":                    "counter",
		"rstmdb_wal_reads_total":                     "counter",
		"rstmdb_wal_fsyncs_total":                    "counter",
		"rstmdb_wal_last_offset":                     "gauge",
		"rstmdb_timers_armed":                        "gauge",
		"rstmdb_disk_used_bytes":                     "gauge",
		"rstmdb_disk_quota_bytes":                    "gauge",
		"rstmdb_disk_reserve_bytes":                  "gauge",
		"rstmdb_timers_fired_total":                  "counter",
		"rstmdb_timers_guard_failed_total":           "counter",
		"rstmdb_replication_is_replica":              "gauge",
		"rstmdb_replication_epoch":                   "gauge",
		"rstmdb_replication_connected_replicas":      "gauge",
		"rstmdb_replication_replica_lag_ms":          "gauge",
		"rstmdb_replication_replica_lag_records":     "gauge",
		"rstmdb_replication_lag_ms":                  "gauge",
		"rstmdb_replication_lag_records":             "gauge",
		"rstmdb_replication_applied_records_total":   "counter",
		"rstmdb_replication_synchronous":             "gauge",
		"rstmdb_replication_sync_degradations_total": "counter",
		"rstmdb_timer_fire_lag_seconds":              "histogram",
		"process_start_time_seconds":                 "gauge",
		"process_cpu_seconds_total":                  "counter",
		"go_goroutines":                              "gauge",
		"go_gomaxprocs":                              "gauge",
		"go_memstats_heap_alloc_bytes":               "gauge",
	}
	if diff := cmp.Diff(wantTypes, p.types); diff != "" {
		t.Errorf("TYPE lines mismatch (-want +got):\n%s", diff)
	}
	for _, f := range p.families {
		if p.helps[f] == "" {
			t.Errorf("family %s has no HELP text", f)
		}
	}
	if !slices.IsSorted(p.families) {
		t.Errorf("families not sorted: %v", p.families)
	}
	metricsCheckHistograms(t, p)

	// Within a family, series appear sorted by label value (and for
	// histograms, grouped per label set with buckets ascending).
	var reqOrder []string
	for _, k := range p.order {
		if strings.HasPrefix(k, "rstmdb_requests_total{") {
			reqOrder = append(reqOrder, k)
		}
	}
	wantOrder := []string{
		metricsKey("rstmdb_requests_total", "operation", "APPLY_EVENT"),
		metricsKey("rstmdb_requests_total", "operation", "PING"),
		metricsKey("rstmdb_requests_total", "operation", weird),
	}
	if diff := cmp.Diff(wantOrder, reqOrder); diff != "" {
		t.Errorf("series order (-want +got):\n%s", diff)
	}
}

// metricsCheckHistograms checks every histogram in a scrape for internal
// consistency: buckets ascending and cumulative, +Inf last and equal to
// _count.
func metricsCheckHistograms(t *testing.T, p metricsParsed) {
	t.Helper()
	for fam, typ := range p.types {
		if typ != "histogram" {
			continue
		}
		type series struct {
			les  []float64
			cums []float64
		}
		byLabels := map[string]*series{}
		var labelSets []string
		for _, k := range p.order {
			rest, ok := strings.CutPrefix(k, fam+"_bucket")
			if !ok {
				continue
			}
			i := strings.LastIndex(rest, `le="`)
			if i < 0 {
				t.Fatalf("%s: bucket without le", k)
			}
			base := strings.TrimSuffix(rest[:i], ",")
			le, err := strconv.ParseFloat(strings.TrimSuffix(rest[i+4:], `"}`), 64)
			if err != nil {
				t.Fatalf("%s: bad le: %v", k, err)
			}
			s := byLabels[base]
			if s == nil {
				s = &series{}
				byLabels[base] = s
				labelSets = append(labelSets, base)
			}
			s.les = append(s.les, le)
			s.cums = append(s.cums, p.values[k])
		}
		if len(labelSets) == 0 {
			t.Errorf("%s: no buckets", fam)
		}
		for _, base := range labelSets {
			s := byLabels[base]
			if !slices.IsSorted(s.les) || !slices.IsSorted(s.cums) {
				t.Errorf("%s%s: buckets not ascending/cumulative: le=%v cum=%v", fam, base, s.les, s.cums)
			}
			if last := s.les[len(s.les)-1]; last != inf() {
				t.Errorf("%s%s: last bucket le=%v, want +Inf", fam, base, last)
			}
			countKey := fam + "_count"
			if base != "{" {
				countKey += base + "}"
			}
			if c, ok := p.values[countKey]; !ok || c != s.cums[len(s.cums)-1] {
				t.Errorf("%s: _count %v (present %v) != +Inf bucket %v", countKey, c, ok, s.cums[len(s.cums)-1])
			}
		}
	}
}

func inf() float64 { f, _ := strconv.ParseFloat("+Inf", 64); return f }

func TestMetricsHTTP(t *testing.T) {
	h := newMetrics().handler(nil)
	tests := []struct {
		method, path string
		code         int
		ctype        string
		body         string // exact unless contains is set
		contains     string
	}{
		{"GET", "/health", 200, "text/plain; charset=utf-8", "OK", ""},
		{"GET", "/healthz", 200, "text/plain; charset=utf-8", "OK", ""},
		{"POST", "/healthz", 200, "text/plain; charset=utf-8", "OK", ""},
		{"GET", "/", 200, "text/html; charset=utf-8", "", `href="/metrics"`},
		{"GET", "/metrics", 200, "text/plain; version=0.0.4; charset=utf-8", "", "# TYPE rstmdb_requests_total counter\n"},
		{"POST", "/metrics", 200, "text/plain; version=0.0.4; charset=utf-8", "", "rstmdb_instances_total 0\n"},
		{"GET", "/nope", 404, "text/plain; charset=utf-8", "Not Found", ""},
		{"GET", "/metrics/", 404, "text/plain; charset=utf-8", "Not Found", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			body := rec.Body.String()
			got := []any{rec.Code, rec.Header().Get("Content-Type")}
			if diff := cmp.Diff([]any{tc.code, tc.ctype}, got); diff != "" {
				t.Errorf("status/content-type (-want +got):\n%s", diff)
			}
			if tc.contains != "" {
				if !strings.Contains(body, tc.contains) {
					t.Errorf("body lacks %q:\n%s", tc.contains, body)
				}
			} else if body != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
		})
	}
}

// TestMetricsServer scrapes through a real listener to cover Content-Length
// and the HTTP/1.1 path end to end.
func TestMetricsServer(t *testing.T) {
	m := newMetrics()
	m.request("PING", "", time.Millisecond)
	srv := httptest.NewServer(m.handler(func() metricsSnapshot { return metricsSnapshot{Instances: 3} }))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := metricsParse(t, string(b))
	got := []float64{p.values[metricsKey("rstmdb_requests_total", "operation", "PING")], p.values["rstmdb_instances_total"]}
	if diff := cmp.Diff([]float64{1, 3}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if resp.ContentLength != int64(len(b)) {
		t.Errorf("Content-Length %d, body %d", resp.ContentLength, len(b))
	}
}

func TestMetricsEscape(t *testing.T) {
	tests := []struct {
		in    string
		quote bool
		want  string
	}{
		{"plain", true, "plain"},
		{`a\b`, true, `a\\b`},
		{"a\nb", true, `a\nb`},
		{`a"b`, true, `a\"b`},
		{`a"b`, false, `a"b`},
		{"\\\n\"", true, `\\\n\"`},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		metricsEscape(&b, tc.in, tc.quote)
		if diff := cmp.Diff(tc.want, b.String()); diff != "" {
			t.Errorf("metricsEscape(%q, %v) (-want +got):\n%s", tc.in, tc.quote, diff)
		}
	}
}

// TestMetricsConcurrent hammers every method from many goroutines while
// scraping, then checks exact totals. Run with -race.
func TestMetricsConcurrent(t *testing.T) {
	const workers, iters = 16, 500
	m := newMetrics()
	h := m.handler(func() metricsSnapshot { return metricsSnapshot{} })
	ops := []string{"PING", "APPLY_EVENT", "GET_INSTANCE", "WATCH_ALL"}
	// Each worker also creates its own op label, racing lazy creation.
	ownOps := make([]string, workers)
	for i := range ownOps {
		ownOps[i] = fmt.Sprintf("OP_%02d", i)
	}

	stop := make(chan struct{})
	scraped := make(chan int)
	go func() {
		n := 0
		defer func() { scraped <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			n++
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range iters {
				code := ""
				if i%5 == 0 {
					code = "NOT_FOUND"
				}
				m.request(ops[(w+i)%len(ops)], code, time.Duration(i)*time.Millisecond)
				m.request(ownOps[w], "", 0)
				m.connOpened()
				m.connClosed()
				m.connRejected()
				m.authFailure()
				m.subscriptionAdded("all")
				m.subscriptionAdded("instance")
				m.subscriptionRemoved("instance")
				m.eventsForwarded("all", 2)
				m.fsync(time.Duration(i)*time.Microsecond, i%7+1)
			}
		})
	}
	wg.Wait()
	close(stop)
	if n := <-scraped; n == 0 {
		t.Log("scraper never ran concurrently")
	}

	p := metricsScrape(t, h)
	const total = workers * iters
	want := map[string]float64{
		"rstmdb_connections_total":                                      total,
		"rstmdb_connections_active":                                     0,
		"rstmdb_connections_rejected_total":                             total,
		"rstmdb_auth_failures_total":                                    total,
		metricsKey("rstmdb_errors_total", "code", "NOT_FOUND"):          total / 5,
		metricsKey("rstmdb_subscriptions_active", "type", "all"):        total,
		metricsKey("rstmdb_subscriptions_active", "type", "instance"):   0,
		metricsKey("rstmdb_events_forwarded_total", "type", "all"):      2 * total,
		metricsKey("rstmdb_events_forwarded_total", "type", "instance"): 0,
		"rstmdb_wal_fsync_duration_seconds_count":                       total,
		"rstmdb_wal_group_commit_records_count":                         total,
	}
	for _, op := range ops {
		want[metricsKey("rstmdb_requests_total", "operation", op)] = total / float64(len(ops))
	}
	for _, op := range ownOps {
		want[metricsKey("rstmdb_requests_total", "operation", op)] = iters
	}
	got := map[string]float64{}
	for k := range want {
		got[k] = p.values[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
	// Sum of fsync durations: workers * sum_{i<iters} i µs, exact in ns.
	wantSum := float64(uint64(workers)*uint64(iters*(iters-1)/2)*1000) / 1e9
	if got := p.values["rstmdb_wal_fsync_duration_seconds_sum"]; got != wantSum {
		t.Errorf("fsync sum %v, want %v", got, wantSum)
	}
	metricsCheckHistograms(t, p)
}

func TestMetricsZeroAlloc(t *testing.T) {
	m := newMetrics()
	m.request("APPLY_EVENT", "", time.Millisecond)
	m.request("APPLY_EVENT", "GUARD_FAILED", time.Millisecond)
	tests := []struct {
		name string
		f    func()
	}{
		{"request ok", func() { m.request("APPLY_EVENT", "", 3*time.Millisecond) }},
		{"request error", func() { m.request("APPLY_EVENT", "GUARD_FAILED", 3*time.Millisecond) }},
		{"fsync", func() { m.fsync(200*time.Microsecond, 12) }},
		{"conn", func() { m.connOpened(); m.connClosed(); m.connRejected(); m.authFailure() }},
		{"subscriptions", func() {
			m.subscriptionAdded("instance")
			m.subscriptionRemoved("instance")
			m.eventsForwarded("all", 3)
		}},
	}
	for _, tc := range tests {
		if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", tc.name, n)
		}
	}
}

func BenchmarkMetricsRequest(b *testing.B) {
	m := newMetrics()
	ops := []string{"PING", "APPLY_EVENT", "GET_INSTANCE", "CREATE_INSTANCE"}
	for _, op := range ops {
		m.request(op, "", 0)
	}
	m.request("APPLY_EVENT", "GUARD_FAILED", 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			code := ""
			if i%8 == 0 {
				code = "GUARD_FAILED"
			}
			m.request(ops[i%len(ops)], code, time.Duration(i%2000)*time.Microsecond)
			i++
		}
	})
}

func BenchmarkMetricsScrape(b *testing.B) {
	m := newMetrics()
	for _, op := range []string{"PING", "APPLY_EVENT", "GET_INSTANCE", "CREATE_INSTANCE", "WATCH_ALL", "BATCH"} {
		m.request(op, "", time.Millisecond)
	}
	h := m.handler(func() metricsSnapshot { return metricsSnapshot{} })
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
}
