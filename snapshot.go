package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A full snapshot holds everything the state holds at one LSN: machines,
// instances (with timestamps and last_event_id) and idempotency keys with
// their expiry. Recovery loads the newest valid snapshot and replays the
// WAL after its LSN, so compaction can delete the segments it covers.
//
// File: snapshots/full-<lsn, 20 digits>.snap, written to a temp file,
// fsynced, renamed, and the directory fsynced. Layout: the magic, then
// uvarint-length-prefixed fields, then a CRC32C of everything before it
// and the end magic. Loading checks the CRC before using any of it.

const (
	snapMagic    = "STMDBSN1"
	snapEndMagic = "SNAPEND1"
	snapPrefix   = "full-"
	snapSuffix   = ".snap"
)

var snapCRC = crc32.MakeTable(crc32.Castagnoli)

// snapImage is a consistent copy of the state, taken under the read lock
// and written out without it. Instances are shared, not copied: apply
// never modifies one in place, it replaces it (copy on write).
type snapImage struct {
	lsn        uint64
	tombstones cowView[string, struct{}]
	machines   []*machineVersion
	instances  slotView
	idem       cowView[idemKey, *idemEntry]
	epochs     []epochStart
}

// capture copies the state. The instances, the idempotency keys and the
// deleted ids are copy-on-write views (slots.go, cowmap.go), taken in time
// proportional to their number of chunks and shards. Caller holds st.mu
// for writing (the views change the tables' ownership marks).
func (st *state) capture() *snapImage {
	img := &snapImage{lsn: st.applied, instances: st.slots.view(), idem: st.idem.view(), epochs: slices.Clone(st.epochs)}
	for _, vs := range st.machines {
		for _, mv := range vs {
			img.machines = append(img.machines, mv)
		}
	}
	if st.tombstones != nil {
		img.tombstones = st.tombstones.view()
	}
	return img
}

type snapEncoder struct {
	w   *bufio.Writer
	crc uint32
	n   int64
	tmp [binary.MaxVarintLen64]byte
	err error
}

func (e *snapEncoder) write(b []byte) {
	if e.err != nil {
		return
	}
	e.crc = crc32.Update(e.crc, snapCRC, b)
	e.n += int64(len(b))
	_, e.err = e.w.Write(b)
}

func (e *snapEncoder) uint(v uint64) { e.write(e.tmp[:binary.PutUvarint(e.tmp[:], v)]) }
func (e *snapEncoder) bytes(b []byte) {
	e.uint(uint64(len(b)))
	e.write(b)
}
func (e *snapEncoder) str(s string) {
	e.uint(uint64(len(s)))
	if e.err == nil {
		e.crc = crc32.Update(e.crc, snapCRC, []byte(s))
		e.n += int64(len(s))
		_, e.err = e.w.WriteString(s)
	}
}

// encode writes the image to w and returns the bytes written.
func (img *snapImage) encode(w io.Writer) (int64, error) {
	e := &snapEncoder{w: bufio.NewWriterSize(w, 1<<20)}
	e.write([]byte(snapMagic))
	e.uint(img.lsn)
	e.uint(uint64(len(img.machines)))
	for _, mv := range img.machines {
		e.str(mv.name)
		e.uint(uint64(mv.version))
		e.bytes(mv.def)
		e.uint(mv.lsn)
	}
	e.uint(uint64(img.instances.len()))
	for i := range img.instances.len() {
		in := img.instances.at(i)
		e.str(in.id)
		e.str(in.mv.name)
		e.uint(uint64(in.mv.version))
		e.str(in.state)
		e.bytes(in.ctx)
		e.str(in.lastEventID)
		e.uint(in.lastLSN)
		e.uint(uint64(in.createdAt))
		e.uint(uint64(in.updatedAt))
	}
	e.uint(uint64(img.idem.len()))
	img.idem.each(func(k idemKey, ie *idemEntry) bool {
		e.uint(uint64(k.typ))
		e.str(k.key)
		e.str(ie.hash)
		e.uint(ie.lsn)
		e.uint(uint64(ie.expires))
		e.bytes(ie.result)
		return true
	})
	e.uint(uint64(img.tombstones.len()))
	img.tombstones.each(func(id string, _ struct{}) bool {
		e.str(id)
		return true
	})
	// The epoch history (replica.go), only when there is one: a snapshot
	// of a server never promoted is as before, and one without the
	// section loads as epoch 0.
	if len(img.epochs) > 0 {
		e.uint(uint64(len(img.epochs)))
		for _, ep := range img.epochs {
			e.uint(ep.Epoch)
			e.uint(ep.Offset)
		}
	}
	var trailer [4]byte
	binary.LittleEndian.PutUint32(trailer[:], e.crc)
	if e.err == nil {
		_, e.err = e.w.Write(trailer[:])
	}
	if e.err == nil {
		_, e.err = e.w.WriteString(snapEndMagic)
	}
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.n + 4 + int64(len(snapEndMagic)), e.err
}

