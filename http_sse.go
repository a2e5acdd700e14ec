package main

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Server-sent events: GET /v1/events is a watch cursor (watch.go) with an
// SSE encoder. ?instance_id=ID watches one instance (WATCH_INSTANCE);
// otherwise ?machine=&event=&from_state=&to_state= (each comma-separated)
// filter all events (WATCH_ALL). Each event is sent with id: its
// wal_offset; a reconnect with Last-Event-ID (or from_offset) resumes
// right after it, with no gap and no duplicate, as WATCH's from_offset.
//
// The stream is fed from the log, never from a per-subscriber buffer: a
// client that reads slowly only moves its own cursor slowly. When one
// record holds several matching events (an atomic batch), only the last
// carries the id, so that a stream cut between them resumes at the record
// (a repeat, never a gap).

// sseHeartbeat is how often a comment keeps a quiet stream alive; a
// variable for tests.
var sseHeartbeat = 15 * time.Second

// sseWriteTimeout is how long one write may block before the client is
// given up on (it may resume with Last-Event-ID).
const sseWriteTimeout = 30 * time.Second

func (s *server) httpEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from := q.Get("from_offset")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		from = id
	}
	var fromOff *uint64
	if from != "" {
		v, err := strconv.ParseUint(from, 10, 64)
		if err != nil {
			httpWriteError(w, 0, badParam("from_offset", "from_offset (or Last-Event-ID) '%s' is not an offset", from))
			return
		}
		fromOff = &v
	}
	includeCtx := true
	if v := q.Get("include_ctx"); v != "" {
		includeCtx = v == "true" || v == "1"
	}
	list := func(name string) map[string]bool {
		if v := q.Get(name); v != "" {
			return stringSet(strings.Split(v, ","))
		}
		return nil
	}
	sub := &subscription{id: "sse-" + newUUID(), kind: "all", includeCtx: includeCtx,
		machines: list("machine"), events: list("event"), fromStates: list("from_state"), toStates: list("to_state")}
	instanceID := q.Get("instance_id")
	s.st.mu.RLock()
	if instanceID != "" {
		sub.kind, sub.instanceID = "instance", instanceID
		if s.st.instances[instanceID] == nil {
			s.st.mu.RUnlock()
			httpWriteError(w, 0, instanceNotFound(instanceID))
			return
		}
	}
	start, rerr := s.watchStart(fromOff)
	head := s.log.lastLSN()
	s.st.mu.RUnlock()
	if rerr != nil {
		httpWriteError(w, 0, rerr)
		return
	}
	sub.next.Store(start)
	s.hub.register(sub)
	s.metrics.subscriptionAdded(sub.kind)
	defer func() {
		s.hub.unregister(sub)
		s.metrics.subscriptionRemoved(sub.kind)
	}()

	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 0, 4096)
	buf = append(buf, ": stmdb events; head "...)
	buf = strconv.AppendUint(buf, head, 10)
	buf = append(buf, "\nretry: 1000\n\n"...)
	send := func() bool {
		rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		_, err := w.Write(buf)
		buf = buf[:0]
		return err == nil && rc.Flush() == nil
	}
	if !send() {
		return
	}
	// Streams end when the server closes: read its stop channel once.
	stop := s.stop
	tick := time.NewTicker(sseHeartbeat)
	defer tick.Stop()
	for {
		notify := s.log.durableNotify()
		hi := s.log.durableLSN()
		if lo := sub.next.Load(); lo <= hi {
			ok := true
			err := s.hub.each(lo, hi, func(lsn uint64, evs []*watchEvent) bool {
				last := -1
				for i, ev := range evs {
					if sub.match(ev) {
						last = i
					}
				}
				for i := 0; i <= last; i++ {
					ev := evs[i]
					if !sub.match(ev) {
						continue
					}
					body := ev.noCtx
					if sub.includeCtx {
						body = ev.withCtx
					}
					if i == last {
						buf = append(buf, "id: "...)
						buf = strconv.AppendUint(buf, lsn, 10)
						buf = append(buf, '\n')
					}
					buf = append(buf, "event: event\ndata: {"...)
					buf = append(buf, body[1:]...)
					buf = append(buf, '\n', '\n')
				}
				if last >= 0 {
					s.metrics.eventsForwarded(sub.kind, last+1)
				}
				sub.next.Store(lsn + 1)
				if len(buf) >= 32<<10 {
					ok = send()
				}
				return ok
			})
			if err != nil {
				s.logger.Error("event stream failed", "remote", r.RemoteAddr, "err", err)
				return
			}
			if !ok || (len(buf) > 0 && !send()) {
				return
			}
		}
		select {
		case <-notify:
		case <-tick.C:
			buf = append(buf, ": heartbeat\n\n"...)
			if !send() {
				return
			}
		case <-r.Context().Done():
			return
		case <-stop:
			return
		}
	}
}
