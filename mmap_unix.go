//go:build unix

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// sysMap maps size bytes of fd read-only and shared (PROT_READ, MAP_SHARED):
// the mapping sees every pwrite through the page cache.
func sysMap(fd uintptr, size int) ([]byte, error) {
	return unix.Mmap(int(fd), 0, size, unix.PROT_READ, unix.MAP_SHARED)
}

func sysUnmap(b []byte) error {
	return unix.Munmap(b)
}

// sysSyncDir fsyncs the directory itself, which is what makes a create,
// rename or delete in it durable.
func sysSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = sysFsync(d.Fd())
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// sysLock takes an exclusive flock without waiting (EWOULDBLOCK when another
// open file description holds it).
func sysLock(fd uintptr) error {
	return unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
}

// sysRename is rename(2), atomic on every unix file system.
func sysRename(from, to string) error {
	return os.Rename(from, to)
}

// sysOpen: an open file can be renamed or removed on unix as it is.
func sysOpen(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// eintr retries a system call interrupted by a signal.
func eintr(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
}