// snapDecoder reads fields with bounds checks: a damaged file is an error,
// never a panic or a huge allocation.
type snapDecoder struct {
	b   []byte
	err error
}

func (d *snapDecoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *snapDecoder) bytes() []byte {
	n := d.uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes past the end", n)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *snapDecoder) str() string { return string(d.bytes()) }

// count reads a element count and checks it against the bytes left (each
// element takes at least min bytes), so a damaged count cannot make us
// allocate more than the file could hold.
func (d *snapDecoder) count(min int) int {
	n := d.uint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.err = fmt.Errorf("count %d larger than the file", n)
	}
	return int(n)
}

// decodeSnapshot verifies and loads a snapshot file's bytes into a fresh
// state.
func decodeSnapshot(data []byte, idemTTL int64) (*state, error) {
	tail := len(snapEndMagic) + 4
	if len(data) < len(snapMagic)+tail || string(data[:len(snapMagic)]) != snapMagic {
		return nil, errors.New("not a snapshot file (bad magic or too short)")
	}
	if string(data[len(data)-len(snapEndMagic):]) != snapEndMagic {
		return nil, errors.New("snapshot is incomplete (no end marker)")
	}
	body := data[:len(data)-tail]
	if got, want := crc32.Checksum(body, snapCRC), binary.LittleEndian.Uint32(data[len(body):]); got != want {
		return nil, fmt.Errorf("snapshot checksum mismatch (%08x, want %08x)", got, want)
	}
	st := newState(idemTTL)
	d := &snapDecoder{b: body[len(snapMagic):]}
	st.applied = d.uint()
	for n := d.count(4); n > 0 && d.err == nil; n-- {
		name, version, def, lsn := d.str(), uint32(d.uint()), d.bytes(), d.uint()
		if d.err != nil {
			break
		}
		mv, rerr := compileMachine(name, version, def)
		if rerr != nil {
			return nil, fmt.Errorf("snapshot machine %s v%d: %s", name, version, rerr.Message)
		}
		mv.lsn = lsn
		if st.machines[name] == nil {
			st.machines[name] = map[uint32]*machineVersion{}
		}
		st.machines[name][version] = mv
	}
	for n := d.count(9); n > 0 && d.err == nil; n-- {
		in := &instance{id: d.str()}
		name, version, stateName := d.str(), uint32(d.uint()), d.str()
		in.ctx = bytes.Clone(d.bytes())
		in.lastEventID = d.str()
		in.lastLSN, in.createdAt, in.updatedAt = d.uint(), int64(d.uint()), int64(d.uint())
		if d.err != nil {
			break
		}
		mv := st.machines[name][version]
		if mv == nil {
			return nil, fmt.Errorf("snapshot instance %q references unknown machine %s v%d", in.id, name, version)
		}
		s, ok := mv.states[stateName]
		if !ok {
			return nil, fmt.Errorf("snapshot instance %q is in unknown state %q", in.id, stateName)
		}
		in.mv, in.state = mv, s
		st.putInstance(in)
	}
	for n := d.count(6); n > 0 && d.err == nil; n-- {
		k := idemKey{typ: uint8(d.uint()), key: d.str()}
		e := &idemEntry{hash: d.str(), lsn: d.uint(), expires: int64(d.uint()), result: bytes.Clone(d.bytes())}
		if d.err == nil {
			st.idem.set(k, e)
		}
	}
	for n := d.count(1); n > 0 && d.err == nil; n-- {
		id := d.str()
		if d.err == nil {
			if st.tombstones == nil {
				st.tombstones = new(tombstoneSet)
			}
			st.tombstones.set(id, struct{}{})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		for n := d.count(2); n > 0 && d.err == nil; n-- {
			st.epochs = append(st.epochs, epochStart{Epoch: d.uint(), Offset: d.uint()})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected bytes after the last section", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("snapshot is damaged: %v", d.err)
	}
	return st, nil
}

// writeSnapshot writes img durably into dir and returns its path and size.
func writeSnapshot(dir string, img *snapImage) (string, int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, err
	}
	name := fmt.Sprintf("%s%020d%s", snapPrefix, img.lsn, snapSuffix)
	final := filepath.Join(dir, name)
	tmp, err := createTemp(dir, name+".tmp-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	size, err := img.encode(&fileWriter{f: tmp})
	if err == nil {
		err = syncData(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = renameFile(tmp.Name(), final)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return "", 0, fmt.Errorf("writing snapshot %s: %w", final, err)
	}
	return final, size, nil
}

// listSnapshots returns the full snapshots in dir, newest first, with the
// LSN each covers. Temp files left by a crash are removed.
func listSnapshots(dir string) ([]string, []uint64, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	type snap struct {
		path string
		lsn  uint64
	}
	var snaps []snap
	for _, e := range ents {
		n := e.Name()
		if strings.Contains(n, ".tmp-") {
			removeFile(filepath.Join(dir, n))
			continue
		}
		if !strings.HasPrefix(n, snapPrefix) || !strings.HasSuffix(n, snapSuffix) {
			continue
		}
		lsn, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, snapPrefix), snapSuffix), 10, 64)
		if err != nil {
			continue
		}
		snaps = append(snaps, snap{filepath.Join(dir, n), lsn})
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].lsn > snaps[j].lsn })
	paths := make([]string, len(snaps))
	lsns := make([]uint64, len(snaps))
	for i, s := range snaps {
		paths[i], lsns[i] = s.path, s.lsn
	}
	return paths, lsns, nil
}

