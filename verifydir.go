package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// `stmdb verify --data DIR` checks a data directory or a backup without
// changing anything: the manifest (a backup's), every segment's records
// (CRC, dense offsets, no gap between segments: verifyWAL), every
// snapshot's checksum and decodability, each listed file's size and
// SHA-256, and that the snapshot and the log join up. Then it replays the
// log onto the newest snapshot, which proves every record decodes and
// applies, and reports offsets, record counts, instances and sizes.
//
// A torn tail at the end of a data directory's last segment is reported,
// not failed on: recovery cuts it. In a backup, bytes past what the
// manifest lists are the tail of an interrupted run, reported the same way.

type verifyOptions struct {
	noReplay bool
	// target, if set, chooses the offset to replay to once the files are
	// known to be intact (restore's --to-offset and --to-time).
	target func(r *dirReport) (uint64, error)
}

type dirProblem struct {
	File   string // relative to the directory
	Offset int64
	Reason string
}

func (p *dirProblem) String() string {
	return fmt.Sprintf("%s: offset %d: %s", p.File, p.Offset, p.Reason)
}

type dirSnapshot struct {
	Name                string
	Offset              uint64
	Size                int64
	Machines, Instances int
}

type dirReport struct {
	Dir      string
	Manifest *backupManifest // nil for a data directory
	WAL      walReport
	Snaps    []dirSnapshot // newest first
	Tail     string        // a torn or unrecorded tail, reported but harmless

	SnapshotOffset          uint64 // the newest snapshot's (0: none)
	FirstOffset, LastOffset uint64 // the states it can give: snapshot..last record
	Problem                 *dirProblem
	TargetErr               error

	Target              uint64 // the offset replayed to
	Replayed            uint64
	ReplayTime          time.Duration
	Machines, Instances int
	Bytes               int64 // of snapshots and records
	state               *state
	segs                []walSegmentInfo // the segments, clipped to the listed/valid data
}

func (r *dirReport) fail(file string, off int64, format string, args ...any) *dirReport {
	r.Problem = &dirProblem{File: file, Offset: off, Reason: fmt.Sprintf(format, args...)}
	return r
}

