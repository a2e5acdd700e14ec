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
// append encodes the record and returns its LSN without waiting. One
// committer goroutine writes and fdatasyncs everything appended since its
// last round (group commit), then publishes durableLSN and wakes waiters.
// The fsync policy decides when that happens and what "durable" means:
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
// within the segment, LSN = previous + 1, CRC). A torn or corrupt tail of the
// LAST segment, and any non-zero bytes after its end of data, are cut off and
// logged. Damage in an earlier (sealed) segment, an empty sealed segment, or a
// gap between segments makes openWAL fail with an error naming the segment
// file and byte offset; verifyWAL reports the same without changing anything
// and repairWAL truncates at the first problem on purpose.
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
	"bytes"
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
	walHeaderSize         = 24
	walMaxPayload         = 16<<20 + 1<<20 // 16 MiB frames plus room for the record's own fields
	walDefaultSegmentSize = 64 << 20
	walMinSegmentSize     = 1 << 10
	walIndexStride        = 64 // one in-memory offset per this many records
	walSegmentSuffix      = ".wal"
	walSegmentNameLen     = 20 + len(walSegmentSuffix)
	walTempSuffix         = ".wal.tmp" // segments not yet named: "spare-N.wal.tmp", "new-N.wal.tmp"
	walZeroAhead          = 1 << 20    // the committer keeps this much zeroed space ahead of the data
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
}

type walRecord struct {
	LSN     uint64
	Type    uint8
	Payload []byte // points into the mapping: valid only during the callback
}

type walStats struct {
	EntryCount, SegmentCount                       uint64 // records and segments currently retained
	TotalSizeBytes                                 int64  // bytes of record data retained (headers and padding included)
	FirstLSN, LastLSN, DurableLSN                  uint64
	SyncedLSN                                      uint64 // last LSN known to be on disk (= DurableLSN under every_write)
	BytesRead, BytesWritten, Reads, Writes, Fsyncs uint64 // process-lifetime I/O counters
}

// walSegment is one segment file. Fields other than refs/removed are written
// only under wal.mu (or before the segment is shared).
type walSegment struct {
	first   uint64 // LSN of the first record (the file name)
	last    uint64 // LSN of the last record; first-1 when empty
	path    string
	f       *os.File
	fd      int
	data    []byte  // read-only mapping of the whole file
	size    int64   // file size, all preallocated
	end     int64   // bytes of record data: where the next record goes
	zeroed  int64   // prefix of the file that holds data or written zeros
	pend    []byte  // every_write: records appended but not yet written, [end-len(pend), end)
	named   bool    // renamed to walSegmentName(first); false while temporary
	dirty   bool    // written since its last fdatasync
	idx     []int64 // idx[k] is the offset of record first+k*walIndexStride
	refs    int     // readers and the committer using data or fd (under wal.mu)
	removed bool    // no longer in wal.segs; released when refs drops to 0
}

