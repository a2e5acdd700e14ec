package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// `stmdb restore --from BACKUP --data NEWDIR [--to-offset N | --to-time T]`
// builds a data directory holding the state as of offset N (or as of the
// last record at or before time T; by default the backup's end). It
// refuses a non-empty NEWDIR, a backup that does not verify (naming the
// first bad file and offset) and a target outside the backup's range.
//
// The backup is verified whole first (verifyDir), then the snapshot and
// the records after it are replayed up to the target — which proves the
// result loads, and is the restore speed — and only then is NEWDIR
// written: the snapshot, and the segments up to the target, the one
// holding it cut just after it. `stmdb serve --data NEWDIR` replays those
// records at start, so the restored server keeps the history they carry.

type restoreOptions struct {
	from, data string
	toOffset   *uint64
	toTime     *time.Time
}

func cmdRestore(args []string, stdout, stderr io.Writer) int {
	var o restoreOptions
	var toOffset, toTime string
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.from, "from", "", "backup `DIR` (made by stmdb backup)")
	fs.StringVar(&o.data, "data", "", "new data `DIR`ectory to build (must be empty or absent)")
	fs.StringVar(&toOffset, "to-offset", "", "restore the state after record `N`")
	fs.StringVar(&toTime, "to-time", "", "restore the state as of the last record at or before `RFC3339` time")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: stmdb restore --from BACKUP --data NEWDIR [--to-offset N | --to-time RFC3339]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.from == "" || o.data == "" || fs.NArg() > 0 || (toOffset != "" && toTime != "") {
		fs.Usage()
		return 2
	}
	if toOffset != "" {
		var n uint64
		if _, err := fmt.Sscan(toOffset, &n); err != nil {
			fmt.Fprintf(stderr, "stmdb restore: --to-offset %q is not an offset\n", toOffset)
			return 2
		}
		o.toOffset = &n
	}
	if toTime != "" {
		t, err := time.Parse(time.RFC3339Nano, toTime)
		if err != nil {
			fmt.Fprintf(stderr, "stmdb restore: --to-time: %v\n", err)
			return 2
		}
		o.toTime = &t
	}
	if err := restoreRun(o, stdout); err != nil {
		fmt.Fprintf(stderr, "stmdb restore: %v\n", err)
		return 1
	}
	return 0
}

func restoreRun(o restoreOptions, stdout io.Writer) error {
	if ents, err := os.ReadDir(o.data); err == nil && len(ents) > 0 {
		return fmt.Errorf("--data %s is not empty; restore builds a new data directory", o.data)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, err := os.Stat(filepath.Join(o.from, backupManifestName)); err != nil {
		return fmt.Errorf("%s is not a backup (no %s)", o.from, backupManifestName)
	}
	r := verifyDir(o.from, verifyOptions{target: o.target})
	if r.Problem != nil {
		return fmt.Errorf("the backup in %s does not verify: %s", o.from, r.Problem)
	}
	if r.TargetErr != nil {
		return r.TargetErr
	}
	if err := restoreWrite(r, o.data); err != nil {
		return err
	}
	rate := float64(r.Replayed) / max(r.ReplayTime.Seconds(), 1e-9)
	fmt.Fprintf(stdout, "restored %s to %s: state at offset %d (backup range %d..%d): %d machines, %d instances; replayed %d records in %v (%.0f records/s)\n",
		o.from, o.data, r.Target, r.FirstOffset, r.LastOffset, r.Machines, r.Instances, r.Replayed, r.ReplayTime.Round(time.Millisecond), rate)
	return nil
}

// target picks the offset to restore to, within the backup's range.
func (o restoreOptions) target(r *dirReport) (uint64, error) {
	m := r.Manifest
	switch {
	case o.toOffset != nil:
		n := *o.toOffset
		if n < r.FirstOffset || n > r.LastOffset {
			return 0, fmt.Errorf("--to-offset %d is outside the backup's range %d..%d", n, r.FirstOffset, r.LastOffset)
		}
		return n, nil
	case o.toTime != nil:
		t := o.toTime.UnixMilli()
		lo, hi := parseMillis(m.SnapshotTime), parseMillis(m.LastTime)
		if t < lo || t > hi {
			return 0, fmt.Errorf("--to-time %s is outside the backup's range %s..%s (offsets %d..%d)",
				o.toTime.Format(time.RFC3339Nano), m.SnapshotTime, m.LastTime, r.FirstOffset, r.LastOffset)
		}
		n := r.SnapshotOffset
		stop := errors.New("stop")
		err := r.eachRecord(r.SnapshotOffset+1, r.LastOffset, func(_ string, _ int64, lsn uint64, _ uint8, payload []byte) error {
			if rt, ok := payloadTime(payload); ok && rt > t {
				return stop
			}
			n = lsn
			return nil
		})
		if err != nil && err != stop {
			return 0, err
		}
		return n, nil
	}
	return r.LastOffset, nil
}

// restoreWrite builds the data directory: the snapshot and the log up to
// r.Target, every file synced before its directory.
func restoreWrite(r *dirReport, dst string) error {
	snapDir, walDir := filepath.Join(dst, "snapshots"), filepath.Join(dst, "wal")
	for _, d := range []string{dst, snapDir, walDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	snap := r.Snaps[0].Name
	if err := copyFileDurably(filepath.Join(r.Dir, "snapshots", snap), filepath.Join(snapDir, snap), r.Snaps[0].Size); err != nil {
		return err
	}
	for _, sf := range r.segs {
		if sf.FirstLSN > r.Target || sf.Records == 0 {
			continue
		}
		size := sf.DataBytes
		if sf.LastLSN > r.Target {
			var err error
			if size, err = r.recordEnd(sf, r.Target); err != nil {
				return err
			}
		}
		if err := copyFileDurably(filepath.Join(r.Dir, "wal", sf.Name), filepath.Join(walDir, sf.Name), size); err != nil {
			return err
		}
	}
	for _, d := range []string{snapDir, walDir, dst, filepath.Dir(filepath.Clean(dst))} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// copyFileDurably copies the first size bytes of src to dst and syncs it.
func copyFileDurably(src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.CopyN(out, in, size)
	if err == nil {
		err = syncData(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
