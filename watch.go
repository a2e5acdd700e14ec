package main

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// Subscriptions are cursors over the log. A connection that watches gets a
// pump goroutine that reads durable records from its subscriptions'
// cursors up to the durable LSN, turns apply_event records into event
// frames and queues them on the connection, blocking when the connection
// cannot take more. Nothing is buffered per subscriber beyond the
// connection's bounded queue: a subscriber that falls behind simply reads
// further back in the (memory-mapped) log when it catches up, so nothing is
// ever dropped, and `from_offset` replay is the same mechanism. Records are
// decoded once into a small shared cache, so many subscribers at the head
// cost one decode per record.
//
// Compaction never deletes records a registered subscription still needs;
// a client that stops reading is disconnected after the idle timeout,
// which releases them.

// subscription is one WATCH_INSTANCE or WATCH_ALL.
type subscription struct {
	id         string
	kind       string // "instance" or "all" (the metrics label)
	instanceID string // WATCH_INSTANCE
	machines   map[string]bool
	events     map[string]bool
	fromStates map[string]bool
	toStates   map[string]bool
	includeCtx bool
	conn       *conn

	next    atomic.Uint64 // next LSN to examine
	removed atomic.Bool
}

func (sub *subscription) match(ev *watchEvent) bool {
	if sub.instanceID != "" || sub.kind == "instance" {
		return ev.instanceID == sub.instanceID
	}
	in := func(set map[string]bool, v string) bool { return set == nil || set[v] }
	return in(sub.machines, ev.machine) && in(sub.events, ev.event) &&
		in(sub.fromStates, ev.from) && in(sub.toStates, ev.to)
}

func stringSet(list []string) map[string]bool {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

// watchEvent is one applied event, rendered once for every subscriber.
type watchEvent struct {
	instanceID, machine, event, from, to string
	withCtx, noCtx                       []byte // event JSON after "subscription_id"
}

func renderEvent(lsn uint64, r *record) *watchEvent {
	ev := &watchEvent{instanceID: r.InstanceID, machine: r.Machine, event: r.Event, from: r.FromState, to: r.ToState}
	b := make([]byte, 0, 128+len(r.Payload)+len(r.Ctx))
	b = append(b, `,"instance_id":`...)
	b = encAppendString(b, r.InstanceID)
	b = append(b, `,"machine":`...)
	b = encAppendString(b, r.Machine)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, uint64(r.Version), 10)
	b = append(b, `,"wal_offset":`...)
	b = strconv.AppendUint(b, lsn, 10)
	b = append(b, `,"from_state":`...)
	b = encAppendString(b, r.FromState)
	b = append(b, `,"to_state":`...)
	b = encAppendString(b, r.ToState)
	b = append(b, `,"event":`...)
	b = encAppendString(b, r.Event)
	if r.Source != "" {
		b = append(b, `,"source":`...)
		b = encAppendString(b, r.Source)
	}
	b = append(b, `,"payload":`...)
	b = append(b, ctxOrEmpty(r.Payload)...)
	ev.noCtx = append(b[:len(b):len(b)], '}')
	b = append(b, `,"ctx":`...)
	b = append(b, ctxOrEmpty(r.Ctx)...)
	ev.withCtx = append(b, '}')
	return ev
}

// recordEvents returns the events a WAL record produces: an apply_event,
// or the apply_event members of an atomic batch.
func recordEvents(lsn uint64, typ uint8, payload []byte) ([]*watchEvent, error) {
	if typ != recApplyEvent && typ != recBatch {
		return nil, nil
	}
	r, err := decodeRecord(typ, payload)
	if err != nil {
		return nil, fmt.Errorf("record %d: %v", lsn, err)
	}
	if typ == recApplyEvent {
		return []*watchEvent{renderEvent(lsn, r)}, nil
	}
	var evs []*watchEvent
	for _, op := range r.Ops {
		if op.typ == recApplyEvent {
			evs = append(evs, renderEvent(lsn, op))
		}
	}
	return evs, nil
}

// watchHub knows every subscription (for compaction) and caches decoded
// records (for fan-out).
type watchHub struct {
	log *wal

	mu   sync.Mutex
	subs map[*subscription]struct{}

	cacheMu sync.RWMutex
	cache   [4096]watchCacheSlot
}

type watchCacheSlot struct {
	lsn uint64 // 0: empty
	evs []*watchEvent
}

func newWatchHub(w *wal) *watchHub {
	return &watchHub{log: w, subs: map[*subscription]struct{}{}}
}

func (h *watchHub) register(sub *subscription) {
	h.mu.Lock()
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
}

func (h *watchHub) unregister(sub *subscription) {
	sub.removed.Store(true)
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
}

