package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startServerTuned is startServer with tune applied to the server before it
// serves: bounds that are constants in production, made small enough for a
// test to reach. A restart (the cleanup check included) runs untuned.
func startServerTuned(t *testing.T, mod func(*config), tune func(*server)) *testServer {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.SegmentSizeMB = 1
	if mod != nil {
		mod(&cfg)
	}
	ts := &testServer{t: t, cfg: cfg}
	s, err := openServer(cfg, nil)
	if err != nil {
		t.Fatalf("openServer: %v", err)
	}
	s.fatal = func(err error) { t.Errorf("fatal WAL error: %v", err) }
	tune(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.srv, ts.addr, ts.done = s, ln.Addr().String(), make(chan error, 1)
	go func() { ts.done <- s.serve(ln) }()
	t.Cleanup(ts.stopAndCheck)
	return ts
}

// dialSmallBuffer dials with a small receive buffer, so that a client that
// does not read leaves its replies queued in the server rather than in the
// kernel.
func dialSmallBuffer(t *testing.T, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(network, address string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10) })
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(2 * time.Minute))
	t.Cleanup(func() { nc.Close() })
	return newClient(nc)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// The bytes queued for output over all connections stay under the
// server-wide cap (plus one message, plus each connection's small reserve)
// while clients that read nothing pipeline requests with big replies and a
// subscriber that reads nothing falls behind. Meanwhile other clients'
// small replies still go, writes are not held up, and once the deaf
// clients read they get every reply and every event, in order. When all
// have closed, nothing is left counted.
func TestOutputBudgetServerWide(t *testing.T) {
	const limit = 1 << 20
	ts := startServerTuned(t, func(c *config) { c.Fsync = fsyncPolicy{Kind: "never"} },
		func(s *server) { s.outBudget = newOutBudget(limit, queueReserve) })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	pad := strings.Repeat("x", 100<<10)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"big","initial_ctx":{"pad":"`+pad+`"}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"k"}`)
	bigReply := len(call(t, c, "GET_INSTANCE", `{"instance_id":"big"}`).Raw) + frameHeaderLen

	// A subscriber that stops reading after its WATCH_ALL reply.
	sub := dialSmallBuffer(t, ts.addr)
	if m, err := sub.call("WATCH_ALL", `{"machines":["ctr"]}`); err != nil || m.Status != "ok" {
		t.Fatalf("WATCH_ALL: %v %v", m, err)
	}
	// Clients that pipeline requests with ~100 KiB replies and read none.
	const deaf, perDeaf = 3, 100
	var deafs []*client
	var sent sync.WaitGroup
	for i := 0; i < deaf; i++ {
		d := dialSmallBuffer(t, ts.addr)
		deafs = append(deafs, d)
		sent.Add(1)
		go func() {
			defer sent.Done()
			for k := 0; k < perDeaf; k++ {
				d.send("GET_INSTANCE", `{"instance_id":"big"}`)
			}
			d.flush() // blocks once the server stops reading
		}()
	}
	conns := deaf + 3 // the deaf ones, the subscriber, c, and the probe below
	bound := int64(max(limit, bigReply) + conns*queueReserve)
	waitFor(t, 60*time.Second, "the deaf clients to fill the server's output budget", func() bool {
		return ts.srv.outBudget.queued.Load() >= limit-int64(bigReply)
	})

	// Hold the whole budget besides, so no reply can fit under the cap
	// however the writers drain into the kernel: small replies still go
	// (each connection's reserve), and so do writes, whose events wait in
	// the log for the subscriber instead of in memory.
	const hold = limit
	ts.srv.outBudget.force(hold)
	var freeOnce sync.Once
	free := func() { freeOnce.Do(func() { ts.srv.outBudget.release(hold) }) }
	t.Cleanup(free) // before the server's own cleanup, which waits for writers
	probe := ts.dial()
	start := time.Now()
	mustOK(t, probe, "PING", "")
	mustOK(t, probe, "GET_INSTANCE", `{"instance_id":"k"}`)
	const events = 200
	evPad := strings.Repeat("e", 8<<10)
	for i := 0; i < events; i++ {
		mustOK(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":"k","event":"INC","payload":{"i":%d,"pad":%q}}`, i, evPad))
	}
	t.Logf("with the output budget full: a PING, a GET and %d writes took %v", events, time.Since(start))
	if q := ts.srv.outBudget.queued.Load(); q < limit-int64(bigReply) {
		t.Errorf("the budget drained while the deaf clients read nothing: %d bytes queued", q)
	}
	if peak := ts.srv.outBudget.peak.Load(); peak > bound+hold {
		t.Errorf("%d bytes queued for output at the peak (%d of them held by the test); the bound is %d", peak, hold, bound)
	}
	free()

	// Now they read: everything arrives, in order.
	var got sync.WaitGroup
	for i, d := range deafs {
		got.Add(1)
		go func() {
			defer got.Done()
			for k := 0; k < perDeaf; k++ {
				if m, err := d.recv(); err != nil || m.Status != "ok" || m.ID != fmt.Sprint(k+1) {
					t.Errorf("deaf client %d, reply %d: %v %v", i, k, m, err)
					return
				}
			}
		}()
	}
	evs := recvEvents(t, sub, events)
	for i, ev := range evs {
		var p struct{ I int }
		json.Unmarshal(ev.Payload, &p)
		if p.I != i {
			t.Fatalf("event %d carries i=%d", i, p.I)
		}
	}
	got.Wait()
	sent.Wait()
	if peak := ts.srv.outBudget.peak.Load(); peak > bound+hold {
		t.Errorf("%d bytes queued for output at the peak (%d of them held by the test); the bound is %d", peak, hold, bound)
	}
	for _, d := range append(deafs, sub, c, probe) {
		d.close()
	}
	waitFor(t, 30*time.Second, "the closed connections to release their queued bytes", func() bool {
		return ts.srv.outBudget.queued.Load() == 0
	})
}

// A connection that closes with replies and events still queued gives
// their bytes back to the server's budget.
func TestOutputBudgetReleasedOnClose(t *testing.T) {
	ts := startServer(t, func(c *config) { c.Fsync = fsyncPolicy{Kind: "never"} })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"big","initial_ctx":{"pad":"`+strings.Repeat("x", 100<<10)+`"}}`)
	for round := 0; round < 3; round++ {
		d := dialSmallBuffer(t, ts.addr)
		if m, err := d.call("WATCH_INSTANCE", `{"instance_id":"big"}`); err != nil || m.Status != "ok" {
			t.Fatalf("WATCH_INSTANCE: %v %v", m, err)
		}
		go func() {
			for k := 0; k < 200; k++ {
				d.send("GET_INSTANCE", `{"instance_id":"big"}`)
			}
			d.flush()
		}()
		for i := 0; i < 20; i++ {
			mustOK(t, c, "APPLY_EVENT", `{"instance_id":"big","event":"INC"}`)
		}
		waitFor(t, 30*time.Second, "replies to queue up", func() bool {
			return ts.srv.outBudget.queued.Load() > 1<<20
		})
		d.close()
		waitFor(t, 30*time.Second, "the closed connection to release its queued bytes", func() bool {
			return ts.srv.outBudget.queued.Load() == 0
		})
	}
}
