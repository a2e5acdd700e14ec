package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"time"
)

// The REPLICATE stream: a consistent copy of a running server's state and
// log, read without blocking its writers. `stmdb backup` is its first
// receiver; a replica (DESIGN.md, "Replication") is the next.
//
// # Request
//
//	REPLICATE {from_offset?: u64, follow?: bool = true}
//
// from_offset is the last offset the receiver already holds durably. When
// it is absent (a receiver that wants a copy), or when the server no longer
// retains the record after it (compaction removed it; for 0, an empty
// receiver such as a new replica, record 1), the stream starts
// with a full snapshot at some offset S, taken the way COMPACT takes one
// (the state is copied under the lock in time proportional to its chunks,
// then encoded without it), and continues with the log from S+1; otherwise
// it continues with the log from from_offset+1. A from_offset past the
// server's last offset is refused (BAD_REQUEST with details.last_offset):
// the receiver's log has diverged. With follow=false the stream ends at the
// durable offset reached once the snapshot (if any) is sent; with
// follow=true it never ends.
//
// REPLICATE needs binary (RCPX) framing and, when auth.required, AUTH
// first. Its reply is an ordinary response:
//
//	{"epoch":E,"start_offset":N,"last_offset":L,"snapshot_offset":S,"snapshot_time":MS}
//
// (snapshot_* only when a snapshot follows; start_offset is the first log
// offset the stream carries; epoch comes from replicationEpoch). From then
// on the connection is dedicated to the stream.
//
// # Messages, primary to receiver
//
// Each is the payload of one RCPX frame with CRC_PRESENT (the CRC32C
// covers the payload). The payload is binary, not JSON: a kind byte, then
// little-endian fields. A frame may be larger than limits.max_frame_bytes
// (up to replMaxFrame): one WAL record can be up to 17 MiB.
//
//	'S' u64 S | bytes           a piece of the snapshot file at offset S, in order
//	'E' u64 S | u64 size | u32 crc  the snapshot is complete: its size and CRC32C
//	'R' u64 first | u64 last | records
//	                            WAL records first..last, dense, each exactly as
//	                            on disk (wal.go: length, type, LSN, CRC32C,
//	                            payload, padding), so a receiver checks each
//	                            record's own CRC and appends it to a log with
//	                            the same offsets
//	'K' u64 durable | u64 ms    heartbeat: the primary's durable offset and
//	                            clock, at least every replHeartbeat
//	'Z' u64 last                end of a follow=false stream; the primary closes
//
// Only durable records are sent: the sender reads the mapped segments up
// to the durable offset (the cursor mechanism of a lagging watcher, with no
// per-receiver copy of the log), and the snapshot goes out once its offset
// is durable. A registered cursor keeps compaction from deleting what the
// stream has not sent yet. Checksums run end to end: a record's CRC is
// computed when it is appended and travels with it; the snapshot carries
// its own CRC (and 'E' the file's); every frame has a CRC.
//
// # Messages, receiver to primary
//
// JSON payloads in RCPX frames: {"type":"ack","durable_offset":N}, the
// last offset the receiver has made durable. The receiver acks after each
// sync and at least once per heartbeat; the primary closes a stream that
// sends nothing for network.idle_timeout_secs. The newest ack is kept on
// the session (replSession.acked) for synchronous replication to wait on.

const (
	replMsgSnapshot    = 'S'
	replMsgSnapshotEnd = 'E'
	replMsgRecords     = 'R'
	replMsgHeartbeat   = 'K'
	replMsgEnd         = 'Z'

	replBatchBytes = 1 << 20               // records per 'R' message, about
	replChunkBytes = 1 << 20               // snapshot bytes per 'S' message
	replMaxFrame   = walMaxPayload + 2<<20 // the largest stream frame a receiver accepts
	replHeartbeat  = time.Second
)

