package main

import (
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// sysMap maps a read-only view of the file. Views and WriteFile share the
// cache manager, so the view sees every write (on local volumes).
func sysMap(fd uintptr, size int) ([]byte, error) {
	m, err := windows.CreateFileMapping(windows.Handle(fd), nil, windows.PAGE_READONLY,
		uint32(uint64(size)>>32), uint32(size), nil)
	if err != nil {
		return nil, os.NewSyscallError("CreateFileMapping", err)
	}
	addr, err := windows.MapViewOfFile(m, windows.FILE_MAP_READ, 0, 0, uintptr(size))
	windows.CloseHandle(m) // the view holds the mapping object open
	if err != nil {
		return nil, os.NewSyscallError("MapViewOfFile", err)
	}
	// Read the address as a pointer without converting a uintptr
	// expression, which go vet's unsafeptr check rejects.
	return unsafe.Slice(*(**byte)(unsafe.Pointer(&addr)), size), nil
}

func sysUnmap(b []byte) error {
	return os.NewSyscallError("UnmapViewOfFile",
		windows.UnmapViewOfFile(uintptr(unsafe.Pointer(unsafe.SliceData(b)))))
}

// sysAllocate: a file that is not marked sparse has no holes on NTFS or
// ReFS. Setting the allocation size reserves the clusters (ERROR_DISK_FULL
// now, not at write time); moving the end of file over them makes them
// readable, as zeros. Neither is done for a file already that long: a
// smaller allocation size would truncate it.
func sysAllocate(fd uintptr, size int64) error {
	h := windows.Handle(fd)
	var fi windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(h, &fi); err != nil {
		return os.NewSyscallError("GetFileInformationByHandle", err)
	}
	if int64(fi.FileSizeHigh)<<32|int64(fi.FileSizeLow) >= size {
		return nil
	}
	for _, class := range []uint32{windows.FileAllocationInfo, windows.FileEndOfFileInfo} {
		v := size // FILE_ALLOCATION_INFO and FILE_END_OF_FILE_INFO are one LARGE_INTEGER
		if err := windows.SetFileInformationByHandle(h, class, (*byte)(unsafe.Pointer(&v)), uint32(unsafe.Sizeof(v))); err != nil {
			return os.NewSyscallError("SetFileInformationByHandle", err)
		}
	}
	return nil
}

// sysSyncData is FlushFileBuffers, which also flushes the drive's cache.
func sysSyncData(fd uintptr) error {
	return os.NewSyscallError("FlushFileBuffers", windows.FlushFileBuffers(windows.Handle(fd)))
}

// sysSyncDir does nothing: Windows cannot open a directory for a flush.
// NTFS journals its metadata, and sysRename writes a rename through before
// it returns, but a file's creation or deletion becomes durable only when
// NTFS next commits its log (README, "Platforms").
func sysSyncDir(dir string) error {
	return nil
}

// sysDataRegion: a file that is not sparse has no holes to report.
func sysDataRegion(fd uintptr, off int64) (start, end int64, more bool, err error) {
	return 0, 0, false, errDataRegionUnknown
}

// sysLock locks the first byte of the file, exclusively and without
// waiting (ERROR_LOCK_VIOLATION when another handle holds it). Closing the
// handle releases it.
func sysLock(fd uintptr) error {
	var ol windows.Overlapped
	return windows.LockFileEx(windows.Handle(fd), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}

// sysRename is MoveFileEx replacing the target, and writing the rename
// through to disk before it returns.
func sysRename(from, to string) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	if err := windows.MoveFileEx(f, t, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// sysOpen opens like os.OpenFile but also shares delete access, without
// which an open (or mapped) segment could not be renamed or removed.
// It knows the flags the log uses: O_RDONLY, O_WRONLY, O_RDWR, O_CREATE,
// O_EXCL, O_TRUNC.
func sysOpen(name string, flag int, perm os.FileMode) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	var access uint32 = windows.GENERIC_READ
	switch flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR) {
	case os.O_WRONLY:
		access = windows.GENERIC_WRITE
	case os.O_RDWR:
		access = windows.GENERIC_READ | windows.GENERIC_WRITE
	}
	var mode uint32 = windows.OPEN_EXISTING
	switch {
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		mode = windows.CREATE_NEW
	case flag&os.O_CREATE != 0:
		mode = windows.OPEN_ALWAYS
	}
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		access |= windows.GENERIC_WRITE
	}
	var attrs uint32 = windows.FILE_ATTRIBUTE_NORMAL
	if perm&0o200 == 0 && mode != windows.OPEN_EXISTING {
		attrs = windows.FILE_ATTRIBUTE_READONLY
	}
	h, err := windows.CreateFile(p, access,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE, nil, mode, attrs, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(h), name)
	if flag&os.O_TRUNC != 0 {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}
