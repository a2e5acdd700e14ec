package main

// Write-ahead log.
//
// # Basics
//
// The log is a sequence of records, each a type byte plus an opaque payload,
// numbered by a dense LSN (log sequence number): the first record ever is 1
// and every record is the previous one + 1. The state engine assigns meaning
// to types and payloads; the log only stores, checksums and syncs them.
//
// Records live in segment files in one directory (normally <data>/wal). A
// segment is named by the LSN of the first record it holds, as 20 decimal
// digits: 00000000000000000001.wal. A segment is preallocated with fallocate
// to the segment size (64 MiB by default) under a temporary name before it is
// renamed into place and used, so a full disk is reported by append as a
// clean error that changes nothing, never as SIGBUS or a half-written record.
// The next segment is preallocated in the background ("the spare") once the
// active one is half full. A record larger than the segment size gets a
// segment of its own, exactly as large as the record.
//
// Writes use pwrite into the preallocated space; reads go through one
// read-only shared mapping (PROT_READ, MAP_SHARED) per segment, which sees
// the writes through the page cache. Readers get payloads that point into
// the mapping, valid only during their callback.
//
// Under every_write the committer writes zeros over preallocated space a
// little ahead of the data (walZeroAhead at a time): on ext4 and xfs,
// fallocate leaves "unwritten" extents, and a write into one makes the next
// fdatasync commit a journal transaction as well as the data. Writing into
// zeroed space keeps an fdatasync down to the data pages (measured here: 30
// KB pwrite+fdatasync 0.12 ms into zeroed space, 0.29 ms into unwritten
// extents, 0.74 ms through a writable mapping). Zeroing a whole segment at
// once, even in the background, stalls the committer's fdatasyncs behind a
// 64 MiB flush, so it is done in small steps by the committer itself.
//
// # On-disk record format (little endian, 8-byte aligned)
//
//	off  size  field
//	  0     4  payload length (at most walMaxPayload)
//	  4     1  type
//	  5     3  reserved, zero
//	  8     8  LSN
//	 16     4  CRC32C (Castagnoli) of bytes 0..15 (length, type, reserved,
//	           LSN) followed by the payload
//	 20     4  reserved, zero
//	 24     n  payload, then zero padding to a multiple of 8
//
// A header of 24 zero bytes marks the end of data (preallocated space reads
// as zeros); everything after it must be zero too. There is no file header.
//
// # Durability
//
// append encodes the record and returns its LSN without waiting. A commit
// writes and fdatasyncs everything appended since the previous one (group
// commit), then publishes durableLSN and wakes waiters. Commits run one at
// a time (syncMu), either on the committer goroutine, which append wakes,
// or on a writer that holds a lease (lease, lead): a lone request's reader
// commits its own record instead of waking the committer and waiting to
// be woken in turn. The fsync policy decides when commits happen and what
// "durable" means:
//
//   - every_write (default): append only encodes into the active segment's
//     pending buffer; the committer writes the whole buffer with one pwrite
//     and syncs it, as soon as anything is pending. durableLSN is the last
//     synced LSN. Nothing is acknowledged before that, so a record that
//     dies with the process in the buffer was never promised to anyone.
//   - every_n N: sync after every N appends; every_ms N: a timer syncs every N
//     ms when anything is unsynced; never: sync only at close (or sync()).
//     Under these three, records are acknowledged without waiting: append
//     pwrites each record at once (so a process crash keeps it in the page
//     cache), durableLSN advances on append, and walStats.SyncedLSN tells
//     what is really synced.
//
// A segment is complete on disk before the next one gets its name: under
// every_write the committer writes and fdatasyncs the old segment and only
// then renames the new one (which until then keeps its temporary name, and
// is deleted as a temporary file if the process dies first); under the other
// policies, rotation fdatasyncs the old segment and renames the new one at
// once. So a named segment that is not the last is always complete. The
// directory is fsynced after every create, rename and delete before
// anything that depends on it is published.
//
// A failed fdatasync (or pwrite) is sticky and fatal: every pending and later
// append, waitDurable and sync returns the error, wrapped so that
// errors.Is(err, walErrIO) holds, and the sync is never retried. A failed
// preallocation (ENOSPC) is also a walErrIO error but not sticky: nothing was
// written and a later append may succeed.
//
// # Recovery
//
// openWAL scans every segment in order and verifies each record (sane length
// within the segment, LSN = previous + 1, CRC). A torn tail of the LAST
// segment is cut off and logged: an incomplete or garbage suffix after the
// last complete record with no intact record beyond it, or intact records
// beyond a lost sector (512 bytes reading as zeros: a write the disk never
// got, so everything written after it was never synced either). Damage in
// the last segment that an intact record with a higher LSN follows is
// corruption of data that was durable, and so is damage in an earlier
// (sealed) segment, an empty sealed segment, or a gap between segments:
// openWAL then fails with an error naming the segment file, byte offset and
// LSN, and changes nothing. verifyWAL reports the same without changing
// anything and repairWAL truncates at the first problem on purpose,
// counting the intact records it drops.
//
// # Caveats
//
//   - Under every_n, every_ms and never, sealing a segment costs one
//     fdatasync on the append path (once per segment).
//   - read delivers only records at or below durableLSN as it was when the
//     call started.
//   - Lock order: syncMu before mu. mu is never held across fdatasync of the
//     active segment, nor across a read callback.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	walHeaderSize = 24
	// walMaxPayload bounds one record: a 16 MiB frame's worth plus room for
	// the record's own fields. The server refuses a write whose record
	// would be larger with BAD_REQUEST before appending it, so what is
	// logged can always be sent back in a frame (WAL_READ, watch events).
	walMaxPayload         = 16<<20 + 1<<20
	walDefaultSegmentSize = 64 << 20
	walMinSegmentSize     = 1 << 10
	walIndexStride        = 64 // one in-memory offset per this many records
	walSegmentSuffix      = ".wal"
	walSegmentNameLen     = 20 + len(walSegmentSuffix)
	walTempSuffix         = ".wal.tmp" // segments not yet named: "spare-N.wal.tmp", "new-N.wal.tmp"
	walZeroAhead          = 1 << 20    // the committer keeps this much zeroed space ahead of the data
	walPendInitial        = 64 << 10   // a new pending buffer's capacity
	walLockName           = "LOCK"     // flocked while a wal or repairWAL has the directory
)

