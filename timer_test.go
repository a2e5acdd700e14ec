package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// orderTimerMachine is the order-expiry example: an order not paid within
// a minute expires.
const orderTimerMachine = `{"machine":"order","version":1,"definition":{"states":["pending","paid","expired"],"initial":"pending","transitions":[
	{"from":"pending","event":"PAY","to":"paid"},
	{"from":"pending","event":"EXPIRE","to":"expired","after_ms":60000}]}}`

// timerClock moves the server's clock (the skewMS seam) and wakes the
// timer loop, so that no test sleeps through a delay.
func timerClock(ts *testServer, d time.Duration) {
	ts.srv.skewMS.Add(d.Milliseconds())
	select {
	case ts.srv.st.timers.wake <- struct{}{}:
	default:
	}
}

type timerInstance struct {
	State   string `json:"state"`
	LastOff uint64 `json:"last_wal_offset"`
	Timers  []struct {
		Event string `json:"event"`
		To    string `json:"to_state"`
		DueAt string `json:"due_at"`
	} `json:"timers"`
}

func getTimerInstance(t *testing.T, c *client, id string) timerInstance {
	t.Helper()
	var in timerInstance
	mustUnmarshal(t, mustOK(t, c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id)), &in)
	return in
}

// waitState polls until instance id is in state want.
func waitState(t *testing.T, c *client, id, want string) timerInstance {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		in := getTimerInstance(t, c, id)
		if in.State == want {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s is in state %q, want %q", id, in.State, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle gives the timer loop a moment to act on a wake, for the checks
// that something did NOT happen.
func settle(ts *testServer) {
	for range 3 {
		timerClock(ts, 0)
		time.Sleep(20 * time.Millisecond)
	}
}

func walLast(t *testing.T, c *client) uint64 {
	var st struct {
		Last uint64 `json:"latest_offset"`
	}
	mustUnmarshal(t, mustOK(t, c, "WAL_STATS", `{}`), &st)
	return st.Last
}

func TestTimerDefinition(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	for i, bad := range []string{`0`, `-5`, `1.5`, `"60000"`, `true`, `null`, `31536000001`, `1e3`} {
		def := `{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"T","to":"b","after_ms":` + bad + `}]}`
		m := call(t, c, "PUT_MACHINE", fmt.Sprintf(`{"machine":"bad","version":%d,"definition":%s}`, i+1, def))
		wantBadRequest(t, "after_ms "+bad, m, "definition.transitions[0].after_ms", "after_ms")
	}
	var plain, timed, slower struct {
		Sum string `json:"stored_checksum"`
	}
	mustUnmarshal(t, mustOK(t, c, "PUT_MACHINE", `{"machine":"p","version":1,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"T","to":"b"}]}}`), &plain)
	mustUnmarshal(t, mustOK(t, c, "PUT_MACHINE", `{"machine":"p","version":2,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"T","to":"b","after_ms":31536000000}]}}`), &timed)
	mustUnmarshal(t, mustOK(t, c, "PUT_MACHINE", `{"machine":"p","version":3,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"T","to":"b","after_ms":1}]}}`), &slower)
	// The checksum of a definition without timers is what it always was:
	// the SHA-256 of its canonical form, which has no after_ms.
	old := sha256.Sum256([]byte(`{"states":["a","b"],"initial":"a","transitions":[{"from":["a"],"event":"T","to":"b"}]}`))
	if want := hex.EncodeToString(old[:]); plain.Sum != want {
		t.Errorf("checksum of a definition without timers is %s, want %s as before", plain.Sum, want)
	}
	if plain.Sum == timed.Sum || timed.Sum == slower.Sum {
		t.Errorf("checksums do not cover after_ms: %s %s %s", plain.Sum, timed.Sum, slower.Sum)
	}
	var got struct {
		Def json.RawMessage `json:"definition"`
	}
	mustUnmarshal(t, mustOK(t, c, "GET_MACHINE", `{"machine":"p","version":1}`), &got)
	if strings.Contains(string(got.Def), "after_ms") {
		t.Errorf("a definition without timers gained after_ms: %s", got.Def)
	}
	mustUnmarshal(t, mustOK(t, c, "GET_MACHINE", `{"machine":"p","version":2}`), &got)
	if !strings.Contains(string(got.Def), `"after_ms":31536000000`) {
		t.Errorf("after_ms missing from the stored definition: %s", got.Def)
	}
}

// TestTimerFires is the order-expiry example: armed at create, shown by
// GET_INSTANCE, fired through the write path once due (a durable record
// marked source timer, delivered to watchers), and counted in INFO.
func TestTimerFires(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderTimerMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o-1"}`)
	in := getTimerInstance(t, c, "o-1")
	if len(in.Timers) != 1 || in.Timers[0].Event != "EXPIRE" || in.Timers[0].To != "expired" {
		t.Fatalf("timers after create: %+v", in.Timers)
	}
	due, err := time.Parse(time.RFC3339Nano, in.Timers[0].DueAt)
	if err != nil || !strings.HasSuffix(in.Timers[0].DueAt, "Z") || len(in.Timers[0].DueAt) != len("2006-01-02T15:04:05.000Z") {
		t.Fatalf("due_at %q is not RFC 3339 with milliseconds: %v", in.Timers[0].DueAt, err)
	}
	if d := time.Until(due); d < 55*time.Second || d > 61*time.Second {
		t.Errorf("due in %v, want about a minute", d)
	}
	w := ts.dial()
	mustOK(t, w, "WATCH_INSTANCE", `{"instance_id":"o-1"}`)

	timerClock(ts, 30*time.Second)
	settle(ts)
	if in := getTimerInstance(t, c, "o-1"); in.State != "pending" {
		t.Fatalf("fired early: state %s", in.State)
	}
	timerClock(ts, 31*time.Second)
	in = waitState(t, c, "o-1", "expired")
	if len(in.Timers) != 0 {
		t.Errorf("timers after the fire: %+v", in.Timers)
	}
	ev, err := w.recv()
	if err != nil || ev.Type != "event" || !strings.Contains(string(ev.Raw), `"event":"EXPIRE","source":"timer"`) {
		t.Fatalf("watch event: %s, %v", ev.Raw, err)
	}
	var page struct {
		Records []struct {
			Entry map[string]any `json:"entry"`
		} `json:"records"`
	}
	mustUnmarshal(t, mustOK(t, c, "WAL_READ", fmt.Sprintf(`{"from_offset":%d,"limit":1}`, in.LastOff)), &page)
	if e := page.Records[0].Entry; e["source"] != "timer" || e["event"] != "EXPIRE" || e["type"] != "apply_event" {
		t.Errorf("WAL_READ entry of the fire: %v", e)
	}
	var raw struct {
		Timers map[string]int64 `json:"timers"`
	}
	mustUnmarshal(t, mustOK(t, c, "INFO", `{}`), &raw)
	if raw.Timers["fired"] != 1 || raw.Timers["armed"] != 0 || raw.Timers["guard_failed"] != 0 {
		t.Errorf("INFO timers: %v", raw.Timers)
	}
	// A client may still send the timed event itself, before it is due.
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o-2"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"o-2","event":"EXPIRE"}`)
	if in := getTimerInstance(t, c, "o-2"); in.State != "expired" || len(in.Timers) != 0 {
		t.Errorf("client-sent EXPIRE: %+v", in)
	}
}

func TestTimerCancelRearmAndOrder(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderTimerMachine)
	mustOK(t, c, "PUT_MACHINE", `{"machine":"lease","version":1,"definition":{"states":["held","released"],"initial":"held","transitions":[
		{"from":"held","event":"RENEW","to":"held"},
		{"from":"held","event":"RELEASE","to":"released","after_ms":60000}]}}`)
	mustOK(t, c, "PUT_MACHINE", `{"machine":"race","version":1,"definition":{"states":["p","x","y","z"],"initial":"p","transitions":[
		{"from":"p","event":"A","to":"x","after_ms":120000},
		{"from":"p","event":"B","to":"y","after_ms":60000},
		{"from":"p","event":"C","to":"z","after_ms":60000}]}}`)

	// Cancel: an event before the due time disarms the timer.
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"paid"}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"paid","event":"PAY"}`)
	// Cancel: deleting the instance.
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"gone"}`)
	mustOK(t, c, "DELETE_INSTANCE", `{"instance_id":"gone"}`)
	// Re-arm: a self-transition re-enters the state.
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"lease","version":1,"instance_id":"l"}`)
	// Several timers out of one state: the earliest wins; equal due times
	// go in definition order (B before C); the rest are disarmed.
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"race","version":1,"instance_id":"r"}`)
	if in := getTimerInstance(t, c, "r"); len(in.Timers) != 3 || in.Timers[0].Event != "B" || in.Timers[1].Event != "C" || in.Timers[2].Event != "A" {
		t.Fatalf("race timers: %+v", in.Timers)
	}
	if in := getTimerInstance(t, c, "paid"); len(in.Timers) != 0 {
		t.Fatalf("paid order still has timers: %+v", in.Timers)
	}

	timerClock(ts, 40*time.Second)
	before := getTimerInstance(t, c, "l").Timers[0].DueAt
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"l","event":"RENEW"}`)
	after := getTimerInstance(t, c, "l").Timers
	if len(after) != 1 || after[0].DueAt <= before {
		t.Fatalf("renew did not re-arm: before %s, after %+v", before, after)
	}
	last := walLast(t, c)
	timerClock(ts, 30*time.Second) // 70 s: the first arming would be due, the renewed one not
	settle(ts)
	if in := getTimerInstance(t, c, "l"); in.State != "held" {
		t.Fatalf("the lease fired from its cancelled arming")
	}
	waitState(t, c, "r", "y")
	if in := getTimerInstance(t, c, "r"); len(in.Timers) != 0 {
		t.Errorf("the losing timers stayed armed: %+v", in.Timers)
	}
	if got := walLast(t, c); got != last+1 {
		t.Errorf("%d records written at 70 s, want 1 (the race's B)", got-last)
	}
	timerClock(ts, 35*time.Second) // 105 s
	waitState(t, c, "l", "released")
	settle(ts)
	if got := walLast(t, c); got != last+2 {
		t.Errorf("%d records written by 105 s, want 2", got-last)
	}
	for _, id := range []string{"paid", "r"} {
		if in := getTimerInstance(t, c, id); in.State == "expired" || in.State == "x" || in.State == "z" {
			t.Errorf("%s fired a cancelled timer: %s", id, in.State)
		}
	}
}

// A timer whose guard fails is spent: nothing is written, it is counted,
// and it does not come back until the instance changes.
func TestTimerGuardFails(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", `{"machine":"g","version":1,"definition":{"states":["a","b"],"initial":"a","transitions":[
		{"from":"a","event":"POKE","to":"a"},
		{"from":"a","event":"T","to":"b","after_ms":1000,"guard":"ctx.ok == true"}]}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"g","version":1,"instance_id":"g1","initial_ctx":{"ok":false}}`)
	last := walLast(t, c)
	timerClock(ts, 2*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.st.timers.guardFailed.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the guard failure was not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	settle(ts)
	if in := getTimerInstance(t, c, "g1"); in.State != "a" || len(in.Timers) != 0 {
		t.Errorf("after the guard failed: %+v", in)
	}
	if got := walLast(t, c); got != last {
		t.Errorf("a failed guard wrote %d records", got-last)
	}
	// An event re-arms it; with the guard now true it fires.
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"g1","event":"POKE","payload":{"ok":true}}`)
	timerClock(ts, 2*time.Second)
	waitState(t, c, "g1", "b")
}

