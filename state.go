package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
)

// Record types: the WAL's type byte. Never renumber.
const (
	recPutMachine     uint8 = 1
	recCreateInstance uint8 = 2
	recApplyEvent     uint8 = 3
	recDeleteInstance uint8 = 4
	recBatch          uint8 = 5 // an atomic batch: applied whole or not at all
	recFlushAll       uint8 = 6
	recEpoch          uint8 = 7 // a promotion: a new epoch starts at this record (replica.go)
)

var recTypeNames = map[uint8]string{
	recPutMachine: "put_machine", recCreateInstance: "create_instance",
	recApplyEvent: "apply_event", recDeleteInstance: "delete_instance",
	recBatch: "batch", recFlushAll: "flush_all", recEpoch: "epoch",
}

// record is one change to the state. It carries the post-state of what it
// changes (never a "re-run this" instruction), so replay needs no guards.
// In the WAL it is stored in the binary form of record.go; its JSON form
// (these struct tags) is the WAL_READ entry.
type record struct {
	Type     string          `json:"type"`
	Time     int64           `json:"ts"` // Unix ms when written: created_at/updated_at come from here
	Machine  string          `json:"machine,omitempty"`
	Version  uint32          `json:"version,omitempty"`
	Def      json.RawMessage `json:"definition,omitempty"`
	Checksum string          `json:"checksum,omitempty"`

	InstanceID   string          `json:"instance_id,omitempty"`
	InitialState string          `json:"initial_state,omitempty"`
	InitialCtx   json.RawMessage `json:"initial_ctx,omitempty"`
	Event        string          `json:"event,omitempty"`
	FromState    string          `json:"from_state,omitempty"`
	ToState      string          `json:"to_state,omitempty"`
	Payload      json.RawMessage `json:"payload,omitempty"`
	Ctx          json.RawMessage `json:"ctx,omitempty"` // post-event ctx
	EventID      string          `json:"event_id,omitempty"`
	Source       string          `json:"source,omitempty"` // "timer" for a fired timer; empty for clients

	IdemKey  string `json:"idempotency_key,omitempty"`
	IdemHash string `json:"params_hash,omitempty"` // fingerprint of the request's params

	Epoch uint64 `json:"epoch,omitempty"` // recEpoch: the epoch that starts here

	Ops []*record `json:"ops,omitempty"` // recBatch members, in order
	// Prev is the LSN of the instance's previous record (apply_event): the
	// chain INSTANCE_HISTORY walks. 0 = unknown (a record from before it).
	Prev uint64 `json:"-"`

	typ uint8
	lsn uint64
	mv  *machineVersion // compiled definition (put_machine), set before apply
}

// instance is one state machine instance; ctx is compact JSON. Once in
// state.instances an instance is never modified: apply replaces it.
type instance struct {
	slot        int // index in state.slots
	id          string
	mv          *machineVersion
	state       string
	ctx         []byte
	lastEventID string
	lastLSN     uint64
	createdAt   int64
	updatedAt   int64
}

// state is everything the server knows. All fields are guarded by mu;
// writers hold it for microseconds (no I/O but the WAL append, which is a
// copy into preallocated space).
type state struct {
	mu        sync.RWMutex
	machines  map[string]map[uint32]*machineVersion
	instances map[string]*instance
	// slots holds every instance densely, so a snapshot takes them all
	// without walking the map (slots.go).
	slots slotTable
	// listSorted holds instance ids in byte order for LIST_INSTANCES, as of
	// the last list; ids created since are in listAdded. A list merges them
	// (O(n), not a sort of everything) and drops ids no longer present.
	// listMu serializes lists, which run under the read lock.
	listMu     sync.Mutex
	listSorted []string
	listAdded  []string

	idem    idemTable
	applied uint64 // LSN of the last applied record
	idemTTL int64  // ms

	// tombstones holds deleted instance ids while
	// storage.allow_instance_recreate is false (nil otherwise), so their ids
	// cannot be created again.
	tombstones *tombstoneSet

	// undo, when set, collects what apply overwrites so an atomic batch can
	// roll back. Only the batch handler sets it, under mu.
	undo *undoLog

	// timers are the armed timers (timer.go), derived from the instances.
	timers *timerTable

	// epochs is the epoch history, one entry per promotion in log order
	// (replica.go); none means epoch 0 from offset 1. FLUSH_ALL keeps it.
	epochs []epochStart
}

