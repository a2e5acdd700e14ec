package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// event is the wire shape of a subscription event.
type event struct {
	Type           string          `json:"type"`
	SubscriptionID string          `json:"subscription_id"`
	InstanceID     string          `json:"instance_id"`
	Machine        string          `json:"machine"`
	Version        int             `json:"version"`
	WalOffset      uint64          `json:"wal_offset"`
	FromState      string          `json:"from_state"`
	ToState        string          `json:"to_state"`
	Event          string          `json:"event"`
	Payload        json.RawMessage `json:"payload"`
	Ctx            json.RawMessage `json:"ctx"`
}

// recvEvents reads n events (skipping nothing else: a response in between
// fails the test).
func recvEvents(t *testing.T, c *client, n int) []event {
	t.Helper()
	var evs []event
	for len(evs) < n {
		m, err := c.recv()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(evs), n, err)
		}
		if m.Type != "event" {
			t.Fatalf("expected an event, got %s", m.Raw)
		}
		var ev event
		if err := json.Unmarshal(m.Raw, &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// expectQuiet checks that nothing more arrives for a short while.
func expectQuiet(t *testing.T, c *client) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if m, err := c.recv(); err == nil {
		t.Errorf("unexpected message: %s", m.Raw)
	}
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	c.fr = newFrameReader(c.nc) // the timeout error is sticky in the reader
}

func watchResult(t *testing.T, c *client, op, params string) string {
	t.Helper()
	var r struct {
		SubscriptionID string `json:"subscription_id"`
	}
	json.Unmarshal(mustOK(t, c, op, params), &r)
	if !strings.HasPrefix(r.SubscriptionID, "sub-") {
		t.Fatalf("%s: subscription id %q", op, r.SubscriptionID)
	}
	return r.SubscriptionID
}

func TestWatchFiltersAndShapes(t *testing.T) {
	ts := startServer(t, nil)
	w := ts.dial()
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o1","initial_ctx":{"amount":5}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o2","initial_ctx":{"amount":5}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"k"}`) // lsn 5

	runSteps(t, w, []step{
		{op: "WATCH_INSTANCE", params: `{"instance_id":"o1"}`,
			want: `{"current_state":"created","current_wal_offset":3,"instance_id":"o1","subscription_id":"<any>"}`},
		{op: "WATCH_INSTANCE", params: `{"instance_id":"nope"}`, code: codeInstanceNotFound},
		{op: "WATCH_ALL", params: `{"machines":["order"],"to_states":["cancelled","shipped"],"include_ctx":false}`,
			want: `{"subscription_id":"<any>","wal_offset":5}`},
		{op: "WATCH_ALL", params: `{"machines":"order"}`, code: codeBadRequest, messageHas: "machines"},
		{op: "WATCH_ALL", params: `{"include_ctx":"yes"}`, code: codeBadRequest, messageHas: "include_ctx"},
	})
	// Write: o1 PAY (lsn 6), o2 CANCEL (7), k INC (8), o1 SHIP (9),
	// a failing event (no record), an idempotent retry (no record).
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"o1","event":"PAY","payload":{"p":1},"idempotency_key":"i1"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"o2","event":"CANCEL"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"k","event":"INC"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"o1","event":"SHIP"}`)
	call(t, c, "APPLY_EVENT", `{"instance_id":"o1","event":"PAY"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"o1","event":"PAY","payload":{"p":1},"idempotency_key":"i1"}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o3"}`)
	mustOK(t, c, "DELETE_INSTANCE", `{"instance_id":"o3"}`)

	evs := recvEvents(t, w, 4)
	for i := range evs {
		evs[i].SubscriptionID = fmt.Sprint(i) // ids are random; checked below
	}
	want := []event{
		{Type: "event", InstanceID: "o1", Machine: "order", Version: 1, WalOffset: 6, FromState: "created", ToState: "paid", Event: "PAY", Payload: json.RawMessage(`{"p":1}`), Ctx: json.RawMessage(`{"amount":5,"p":1}`)},
		{Type: "event", InstanceID: "o2", Machine: "order", Version: 1, WalOffset: 7, FromState: "created", ToState: "cancelled", Event: "CANCEL", Payload: json.RawMessage(`{}`)},
		{Type: "event", InstanceID: "o1", Machine: "order", Version: 1, WalOffset: 9, FromState: "paid", ToState: "shipped", Event: "SHIP", Payload: json.RawMessage(`{}`), Ctx: json.RawMessage(`{"amount":5,"p":1}`)},
		{Type: "event", InstanceID: "o1", Machine: "order", Version: 1, WalOffset: 9, FromState: "paid", ToState: "shipped", Event: "SHIP", Payload: json.RawMessage(`{}`)},
	}
	// o1's SHIP matches both subscriptions: one copy each, in subscription
	// order; the WATCH_ALL copy has no ctx.
	for i := range want {
		want[i].SubscriptionID = fmt.Sprint(i)
	}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	expectQuiet(t, w)
}

