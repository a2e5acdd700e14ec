package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// wantBadRequest checks that m is a BAD_REQUEST, not retryable, whose
// message mentions every string of has and whose details name field.
func wantBadRequest(t *testing.T, what string, m *message, field string, has ...string) {
	t.Helper()
	if m.Error == nil || m.Error.Code != codeBadRequest || m.Error.Retryable {
		t.Fatalf("%s: want a non-retryable BAD_REQUEST, got %.300s", what, m.Raw)
	}
	if field != "" && fmt.Sprint(m.Error.Details["field"]) != field {
		t.Errorf("%s: details.field = %v, want %q", what, m.Error.Details["field"], field)
	}
	for _, s := range has {
		if !strings.Contains(m.Error.Message, s) {
			t.Errorf("%s: message %q does not mention %q", what, m.Error.Message, s)
		}
	}
}

// A large event used to become a retryable WAL_IO_ERROR ("record too
// large"), and a ctx grown by merges past what a record holds made every
// later event fail while clients were told to retry. Every write that
// passes validation must fit in a record; the rest is a BAD_REQUEST naming
// the limit and the size.
func TestCtxAndRecordLimits(t *testing.T) {
	blob := func(key string, n int) string { return fmt.Sprintf(`{"%s":"%s"}`, key, strings.Repeat("x", n)) }
	dial := func(ts *testServer) *client {
		c := ts.dial()
		c.nc.SetDeadline(time.Now().Add(3 * time.Minute)) // large frames under -race
		return c
	}

	t.Run("default ctx limit", func(t *testing.T) {
		ts := startServer(t, func(c *config) { c.SegmentSizeMB = 4 })
		c := dial(ts)
		mustOK(t, c, "PUT_MACHINE", ctrMachine)
		mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"a"}`)
		// The reported case: a 9 MiB payload. It would make the ctx 9
		// MiB, over the default 8 MiB limit.
		m := call(t, c, "APPLY_EVENT", `{"instance_id":"a","event":"INC","payload":`+blob("big", 9<<20)+`}`)
		wantBadRequest(t, "9 MiB payload", m, "payload", "storage.max_ctx_bytes", fmt.Sprint(cfgDefaultCtx))
		m = call(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"b","initial_ctx":`+blob("big", 9<<20)+`}`)
		wantBadRequest(t, "9 MiB initial_ctx", m, "initial_ctx", "storage.max_ctx_bytes")
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"a","event":"INC","payload":{"small":1}}`)
	})

	t.Run("record limit", func(t *testing.T) {
		// Within the largest ctx limit but not within one record: an 8
		// MiB ctx whose key a 9 MiB payload replaces.
		ts := startServer(t, func(c *config) { c.SegmentSizeMB = 4; c.MaxCtxBytes = maxPayload })
		c := dial(ts)
		mustOK(t, c, "PUT_MACHINE", ctrMachine)
		mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"c","initial_ctx":`+blob("big", 8<<20)+`}`)
		m := call(t, c, "APPLY_EVENT", `{"instance_id":"c","event":"INC","payload":`+blob("big", 9<<20)+`}`)
		wantBadRequest(t, "record over the limit", m, "", "log record", fmt.Sprint(walMaxPayload))
		m = call(t, c, "BATCH", `{"mode":"atomic","ops":[{"op":"APPLY_EVENT","params":{"instance_id":"c","event":"INC","payload":`+blob("big", 9<<20)+`}}]}`)
		wantBadRequest(t, "atomic batch over the record limit", m, "", "nothing was applied", "log record")
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"c","event":"INC","payload":{"small":1}}`)
	})

	t.Run("ctx growing by merges", func(t *testing.T) {
		ts := startServer(t, func(c *config) { c.MaxCtxBytes = 4096 })
		c := dial(ts)
		mustOK(t, c, "PUT_MACHINE", ctrMachine)
		mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"g"}`)
		refused := false
		for i := 0; i < 20 && !refused; i++ {
			m := call(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":"g","event":"INC","payload":%s}`, blob(fmt.Sprintf("k%d", i), 500)))
			if m.Error != nil {
				wantBadRequest(t, "growing ctx", m, "payload", "4096")
				refused = true
			}
		}
		if !refused {
			t.Fatal("a ctx grew past storage.max_ctx_bytes")
		}
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"g","event":"INC","payload":{"k0":"short"}}`)
		var got struct {
			Ctx json.RawMessage `json:"ctx"`
		}
		json.Unmarshal(mustOK(t, c, "GET_INSTANCE", `{"instance_id":"g"}`), &got)
		if len(got.Ctx) > 4096 {
			t.Errorf("ctx is %d bytes, over the limit", len(got.Ctx))
		}
		// Lowering the limit under an existing ctx does not lock the
		// instance: events that do not grow it still apply.
		ts.stop()
		ts.cfg.MaxCtxBytes = 1024
		ts.start()
		c = dial(ts)
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"g","event":"INC","payload":{"k1":"short"}}`)
		m := call(t, c, "APPLY_EVENT", `{"instance_id":"g","event":"INC","payload":{"new":"grows"}}`)
		wantBadRequest(t, "growing past a lowered limit", m, "payload", "1024")
	})
}