// tombstoneSet is the set kind of state.tombstones: copy-on-write, so a
// snapshot shares it instead of copying it under the lock.
type tombstoneSet = cowMap[string, struct{}, stringShards]

func newState(idemTTLms int64) *state {
	return &state{
		machines:  map[string]map[uint32]*machineVersion{},
		instances: map[string]*instance{},
		idemTTL:   idemTTLms,
		timers:    newTimerTable(),
	}
}

// apply is the only way state changes. The live path and recovery both call
// it, so what recovery rebuilds is what the live server had. It must not
// fail: records are validated before they are written.
func (s *state) apply(r *record) {
	switch r.typ {
	case recPutMachine:
		mv := r.mv
		if mv == nil {
			var err *rcpError
			mv, err = compileMachine(r.Machine, r.Version, r.Def)
			if err != nil {
				panic(fmt.Sprintf("apply: logged machine %s v%d does not compile: %v", r.Machine, r.Version, err))
			}
		}
		mv.lsn = r.lsn
		vs := s.machines[r.Machine]
		if vs == nil {
			vs = map[uint32]*machineVersion{}
			s.machines[r.Machine] = vs
		}
		vs[r.Version] = mv
	case recCreateInstance:
		mv := s.machines[r.Machine][r.Version]
		if mv == nil {
			panic(fmt.Sprintf("apply: create of %q references unknown machine %s v%d", r.InstanceID, r.Machine, r.Version))
		}
		s.saveUndo(r.InstanceID)
		if s.tombstones != nil {
			s.tombstones.delete(r.InstanceID)
		}
		s.putInstance(&instance{
			id: r.InstanceID, mv: mv, state: mv.states[r.InitialState], ctx: ctxOrEmpty(r.InitialCtx),
			lastLSN: r.lsn, createdAt: r.Time, updatedAt: r.Time,
		})
		s.markTimers(r.InstanceID)
	case recApplyEvent:
		inst := s.instances[r.InstanceID]
		if inst == nil {
			panic(fmt.Sprintf("apply: event on unknown instance %q at lsn %d", r.InstanceID, r.lsn))
		}
		s.saveUndo(r.InstanceID)
		// Copy on write: an instance struct is never modified once it is
		// in the map, so snapshots can hold pointers without the lock.
		next := *inst
		next.state = inst.mv.states[r.ToState]
		next.ctx = ctxOrEmpty(r.Ctx)
		next.lastEventID = r.EventID
		next.lastLSN = r.lsn
		next.updatedAt = r.Time
		s.putInstance(&next)
		s.markTimers(r.InstanceID)
	case recDeleteInstance:
		s.saveUndo(r.InstanceID)
		s.removeInstance(r.InstanceID)
		s.markTimers(r.InstanceID)
		if s.tombstones != nil {
			if s.undo != nil {
				s.undo.tombstones = append(s.undo.tombstones, r.InstanceID)
			}
			s.tombstones.set(r.InstanceID, struct{}{})
		}
	case recBatch:
		for _, op := range r.Ops {
			op.lsn, op.Time = r.lsn, r.Time
			s.apply(op)
		}
	case recFlushAll:
		s.machines = map[string]map[uint32]*machineVersion{}
		if s.undo != nil {
			panic("apply: flush_all inside an atomic batch")
		}
		s.instances = map[string]*instance{}
		s.slots = slotTable{}
		s.listSorted, s.listAdded = nil, nil
		s.idem = idemTable{}
		if s.tombstones != nil {
			s.tombstones = new(tombstoneSet)
		}
		s.armAll()
	case recEpoch:
		s.epochs = append(s.epochs, epochStart{Epoch: r.Epoch, Offset: r.lsn})
	}
	if r.IdemKey != "" {
		k := idemKey{r.typ, r.IdemKey}
		if s.undo != nil {
			if _, seen := s.undo.idem[k]; !seen {
				s.undo.idem[k] = s.idem.get(k)
			}
		}
		s.idem.set(k, &idemEntry{hash: r.IdemHash, lsn: r.lsn, expires: r.Time + s.idemTTL, result: replayResult(r)})
	}
	if r.lsn > s.applied {
		s.applied = r.lsn
	}
	if s.undo == nil {
		// Inside an atomic batch the batch handler flushes once the batch
		// commits or rolls back.
		s.flushTimers()
	}
}