// Errors. Every I/O failure is wrapped around walErrIO so the caller can map
// it to WAL_IO_ERROR with errors.Is.
var (
	walErrIO       = errors.New("wal: I/O error")
	walErrClosed   = errors.New("wal: closed")
	walErrCorrupt  = errors.New("wal: corrupt")
	walErrTooLarge = errors.New("wal: record too large")
)

var walCRCTable = crc32.MakeTable(crc32.Castagnoli)

func walIOErr(op string, err error) error { return fmt.Errorf("%w: %s: %w", walErrIO, op, err) }

type fsyncPolicy struct {
	Kind string // "every_write", "every_n", "every_ms", "never"
	N    int    // for every_n (count) and every_ms (milliseconds)
}

type walOptions struct {
	SegmentSize int64        // bytes; 0 = 64 MiB
	Policy      fsyncPolicy  // zero value = every_write
	StartLSN    uint64       // the next LSN to use when the directory holds no record; 0 = 1
	Logger      *slog.Logger // nil = discard
	// OnSync observes every group commit: how long the fdatasync took and
	// how many records it made durable (metrics, slow-fsync logging).
	OnSync func(d time.Duration, records int)
	// OnFail is told, once and on its own goroutine, when the log fails
	// for good (a failed fdatasync or pwrite), under every fsync policy:
	// under the policies that acknowledge before the sync nothing waits on
	// the commit, so without it the failure would only show as refused
	// writes while reads served state that may not be on disk.
	OnFail func(err error)
	// Admit, when set, is asked before a segment of size bytes is
	// preallocated (a rotation or the spare) and refuses it with an error
	// (the disk quota, disk.go). walBytes is what the log's segment files
	// take now, the spare included; overdraft is true for appendOverdraft.
	Admit func(walBytes, size int64, overdraft bool) error
	// NoSpace is told, under mu (it must not block), when preallocating a
	// segment failed with ENOSPC.
	NoSpace func()
}

