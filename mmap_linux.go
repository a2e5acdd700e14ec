package main

import "golang.org/x/sys/unix"

// sysAllocate is fallocate(2) mode 0: blocks for [0, size), the file
// extended to size. A file system without it (EOPNOTSUPP, which is
// errors.ErrUnsupported) gets zeros written instead.
func sysAllocate(fd uintptr, size int64) error {
	return eintr(func() error { return unix.Fallocate(int(fd), 0, 0, size) })
}

// sysSyncData is fdatasync(2): the data and the metadata needed to read it
// back (the size), not the timestamps.
func sysSyncData(fd uintptr) error {
	return eintr(func() error { return unix.Fdatasync(int(fd)) })
}

func sysFsync(fd uintptr) error {
	return eintr(func() error { return unix.Fsync(int(fd)) })
}
