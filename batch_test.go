package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBatchOps(t *testing.T) {
	ts := startServer(t, func(c *config) { c.MaxBatchOps = 5 })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"a","initial_ctx":{"amount":5}}`) // lsn 2

	runSteps(t, c, []step{
		{name: "best effort: each op alone, failures in their slot", op: "BATCH", meta: true, params: `{"mode":"best_effort","ops":[
			{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"b","initial_ctx":{"amount":7}}},
			{"op":"APPLY_EVENT","params":{"instance_id":"a","event":"SHIP"}},
			{"op":"APPLY_EVENT","params":{"instance_id":"b","event":"PAY"}},
			{"op":"GET_INSTANCE","params":{"instance_id":"a"}},
			{"op":"DELETE_INSTANCE","params":{}}]}`,
			want: `{"results":[
			{"error":null,"result":{"instance_id":"b","state":"created","wal_offset":3},"status":"ok"},
			{"error":{"code":"INVALID_TRANSITION","message":"<any>","retryable":false,"details":{"instance_id":"a","current_state":"created","event":"SHIP"}},"result":null,"status":"error"},
			{"error":null,"result":{"applied":true,"ctx":{"amount":7},"from_state":"created","to_state":"paid","wal_offset":4},"status":"ok"},
			{"error":{"code":"BAD_REQUEST","message":"<any>","retryable":false,"details":{"field":"ops[3].op","index":3}},"result":null,"status":"error"},
			{"error":{"code":"BAD_REQUEST","message":"<any>","retryable":false,"details":{"field":"instance_id"}},"result":null,"status":"error"}]}`},
		{name: "atomic: create then apply in one record", op: "BATCH", meta: true, params: `{"mode":"atomic","ops":[
			{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"c","initial_ctx":{"amount":9}}},
			{"op":"APPLY_EVENT","params":{"instance_id":"c","event":"PAY","payload":{"note":"x"}}},
			{"op":"APPLY_EVENT","params":{"instance_id":"a","event":"CANCEL"}}]}`,
			want: `{"results":[
			{"error":null,"result":{"instance_id":"c","state":"created","wal_offset":5},"status":"ok"},
			{"error":null,"result":{"applied":true,"ctx":{"amount":9,"note":"x"},"from_state":"created","to_state":"paid","wal_offset":5},"status":"ok"},
			{"error":null,"result":{"applied":true,"ctx":{"amount":5},"from_state":"created","to_state":"cancelled","wal_offset":5},"status":"ok"}]}`},
		{name: "atomic failure: first failing op's error with its index", op: "BATCH", params: `{"mode":"atomic","ops":[
			{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"d"}},
			{"op":"APPLY_EVENT","params":{"instance_id":"b","event":"SHIP","payload":{"z":1}}},
			{"op":"DELETE_INSTANCE","params":{"instance_id":"c"}},
			{"op":"APPLY_EVENT","params":{"instance_id":"d","event":"SHIP"}}]}`,
			code: codeInvalidTransition, messageHas: "op 3",
			want: `{"retryable":false,"details":{"index":3,"instance_id":"d","current_state":"created","event":"SHIP"}}`},
		{name: "rolled back: d not created", op: "GET_INSTANCE", params: `{"instance_id":"d"}`, code: codeInstanceNotFound},
		{name: "rolled back: b not shipped, ctx unchanged", op: "GET_INSTANCE", params: `{"instance_id":"b"}`,
			want: `{"ctx":{"amount":7},"created_at":"<int>","last_wal_offset":4,"machine":"order","state":"paid","updated_at":"<int>","version":1}`},
		{name: "rolled back: c not deleted", op: "GET_INSTANCE", params: `{"instance_id":"c"}`,
			want: `{"ctx":{"amount":9,"note":"x"},"created_at":"<int>","last_wal_offset":5,"machine":"order","state":"paid","updated_at":"<int>","version":1}`},
		{name: "nothing was logged by the failed batch", op: "WAL_STATS", want: `{"disk_quota_bytes":0,"disk_reserve_bytes":"<int>","disk_used_bytes":"<int>","entry_count":5,"io_stats":"<any>","latest_offset":5,"segment_count":"<int>","total_size_bytes":"<int>"}`},
		{name: "atomic rejects a non-batchable op", op: "BATCH", params: `{"mode":"atomic","ops":[
			{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"e"}},{"op":"PUT_MACHINE","params":{}}]}`,
			code: codeBadRequest, want: `{"retryable":false,"details":{"field":"ops[1].op","index":1}}`},
		{op: "GET_INSTANCE", params: `{"instance_id":"e"}`, code: codeInstanceNotFound},
		{name: "element not an object", op: "BATCH", params: `{"mode":"best_effort","ops":[5]}`,
			want: `{"results":[{"error":{"code":"BAD_REQUEST","message":"<any>","retryable":false,"details":{"field":"ops[0]","index":0}},"result":null,"status":"error"}]}`},
		{name: "empty batch", op: "BATCH", params: `{"mode":"atomic","ops":[]}`, want: `{"results":[]}`},
		{op: "BATCH", params: `{"mode":"sometimes","ops":[]}`, code: codeBadRequest, messageHas: "mode"},
		{op: "BATCH", params: `{"ops":[]}`, code: codeBadRequest, messageHas: "mode"},
		{op: "BATCH", params: `{"mode":"atomic"}`, code: codeBadRequest, messageHas: "ops"},
		{op: "BATCH", params: `{"mode":"atomic","ops":{}}`, code: codeBadRequest, messageHas: "ops"},
		{name: "over max_batch_ops", op: "BATCH", params: `{"mode":"best_effort","ops":[` + strings.Repeat(`{"op":"PING"},`, 5) + `{"op":"PING"}]}`,
			code: codeBadRequest, want: `{"retryable":false,"details":{"field":"ops","limit":5}}`},
		{name: "nested batch refused", op: "BATCH", params: `{"mode":"best_effort","ops":[{"op":"BATCH","params":{"mode":"atomic","ops":[]}}]}`,
			want: `{"results":[{"error":{"code":"BAD_REQUEST","message":"<any>","retryable":false,"details":"<any>"},"result":null,"status":"error"}]}`},
	})

	// Idempotent members of an atomic batch: a retry of the whole batch
	// writes nothing and answers with the original results.
	batch := `{"mode":"atomic","ops":[
		{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"f","idempotency_key":"bf"}},
		{"op":"APPLY_EVENT","params":{"instance_id":"f","event":"CANCEL","idempotency_key":"bf"}}]}`
	first := mustOK(t, c, "BATCH", batch)
	again := mustOK(t, c, "BATCH", batch)
	want := strings.Replace(string(first), `"applied":true`, `"applied":false`, 1)
	matchJSON(t, "atomic batch retry", want, again)
	runSteps(t, c, []step{{op: "WAL_STATS", want: `{"disk_quota_bytes":0,"disk_reserve_bytes":"<int>","disk_used_bytes":"<int>","entry_count":6,"io_stats":"<any>","latest_offset":6,"segment_count":"<int>","total_size_bytes":"<int>"}`}})
	// Replay rebuilds atomic batches whole.
	ts.restart()
	c = ts.dial()
	runSteps(t, c, []step{{op: "GET_INSTANCE", params: `{"instance_id":"f"}`,
		want: fmt.Sprintf(`{"ctx":{},"created_at":"<int>","last_wal_offset":6,"machine":"order","state":"cancelled","updated_at":"<int>","version":1}`)}})
}

// Atomic batches that delete (moving other instances between internal
// slots) roll back exactly, and snapshots taken after them match.
func TestAtomicRollbackWithDeletes(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	for i := 0; i < 6; i++ {
		mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"s%d"}`, i))
	}
	before := dumpState(ts.srv.st)
	m := call(t, c, "BATCH", `{"mode":"atomic","ops":[
		{"op":"DELETE_INSTANCE","params":{"instance_id":"s1"}},
		{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"n1"}},
		{"op":"DELETE_INSTANCE","params":{"instance_id":"s5"}},
		{"op":"APPLY_EVENT","params":{"instance_id":"n1","event":"INC"}},
		{"op":"DELETE_INSTANCE","params":{"instance_id":"n1"}},
		{"op":"DELETE_INSTANCE","params":{"instance_id":"s0"}},
		{"op":"APPLY_EVENT","params":{"instance_id":"s1","event":"INC"}}]}`)
	if m.Error == nil || m.Error.Details["index"] != float64(6) {
		t.Fatalf("want failure at op 6: %s", m.Raw)
	}
	if diff := cmp.Diff(before, dumpState(ts.srv.st)); diff != "" {
		t.Errorf("state after rollback (-before +after):\n%s", diff)
	}
	checkSlots(t, ts.srv.st)
	mustOK(t, c, "BATCH", `{"mode":"atomic","ops":[
		{"op":"DELETE_INSTANCE","params":{"instance_id":"s1"}},
		{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"n1"}},
		{"op":"DELETE_INSTANCE","params":{"instance_id":"s5"}}]}`)
	checkSlots(t, ts.srv.st)
	mustOK(t, c, "COMPACT", `{}`)
	ts.restart()
	checkSlots(t, ts.srv.st)
}