type walRecord struct {
	LSN     uint64
	Type    uint8
	Payload []byte // points into the mapping: valid only during the callback
	Raw     []byte // the whole on-disk record (header with CRC, payload, padding), likewise
}

type walStats struct {
	EntryCount, SegmentCount                       uint64 // records and segments currently retained
	TotalSizeBytes                                 int64  // bytes of record data retained (headers and padding included)
	FirstLSN, LastLSN, DurableLSN                  uint64
	SyncedLSN                                      uint64 // last LSN known to be on disk (= DurableLSN under every_write)
	AllocatedBytes                                 int64  // bytes of segment files, preallocated space and the spare included
	BytesRead, BytesWritten, Reads, Writes, Fsyncs uint64 // process-lifetime I/O counters
}

// walSegment is one segment file. Fields other than refs/removed are written
// only under wal.mu (or before the segment is shared).
type walSegment struct {
	first   uint64 // LSN of the first record (the file name)
	last    uint64 // LSN of the last record; first-1 when empty
	path    string
	f       *os.File
	data    []byte  // read-only mapping of the whole file
	size    int64   // file size, all preallocated
	end     int64   // bytes of record data: where the next record goes
	zeroed  int64   // prefix of the file that holds data or written zeros
	pend    []byte  // every_write: records appended but not yet written, [end-len(pend), end)
	named   bool    // renamed to walSegmentName(first); false while temporary
	over    bool    // admitted only by an overdraft: other appends ask Admit first
	dirty   bool    // written since its last fdatasync
	idx     []int64 // idx[k] is the offset of record first+k*walIndexStride
	refs    int     // readers and the committer using data or f (under wal.mu)
	removed bool    // no longer in wal.segs; released when refs drops to 0
}

type wal struct {
	dir  string
	opts walOptions
	log  *slog.Logger
	lock *os.File // holds the flock on walLockName

	// Fault seams, replaced by tests right after openWAL (or later, under
	// mu: the committer reads them under mu).
	fdatasync func(f *os.File) error
	fallocate func(f *os.File, size int64) error
	syncDir   func(dir string) error
	writeAt   func(f *os.File, b []byte, off int64) (int, error)

	syncMu sync.Mutex // serializes commit; taken before mu
	mu     sync.Mutex
	segs   []*walSegment // in LSN order; the last one is active
	next   uint64        // LSN of the next append
	synced uint64        // last LSN on disk
	err    error         // sticky fatal error
	closed bool          // no more appends
	done   bool          // close finished: mappings released
	// dirDirty is set when a rename made a segment visible; the committer
	// fsyncs the directory before publishing anything that depends on it.
	dirDirty  bool
	sinceKick int // appends since the last kick (every_n)
	// holds counts open groups (hold/release): commit waits on holdDone
	// until none is open, so a group's records share one sync.
	holds       int
	holdDone    *sync.Cond
	notify      chan struct{}
	notifyTaken bool
	buf         []byte
	// pendFree holds drained pending buffers for the next rounds: appends
	// fill one while a commit writes another, and a replica's burst of
	// appends can span several commits.
	pendFree    [][]byte
	tmpSeq      int         // numbers temporary segment names
	deferWrites bool        // every_write: the committer writes pending records
	spare       *walSegment // preallocated next segment, not yet named
	spareBusy   bool
	spareFailed bool

	durable atomic.Uint64 // published LSN; written under mu

	// Leader commits (every_write). A goroutine that will wait for its own
	// record holds a lease from before its append until it has led the
	// commit (lead): while any lease is held, append does not wake the
	// committer, so a lone writer syncs its record itself instead of
	// handing it to the committer and waiting to be woken. An append that
	// skipped the kick sets unkicked; the last unlease kicks the committer
	// if such a record is still not durable.
	leases       atomic.Int32
	unkicked     atomic.Bool
	lastAppended atomic.Uint64 // LSN of the newest append; written under mu

	kick       chan struct{}
	quit       chan struct{}
	loopDone   chan struct{}
	background sync.WaitGroup

	bytesRead, bytesWritten, reads, writes, fsyncs atomic.Uint64
}