func TestWatchUnwatchAndMultiple(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"a"}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"b"}`)
	sa := watchResult(t, c, "WATCH_INSTANCE", `{"instance_id":"a"}`)
	sb := watchResult(t, c, "WATCH_INSTANCE", `{"instance_id":"b"}`)
	w := ts.dial()
	mustOK(t, w, "APPLY_EVENT", `{"instance_id":"a","event":"INC"}`)
	mustOK(t, w, "APPLY_EVENT", `{"instance_id":"b","event":"INC"}`)
	evs := recvEvents(t, c, 2)
	if evs[0].SubscriptionID != sa || evs[1].SubscriptionID != sb {
		t.Errorf("subscription ids: %v %v, want %s %s", evs[0].SubscriptionID, evs[1].SubscriptionID, sa, sb)
	}
	runSteps(t, c, []step{
		{op: "UNWATCH", params: fmt.Sprintf(`{"subscription_id":%q}`, sa), want: fmt.Sprintf(`{"removed":true,"subscription_id":%q}`, sa)},
		{op: "UNWATCH", params: fmt.Sprintf(`{"subscription_id":%q}`, sa), want: fmt.Sprintf(`{"removed":false,"subscription_id":%q}`, sa)},
		{op: "UNWATCH", params: `{}`, code: codeBadRequest, messageHas: "subscription_id"},
	})
	// Another connection cannot remove this one's subscription.
	runSteps(t, w, []step{{op: "UNWATCH", params: fmt.Sprintf(`{"subscription_id":%q}`, sb), want: fmt.Sprintf(`{"removed":false,"subscription_id":%q}`, sb)}})
	mustOK(t, w, "APPLY_EVENT", `{"instance_id":"a","event":"INC"}`)
	mustOK(t, w, "APPLY_EVENT", `{"instance_id":"b","event":"INC"}`)
	evs = recvEvents(t, c, 1)
	if evs[0].InstanceID != "b" || evs[0].WalOffset != 7 {
		t.Errorf("after UNWATCH got %+v", evs[0])
	}
	// Deleting an instance sends nothing; its watchers stay registered.
	mustOK(t, w, "DELETE_INSTANCE", `{"instance_id":"b"}`)
	expectQuiet(t, c)
	if n := ts.srv.hub.count(); n != 1 {
		t.Errorf("registered subscriptions: %d, want 1", n)
	}
	// BYE and close end a connection's subscriptions.
	mustOK(t, c, "BYE", "")
	deadline := time.Now().Add(30 * time.Second)
	for ts.srv.hub.count() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := ts.srv.hub.count(); n != 0 {
		t.Errorf("subscriptions after BYE: %d", n)
	}
}

// Events from an atomic batch arrive, all with the batch's offset; from
// many concurrent writers every subscriber sees strictly increasing offsets.
func TestWatchOrderingManyWriters(t *testing.T) {
	ts := startServer(t, nil)
	setup := ts.dial()
	mustOK(t, setup, "PUT_MACHINE", ctrMachine)
	const writers, per = 6, 150
	for i := 0; i < writers; i++ {
		mustOK(t, setup, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"w%d"}`, i))
	}
	watchers := make([]*client, 3)
	for i := range watchers {
		watchers[i] = ts.dial()
		watchResult(t, watchers[i], "WATCH_ALL", `{}`)
	}
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := dialClient(ts.addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.close()
			for n := 0; n < per; n++ {
				c.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"w%d","event":"INC","payload":{"n":%d}}`, i, n))
			}
			c.flush()
			for n := 0; n < per; n++ {
				if m, err := c.recv(); err != nil || m.Status != "ok" {
					t.Errorf("writer %d: %v %v", i, err, m)
					return
				}
			}
		}(i)
	}
	mustOK(t, setup, "BATCH", `{"mode":"atomic","ops":[{"op":"APPLY_EVENT","params":{"instance_id":"w0","event":"INC","payload":{"n":-1}}},{"op":"APPLY_EVENT","params":{"instance_id":"w1","event":"INC","payload":{"n":-1}}}]}`)
	wg.Wait()
	for wi, w := range watchers {
		evs := recvEvents(t, w, writers*per+2)
		var last uint64
		perInst := map[string]int{}
		batch := 0
		for _, ev := range evs {
			if ev.WalOffset < last || (ev.WalOffset == last && string(ev.Payload) != `{"n":-1}`) {
				t.Fatalf("watcher %d: offset %d after %d", wi, ev.WalOffset, last)
			}
			last = ev.WalOffset
			var p struct{ N int }
			json.Unmarshal(ev.Payload, &p)
			if p.N == -1 {
				batch++
				continue
			}
			if p.N != perInst[ev.InstanceID] {
				t.Fatalf("watcher %d: %s event n=%d, want %d", wi, ev.InstanceID, p.N, perInst[ev.InstanceID])
			}
			perInst[ev.InstanceID]++
		}
		if batch != 2 {
			t.Errorf("watcher %d: %d atomic batch events, want 2", wi, batch)
		}
	}
}

// from_offset replays history, then continues live without gap or
// duplicate; it works after a restart and across a compaction boundary.
func TestWatchReplay(t *testing.T) {
	ts := startServer(t, func(c *config) { c.CompactEnabled = false })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"r"}`)
	for n := 0; n < 20; n++ {
		mustOK(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":"r","event":"INC","payload":{"n":%d}}`, n)) // lsn 3..22
	}
	ts.restart()
	c = ts.dial()
	w := ts.dial()
	watchResult(t, w, "WATCH_INSTANCE", `{"instance_id":"r","from_offset":12}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"r","event":"INC","payload":{"n":20}}`) // lsn 23
	evs := recvEvents(t, w, 11)
	for i, ev := range evs {
		if ev.WalOffset != uint64(13+i) {
			t.Fatalf("replay event %d has offset %d, want %d", i, ev.WalOffset, 13+i)
		}
	}
	expectQuiet(t, w)

	// Compact, then: an offset inside the retained log replays; an older
	// one is refused with the oldest retained offset.
	fill(t, c, "f", 2, 6000)
	var res compactResult
	json.Unmarshal(mustOK(t, c, "COMPACT", `{}`), &res)
	first := ts.srv.log.firstLSN()
	if res.SegmentsDeleted == 0 || first <= 23 {
		t.Fatalf("compaction kept everything: %+v first=%d", res, first)
	}
	m := call(t, w, "WATCH_ALL", `{"from_offset":5}`)
	if m.Error == nil || m.Error.Code != codeBadRequest || m.Error.Details["oldest_offset"] != float64(first) {
		t.Errorf("compacted from_offset: %s (oldest retained %d)", m.Raw, first)
	}
	w2 := ts.dial()
	watchResult(t, w2, "WATCH_ALL", fmt.Sprintf(`{"from_offset":%d,"machines":["ctr"],"events":["INC"]}`, first-1))
	last := ts.srv.log.lastLSN()
	evs = recvEvents(t, w2, int(last-first+1))
	if evs[0].WalOffset != first || evs[len(evs)-1].WalOffset != last {
		t.Errorf("replay across compaction: %d..%d, want %d..%d", evs[0].WalOffset, evs[len(evs)-1].WalOffset, first, last)
	}
}