// replHello is REPLICATE's result.
type replHello struct {
	Epoch          uint64       `json:"epoch"`
	Epochs         []epochStart `json:"epochs,omitempty"` // the epoch history (replica.go)
	StartOffset    uint64       `json:"start_offset"`
	LastOffset     uint64       `json:"last_offset"`
	SnapshotOffset *uint64      `json:"snapshot_offset,omitempty"`
	SnapshotTime   int64        `json:"snapshot_time,omitempty"` // Unix ms when the snapshot was taken
}

// replSession is one REPLICATE connection on the primary.
type replSession struct {
	s      *server
	c      *conn
	cursor *subscription // registered with the hub: compaction keeps cursor.next on
	img    *snapImage    // nil: no snapshot
	start  uint64
	follow bool
	acked  atomic.Uint64 // the receiver's durable offset
}

func (s *server) handleReplicate(c *conn, p *ReplicateParams) (reply, *rcpError) {
	if c.fr.mode() != modeBinary {
		return reply{}, newError(codeBadRequest, "REPLICATE needs binary (RCPX) framing")
	}
	// compactMu: no compaction is between choosing what to keep and
	// deleting it while the cursor is registered and the start checked.
	s.compactMu.Lock()
	s.st.mu.Lock()
	last := s.log.lastLSN()
	if p.FromOffset != nil && *p.FromOffset > last {
		s.st.mu.Unlock()
		s.compactMu.Unlock()
		return reply{}, badParam("from_offset", "from_offset %d is past this server's last offset %d: the receiver's log has diverged", *p.FromOffset, last).
			with("last_offset", last)
	}
	sess := &replSession{s: s, c: c, follow: p.Follow}
	if p.FromOffset != nil && *p.FromOffset+1 >= s.log.firstLSN() {
		sess.start = *p.FromOffset + 1
		sess.acked.Store(*p.FromOffset) // the receiver holds it durably
	} else {
		sess.img = s.st.capture()
		sess.start = sess.img.lsn + 1
	}
	now := s.now()
	sess.cursor = &subscription{id: "repl-" + newUUID(), kind: "replicate"}
	sess.cursor.next.Store(sess.start)
	s.hub.register(sess.cursor)
	s.st.mu.Unlock()
	s.compactMu.Unlock()
	if p.ReplicaID != nil {
		s.repl.track(sess, *p.ReplicaID)
	} else {
		s.repl.track(sess, "")
	}

	h := replHello{Epoch: replicationEpoch(s), Epochs: replicationEpochs(s), StartOffset: sess.start, LastOffset: last}
	if sess.img != nil {
		lsn := sess.img.lsn
		h.SnapshotOffset, h.SnapshotTime = &lsn, now
	}
	c.stream = sess.serve
	// The reply waits until what precedes the stream's start is durable.
	return reply{result: encMarshal(h), lsn: sess.start - 1}, nil
}

// serve runs on the connection's reader goroutine once the reply is
// queued: it starts the sender and reads acks until the connection ends.
// When it returns, the reader's cleanup stops the sender (c.quit) and waits
// for it (c.watch.done) before closing the output queue.
func (r *replSession) serve() {
	c := r.c
	r.s.logger.Info("replication stream started", "remote", c.remote, "start_offset", r.start, "snapshot", r.img != nil, "follow", r.follow)
	c.watch.done.Add(1)
	go func() {
		defer c.watch.done.Done()
		defer r.s.hub.unregister(r.cursor)
		defer r.s.repl.untrack(r)
		if err := r.send(); err != nil {
			r.s.logger.Error("replication stream failed; closing the connection", "remote", c.remote, "err", err)
			c.nc.Close()
		}
	}()
	idle := r.s.cfg.IdleTimeout
	for {
		if idle > 0 {
			c.nc.SetReadDeadline(time.Now().Add(idle))
		}
		p, err := c.fr.next()
		if err != nil {
			return
		}
		var ack struct {
			Type          string `json:"type"`
			DurableOffset uint64 `json:"durable_offset"`
		}
		if json.Unmarshal(p, &ack) != nil || ack.Type != "ack" {
			r.s.logger.Warn("replication stream: unexpected message from the receiver; closing", "remote", c.remote)
			return
		}
		r.acked.Store(ack.DurableOffset)
		r.s.repl.ackedBy(r)
	}
}