// verifyDir checks dir (see above) and, unless opts.noReplay, replays it.
func verifyDir(dir string, opts verifyOptions) *dirReport {
	r := &dirReport{Dir: dir}
	if _, err := os.Stat(dir); err != nil {
		return r.fail(".", 0, "%v", err)
	}
	listed := map[string]backupFile{}
	if data, err := os.ReadFile(filepath.Join(dir, backupManifestName)); err == nil {
		m, off, err := decodeManifest(data)
		if err != nil {
			return r.fail(backupManifestName, off, "%v", err)
		}
		r.Manifest = m
		for _, f := range m.Files {
			listed[f.Path] = f
			fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Path)))
			if err != nil {
				return r.fail(f.Path, 0, "listed in the manifest but missing: %v", err)
			}
			if fi.Size() < f.Size {
				return r.fail(f.Path, fi.Size(), "truncated: %d bytes, the manifest lists %d", fi.Size(), f.Size)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return r.fail(backupManifestName, 0, "%v", err)
	}

	// The log.
	walDir := filepath.Join(dir, "wal")
	if _, err := os.Stat(walDir); err == nil {
		rep, err := verifyWAL(walDir)
		if err != nil {
			return r.fail("wal", 0, "%v", err)
		}
		r.WAL = rep
		r.segs = rep.Segments
		if p := rep.Problem; p != nil {
			file := "wal/" + p.Segment
			lf, isListed := listed[file]
			switch {
			case r.Manifest == nil && p.TornTail:
				r.Tail = fmt.Sprintf("torn tail: %s (recovery cuts it at start)", p)
			case r.Manifest != nil && (!isListed || p.Offset >= lf.Size):
				r.Tail = fmt.Sprintf("unrecorded tail of an interrupted backup: %s (restore ignores it, a resumed backup cuts it)", p)
			default:
				return r.fail(file, p.Offset, "%s", p.Reason)
			}
		}
	}
	if m := r.Manifest; m != nil {
		// Keep the listed part only.
		var segs []walSegmentInfo
		for _, s := range r.segs {
			f, ok := listed["wal/"+s.Name]
			if !ok {
				if s.FirstLSN <= m.LastOffset {
					return r.fail("wal/"+s.Name, 0, "segment holds records %d.. inside the backup's range but is not in the manifest", s.FirstLSN)
				}
				continue
			}
			if f.FirstOffset != s.FirstLSN || s.LastLSN < f.LastOffset {
				return r.fail(f.Path, 0, "holds records %d..%d, the manifest lists %d..%d", s.FirstLSN, s.LastLSN, f.FirstOffset, f.LastOffset)
			}
			s.LastLSN, s.Records, s.DataBytes = f.LastOffset, f.LastOffset-f.FirstOffset+1, f.Size
			segs = append(segs, s)
		}
		r.segs = segs
	} else if n := len(r.segs); n > 0 && r.WAL.Problem != nil {
		r.segs[n-1].LastLSN = r.WAL.LastLSN // the torn tail is not part of it
		if r.WAL.Records == 0 {
			r.segs[n-1].LastLSN = r.segs[n-1].FirstLSN - 1
		}
	}

	// Snapshots, newest first; the newest is what replay starts from.
	names, err := dirListSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		return r.fail("snapshots", 0, "%v", err)
	}
	for _, n := range names {
		file := "snapshots/" + n.name
		if r.Manifest != nil {
			if _, ok := listed[file]; !ok {
				return r.fail(file, 0, "snapshot is not in the manifest")
			}
		}
		data, err := os.ReadFile(filepath.Join(dir, "snapshots", n.name))
		if err != nil {
			return r.fail(file, 0, "%v", err)
		}
		st, err := decodeSnapshot(data, defaultConfig().IdempotencyTTL.Milliseconds())
		if err != nil {
			off := int64(0)
			if strings.Contains(err.Error(), "checksum") {
				off = int64(len(data) - len(snapEndMagic) - 4)
			}
			return r.fail(file, off, "%v", err)
		}
		if st.applied != n.lsn {
			return r.fail(file, 0, "snapshot holds offset %d but is named %d", st.applied, n.lsn)
		}
		machines := 0
		for _, vs := range st.machines {
			machines += len(vs)
		}
		r.Snaps = append(r.Snaps, dirSnapshot{Name: n.name, Offset: n.lsn, Size: int64(len(data)), Machines: machines, Instances: len(st.instances)})
		r.Bytes += int64(len(data))
		if r.state == nil {
			r.state = st
		}
	}
	if r.state == nil {
		r.state = newState(defaultConfig().IdempotencyTTL.Milliseconds())
	} else {
		r.SnapshotOffset = r.Snaps[0].Offset
	}
	if m := r.Manifest; m != nil && (len(r.Snaps) == 0 || r.SnapshotOffset != m.SnapshotOffset) {
		return r.fail(backupManifestName, 0, "the manifest's snapshot at offset %d is not the newest snapshot present", m.SnapshotOffset)
	}

	// Checksums of everything listed (catching what the CRCs do not cover,
	// such as padding).
	for _, f := range r.manifestFiles() {
		if err := checkSHA256(filepath.Join(dir, filepath.FromSlash(f.Path)), f.Size, f.SHA256); err != nil {
			return r.fail(f.Path, 0, "%v", err)
		}
	}

	// The snapshot and the log must join: records snapshot+1..last.
	r.FirstOffset = r.SnapshotOffset
	r.LastOffset = r.SnapshotOffset
	if n := len(r.segs); n > 0 {
		first, last := r.segs[0].FirstLSN, r.segs[n-1].LastLSN
		if first > r.SnapshotOffset+1 {
			return r.fail("wal/"+r.segs[0].Name, 0, "the log starts at record %d but the newest snapshot covers only through %d: records %d..%d are missing",
				first, r.SnapshotOffset, r.SnapshotOffset+1, first-1)
		}
		if last < r.SnapshotOffset {
			return r.fail("wal/"+r.segs[n-1].Name, 0, "the log ends at record %d, before the snapshot's offset %d", last, r.SnapshotOffset)
		}
		r.LastOffset = last
	}
	if m := r.Manifest; m != nil && r.LastOffset != m.LastOffset {
		return r.fail(backupManifestName, 0, "the manifest says the backup ends at %d, the files at %d", m.LastOffset, r.LastOffset)
	}
	for _, s := range r.segs {
		r.Bytes += s.DataBytes
	}
	if opts.noReplay {
		return r
	}
	r.Target = r.LastOffset
	if opts.target != nil {
		if r.Target, r.TargetErr = opts.target(r); r.TargetErr != nil {
			return r
		}
	}
	r.replay()
	return r
}

func (r *dirReport) manifestFiles() []backupFile {
	if r.Manifest == nil {
		return nil
	}
	return r.Manifest.Files
}

// replay applies the records after the snapshot up to r.Target.
func (r *dirReport) replay() {
	start := time.Now()
	from := r.SnapshotOffset + 1
	var cur uint64
	var curFile string
	var curOff int64
	defer func() {
		if p := recover(); p != nil {
			r.fail(curFile, curOff, "replaying record %d: %v", cur, p)
		}
	}()
	st := r.state
	err := r.eachRecord(from, r.Target, func(file string, off int64, lsn uint64, typ uint8, payload []byte) error {
		cur, curFile, curOff = lsn, file, off
		rec, err := decodeRecord(typ, payload)
		if err != nil {
			return &dirProblem{File: file, Offset: off, Reason: fmt.Sprintf("record %d is undecodable: %v", lsn, err)}
		}
		rec.lsn = lsn
		st.apply(rec)
		r.Replayed++
		return nil
	})
	r.ReplayTime = time.Since(start)
	if err != nil {
		var p *dirProblem
		if errors.As(err, &p) {
			r.Problem = p
		} else {
			r.fail("wal", 0, "%v", err)
		}
		return
	}
	r.Instances = len(st.instances)
	r.Machines = 0
	for _, vs := range st.machines {
		r.Machines += len(vs)
	}
}

