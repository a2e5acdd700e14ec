package main

import "golang.org/x/sys/unix"

// sysAllocate: macOS has no fallocate. F_PREALLOCATE reserves the missing
// blocks past the physical end of file (in one piece if it can), then
// ftruncate moves the end of file over them, as SQLite and Firefox do.
func sysAllocate(fd uintptr, size int64) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		return err
	}
	if need := size - st.Blocks*512; need > 0 {
		fs := unix.Fstore_t{Flags: unix.F_ALLOCATECONTIG, Posmode: unix.F_PEOFPOSMODE, Length: need}
		if err := unix.FcntlFstore(fd, unix.F_PREALLOCATE, &fs); err != nil {
			fs.Flags = unix.F_ALLOCATEALL
			if err := unix.FcntlFstore(fd, unix.F_PREALLOCATE, &fs); err != nil {
				return err // ENOTSUP (errors.ErrUnsupported): zeros are written instead
			}
		}
	}
	if size <= st.Size {
		return nil
	}
	return eintr(func() error { return unix.Ftruncate(int(fd), size) })
}

// sysSyncData: fsync on macOS hands the data to the drive but leaves it in
// the drive's cache; F_FULLFSYNC also flushes the cache (SQLite's
// full_fsync). File systems that refuse it (SMB) answer ENOTSUP and get a
// plain fsync, as in Go's own (*os.File).Sync.
func sysSyncData(fd uintptr) error {
	return eintr(func() error {
		_, err := unix.FcntlInt(fd, unix.F_FULLFSYNC, 0)
		if err == unix.ENOTSUP {
			err = unix.Fsync(int(fd))
		}
		return err
	})
}

func sysFsync(fd uintptr) error {
	return sysSyncData(fd)
}