// queue hands one stream message to the connection's writer, which frames
// it and sends it once lsn is durable. It reports false once the
// connection is going away.
func (r *replSession) queue(buf []byte, lsn uint64, last bool) bool {
	return r.queueMsg(outMsg{buf: buf, event: true, lsn: lsn, close: last})
}

// queueMsg is queue for a prepared message (one whose buffer is pooled).
func (r *replSession) queueMsg(m outMsg) bool {
	c := r.c
	if !c.gate.acquire(m.size(), c.quit) {
		return false
	}
	select {
	case c.out <- m:
		c.lastActivity.Store(time.Now().UnixNano())
		return true
	case <-c.quit:
		c.gate.release(m.size())
		return false
	}
}

// replChunker cuts the encoded snapshot into 'S' messages.
type replChunker struct {
	r    *replSession
	lsn  uint64
	buf  []byte
	crc  uint32
	size uint64
	quit bool
}

func (w *replChunker) Write(p []byte) (int, error) {
	n := len(p)
	w.crc = crc32.Update(w.crc, walCRCTable, p)
	w.size += uint64(n)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = binary.LittleEndian.AppendUint64(append(make([]byte, 0, 9+replChunkBytes), replMsgSnapshot), w.lsn)
		}
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == cap(w.buf) && !w.flush() {
			return 0, errReplQuit
		}
	}
	return n, nil
}

func (w *replChunker) flush() bool {
	if w.buf == nil {
		return true
	}
	b := w.buf
	w.buf = nil
	return w.r.queue(b, w.lsn, false)
}

var errReplQuit = errors.New("replication: connection closed")

// send streams the snapshot (if any), then the log.
func (r *replSession) send() error {
	s := r.s
	if img := r.img; img != nil {
		r.img = nil // the views are released with the session, not held
		ch := &replChunker{r: r, lsn: img.lsn}
		if _, err := img.encode(ch); err != nil {
			if errors.Is(err, errReplQuit) {
				return nil
			}
			return err
		}
		if !ch.flush() {
			return nil
		}
		end := []byte{replMsgSnapshotEnd}
		end = binary.LittleEndian.AppendUint64(end, img.lsn)
		end = binary.LittleEndian.AppendUint64(end, ch.size)
		end = binary.LittleEndian.AppendUint32(end, ch.crc)
		if !r.queue(end, img.lsn, false) {
			return nil
		}
	}
	stopAt := uint64(0)
	if !r.follow {
		stopAt = max(s.log.durableLSN(), r.start-1)
	}
	cur := r.start
	lastBeat := time.Time{}
	beat := time.NewTimer(replHeartbeat)
	defer beat.Stop()
	var batch []byte
	var batchPool *[]byte
	var first, last uint64
	flush := func() bool {
		if batch == nil {
			return true
		}
		binary.LittleEndian.PutUint64(batch[1:], first)
		binary.LittleEndian.PutUint64(batch[9:], last)
		m := outMsg{buf: batch, event: true, pool: batchPool}
		batch, batchPool = nil, nil
		if !r.queueMsg(m) {
			return false
		}
		r.cursor.next.Store(last + 1)
		return true
	}
	heartbeat := func() bool {
		k := []byte{replMsgHeartbeat}
		k = binary.LittleEndian.AppendUint64(k, s.log.durableLSN())
		k = binary.LittleEndian.AppendUint64(k, uint64(s.now()))
		lastBeat = time.Now()
		return r.queue(k, 0, false)
	}
	for {
		notify := s.log.durableNotify()
		hi := s.log.durableLSN()
		if !r.follow {
			hi = min(hi, stopAt)
		}
		quit := false
		if cur <= hi {
			err := s.log.readRange(cur, hi, true, func(rec walRecord) bool {
				lsn, raw := rec.LSN, rec.Raw
				if batch == nil {
					// Sized for the records in range (a group commit's
					// worth, when following), from the writer's pool:
					// a fresh 1 MiB buffer per message cost more CPU
					// than the rest of the stream.
					need := 17 + max(min(replBatchBytes, int(min(hi-lsn+1, 1<<20))*len(raw)), len(raw))
					batchPool = replyBufs.Get().(*[]byte)
					batch = append(slices.Grow((*batchPool)[:0], need), replMsgRecords)
					batch = append(batch, make([]byte, 16)...)
					first = lsn
				}
				batch = append(batch, raw...)
				last = lsn
				if len(batch) >= replBatchBytes {
					if !flush() {
						quit = true
						return false
					}
					if time.Since(lastBeat) >= replHeartbeat && !heartbeat() {
						quit = true
						return false
					}
				}
				return true
			})
			if err != nil {
				return err
			}
			if quit || !flush() {
				return nil
			}
			cur = last + 1
		}
		if !r.follow && cur > stopAt {
			z := binary.LittleEndian.AppendUint64([]byte{replMsgEnd}, stopAt)
			r.queue(z, 0, true)
			return nil
		}
		if time.Since(lastBeat) >= replHeartbeat && !heartbeat() {
			return nil
		}
		beat.Reset(replHeartbeat)
		select {
		case <-notify:
			if err := s.log.failure(); err != nil {
				return err
			}
		case <-beat.C:
		case <-r.c.quit:
			return nil
		}
	}
}

