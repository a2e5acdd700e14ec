package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
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
		{op: "WAL_READ", params: `{"from_offset":1,"limit":1001}`, code: codeBadRequest, messageHas: "limit"},
		{op: "WAL_READ", params: `{"from_offset":"1"}`, code: codeBadRequest, messageHas: "from_offset"},
		{op: "WAL_STATS", want: `{"entry_count":3,"io_stats":{"bytes_read":"<int>","bytes_written":"<int>","fsyncs":"<int>","reads":"<int>","writes":"<int>"},"latest_offset":3,"segment_count":1,"total_size_bytes":"<int>"}`},
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
