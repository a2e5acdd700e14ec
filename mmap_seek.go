//go:build linux || darwin || freebsd

package main

import "golang.org/x/sys/unix"

// sysDataRegion asks lseek for the next data (SEEK_DATA) at or after off and
// the hole after it (SEEK_HOLE). ENXIO: only holes follow.
func sysDataRegion(fd uintptr, off int64) (start, end int64, more bool, err error) {
	start, err = unix.Seek(int(fd), off, unix.SEEK_DATA)
	if err == unix.ENXIO {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	end, err = unix.Seek(int(fd), start, unix.SEEK_HOLE)
	return start, end, err == nil, err
}
