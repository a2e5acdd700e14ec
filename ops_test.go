package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSessionOps(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	runSteps(t, c, []step{
		{op: "PING", want: `{"pong":true}`},
		{name: "PING null params", op: "PING", params: `null`, want: `{"pong":true}`},
		{op: "HELLO", params: `{"protocol_version":1,"client_name":"t","wire_modes":["binary_json"],"features":["watch","batch","idempotency","nope"]}`,
			want: `{"features":["idempotency","batch","watch"],"protocol_version":1,"server_name":"stmdb","server_version":"<any>","wire_mode":"binary_json"}`},
		{name: "HELLO repeated, no modes", op: "HELLO", params: `{"protocol_version":1}`,
			want: `{"features":[],"protocol_version":1,"server_name":"stmdb","server_version":"<any>","wire_mode":"binary_json"}`},
		{op: "HELLO", params: `{"protocol_version":2}`, code: codeUnsupportedProtocol, messageHas: "version 2"},
		{op: "HELLO", params: `{}`, code: codeBadRequest, messageHas: "protocol_version", want: `{"retryable":false,"details":{"field":"protocol_version"}}`},
		{op: "HELLO", params: `{"protocol_version":1.0}`, code: codeBadRequest, messageHas: "protocol_version"},
		{op: "HELLO", params: `{"protocol_version":"1"}`, code: codeBadRequest, messageHas: "protocol_version"},
		{op: "HELLO", params: `{"protocol_version":1,"wire_modes":"jsonl"}`, code: codeBadRequest, messageHas: "wire_modes"},
		{op: "INFO", want: `{"features":["idempotency","batch","watch","wal_read"],"max_batch_ops":100,"max_frame_bytes":16777216,"max_subscriptions_per_connection":1024,"protocol_version":1,"server_name":"stmdb","server_version":"<any>","timers":{"armed":0,"fired":0,"guard_failed":0},"disk":{"used_bytes":"<int>","quota_bytes":0,"reserve_bytes":"<int>"},"role":"primary","epoch":0,"replication":{"role":"primary","epoch":0,"offset":"<int>","sync_replicas":0,"synchronous":false,"sync_degradations":0}}`},
		{name: "params not an object", op: "PING", params: `[1]`, code: codeBadRequest, messageHas: "params"},
		{op: "NOPE", code: codeBadRequest, messageHas: "unknown op 'NOPE'"},
		{op: "ping", code: codeBadRequest, messageHas: "unknown op"},
	})
	// Connection still serves after all those errors.
	runSteps(t, c, []step{{op: "PING", want: `{"pong":true}`}})
	// BYE answers, then closes.
	runSteps(t, c, []step{{op: "BYE", want: `{"goodbye":true}`}})
	if _, err := c.recv(); err == nil {
		t.Fatal("connection still open after BYE")
	}
}