// walRecordSize is the aligned on-disk size of a record with n payload bytes.
func walRecordSize(n int) int64 { return (walHeaderSize + int64(n) + 7) &^ 7 }

// walSegmentName is the file name of the segment whose first record is lsn.
func walSegmentName(lsn uint64) string { return fmt.Sprintf("%020d%s", lsn, walSegmentSuffix) }

// walParseSegmentName returns the first LSN named by a segment file name.
func walParseSegmentName(name string) (uint64, bool) {
	if len(name) != walSegmentNameLen || !strings.HasSuffix(name, walSegmentSuffix) {
		return 0, false
	}
	digits := name[:20]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	lsn, err := strconv.ParseUint(digits, 10, 64)
	return lsn, err == nil
}

type walSegmentFile struct {
	name  string
	first uint64
}

// walListSegments lists the segment files of dir in LSN order; other files
// are ignored.
func walListSegments(dir string) ([]walSegmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, walIOErr("list segments", err)
	}
	var out []walSegmentFile
	for _, e := range entries {
		if first, ok := walParseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, walSegmentFile{name: e.Name(), first: first})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	return out, nil
}

// walEncode encodes the framed record into buf[:0] and returns it.
func walEncode(buf []byte, typ uint8, lsn uint64, payload []byte) []byte {
	return walAppendRecord(buf[:0], typ, lsn, payload)
}

// walAppendRecord appends the framed record to dst.
func walAppendRecord(dst []byte, typ uint8, lsn uint64, payload []byte) []byte {
	size := int(walRecordSize(len(payload)))
	at := len(dst)
	dst = slices.Grow(dst, size)[:at+size]
	buf := dst[at:]
	h := buf[:walHeaderSize]
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	h[4], h[5], h[6], h[7] = typ, 0, 0, 0
	binary.LittleEndian.PutUint64(h[8:], lsn)
	binary.LittleEndian.PutUint32(h[20:], 0)
	n := copy(buf[walHeaderSize:], payload)
	clear(buf[walHeaderSize+n:])
	crc := crc32.Update(crc32.Checksum(h[:16], walCRCTable), walCRCTable, payload)
	binary.LittleEndian.PutUint32(h[16:], crc)
	return dst
}

// openWAL opens (creating if needed) the log in dir and recovers it.
func openWAL(dir string, opts walOptions) (*wal, error) {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = walDefaultSegmentSize
	}
	if opts.SegmentSize < walMinSegmentSize {
		return nil, fmt.Errorf("wal: segment size %d is below the minimum %d", opts.SegmentSize, walMinSegmentSize)
	}
	opts.SegmentSize = (opts.SegmentSize + 7) &^ 7
	switch opts.Policy.Kind {
	case "":
		opts.Policy.Kind = "every_write"
	case "every_write", "never":
	case "every_n", "every_ms":
		if opts.Policy.N < 1 {
			return nil, fmt.Errorf("wal: fsync policy %s needs N >= 1, got %d", opts.Policy.Kind, opts.Policy.N)
		}
	default:
		return nil, fmt.Errorf("wal: unknown fsync policy %q", opts.Policy.Kind)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &wal{
		dir:       dir,
		opts:      opts,
		log:       logger,
		fdatasync: syncData,
		fallocate: preallocate,
		syncDir:   syncDir,
		writeAt:   writeAt,
		// Deferred writes need the committer to run as soon as anything is
		// pending, which only every_write promises.
		deferWrites: opts.Policy.Kind == "" || opts.Policy.Kind == "every_write",
		notify:      make(chan struct{}),
		kick:        make(chan struct{}, 1),
		quit:        make(chan struct{}),
		loopDone:    make(chan struct{}),
	}
	w.holdDone = sync.NewCond(&w.mu)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, walIOErr("create directory", err)
	}
	lock, err := walLock(dir)
	if err != nil {
		return nil, err
	}
	w.lock = lock
	if err := w.recover(); err != nil {
		for _, s := range w.segs {
			w.segRelease(s)
		}
		lock.Close()
		return nil, err
	}
	go w.commitLoop()
	w.mu.Lock()
	w.segMaybeSpare()
	w.mu.Unlock()
	return w, nil
}