// compactResult is COMPACT's answer.
type compactResult struct {
	BytesReclaimed   int64  `json:"bytes_reclaimed"`
	SegmentsDeleted  int    `json:"segments_deleted"`
	SnapshotsCreated int    `json:"snapshots_created"`
	SnapshotLSN      uint64 `json:"snapshot_offset"`
	TotalSnapshots   int    `json:"total_snapshots"`
	WalSegments      uint64 `json:"wal_segments"`
}

// compact writes a full snapshot of the state and deletes the WAL segments
// and older snapshots it makes redundant. Writers are paused only while the
// state is copied; the file is written without the lock. One compaction
// runs at a time.
func (s *server) compact() (compactResult, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	var res compactResult
	// Expired idempotency keys are dropped here, so they neither fill memory
	// nor reach the snapshot.
	s.st.pruneIdem(s.now())
	s.st.mu.Lock()
	img := s.st.capture()
	s.st.mu.Unlock()
	// The snapshot must not cover records that a crash could still take
	// back, or the WAL and the snapshot would disagree after a restart.
	if err := s.log.waitDurable(img.lsn); err != nil {
		return res, err
	}
	dir := filepath.Join(s.cfg.DataDir, "snapshots")
	paths, lsns, err := listSnapshots(dir)
	if err != nil {
		return res, err
	}
	var snapSize int64
	if len(lsns) == 0 || lsns[0] < img.lsn {
		_, size, err := writeSnapshot(dir, img)
		// A full disk: the reserve (then the log's spare) is there so
		// that this snapshot can still be written (disk.go).
		for err != nil && isNoSpace(err) && s.disk.freeForSnapshot() {
			_, size, err = writeSnapshot(dir, img)
		}
		if err != nil {
			return res, err
		}
		snapSize = size
		res.SnapshotsCreated = 1
		if paths, lsns, err = listSnapshots(dir); err != nil {
			return res, err
		}
	}
	res.SnapshotLSN = lsns[0]
	// Keep the newest snapshot only: the WAL it needs is all that remains.
	for _, p := range paths[1:] {
		if err := removeFile(p); err != nil {
			return res, err
		}
	}
	if len(paths) > 1 {
		if err := syncDir(dir); err != nil {
			return res, err
		}
	}
	res.TotalSnapshots = 1
	// Keep what subscribers have not read yet.
	keep := lsns[0]
	if need := s.hub.minNeeded(); need > 0 && need-1 < keep {
		keep = need - 1
	}
	res.SegmentsDeleted, res.BytesReclaimed, err = s.log.removeThrough(keep)
	if err != nil {
		return res, err
	}
	res.WalSegments = s.log.stats().SegmentCount
	s.lastCompact.Store(s.now())
	s.compactedAt.Store(lsns[0])
	s.disk.afterCompact(snapSize, img.instances.len())
	s.logger.Info("compacted", "snapshot_lsn", lsns[0], "instances", img.instances.len(),
		"segments_deleted", res.SegmentsDeleted, "bytes_reclaimed", res.BytesReclaimed)
	return res, nil
}

