package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStorageOps(t *testing.T) {
	ts := startServer(t, func(c *config) { c.AllowFlushAll = true })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"a","initial_ctx":{"amount":5}}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"a","event":"PAY","payload":{"k":"v"},"event_id":"ev"}`)
	runSteps(t, c, []step{
		{name: "from 0 reads from the start", op: "WAL_READ", params: `{"from_offset":0,"limit":2}`,
			want: `{"next_offset":3,"records":[
			{"entry":{"type":"put_machine","ts":"<int>","machine":"order","version":1,"definition":"<any>","checksum":"<any>"},"offset":1,"sequence":1},
			{"entry":{"type":"create_instance","ts":"<int>","machine":"order","version":1,"instance_id":"a","initial_state":"created","initial_ctx":{"amount":5}},"offset":2,"sequence":2}]}`},
		{op: "WAL_READ", params: `{"from_offset":3}`,
			want: `{"next_offset":4,"records":[{"entry":{"type":"apply_event","ts":"<int>","machine":"order","version":1,"instance_id":"a","event":"PAY","from_state":"created","to_state":"paid","payload":{"k":"v"},"ctx":{"amount":5,"k":"v"},"event_id":"ev"},"offset":3,"sequence":3}]}`},
		{name: "past the end", op: "WAL_READ", params: `{"from_offset":9}`, want: `{"next_offset":9,"records":[]}`},
		{op: "WAL_READ", params: `{}`, code: codeBadRequest, messageHas: "from_offset"},
		{op: "WAL_READ", params: `{"from_offset":1,"limit":0}`, code: codeBadRequest, messageHas: "limit"},
		{op: "WAL_READ", params: `{"from_offset":"1"}`, code: codeBadRequest, messageHas: "from_offset"},
		{op: "WAL_STATS", want: `{"disk_quota_bytes":0,"disk_reserve_bytes":"<int>","disk_used_bytes":"<int>","entry_count":3,"io_stats":{"bytes_read":"<int>","bytes_written":"<int>","fsyncs":"<int>","reads":"<int>","writes":"<int>"},"latest_offset":3,"segment_count":1,"total_size_bytes":"<int>"}`},
		{op: "FLUSH_ALL", meta: true, want: `{"flushed":true,"instances_removed":1,"machines_removed":1}`},
		{op: "LIST_MACHINES", want: `{"items":[]}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"a"}`, code: codeInstanceNotFound},
		{op: "WAL_READ", params: `{"from_offset":4}`, want: `{"next_offset":5,"records":[{"entry":{"type":"flush_all","ts":"<int>"},"offset":4,"sequence":4}]}`},
	})
	// FLUSH_ALL is durable: the restart check in cleanup would bring data
	// back if it were not logged. Check explicitly too.
	ts.restart()
	c = ts.dial()
	runSteps(t, c, []step{{op: "LIST_MACHINES", want: `{"items":[]}`}})

	off := startServer(t, nil)
	runSteps(t, off.dial(), []step{{op: "FLUSH_ALL", code: codeBadRequest, messageHas: "allow_flush_all"}})
}

// rawConn sends arbitrary bytes and reads whatever frames come back.
func rawSend(t *testing.T, ts *testServer, data []byte) (msgs []*message, closed bool) {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(data); err != nil {
		t.Fatal(err)
	}
	c := newClient(nc)
	for {
		m, err := c.recv()
		if err != nil {
			return msgs, !strings.Contains(err.Error(), "timeout")
		}
		msgs = append(msgs, m)
		if len(msgs) > 10 {
			return msgs, false
		}
	}
}

func frameWithHeader(magic string, version, flags uint16, payload []byte, crc uint32) []byte {
	h := make([]byte, 18)
	copy(h, magic)
	binary.BigEndian.PutUint16(h[4:], version)
	binary.BigEndian.PutUint16(h[6:], flags)
	binary.BigEndian.PutUint32(h[10:], uint32(len(payload)))
	binary.BigEndian.PutUint32(h[14:], crc)
	return append(h, payload...)
}

func TestMalformedInput(t *testing.T) {
	ts := startServer(t, nil)
	ping := []byte(`{"type":"request","id":"1","op":"PING"}`)
	good := appendFrame(nil, modeBinary, ping)
	cases := []struct {
		name  string
		data  []byte
		code  string
		close bool
	}{
		{"bad magic", frameWithHeader("XXXX", 1, 1, ping, 0), codeBadRequest, true},
		{"version 2", frameWithHeader("RCPX", 2, 1, ping, 0), codeUnsupportedProtocol, true},
		{"reserved flags", frameWithHeader("RCPX", 1, 0x10, ping, 0), codeBadRequest, true},
		{"oversize", frameWithHeader("RCPX", 1, 0, nil, 0)[:10], "", false},
		{"crc mismatch", frameWithHeader("RCPX", 1, 1, ping, 12345), codeBadRequest, true},
		{"not utf-8", appendFrame(nil, modeBinary, []byte("{\"id\":\"\xff\"}")), codeBadRequest, true},
		{"not json", appendFrame(nil, modeBinary, []byte(`{"id":`)), codeBadRequest, true},
		{"jsonl not json", []byte("{nope\n"), codeBadRequest, true},
	}
	over := frameWithHeader("RCPX", 1, 0, nil, 0)
	binary.BigEndian.PutUint32(over[10:], maxPayload+1)
	cases[3] = struct {
		name  string
		data  []byte
		code  string
		close bool
	}{"oversize", over, codeBadRequest, true}
	for _, tc := range cases {
		// A good request before the bad frame is answered first.
		// (A JSONL connection is one whose first byte is '{'.)
		var msgs []*message
		var closed bool
		if tc.data[0] == '{' {
			msgs, closed = rawSend(t, ts, append([]byte(`{"id":"1","op":"PING"}`+"\n"), tc.data...))
		} else {
			msgs, closed = rawSend(t, ts, append(append([]byte{}, good...), tc.data...))
		}
		if len(msgs) != 2 || msgs[0].Status != "ok" || msgs[1].Error == nil || msgs[1].Error.Code != tc.code || msgs[1].ID != "" || !closed {
			var got []string
			for _, m := range msgs {
				got = append(got, string(m.Raw))
			}
			t.Errorf("%s: got %v closed=%v, want ok then %s with id \"\" and close", tc.name, got, closed, tc.code)
		}
	}
	// Envelope problems keep the connection open.
	c := ts.dial()
	for _, p := range []string{
		`{"id":5,"op":"PING"}`, `{"op":"PING"}`, `{"id":"x"}`, `{"id":"x","op":5}`, `[1,2]`, `"str"`,
		fmt.Sprintf(`{"id":%q,"op":"PING"}`, strings.Repeat("i", 257)),
	} {
		c.sendRaw([]byte(p))
		c.flush()
		m, err := c.recv()
		if err != nil || m.Status != "error" || m.Error.Code != codeBadRequest {
			t.Errorf("%s: want BAD_REQUEST, got %v %v", p, m, err)
		}
	}
	runSteps(t, c, []step{{op: "PING", want: `{"pong":true}`}})
}

func TestJSONL(t *testing.T) {
	ts := startServer(t, nil)
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(nc, "{\"type\":\"request\",\"id\":\"a\",\"op\":\"PING\"}\n\r\n{\"id\":\"b\",\"op\":\"HELLO\",\"params\":{\"protocol_version\":1}}\r\n")
	r := bufio.NewReader(nc)
	for _, want := range []string{
		`{"type":"response","id":"a","status":"ok","result":{"pong":true}}`,
		`{"type":"response","id":"b","status":"ok","result":{"features":[],"protocol_version":1,"server_name":"stmdb","server_version":"` + serverVersion + `","wire_mode":"jsonl"}}`,
	} {
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSuffix(line, "\n") != want {
			t.Errorf("got %q (%v), want %q", line, err, want)
		}
	}
}

func TestHelloSwitchesToJSONL(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	// The HELLO reply comes in the old framing; both directions switch after.
	runSteps(t, c, []step{{op: "HELLO", params: `{"protocol_version":1,"wire_modes":["jsonl","binary_json"]}`,
		want: `{"features":[],"protocol_version":1,"server_name":"stmdb","server_version":"<any>","wire_mode":"jsonl"}`}})
	c.setMode(modeJSONL)
	runSteps(t, c, []step{{op: "PING", want: `{"pong":true}`}})
	runSteps(t, c, []step{{op: "HELLO", params: `{"protocol_version":1,"wire_modes":["binary_json"]}`,
		want: `{"features":[],"protocol_version":1,"server_name":"stmdb","server_version":"<any>","wire_mode":"binary_json"}`}})
	c.setMode(modeBinary)
	runSteps(t, c, []step{{op: "PING", want: `{"pong":true}`}})
}

// Many pipelined requests on one connection are answered in order, and
// many connections writing at once all see their writes.
func TestPipeliningAndConcurrency(t *testing.T) {
	ts := startServer(t, nil)
	setup := ts.dial()
	mustOK(t, setup, "PUT_MACHINE", `{"machine":"ctr","version":1,"definition":{"states":["s"],"initial":"s","transitions":[{"from":"s","event":"INC","to":"s"}]}}`)
	const conns, per = 8, 200
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		go func(i int) {
			c, err := dialClient(ts.addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.close()
			id := fmt.Sprintf("i%d", i)
			if _, err := c.call("CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":%q}`, id)); err != nil {
				errs <- err
				return
			}
			var ids []string
			for n := 0; n < per; n++ {
				rid, _ := c.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"INC","payload":{"n":%d}}`, id, n))
				ids = append(ids, rid)
			}
			c.flush()
			var last uint64
			for n := 0; n < per; n++ {
				m, err := c.recv()
				if err != nil {
					errs <- err
					return
				}
				if m.ID != ids[n] || m.Status != "ok" || m.Meta == nil || m.Meta.WalOffset <= last {
					errs <- fmt.Errorf("conn %d reply %d out of order or failed: %s", i, n, m.Raw)
					return
				}
				last = m.Meta.WalOffset
			}
			errs <- nil
		}(i)
	}
	for i := 0; i < conns; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var got struct {
		Ctx json.RawMessage `json:"ctx"`
	}
	json.Unmarshal(mustOK(t, setup, "GET_INSTANCE", `{"instance_id":"i3"}`), &got)
	if string(got.Ctx) != fmt.Sprintf(`{"n":%d}`, per-1) {
		t.Errorf("ctx after %d events: %s", per, got.Ctx)
	}
}

// Replies keep request order when a pipeline mixes writes, reads and
// PINGs and arrives in pieces, so that some replies are written by the
// request reader as soon as they are durable and others are queued behind
// a pending sync; a GET sees the APPLY_EVENT sent before it.
func TestPipelineMixedOrder(t *testing.T) {
	ts := startServer(t, nil)
	setup := ts.dial()
	mustOK(t, setup, "PUT_MACHINE", counterMachine)
	const conns, per = 4, 300
	errs := make(chan error, conns)
	for i := range conns {
		go func() {
			errs <- func() error {
				c, err := dialClient(ts.addr, 5*time.Second)
				if err != nil {
					return err
				}
				defer c.close()
				id := fmt.Sprintf("m%d", i)
				if _, err := c.call("CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":%q}`, id)); err != nil {
					return err
				}
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				type sent struct {
					rid, op string
					n       int
				}
				var want []sent
				n := 0
				for k := 0; k < per; k++ {
					var op, params string
					switch rng.IntN(3) {
					case 0:
						n++
						op, params = "APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"INC","payload":{"n":%d}}`, id, n)
					case 1:
						op, params = "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id)
					default:
						op, params = "PING", "{}"
					}
					rid, err := c.send(op, params)
					if err != nil {
						return err
					}
					want = append(want, sent{rid, op, n})
					if rng.IntN(4) == 0 { // a piece ends here
						if err := c.flush(); err != nil {
							return err
						}
					}
				}
				if err := c.flush(); err != nil {
					return err
				}
				for k, w := range want {
					m, err := c.recv()
					if err != nil {
						return err
					}
					if m.ID != w.rid || m.Status != "ok" {
						return fmt.Errorf("conn %d reply %d: want %s (%s), got %s", i, k, w.rid, w.op, m.Raw)
					}
					if w.op == "GET_INSTANCE" {
						var r struct {
							Ctx json.RawMessage `json:"ctx"`
						}
						json.Unmarshal(m.Result, &r)
						if w.n > 0 && string(r.Ctx) != fmt.Sprintf(`{"n":%d}`, w.n) {
							return fmt.Errorf("conn %d reply %d: GET after %d events saw %s", i, k, w.n, r.Ctx)
						}
					}
				}
				return nil
			}()
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// jsonlPeer is a raw JSONL connection, as `nc` makes one: every line the
// server sends must be one JSON object, never an RCPX frame.
type jsonlPeer struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialJSONL(t *testing.T, ts *testServer) *jsonlPeer {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &jsonlPeer{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (p *jsonlPeer) send(line string) {
	p.t.Helper()
	if _, err := p.nc.Write([]byte(line + "\n")); err != nil {
		p.t.Fatal(err)
	}
}

// recv reads one line and checks that it is a JSON object.
func (p *jsonlPeer) recv() *message {
	p.t.Helper()
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		p.t.Fatalf("reading a JSONL line: %v (got %q)", err, line)
	}
	m := &message{Raw: line}
	if bytes.HasPrefix(line, []byte("RCPX")) || json.Unmarshal(line, m) != nil {
		p.t.Fatalf("not a JSONL message: %q", line)
	}
	return m
}

// expectEvents reads n lines that must be events at the given offsets.
func (p *jsonlPeer) expectEvents(offsets ...uint64) {
	p.t.Helper()
	for _, want := range offsets {
		m := p.recv()
		var ev event
		json.Unmarshal(m.Raw, &ev)
		if ev.Type != "event" || ev.WalOffset != want {
			p.t.Fatalf("want the event at offset %d, got %s", want, m.Raw)
		}
	}
}

// A JSONL connection gets everything in JSONL: replies, live events (of
// WATCH_INSTANCE and WATCH_ALL), events replayed from from_offset, and the
// error sent before closing on a malformed line.
func TestJSONLEverything(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"x"}`) // lsn 2
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"x","event":"INC"}`)                   // lsn 3

	t.Run("live event", func(t *testing.T) {
		p := dialJSONL(t, ts)
		p.send(`{"type":"request","id":"1","op":"WATCH_INSTANCE","params":{"instance_id":"x"}}`)
		if m := p.recv(); m.ID != "1" || m.Status != "ok" {
			t.Fatalf("WATCH_INSTANCE: %s", m.Raw)
		}
		lsn := ts.srv.log.lastLSN()
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"x","event":"INC"}`)
		p.expectEvents(lsn + 1)
	})
	t.Run("WATCH_ALL event", func(t *testing.T) {
		p := dialJSONL(t, ts)
		p.send(`{"type":"request","id":"1","op":"WATCH_ALL"}`)
		if m := p.recv(); m.ID != "1" || m.Status != "ok" {
			t.Fatalf("WATCH_ALL: %s", m.Raw)
		}
		lsn := ts.srv.log.lastLSN()
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"x","event":"INC"}`)
		p.expectEvents(lsn + 1)
	})
	t.Run("replayed events", func(t *testing.T) {
		p := dialJSONL(t, ts)
		p.send(`{"type":"request","id":"1","op":"WATCH_INSTANCE","params":{"instance_id":"x","from_offset":2}}`)
		if m := p.recv(); m.ID != "1" || m.Status != "ok" {
			t.Fatalf("WATCH_INSTANCE: %s", m.Raw)
		}
		var want []uint64
		ts.srv.hub.each(3, ts.srv.log.durableLSN(), func(lsn uint64, evs []*watchEvent) bool {
			if len(evs) > 0 {
				want = append(want, lsn)
			}
			return true
		})
		p.expectEvents(want...)
	})
	t.Run("error before close", func(t *testing.T) {
		p := dialJSONL(t, ts)
		p.send(`{"id":"1","op":"PING"}`)
		p.send(`{"id":"2","op":`)
		if m := p.recv(); m.ID != "1" || m.Status != "ok" {
			t.Fatalf("PING: %s", m.Raw)
		}
		if m := p.recv(); m.Error == nil || m.Error.Code != codeBadRequest || m.ID != "" {
			t.Fatalf("malformed line: %s", m.Raw)
		}
		if line, err := p.r.ReadBytes('\n'); err == nil {
			t.Fatalf("connection open after a malformed line: %q", line)
		}
	})
	t.Run("error for an envelope", func(t *testing.T) {
		p := dialJSONL(t, ts)
		p.send(`{"id":"1","op":"NOPE"}`)
		if m := p.recv(); m.ID != "1" || m.Error == nil || m.Error.Code != codeBadRequest {
			t.Fatalf("unknown op: %s", m.Raw)
		}
	})
}