// failLocked makes err the sticky fatal error and wakes every waiter (under mu).
func (w *wal) failLocked(op string, err error) {
	if w.err != nil {
		return
	}
	w.err = walIOErr(op, err)
	w.log.Error("wal: fatal I/O error, no further writes are accepted", "op", op, "err", err)
	w.notifyTaken = true
	w.wakeLocked()
	if w.opts.OnFail != nil {
		go w.opts.OnFail(w.err)
	}
}

// wakeLocked closes the notify channel if anyone holds it (under mu). Once
// the log has failed or closed, the channel stays closed.
func (w *wal) wakeLocked() {
	if w.notifyTaken && (w.err != nil || w.done) {
		close(w.notify)
		w.notifyTaken = false
		return
	}
	if w.notifyTaken {
		close(w.notify)
		w.notify = make(chan struct{})
		w.notifyTaken = false
	}
}

// publishLocked advances durableLSN and wakes waiters (under mu).
func (w *wal) publishLocked(lsn uint64) {
	if lsn > w.durable.Load() {
		if diskTrace != nil {
			diskTrace(diskOp{kind: diskAck, lsn: lsn})
		}
		w.durable.Store(lsn)
		w.wakeLocked()
	}
}

func (w *wal) kickCommitter() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// append writes a record and returns its LSN. It does not wait for the sync.
func (w *wal) append(typ uint8, payload []byte) (uint64, error) {
	return w.appendWith(typ, payload, false)
}

// appendOverdraft is append for a record that may take a segment past
// what Admit allows others (a delete, which frees space at compaction).
func (w *wal) appendOverdraft(typ uint8, payload []byte) (uint64, error) {
	return w.appendWith(typ, payload, true)
}

func (w *wal) appendWith(typ uint8, payload []byte, overdraft bool) (uint64, error) {
	if len(payload) > walMaxPayload {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", walErrTooLarge, len(payload), walMaxPayload)
	}
	size := walRecordSize(len(payload))
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, walErrClosed
	}
	act := w.segs[len(w.segs)-1]
	if act.over && !overdraft {
		// Space past the quota is the overdraft's: others may use it
		// once there is room again.
		if err := w.admitLocked(0, false); err != nil {
			return 0, walIOErr("append", err)
		}
		act.over = false
	}
	if act.end+size > act.size {
		if err := w.segRotate(size, overdraft); err != nil {
			return 0, err
		}
		act = w.segs[len(w.segs)-1]
	}
	lsn := w.next
	if diskTrace != nil {
		diskTrace(diskOp{kind: diskAppend, lsn: lsn, typ: typ, data: append([]byte(nil), payload...)})
	}
	if w.deferWrites {
		if act.pend == nil {
			if n := len(w.pendFree); n > 0 {
				act.pend, w.pendFree = w.pendFree[n-1], w.pendFree[:n-1]
			} else {
				act.pend = make([]byte, 0, walPendInitial)
			}
		}
		act.pend = walAppendRecord(act.pend, typ, lsn, payload)
	} else {
		buf := walEncode(w.buf, typ, lsn, payload)
		if _, err := w.writeAt(act.f, buf, act.end); err != nil {
			w.failLocked("write "+filepath.Base(act.path), err)
			return 0, w.err
		}
		if cap(buf) <= 1<<20 {
			w.buf = buf
		}
		act.dirty = true
	}
	if (lsn-act.first)%walIndexStride == 0 {
		act.idx = append(act.idx, act.end)
	}
	act.end += size
	act.last = lsn
	w.next++
	w.writes.Add(1)
	w.bytesWritten.Add(uint64(size))
	w.lastAppended.Store(lsn)
	switch w.opts.Policy.Kind {
	case "every_write":
		// A lease holder will commit this record soon. The order (store
		// unkicked, then read leases; unlease: drop the lease, then swap
		// unkicked) makes one of the two see the other; the read that
		// decides must come after the store.
		leased := w.leases.Load() > 0
		if walLeaseSeen != nil {
			walLeaseSeen()
		}
		if !leased {
			w.kickCommitter()
		} else {
			w.unkicked.Store(true)
			if w.leases.Load() == 0 {
				w.kickCommitter()
			}
		}
	case "every_n":
		w.publishLocked(lsn)
		if w.sinceKick++; w.sinceKick >= w.opts.Policy.N {
			w.sinceKick = 0
			w.kickCommitter()
		}
	default: // every_ms (the timer syncs), never
		w.publishLocked(lsn)
	}
	w.segMaybeSpare()
	return lsn, nil
}

