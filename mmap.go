package main

// mmap.go is the only file that imports golang.org/x/sys/unix. Each function
// is a thin wrapper around one system call so the rest of the code (and its
// fault seams) can stay portable Go.

import (
	"os"

	"golang.org/x/sys/unix"
)

// mmapReadOnly maps size bytes of fd from offset 0, read-only and shared, so
// the mapping sees every pwrite to the file through the page cache.
func mmapReadOnly(fd int, size int64) ([]byte, error) {
	return unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
}

// mmapUnmap releases a mapping made by mmapReadOnly.
func mmapUnmap(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.Munmap(b)
}

// mmapFallocate allocates disk blocks for bytes [0, size) of fd and extends
// the file to size (mode 0), so later writes there cannot fail with ENOSPC.
func mmapFallocate(fd int, size int64) error {
	for {
		err := unix.Fallocate(fd, 0, 0, size)
		if err != unix.EINTR {
			return err
		}
	}
}

// mmapFdatasync flushes fd's data and the metadata needed to read it back.
func mmapFdatasync(fd int) error {
	for {
		err := unix.Fdatasync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// mmapSyncDir fsyncs a directory so that creates, renames and deletes in it
// are durable.
func mmapSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = unix.Fsync(int(d.Fd()))
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mmapDataRegion returns the next region [start, end) of fd at or after off
// that may hold data, skipping holes and (on ext4, xfs) unwritten
// preallocated extents, which read as zeros. more is false when nothing but
// holes follows off. An error means the file system cannot tell.
func mmapDataRegion(fd int, off int64) (start, end int64, more bool, err error) {
	start, err = unix.Seek(fd, off, unix.SEEK_DATA)
	if err == unix.ENXIO {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
	return start, end, err == nil, err
}

// mmapLockFile opens (creating) path and takes an exclusive, non-blocking
// flock on it; closing the file releases the lock.
func mmapLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
