package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// Segment files of the write-ahead log: opening, creating, preallocating,
// rotating and retiring them.

// segDropAll deletes every segment (recovery only, before w is shared).
func (w *wal) segDropAll() error {
	for _, s := range w.segs {
		w.segRelease(s)
		if err := removeFile(s.path); err != nil {
			return walIOErr("remove segment", err)
		}
	}
	w.segs = nil
	return nil
}

// segOpen opens and maps an existing segment file.
func segOpen(path string, first uint64, flag int) (*walSegment, error) {
	f, err := openFile(path, flag, 0)
	if err != nil {
		return nil, walIOErr("open segment", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, walIOErr("stat segment", err)
	}
	s := &walSegment{first: first, last: first - 1, path: path, f: f, size: fi.Size()}
	if s.size > 0 {
		if s.data, err = mapFile(f, s.size); err != nil {
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
	if err := unmapFile(s.data); err != nil {
		return walIOErr("munmap", err)
	}
	s.data = nil
	if err := truncateFile(s.f, off); err != nil {
		return walIOErr("truncate "+filepath.Base(s.path), err)
	}
	if err := w.fallocate(s.f, size); err != nil {
		return walIOErr("preallocate "+filepath.Base(s.path), err)
	}
	if err := w.fdatasync(s.f); err != nil {
		return walIOErr("fdatasync "+filepath.Base(s.path), err)
	}
	w.fsyncs.Add(1)
	var err error
	s.size = size
	s.zeroed = min(s.zeroed, off)
	if s.data, err = mapFile(s.f, size); err != nil {
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
func (w *wal) segCreate(name string, size int64, fallocate func(*os.File, int64) error) (*walSegment, error) {
	path := filepath.Join(w.dir, name)
	f, err := openFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	s := &walSegment{path: path, f: f, size: size}
	if err := fallocate(s.f, size); err != nil {
		f.Close()
		removeFile(path)
		return nil, err
	}
	if s.data, err = mapFile(s.f, size); err != nil {
		f.Close()
		removeFile(path)
		return nil, err
	}
	return s, nil
}

// segInstall renames a preallocated temporary segment to the name of its
// first LSN. The directory must be fsynced afterwards.
func (w *wal) segInstall(s *walSegment, first uint64) error {
	path := filepath.Join(w.dir, walSegmentName(first))
	if err := renameFile(s.path, path); err != nil {
		removeFile(s.path)
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
	if err := unmapFile(s.data); err != nil {
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
	if w.admitLocked(w.opts.SegmentSize, false) != nil {
		w.spareFailed = true // a rotation asks again, and reports the refusal
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
			w.noSpaceLocked(err)
		case w.closed:
			w.segRelease(s)
			removeFile(s.path)
		default:
			w.spare = s
		}
	}()
}

// allocatedLocked is the bytes the log's segment files take: every
// segment at its preallocated size, the spare, and a spare being made
// (under mu).
func (w *wal) allocatedLocked() int64 {
	var n int64
	for _, s := range w.segs {
		n += s.size
	}
	if w.spare != nil {
		n += w.spare.size
	}
	if w.spareBusy {
		n += w.opts.SegmentSize
	}
	return n
}

// admitLocked asks opts.Admit whether a segment of size bytes may be
// preallocated (under mu).
func (w *wal) admitLocked(size int64, overdraft bool) error {
	if w.opts.Admit == nil {
		return nil
	}
	return w.opts.Admit(w.allocatedLocked(), size, overdraft)
}

// noSpaceLocked tells opts.NoSpace about a preallocation that failed with
// ENOSPC (under mu).
func (w *wal) noSpaceLocked(err error) {
	if w.opts.NoSpace != nil && errors.Is(err, syscall.ENOSPC) {
		w.opts.NoSpace()
	}
}

// dropSpare deletes the preallocated spare segment, if there is one, and
// returns its size; no new spare is made before the next rotation. It
// frees room for a snapshot on a full disk.
func (w *wal) dropSpare() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.spare
	if s == nil {
		return 0
	}
	w.spare, w.spareFailed = nil, true
	w.segRelease(s)
	if err := os.Remove(s.path); err != nil {
		return 0
	}
	return s.size
}

// segRotate makes a new active segment with room for need bytes (under mu).
// On a preallocation error or a refusal by Admit nothing has changed.
func (w *wal) segRotate(need int64, overdraft bool) error {
	act := w.segs[len(w.segs)-1]
	var s *walSegment
	if w.spare != nil && w.spare.size >= need {
		s, w.spare = w.spare, nil
	} else {
		size := max(w.opts.SegmentSize, need)
		over := false
		if err := w.admitLocked(size, false); err != nil {
			if !overdraft || w.admitLocked(size, true) != nil {
				return walIOErr("preallocate segment", err)
			}
			over = true
		}
		var err error
		s, err = w.segCreate(w.tmpName("new"), size, w.fallocate)
		if err != nil {
			w.noSpaceLocked(err)
			return walIOErr("preallocate segment", err)
		}
		s.over = over
	}
	if w.deferWrites {
		// The committer writes and syncs act, then names s (commit).
		s.first, s.last, s.end, s.idx = w.next, w.next-1, 0, nil
	} else {
		if act.end > 0 {
			// Seal: the old segment is complete on disk before the new one
			// is used, so recovery may treat damage in a sealed segment as
			// corruption.
			if err := w.fdatasync(act.f); err != nil {
				w.segRelease(s)
				removeFile(s.path)
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
		if rerr := removeFile(s.path); rerr != nil && err == nil {
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