// commitLoop is the committer goroutine.
func (w *wal) commitLoop() {
	defer close(w.loopDone)
	var tick <-chan time.Time
	if w.opts.Policy.Kind == "every_ms" {
		t := time.NewTicker(time.Duration(w.opts.Policy.N) * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-w.kick:
		case <-tick:
		case <-w.quit:
			return
		}
		if w.deferWrites {
			w.gather()
		}
		_ = w.commit() // a failure is sticky and reported to every caller
	}
}

// walGatherMax bounds how long the committer lets appends accumulate.
const walGatherMax = 500 * time.Microsecond

// gather lets the goroutines that are ready to run have their turn before
// a commit, for as long as they keep appending (up to walGatherMax). Under
// load that turns many small commits, each costing an fdatasync plus a
// wakeup and a socket write per connection, into fewer large ones; on an
// idle server the first round appends nothing and the commit starts at once.
func (w *wal) gather() {
	start := time.Now()
	prev := w.writes.Load()
	for range 64 {
		runtime.Gosched()
		cur := w.writes.Load()
		if cur == prev || time.Since(start) > walGatherMax {
			return
		}
		prev = cur
	}
}

// commitJob is one segment's share of a commit round.
type commitJob struct {
	s       *walSegment
	buf     []byte // pending records to write at off
	off     int64
	install string // path to rename s to before writing ("" if named)
	tmp     string // s's temporary path
	zeroAt  int64  // write zeros over [zeroAt, zero) as well
	zero    int64
	name    string // file name, for errors
	renamed bool
}

// commit writes everything appended so far (every_write), syncs it with one
// fdatasync per segment touched (one, except across a rotation), plus a
// directory fsync after a rename, and publishes it.
func (w *wal) commit() error {
	w.syncMu.Lock()
	defer w.unlockSync()
	return w.commitLocked()
}

// unlockSync releases syncMu, then wakes durability waiters. A follower in
// lead that found syncMu held waits to be woken, then tries to lead: the
// wake must come after the unlock, or a follower that took its channel
// after the commit published, and tried the lock before it was released,
// would wait for ever (its own record is nobody else's to commit: its
// lease kept the committer asleep).
func (w *wal) unlockSync() {
	w.syncMu.Unlock()
	w.mu.Lock()
	w.wakeLocked()
	w.mu.Unlock()
}