// ---- the receiving end ----

// replStream is the receiving end of a REPLICATE stream.
type replStream struct {
	nc    net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	hello replHello
	buf   []byte
}

// replMsg is one decoded stream message. data points into the stream's
// buffer: valid until the next call to next.
type replMsg struct {
	kind   byte
	offset uint64 // S, R: first, K: durable, Z: last
	last   uint64 // R
	size   uint64 // E
	crc    uint32 // E
	time   int64  // K: the primary's clock, Unix ms
	data   []byte // S: the chunk; R: the records
}

// replicateOpen sends REPLICATE on c and returns the stream. c must not be
// used afterwards; close the stream instead.
func replicateOpen(c *client, fromOffset *uint64, follow bool, replicaID ...string) (*replStream, error) {
	params := map[string]any{"follow": follow}
	if len(replicaID) > 0 {
		params["replica_id"] = replicaID[0] // a replica: it counts for sync_replicas
	}
	if fromOffset != nil {
		params["from_offset"] = *fromOffset
	}
	m, err := c.call("REPLICATE", params)
	if err != nil {
		return nil, err
	}
	if e := m.rcpErr(); e != nil {
		return nil, e
	}
	rs := &replStream{nc: c.nc, bw: bufio.NewWriterSize(c.nc, 4<<10)}
	if err := json.Unmarshal(m.Result, &rs.hello); err != nil {
		return nil, fmt.Errorf("REPLICATE reply: %w", err)
	}
	// Whatever the client's frame reader holds already is the stream's start.
	fr := c.fr
	pending := bytes.Clone(fr.buf[fr.rpos:fr.wpos])
	rs.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(pending), c.nc), 1<<20)
	return rs, nil
}

func (rs *replStream) close() error { return rs.nc.Close() }

