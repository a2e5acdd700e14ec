package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// historyOffsets is "offset:event" for each item of a history result.
func historyOffsets(t *testing.T, raw json.RawMessage) (historyResult, []string) {
	t.Helper()
	var r historyResult
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range r.Items {
		ev := ""
		if it.Event != nil {
			ev = *it.Event
		}
		out = append(out, fmt.Sprintf("%d:%s", it.Offset, ev))
	}
	return r, out
}

func TestInstanceHistory(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", `{"machine":"m","version":1,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":["a","b"],"event":"GO","to":"b"}]}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"m","version":1,"instance_id":"x"}`) // 2
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"m","version":1,"instance_id":"y"}`) // 3
	for i := range 5 {                                                               // 4..13, x and y interleaved
		mustOK(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":"x","event":"GO","payload":{"i":%d}}`, i))
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"y","event":"GO"}`)
	}
	r, got := historyOffsets(t, mustOK(t, c, "INSTANCE_HISTORY", `{"instance_id":"x"}`))
	if diff := cmp.Diff([]string{"12:GO", "10:GO", "8:GO", "6:GO", "4:GO", "2:"}, got); diff != "" || !r.Complete || r.RetainedFrom != 1 {
		t.Errorf("history (-want +got):\n%s\n%+v", diff, r)
	}
	// Pages of 2, following next_before_offset.
	var pages []string
	params := `{"instance_id":"x","limit":2}`
	for {
		r, got := historyOffsets(t, mustOK(t, c, "INSTANCE_HISTORY", params))
		pages = append(pages, strings.Join(got, ","))
		if r.NextBeforeOffset == nil {
			break
		}
		params = fmt.Sprintf(`{"instance_id":"x","limit":2,"before_offset":%d}`, *r.NextBeforeOffset)
	}
	if diff := cmp.Diff([]string{"12:GO,10:GO", "8:GO,6:GO", "4:GO,2:"}, pages); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
	// Compaction drops the old part: the history says where it starts.
	if _, err := ts.srv.compact(); err != nil {
		t.Fatal(err)
	}
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"x","event":"GO"}`)
	r, got = historyOffsets(t, mustOK(t, c, "INSTANCE_HISTORY", `{"instance_id":"x"}`))
	if first := ts.srv.log.firstLSN(); first > 2 {
		if r.Complete || r.RetainedFrom != first || len(got) == 0 || got[0] != "14:GO" {
			t.Errorf("after compaction: %v %+v (first %d)", got, r, first)
		}
	}
	// It survives a restart (the chain is in the records).
	ts.restart()
	c = ts.dial()
	_, again := historyOffsets(t, mustOK(t, c, "INSTANCE_HISTORY", `{"instance_id":"x"}`))
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("after restart (-before +after):\n%s", diff)
	}
	if m := call(t, c, "INSTANCE_HISTORY", `{"instance_id":"nope"}`); m.Error == nil || m.Error.Code != codeInstanceNotFound {
		t.Errorf("unknown instance: %+v", m)
	}

	// The CLI verb.
	var out, errOut bytes.Buffer
	code, _ := cliMain([]string{"history", "--addr", ts.addr, "y", "--limit", "2"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "b -GO-> b") || !strings.Contains(out.String(), "more: stmdb history y --before") {
		t.Errorf("stmdb history: %d\n%s%s", code, out.String(), errOut.String())
	}
}

// A record without the prev tag (written before history existed) decodes
// with Prev 0, and the walk stops there: history is incomplete, not wrong.
func TestInstanceHistoryOldRecords(t *testing.T) {
	r := &record{typ: recApplyEvent, Time: 1, InstanceID: "x", Event: "GO", FromState: "a", ToState: "b"}
	got, err := decodeRecord(recApplyEvent, appendRecord(nil, r))
	if err != nil || got.Prev != 0 {
		t.Fatalf("decode: %v %+v", err, got)
	}
	r.Prev = 41
	got, err = decodeRecord(recApplyEvent, appendRecord(nil, r))
	if err != nil || got.Prev != 41 {
		t.Fatalf("decode with prev: %v %+v", err, got)
	}
}
