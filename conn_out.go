package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// A connection's output: the queue bounds (per connection and server-wide),
// the queued message, and the two ways a reply reaches the socket: written
// by the request reader itself when it is alone in flight (reply), or
// queued for the connection's writer goroutine (enqueue, writeLoop).

// Output queue bounds. Each connection may have connQueueCap bytes queued
// for its writer (replies and events its client has not read yet), and all
// connections together the server's outBudget. Beyond either bound the
// reader stops reading requests (a client that does not read holds its own
// requests back) and the pump stops reading the log (its subscriptions
// fall behind and are fed from the log later); nothing is dropped. A
// single message larger than a bound still goes when nothing else is
// queued under it, and every connection may queue queueReserve bytes
// whatever the others hold, so clients that stop reading cannot stall
// everyone else's small replies. All told, the server queues at most
// max(outBudget, one message) + queueReserve per connection.
const (
	maxQueuedBytes = 32 << 20  // per connection
	maxQueuedTotal = 256 << 20 // per server
	queueReserve   = 64 << 10  // per connection, outside the server's cap
)

// outBudget counts the bytes queued for output on all connections against
// the server-wide cap. The common path is an atomic compare-and-swap; only
// waiting and waking take the mutex.
type outBudget struct {
	limit   int64
	reserve int
	queued  atomic.Int64
	peak    atomic.Int64 // high-water mark of queued
	waiters atomic.Int32 // goroutines between waitChan and doneWaiting

	mu   sync.Mutex
	wake chan struct{} // closed and replaced on release while anyone waits
}

func newOutBudget(limit int64, reserve int) *outBudget {
	return &outBudget{limit: limit, reserve: reserve}
}

// take adds n bytes if they fit under the cap, or the budget is empty.
func (b *outBudget) take(n int64) bool {
	for {
		cur := b.queued.Load()
		if cur != 0 && cur+n > b.limit {
			return false
		}
		if b.queued.CompareAndSwap(cur, cur+n) {
			b.notePeak(cur + n)
			return true
		}
	}
}

// force adds n bytes whatever the cap (a connection's reserve).
func (b *outBudget) force(n int64) { b.notePeak(b.queued.Add(n)) }

func (b *outBudget) notePeak(v int64) {
	for p := b.peak.Load(); v > p && !b.peak.CompareAndSwap(p, v); p = b.peak.Load() {
	}
}

func (b *outBudget) release(n int64) {
	b.queued.Add(-n)
	if b.waiters.Load() > 0 {
		b.mu.Lock()
		if b.wake != nil {
			close(b.wake)
			b.wake = nil
		}
		b.mu.Unlock()
	}
}

// waitChan registers a waiter and returns a channel closed by the next
// release. The caller checks again after it (a release in between has
// already counted it), waits, then calls doneWaiting.
func (b *outBudget) waitChan() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiters.Add(1)
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	return b.wake
}

func (b *outBudget) doneWaiting() { b.waiters.Add(-1) }

// byteGate counts a connection's queued bytes against its own bound and
// the server's outBudget.
type byteGate struct {
	limit  int // connQueueCap
	budget *outBudget

	mu     sync.Mutex
	queued int
	peak   int           // high-water mark of queued
	wake   chan struct{} // closed and replaced when bytes are released
}

// admitLocked adds n bytes if both bounds allow it; local reports whether
// the connection's own bound did. Caller holds g.mu.
func (g *byteGate) admitLocked(n int) (ok, local bool) {
	if g.queued != 0 && g.queued+n > g.limit {
		return false, false
	}
	if g.queued+n <= g.budget.reserve {
		g.budget.force(int64(n))
	} else if !g.budget.take(int64(n)) {
		return false, true
	}
	g.queued += n
	g.peak = max(g.peak, g.queued)
	return true, true
}