// loadNewestSnapshot returns the state of the newest snapshot in dir, or a
// fresh state when there is none. A damaged newest snapshot is an error:
// the WAL it would need may already be gone, so silently falling back could
// lose data.
func loadNewestSnapshot(dir string, idemTTL int64) (*state, string, error) {
	paths, _, err := listSnapshots(dir)
	if err != nil {
		return nil, "", err
	}
	if len(paths) == 0 {
		return newState(idemTTL), "", nil
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		return nil, "", err
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // as in replayInto
	st, err := decodeSnapshot(data, idemTTL)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", paths[0], err)
	}
	return st, paths[0], nil
}

// instanceSnapshotResult is SNAPSHOT_INSTANCE's answer.
type instanceSnapshotResult struct {
	Checksum   string `json:"checksum"`
	InstanceID string `json:"instance_id"`
	SizeBytes  int    `json:"size_bytes"`
	SnapshotID string `json:"snapshot_id"`
	WalOffset  uint64 `json:"wal_offset"`
}

// writeInstanceSnapshot writes one instance's state as a JSON file named by
// its snapshot id, durably (temp, fsync, rename, dir fsync).
func writeInstanceSnapshot(dir string, in *instance) (instanceSnapshotResult, error) {
	id := "snap-" + newUUID()
	body := encMarshal(struct {
		SnapshotID  string          `json:"snapshot_id"`
		InstanceID  string          `json:"instance_id"`
		Machine     string          `json:"machine"`
		Version     uint32          `json:"version"`
		State       string          `json:"state"`
		Ctx         json.RawMessage `json:"ctx"`
		LastEventID string          `json:"last_event_id,omitempty"`
		WalOffset   uint64          `json:"wal_offset"`
		CreatedAt   int64           `json:"created_at"`
		UpdatedAt   int64           `json:"updated_at"`
	}{id, in.id, in.mv.name, in.mv.version, in.state, in.ctx, in.lastEventID, in.lastLSN, in.createdAt, in.updatedAt})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return instanceSnapshotResult{}, err
	}
	final := filepath.Join(dir, id+".json")
	tmp := final + ".tmp"
	// Read-write: Windows flushes only a handle that may write.
	f, err := openFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		if _, err = writeAt(f, body, 0); err == nil {
			err = syncData(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = renameFile(tmp, final)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return instanceSnapshotResult{}, err
	}
	sum := sha256.Sum256(body)
	return instanceSnapshotResult{hex.EncodeToString(sum[:]), in.id, len(body), id, in.lastLSN}, nil
}

// autoCompact compacts in the background when enough records or WAL bytes
// have accumulated since the last snapshot, at most once per
// CompactMinInterval; and, without waiting for the interval, when the
// disk quota is close or the disk was found full (disk.go). It returns
// when stop is closed.
func (s *server) autoCompact(stop <-chan struct{}, tick time.Duration) {
	c := s.cfg
	if !c.CompactEnabled {
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st := s.log.stats()
		// Disk pressure, only when there is a sealed segment to give back
		// (the active one stays): else a compaction would free nothing.
		byDisk := s.disk.compactNow.Swap(false) ||
			s.disk.pressure(s.disk.usedWith(st.AllocatedBytes)) && st.SegmentCount > 1 && st.LastLSN > s.compactedAt.Load()
		if since := s.now() - s.lastCompact.Load(); since < c.CompactMinInterval.Milliseconds() && !byDisk {
			continue
		}
		byEvents := c.CompactEvents > 0 && st.LastLSN-s.compactedAt.Load() >= c.CompactEvents
		bySize := c.CompactSizeMB > 0 && st.TotalSizeBytes >= c.CompactSizeMB<<20
		if !byEvents && !bySize && !byDisk {
			continue
		}
		if _, err := s.compact(); err != nil {
			s.logger.Error("automatic compaction failed", "err", err)
		}
	}
}