type wal struct {
	dir  string
	opts walOptions
	log  *slog.Logger
	lock *os.File // holds the flock on walLockName

	// Fault seams, replaced by tests right after openWAL (or later, under
	// mu: the committer reads them under mu).
	fdatasync func(fd int) error
	fallocate func(fd int, size int64) error
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
	dirDirty    bool
	sinceKick   int // appends since the last kick (every_n)
	notify      chan struct{}
	notifyTaken bool
	buf         []byte
	pendFree    []byte      // a drained pending buffer, reused by the next segment round
	tmpSeq      int         // numbers temporary segment names
	deferWrites bool        // every_write: the committer writes pending records
	spare       *walSegment // preallocated next segment, not yet named
	spareBusy   bool
	spareFailed bool

	durable atomic.Uint64 // published LSN; written under mu

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

var walZeros [64 << 10]byte

// walFirstNonZero returns the index of the first non-zero byte of b, or -1.
func walFirstNonZero(b []byte) int {
	for base := 0; base < len(b); base += len(walZeros) {
		chunk := b[base:min(base+len(walZeros), len(b))]
		if bytes.Equal(chunk, walZeros[:len(chunk)]) {
			continue
		}
		for i, c := range chunk {
			if c != 0 {
				return base + i
			}
		}
	}
	return -1
}

// segScanResult is what segScan found in one segment.
type segScanResult struct {
	records uint64
	last    uint64  // LSN of the last good record (first-1 when none)
	end     int64   // offset just past the last good record: where to cut
	idx     []int64 // sparse index, see walSegment.idx
	bad     bool
	badOff  int64 // offset where the problem was seen
	reason  string
}

// segNonZero returns the offset of the first non-zero byte of data (the
// mapping of fd) at or after from, or -1. It reads only the regions the file
// system reports as data, so the untouched preallocated part of a segment
// costs no page faults.
func segNonZero(fd int, data []byte, from int64) int64 {
	n := int64(len(data))
	for from < n {
		start, end, more, err := mmapDataRegion(fd, from)
		if err != nil {
			start, end, more = from, n, true
		}
		if !more || start >= n {
			return -1
		}
		start, end = max(start, from), min(end, n)
		if i := walFirstNonZero(data[start:end]); i >= 0 {
			return start + int64(i)
		}
		from = end
	}
	return -1
}

// segScan verifies the records of one segment (mapped as data from fd),
// stopping at the end marker or the first problem. Everything after the end
// marker must be zero.
func segScan(fd int, data []byte, first uint64) segScanResult {
	r := segScanResult{last: first - 1}
	fail := func(off int64, format string, args ...any) segScanResult {
		r.bad, r.badOff, r.reason = true, off, fmt.Sprintf(format, args...)
		return r
	}
	n := int64(len(data))
	off := int64(0)
	for {
		if n-off < walHeaderSize || walFirstNonZero(data[off:off+walHeaderSize]) < 0 {
			if i := segNonZero(fd, data, off); i >= 0 {
				return fail(i, "non-zero bytes after the end of data")
			}
			return r
		}
		h := data[off : off+walHeaderSize]
		length := binary.LittleEndian.Uint32(h[0:])
		lsn := binary.LittleEndian.Uint64(h[8:])
		if h[5] != 0 || h[6] != 0 || h[7] != 0 || binary.LittleEndian.Uint32(h[20:]) != 0 {
			return fail(off, "bad record header (reserved bytes set)")
		}
		if length > walMaxPayload {
			return fail(off, "record length %d over the limit %d", length, walMaxPayload)
		}
		size := walRecordSize(int(length))
		if size > n-off {
			return fail(off, "record of %d bytes runs past the end of the segment", size)
		}
		if lsn != r.last+1 {
			return fail(off, "record has LSN %d, want %d", lsn, r.last+1)
		}
		payload := data[off+walHeaderSize : off+walHeaderSize+int64(length)]
		crc := crc32.Update(crc32.Checksum(h[:16], walCRCTable), walCRCTable, payload)
		if crc != binary.LittleEndian.Uint32(h[16:]) {
			return fail(off, "checksum mismatch in record %d", lsn)
		}
		if r.records%walIndexStride == 0 {
			r.idx = append(r.idx, off)
		}
		r.records++
		r.last = lsn
		off += size
		r.end = off
	}
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
		fdatasync: mmapFdatasync,
		fallocate: mmapFallocate,
		syncDir:   mmapSyncDir,
		writeAt:   func(f *os.File, b []byte, off int64) (int, error) { return f.WriteAt(b, off) },
		// Deferred writes need the committer to run as soon as anything is
		// pending, which only every_write promises.
		deferWrites: opts.Policy.Kind == "" || opts.Policy.Kind == "every_write",
		notify:      make(chan struct{}),
		kick:        make(chan struct{}, 1),
		quit:        make(chan struct{}),
		loopDone:    make(chan struct{}),
	}
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

// recover scans the directory, cuts a torn tail and sets up the active segment.
func (w *wal) recover() error {
	dirChanged := false
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return walIOErr("list segments", err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), walTempSuffix) {
			if err := os.Remove(filepath.Join(w.dir, e.Name())); err != nil {
				return walIOErr("remove temporary file", err)
			}
			dirChanged = true
		}
	}
	files, err := walListSegments(w.dir)
	if err != nil {
		return err
	}
	for i, sf := range files {
		isLast := i == len(files)-1
		if sf.first == 0 {
			return fmt.Errorf("%w: segment %s: offset 0: LSN 0 is not valid", walErrCorrupt, sf.name)
		}
		if i > 0 {
			if prev := w.segs[i-1]; sf.first != prev.last+1 {
				return fmt.Errorf("%w: segment %s: offset 0: starts at LSN %d but %s ends at LSN %d (missing segment?)",
					walErrCorrupt, sf.name, sf.first, filepath.Base(prev.path), prev.last)
			}
		}
		s, err := segOpen(filepath.Join(w.dir, sf.name), sf.first, os.O_RDWR)
		if err != nil {
			return err
		}
		w.segs = append(w.segs, s)
		r := segScan(s.fd, s.data, s.first)
		if r.bad && !isLast {
			return fmt.Errorf("%w: segment %s: offset %d: %s", walErrCorrupt, sf.name, r.badOff, r.reason)
		}
		if r.records == 0 && !isLast {
			return fmt.Errorf("%w: segment %s: offset 0: sealed segment holds no record", walErrCorrupt, sf.name)
		}
		if r.bad {
			w.log.Warn("wal: truncating torn tail of the last segment",
				"segment", sf.name, "offset", r.end, "problem_offset", r.badOff, "problem", r.reason,
				"records_kept", r.records)
			if err := w.segTruncate(s, r.end); err != nil {
				return err
			}
		}
		s.last, s.end, s.idx = r.last, r.end, r.idx
		s.zeroed, s.named = r.end, true
		w.bytesRead.Add(uint64(r.end))
		w.reads.Add(r.records)
	}

	// Decide where the log continues.
	var last uint64
	records := false
	if n := len(w.segs); n > 0 {
		last = w.segs[n-1].last
		records = n > 1 || w.segs[0].end > 0
	}
	want := w.opts.StartLSN
	switch {
	case !records:
		if want == 0 && len(w.segs) == 1 {
			want = w.segs[0].first
		}
		if want == 0 {
			want = 1
		}
		if len(w.segs) == 1 && w.segs[0].first != want {
			if err := w.segDropAll(); err != nil {
				return err
			}
			dirChanged = true
		}
	case want > last+1:
		w.log.Warn("wal: every retained record is older than the start LSN; dropping them",
			"last_lsn", last, "start_lsn", want, "segments", len(w.segs))
		if err := w.segDropAll(); err != nil {
			return err
		}
		dirChanged = true
	}
	if len(w.segs) == 0 {
		s, err := w.segCreate(w.tmpName("new"), w.opts.SegmentSize, w.fallocate)
		if err != nil {
			return walIOErr("preallocate segment", err)
		}
		if err := w.segInstall(s, want); err != nil {
			w.segRelease(s)
			return err
		}
		w.segs = append(w.segs, s)
		dirChanged = true
	}
	act := w.segs[len(w.segs)-1]
	if err := w.fdatasync(act.fd); err != nil {
		return walIOErr("fdatasync "+filepath.Base(act.path), err)
	}
	w.fsyncs.Add(1)
	if dirChanged {
		if err := w.syncDir(w.dir); err != nil {
			return walIOErr("fsync directory", err)
		}
		w.fsyncs.Add(1)
	}
	w.next = act.last + 1
	w.synced = act.last
	w.durable.Store(act.last)
	return nil
}