// next reads one message, checking its frame and its shape.
func (rs *replStream) next() (replMsg, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(rs.br, h[:]); err != nil {
		return replMsg{}, err
	}
	if [4]byte(h[0:4]) != frameMagic || binary.BigEndian.Uint16(h[4:6]) != frameVersion {
		return replMsg{}, errors.New("replication stream: bad frame header")
	}
	flags := binary.BigEndian.Uint16(h[6:8])
	ext := int(binary.BigEndian.Uint16(h[8:10]))
	n := binary.BigEndian.Uint32(h[10:14])
	if flags&frameFlagCRC == 0 {
		return replMsg{}, errors.New("replication stream: frame without a CRC")
	}
	if n > replMaxFrame || n == 0 {
		return replMsg{}, fmt.Errorf("replication stream: frame of %d bytes", n)
	}
	if ext > 0 {
		if _, err := rs.br.Discard(ext); err != nil {
			return replMsg{}, noEOF(err)
		}
	}
	if cap(rs.buf) < int(n) {
		rs.buf = make([]byte, n)
	}
	p := rs.buf[:n]
	if _, err := io.ReadFull(rs.br, p); err != nil {
		return replMsg{}, noEOF(err)
	}
	if crc32.Checksum(p, frameCRCTable) != binary.BigEndian.Uint32(h[14:18]) {
		return replMsg{}, errors.New("replication stream: frame CRC mismatch")
	}
	m := replMsg{kind: p[0]}
	b := p[1:]
	need := map[byte]int{replMsgSnapshot: 8, replMsgSnapshotEnd: 20, replMsgRecords: 16, replMsgHeartbeat: 16, replMsgEnd: 8}[m.kind]
	if need == 0 || len(b) < need {
		return replMsg{}, fmt.Errorf("replication stream: bad message (kind %q, %d bytes)", m.kind, len(p))
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[i:]) }
	switch m.kind {
	case replMsgSnapshot:
		m.offset, m.data = u(0), b[8:]
	case replMsgSnapshotEnd:
		m.offset, m.size, m.crc = u(0), u(8), binary.LittleEndian.Uint32(b[16:])
	case replMsgRecords:
		m.offset, m.last, m.data = u(0), u(8), b[16:]
		if err := replCheckRecords(m.data, m.offset, m.last); err != nil {
			return replMsg{}, err
		}
	case replMsgHeartbeat:
		m.offset, m.time = u(0), int64(u(8))
	case replMsgEnd:
		m.offset = u(0)
	}
	return m, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ack tells the primary the receiver's durable offset.
func (rs *replStream) ack(durable uint64) error {
	p := fmt.Appendf(nil, `{"type":"ack","durable_offset":%d}`, durable)
	if _, err := rs.bw.Write(appendFrame(nil, modeBinary, p)); err != nil {
		return err
	}
	return rs.bw.Flush()
}

// replCheckRecords checks that data holds exactly the records first..last,
// dense, each intact (its own CRC).
func replCheckRecords(data []byte, first, last uint64) error {
	want := first
	err := replEachRecord(data, func(lsn uint64, typ uint8, payload, raw []byte) error {
		if lsn != want {
			return fmt.Errorf("replication stream: record %d where %d was expected", lsn, want)
		}
		if _, _, ok := segValidRecord(raw, 0, lsn-1); !ok {
			return fmt.Errorf("replication stream: record %d fails its checksum", lsn)
		}
		want++
		return nil
	})
	if err != nil {
		return err
	}
	if want != last+1 || last < first {
		return fmt.Errorf("replication stream: batch says records %d..%d but holds %d..%d", first, last, first, want-1)
	}
	return nil
}

// replEachRecord walks records in their on-disk form (the layout of a
// segment), stopping at an all-zero header or the end of data.
func replEachRecord(data []byte, fn func(lsn uint64, typ uint8, payload, raw []byte) error) error {
	off := 0
	for len(data)-off >= walHeaderSize {
		h := data[off : off+walHeaderSize]
		length := int(binary.LittleEndian.Uint32(h[0:]))
		if length == 0 && walFirstNonZero(h) < 0 {
			return nil
		}
		size := int(walRecordSize(length))
		if length > walMaxPayload || size > len(data)-off {
			return fmt.Errorf("record at byte %d runs past the end of the data", off)
		}
		if err := fn(binary.LittleEndian.Uint64(h[8:]), h[4], data[off+walHeaderSize:off+walHeaderSize+length], data[off:off+size]); err != nil {
			return err
		}
		off += size
	}
	if off != len(data) {
		return fmt.Errorf("%d stray bytes after the last record", len(data)-off)
	}
	return nil
}
