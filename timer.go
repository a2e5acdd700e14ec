package main

// Timers: transitions that fire by themselves (after_ms).
//
// A timer is derived state. An instance that entered state S at time T
// (its create or its latest event: updatedAt) has one armed timer per
// timed transition out of S, due at T + after_ms, valid only while the
// instance is still at the record that armed it (lastLSN). Nothing about
// timers is logged but their fires, which are ordinary apply_event records
// marked "source":"timer" and written through the normal write path; so a
// fire happens exactly once across crashes, restarts and compaction: after
// a restart the armed timers are rebuilt from the instances, an instance
// that already fired is in its new state, and one that did not fires then.
//
// The table is a min-heap of entries by due time (equal due times in
// definition order), plus the entries of each instance, so arming and
// cancelling are O(log n) and nothing ever scans all instances but the
// start-up rebuild. apply marks the instances it touches; their timers are
// recomputed when the write is final (at once, or after an atomic batch
// commits or rolls back), so the table always matches the instances.
//
// One goroutine fires what is due, a bounded number per hold of the state
// lock so that clients are served in between; the records go through group
// commit like any others. Due times are wall-clock milliseconds (they must
// survive restarts): a backwards clock step fires nothing early (due is
// compared with the clock at each wake), a fire cannot repeat (it is
// applied only while the instance is at the arming record), and a forward
// step is noticed within timerMaxSleep.

import (
	"container/heap"
	"sync/atomic"
	"time"
)

// timerEntry is one armed timer.
type timerEntry struct {
	due   int64  // Unix ms
	inst  string // instance id
	lsn   uint64 // the instance's lastLSN when armed
	seq   int    // definition order among the instance's timers
	event string
	to    string
	index int // in the heap; -1 once removed
}