// The clock stepping backwards fires nothing early and nothing twice; a
// forward step fires what became due.
func TestTimerClockSteps(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderTimerMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o"}`)
	timerClock(ts, -time.Hour)
	settle(ts)
	if in := getTimerInstance(t, c, "o"); in.State != "pending" {
		t.Fatalf("a backwards step fired the timer")
	}
	timerClock(ts, time.Hour+61*time.Second)
	waitState(t, c, "o", "expired")
	last := walLast(t, c)
	timerClock(ts, -2*time.Hour)
	settle(ts)
	timerClock(ts, 3*time.Hour)
	settle(ts)
	if got := walLast(t, c); got != last {
		t.Errorf("%d more records after clock steps, want none", got-last)
	}
}

// Armed timers survive a restart (rebuilt from the instances) and a
// compaction (the entry time is in the snapshot); overdue ones fire
// promptly after start, and a fired one never fires again.
func TestTimerRestartAndCompaction(t *testing.T) {
	ts := startServer(t, func(c *config) { c.CompactEnabled = false })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderTimerMachine)
	for _, id := range []string{"a", "b", "c"} {
		mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"`+id+`"}`)
	}
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"c","event":"PAY"}`)
	mustOK(t, c, "COMPACT", `{}`)
	skew := ts.srv.skewMS.Load()
	ts.restart()
	ts.srv.skewMS.Store(skew)
	c = ts.dial()
	if in := getTimerInstance(t, c, "a"); len(in.Timers) != 1 {
		t.Fatalf("timers after a restart from a snapshot: %+v", in.Timers)
	}
	timerClock(ts, 61*time.Second)
	waitState(t, c, "a", "expired")
	waitState(t, c, "b", "expired")
	last := walLast(t, c)
	skew = ts.srv.skewMS.Load()
	ts.restart()
	ts.srv.skewMS.Store(skew)
	c = ts.dial()
	settle(ts)
	if got := walLast(t, c); got != last {
		t.Errorf("%d records after restarting past the fires, want none", got-last)
	}
	if in := getTimerInstance(t, c, "c"); in.State != "paid" {
		t.Errorf("the paid order: %s", in.State)
	}
}