// walLock takes the directory lock, failing at once if another process (or
// another wal in this one) holds it.
func walLock(dir string) (*os.File, error) {
	f, err := mmapLockFile(filepath.Join(dir, walLockName))
	if err != nil {
		return nil, walIOErr("lock "+dir+" (is another server using it?)", err)
	}
	return f, nil
}

// segDropAll deletes every segment (recovery only, before w is shared).
func (w *wal) segDropAll() error {
	for _, s := range w.segs {
		w.segRelease(s)
		if err := os.Remove(s.path); err != nil {
			return walIOErr("remove segment", err)
		}
	}
	w.segs = nil
	return nil
}

// segOpen opens and maps an existing segment file.
func segOpen(path string, first uint64, flag int) (*walSegment, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, walIOErr("open segment", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, walIOErr("stat segment", err)
	}
	s := &walSegment{first: first, last: first - 1, path: path, f: f, fd: int(f.Fd()), size: fi.Size()}
	if s.size > 0 {
		if s.data, err = mmapReadOnly(s.fd, s.size); err != nil {
			f.Close()
			return nil, walIOErr("mmap "+filepath.Base(path), err)
		}
	}
	return s, nil
}

// segTruncate cuts s at off and preallocates it again to at least the
// segment size, so everything from off on reads as zeros.
func (w *wal) segTruncate(s *walSegment, off int64) error {
	size := max(s.size, w.opts.SegmentSize)
	if err := mmapUnmap(s.data); err != nil {
		return walIOErr("munmap", err)
	}
	s.data = nil
	if err := s.f.Truncate(off); err != nil {
		return walIOErr("truncate "+filepath.Base(s.path), err)
	}
	if err := w.fallocate(s.fd, size); err != nil {
		return walIOErr("preallocate "+filepath.Base(s.path), err)
	}
	if err := w.fdatasync(s.fd); err != nil {
		return walIOErr("fdatasync "+filepath.Base(s.path), err)
	}
	w.fsyncs.Add(1)
	var err error
	s.size = size
	s.zeroed = min(s.zeroed, off)
	if s.data, err = mmapReadOnly(s.fd, size); err != nil {
		return walIOErr("mmap "+filepath.Base(s.path), err)
	}
	return nil
}