type timerHeap []*timerEntry

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.due != b.due {
		return a.due < b.due
	}
	if a.lsn != b.lsn {
		return a.lsn < b.lsn
	}
	if a.inst != b.inst {
		return a.inst < b.inst
	}
	return a.seq < b.seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	e := x.(*timerEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

// timerTable holds the armed timers. Guarded by state.mu but for the
// counters and the wake channel.
type timerTable struct {
	heap   timerHeap
	byInst map[string][]*timerEntry
	dirty  []string // instances whose timers must be recomputed
	wake   chan struct{}

	fired, guardFailed atomic.Uint64
	armed              atomic.Int64 // mirrors len(heap), for metrics without the lock
}

func newTimerTable() *timerTable {
	return &timerTable{byInst: map[string][]*timerEntry{}, wake: make(chan struct{}, 1)}
}

// markTimers records that apply changed instance id (under mu).
func (s *state) markTimers(id string) {
	if s.timers != nil {
		s.timers.dirty = append(s.timers.dirty, id)
	}
}

// flushTimers recomputes the timers of every instance marked since the last
// flush (under mu).
func (s *state) flushTimers() {
	t := s.timers
	if t == nil || len(t.dirty) == 0 {
		return
	}
	for _, id := range t.dirty {
		s.rearm(id)
	}
	clear(t.dirty)
	t.dirty = t.dirty[:0]
}

// rearm cancels instance id's timers and arms the ones of its current
// state (under mu).
func (s *state) rearm(id string) {
	t := s.timers
	for _, e := range t.byInst[id] {
		if e.index >= 0 {
			heap.Remove(&t.heap, e.index)
		}
	}
	delete(t.byInst, id)
	in := s.instances[id]
	if in == nil {
		t.armed.Store(int64(len(t.heap)))
		return
	}
	tts := in.mv.timed[in.state]
	if len(tts) == 0 {
		t.armed.Store(int64(len(t.heap)))
		return
	}
	es := make([]*timerEntry, len(tts))
	top := int64(-1)
	if len(t.heap) > 0 {
		top = t.heap[0].due
	}
	for i, tt := range tts {
		e := &timerEntry{due: in.updatedAt + tt.afterMS, inst: in.id, lsn: in.lastLSN, seq: i, event: tt.event, to: tt.to}
		heap.Push(&t.heap, e)
		es[i] = e
		if top < 0 || e.due < top {
			top = e.due
			select {
			case t.wake <- struct{}{}:
			default:
			}
		}
	}
	t.byInst[id] = es
	t.armed.Store(int64(len(t.heap)))
}

// armAll builds the table from every instance (start-up, after a snapshot
// is loaded, and after FLUSH_ALL).
func (s *state) armAll() {
	t := s.timers
	t.heap = t.heap[:0]
	clear(t.byInst)
	for id, in := range s.instances {
		if in.mv.timed != nil {
			s.rearm(id)
		}
	}
	t.armed.Store(int64(len(t.heap)))
}

// takeTimer removes e from the table: it fired, or its guard failed and it
// is spent until the instance changes (under mu).
func (t *timerTable) takeTimer(e *timerEntry) {
	if e.index >= 0 {
		heap.Remove(&t.heap, e.index)
	}
	es := t.byInst[e.inst]
	for i, x := range es {
		if x == e {
			es = append(es[:i:i], es[i+1:]...)
			break
		}
	}
	if len(es) == 0 {
		delete(t.byInst, e.inst)
	} else {
		t.byInst[e.inst] = es
	}
	t.armed.Store(int64(len(t.heap)))
}

// timerView is an armed timer as GET_INSTANCE shows it.
type timerView struct {
	event, to string
	due       int64
}

// instanceTimers returns instance id's armed timers in due order (under mu).
func (s *state) instanceTimers(id string) []timerView {
	if s.timers == nil {
		return nil
	}
	es := s.timers.byInst[id]
	if len(es) == 0 {
		return nil
	}
	out := make([]timerView, 0, len(es))
	for _, e := range es {
		out = append(out, timerView{e.event, e.to, e.due})
	}
	for i := 1; i < len(out); i++ { // few entries: insertion sort, stable
		for j := i; j > 0 && out[j].due < out[j-1].due; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// appendTimers appends GET_INSTANCE's "timers" member.
func appendTimers(p []byte, ts []timerView) []byte {
	p = append(p, `,"timers":[`...)
	for i, tv := range ts {
		if i > 0 {
			p = append(p, ',')
		}
		p = append(p, `{"event":`...)
		p = encAppendString(p, tv.event)
		p = append(p, `,"to_state":`...)
		p = encAppendString(p, tv.to)
		p = append(p, `,"due_at":"`...)
		p = time.UnixMilli(tv.due).UTC().AppendFormat(p, "2006-01-02T15:04:05.000Z07:00")
		p = append(p, `"}`...)
	}
	return append(p, ']')
}

const (
	// timerBatch bounds the fires per hold of the state lock. After a full
	// round the loop waits for its records to be durable before the next,
	// so that a burst of due timers shares group commits with the clients
	// instead of holding the lock back to back.
	timerBatch = 128
	// timerMaxSleep bounds how long the loop sleeps, so that a forward
	// step of the wall clock is noticed.
	timerMaxSleep = time.Second
	// timerRetry is how long a fire that failed on I/O waits to retry.
	timerRetry = time.Second
)

// timerLoop fires due timers until stop.
func (s *server) timerLoop(stop <-chan struct{}) {
	t := s.st.timers
	sleep := time.NewTimer(time.Hour)
	defer sleep.Stop()
	for {
		now := s.now()
		n, next, last := 0, int64(0), uint64(0)
		if !s.repl.isReplica() { // timers fire only on a primary (replica.go)
			n, next, last = s.fireDue(now)
		}
		if n == timerBatch {
			// More are due: let this round reach the disk first.
			if last > 0 && s.log.waitDurable(last) != nil {
				return
			}
			continue
		}
		wait := timerMaxSleep
		if next > 0 {
			wait = min(wait, time.Duration(next-now)*time.Millisecond)
		}
		sleep.Reset(max(wait, time.Millisecond))
		select {
		case <-stop:
			return
		case <-t.wake:
		case <-sleep.C:
		}
		if !sleep.Stop() {
			select {
			case <-sleep.C:
			default:
			}
		}
	}
}

// fireDue applies up to timerBatch due timers under one hold of the state
// lock and returns how many it tried, the next due time (0: none) and the
// LSN of the last record it wrote (0: none).
func (s *server) fireDue(now int64) (n int, next int64, last uint64) {
	t := s.st.timers
	var fired []timerFire
	s.st.mu.Lock()
	if s.repl.isReplica() {
		s.st.mu.Unlock()
		return 0, 0, 0
	}
	for n < timerBatch && len(t.heap) > 0 && t.heap[0].due <= now {
		e := t.heap[0]
		n++
		t.takeTimer(e)
		lsn := e.lsn
		p := ApplyEventParams{InstanceID: e.inst, Event: e.event, Payload: []byte("{}"), ExpectedWalOffset: &lsn}
		pr, err := s.prepApply(&p, now, nil)
		if err == nil {
			pr.rec.Source = timerSource
			err = s.commit(pr.rec)
		}
		switch {
		case err == nil:
			t.fired.Add(1)
			fired = append(fired, timerFire{lsn: pr.rec.lsn, due: e.due})
		case err.Code == codeGuardFailed:
			t.guardFailed.Add(1)
		case err.Code == codeWALIOError:
			// Not spent: try again shortly (a full disk may clear).
			e.due = now + timerRetry.Milliseconds()
			heap.Push(&t.heap, e)
			t.byInst[e.inst] = append(t.byInst[e.inst], e)
			t.armed.Store(int64(len(t.heap)))
			n = timerBatch - 1 // stop this round
			s.logger.Warn("timer fire failed; retrying", "instance_id", e.inst, "event", e.event, "err", err.Message)
		}
		// Anything else (the instance changed or went away) is a timer
		// that no longer applies.
	}
	s.st.flushTimers()
	if len(t.heap) > 0 {
		next = t.heap[0].due
	}
	s.st.mu.Unlock()
	if len(fired) > 0 {
		last = fired[len(fired)-1].lsn
		go s.observeFires(fired)
	}
	return n, next, last
}

// timerSource marks a fired timer's record and its watch event.
const timerSource = "timer"

type timerFire struct {
	lsn uint64
	due int64
}

// observeFires records each fire's lag from due time to durable.
func (s *server) observeFires(fired []timerFire) {
	if err := s.log.waitDurable(fired[len(fired)-1].lsn); err != nil {
		return
	}
	now := s.now()
	for _, f := range fired {
		s.metrics.timerLag(time.Duration(max(now-f.due, 0)) * time.Millisecond)
	}
}

// timerInfo is INFO's "timers" member.
func (s *server) timerInfo() any {
	t := s.st.timers
	return struct {
		Armed       int64  `json:"armed"`
		Fired       uint64 `json:"fired"`
		GuardFailed uint64 `json:"guard_failed"`
	}{t.armed.Load(), t.fired.Load(), t.guardFailed.Load()}
}