func TestMachineOps(t *testing.T) {
	ts := startServer(t, func(c *config) { c.MaxMachineVersions = 2 })
	c := ts.dial()
	simple := `{"states":["created","paid"],"initial":"created","transitions":[{"from":"created","event":"PAY","to":"paid"}]}`
	canon := `{"states":["created","paid"],"initial":"created","transitions":[{"from":["created"],"event":"PAY","to":"paid"}]}`
	sum := sha256Hex(canon)
	put := func(name string, v int, def string) string {
		return fmt.Sprintf(`{"machine":%q,"version":%d,"definition":%s}`, name, v, def)
	}
	runSteps(t, c, []step{
		{op: "PUT_MACHINE", params: put("m", 1, simple), meta: true,
			want: fmt.Sprintf(`{"created":true,"machine":"m","stored_checksum":%q,"version":1}`, sum)},
		{name: "identical re-put", op: "PUT_MACHINE", params: put("m", 1, simple), meta: true,
			want: fmt.Sprintf(`{"created":false,"machine":"m","stored_checksum":%q,"version":1}`, sum)},
		{name: "same meaning, from as string vs array, key order", op: "PUT_MACHINE",
			params: put("m", 1, `{"transitions":[{"to":"paid","event":"PAY","from":["created"]}],"initial":"created","states":["created","paid"],"extra":1}`),
			want:   fmt.Sprintf(`{"created":false,"machine":"m","stored_checksum":%q,"version":1}`, sum)},
		{name: "different def same version", op: "PUT_MACHINE", params: put("m", 1, `{"states":["a"],"initial":"a","transitions":[]}`),
			code: codeMachineVersionExists, want: fmt.Sprintf(`{"retryable":false,"details":{"machine":"m","version":1,"stored_checksum":%q}}`, sum)},
		{op: "PUT_MACHINE", params: put("m", 2, simple), meta: true},
		{name: "version limit", op: "PUT_MACHINE", params: put("m", 3, simple), code: codeMachineVersionLimit},
		{name: "checksum param matches", op: "PUT_MACHINE", params: fmt.Sprintf(`{"machine":"k","version":1,"definition":%s,"checksum":%q}`, simple, sum)},
		{name: "checksum param mismatch", op: "PUT_MACHINE", params: fmt.Sprintf(`{"machine":"k","version":2,"definition":%s,"checksum":"abc"}`, simple),
			code: codeBadRequest, messageHas: "checksum"},
		{op: "GET_MACHINE", params: `{"machine":"m","version":1}`,
			want: fmt.Sprintf(`{"checksum":%q,"definition":%s}`, sum, canon)},
		{op: "GET_MACHINE", params: `{"machine":"m","version":9}`, code: codeMachineNotFound,
			want: `{"retryable":false,"details":{"machine":"m","version":9}}`},
		{op: "GET_MACHINE", params: `{"machine":"m"}`, code: codeBadRequest, messageHas: "version"},
		{op: "LIST_MACHINES", want: `{"items":[{"machine":"k","versions":[1]},{"machine":"m","versions":[1,2]}]}`},
		{op: "PUT_MACHINE", params: orderMachine, meta: true},
	})
	// Invalid definitions: BAD_REQUEST naming the part, nothing stored.
	bad := []struct{ def, field, msg string }{
		{`null`, "definition", "missing"},
		{`[]`, "definition", "object"},
		{`"x"`, "definition", "object"},
		{`{"states":[],"initial":"a","transitions":[]}`, "definition.states", "empty"},
		{`{"states":"a","initial":"a","transitions":[]}`, "definition.states", "array"},
		{`{"initial":"a","transitions":[]}`, "definition.states", "states"},
		{`{"states":["a"],"initial":"b","transitions":[]}`, "definition.initial", "'b'"},
		{`{"states":["a"],"transitions":[]}`, "definition.initial", "initial"},
		{`{"states":["a"],"initial":"a","transitions":{}}`, "definition.transitions", "array"},
		{`{"states":["a"],"initial":"a"}`, "definition.transitions", "missing required field 'transitions'"},
		{`{"states":["a"],"initial":"a","transitions":null}`, "definition.transitions", "missing required field 'transitions'"},
		{`{"states":["a"],"transitions":[]}`, "definition.initial", "missing required field 'initial'"},
		{`{"initial":"a","transitions":[]}`, "definition.states", "missing required field 'states'"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":"x","event":"E","to":"a"}]}`, "definition.transitions[0].from", "'x'"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"E","to":"x"}]}`, "definition.transitions[0].to", "'x'"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":"a","to":"a"}]}`, "definition.transitions[0].event", "event"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":5,"event":"E","to":"a"}]}`, "definition.transitions[0].from", "from"},
		{`{"states":["a"],"initial":"a","transitions":[5]}`, "definition.transitions[0]", "object"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"E","to":"a","guard":"ctx.a >"}]}`, "definition.transitions[0].guard", "position"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"E","to":"a","guard":"amount > 1"}]}`, "definition.transitions[0].guard", "guard"},
		{`{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"E","to":"a","guard":"ctx.a == 1 junk"}]}`, "definition.transitions[0].guard", "guard"},
	}
	for i, b := range bad {
		m := call(t, c, "PUT_MACHINE", put("bad", i+1, b.def))
		if m.Status != "error" || m.Error.Code != codeBadRequest || m.Error.Details["field"] != b.field || !strings.Contains(m.Error.Message, b.msg) {
			t.Errorf("definition %s: want BAD_REQUEST field %s mentioning %q, got %s", b.def, b.field, b.msg, m.Raw)
		}
	}
	runSteps(t, c, []step{
		{name: "nothing stored by bad puts", op: "LIST_MACHINES", want: `{"items":[{"machine":"k","versions":[1]},{"machine":"m","versions":[1,2]},{"machine":"order","versions":[1]}]}`},
		{op: "PUT_MACHINE", params: put("v0", 0, simple), code: codeBadRequest, messageHas: "version"},
		{op: "PUT_MACHINE", params: put("", 1, simple), code: codeBadRequest, messageHas: "machine"},
		{op: "PUT_MACHINE", params: `{"machine":"m","version":1}`, code: codeBadRequest, messageHas: "definition"},
	})
	// A guard error names the position.
	m := call(t, c, "PUT_MACHINE", put("g", 1, `{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"E","to":"a","guard":"ctx.a >"}]}`))
	if _, ok := m.Error.Details["position"]; !ok {
		t.Errorf("guard error without position: %s", m.Raw)
	}
}