func ctxOrEmpty(ctx []byte) []byte {
	if len(ctx) == 0 {
		return []byte("{}")
	}
	return ctx
}

// undoLog remembers the first prior value of everything an atomic batch
// touched (nil: it did not exist).
type undoLog struct {
	slotsLen   int         // len(slots) at beginUndo
	slotWrites []slotWrite // in order; undone in reverse
	inst       map[string]*instance
	idem       map[idemKey]*idemEntry
	tombstones []string // added by the batch
	applied    uint64
}

func (s *state) saveUndo(id string) {
	if s.undo == nil {
		return
	}
	if _, seen := s.undo.inst[id]; seen {
		return
	}
	s.undo.inst[id] = s.instances[id] // instances are immutable: the pointer is enough
}

type slotWrite struct {
	i   int
	old *instance // nil: the slot was past the end
}

func (s *state) beginUndo() {
	s.undo = &undoLog{slotsLen: s.slots.len(), inst: map[string]*instance{}, idem: map[idemKey]*idemEntry{}, applied: s.applied}
}

// setSlot writes slots[i] (appending when i == len), remembering the old
// value for an atomic batch's rollback.
func (s *state) setSlot(i int, in *instance) {
	if s.undo != nil {
		var old *instance
		if i < s.slots.len() {
			old = s.slots.at(i)
		}
		s.undo.slotWrites = append(s.undo.slotWrites, slotWrite{i, old})
	}
	s.slots.set(i, in)
}

// putInstance stores a new instance or the new version of one.
func (s *state) putInstance(in *instance) {
	added := false
	if cur := s.instances[in.id]; cur != nil {
		in.slot = cur.slot
	} else {
		in.slot = s.slots.len()
		added = true
	}
	s.setSlot(in.slot, in)
	s.instances[in.id] = in
	if added {
		s.listAdded = append(s.listAdded, in.id)
		s.trimListAdded()
	}
}

// removeInstance deletes an instance, moving the last slot into its place.
func (s *state) removeInstance(id string) {
	in := s.instances[id]
	if in == nil {
		return
	}
	delete(s.instances, id)
	last := s.slots.len() - 1
	if in.slot != last {
		moved := *s.slots.at(last) // copy on write: the old one may be in a snapshot
		moved.slot = in.slot
		s.setSlot(in.slot, &moved)
		s.instances[moved.id] = &moved
		if s.undo != nil {
			if _, seen := s.undo.inst[moved.id]; !seen {
				s.undo.inst[moved.id] = s.slots.at(last)
			}
		}
	}
	if s.undo != nil {
		s.undo.slotWrites = append(s.undo.slotWrites, slotWrite{last, s.slots.at(last)})
	}
	s.slots.truncate(last)
}

