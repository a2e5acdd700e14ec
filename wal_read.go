package main

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sort"
)

// Readers of the write-ahead log: delivering durable records from the
// mapped segments.

// read calls fn for every durable record with LSN >= from, in order, until
// fn returns false. Records older than firstLSN are skipped silently. It
// may run concurrently with append, removeThrough and other reads.
func (w *wal) read(from uint64, fn func(r walRecord) bool) error {
	return w.readRange(from, w.durable.Load(), false, fn)
}

// readRange calls fn for every durable record with an LSN in [from, to],
// in order, until fn returns false. With strict, a record older than the
// oldest retained one or past the log's end is an error instead of being
// skipped.
func (w *wal) readRange(from, to uint64, strict bool, fn func(r walRecord) bool) error {
	to = min(to, w.durable.Load())
	cur := max(from, 1)
	for cur <= to {
		w.mu.Lock()
		if w.done {
			w.mu.Unlock()
			return walErrClosed
		}
		if first := w.segs[0].first; cur < first {
			if strict {
				w.mu.Unlock()
				return fmt.Errorf("record %d is no longer retained (the oldest is %d)", cur, first)
			}
			cur = first
		}
		i := sort.Search(len(w.segs), func(i int) bool { return w.segs[i].first > cur }) - 1
		s := w.segs[i]
		segLimit := min(to, s.last)
		if cur > segLimit {
			w.mu.Unlock()
			if strict {
				return fmt.Errorf("record %d is not in the log (segment %d..%d)", cur, s.first, s.last)
			}
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
			if !fn(walRecord{LSN: lsn, Type: h[4], Payload: data[p : p+length : p+length], Raw: data[off : off+size : off+size]}) {
				return true, nil
			}
			if lsn == to {
				return false, nil
			}
		}
		off += size
	}
}