// A subscriber that reads nothing while many events are written has no
// more than its connection's bound queued in the server, and once it reads
// it receives every one of them. The bound is made small here (16 KiB, a
// few dozen events) so that 20,000 events, the count under -race, reach it
// many times over: an unbounded queue would hold megabytes. What is
// measured is the bytes the connection had queued at its peak, which the
// race detector does not inflate as it does the heap.
func TestWatchSlowSubscriber(t *testing.T) {
	events := 100000
	if testing.Short() || raceEnabled {
		events = 20000
	}
	const connQueue = 16 << 10
	ts := startServerTuned(t, func(c *config) {
		c.Fsync = fsyncPolicy{Kind: "never"}
		c.CompactEvents = 20000
		c.CompactMinInterval = 0
		c.compactTick = 50 * time.Millisecond
	}, func(s *server) { s.connQueue = connQueue })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"s","initial_ctx":{"pad":"`+strings.Repeat("x", 300)+`"}}`)
	w := dialSmallBuffer(t, ts.addr) // so the kernel holds little of it
	watchResult(t, w, "WATCH_INSTANCE", `{"instance_id":"s"}`)
	c.nc.SetDeadline(time.Now().Add(5 * time.Minute))
	w.nc.SetDeadline(time.Now().Add(5 * time.Minute))
	// The subscriber's connection, as the server sees it.
	var wc *conn
	ts.srv.mu.Lock()
	for sc := range ts.srv.conns {
		if sc.remote == w.nc.LocalAddr().String() {
			wc = sc
		}
	}
	ts.srv.mu.Unlock()
	if wc == nil {
		t.Fatal("the subscriber's connection is not registered")
	}
	start := time.Now()
	// Written as best-effort batches of 100 (each member is its own record
	// and its own event) to keep the test quick.
	for sent := 0; sent < events; {
		batches := 0
		for ; batches < 10 && sent < events; batches++ {
			var ops []string
			for k := 0; k < 100 && sent < events; k++ {
				ops = append(ops, fmt.Sprintf(`{"op":"APPLY_EVENT","params":{"instance_id":"s","event":"INC","payload":{"n":%d}}}`, sent))
				sent++
			}
			c.send("BATCH", `{"mode":"best_effort","ops":[`+strings.Join(ops, ",")+`]}`)
		}
		c.flush()
		for k := 0; k < batches; k++ {
			if m, err := c.recv(); err != nil || m.Status != "ok" || strings.Contains(string(m.Result), `"error":{`) {
				t.Fatalf("batch before %d: %v %v", sent, err, m)
			}
		}
	}
	t.Logf("wrote %d events in %v", events, time.Since(start))
	// Every event has been read from the log once the writes are durable;
	// wait until the pump has queued what the connection can take.
	waitFor(t, 30*time.Second, "the subscriber's queue to fill", func() bool {
		wc.gate.mu.Lock()
		defer wc.gate.mu.Unlock()
		return wc.gate.queued > connQueue/2
	})
	wc.gate.mu.Lock()
	peak, queued := wc.gate.peak, wc.gate.queued
	wc.gate.mu.Unlock()
	t.Logf("the stalled subscriber's connection had %d bytes queued, %d at the peak (bound %d)", queued, peak, connQueue)
	const event = 1 << 10 // one event of this test, framed, with room to spare
	if peak > connQueue+event {
		t.Errorf("%d bytes queued for a subscriber that does not read; the bound is %d", peak, connQueue)
	}
	start = time.Now()
	evs := recvEvents(t, w, events)
	t.Logf("read them in %v", time.Since(start))
	for i, ev := range evs {
		var p struct{ N int }
		json.Unmarshal(ev.Payload, &p)
		if p.N != i {
			t.Fatalf("event %d carries n=%d", i, p.N)
		}
	}
}

// BenchmarkWatchFanout measures events delivered per second to 1, 100 and
// 1,000 WATCH_ALL subscribers (each on its own connection) while one
// connection writes best-effort batches of APPLY_EVENTs.
//
//	go test -run '^$' -bench WatchFanout -benchtime 20000x
func BenchmarkWatchFanout(b *testing.B) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			t := &testing.T{}
			ts := startServer(t, func(c *config) { c.MaxConnections = 2000; c.CompactEnabled = false })
			defer ts.stop()
			c, _ := dialClient(ts.addr, 5*time.Second)
			defer c.close()
			c.call("PUT_MACHINE", ctrMachine)
			c.call("CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"f","initial_ctx":{"pad":"`+strings.Repeat("x", 100)+`"}}`)
			var ready, done sync.WaitGroup
			for i := 0; i < subs; i++ {
				ready.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					w, err := dialClient(ts.addr, 5*time.Second)
					if err != nil {
						ready.Done()
						b.Error(err)
						return
					}
					defer w.close()
					w.call("WATCH_ALL", `{}`)
					ready.Done()
					for n := 0; n < b.N; n++ {
						if _, err := w.fr.next(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			ready.Wait()
			b.ResetTimer()
			start := time.Now()
			for sent := 0; sent < b.N; {
				var ops []string
				for k := 0; k < 100 && sent < b.N; k++ {
					ops = append(ops, `{"op":"APPLY_EVENT","params":{"instance_id":"f","event":"INC","payload":{"n":1}}}`)
					sent++
				}
				c.send("BATCH", `{"mode":"best_effort","ops":[`+strings.Join(ops, ",")+`]}`)
				if sent%1000 == 0 || sent == b.N {
					c.flush()
				}
			}
			c.flush()
			done.Wait()
			el := time.Since(start)
			b.ReportMetric(float64(subs*b.N)/el.Seconds(), "events_delivered/s")
			b.ReportMetric(float64(b.N)/el.Seconds(), "events_written/s")
		})
	}
}
