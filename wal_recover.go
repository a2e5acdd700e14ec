package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Recovery and verification of the write-ahead log: scanning a segment's
// records, rebuilding the log at open, and the offline verify and repair.

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
// mapping of f) at or after from, or -1. It reads only the regions the file
// system reports as data, so the untouched preallocated part of a segment
// costs no page faults.
func segNonZero(f *os.File, data []byte, from int64) int64 {
	n := int64(len(data))
	for from < n {
		start, end, more, err := dataRegion(f, from)
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

// segScan verifies the records of one segment (mapped as data from f),
// stopping at the end marker or the first problem. Everything after the end
// marker must be zero.
func segScan(f *os.File, data []byte, first uint64) segScanResult {
	r := segScanResult{last: first - 1}
	fail := func(off int64, format string, args ...any) segScanResult {
		r.bad, r.badOff, r.reason = true, off, fmt.Sprintf(format, args...)
		return r
	}
	n := int64(len(data))
	off := int64(0)
	for {
		if n-off < walHeaderSize || walFirstNonZero(data[off:off+walHeaderSize]) < 0 {
			if i := segNonZero(f, data, off); i >= 0 {
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

// walSectorSize is the unit a disk writes atomically. A crash can lose any
// sector written since the last sync; since segments are preallocated and
// read as zeros where nothing was written, a lost sector reads as 512 zeros.
const walSectorSize = 512

// segValidRecord reports whether an intact record with an LSN above after
// starts at off: a sane header, a payload that fits, and the right CRC. It
// returns the record's LSN and size.
func segValidRecord(data []byte, off int64, after uint64) (lsn uint64, size int64, ok bool) {
	n := int64(len(data))
	if off < 0 || n-off < walHeaderSize {
		return 0, 0, false
	}
	h := data[off : off+walHeaderSize]
	if h[5] != 0 || h[6] != 0 || h[7] != 0 || binary.LittleEndian.Uint32(h[20:]) != 0 {
		return 0, 0, false
	}
	length := binary.LittleEndian.Uint32(h[0:])
	lsn = binary.LittleEndian.Uint64(h[8:])
	if length > walMaxPayload || lsn <= after {
		return 0, 0, false
	}
	size = walRecordSize(int(length))
	if size > n-off {
		return 0, 0, false
	}
	payload := data[off+walHeaderSize : off+walHeaderSize+int64(length)]
	if crc32.Update(crc32.Checksum(h[:16], walCRCTable), walCRCTable, payload) != binary.LittleEndian.Uint32(h[16:]) {
		return 0, 0, false
	}
	return lsn, size, true
}

// segFindValid returns the offset and LSN of the first intact record at or
// after from (8-byte aligned) whose LSN is above after, or off -1. Zero
// regions are skipped without reading them.
func segFindValid(f *os.File, data []byte, from int64, after uint64) (off int64, lsn uint64) {
	n := int64(len(data))
	off = (from + 7) &^ 7
	for off+walHeaderSize <= n {
		nz := segNonZero(f, data, off)
		if nz < 0 {
			return -1, 0
		}
		if c := nz &^ 7; c > off {
			off = c
		}
		if l, _, ok := segValidRecord(data, off, after); ok {
			return off, l
		}
		off += 8
	}
	return -1, 0
}

// segLostSector reports whether a sector between from (where the damage
// starts) and to (where an intact record starts) holds its old contents:
// zeros from from, or from its start, to its end. That is the trace a crash
// leaves when a write reached the disk only in part: a disk writes a sector
// whole or not at all, and before the write the space past from was zeros
// (preallocated). A sector that to's record starts in was written, so it
// does not count.
func segLostSector(data []byte, from, to int64) bool {
	for s := from &^ (walSectorSize - 1); s+walSectorSize <= to && s < int64(len(data)); s += walSectorSize {
		if walFirstNonZero(data[max(s, from):min(s+walSectorSize, int64(len(data)))]) < 0 {
			return true
		}
	}
	return false
}

// segDamage tells a torn tail from corruption in the last segment, whose
// scan r stopped at a problem. A torn tail is what a crash can leave: an
// incomplete or garbage suffix after the last complete record with nothing
// intact beyond it, or intact records beyond a lost (zero) sector, which
// were written after it and so were never synced. Anything else followed by
// an intact record with a higher LSN is damage to data that was already
// durable. It returns the first such intact record (off -1 when none).
func segDamage(f *os.File, data []byte, r segScanResult) (torn bool, off int64, lsn uint64) {
	off, lsn = segFindValid(f, data, r.end, r.last)
	if off < 0 {
		return true, -1, 0
	}
	return segLostSector(data, r.end, off), off, lsn
}

// markCorrupt describes damage in the last segment that is not a torn
// tail: where it is and the intact record after it.
// The problem moves to where the damaged record starts.
func (r *segScanResult) markCorrupt(vOff int64, vLSN uint64) {
	r.reason = fmt.Sprintf("%s (at LSN %d), and an intact record follows (LSN %d at offset %d), so this is corruption, not a torn tail",
		r.reason, r.last+1, vLSN, vOff)
	r.badOff = r.end
}

// segCountValid counts the intact records from off on, following record
// sizes and resynchronising past damage, to say what a repair drops.
func segCountValid(f *os.File, data []byte, off int64, after uint64) (count, last uint64) {
	for {
		off, lsn := segFindValid(f, data, off, after)
		if off < 0 {
			return count, last
		}
		_, size, _ := segValidRecord(data, off, after)
		count, last, after = count+1, lsn, lsn
		off += size
	}
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
			if err := removeFile(filepath.Join(w.dir, e.Name())); err != nil {
				return walIOErr("remove temporary file", err)
			}
			dirChanged = true
		}
	}
	files, err := walListSegments(w.dir)
	if err != nil {
		return err
	}
	// A segment whose successor starts at or below the start LSN holds only
	// records a snapshot covers. Compaction deletes such segments, and a
	// crash can keep any subset of those deletes, leaving a gap among them:
	// finish the job instead of calling the gap corruption.
	for len(files) > 1 && w.opts.StartLSN > 0 && files[1].first > 0 && files[1].first <= w.opts.StartLSN {
		if err := removeFile(filepath.Join(w.dir, files[0].name)); err != nil {
			return walIOErr("remove segment covered by the snapshot", err)
		}
		w.log.Info("wal: removed a segment the snapshot covers", "segment", files[0].name, "start_lsn", w.opts.StartLSN)
		files = files[1:]
		dirChanged = true
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
		r := segScan(s.f, s.data, s.first)
		if r.bad && !isLast {
			return fmt.Errorf("%w: segment %s: offset %d: %s", walErrCorrupt, sf.name, r.badOff, r.reason)
		}
		if r.records == 0 && !isLast {
			return fmt.Errorf("%w: segment %s: offset 0: sealed segment holds no record", walErrCorrupt, sf.name)
		}
		if r.bad {
			if torn, vOff, vLSN := segDamage(s.f, s.data, r); !torn {
				r.markCorrupt(vOff, vLSN)
				return fmt.Errorf("%w: segment %s: offset %d: %s; the data is left as it is (stmdb wal repair truncates here, dropping what follows)",
					walErrCorrupt, sf.name, r.badOff, r.reason)
			}
			w.log.Warn("wal: truncating torn tail of the last segment",
				"segment", sf.name, "offset", r.end, "problem_offset", r.badOff, "problem", r.reason,
				"records_kept", r.records, "lsn_kept", r.last)
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
	if err := w.fdatasync(act.f); err != nil {
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
	f, err := lockFile(filepath.Join(dir, walLockName))
	if err != nil {
		return nil, walIOErr("lock "+dir+" (is another server using it?)", err)
	}
	return f, nil
}

// walReport is what verifyWAL and repairWAL found.
type walReport struct {
	Segments          []walSegmentInfo // segments scanned, up to and including the one with the problem
	Records           uint64           // good records before the problem
	FirstLSN, LastLSN uint64           // of the good records (0 when none)
	Problem           *walProblem      // first problem, nil when the log is clean
	Truncated         bool             // repairWAL cut the problem segment at Problem.Cut
	Removed           []string         // repairWAL deleted these segment files
	// Dropped counts the intact records that repairWAL found after the
	// problem and removed with it; DroppedLast is the highest LSN among them.
	Dropped, DroppedLast uint64
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
	// TornTail is true when the problem is what a crash can leave at the
	// end of the last segment: openWAL cuts it and starts. Anything else
	// makes openWAL refuse to start.
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
		r := segScan(s.f, s.data, sf.first)
		torn := isLast
		if r.bad && isLast {
			var vOff int64
			var vLSN uint64
			if torn, vOff, vLSN = segDamage(s.f, s.data, r); !torn {
				r.markCorrupt(vOff, vLSN)
			}
		}
		unmapFile(s.data)
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
			problem(r.badOff, r.end, torn, "%s", r.reason)
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
	for i, sf := range files[cutAt:] {
		from := int64(0)
		if i == 0 && p.Cut >= 0 {
			from = p.Cut
		}
		s, err := segOpen(filepath.Join(dir, sf.name), sf.first, os.O_RDONLY)
		if err != nil {
			return rep, err
		}
		n, last := segCountValid(s.f, s.data, from, rep.LastLSN)
		unmapFile(s.data)
		s.f.Close()
		rep.Dropped += n
		rep.DroppedLast = max(rep.DroppedLast, last)
	}
	if p.Cut >= 0 {
		path := filepath.Join(dir, p.Segment)
		f, err := openFile(path, os.O_RDWR, 0)
		if err != nil {
			return rep, walIOErr("open segment", err)
		}
		fi, err := f.Stat()
		if err == nil {
			err = truncateFile(f, p.Cut)
		}
		if err == nil {
			err = preallocate(f, max(fi.Size(), p.Cut))
		}
		if err == nil {
			err = syncData(f)
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
		if err := removeFile(filepath.Join(dir, sf.name)); err != nil {
			return rep, walIOErr("remove segment", err)
		}
		rep.Removed = append(rep.Removed, sf.name)
	}
	if err := syncDir(dir); err != nil {
		return rep, walIOErr("fsync directory", err)
	}
	return rep, nil
}
