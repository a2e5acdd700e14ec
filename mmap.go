package main

// mmap.go is the storage code's whole view of the operating system: map a
// file, preallocate it, make its data durable, make a directory durable, lock
// a data directory, open and rename files. Each operation is one portable
// function here over a sys* primitive in a small platform file, the way bbolt
// splits bolt_unix.go and bolt_windows.go:
//
//	mmap_unix.go     every unix: mmap, flock, fsync of a directory, rename(2)
//	mmap_linux.go    fallocate, fdatasync
//	mmap_darwin.go   F_PREALLOCATE + ftruncate, F_FULLFSYNC
//	mmap_freebsd.go  posix_fallocate, fdatasync
//	mmap_otherunix.go  other unix: zeros for preallocation, fsync
//	mmap_seek.go     SEEK_DATA / SEEK_HOLE (linux, darwin, freebsd)
//	mmap_windows.go  CreateFileMapping, FlushFileBuffers, LockFileEx, MoveFileEx
//
// Only the platform files import golang.org/x/sys. The functions take the
// *os.File, not a descriptor: on Windows a file is a HANDLE, not an int, and
// the primitives below this file take what (*os.File).Fd returns on every
// platform.

import (
	"errors"
	"fmt"
	"os"
)

// errDataRegionUnknown is what dataRegion returns where the platform or the
// file system cannot tell data from holes; the caller then reads everything.
var errDataRegionUnknown = errors.New("the file system cannot report data regions")

// mapFile maps size bytes of f from offset 0, read-only and shared, so the
// mapping sees every write to the file through the page cache. A zero size
// maps nothing and returns nil.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	if int64(int(size)) != size || size < 0 {
		return nil, fmt.Errorf("cannot map %d bytes on this platform", size)
	}
	return sysMap(f.Fd(), int(size))
}

// unmapFile releases a mapping made by mapFile.
func unmapFile(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return sysUnmap(b)
}

// preallocate allocates disk blocks for bytes [0, size) of f and extends the
// file to size (it never shrinks it), so later writes there cannot fail with
// ENOSPC and no record is ever written into a hole. Where the platform or
// the file system has no allocation call, it writes zeros from the current
// end of file to size instead.
func preallocate(f *os.File, size int64) error {
	err := sysAllocate(f.Fd(), size)
	if errors.Is(err, errors.ErrUnsupported) {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			err = zeroFill(f, fi.Size(), size)
		}
	}
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskAllocate, f: f, size: size})
	}
	return err
}

// zeroFill writes zeros over [from, to) of f.
func zeroFill(f *os.File, from, to int64) error {
	if from >= to {
		return nil
	}
	zeros := make([]byte, min(to-from, 1<<20))
	for off := from; off < to; {
		n, err := f.WriteAt(zeros[:min(int64(len(zeros)), to-off)], off)
		if err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// syncData makes the written data of f durable, with the metadata needed to
// read it back: fdatasync, F_FULLFSYNC on macOS, FlushFileBuffers on Windows.
func syncData(f *os.File) error {
	err := sysSyncData(f.Fd())
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskSync, f: f})
	}
	return err
}

// syncDir makes the creates, renames and deletes in dir durable. On Windows
// a directory cannot be synced and syncDir does nothing (see README,
// "Platforms").
func syncDir(dir string) error {
	err := sysSyncDir(dir)
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskSyncDir, path: dir})
	}
	return err
}

// dataRegion returns the next region [start, end) of f at or after off that
// may hold data, skipping holes and (on ext4, xfs) unwritten preallocated
// extents, which read as zeros. more is false when nothing but holes follows
// off. An error (errDataRegionUnknown where the platform has no SEEK_DATA)
// means the file system cannot tell.
func dataRegion(f *os.File, off int64) (start, end int64, more bool, err error) {
	return sysDataRegion(f.Fd(), off)
}

// lockFile opens (creating) path and takes an exclusive lock on it without
// waiting; closing the file releases the lock.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := sysLock(f.Fd()); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return f, nil
}

// renameFile renames from to to atomically, replacing to if it exists. The
// rename is durable once the directory is synced (syncDir), except on
// Windows, where MoveFileEx writes it through before returning.
func renameFile(from, to string) error {
	err := sysRename(from, to)
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskRename, path: from, to: to})
	}
	return err
}

// openFile is os.OpenFile for files the log renames or deletes while they
// are open: on Windows it shares delete access, which os.OpenFile does not.
func openFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := sysOpen(name, flag, perm)
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskOpen, f: f, path: name, create: flag&(os.O_CREATE|os.O_TRUNC) != 0})
	}
	return f, err
}

// The functions below are the storage code's only ways to change a file's
// contents or a directory, so that diskTrace sees every change.

// writeAt writes b at off of f.
func writeAt(f *os.File, b []byte, off int64) (int, error) {
	n, err := f.WriteAt(b, off)
	if diskTrace != nil && n > 0 {
		diskTrace(diskOp{kind: diskWrite, f: f, off: off, data: append([]byte(nil), b[:n]...)})
	}
	return n, err
}

// truncateFile sets f's size.
func truncateFile(f *os.File, size int64) error {
	err := f.Truncate(size)
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskTruncate, f: f, size: size})
	}
	return err
}

// removeFile deletes path; the delete is durable once its directory is
// synced.
func removeFile(path string) error {
	err := os.Remove(path)
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskRemove, path: path})
	}
	return err
}

// createTemp is os.CreateTemp for files that are renamed into place.
func createTemp(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if diskTrace != nil && err == nil {
		diskTrace(diskOp{kind: diskOpen, f: f, path: f.Name(), create: true})
	}
	return f, err
}

// fileWriter writes a file sequentially through writeAt.
type fileWriter struct {
	f   *os.File
	off int64
}

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := writeAt(w.f, b, w.off)
	w.off += int64(n)
	return n, err
}

// diskTrace, when set, is told of every change the storage code makes to
// files and directories, after it succeeded, and of the log's appends and
// acknowledgements. Only the power-cut simulator (powercut_test.go) sets it,
// before any server runs: it rebuilds from this what a disk could hold
// after a power cut at any moment.
var diskTrace func(diskOp)

type diskOpKind uint8

const (
	diskOpen     diskOpKind = iota + 1 // f opened as path; create: a new empty file
	diskWrite                          // data written to f at off
	diskTruncate                       // f's size set to size
	diskAllocate                       // f preallocated (zeros) to at least size
	diskSync                           // f's data made durable
	diskRename                         // path renamed to to
	diskRemove                         // path deleted
	diskSyncDir                        // path (a directory) made durable
	diskAppend                         // the log appended record lsn (typ, data)
	diskAck                            // the log made every record up to lsn durable: replies may go
)

type diskOp struct {
	kind     diskOpKind
	f        *os.File
	path, to string
	create   bool
	off      int64
	size     int64
	data     []byte
	lsn      uint64
	typ      uint8
}