func (p *dirProblem) Error() string { return p.String() }

// eachRecord calls fn for every record in [from, to] of the verified
// segments, read-only, with its file and byte offset.
func (r *dirReport) eachRecord(from, to uint64, fn func(file string, off int64, lsn uint64, typ uint8, payload []byte) error) error {
	for _, sf := range r.segs {
		if sf.LastLSN < from || sf.FirstLSN > to || sf.Records == 0 {
			continue
		}
		s, err := segOpen(filepath.Join(r.Dir, "wal", sf.Name), sf.FirstLSN, os.O_RDONLY)
		if err != nil {
			return err
		}
		data := s.data[:min(int64(len(s.data)), sf.DataBytes)]
		err = func() error {
			for off := int64(0); off+walHeaderSize <= int64(len(data)); {
				h := data[off : off+walHeaderSize]
				length := int64(binary.LittleEndian.Uint32(h[0:]))
				lsn := binary.LittleEndian.Uint64(h[8:])
				if lsn > to || lsn > sf.LastLSN {
					return nil
				}
				if lsn >= from {
					if err := fn("wal/"+sf.Name, off, lsn, h[4], data[off+walHeaderSize:off+walHeaderSize+length]); err != nil {
						return err
					}
				}
				off += walRecordSize(int(length))
			}
			return nil
		}()
		unmapFile(s.data)
		s.f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// recordEnd returns the byte offset just past record lsn in segment sf.
func (r *dirReport) recordEnd(sf walSegmentInfo, lsn uint64) (int64, error) {
	end := int64(-1)
	err := r.eachRecord(lsn, lsn, func(file string, off int64, l uint64, _ uint8, payload []byte) error {
		if l == lsn {
			end = off + walRecordSize(len(payload))
		}
		return nil
	})
	if err == nil && end < 0 {
		err = fmt.Errorf("record %d not found in %s", lsn, sf.Name)
	}
	return end, err
}

type snapName struct {
	name string
	lsn  uint64
}

// dirListSnapshots lists full snapshots, newest first, without touching
// anything (listSnapshots removes temp files).
func dirListSnapshots(dir string) ([]snapName, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []snapName
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, snapPrefix) || !strings.HasSuffix(n, snapSuffix) {
			continue
		}
		lsn, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, snapPrefix), snapSuffix), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, snapName{n, lsn})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lsn > out[j].lsn })
	return out, nil
}

// checkSHA256 compares the SHA-256 of the first size bytes of path.
func checkSHA256(path string, size int64, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, size); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("SHA-256 mismatch (%s, the manifest lists %s)", got, want)
	}
	return nil
}

func cmdVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data", os.Getenv("RSTMDB_DATA"), "data directory or backup `DIR` (env RSTMDB_DATA)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: stmdb verify --data DIR   (a data directory or a backup; changes nothing)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dir == "" {
		*dir = defaultConfig().DataDir
	}
	r := verifyDir(*dir, verifyOptions{})
	r.print(stdout)
	if r.Problem != nil {
		fmt.Fprintf(stderr, "stmdb verify: %s: %s\n", *dir, r.Problem)
		return 1
	}
	return 0
}

// print writes the report for people.
func (r *dirReport) print(w io.Writer) {
	if m := r.Manifest; m != nil {
		fmt.Fprintf(w, "backup of %s, epoch %d, %s, last updated %s: manifest ok (%d files)\n", m.Server, m.Epoch, m.Stopped, m.UpdatedAt, len(m.Files))
		fmt.Fprintf(w, "  times: snapshot %s, last heard %s\n", m.SnapshotTime, m.LastTime)
	} else {
		fmt.Fprintf(w, "data directory %s\n", r.Dir)
	}
	for _, s := range r.Snaps {
		fmt.Fprintf(w, "snapshots/%s  offset %d  %d machines  %d instances  %d bytes  ok\n", s.Name, s.Offset, s.Machines, s.Instances, s.Size)
	}
	for _, s := range r.segs {
		fmt.Fprintf(w, "wal/%s  records %d..%d (%d)  %d bytes  ok\n", s.Name, s.FirstLSN, s.LastLSN, s.Records, s.DataBytes)
	}
	if r.Tail != "" {
		fmt.Fprintf(w, "tail: %s\n", r.Tail)
	}
	if r.Problem != nil {
		fmt.Fprintf(w, "problem: %s\n", r.Problem)
		return
	}
	fmt.Fprintf(w, "offsets %d..%d: snapshot at %d, %d log records after it, %.1f MB\n", r.FirstOffset, r.LastOffset, r.SnapshotOffset, r.LastOffset-r.SnapshotOffset, float64(r.Bytes)/1e6)
	if r.Target > 0 || r.Replayed > 0 {
		rate := float64(r.Replayed) / max(r.ReplayTime.Seconds(), 1e-9)
		fmt.Fprintf(w, "state at offset %d: %d machines, %d instances (replayed %d records in %v, %.0f records/s)\n", r.Target, r.Machines, r.Instances, r.Replayed, r.ReplayTime.Round(time.Millisecond), rate)
	}
	fmt.Fprintln(w, "ok")
}