func TestInstanceOps(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	runSteps(t, c, []step{
		{op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"instance_id":"o-1","initial_ctx":{"amount":50,"who":{"name":"ann"}}}`, meta: true,
			want: `{"instance_id":"o-1","state":"created","wal_offset":2}`},
		{op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"instance_id":"o-1"}`, code: codeInstanceExists,
			want: `{"retryable":false,"details":{"instance_id":"o-1"}}`},
		{op: "CREATE_INSTANCE", params: `{"machine":"order","version":2,"instance_id":"o-2"}`, code: codeMachineNotFound},
		{op: "CREATE_INSTANCE", params: `{"machine":"nope","version":1}`, code: codeMachineNotFound},
		{op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"initial_ctx":[1]}`, code: codeBadRequest, messageHas: "initial_ctx"},
		{op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"initial_ctx":"x"}`, code: codeBadRequest, messageHas: "initial_ctx"},
		{op: "CREATE_INSTANCE", params: `{"version":1}`, code: codeBadRequest, messageHas: "machine"},
		{op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"instance_id":5}`, code: codeBadRequest, messageHas: "instance_id"},
		{op: "CREATE_INSTANCE", params: fmt.Sprintf(`{"machine":"order","version":1,"instance_id":%q}`, strings.Repeat("x", 257)), code: codeBadRequest, messageHas: "instance_id"},
		{name: "default ctx", op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"instance_id":"o-2"}`, want: `{"instance_id":"o-2","state":"created","wal_offset":3}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"o-1"}`,
			want: `{"ctx":{"amount":50,"who":{"name":"ann"}},"created_at":"<int>","last_wal_offset":2,"machine":"order","state":"created","updated_at":"<int>","version":1}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"o-2"}`,
			want: `{"ctx":{},"created_at":"<int>","last_wal_offset":3,"machine":"order","state":"created","updated_at":"<int>","version":1}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"zz"}`, code: codeInstanceNotFound, want: `{"retryable":false,"details":{"instance_id":"zz"}}`},
		{op: "GET_INSTANCE", params: `{}`, code: codeBadRequest, messageHas: "instance_id"},
	})
	// Generated ids are UUID v4.
	r := mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1}`)
	var cr struct {
		InstanceID string `json:"instance_id"`
	}
	json.Unmarshal(r, &cr)
	if len(cr.InstanceID) != 36 || cr.InstanceID[14] != '4' {
		t.Errorf("generated id %q is not a UUID v4", cr.InstanceID)
	}
	mustOK(t, c, "DELETE_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, cr.InstanceID))

	for i := 3; i <= 7; i++ {
		mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"order","version":1,"instance_id":"o-%d"}`, i))
	}
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"o-1","event":"PAY"}`)
	runSteps(t, c, []step{
		{name: "list ordered by id, paged", op: "LIST_INSTANCES", params: `{"limit":2,"offset":1}`,
			want: `{"has_more":true,"instances":[
			 {"created_at":"<int>","id":"o-2","last_wal_offset":3,"machine":"order","state":"created","updated_at":"<int>","version":1},
			 {"created_at":"<int>","id":"o-3","last_wal_offset":"<int>","machine":"order","state":"created","updated_at":"<int>","version":1}],"total":7}`},
		{name: "filter by state", op: "LIST_INSTANCES", params: `{"state":"paid"}`,
			want: `{"has_more":false,"instances":[{"created_at":"<int>","id":"o-1","last_wal_offset":"<int>","machine":"order","state":"paid","updated_at":"<int>","version":1}],"total":1}`},
		{name: "filter by machine", op: "LIST_INSTANCES", params: `{"machine":"other"}`, want: `{"has_more":false,"instances":[],"total":0}`},
		{name: "offset past end", op: "LIST_INSTANCES", params: `{"offset":100}`, want: `{"has_more":false,"instances":[],"total":7}`},
		{op: "LIST_INSTANCES", params: `{"limit":1001}`, code: codeBadRequest, messageHas: "limit"},
		{op: "LIST_INSTANCES", params: `{"limit":-1}`, code: codeBadRequest, messageHas: "limit"},
		{name: "null params", op: "LIST_INSTANCES", params: `null`, want: `{"has_more":false,"instances":"<any>","total":7}`},
		{op: "DELETE_INSTANCE", params: `{"instance_id":"o-3"}`, meta: true, want: `{"deleted":true,"instance_id":"o-3","wal_offset":"<int>"}`},
		{op: "DELETE_INSTANCE", params: `{"instance_id":"o-3"}`, code: codeInstanceNotFound},
		{op: "GET_INSTANCE", params: `{"instance_id":"o-3"}`, code: codeInstanceNotFound},
		{op: "APPLY_EVENT", params: `{"instance_id":"o-3","event":"PAY"}`, code: codeInstanceNotFound},
		{name: "deleted excluded from list", op: "LIST_INSTANCES", params: `{"limit":0}`, want: `{"has_more":true,"instances":[],"total":6}`},
		{name: "id can be created again", op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"instance_id":"o-3"}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"o-3"}`, want: `{"ctx":{},"created_at":"<int>","last_wal_offset":"<int>","machine":"order","state":"created","updated_at":"<int>","version":1}`},
	})
}