// minNeeded is the oldest LSN any subscription still has to read
// (0 when there are none): compaction keeps it.
func (h *watchHub) minNeeded() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lo uint64
	for sub := range h.subs {
		if n := sub.next.Load(); lo == 0 || n < lo {
			lo = n
		}
	}
	return lo
}

func (h *watchHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// each calls fn for every record in [from, to] with the events it produced,
// in order, until fn returns false.
func (h *watchHub) each(from, to uint64, fn func(lsn uint64, evs []*watchEvent) bool) error {
	for lsn := from; lsn <= to; {
		h.cacheMu.RLock()
		slot := h.cache[lsn%uint64(len(h.cache))]
		h.cacheMu.RUnlock()
		if slot.lsn == lsn {
			if !fn(lsn, slot.evs) {
				return nil
			}
			lsn++
			continue
		}
		// Miss: read from the log from here, caching what we decode.
		stop := false
		var decodeErr error
		err := h.log.read(lsn, func(r walRecord) bool {
			if r.LSN > to {
				return false
			}
			if r.LSN != lsn {
				decodeErr = fmt.Errorf("log skipped from %d to %d (compacted?)", lsn, r.LSN)
				return false
			}
			evs, err := recordEvents(r.LSN, r.Type, r.Payload)
			if err != nil {
				decodeErr = err
				return false
			}
			h.cacheMu.Lock()
			h.cache[r.LSN%uint64(len(h.cache))] = watchCacheSlot{r.LSN, evs}
			h.cacheMu.Unlock()
			lsn++
			if !fn(r.LSN, evs) {
				stop = true
				return false
			}
			return true
		})
		if err != nil {
			return err
		}
		if decodeErr != nil {
			return decodeErr
		}
		if stop {
			return nil
		}
		if lsn <= to {
			return fmt.Errorf("log ended at %d before durable record %d", lsn-1, to)
		}
	}
	return nil
}

// ---- per connection ----

// connWatch is a connection's subscriptions and its pump.
type connWatch struct {
	mu      sync.Mutex
	subs    []*subscription // active: the pump serves these
	pending []*subscription // registered, activated once the WATCH reply is queued
	started bool
	wake    chan struct{}
	done    sync.WaitGroup
}

// maxSubsPerConn bounds what one connection can register.
const maxSubsPerConn = 1024

func (c *conn) addSubscription(sub *subscription) *rcpError {
	c.watch.mu.Lock()
	defer c.watch.mu.Unlock()
	if len(c.watch.subs)+len(c.watch.pending) >= maxSubsPerConn {
		return newError(codeBadRequest, "a connection may hold at most %d subscriptions", maxSubsPerConn)
	}
	sub.conn = c
	c.watch.pending = append(c.watch.pending, sub)
	c.s.hub.register(sub)
	c.s.metrics.subscriptionAdded(sub.kind)
	return nil
}

// activateSubscriptions is called by the reader after queueing a reply, so
// a WATCH reply always precedes its subscription's events.
func (c *conn) activateSubscriptions() {
	c.watch.mu.Lock()
	if len(c.watch.pending) == 0 {
		c.watch.mu.Unlock()
		return
	}
	c.watch.subs = append(c.watch.subs, c.watch.pending...)
	c.watch.pending = nil
	start := !c.watch.started
	c.watch.started = true
	if c.watch.wake == nil {
		c.watch.wake = make(chan struct{}, 1)
	}
	c.watch.mu.Unlock()
	if start {
		c.watch.done.Add(1)
		go c.pump()
	}
	select {
	case c.watch.wake <- struct{}{}:
	default:
	}
}

func (c *conn) removeSubscription(id string) bool {
	c.watch.mu.Lock()
	defer c.watch.mu.Unlock()
	for _, list := range []*[]*subscription{&c.watch.subs, &c.watch.pending} {
		for i, sub := range *list {
			if sub.id == id {
				*list = append((*list)[:i:i], (*list)[i+1:]...)
				c.s.hub.unregister(sub)
				c.s.metrics.subscriptionRemoved(sub.kind)
				return true
			}
		}
	}
	return false
}

// dropSubscriptions ends every subscription of the connection (BYE, close).
func (c *conn) dropSubscriptions() {
	c.watch.mu.Lock()
	all := append(c.watch.subs, c.watch.pending...)
	c.watch.subs, c.watch.pending = nil, nil
	c.watch.mu.Unlock()
	for _, sub := range all {
		c.s.hub.unregister(sub)
		c.s.metrics.subscriptionRemoved(sub.kind)
	}
}

// pump feeds the connection's subscriptions from the log until quit.
func (c *conn) pump() {
	defer c.watch.done.Done()
	for {
		notify := c.s.log.durableNotify()
		hi := c.s.log.durableLSN()
		c.watch.mu.Lock()
		subs := append([]*subscription(nil), c.watch.subs...)
		c.watch.mu.Unlock()
		var lo uint64
		for _, sub := range subs {
			if n := sub.next.Load(); lo == 0 || n < lo {
				lo = n
			}
		}
		if len(subs) > 0 && lo <= hi {
			quit := false
			err := c.s.hub.each(lo, hi, func(lsn uint64, evs []*watchEvent) bool {
				for _, sub := range subs {
					if sub.next.Load() > lsn || sub.removed.Load() {
						continue
					}
					for _, ev := range evs {
						if !sub.match(ev) {
							continue
						}
						body := ev.noCtx
						if sub.includeCtx {
							body = ev.withCtx
						}
						// A bare payload: the writer frames it (see outMsg).
						bp := replyBufs.Get().(*[]byte)
						buf := slices.Grow((*bp)[:0], len(`{"type":"event","subscription_id":""}`)+len(sub.id)+len(body))
						buf = append(buf, `{"type":"event","subscription_id":`...)
						buf = encAppendString(buf, sub.id)
						buf = append(buf, body...)
						m := outMsg{buf: buf, event: true, pool: bp}
						if !c.gate.acquire(m.size(), c.quit) {
							quit = true
							return false
						}
						select {
						case c.out <- m:
							c.s.metrics.eventsForwarded(sub.kind, 1)
						case <-c.quit:
							c.gate.release(m.size())
							quit = true
							return false
						}
					}
					sub.next.Store(lsn + 1)
				}
				return true
			})
			if quit {
				return
			}
			if err != nil {
				c.s.logger.Error("subscription feed failed; closing the connection", "remote", c.remote, "err", err)
				c.nc.Close()
				return
			}
		}
		select {
		case <-notify:
		case <-c.watch.wake:
		case <-c.quit:
			return
		}
	}
}

// ---- handlers ----

// watchStart validates from_offset and returns the first LSN to examine.
// Caller holds st.mu (read) so head is consistent with the state it saw.
func (s *server) watchStart(from *uint64) (uint64, *rcpError) {
	head := s.log.lastLSN()
	if from == nil {
		return head + 1, nil
	}
	if first := s.log.firstLSN(); *from+1 < first {
		return 0, badParam("from_offset", "from_offset %d is older than the oldest retained record %d; resume from %d or later", *from, first, first-1).
			with("oldest_offset", first)
	}
	return *from + 1, nil
}

func (s *server) handleWatchInstance(c *conn, p *WatchInstanceParams) (reply, *rcpError) {
	s.st.mu.RLock()
	in := s.st.instances[p.InstanceID]
	if in == nil {
		s.st.mu.RUnlock()
		return reply{}, instanceNotFound(p.InstanceID)
	}
	state, lsn := in.state, in.lastLSN
	start, err := s.watchStart(p.FromOffset)
	head := s.log.lastLSN()
	s.st.mu.RUnlock()
	if err != nil {
		return reply{}, err
	}
	sub := &subscription{id: "sub-" + newUUID(), kind: "instance", instanceID: p.InstanceID, includeCtx: p.IncludeCtx}
	sub.next.Store(start)
	if err := c.addSubscription(sub); err != nil {
		return reply{}, err
	}
	return reply{result: encMarshal(struct {
		CurrentState     string `json:"current_state"`
		CurrentWalOffset uint64 `json:"current_wal_offset"`
		InstanceID       string `json:"instance_id"`
		SubscriptionID   string `json:"subscription_id"`
	}{state, lsn, p.InstanceID, sub.id}), lsn: head}, nil
}

func (s *server) handleWatchAll(c *conn, p *WatchAllParams) (reply, *rcpError) {
	s.st.mu.RLock()
	start, err := s.watchStart(p.FromOffset)
	head := s.log.lastLSN()
	s.st.mu.RUnlock()
	if err != nil {
		return reply{}, err
	}
	sub := &subscription{id: "sub-" + newUUID(), kind: "all", includeCtx: p.IncludeCtx,
		machines: stringSet(p.Machines), events: stringSet(p.Events),
		fromStates: stringSet(p.FromStates), toStates: stringSet(p.ToStates)}
	sub.next.Store(start)
	if err := c.addSubscription(sub); err != nil {
		return reply{}, err
	}
	return reply{result: encMarshal(struct {
		SubscriptionID string `json:"subscription_id"`
		WalOffset      uint64 `json:"wal_offset"`
	}{sub.id, head}), lsn: head}, nil
}

func (s *server) handleUnwatch(c *conn, p *UnwatchParams) (reply, *rcpError) {
	removed := c.removeSubscription(p.SubscriptionID)
	return reply{result: encMarshal(struct {
		Removed        bool   `json:"removed"`
		SubscriptionID string `json:"subscription_id"`
	}{removed, p.SubscriptionID})}, nil
}