// commitLocked is commit with syncMu held.
func (w *wal) commitLocked() error {
	w.mu.Lock()
	for w.holds > 0 {
		w.holdDone.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	target := w.next - 1
	prevSynced := w.synced
	// Only the newest segments can have anything to write, sync or name.
	first := len(w.segs) - 1
	for first > 0 {
		if p := w.segs[first-1]; len(p.pend) == 0 && !p.dirty && p.named {
			break
		}
		first--
	}
	var jobs []commitJob
	for _, s := range w.segs[first:] {
		if len(s.pend) == 0 && !s.dirty && s.named {
			continue
		}
		j := commitJob{s: s, buf: s.pend, off: s.end - int64(len(s.pend)), name: filepath.Base(s.path)}
		s.pend = nil
		s.dirty = false
		if !s.named {
			j.tmp, j.install = s.path, filepath.Join(w.dir, walSegmentName(s.first))
			j.name = filepath.Base(j.install)
		}
		if w.deferWrites && s.zeroed < s.size && s.zeroed < s.end+walZeroAhead/2 {
			// Only the committer writes under every_write, so zeros
			// ahead of the data cannot land on a record.
			j.zeroAt = max(s.zeroed, s.end)
			j.zero = min(s.size, j.zeroAt+walZeroAhead)
			s.zeroed = j.zero
		}
		s.refs++
		jobs = append(jobs, j)
	}
	dirty := w.dirDirty
	w.dirDirty = false
	fdatasync, syncDir, writeAt := w.fdatasync, w.syncDir, w.writeAt
	w.mu.Unlock()
	if len(jobs) == 0 && !dirty {
		return nil
	}

	// In LSN order: a segment is written and synced before the next one is
	// named, so a named segment that is not the last is complete on disk.
	var err error
	op := ""
	renamed := false
	for i := range jobs {
		j := &jobs[i]
		if j.install != "" {
			if renamed {
				// Two segments named in one round: the first name must
				// be durable before the second, or a crash could leave a
				// gap before a named segment.
				if err = syncDir(w.dir); err != nil {
					op = "fsync directory"
					break
				}
				w.fsyncs.Add(1)
			}
			if err = renameFile(j.tmp, j.install); err != nil {
				op = "rename segment"
				break
			}
			j.renamed, dirty, renamed = true, true, true
		}
		if len(j.buf) > 0 {
			if _, err = writeAt(j.s.f, j.buf, j.off); err != nil {
				op = "write " + j.name
				break
			}
		}
		for off := j.zeroAt; off < j.zero && err == nil; off += int64(len(walZeros)) {
			_, err = writeAt(j.s.f, walZeros[:min(j.zero-off, int64(len(walZeros)))], off)
		}
		if err != nil {
			op = "write zeros " + j.name
			break
		}
		start := time.Now()
		if err = fdatasync(j.s.f); err != nil {
			op = "fdatasync " + j.name
			break
		}
		w.fsyncs.Add(1)
		if w.opts.OnSync != nil && j.s == jobs[len(jobs)-1].s {
			w.opts.OnSync(time.Since(start), int(target-prevSynced))
		}
	}
	if err == nil && dirty {
		op = "fsync directory"
		err = syncDir(w.dir)
		w.fsyncs.Add(1)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	for _, j := range jobs {
		if j.renamed {
			j.s.path, j.s.named = j.install, true
		}
		if cap(j.buf) > 0 && cap(j.buf) <= 4<<20 && len(w.pendFree) < 4 {
			w.pendFree = append(w.pendFree, j.buf[:0])
		}
		w.segUnref(j.s)
	}
	if err != nil {
		w.failLocked(op, err)
		return w.err
	}
	if target > w.synced {
		w.synced = target
	}
	if w.opts.Policy.Kind == "every_write" {
		w.publishLocked(target)
	}
	return nil
}

// walLeaseSeen, when set (tests only), runs in append right after it has
// read the lease count: a lease that begins there must not hide the record.
var walLeaseSeen func()

// lease announces that the caller is about to append a record and then
// call lead for it (every_write): until unlease, appends leave the
// committer asleep.
func (w *wal) lease() { w.leases.Add(1) }

// unlease ends a lease. If an append skipped the committer meanwhile and
// its record is still not durable, the committer takes it.
func (w *wal) unlease() {
	w.leases.Add(-1)
	if w.unkicked.Swap(false) && w.durable.Load() < w.lastAppended.Load() {
		w.kickCommitter()
	}
}

// lead makes lsn durable on the calling goroutine: it runs the commit
// itself when none is running (leader), or waits for the running one and
// leads the next if that one did not cover lsn (follower). One writer
// alone pays one pwrite and one fdatasync and no goroutine hand-offs; many
// writers form a group per fdatasync, each group being what was appended
// while the previous sync ran.
func (w *wal) lead(lsn uint64) error {
	for lsn > w.durable.Load() {
		// Take the channel before TryLock: the running commit closes it.
		w.mu.Lock()
		err := w.err
		if err == nil && w.done {
			err = walErrClosed
		}
		if err == nil && lsn >= w.next {
			err = fmt.Errorf("wal: lead(%d): not appended yet (next LSN %d)", lsn, w.next)
		}
		ch := w.notify
		if w.err == nil && !w.done {
			w.notifyTaken = true
		}
		w.mu.Unlock()
		switch {
		case lsn <= w.durable.Load():
			return nil
		case err != nil:
			return err
		case w.syncMu.TryLock():
			err := w.commitLocked()
			w.unlockSync()
			if err != nil {
				return err
			}
		default:
			<-ch
		}
	}
	return nil
}

// hold opens a group of appends that must reach the disk together: no
// commit starts until release, so a BATCH costs one sync, whatever the
// committer was doing when it began. A group lasts microseconds (appends
// under the state lock); it must never wait for durability.
func (w *wal) hold() {
	w.mu.Lock()
	w.holds++
	w.mu.Unlock()
}

// release closes a group opened by hold and lets the committer run.
func (w *wal) release() {
	w.mu.Lock()
	if w.holds--; w.holds == 0 {
		w.holdDone.Broadcast()
	}
	w.mu.Unlock()
}

// sync forces a sync of everything appended so far.
func (w *wal) sync() error { return w.commit() }

func (w *wal) nextLSN() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next
}

func (w *wal) lastLSN() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next - 1
}