func TestApplyEventOps(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"small","initial_ctx":{"amount":50}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"big","initial_ctx":{"amount":5000}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"zero","initial_ctx":{"amount":0}}`)
	runSteps(t, c, []step{
		{name: "first passing guard wins (second candidate)", op: "APPLY_EVENT",
			params: `{"instance_id":"small","event":"PAY","payload":{"paid_by":"card","amount":51},"event_id":"e1"}`, meta: true,
			want: `{"applied":true,"ctx":{"amount":51,"paid_by":"card"},"event_id":"e1","from_state":"created","to_state":"paid","wal_offset":5}`},
		{name: "first candidate wins when its guard passes", op: "APPLY_EVENT", params: `{"instance_id":"big","event":"PAY"}`,
			want: `{"applied":true,"ctx":{"amount":5000},"from_state":"created","to_state":"review","wal_offset":6}`},
		{name: "all guards fail", op: "APPLY_EVENT", params: `{"instance_id":"zero","event":"PAY","payload":{"amount":10}}`, code: codeGuardFailed,
			want: `{"retryable":false,"details":{"instance_id":"zero","current_state":"created","event":"PAY"}}`},
		{name: "guard failure changed nothing", op: "GET_INSTANCE", params: `{"instance_id":"zero"}`,
			want: `{"ctx":{"amount":0},"created_at":"<int>","last_wal_offset":4,"machine":"order","state":"created","updated_at":"<int>","version":1}`},
		{name: "no transition", op: "APPLY_EVENT", params: `{"instance_id":"small","event":"APPROVE"}`, code: codeInvalidTransition,
			want: `{"retryable":false,"details":{"instance_id":"small","current_state":"paid","event":"APPROVE"}}`},
		{op: "APPLY_EVENT", params: `{"instance_id":"small","event":"SHIP","expected_state":"created"}`, code: codeConflict,
			want: `{"retryable":false,"details":{"instance_id":"small","expected":"created","actual":"paid"}}`},
		{op: "APPLY_EVENT", params: `{"instance_id":"small","event":"SHIP","expected_wal_offset":4}`, code: codeConflict,
			want: `{"retryable":false,"details":{"instance_id":"small","expected":4,"actual":5}}`},
		{op: "APPLY_EVENT", params: `{"instance_id":"small","event":"SHIP","payload":[1]}`, code: codeBadRequest, messageHas: "payload"},
		{op: "APPLY_EVENT", params: `{"instance_id":"small","event":"SHIP","payload":5}`, code: codeBadRequest, messageHas: "payload"},
		{op: "APPLY_EVENT", params: `{"instance_id":"small"}`, code: codeBadRequest, messageHas: "event"},
		{op: "APPLY_EVENT", params: `{"instance_id":"small","event":"SHIP","expected_wal_offset":-1}`, code: codeBadRequest, messageHas: "expected_wal_offset"},
		{op: "APPLY_EVENT", params: `{"instance_id":"nope","event":"SHIP"}`, code: codeInstanceNotFound},
		{name: "expected state and offset that match", op: "APPLY_EVENT", params: `{"instance_id":"small","event":"SHIP","expected_state":"paid","expected_wal_offset":5}`,
			want: `{"applied":true,"ctx":{"amount":51,"paid_by":"card"},"from_state":"paid","to_state":"shipped","wal_offset":7}`},
		{name: "last_event_id cleared by an event without one", op: "GET_INSTANCE", params: `{"instance_id":"small"}`,
			want: `{"ctx":{"amount":51,"paid_by":"card"},"created_at":"<int>","last_wal_offset":7,"machine":"order","state":"shipped","updated_at":"<int>","version":1}`},
		{name: "null payload value sets null; nested replaced", op: "APPLY_EVENT", params: `{"instance_id":"big","event":"APPROVE","payload":{"amount":null,"x":{"y":[1,2.50,"<&>"]}},"event_id":"e2"}`,
			want: `{"applied":true,"ctx":{"amount":null,"x":{"y":[1,2.50,"<&>"]}},"event_id":"e2","from_state":"review","to_state":"paid","wal_offset":8}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"big"}`,
			want: `{"ctx":{"amount":null,"x":{"y":[1,2.5,"<&>"]}},"created_at":"<int>","last_event_id":"e2","last_wal_offset":8,"machine":"order","state":"paid","updated_at":"<int>","version":1}`},
	})
}

func TestIdempotency(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	create := `{"machine":"order","version":1,"initial_ctx":{"amount":5},"idempotency_key":"k1"}`
	r1 := mustOK(t, c, "CREATE_INSTANCE", create)
	var cr struct {
		InstanceID string `json:"instance_id"`
	}
	json.Unmarshal(r1, &cr)
	id := cr.InstanceID
	apply := fmt.Sprintf(`{"instance_id":%q,"event":"PAY","payload":{"n":1},"idempotency_key":"k1"}`, id)
	applied := fmt.Sprintf(`{"applied":true,"ctx":{"amount":5,"n":1},"from_state":"created","to_state":"paid","wal_offset":3}`)
	replayed := strings.Replace(applied, `"applied":true`, `"applied":false`, 1)
	del := fmt.Sprintf(`{"instance_id":%q,"idempotency_key":"k1"}`, id)
	steps := []step{
		{name: "create retry returns the same id without a new record", op: "CREATE_INSTANCE", params: create, meta: true, want: string(r1)},
		{name: "create: same key, different params", op: "CREATE_INSTANCE", params: `{"machine":"order","version":1,"idempotency_key":"k1"}`,
			code: codeConflict, want: `{"retryable":false,"details":{"idempotency_key":"k1"}}`},
		{name: "keys are scoped per op", op: "APPLY_EVENT", params: apply, want: applied},
		{name: "apply retry: original result, applied false", op: "APPLY_EVENT", params: apply, want: replayed},
		{name: "apply retry skips state checks", op: "APPLY_EVENT", params: apply, want: replayed},
		{name: "apply: same key, different payload", op: "APPLY_EVENT", params: fmt.Sprintf(`{"instance_id":%q,"event":"PAY","payload":{"n":2},"idempotency_key":"k1"}`, id), code: codeConflict},
		{op: "DELETE_INSTANCE", params: del, want: fmt.Sprintf(`{"deleted":true,"instance_id":%q,"wal_offset":4}`, id)},
		{name: "delete retry after the instance is gone", op: "DELETE_INSTANCE", params: del, want: fmt.Sprintf(`{"deleted":true,"instance_id":%q,"wal_offset":4}`, id)},
		{name: "one instance was created, however many retries", op: "LIST_INSTANCES", params: `{}`, want: `{"has_more":false,"instances":[],"total":0}`},
		{op: "WAL_STATS", want: `{"disk_quota_bytes":0,"disk_reserve_bytes":"<int>","disk_used_bytes":"<int>","entry_count":4,"io_stats":"<any>","latest_offset":4,"segment_count":"<int>","total_size_bytes":"<int>"}`},
	}
	runSteps(t, c, steps)
	// Keys are durable: after a restart every retry answers the same.
	ts.restart()
	c = ts.dial()
	runSteps(t, c, steps[:1])
	runSteps(t, c, steps[3:4])
	runSteps(t, c, steps[7:8])
	// After the TTL a key is forgotten: the delete retry now finds nothing.
	ts.srv.skewMS.Store((ts.cfg.IdempotencyTTL + time.Minute).Milliseconds())
	runSteps(t, c, []step{{op: "DELETE_INSTANCE", params: del, code: codeInstanceNotFound}})
	// Compaction drops expired keys from memory and from the snapshot.
	mustOK(t, c, "COMPACT", `{}`)
	ts.srv.st.mu.RLock()
	left := ts.srv.st.idem.len()
	ts.srv.st.mu.RUnlock()
	if left != 0 {
		t.Errorf("%d expired idempotency keys kept after compaction", left)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// With storage.allow_instance_recreate false, a deleted id stays taken,
// across restarts and compaction.
func TestNoInstanceRecreate(t *testing.T) {
	ts := startServer(t, func(c *config) { c.AllowInstanceRecreate = false })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"x"}`)
	mustOK(t, c, "DELETE_INSTANCE", `{"instance_id":"x"}`)
	again := step{op: "CREATE_INSTANCE", params: `{"machine":"ctr","version":1,"instance_id":"x"}`, code: codeInstanceExists, messageHas: "allow_instance_recreate"}
	runSteps(t, c, []step{again})
	mustOK(t, c, "COMPACT", `{}`)
	ts.restart()
	runSteps(t, ts.dial(), []step{again})
}

