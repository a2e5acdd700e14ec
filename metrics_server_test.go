package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// A real server with metrics enabled, scraped over HTTP after a known
// workload: every counter and gauge has the exact expected value.
func TestMetricsAfterWorkload(t *testing.T) {
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *config) { c.MetricsEnabled = true })
	go ts.srv.serveMetrics(mln)
	c := ts.dial()
	mustOK(t, c, "PING", "")
	mustOK(t, c, "PING", "")
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	for i := 0; i < 3; i++ {
		mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"m%d"}`, i))
	}
	for i := 0; i < 5; i++ {
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"m0","event":"INC"}`)
	}
	call(t, c, "APPLY_EVENT", `{"instance_id":"m0","event":"NOPE"}`)
	call(t, c, "GET_INSTANCE", `{"instance_id":"zz"}`)
	call(t, c, "GET_INSTANCE", `{"instance_id":"zz"}`)
	mustOK(t, c, "DELETE_INSTANCE", `{"instance_id":"m2"}`)
	w := ts.dial()
	watchResult(t, w, "WATCH_ALL", `{}`)
	watchResult(t, w, "WATCH_INSTANCE", `{"instance_id":"m1"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"m1","event":"INC"}`)
	recvEvents(t, w, 2)

	want := map[string]float64{
		metricsKey("rstmdb_requests_total", "operation", "PING"):            2,
		metricsKey("rstmdb_requests_total", "operation", "PUT_MACHINE"):     1,
		metricsKey("rstmdb_requests_total", "operation", "CREATE_INSTANCE"): 3,
		metricsKey("rstmdb_requests_total", "operation", "APPLY_EVENT"):     7,
		metricsKey("rstmdb_requests_total", "operation", "GET_INSTANCE"):    2,
		metricsKey("rstmdb_requests_total", "operation", "DELETE_INSTANCE"): 1,
		metricsKey("rstmdb_requests_total", "operation", "WATCH_ALL"):       1,
		metricsKey("rstmdb_requests_total", "operation", "WATCH_INSTANCE"):  1,
		metricsKey("rstmdb_errors_total", "code", "INVALID_TRANSITION"):     1,
		metricsKey("rstmdb_errors_total", "code", "INSTANCE_NOT_FOUND"):     2,
		metricsKey("rstmdb_connections_active"):                             2,
		metricsKey("rstmdb_connections_total"):                              2,
		metricsKey("rstmdb_subscriptions_active", "type", "all"):            1,
		metricsKey("rstmdb_subscriptions_active", "type", "instance"):       1,
		metricsKey("rstmdb_events_forwarded_total", "type", "all"):          1,
		metricsKey("rstmdb_events_forwarded_total", "type", "instance"):     1,
		metricsKey("rstmdb_instances_total"):                                2,
		metricsKey("rstmdb_machines_total"):                                 1,
		metricsKey("rstmdb_wal_entries"):                                    11,
		metricsKey("rstmdb_wal_last_offset"):                                11,
		metricsKey("rstmdb_wal_writes_total"):                               11,
		metricsKey("rstmdb_output_queued_bytes"):                            0,
		metricsKey("rstmdb_accept_errors_total"):                            0,
	}
	// The event counters move just after an event is handed to its
	// connection, so the client can see the event a moment before the
	// count: scrape until they agree (at once, unless the machine is
	// loaded).
	var p metricsParsed
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get("http://" + mln.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p = metricsParse(t, string(body))
		same := true
		for k, v := range want {
			if p.values[k] != v {
				same = false
			}
		}
		if same || time.Now().After(deadline) {
			break
		}
	}
	for k, v := range want {
		if got, ok := p.values[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	// Every durable write went through a group commit that was measured.
	fs := p.values[metricsKey("rstmdb_wal_fsync_duration_seconds_count")]
	if fs < 1 || fs > 11 || p.values[metricsKey("rstmdb_wal_group_commit_records_sum")] != 11 {
		t.Errorf("fsync histogram count %v, group commit records sum %v", fs, p.values[metricsKey("rstmdb_wal_group_commit_records_sum")])
	}
	for _, path := range []string{"/health", "/healthz"} {
		resp, err := http.Get("http://" + mln.Addr().String() + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", path, resp, err)
		}
	}
}
