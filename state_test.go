package main

import (
	"encoding/json"
	"math/rand"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The incremental id index behind LIST_INSTANCES always equals the sorted
// ids of the instances present, through creates, deletes, re-creates and
// rolled-back atomic batches (the seed is printed for replay).
func TestSortedIDsProperty(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	st := newState(1000)
	mv, _ := compileMachine("m", 1, []byte(`{"states":["s"],"initial":"s","transitions":[]}`))
	st.apply(&record{typ: recPutMachine, lsn: 1, Machine: "m", Version: 1, Def: mv.def, mv: mv})
	lsn := uint64(1)
	for step := 0; step < 3000; step++ {
		id := "i" + strconv.Itoa(rng.Intn(300))
		lsn++
		inBatch := rng.Intn(10) == 0
		if inBatch {
			st.beginUndo()
		}
		if st.instances[id] == nil {
			st.apply(&record{typ: recCreateInstance, lsn: lsn, Machine: "m", Version: 1, InstanceID: id, InitialState: "s"})
		} else {
			st.apply(&record{typ: recDeleteInstance, lsn: lsn, InstanceID: id})
		}
		if inBatch {
			st.rollback()
		}
		if rng.Intn(7) == 0 {
			want := make([]string, 0, len(st.instances))
			for k := range st.instances {
				want = append(want, k)
			}
			sort.Strings(want)
			if diff := cmp.Diff(want, st.sortedIDs()); diff != "" {
				t.Fatalf("step %d (seed %d): sortedIDs (-want +got):\n%s", step, seed, diff)
			}
			checkSlots(t, st)
		}
	}
}

// TestInstanceResultMatchesMarshal checks GET_INSTANCE's hand-written result
// against encoding/json (as encMarshal renders it) for instances whose
// strings need escaping or are not ASCII. (encoding/json also escapes
// U+2028 and U+2029, which encAppendString, like every other result here,
// leaves as they are; both are valid JSON for the same value.)
func TestInstanceResultMatchesMarshal(t *testing.T) {
	mv := &machineVersion{name: `m "q" \ <&> é`, version: 4294967295}
	for _, in := range []*instance{
		{mv: mv, state: "s", ctx: []byte(`{"a":1,"b":"x\"y","c":[null,true,{"d":"é\u0001"}]}`), lastLSN: 7, createdAt: 1, updatedAt: 2},
		{mv: mv, state: "tab\there\nnl\x01\x1f", ctx: nil, lastEventID: `e\"<>`, lastLSN: 1 << 63, createdAt: -5, updatedAt: 1 << 62},
		{mv: &machineVersion{name: "", version: 0}, state: "日本", ctx: []byte(`{}`), lastEventID: "😀"},
	} {
		want := encMarshal(struct {
			Ctx           json.RawMessage `json:"ctx"`
			CreatedAt     int64           `json:"created_at"`
			LastEventID   string          `json:"last_event_id,omitempty"`
			LastWalOffset uint64          `json:"last_wal_offset"`
			Machine       string          `json:"machine"`
			State         string          `json:"state"`
			UpdatedAt     int64           `json:"updated_at"`
			Version       uint32          `json:"version"`
		}{ctxOrEmpty(in.ctx), in.createdAt, in.lastEventID, in.lastLSN, in.mv.name, in.state, in.updatedAt, in.mv.version})
		if got := appendInstanceResult([]byte("prefix"), in, nil); string(got) != "prefix"+string(want) {
			t.Errorf("appendInstanceResult:\n got %s\nwant prefix%s", got, want)
		}
	}
}

// TestListResultMatchesMarshal checks LIST_INSTANCES's hand-written result
// against encoding/json, for an empty page and for instances whose strings
// need escaping.
func TestListResultMatchesMarshal(t *testing.T) {
	type item struct {
		CreatedAt     int64  `json:"created_at"`
		ID            string `json:"id"`
		LastWalOffset uint64 `json:"last_wal_offset"`
		Machine       string `json:"machine"`
		State         string `json:"state"`
		UpdatedAt     int64  `json:"updated_at"`
		Version       uint32 `json:"version"`
	}
	mv := &machineVersion{name: `m "q" \ <&> é`, version: 4294967295}
	for _, page := range [][]*instance{
		{},
		{{id: "a", mv: mv, state: "s", lastLSN: 7, createdAt: 1, updatedAt: 2}},
		{{id: "tab\tid\n\x01", mv: mv, state: "日本", lastLSN: 1 << 63, createdAt: -5, updatedAt: 1 << 62},
			{id: `"quoted"`, mv: &machineVersion{}, state: ""}},
	} {
		for _, hasMore := range []bool{false, true} {
			items := make([]item, 0, len(page))
			for _, in := range page {
				items = append(items, item{in.createdAt, in.id, in.lastLSN, in.mv.name, in.state, in.updatedAt, in.mv.version})
			}
			want := encMarshal(struct {
				HasMore   bool   `json:"has_more"`
				Instances []item `json:"instances"`
				Total     uint64 `json:"total"`
			}{hasMore, items, 12345})
			if got := appendListResult(nil, page, hasMore, 12345); string(got) != string(want) {
				t.Errorf("appendListResult:\n got %s\nwant %s", got, want)
			}
		}
	}
}

// The id index behind LIST_INSTANCES stays bounded when nothing lists:
// 5,000 create+delete pairs used to leave 5,000 ids behind with no
// instance at all.
func TestListIndexBounded(t *testing.T) {
	st := newState(1000)
	mv, _ := compileMachine("m", 1, []byte(`{"states":["s"],"initial":"s","transitions":[]}`))
	st.apply(&record{typ: recPutMachine, lsn: 1, Machine: "m", Version: 1, Def: mv.def, mv: mv})
	lsn := uint64(1)
	for i := range 5000 {
		id := "i" + strconv.Itoa(i)
		lsn++
		st.apply(&record{typ: recCreateInstance, lsn: lsn, Machine: "m", Version: 1, InstanceID: id, InitialState: "s"})
		lsn++
		st.apply(&record{typ: recDeleteInstance, lsn: lsn, InstanceID: id})
	}
	if n := len(st.listAdded); n > 2*512+1 {
		t.Errorf("after 5,000 create+delete pairs and no list, the id index holds %d ids for %d instances", n, len(st.instances))
	}
	st.apply(&record{typ: recCreateInstance, lsn: lsn + 1, Machine: "m", Version: 1, InstanceID: "kept", InitialState: "s"})
	if diff := cmp.Diff([]string{"kept"}, st.sortedIDs()); diff != "" {
		t.Errorf("sortedIDs (-want +got):\n%s", diff)
	}
}

// Expired idempotency keys are forgotten on their own schedule, not only
// by compaction: with compaction off they used to stay for ever.
func TestIdemKeysPrunedWithoutCompaction(t *testing.T) {
	ts := startServer(t, func(c *config) {
		c.CompactEnabled = false
		c.IdempotencyTTL = time.Second
		c.idemPruneTick = 20 * time.Millisecond
	})
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	for i := range 50 {
		mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"k`+strconv.Itoa(i)+`","idempotency_key":"key-`+strconv.Itoa(i)+`"}`)
	}
	keys := func() int {
		ts.srv.st.mu.RLock()
		defer ts.srv.st.mu.RUnlock()
		return ts.srv.st.idem.len()
	}
	if n := keys(); n != 50 {
		t.Fatalf("%d keys remembered, want 50", n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for keys() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d expired keys still remembered with compaction off", keys())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