// ctx is stored compact whatever whitespace the client sent, and a key
// repeated in a payload keeps its last value.
func TestCtxCompaction(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", "{\"machine\":\"ctr\",\"version\":1,\"instance_id\":\"w\",\"initial_ctx\":{ \"a\" : [ 1, 2 ],\n\t\"s\": \"x y\" }}")
	m := call(t, c, "APPLY_EVENT", "{\"instance_id\":\"w\",\"event\":\"INC\",\"payload\":{ \"b\" : { \"c\" : \"d e\" }, \"a\": 3, \"a\": 4 }}")
	var r struct {
		Ctx json.RawMessage `json:"ctx"`
	}
	json.Unmarshal(m.Result, &r)
	if want := `{"a":4,"s":"x y","b":{"c":"d e"}}`; string(r.Ctx) != want {
		t.Errorf("ctx %s, want %s", r.Ctx, want)
	}
}

// TestApplyKeepsNoBorrowedBytes checks the contract of APPLY_EVENT's
// borrowed params (ops.spec): instance_id, event and payload alias the
// request buffer, so nothing the server keeps may point into it. The
// request is overwritten after each call, as the connection's next read
// would, and the instance, the log record and the reply must not change.
func TestApplyKeepsNoBorrowedBytes(t *testing.T) {
	s, _ := benchOpen(t, "every_write", 1, 0)
	c := &conn{s: s, fr: newFrameReader(nil)}
	req := func(body string) []byte {
		return []byte(`{"type":"request","id":"r-1","op":"APPLY_EVENT","params":` + body + `}`)
	}
	scribble := func(b []byte) {
		for i := range b {
			b[i] = 'Z'
		}
	}
	first := req(`{"instance_id":"bench-0","event":"TICK","payload":{"n":7,"tag":"abc"},"event_id":"ev-1"}`)
	m1 := c.handle(first, time.Now())
	reply1 := string(m1.buf)
	scribble(first)
	// A second request on the same connection reuses its record.
	second := req(`{"instance_id":"bench-0","event":"TICK","payload":{"more":true}}`)
	m2 := c.handle(second, time.Now())
	scribble(second)
	if string(m1.buf) != reply1 || !strings.Contains(reply1, `"ctx":{"n":7,"pad":"","tag":"abc"}`) {
		t.Errorf("first reply changed or wrong: %q (was %q)", m1.buf, reply1)
	}
	if !strings.Contains(string(m2.buf), `"ctx":{"n":7,"pad":"","tag":"abc","more":true}`) {
		t.Errorf("second reply: %q", m2.buf)
	}
	// Into an empty ctx, the merge result equals the payload, and must
	// still be a copy of it.
	free := json.RawMessage(`{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"GO","to":"a"}]}`)
	if _, rerr := s.handlePutMachine(nil, &PutMachineParams{Machine: "free", Version: 1, Definition: free}); rerr != nil {
		t.Fatal(rerr)
	}
	empty := "empty"
	if _, rerr := s.handleCreateInstance(nil, &CreateInstanceParams{InstanceID: &empty, Machine: "free", Version: 1}); rerr != nil {
		t.Fatal(rerr)
	}
	third := req(`{"instance_id":"empty","event":"GO","payload":{"n":1}}`)
	c.handle(third, time.Now())
	scribble(third)
	if err := s.log.sync(); err != nil {
		t.Fatal(err)
	}

	s.st.mu.RLock()
	if e := s.st.instances["empty"]; e == nil || string(e.ctx) != `{"n":1}` {
		t.Errorf("instance with an empty ctx after the request was overwritten: %+v", e)
	}
	in := s.st.instances["bench-0"]
	s.st.mu.RUnlock()
	if in == nil || in.id != "bench-0" || in.state != "live" || string(in.ctx) != `{"n":7,"pad":"","tag":"abc","more":true}` {
		t.Fatalf("instance after the requests were overwritten: %+v", in)
	}
	var got []string
	err := s.log.read(1, func(wr walRecord) bool {
		r, err := decodeRecord(wr.Type, wr.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if r.typ == recApplyEvent {
			got = append(got, fmt.Sprintf("%s %s %s %s %s", r.InstanceID, r.Event, r.Payload, r.Ctx, r.EventID))
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`bench-0 TICK {"n":7,"tag":"abc"} {"n":7,"pad":"","tag":"abc"} ev-1`,
		`bench-0 TICK {"more":true} {"n":7,"pad":"","tag":"abc","more":true} `,
		`empty GO {"n":1} {"n":1} `,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("logged APPLY_EVENT records (-want +got):\n%s", diff)
	}
}