// A binary connection that switches to JSONL with HELLO gets its events,
// live and replayed, and its error frames in JSONL from the HELLO reply on,
// even while events stream during the switch; switching back works too.
func TestHelloSwitchCarriesEvents(t *testing.T) {
	ts := startServer(t, func(c *config) { c.Fsync = fsyncPolicy{Kind: "never"} })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"x"}`)
	for i := 0; i < 20; i++ {
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"x","event":"INC"}`) // lsn 3..22
	}
	w := ts.dial()
	// Replay from the start and keep writing while the switch happens.
	watchResult(t, w, "WATCH_ALL", `{"from_offset":2}`)
	const more = 300
	done := make(chan error, 1)
	go func() {
		wc, err := dialClient(ts.addr, 5*time.Second)
		if err != nil {
			done <- err
			return
		}
		defer wc.close()
		for i := 0; i < more; i++ {
			if _, err := wc.call("APPLY_EVENT", `{"instance_id":"x","event":"INC"}`); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	id, _ := w.send("HELLO", `{"protocol_version":1,"wire_modes":["jsonl"]}`)
	w.flush()
	next := uint64(3)
	check := func(m *message) {
		t.Helper()
		var ev event
		if err := json.Unmarshal(m.Raw, &ev); err != nil || ev.WalOffset != next {
			t.Fatalf("want the event at offset %d, got %s", next, m.Raw)
		}
		next++
	}
	for {
		m, err := w.recv() // binary until the HELLO reply
		if err != nil {
			t.Fatalf("before the HELLO reply: %v", err)
		}
		if m.Type == "response" {
			if m.ID != id || m.Status != "ok" {
				t.Fatalf("HELLO: %s", m.Raw)
			}
			break
		}
		check(m)
	}
	w.mode = modeJSONL
	w.fr.setMode(modeJSONL)
	for next <= 22+more {
		m, err := w.recv()
		if err != nil {
			t.Fatalf("after the switch, at offset %d: %v", next, err)
		}
		check(m)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Back to binary: replies and events in binary again.
	runSteps(t, w, []step{{op: "HELLO", params: `{"protocol_version":1,"wire_modes":["binary_json"]}`,
		want: `{"features":[],"protocol_version":1,"server_name":"stmdb","server_version":"<any>","wire_mode":"binary_json"}`}})
	w.mode = modeBinary
	w.fr.setMode(modeBinary)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"x","event":"INC"}`)
	check(recvMsg(t, w))
	// And JSONL again, then a malformed line: the error comes in JSONL.
	runSteps(t, w, []step{{op: "HELLO", params: `{"protocol_version":1,"wire_modes":["jsonl"]}`}})
	w.mode = modeJSONL
	w.fr.setMode(modeJSONL)
	w.bw.WriteString("{nope\n")
	w.flush()
	if m := recvMsg(t, w); m.Error == nil || m.Error.Code != codeBadRequest || m.ID != "" {
		t.Fatalf("malformed line after the switch: %s", m.Raw)
	}
}

func recvMsg(t *testing.T, c *client) *message {
	t.Helper()
	m, err := c.recv()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A connection refused for max_connections gets its RATE_LIMITED in its own
// framing: a JSON line for a client that sent '{' first, a frame for a
// binary client; either way the refusal arrives before the close, even
// though the request it sent is never read.
func TestRejectInClientFraming(t *testing.T) {
	ts := startServer(t, func(c *config) { c.MaxConnections = 1 })
	mustOK(t, ts.dial(), "PING", "")

	// The server gives the client rejectPeek to send its first byte, which
	// this test sends at once; a stall that long on a loaded machine gets
	// the binary refusal, so the JSONL client tries up to three times.
	for attempt := 1; ; attempt++ {
		p := dialJSONL(t, ts)
		p.send(`{"type":"request","id":"1","op":"PING"}`)
		line, err := p.r.ReadBytes('\n')
		if bytes.HasPrefix(line, []byte("RCPX")) && attempt < 3 {
			t.Logf("attempt %d: refused in binary: the first byte came late", attempt)
			continue
		}
		var m message
		if err != nil || json.Unmarshal(line, &m) != nil || m.Error == nil || m.Error.Code != codeRateLimited {
			t.Errorf("JSONL client over max_connections: %q %v", line, err)
		}
		if line, err := p.r.ReadBytes('\n'); err == nil {
			t.Errorf("rejected JSONL connection stayed open: %q", line)
		}
		break
	}

	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	nc.Write(appendFrame(nil, modeBinary, []byte(`{"type":"request","id":"1","op":"PING"}`)))
	c := newClient(nc)
	if m, err := c.recv(); err != nil || m.Error == nil || m.Error.Code != codeRateLimited {
		t.Errorf("binary client over max_connections: %v %v", m, err)
	}
	if m, err := c.recv(); err == nil {
		t.Errorf("rejected binary connection stayed open: %s", m.Raw)
	}
}