// rollback restores everything recorded since beginUndo.
func (s *state) rollback() {
	u := s.undo
	s.undo = nil
	for k := len(u.slotWrites) - 1; k >= 0; k-- {
		w := u.slotWrites[k]
		s.slots.set(w.i, w.old)
	}
	s.slots.truncate(u.slotsLen)
	for id, prev := range u.inst {
		if prev == nil {
			delete(s.instances, id)
		} else {
			s.instances[id] = prev
		}
	}
	for k, prev := range u.idem {
		if prev == nil {
			s.idem.delete(k)
		} else {
			s.idem.set(k, prev)
		}
	}
	for _, id := range u.tombstones {
		s.tombstones.delete(id)
	}
	s.applied = u.applied
	s.flushTimers()
}

// idemLookup returns the live entry for (typ, key), or nil.
func (s *state) idemLookup(typ uint8, key string, now int64) *idemEntry {
	e := s.idem.get(idemKey{typ, key})
	if e == nil || e.expires <= now {
		return nil
	}
	return e
}

// trimListAdded keeps listAdded bounded when nothing lists: once it holds
// twice as many ids as there are instances (and more than a few), the ids
// of deleted instances are dropped. That leaves at most one entry per live
// instance, so the next trim is as far away again: O(1) per create,
// amortized. Caller holds mu (write).
func (s *state) trimListAdded() {
	if len(s.listAdded) <= 2*max(len(s.instances), 512) {
		return
	}
	kept := s.listAdded[:0]
	for _, id := range s.listAdded {
		if s.instances[id] != nil {
			kept = append(kept, id)
		}
	}
	clear(s.listAdded[len(kept):])
	s.listAdded = kept
}

// sortedIDs returns every instance id in byte order. Caller holds mu
// (read); the result is shared: do not modify it.
func (s *state) sortedIDs() []string {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if len(s.listAdded) == 0 && len(s.listSorted) == len(s.instances) {
		return s.listSorted
	}
	sort.Strings(s.listAdded)
	merged := make([]string, 0, len(s.instances))
	a, b := s.listSorted, s.listAdded
	for len(a) > 0 || len(b) > 0 {
		var id string
		if len(b) == 0 || (len(a) > 0 && a[0] <= b[0]) {
			id, a = a[0], a[1:]
		} else {
			id, b = b[0], b[1:]
		}
		if len(merged) > 0 && merged[len(merged)-1] == id {
			continue
		}
		if s.instances[id] != nil {
			merged = append(merged, id)
		}
	}
	s.listSorted, s.listAdded = merged, nil
	return merged
}

// Results: field order is sorted, as the reference server emits them.

type createResult struct {
	InstanceID string `json:"instance_id"`
	State      string `json:"state"`
	WalOffset  uint64 `json:"wal_offset"`
}

type applyResult struct {
	Applied   bool            `json:"applied"`
	Ctx       json.RawMessage `json:"ctx"`
	EventID   string          `json:"event_id,omitempty"`
	FromState string          `json:"from_state"`
	ToState   string          `json:"to_state"`
	WalOffset uint64          `json:"wal_offset"`
}

type deleteResult struct {
	Deleted    bool   `json:"deleted"`
	InstanceID string `json:"instance_id"`
	WalOffset  uint64 `json:"wal_offset"`
}

// liveResult renders the result of a record that was just applied.
func liveResult(r *record) []byte { return renderResult(r, true) }

// replayResult renders what an idempotent retry of r gets back.
func replayResult(r *record) []byte { return renderResult(r, false) }

func renderResult(r *record, applied bool) []byte {
	switch r.typ {
	case recCreateInstance, recApplyEvent, recDeleteInstance:
		return appendResult(make([]byte, 0, resultSize(r)), r, applied)
	}
	return nil
}

// resultSize is a capacity that fits r's rendered result.
func resultSize(r *record) int {
	return 96 + len(r.InstanceID) + len(r.InitialState) + len(r.Ctx) + len(r.EventID) + len(r.FromState) + len(r.ToState)
}

