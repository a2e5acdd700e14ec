package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestPlatformFile drives the platform functions the way the log does:
// preallocate, map, write through the file and read through the mapping,
// sync, rename while open, lock. It runs on every platform, so it is the
// check that a new platform file behaves like the others.
func TestPlatformFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seg.tmp")
	f, err := openFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 1 << 20
	if err := preallocate(f, size); err != nil {
		t.Fatal(err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		t.Fatalf("after preallocate: size %v, err %v; want %d", fi.Size(), err, size)
	}
	data, err := mapFile(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(data, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("preallocated byte %d is not zero", i)
	}
	rec := []byte("a record")
	if _, err := f.WriteAt(rec, 4096); err != nil {
		t.Fatal(err)
	}
	if err := syncData(f); err != nil {
		t.Fatal(err)
	}
	if got := data[4096 : 4096+len(rec)]; !bytes.Equal(got, rec) {
		t.Fatalf("mapping reads %q after the write, want %q", got, rec)
	}
	// The record lies in a region that may hold data, if the file system
	// can tell at all.
	start, end, more, err := dataRegion(f, 0)
	switch {
	case err != nil && !errors.Is(err, errDataRegionUnknown):
		t.Logf("dataRegion: %v (the file system cannot tell)", err)
	case err == nil && (!more || start > 4096 || end < 4096+int64(len(rec))):
		t.Fatalf("dataRegion(0) = [%d, %d) more=%v: misses the record at 4096", start, end, more)
	}
	// Preallocating a smaller size never shrinks the file.
	if err := preallocate(f, size/2); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != size {
		t.Fatalf("preallocate to a smaller size changed the size to %d", fi.Size())
	}
	// A segment is renamed while open and mapped.
	final := filepath.Join(dir, "seg.wal")
	if err := renameFile(path, final); err != nil {
		t.Fatal(err)
	}
	if err := syncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := unmapFile(data); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(final); err != nil || !bytes.Equal(b[4096:4096+len(rec)], rec) {
		t.Fatalf("renamed file: err %v", err)
	}
	// A rename replaces an existing file.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := renameFile(other, final); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(final); string(b) != "x" {
		t.Fatalf("rename did not replace the target: %q", b)
	}
}

// TestPreallocateZeros checks the fallback for platforms and file systems
// without an allocation call: zeros from the end of the file, existing bytes
// kept.
func TestPreallocateZeros(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "z"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("keep")); err != nil {
		t.Fatal(err)
	}
	const size = 3<<20 + 5 // more than one buffer, not a multiple of it
	if err := zeroFill(f, 4, size); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size || string(b[:4]) != "keep" || bytes.ContainsFunc(b[4:], func(r rune) bool { return r != 0 }) {
		t.Fatalf("after zeroFill: %d bytes, prefix %q", len(b), b[:min(len(b), 8)])
	}
	if err := zeroFill(f, size, size); err != nil {
		t.Fatalf("empty range: %v", err)
	}
}

func TestLockFileExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	f, err := lockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := lockFile(path); err == nil {
		g.Close()
		t.Fatal("a second lock on the same file succeeded")
	}
	f.Close()
	g, err := lockFile(path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	g.Close()
}