// Many timers due at once fire through group commit, in bounded rounds.
func TestTimerMany(t *testing.T) {
	ts := startServer(t, func(c *config) { c.MaxBatchOps = 1000 })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderTimerMachine)
	const n = 3000
	for b := 0; b < n; b += 1000 {
		var ops []string
		for k := b; k < b+1000; k++ {
			ops = append(ops, fmt.Sprintf(`{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"m%d"}}`, k))
		}
		mustOK(t, c, "BATCH", `{"mode":"best_effort","ops":[`+strings.Join(ops, ",")+`]}`)
	}
	if got := ts.srv.st.timers.armed.Load(); got != n {
		t.Fatalf("%d armed, want %d", got, n)
	}
	last := walLast(t, c)
	timerClock(ts, 2*time.Minute)
	deadline := time.Now().Add(60 * time.Second)
	for ts.srv.st.timers.fired.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d fired", ts.srv.st.timers.fired.Load(), n)
		}
		// Clients keep being served meanwhile.
		mustOK(t, c, "PING", `{}`)
		time.Sleep(time.Millisecond)
	}
	// WAL_STATS reports what is durable; the last round may still be
	// syncing.
	for got := walLast(t, c); got != last+n; got = walLast(t, c) {
		if got > last+n || time.Now().After(deadline) {
			t.Fatalf("%d records for %d fires", got-last, n)
		}
		time.Sleep(time.Millisecond)
	}
	if got := ts.srv.st.timers.armed.Load(); got != 0 {
		t.Errorf("%d still armed", got)
	}
}

