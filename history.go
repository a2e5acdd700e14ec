package main

import (
	"encoding/json"
)

// INSTANCE_HISTORY: one instance's events, newest first, without scanning
// the log. Every apply_event record carries Prev, the LSN of the
// instance's previous record, so the history is a chain walked backwards
// from the instance's lastLSN through the mapped segments: one record read
// per hop (plus at most an index stride to find it). The chain ends at the
// instance's create_instance record (complete), at the oldest retained
// record (compaction deleted the rest), or at a record written before Prev
// existed (unknown).

// historyItem is one entry of an instance's history.
type historyItem struct {
	Offset    uint64          `json:"offset"`
	Type      string          `json:"type"` // create_instance or apply_event
	Event     *string         `json:"event"`
	FromState *string         `json:"from_state"`
	ToState   string          `json:"to_state"`
	Payload   json.RawMessage `json:"payload"`
	EventID   string          `json:"event_id,omitempty"`
	Time      int64           `json:"ts"`
	Source    string          `json:"source"` // apply_event, batch (an atomic batch's member), or the record's source (timer)
}

type historyResult struct {
	InstanceID string        `json:"instance_id"`
	Items      []historyItem `json:"items"`
	// RetainedFrom is the oldest offset still in the log: history before it
	// was compacted away.
	RetainedFrom uint64 `json:"retained_from"`
	// Complete: the items reach back to the instance's creation.
	Complete bool `json:"complete"`
	// NextBeforeOffset, when set, fetches the next (older) page.
	NextBeforeOffset *uint64 `json:"next_before_offset"`
}

func (s *server) handleInstanceHistory(c *conn, p *InstanceHistoryParams) (reply, *rcpError) {
	s.st.mu.RLock()
	in := s.st.instances[p.InstanceID]
	var head uint64
	if in != nil {
		head = in.lastLSN
	}
	lsn := s.readLSN()
	s.st.mu.RUnlock()
	if in == nil {
		return reply{}, instanceNotFound(p.InstanceID)
	}
	// The log's readers see durable records only.
	if err := s.log.waitDurable(head); err != nil {
		return reply{}, newError(codeWALIOError, "write-ahead log: %v", err)
	}
	res, err := s.instanceHistory(p.InstanceID, head, p.BeforeOffset, int(p.Limit))
	if err != nil {
		return reply{}, err
	}
	return reply{result: encMarshal(res), lsn: lsn}, nil
}

// readRecord returns the durable record at lsn, or nil if the log no longer
// (or does not yet) hold it.
func (s *server) readRecord(lsn uint64) (*record, error) {
	var rec *record
	var derr error
	err := s.log.read(lsn, func(r walRecord) bool {
		if r.LSN == lsn {
			rec, derr = decodeRecord(r.Type, r.Payload)
		}
		return false
	})
	if err == nil {
		err = derr
	}
	return rec, err
}

// instanceHistory walks id's chain back from head: items older than
// before (when given), at most limit of them, always whole records.
func (s *server) instanceHistory(id string, head uint64, before *uint64, limit int) (historyResult, *rcpError) {
	res := historyResult{InstanceID: id, Items: []historyItem{}, RetainedFrom: s.log.firstLSN()}
	cur := head
	for cur != 0 {
		if cur < s.log.firstLSN() {
			return res, nil // compacted away
		}
		if before != nil && cur >= *before {
			// Not this page's yet: follow the chain without rendering.
		} else if len(res.Items) >= limit {
			next := cur + 1
			res.NextBeforeOffset = &next
			return res, nil
		}
		r, err := s.readRecord(cur)
		if err != nil {
			return res, newError(codeWALIOError, "reading the write-ahead log failed: %v", err)
		}
		if r == nil {
			return res, nil // compacted while we walked
		}
		members := []*record{r}
		if r.typ == recBatch {
			members = r.Ops
		}
		emit := before == nil || cur < *before
		var prev uint64
		found, created := false, false
		for i := len(members) - 1; i >= 0; i-- {
			m := members[i]
			if m.InstanceID != id || m.typ == recDeleteInstance {
				continue
			}
			found = true
			if emit {
				res.Items = append(res.Items, historyEntry(cur, m, r.Type))
			}
			if m.typ == recCreateInstance {
				created = true
				break
			}
			prev = m.Prev
		}
		switch {
		case !found:
			return res, newError(codeInternalError, "history of instance '%s': record %d does not belong to it", id, cur)
		case created:
			res.Complete = true
			return res, nil
		case prev >= cur:
			return res, newError(codeInternalError, "history of instance '%s': record %d points forward to %d", id, cur, prev)
		}
		cur = prev // 0: a record from before the chain existed
	}
	return res, nil
}

func historyEntry(lsn uint64, m *record, source string) historyItem {
	if m.Source != "" {
		source = m.Source // a fired timer
	}
	it := historyItem{Offset: lsn, Type: recTypeNames[m.typ], Time: m.Time, Source: source, EventID: m.EventID}
	if m.typ == recCreateInstance {
		it.ToState = m.InitialState
		it.Payload = ctxOrEmpty(m.InitialCtx)
		return it
	}
	ev, from := m.Event, m.FromState
	it.Event, it.FromState, it.ToState = &ev, &from, m.ToState
	it.Payload = ctxOrEmpty(m.Payload)
	return it
}
