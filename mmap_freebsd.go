package main

import (
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

// sysAllocate is posix_fallocate(2), a raw system call because x/sys/unix
// does not wrap it. It returns its error as the result, not in errno. ZFS
// cannot promise space (EINVAL, or EOPNOTSUPP on newer releases): zeros are
// written instead. On 32-bit FreeBSD the 64-bit offsets would be split
// across registers, so it is left to the zeros there.
func sysAllocate(fd uintptr, size int64) error {
	if strconv.IntSize < 64 {
		return errors.ErrUnsupported
	}
	return eintr(func() error {
		r, _, e := unix.Syscall(unix.SYS_POSIX_FALLOCATE, fd, 0, uintptr(size))
		if e == 0 && r != 0 {
			e = unix.Errno(r)
		}
		switch e {
		case 0:
			return nil
		case unix.EINVAL, unix.EOPNOTSUPP, unix.ENODEV:
			return errors.ErrUnsupported
		}
		return e
	})
}

// sysSyncData is fdatasync(2) (FreeBSD 11.1 and later), also unwrapped by
// x/sys/unix.
func sysSyncData(fd uintptr) error {
	return eintr(func() error {
		if _, _, e := unix.Syscall(unix.SYS_FDATASYNC, fd, 0, 0); e != 0 {
			return e
		}
		return nil
	})
}

func sysFsync(fd uintptr) error {
	return eintr(func() error { return unix.Fsync(int(fd)) })
}