// TestTimerProcessCrash runs real processes with short delays: a kill -9
// between arming and the due time still fires the timer once after the
// restart, and a kill -9 right after a fire does not fire it again.
func TestTimerProcessCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	dir := t.TempDir()
	p := crashStartProc(t, dir)
	c, err := dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, c, "PUT_MACHINE", `{"machine":"o","version":1,"definition":{"states":["pending","expired"],"initial":"pending","transitions":[
		{"from":"pending","event":"EXPIRE","to":"expired","after_ms":400}]}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"o","version":1,"instance_id":"before-kill"}`)
	c.close()
	p.kill() // armed, not yet due

	time.Sleep(500 * time.Millisecond) // due while the server is down
	p = crashStartProc(t, dir)
	c, err = dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "before-kill", "expired")
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"o","version":1,"instance_id":"fire-then-kill"}`)
	waitState(t, c, "fire-then-kill", "expired")
	last := walLast(t, c)
	c.close()
	p.kill() // right after a durable fire

	p = crashStartProc(t, dir)
	c, err = dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	time.Sleep(300 * time.Millisecond)
	if got := walLast(t, c); got != last {
		t.Errorf("%d records after restarting past the fires, want none", got-last)
	}
	var page struct {
		Records []struct {
			Entry map[string]any `json:"entry"`
		} `json:"records"`
	}
	mustUnmarshal(t, mustOK(t, c, "WAL_READ", `{"from_offset":1,"limit":100}`), &page)
	fires := map[string]int{}
	for _, r := range page.Records {
		if r.Entry["source"] == "timer" {
			fires[fmt.Sprint(r.Entry["instance_id"])]++
		}
	}
	if fires["before-kill"] != 1 || fires["fire-then-kill"] != 1 || len(fires) != 2 {
		t.Errorf("fires in the log: %v, want one each", fires)
	}
	if err := p.stop(); err != nil {
		t.Logf("stop: %v (stderr: %s)", err, strings.Join(p.lines(), "\n"))
	}
}