// tmpName returns a fresh temporary segment file name (under mu, or before
// the log is shared). Names are never reused: under every_write a rotated-in
// segment keeps its temporary name until the committer installs it.
func (w *wal) tmpName(kind string) string {
	w.tmpSeq++
	return kind + "-" + strconv.Itoa(w.tmpSeq) + walTempSuffix
}

// segCreate creates the temporary file name, preallocates size bytes and
// maps it. The caller names it with segInstall.
func (w *wal) segCreate(name string, size int64, fallocate func(int, int64) error) (*walSegment, error) {
	path := filepath.Join(w.dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	s := &walSegment{path: path, f: f, fd: int(f.Fd()), size: size}
	if err := fallocate(s.fd, size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if s.data, err = mmapReadOnly(s.fd, size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return s, nil
}

// segInstall renames a preallocated temporary segment to the name of its
// first LSN. The directory must be fsynced afterwards.
func (w *wal) segInstall(s *walSegment, first uint64) error {
	path := filepath.Join(w.dir, walSegmentName(first))
	if err := os.Rename(s.path, path); err != nil {
		os.Remove(s.path)
		return walIOErr("rename segment", err)
	}
	s.path, s.first, s.last, s.end, s.idx, s.named = path, first, first-1, 0, nil, true
	return nil
}

// segRelease unmaps and closes s. Callers hold mu or own s exclusively.
func (w *wal) segRelease(s *walSegment) {
	if s.f == nil {
		return
	}
	if err := mmapUnmap(s.data); err != nil {
		w.log.Warn("wal: munmap failed", "segment", filepath.Base(s.path), "err", err)
	}
	s.data = nil
	s.f.Close()
	s.f = nil
}

// segUnref drops one reference to s (under mu).
func (w *wal) segUnref(s *walSegment) {
	s.refs--
	if s.refs == 0 && s.removed {
		w.segRelease(s)
	}
}

// segRetire takes s out of service (under mu); the mapping goes when the
// last reader is done.
func (w *wal) segRetire(s *walSegment) {
	s.removed = true
	if s.refs == 0 {
		w.segRelease(s)
	}
}

// segMaybeSpare starts preallocating the next segment in the background once
// the active one is half full (under mu).
func (w *wal) segMaybeSpare() {
	act := w.segs[len(w.segs)-1]
	if w.spare != nil || w.spareBusy || w.spareFailed || w.closed || w.err != nil || act.end <= act.size/2 {
		return
	}
	w.spareBusy = true
	size, fallocate, name := w.opts.SegmentSize, w.fallocate, w.tmpName("spare")
	w.background.Add(1)
	go func() {
		defer w.background.Done()
		s, err := w.segCreate(name, size, fallocate)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.spareBusy = false
		switch {
		case err != nil:
			w.spareFailed = true
			w.log.Warn("wal: cannot preallocate the next segment", "err", err)
		case w.closed:
			w.segRelease(s)
			os.Remove(s.path)
		default:
			w.spare = s
		}
	}()
}

// segRotate makes a new active segment with room for need bytes (under mu).
// On a preallocation error nothing has changed.
func (w *wal) segRotate(need int64) error {
	act := w.segs[len(w.segs)-1]
	var s *walSegment
	if w.spare != nil && w.spare.size >= need {
		s, w.spare = w.spare, nil
	} else {
		var err error
		s, err = w.segCreate(w.tmpName("new"), max(w.opts.SegmentSize, need), w.fallocate)
		if err != nil {
			return walIOErr("preallocate segment", err)
		}
	}
	if w.deferWrites {
		// The committer writes and syncs act, then names s (commit).
		s.first, s.last, s.end, s.idx = w.next, w.next-1, 0, nil
	} else {
		if act.end > 0 {
			// Seal: the old segment is complete on disk before the new one
			// is used, so recovery may treat damage in a sealed segment as
			// corruption.
			if err := w.fdatasync(act.fd); err != nil {
				w.segRelease(s)
				os.Remove(s.path)
				w.failLocked("fdatasync "+filepath.Base(act.path), err)
				return w.err
			}
			w.fsyncs.Add(1)
			act.dirty = false
		}
		if err := w.segInstall(s, w.next); err != nil {
			w.segRelease(s)
			return err
		}
		w.dirDirty = true
	}
	if act.end == 0 {
		// s takes over the empty active segment's LSN range and name: it
		// has the name already, or gets it when the committer installs it.
		// (Only the named, empty segment recovery leaves can be empty here:
		// a rotated-in segment gets its first record at once.)
		w.segs = w.segs[:len(w.segs)-1]
		w.segRetire(act)
	}
	w.segs = append(w.segs, s)
	w.spareFailed = false
	return nil
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
	if act.end+size > act.size {
		if err := w.segRotate(size); err != nil {
			return 0, err
		}
		act = w.segs[len(w.segs)-1]
	}
	lsn := w.next
	if w.deferWrites {
		if act.pend == nil {
			act.pend, w.pendFree = w.pendFree, nil
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
	switch w.opts.Policy.Kind {
	case "every_write":
		w.kickCommitter()
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
	defer w.syncMu.Unlock()
	w.mu.Lock()
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
			if err = os.Rename(j.tmp, j.install); err != nil {
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
			_, err = j.s.f.WriteAt(walZeros[:min(j.zero-off, int64(len(walZeros)))], off)
		}
		if err != nil {
			op = "write zeros " + j.name
			break
		}
		start := time.Now()
		if err = fdatasync(j.s.fd); err != nil {
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
		if cap(j.buf) > 0 && cap(j.buf) <= 4<<20 && w.pendFree == nil {
			w.pendFree = j.buf[:0]
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

// read calls fn for every durable record with LSN >= from, in order, until
// fn returns false. Records older than firstLSN are skipped silently. It
// may run concurrently with append, removeThrough and other reads.
func (w *wal) read(from uint64, fn func(r walRecord) bool) error {
	limit := w.durable.Load()
	cur := max(from, 1)
	for cur <= limit {
		w.mu.Lock()
		if w.done {
			w.mu.Unlock()
			return walErrClosed
		}
		i := sort.Search(len(w.segs), func(i int) bool { return w.segs[i].first > cur }) - 1
		if i < 0 {
			i, cur = 0, w.segs[0].first
		}
		s := w.segs[i]
		segLimit := min(limit, s.last)
		if cur > segLimit {
			w.mu.Unlock()
			return nil
		}
		off := s.idx[(cur-s.first)/walIndexStride]
		s.refs++
		w.mu.Unlock()

		stop, err := w.segRead(s, off, cur, segLimit, fn)

		w.mu.Lock()
		w.segUnref(s)
		w.mu.Unlock()
		if stop || err != nil {
			return err
		}
		cur = segLimit + 1
	}
	return nil
}

// segRead delivers the records of s from offset off with LSNs in [from, to].
// It reports whether fn asked to stop.
func (w *wal) segRead(s *walSegment, off int64, from, to uint64, fn func(walRecord) bool) (bool, error) {
	data := s.data
	n := int64(len(data))
	var count, nbytes uint64
	defer func() {
		w.reads.Add(count)
		w.bytesRead.Add(nbytes)
	}()
	for {
		if off+walHeaderSize > n {
			return false, fmt.Errorf("%w: segment %s: offset %d: record %d missing", walErrCorrupt, filepath.Base(s.path), off, from)
		}
		h := data[off : off+walHeaderSize]
		length := int64(binary.LittleEndian.Uint32(h[0:]))
		lsn := binary.LittleEndian.Uint64(h[8:])
		size := walRecordSize(int(length))
		if length > walMaxPayload || size > n-off || lsn > to {
			return false, fmt.Errorf("%w: segment %s: offset %d: bad record while reading LSN %d", walErrCorrupt, filepath.Base(s.path), off, from)
		}
		if lsn >= from {
			p := off + walHeaderSize
			count++
			nbytes += uint64(size)
			if !fn(walRecord{LSN: lsn, Type: h[4], Payload: data[p : p+length : p+length]}) {
				return true, nil
			}
			if lsn == to {
				return false, nil
			}
		}
		off += size
	}
}

// removeThrough deletes the segments whose records are all <= lsn, never
// the active one, and fsyncs the directory.
func (w *wal) removeThrough(lsn uint64) (segmentsDeleted int, bytesReclaimed int64, err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return 0, 0, walErrClosed
	}
	// A segment holding records that are not durable yet may still be
	// waiting for the committer to write it.
	lsn = min(lsn, w.durable.Load())
	var victims []*walSegment
	for len(w.segs) > 1 && w.segs[0].last <= lsn {
		victims = append(victims, w.segs[0])
		w.segs = slices.Delete(w.segs, 0, 1)
	}
	for _, s := range victims {
		if rerr := os.Remove(s.path); rerr != nil && err == nil {
			err = walIOErr("remove segment", rerr)
		}
		segmentsDeleted++
		bytesReclaimed += s.size
		w.segRetire(s)
	}
	syncDir := w.syncDir
	w.mu.Unlock()
	if segmentsDeleted > 0 {
		w.fsyncs.Add(1)
		if serr := syncDir(w.dir); serr != nil && err == nil {
			err = walIOErr("fsync directory", serr)
		}
	}
	return segmentsDeleted, bytesReclaimed, err
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
		os.Remove(w.spare.path)
		w.spare = nil
	}
	w.lock.Close()
	return err
}

// walReport is what verifyWAL and repairWAL found.
type walReport struct {
	Segments          []walSegmentInfo // segments scanned, up to and including the one with the problem
	Records           uint64           // good records before the problem
	FirstLSN, LastLSN uint64           // of the good records (0 when none)
	Problem           *walProblem      // first problem, nil when the log is clean
	Truncated         bool             // repairWAL cut the problem segment at Problem.Cut
	Removed           []string         // repairWAL deleted these segment files
}

type walSegmentInfo struct {
	Name              string
	FirstLSN, LastLSN uint64 // LastLSN = FirstLSN-1 when empty
	Records           uint64
	DataBytes         int64 // bytes of good records
	FileBytes         int64
}

type walProblem struct {
	Segment string // file name
	Offset  int64  // where the problem was seen
	Cut     int64  // where the segment would be truncated (-1: the segment would be deleted)
	Reason  string
	// TornTail is true when the problem is in the last segment: openWAL
	// would cut it and start; anywhere else openWAL refuses to start.
	TornTail bool
}

func (p *walProblem) String() string {
	return fmt.Sprintf("segment %s: offset %d: %s", p.Segment, p.Offset, p.Reason)
}

// verifyWAL scans dir and reports the first problem without changing anything.
func verifyWAL(dir string) (walReport, error) {
	var rep walReport
	files, err := walListSegments(dir)
	if err != nil {
		return rep, err
	}
	var prevLast uint64
	var prevName string
	for i, sf := range files {
		isLast := i == len(files)-1
		// A bad name or a gap is never a torn tail: openWAL refuses those.
		problem := func(off, cut int64, torn bool, format string, args ...any) {
			rep.Problem = &walProblem{Segment: sf.name, Offset: off, Cut: cut, Reason: fmt.Sprintf(format, args...), TornTail: torn}
		}
		if sf.first == 0 {
			problem(0, -1, false, "LSN 0 is not valid")
			return rep, nil
		}
		if i > 0 && sf.first != prevLast+1 {
			problem(0, -1, false, "starts at LSN %d but %s ends at LSN %d (missing segment?)", sf.first, prevName, prevLast)
			return rep, nil
		}
		s, err := segOpen(filepath.Join(dir, sf.name), sf.first, os.O_RDONLY)
		if err != nil {
			return rep, err
		}
		r := segScan(s.fd, s.data, sf.first)
		mmapUnmap(s.data)
		s.f.Close()
		rep.Segments = append(rep.Segments, walSegmentInfo{Name: sf.name, FirstLSN: sf.first, LastLSN: r.last,
			Records: r.records, DataBytes: r.end, FileBytes: s.size})
		if r.records > 0 {
			if rep.Records == 0 {
				rep.FirstLSN = sf.first
			}
			rep.LastLSN = r.last
			rep.Records += r.records
		}
		prevLast, prevName = r.last, sf.name
		if r.bad {
			problem(r.badOff, r.end, isLast, "%s", r.reason)
			return rep, nil
		}
		if r.records == 0 && !isLast {
			problem(0, 0, false, "sealed segment holds no record")
			return rep, nil
		}
	}
	return rep, nil
}

// repairWAL truncates the log at its first problem, on purpose: the problem
// segment is cut there (or deleted when its name itself is wrong) and every
// later segment is deleted. It fails if a server has the log open.
func repairWAL(dir string) (walReport, error) {
	lock, err := walLock(dir)
	if err != nil {
		return walReport{}, err
	}
	defer lock.Close()
	rep, err := verifyWAL(dir)
	if err != nil || rep.Problem == nil {
		return rep, err
	}
	files, err := walListSegments(dir)
	if err != nil {
		return rep, err
	}
	p := rep.Problem
	cutAt := slices.IndexFunc(files, func(f walSegmentFile) bool { return f.name == p.Segment })
	if p.Cut >= 0 {
		path := filepath.Join(dir, p.Segment)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return rep, walIOErr("open segment", err)
		}
		fi, err := f.Stat()
		if err == nil {
			err = f.Truncate(p.Cut)
		}
		if err == nil {
			err = mmapFallocate(int(f.Fd()), max(fi.Size(), p.Cut))
		}
		if err == nil {
			err = mmapFdatasync(int(f.Fd()))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return rep, walIOErr("truncate "+p.Segment, err)
		}
		rep.Truncated = true
		cutAt++
	}
	for _, sf := range files[cutAt:] {
		if err := os.Remove(filepath.Join(dir, sf.name)); err != nil {
			return rep, walIOErr("remove segment", err)
		}
		rep.Removed = append(rep.Removed, sf.name)
	}
	if err := mmapSyncDir(dir); err != nil {
		return rep, walIOErr("fsync directory", err)
	}
	return rep, nil
}