func (w *wal) durableLSN() uint64 { return w.durable.Load() }

// firstLSN is the oldest retained record (nextLSN when the log is empty).
func (w *wal) firstLSN() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.segs[0].first
}

// waitDurable blocks until durableLSN >= lsn or the log fails.
func (w *wal) waitDurable(lsn uint64) error {
	if lsn <= w.durable.Load() {
		return nil // the common case for a writer catching up: no lock
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		switch {
		case w.err != nil:
			return w.err
		case lsn <= w.durable.Load():
			return nil
		case w.done:
			return walErrClosed
		case lsn >= w.next:
			return fmt.Errorf("wal: waitDurable(%d): not appended yet (next LSN %d)", lsn, w.next)
		}
		ch := w.notify
		w.notifyTaken = true
		w.mu.Unlock()
		<-ch
		w.mu.Lock()
	}
}

// durableNotify returns a channel that is closed the next time durableLSN
// advances. Take the channel first, then read durableLSN, so no advance is
// missed. Once the log has failed or closed, the channel is already closed:
// a watcher woken without progress should check failure().
func (w *wal) durableNotify() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil && !w.done {
		w.notifyTaken = true
	}
	return w.notify
}

// failure returns the sticky I/O error, walErrClosed after close, or nil.
func (w *wal) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.done {
		return walErrClosed
	}
	return nil
}

func (w *wal) stats() walStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := walStats{
		SegmentCount: uint64(len(w.segs)),
		FirstLSN:     w.segs[0].first,
		LastLSN:      w.next - 1,
		DurableLSN:   w.durable.Load(),
		SyncedLSN:    w.synced,
		BytesRead:    w.bytesRead.Load(),
		BytesWritten: w.bytesWritten.Load(),
		Reads:        w.reads.Load(),
		Writes:       w.writes.Load(),
		Fsyncs:       w.fsyncs.Load(),
	}
	st.EntryCount = w.next - st.FirstLSN
	st.AllocatedBytes = w.allocatedLocked()
	for _, s := range w.segs {
		st.TotalSizeBytes += s.end
	}
	return st
}

// close does a final sync, stops the committer, and releases every mapping
// and file. It returns the sticky error if the log had failed.
func (w *wal) close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.quit)
	<-w.loopDone
	w.background.Wait()
	err := w.commit()

	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.publishLocked(w.next - 1)
	}
	w.done = true
	if w.err == nil { // after a failure the channel is closed already
		w.notifyTaken = true
		w.wakeLocked()
	}
	for _, s := range w.segs {
		w.segRetire(s)
	}
	if w.spare != nil {
		w.segRelease(w.spare)
		removeFile(w.spare.path)
		w.spare = nil
	}
	w.lock.Close()
	return err
}
