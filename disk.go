package main

// Disk space: the quota of the data directory and the emergency reserve.
//
// # Quota (storage.max_disk_mb)
//
// Used is the bytes of every file in the data directory: the WAL's segments
// at their preallocated size (the spare included), snapshots, instance
// snapshots and the reserve. The WAL claims its space a segment at a time,
// when it preallocates one, so that is where the quota is checked (the
// log's Admit hook): a segment that would take used past the quota is
// refused, and the append that needed it fails with a retryable
// WAL_IO_ERROR whose message says "disk quota". Nothing else is refused:
// reads, COMPACT, snapshots and SNAPSHOT_INSTANCE write what they must,
// because they are how space comes back.
//
// DELETE_INSTANCE may take one segment past the quota (diskSpace.overdraft):
// a delete frees space at the next compaction, so deleting and then
// compacting is a way out of a full quota that needs no one to delete
// files by hand. Deletes inside a BATCH get no overdraft.
//
// The WAL's bytes are counted exactly under the log's lock; the other files
// are counted by a scan of the directory at start, after each compaction
// and every diskRescanTicks ticks, so a check costs no I/O.
//
// Automatic compaction starts before the quota is reached, whatever
// compaction.min_interval_secs says: when less than max(a quarter of the
// quota, two segments plus a snapshot) is left and the WAL has a sealed
// segment to give back (autoCompact). A workload that overwrites or
// deletes therefore keeps running within the quota for ever.
//
// # Reserve (<data>/RESERVE)
//
// A preallocated file sized for a snapshot of the current state (the
// newest snapshot's size plus a quarter) and one WAL segment, in the
// spirit of CockroachDB's ballast file. When the disk is full for any
// reason, preallocating a segment fails with ENOSPC: the write is refused
// (retryable, nothing changes), the reserve is deleted, and a compaction
// runs at once (when compaction.enabled; else at the next COMPACT). Until
// that compaction, the log takes no new segment (but for a delete's), so
// the space the reserve gave back is there for the snapshot; a snapshot
// that still hits ENOSPC deletes the reserve (then the WAL's unused spare
// segment) and tries again. After a compaction the reserve is made again,
// and every tick after until that succeeds; it also grows with the state. The reserve counts against the quota and is not made when it
// would leave less than two segments of the quota free.

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	diskReserveName      = "RESERVE"
	diskMinQuotaSegments = 4  // storage.max_disk_mb holds at least this many segments
	diskRescanTicks      = 10 // the directory is scanned every this many ticks
)

// diskSpace accounts for the data directory's bytes against the quota and
// keeps the reserve file. admit and noSpaceHit run under the WAL's lock
// and touch only atomics. Lock order: mu, then the WAL's locks.
type diskSpace struct {
	dir       string
	walDir    string
	quota     int64 // bytes; 0 = no quota
	overdraft int64 // how far past the quota DELETE_INSTANCE may go: one segment
	segSize   int64
	logger    *slog.Logger
	log       *wal // set once the log is open

	// fallocate preallocates the reserve; a fault seam for tests.
	fallocate func(f *os.File, size int64) error

	other       atomic.Int64 // bytes of the files that are neither segments nor the reserve (last scan)
	reserve     atomic.Int64 // bytes of the reserve file; 0 while there is none
	snapSize    atomic.Int64 // the newest full snapshot's size: sizes the reserve
	snapCount   atomic.Int64 // instances in that snapshot
	instances   func() int   // instances in the state now
	noSpace     atomic.Bool  // a preallocation failed with ENOSPC: release the reserve
	lowSpace    atomic.Bool  // ENOSPC since the last compaction: the log may not grow
	compactNow  atomic.Bool  // compact at the next tick, whatever the thresholds say
	mayRecreate atomic.Bool  // a compaction ran since the reserve was released
	kick        chan struct{}

	mu          sync.Mutex // reserve file operations; the fields below
	warned      int        // the quota percentage last warned about: 0, 80 or 95
	reserveSkip bool       // logged that the reserve does not fit the quota
}

func newDiskSpace(cfg config, logger *slog.Logger) *diskSpace {
	seg := cmp.Or(cfg.segmentBytes, cfg.SegmentSizeMB<<20) // as openServer gives the log
	if seg == 0 {
		seg = walDefaultSegmentSize
	}
	d := &diskSpace{
		dir: cfg.DataDir, walDir: filepath.Join(cfg.DataDir, "wal"), quota: cfg.MaxDiskMB << 20,
		overdraft: seg, segSize: seg, logger: logger, fallocate: preallocate, kick: make(chan struct{}, 1),
	}
	d.mayRecreate.Store(true)
	return d
}