// appendInstanceResult appends GET_INSTANCE's result: the instance's
// fields in key order, rendered as appendResult renders a write's (the ctx
// is stored compact) instead of through reflection, which cost as much as
// a whole APPLY_EVENT.
func appendInstanceResult(p []byte, in *instance, timers []timerView) []byte {
	ctx := ctxOrEmpty(in.ctx)
	p = slices.Grow(p, len(ctx)+len(in.lastEventID)+len(in.mv.name)+len(in.state)+160)
	p = append(p, `{"ctx":`...)
	p = append(p, ctx...)
	p = append(p, `,"created_at":`...)
	p = strconv.AppendInt(p, in.createdAt, 10)
	if in.lastEventID != "" {
		p = append(p, `,"last_event_id":`...)
		p = encAppendString(p, in.lastEventID)
	}
	return appendInstanceTail(p, in, timers)
}

// appendInstanceTail appends the fields GET_INSTANCE and LIST_INSTANCES
// share after the ones that differ, from last_wal_offset on, and the
// closing brace.
func appendInstanceTail(p []byte, in *instance, timers []timerView) []byte {
	p = append(p, `,"last_wal_offset":`...)
	p = strconv.AppendUint(p, in.lastLSN, 10)
	p = append(p, `,"machine":`...)
	p = encAppendString(p, in.mv.name)
	p = append(p, `,"state":`...)
	p = encAppendString(p, in.state)
	if len(timers) > 0 {
		p = appendTimers(p, timers)
	}
	p = append(p, `,"updated_at":`...)
	p = strconv.AppendInt(p, in.updatedAt, 10)
	p = append(p, `,"version":`...)
	p = strconv.AppendUint(p, uint64(in.mv.version), 10)
	return append(p, '}')
}

// appendListResult appends LIST_INSTANCES's result for one page of
// instances, with keys in the order encoding/json would write them.
func appendListResult(p []byte, page []*instance, hasMore bool, total uint64) []byte {
	size := 64
	for _, in := range page {
		size += 128 + len(in.id) + len(in.mv.name) + len(in.state)
	}
	p = slices.Grow(p, size)
	p = append(p, `{"has_more":`...)
	p = strconv.AppendBool(p, hasMore)
	p = append(p, `,"instances":[`...)
	for i, in := range page {
		if i > 0 {
			p = append(p, ',')
		}
		p = append(p, `{"created_at":`...)
		p = strconv.AppendInt(p, in.createdAt, 10)
		p = append(p, `,"id":`...)
		p = encAppendString(p, in.id)
		p = appendInstanceTail(p, in, nil)
	}
	p = append(p, `],"total":`...)
	p = strconv.AppendUint(p, total, 10)
	return append(p, '}')
}

// appendResult appends the result of the single write r (a create, event
// or delete) to p.
func appendResult(p []byte, r *record, applied bool) []byte {
	switch r.typ {
	case recCreateInstance:
		p = append(p, `{"instance_id":`...)
		p = encAppendString(p, r.InstanceID)
		p = append(p, `,"state":`...)
		p = encAppendString(p, r.InitialState)
		p = append(p, `,"wal_offset":`...)
		p = strconv.AppendUint(p, r.lsn, 10)
		return append(p, '}')
	case recApplyEvent:
		ctx := ctxOrEmpty(r.Ctx)
		p = append(p, `{"applied":`...)
		p = strconv.AppendBool(p, applied)
		p = append(p, `,"ctx":`...)
		p = append(p, ctx...)
		if r.EventID != "" {
			p = append(p, `,"event_id":`...)
			p = encAppendString(p, r.EventID)
		}
		p = append(p, `,"from_state":`...)
		p = encAppendString(p, r.FromState)
		p = append(p, `,"to_state":`...)
		p = encAppendString(p, r.ToState)
		p = append(p, `,"wal_offset":`...)
		p = strconv.AppendUint(p, r.lsn, 10)
		return append(p, '}')
	case recDeleteInstance:
		p = append(p, `{"deleted":true,"instance_id":`...)
		p = encAppendString(p, r.InstanceID)
		p = append(p, `,"wal_offset":`...)
		p = strconv.AppendUint(p, r.lsn, 10)
		return append(p, '}')
	}
	return p
}