// acquire waits until n more bytes may be queued, or quit.
func (g *byteGate) acquire(n int, quit <-chan struct{}) bool {
	for {
		g.mu.Lock()
		ok, local := g.admitLocked(n)
		if ok {
			g.mu.Unlock()
			return true
		}
		if !local {
			// This connection's own bound: wait for its writer.
			if g.wake == nil {
				g.wake = make(chan struct{})
			}
			ch := g.wake
			g.mu.Unlock()
			select {
			case <-ch:
			case <-quit:
				return false
			}
			continue
		}
		g.mu.Unlock()
		// The server's bound: wait for any connection's writer.
		ch := g.budget.waitChan()
		g.mu.Lock()
		ok, _ = g.admitLocked(n)
		g.mu.Unlock()
		if !ok {
			select {
			case <-ch:
			case <-quit:
				g.budget.doneWaiting()
				return false
			}
		}
		g.budget.doneWaiting()
		if ok {
			return true
		}
	}
}

func (g *byteGate) release(n int) {
	g.mu.Lock()
	g.queued -= n
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
	g.mu.Unlock()
	g.budget.release(int64(n))
}

// outMsg is one message queued for the writer. The reader queues replies
// framed already, in the framing it read the request in, and says in next
// which framing follows them. The pump queues events as bare payloads
// (event), which the writer frames as the connection's framing stands at
// that point of the stream: a HELLO that switches framing is a point in the
// stream, so events written before its reply keep the old framing and
// events after it get the new one, whichever goroutine encoded them when.
// (A reply the reader writes itself, see reply, may pass events still
// queued; each message is framed for where it lands.)
type outMsg struct {
	buf   []byte
	lsn   uint64   // send only once durable
	close bool     // close the connection after this message
	event bool     // buf is a bare payload: the writer frames it
	next  wireMode // reply: the framing of what is sent after it
	pool  *[]byte  // buf came from replyBufs: return it once written
	local bool     // wait only for the local sync, never for replicas
}

// size is what m counts against the queue bounds: its bytes on the wire,
// or (for an event) as many as they can be in either framing.
func (m *outMsg) size() int {
	if m.event {
		return len(m.buf) + frameHeaderLen
	}
	return len(m.buf)
}

// maxDirectReply bounds the replies the reader writes itself (reply).
const maxDirectReply = 16 << 10

// replyBufs recycles reply buffers: the writer copies a reply into the
// connection's write buffer, after which the reply's own buffer is free.
// A durable write's reply is one of the allocations per request that the
// garbage collector would otherwise have to keep up with.
var replyBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledReply keeps the rare large reply out of the pool.
const maxPooledReply = 64 << 10

// written returns m's buffer to replyBufs, once nothing refers to it.
func (m *outMsg) written() {
	if m.pool != nil && cap(m.buf) <= maxPooledReply {
		*m.pool = m.buf[:0]
		replyBufs.Put(m.pool)
	}
	m.pool, m.buf = nil, nil
}

// reply sends a reply to the request just handled. When handle took a
// log lease (a lone write: nothing queued, nothing buffered), the reader
// leads the commit of its own record (wal.lead) and writes the reply
// itself, on its own goroutine, so that a lone request costs one pwrite,
// one fdatasync and no hand-off between goroutines. Pipelined requests go
// through the writer and the committer, whose gather makes larger groups
// under load. Any small durable reply to the last request buffered, with
// nothing queued ahead of it, is written here too. A reply is always
// flushed as soon as it is ready: one held back in the buffer while the
// reader runs a later, slow request (a failed AUTH's delay, a COMPACT)
// would wait for it. Large replies go through the queue, where a client
// that does not read is bounded by the queue limits, not the socket.
// It reports false when the connection failed.
func (c *conn) reply(m outMsg) bool {
	direct := !m.close && c.stream == nil && c.replies.Load() == 0 && c.fr.buffered() == 0 &&
		len(m.buf) <= maxDirectReply &&
		(m.local || !c.s.repl.syncWait() || m.lsn <= c.s.repl.replicated.Load())
	if c.leased {
		var err error
		if direct && m.lsn > 0 {
			err = c.s.log.lead(m.lsn)
		}
		c.s.log.unlease()
		c.leased = false
		direct = direct && err == nil // the writer reports the failure
	}
	if direct && m.lsn <= c.s.log.durableLSN() && c.wmu.TryLock() {
		err := c.writeMsgLocked(&m, true)
		c.wmu.Unlock()
		if err != nil {
			c.nc.Close()
			return false
		}
		return true
	}
	c.enqueue(m)
	return true
}