// open counts what the directory holds before the log is opened: the
// files, the reserve left by the last run and the newest snapshot.
func (d *diskSpace) open(snapPath string, instances int) {
	d.snapCount.Store(int64(instances))
	if snapPath != "" {
		if fi, err := os.Stat(snapPath); err == nil {
			d.snapSize.Store(fi.Size())
		}
	}
	if fi, err := os.Stat(filepath.Join(d.dir, diskReserveName)); err == nil && fi.Mode().IsRegular() {
		d.reserve.Store(fi.Size())
	}
	d.scan()
}

// scan counts the bytes of the files in the data directory that are
// neither WAL segments (the log counts those) nor the reserve.
func (d *diskSpace) scan() {
	var n int64
	filepath.WalkDir(d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil // a file that vanished, or a directory
		}
		dir, name := filepath.Dir(path), e.Name()
		if dir == d.dir && name == diskReserveName {
			return nil
		}
		if _, seg := walParseSegmentName(name); dir == d.walDir && (seg || filepath.Ext(name) == ".tmp") {
			return nil
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	d.other.Store(n)
}

// walBytes is what the log's segment files take now.
func (d *diskSpace) walBytes() int64 {
	if d.log == nil {
		return 0
	}
	return d.log.stats().AllocatedBytes
}

// usedWith is the data directory's bytes, given the log's.
func (d *diskSpace) usedWith(walBytes int64) int64 {
	return walBytes + d.other.Load() + d.reserve.Load()
}

// admit is the log's Admit hook, called under the log's lock.
func (d *diskSpace) admit(walBytes, size int64, overdraft bool) error {
	if d.lowSpace.Load() && !overdraft {
		// What the released reserve frees is the compaction's.
		return fmt.Errorf("the disk is full (%w); log writes wait for a compaction", syscall.ENOSPC)
	}
	if d.quota == 0 {
		return nil
	}
	limit := d.quota
	if overdraft {
		limit += d.overdraft
	}
	if used := d.usedWith(walBytes); used+size > limit {
		d.compactNow.Store(true)
		return fmt.Errorf("disk quota: the data directory uses %d bytes; %d more for the log would take it past storage.max_disk_mb (%d bytes); compaction frees space", used, size, d.quota)
	}
	return nil
}

// noSpaceHit is the log's NoSpace hook, called under the log's lock: the
// loop releases the reserve and a compaction follows.
func (d *diskSpace) noSpaceHit() {
	d.lowSpace.Store(true)
	d.noSpace.Store(true)
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// pressure reports whether the quota is close enough that compaction
// should run now.
func (d *diskSpace) pressure(used int64) bool {
	if d.quota == 0 {
		return false
	}
	return used >= d.quota-max(d.quota/4, 2*d.segSize+d.snapSize.Load())
}

// reserveTarget is the reserve's size: one segment and a snapshot of the
// current state plus a quarter, in 64 KiB units. The snapshot's size is
// the newest snapshot's scaled by how many instances there are now, or,
// before the first snapshot with instances, the newest snapshot plus what
// the log retains (all the state there is came through it).
func (d *diskSpace) reserveTarget(walRetained int64) int64 {
	s := d.snapSize.Load()
	if n := d.snapCount.Load(); n > 0 && d.instances != nil {
		s = max(s, s*int64(d.instances())/n)
	} else {
		s += walRetained
	}
	return (d.segSize + s + s/4 + 64<<10 - 1) &^ (64<<10 - 1)
}

// ensureReserve makes, grows or shrinks the reserve file to its target (a
// quarter more when it grows, so that it does not grow at every tick), if
// it fits. A failure (the disk is still full) leaves it to a later try.
// Nothing is synced: the file holds no data, and a crash that loses it
// only means it is made again at start.
func (d *diskSpace) ensureReserve() {
	d.mu.Lock()
	defer d.mu.Unlock()
	ws := d.log.stats()
	target, held := d.reserveTarget(ws.TotalSizeBytes), d.reserve.Load()
	if held >= target && held <= 2*target {
		return
	}
	if held < target && held > 0 {
		target += target / 4
	}
	if d.quota > 0 && target > held && d.usedWith(ws.AllocatedBytes)-held+target > d.quota-2*d.segSize {
		if !d.reserveSkip {
			d.logger.Info("disk: the emergency reserve does not fit in the quota; not making it", "reserve_bytes", target, "quota_bytes", d.quota)
			d.reserveSkip = true
		}
		return
	}
	d.reserveSkip = false
	path := filepath.Join(d.dir, diskReserveName)
	f, err := openFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err == nil {
		if held > target {
			err = truncateFile(f, target)
		} else {
			err = d.fallocate(f, target)
		}
		f.Close()
	}
	if err != nil {
		if held == 0 {
			removeFile(path)
		} else {
			f, _ := os.Stat(path)
			if f != nil {
				d.reserve.Store(f.Size())
			}
		}
		d.logger.Debug("disk: cannot make the emergency reserve yet", "bytes", target, "err", err)
		return
	}
	if held == 0 {
		d.logger.Info("disk: emergency reserve in place", "path", path, "bytes", target)
	}
	d.reserve.Store(target)
}

// releaseReserve deletes the reserve file. It reports whether there was
// one to delete.
func (d *diskSpace) releaseReserve(why string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	held := d.reserve.Load()
	if held == 0 {
		return false
	}
	path := filepath.Join(d.dir, diskReserveName)
	if err := removeFile(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.logger.Error("disk: cannot delete the emergency reserve", "path", path, "err", err)
		return false
	}
	d.reserve.Store(0)
	d.mayRecreate.Store(false)
	d.logger.Warn("disk: the disk is full; released the emergency reserve so that compaction can run", "why", why, "bytes", held)
	return true
}

// freeForSnapshot makes room for a snapshot that hit ENOSPC: the reserve
// first, then the log's unused spare segment. It reports whether it freed
// anything.
func (d *diskSpace) freeForSnapshot() bool {
	if d.releaseReserve("a snapshot found the disk full") {
		return true
	}
	return d.log != nil && d.log.dropSpare() > 0
}

// afterCompact records the new snapshot's size and instances (size 0:
// none was written), counts the directory again and remakes the reserve.
func (d *diskSpace) afterCompact(snapSize int64, instances int) {
	if snapSize > 0 {
		d.snapSize.Store(snapSize)
		d.snapCount.Store(int64(instances))
	}
	d.scan()
	d.mayRecreate.Store(true)
	d.ensureReserve()
	d.lowSpace.Store(false)
}

// warn logs when used crosses 80 % and 95 % of the quota, and when it
// falls back under 80 %.
func (d *diskSpace) warn(used int64) {
	if d.quota == 0 {
		return
	}
	level := 0
	switch {
	case used*100 >= d.quota*95:
		level = 95
	case used*100 >= d.quota*80:
		level = 80
	}
	d.mu.Lock()
	prev := d.warned
	d.warned = level
	d.mu.Unlock()
	switch {
	case level > prev:
		d.logger.Warn("disk: the data directory is close to its quota", "percent_over", level, "used_bytes", used, "quota_bytes", d.quota)
	case level == 0 && prev > 0:
		d.logger.Info("disk: the data directory is back under 80% of its quota", "used_bytes", used, "quota_bytes", d.quota)
	}
}

// diskInfo is the disk figures INFO, WAL_STATS and metrics report.
type diskInfo struct {
	UsedBytes    int64 `json:"used_bytes"`
	QuotaBytes   int64 `json:"quota_bytes"`
	ReserveBytes int64 `json:"reserve_bytes"`
}

func (d *diskSpace) info(walBytes int64) diskInfo {
	return diskInfo{d.usedWith(walBytes), d.quota, d.reserve.Load()}
}

// diskLoop releases the reserve when the disk is full, remakes it when
// space is back, rescans the directory and logs quota warnings. It returns
// when stop is closed.
func (s *server) diskLoop(stop <-chan struct{}, tick time.Duration) {
	d := s.disk
	t := time.NewTicker(tick)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop:
			return
		case <-d.kick:
		case <-t.C:
		}
		if d.noSpace.Swap(false) {
			d.releaseReserve("preallocating a log segment failed with ENOSPC")
			d.compactNow.Store(true)
		}
		if n%diskRescanTicks == 0 {
			d.scan()
		}
		if d.mayRecreate.Load() {
			d.ensureReserve() // makes it again, or resizes it as the state grows
		}
		d.warn(d.usedWith(d.walBytes()))
	}
}

// isNoSpace reports whether err is the disk being full.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
