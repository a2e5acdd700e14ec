package main

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestIdemTableViews checks the copy-on-write contract: a view keeps what
// the table held when it was taken, through sets, deletes and prunes of
// the same keys afterwards, while the table and its count follow every
// change.
func TestIdemTableViews(t *testing.T) {
	var tab idemTable
	key := func(i int) idemKey { return idemKey{uint8(i % 3), fmt.Sprintf("k%d", i)} }
	entry := func(i, gen int) *idemEntry {
		return &idemEntry{hash: fmt.Sprintf("h%d.%d", i, gen), lsn: uint64(i), expires: int64(1000 + i)}
	}
	const n = 20000 // several entries in every shard
	for i := range n {
		tab.set(key(i), entry(i, 0))
	}
	tab.set(key(7), entry(7, 0)) // replacing does not count twice
	if tab.len() != n {
		t.Fatalf("len %d, want %d", tab.len(), n)
	}
	view := tab.view()
	// Change every key after the view: replace the even ones, delete
	// every third, expire the first 5000 (expires < 1000+5000).
	for i := 0; i < n; i += 2 {
		tab.set(key(i), entry(i, 1))
	}
	for i := 0; i < n; i += 3 {
		tab.delete(key(i))
	}
	tab.delete(idemKey{0, "absent"})
	for i := range cowShardCount {
		tab.pruneShard(i, func(e *idemEntry) bool { return e.expires <= 1000+5000 })
	}

	seen := 0
	view.each(func(k idemKey, e *idemEntry) bool {
		seen++
		var i int
		fmt.Sscanf(k.key, "k%d", &i)
		if k != key(i) || e.hash != fmt.Sprintf("h%d.0", i) {
			t.Fatalf("view changed: %v -> %+v", k, e)
		}
		return true
	})
	if seen != n || view.len() != n {
		t.Fatalf("view holds %d entries (len %d), want %d", seen, view.len(), n)
	}

	want := 0
	for i := range n {
		e := tab.get(key(i))
		switch {
		case i%3 == 0 || 1000+i <= 1000+5000:
			if e != nil {
				t.Fatalf("key %d: deleted or expired, still there: %+v", i, e)
			}
		case i%2 == 0:
			want++
			if e == nil || e.hash != fmt.Sprintf("h%d.1", i) {
				t.Fatalf("key %d: want the replacement, got %+v", i, e)
			}
		default:
			want++
			if e == nil || e.hash != fmt.Sprintf("h%d.0", i) {
				t.Fatalf("key %d: want the original, got %+v", i, e)
			}
		}
	}
	counted := 0
	tab.each(func(idemKey, *idemEntry) bool { counted++; return true })
	if tab.len() != want || counted != want {
		t.Fatalf("table len %d, each %d, want %d", tab.len(), counted, want)
	}
}

// The idempotency fingerprint covers every param that changes what a write
// does: reusing a key with another expected_wal_offset or event_id is a
// CONFLICT, never the earlier result.
func TestIdemFingerprintCoversEveryParam(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"f"}`) // lsn 2
	for _, name := range []string{"expected_wal_offset", "event_id"} {
		var cur struct {
			Off uint64 `json:"last_wal_offset"`
		}
		mustUnmarshal(t, mustOK(t, c, "GET_INSTANCE", `{"instance_id":"f"}`), &cur)
		key := "fp-" + name
		extra := func(n uint64) string {
			if name == "event_id" {
				return fmt.Sprintf(`"event_id":"e-%d"`, n)
			}
			return fmt.Sprintf(`"expected_wal_offset":%d`, n)
		}
		first := fmt.Sprintf(`{"instance_id":"f","event":"INC","idempotency_key":%q,%s}`, key, extra(cur.Off))
		mustOK(t, c, "APPLY_EVENT", first)
		second := fmt.Sprintf(`{"instance_id":"f","event":"INC","idempotency_key":%q,%s}`, key, extra(cur.Off+1))
		if m := call(t, c, "APPLY_EVENT", second); m.Error == nil || m.Error.Code != codeConflict {
			t.Errorf("the same key with another %s: %s, want CONFLICT", name, m.Raw)
		}
		// The identical retry still gets the first result.
		if m := call(t, c, "APPLY_EVENT", first); m.Status != "ok" {
			t.Errorf("%s: identical retry: %s", name, m.Raw)
		}
	}
}

// An atomic batch that fails leaves the idempotency keys as they were: a
// key used by a member that was rolled back is free again, and its
// request, sent again, really runs.
func TestAtomicBatchRollbackRestoresIdemKeys(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"x","idempotency_key":"old"}`)
	create := `{"machine":"ctr","version":1,"instance_id":"y","idempotency_key":"new"}`
	m := call(t, c, "BATCH", `{"mode":"atomic","ops":[
		{"op":"CREATE_INSTANCE","params":`+create+`},
		{"op":"APPLY_EVENT","params":{"instance_id":"x","event":"INC","idempotency_key":"old-apply"}},
		{"op":"APPLY_EVENT","params":{"instance_id":"missing","event":"INC"}}]}`)
	if m.Error == nil || m.Error.Code != codeInstanceNotFound {
		t.Fatalf("batch: %s, want INSTANCE_NOT_FOUND", m.Raw)
	}
	ts.srv.st.mu.RLock()
	for _, k := range []idemKey{{recCreateInstance, "new"}, {recApplyEvent, "old-apply"}} {
		if e := ts.srv.st.idem.get(k); e != nil {
			t.Errorf("key %q of a rolled-back member is still remembered: %+v", k.key, e)
		}
	}
	ts.srv.st.mu.RUnlock()
	res := mustOK(t, c, "CREATE_INSTANCE", create)
	var got struct {
		Off uint64 `json:"wal_offset"`
	}
	mustUnmarshal(t, res, &got)
	if got.Off != 3 {
		t.Errorf("the create after the rollback got wal_offset %d, want 3 (a new record): %s", got.Off, res)
	}
	mustOK(t, c, "GET_INSTANCE", `{"instance_id":"y"}`)
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}