// checkSlots verifies the dense instance slots agree with the map.
func checkSlots(t *testing.T, st *state) {
	t.Helper()
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.slots.len() != len(st.instances) {
		t.Fatalf("%d slots for %d instances", st.slots.len(), len(st.instances))
	}
	for i := range st.slots.len() {
		in := st.slots.at(i)
		if in == nil || in.slot != i || st.instances[in.id] != in {
			t.Fatalf("slot %d holds %+v", i, in)
		}
	}
}

// A batch, in either mode, is one unit in the log: appended together and
// made durable by one group commit, so on an idle server it costs exactly
// one fdatasync. A best-effort batch's members are separate records, and
// the committer used to sync the first of them alone about one time in
// four.
func TestBatchCostsOneSync(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	fsyncs := func() uint64 {
		var st struct {
			IOStats struct {
				Fsyncs uint64 `json:"fsyncs"`
			} `json:"io_stats"`
		}
		if err := json.Unmarshal(mustOK(t, c, "WAL_STATS", `{}`), &st); err != nil {
			t.Fatal(err)
		}
		return st.IOStats.Fsyncs
	}
	for _, mode := range []string{"best_effort", "atomic"} {
		extra := 0
		const rounds = 40
		for i := range rounds {
			var ops []string
			for k := range 5 {
				ops = append(ops, fmt.Sprintf(`{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"%s-%d-%d"}}`, mode, i, k))
			}
			before := fsyncs()
			mustOK(t, c, "BATCH", fmt.Sprintf(`{"mode":%q,"ops":[%s]}`, mode, strings.Join(ops, ",")))
			if d := fsyncs() - before; d != 1 {
				extra++
				t.Logf("%s round %d: %d fsyncs", mode, i, d)
			}
		}
		if extra > 0 {
			t.Errorf("%s: %d of %d batches did not cost exactly one fsync", mode, extra, rounds)
		}
	}
}
