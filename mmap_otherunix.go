//go:build unix && !linux && !darwin && !freebsd

package main

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Other unix systems (OpenBSD, NetBSD, DragonFly, illumos...): no
// preallocation call that x/sys/unix offers everywhere, so preallocate
// writes zeros; fsync for data; no SEEK_DATA.

func sysAllocate(fd uintptr, size int64) error {
	return errors.ErrUnsupported
}

func sysSyncData(fd uintptr) error {
	return sysFsync(fd)
}

func sysFsync(fd uintptr) error {
	return eintr(func() error { return unix.Fsync(int(fd)) })
}

func sysDataRegion(fd uintptr, off int64) (start, end int64, more bool, err error) {
	return 0, 0, false, errDataRegionUnknown
}