// enqueue queues a reply for the writer, waiting while too many bytes are
// queued already (a client that does not read holds its own requests back).
// Once the writer has stopped, nothing will be sent: the reply is dropped.
func (c *conn) enqueue(m outMsg) {
	if c.gate.acquire(m.size(), c.dead) {
		if !m.event {
			c.replies.Add(1)
		}
		c.out <- m
	}
}

// armWriteDeadline re-arms the write deadline before anything that can
// reach the socket (a flush, or a write the buffer cannot hold), so that a
// client that stops reading is disconnected after the idle timeout instead
// of holding memory forever, while one that reads, however slowly, is not.
// Not per reply: the clock is read once per batch (under wmu).
func (c *conn) armWriteDeadline() {
	if idle := c.s.cfg.IdleTimeout; idle > 0 {
		c.wdeadline.arm(c.nc.SetWriteDeadline, time.Now(), idle)
	}
}

// flushLocked sends what is buffered (under wmu).
func (c *conn) flushLocked() error {
	if c.bw.Buffered() == 0 {
		return nil
	}
	c.armWriteDeadline()
	return c.bw.Flush()
}

// writeMsgLocked writes one message into the buffer, framing an event as
// the stream stands, and flushes when asked (under wmu). The message's
// buffer is released.
func (c *conn) writeMsgLocked(m *outMsg, flush bool) error {
	if m.size() > c.bw.Available() {
		c.armWriteDeadline()
	}
	var err error
	switch {
	case !m.event:
		_, err = c.bw.Write(m.buf)
		c.wmode = m.next
	case c.wmode == modeJSONL:
		c.bw.Write(m.buf)
		err = c.bw.WriteByte('\n')
	default:
		var hdr [frameHeaderLen]byte
		putFrameHeader(&hdr, m.buf)
		c.bw.Write(hdr[:])
		_, err = c.bw.Write(m.buf)
	}
	m.written()
	if err == nil && flush {
		c.armWriteDeadline()
		if err = c.bw.Flush(); err == nil {
			c.lastActivity.Store(time.Now().UnixNano())
		}
	}
	return err
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer func() {
		close(c.dead)
		c.nc.Close()
		for m := range c.out { // let the reader and pump finish if blocked on us
			c.gate.release(m.size())
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.metrics.connClosed()
		c.s.logger.Info("connection closed", "remote", c.remote)
	}()
	// flush sends what the reader's direct replies or earlier messages
	// left buffered before waiting for a sync.
	flush := func() error {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.flushLocked()
	}
	for m := range c.out {
		if m.lsn > 0 {
			if m.lsn > c.s.log.durableLSN() {
				// Send what is ready before waiting for the sync.
				if err := flush(); err != nil {
					return
				}
			}
			if err := c.s.log.waitDurable(m.lsn); err != nil {
				c.gate.release(m.size())
				c.s.die(err)
				return
			}
			// Synchronous replication: a reply also waits for replica
			// acks (replica.go); events do not.
			if !m.event && !m.local && c.s.repl.syncWait() && m.lsn > c.s.repl.replicated.Load() {
				if err := flush(); err != nil {
					c.gate.release(m.size())
					return
				}
				if !c.s.repl.waitReplicated(m.lsn) {
					c.gate.release(m.size())
					return
				}
			}
		}
		size := m.size()
		reply := !m.event
		c.wmu.Lock()
		err := c.writeMsgLocked(&m, m.close || len(c.out) == 0)
		if reply {
			c.replies.Add(-1)
		}
		c.wmu.Unlock()
		c.gate.release(size)
		if err != nil || m.close {
			return
		}
	}
}

// deadlineTimer re-arms a connection deadline only when an eighth of the
// timeout has passed since it was last set, instead of once per request:
// setting a deadline modifies a runtime timer, which showed up in profiles
// of pipelined load. A deadline therefore fires between 7/8 and all of the
// timeout after the last activity; the reader re-checks real idleness.
type deadlineTimer struct{ at time.Time }

func (d *deadlineTimer) arm(set func(time.Time) error, now time.Time, timeout time.Duration) {
	if d.at.IsZero() || d.at.Sub(now) < timeout-timeout/8 {
		d.at = now.Add(timeout)
		set(d.at)
	}
}
