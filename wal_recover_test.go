package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// walTestSegLayout is where the records of one segment file sit.
type walTestSegLayout struct {
	name  string
	first uint64
	offs  []int64 // offset of each record
	end   int64
	size  int64
}

func (l walTestSegLayout) last() uint64 { return l.first + uint64(len(l.offs)) - 1 }

func walTestLayout(t testing.TB, dir string) []walTestSegLayout {
	t.Helper()
	files, err := walListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []walTestSegLayout
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		l := walTestSegLayout{name: f.name, first: f.first, size: int64(len(data))}
		for off := int64(0); off+walHeaderSize <= int64(len(data)) && binary.LittleEndian.Uint64(data[off+8:]) != 0; {
			l.offs = append(l.offs, off)
			off += walRecordSize(int(binary.LittleEndian.Uint32(data[off:])))
			l.end = off
		}
		out = append(out, l)
	}
	return out
}

// walTestCopyDir copies the files of dir (not the lock) into to: what a
// process that died at this instant would leave on disk. A temporary
// segment renamed meanwhile is skipped. It reports with Errorf so that it
// may run on the log's own goroutines (TestWALCrashPoints).
func walTestCopyDir(t testing.TB, from, to string) {
	t.Helper()
	for _, name := range walTestFiles(t, from) {
		if name == walLockName {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			if !strings.HasSuffix(name, walTempSuffix) {
				t.Errorf("copy %s: %v", name, err)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(to, name), data, 0o644); err != nil {
			t.Errorf("copy %s: %v", name, err)
		}
	}
}

// walTestPatch overwrites bytes of a file at off.
func walTestPatch(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// walTestFlip XORs the byte at off with 0xff.
func walTestFlip(path string, off int64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return walTestPatch(path, off, []byte{data[off] ^ 0xff})
}

type walTestLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *walTestLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *walTestLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestWALRecovery(t *testing.T) {
	template := t.TempDir()
	w := walTestOpen(t, template, walOptions{SegmentSize: walTestSeg})
	const n = 100
	walTestAppend(t, w, n)
	walTestClose(t, w)
	lay := walTestLayout(t, template)
	if len(lay) < 3 {
		t.Fatalf("want at least 3 segments, got %d", len(lay))
	}
	last := lay[len(lay)-1]
	if len(last.offs) < 5 {
		t.Fatalf("last segment has %d records, want at least 5", len(last.offs))
	}
	lastOff := last.offs[len(last.offs)-1]
	// The sector holding the third record of the last segment; the records
	// wholly before it survive its loss.
	lostSector := last.offs[2] &^ (walSectorSize - 1)
	if last.end <= lostSector+walSectorSize {
		t.Fatalf("no record after the sector at %d (last segment ends at %d)", lostSector, last.end)
	}
	lostKeep := last.first - 1
	for i, off := range last.offs {
		if off+walRecordSize(len(walTestPayload(last.first+uint64(i)))) <= lostSector {
			lostKeep = last.first + uint64(i)
		}
	}
	sealed := lay[1]
	in := func(dir string, l walTestSegLayout) string { return filepath.Join(dir, l.name) }
	garbage := []byte("\x01garbage\xff\xfe")

	tests := []struct {
		name      string
		corrupt   func(dir string) error
		wantFirst uint64
		wantLast  uint64
		wantWarn  bool     // a truncation is logged
		wantErr   []string // openWAL refuses; the error names these
	}{
		{"intact", func(string) error { return nil }, 1, n, false, nil},
		{"cut inside the last payload", func(d string) error { return os.Truncate(in(d, last), lastOff+walHeaderSize+3) }, 1, n - 1, true, nil},
		{"cut inside the last header", func(d string) error { return os.Truncate(in(d, last), lastOff+10) }, 1, n - 1, true, nil},
		{"cut one byte short", func(d string) error { return os.Truncate(in(d, last), last.end-1) }, 1, n - 1, true, nil},
		{"cut at the last record", func(d string) error { return os.Truncate(in(d, last), lastOff) }, 1, n - 1, false, nil},
		{"cut at the end of data", func(d string) error { return os.Truncate(in(d, last), last.end) }, 1, n, false, nil},
		{"cut in the middle of the last segment", func(d string) error { return os.Truncate(in(d, last), last.offs[2]+5) }, 1, last.first + 1, true, nil},
		{"cut to zero", func(d string) error { return os.Truncate(in(d, last), 0) }, 1, last.first - 1, false, nil},
		{"zero the middle of the last record", func(d string) error {
			return walTestPatch(in(d, last), lastOff+walHeaderSize, make([]byte, 8))
		}, 1, n - 1, true, nil},
		// Damage followed by intact records is corruption, not a torn tail:
		// the records after it were acknowledged, so the log refuses to open.
		{"zero a header in the middle of the last segment", func(d string) error {
			return walTestPatch(in(d, last), last.offs[2], make([]byte, walHeaderSize))
		}, 0, 0, false, []string{last.name, fmt.Sprintf("offset %d:", last.offs[2]), fmt.Sprintf("at LSN %d", last.first+2), "not a torn tail"}},
		{"flip a payload byte in the middle of the last segment", func(d string) error {
			return walTestFlip(in(d, last), last.offs[1]+walHeaderSize+1)
		}, 0, 0, false, []string{last.name, fmt.Sprintf("offset %d:", last.offs[1]), fmt.Sprintf("at LSN %d", last.first+1), "checksum", "not a torn tail"}},
		{"flip the LSN of a record in the middle of the last segment", func(d string) error {
			return walTestFlip(in(d, last), last.offs[2]+8)
		}, 0, 0, false, []string{last.name, fmt.Sprintf("offset %d:", last.offs[2]), "not a torn tail"}},
		// A lost sector (zeros where a crash kept no write) is a torn tail
		// even with intact records after it: those were written after it,
		// so they were never synced.
		{"a lost sector in the middle of the last segment", func(d string) error {
			return walTestPatch(in(d, last), lostSector, make([]byte, walSectorSize))
		}, 1, lostKeep, true, nil},
		{"flip a CRC byte of the last record", func(d string) error { return walTestFlip(in(d, last), lastOff+16) }, 1, n - 1, true, nil},
		{"huge length in the last record", func(d string) error {
			return walTestPatch(in(d, last), lastOff, []byte{0xff, 0xff, 0xff, 0x7f})
		}, 1, n - 1, true, nil},
		{"garbage right after the tail", func(d string) error { return walTestPatch(in(d, last), last.end, garbage) }, 1, n, true, nil},
		{"garbage after a gap of zeros", func(d string) error { return walTestPatch(in(d, last), last.end+200, garbage) }, 1, n, true, nil},
		{"garbage at the end of preallocated space", func(d string) error {
			return walTestPatch(in(d, last), last.size-3, []byte{1, 2, 3})
		}, 1, n, true, nil},
		{"garbage appended to the file", func(d string) error { return walTestPatch(in(d, last), last.size, garbage) }, 1, n, true, nil},
		{"missing first segment (compacted)", func(d string) error { return os.Remove(in(d, lay[0])) }, lay[1].first, n, false, nil},
		{"missing last segment", func(d string) error { return os.Remove(in(d, last)) }, 1, last.first - 1, false, nil},
		{"garbage in a sealed record", func(d string) error { return walTestFlip(in(d, sealed), sealed.offs[3]+walHeaderSize+1) },
			0, 0, false, []string{sealed.name, fmt.Sprintf("offset %d:", sealed.offs[3]), "checksum"}},
		{"torn tail of a sealed segment", func(d string) error { return os.Truncate(in(d, sealed), sealed.offs[len(sealed.offs)-1]+30) },
			0, 0, false, []string{sealed.name, fmt.Sprintf("offset %d:", sealed.offs[len(sealed.offs)-1])}},
		{"garbage after the end of a sealed segment", func(d string) error { return walTestPatch(in(d, sealed), sealed.size-2, garbage[:2]) },
			0, 0, false, []string{sealed.name, fmt.Sprintf("offset %d:", sealed.size-2), "after the end of data"}},
		{"bad header after the end of a sealed segment", func(d string) error { return walTestPatch(in(d, sealed), sealed.end+1, garbage[:2]) },
			0, 0, false, []string{sealed.name, fmt.Sprintf("offset %d:", sealed.end)}},
		{"missing middle segment", func(d string) error { return os.Remove(in(d, sealed)) },
			0, 0, false, []string{lay[2].name, "offset 0:", "missing segment"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			walTestCopyDir(t, template, dir)
			if err := tt.corrupt(dir); err != nil {
				t.Fatal(err)
			}
			before, err := verifyWAL(dir)
			if err != nil {
				t.Fatal(err)
			}
			var logs walTestLog
			opts := walOptions{SegmentSize: walTestSeg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			w, err := openWAL(dir, opts)
			if tt.wantErr != nil {
				if err == nil {
					w.close()
					t.Fatal("openWAL succeeded, want an error")
				}
				if !errors.Is(err, walErrCorrupt) {
					t.Errorf("error %v is not walErrCorrupt", err)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				if p := before.Problem; p == nil || p.TornTail || !strings.Contains(err.Error(), p.String()) {
					t.Errorf("verifyWAL problem %+v does not match the open error %q", p, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("openWAL: %v", err)
			}
			if p := before.Problem; (p != nil) != tt.wantWarn || (p != nil && !p.TornTail) {
				t.Errorf("verifyWAL before open: problem %+v, want one: %v", p, tt.wantWarn)
			}
			want := walTestWant(tt.wantFirst, tt.wantLast)
			if diff := cmp.Diff(want, walTestReadAll(t, w, 0)); diff != "" {
				t.Errorf("surviving records (-want +got):\n%s", diff)
			}
			lsn := walTestAppend(t, w, 30)
			walTestClose(t, w)
			if got := strings.Contains(logs.String(), "truncating torn tail"); got != tt.wantWarn {
				t.Errorf("truncation logged = %v, want %v; log:\n%s", got, tt.wantWarn, logs.String())
			}
			rep, err := verifyWAL(dir)
			if err != nil || rep.Problem != nil || rep.LastLSN != lsn {
				t.Errorf("verifyWAL after recovery = %+v, %v; want clean up to %d", rep, err, lsn)
			}
			w = walTestOpen(t, dir, opts)
			defer walTestClose(t, w)
			if diff := cmp.Diff(walTestWant(tt.wantFirst, lsn), walTestReadAll(t, w, 0)); diff != "" {
				t.Errorf("after reopen (-want +got):\n%s", diff)
			}
		})
	}
}

// walTestDirSum is every file of dir with its contents, to prove that
// verifyWAL changes nothing.
func walTestDirSum(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	for _, name := range walTestFiles(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(b)
	}
	return out
}

func TestWALVerifyRepair(t *testing.T) {
	template := t.TempDir()
	w := walTestOpen(t, template, walOptions{SegmentSize: walTestSeg})
	walTestAppend(t, w, 150)
	walTestClose(t, w)
	lay := walTestLayout(t, template)
	if len(lay) < 4 {
		t.Fatalf("want at least 4 segments, got %d", len(lay))
	}
	names := func(ls []walTestSegLayout) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.name)
		}
		return out
	}
	tests := []struct {
		name        string
		corrupt     func(dir string) error
		wantProblem *walProblem
		wantLast    uint64 // last record after repair
		wantRemoved []string
	}{
		{"clean", func(string) error { return nil }, nil, 150, nil},
		{"bad record in a sealed segment", func(d string) error {
			return walTestFlip(filepath.Join(d, lay[1].name), lay[1].offs[2]+walHeaderSize)
		}, &walProblem{Segment: lay[1].name, Offset: lay[1].offs[2], Cut: lay[1].offs[2], Reason: fmt.Sprintf("checksum mismatch in record %d", lay[1].first+2)},
			lay[1].first + 1, names(lay[2:])},
		{"gap", func(d string) error { return os.Remove(filepath.Join(d, lay[2].name)) },
			&walProblem{Segment: lay[3].name, Offset: 0, Cut: -1, Reason: fmt.Sprintf("starts at LSN %d but %s ends at LSN %d (missing segment?)", lay[3].first, lay[1].name, lay[1].last())},
			lay[1].last(), names(lay[3:])},
		{"torn tail", func(d string) error {
			l := lay[len(lay)-1]
			return os.Truncate(filepath.Join(d, l.name), l.offs[1]+3)
		}, &walProblem{Segment: lay[len(lay)-1].name, Offset: lay[len(lay)-1].offs[1], Cut: lay[len(lay)-1].offs[1],
			Reason: "record of 16 bytes runs past the end of the segment", TornTail: true},
			lay[len(lay)-1].first, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			walTestCopyDir(t, template, dir)
			if err := tt.corrupt(dir); err != nil {
				t.Fatal(err)
			}
			sum := walTestDirSum(t, dir)
			rep, err := verifyWAL(dir)
			if err != nil {
				t.Fatal(err)
			}
			// The exact "runs past" size depends on the record; compare reasons loosely there.
			if tt.wantProblem != nil && rep.Problem != nil && strings.HasPrefix(tt.wantProblem.Reason, "record of") {
				tt.wantProblem.Reason = rep.Problem.Reason
			}
			if diff := cmp.Diff(tt.wantProblem, rep.Problem); diff != "" {
				t.Errorf("verifyWAL problem (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(sum, walTestDirSum(t, dir)); diff != "" {
				t.Errorf("verifyWAL changed the directory")
			}
			rep, err = repairWAL(dir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRemoved, rep.Removed); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
			after, err := verifyWAL(dir)
			if err != nil || after.Problem != nil || after.LastLSN != tt.wantLast {
				t.Errorf("verifyWAL after repair = %+v, %v; want clean up to %d", after, err, tt.wantLast)
			}
			w := walTestOpen(t, dir, walOptions{SegmentSize: walTestSeg})
			defer walTestClose(t, w)
			if diff := cmp.Diff(walTestWant(1, tt.wantLast), walTestReadAll(t, w, 0)); diff != "" {
				t.Errorf("records after repair (-want +got):\n%s", diff)
			}
			if lsn := walTestAppend(t, w, 1); lsn != tt.wantLast+1 {
				t.Errorf("append after repair got LSN %d, want %d", lsn, tt.wantLast+1)
			}
		})
	}
}

// TestWALCorruptNewestSegment is the whole log in one segment, as in a small
// deployment with 64 MiB segments: a flipped byte in record 5 of 13 must not
// quietly cost records 5..13. verify calls it corruption, the log refuses
// to open and leaves the files alone, and repair truncates on purpose and
// says what it dropped.
func TestWALCorruptNewestSegment(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "wal")
	w := walTestOpen(t, dir, walOptions{})
	walTestAppend(t, w, 13)
	walTestClose(t, w)
	lay := walTestLayout(t, dir)
	if len(lay) != 1 || len(lay[0].offs) != 13 {
		t.Fatalf("layout %+v, want one segment of 13 records", lay)
	}
	seg := filepath.Join(dir, lay[0].name)
	if err := walTestFlip(seg, lay[0].offs[4]+walHeaderSize+2); err != nil {
		t.Fatal(err)
	}
	sum := walTestDirSum(t, dir)

	t.Setenv("RSTMDB_DATA", data)
	var out, errOut strings.Builder
	if code := cmdWAL([]string{"verify"}, &out, &errOut); code != 1 {
		t.Errorf("wal verify exit %d, want 1; output:\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{lay[0].name, fmt.Sprintf("offset %d:", lay[0].offs[4]), "at LSN 5", "corruption", "refuse to start"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("wal verify output does not mention %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "torn tail:") {
		t.Errorf("wal verify calls corruption a torn tail:\n%s", out.String())
	}

	_, err := openWAL(dir, walOptions{})
	if err == nil || !errors.Is(err, walErrCorrupt) {
		t.Fatalf("openWAL = %v, want a corruption error", err)
	}
	for _, want := range []string{lay[0].name, fmt.Sprintf("offset %d:", lay[0].offs[4]), "LSN 5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("open error %q does not mention %q", err, want)
		}
	}
	if diff := cmp.Diff(sum, walTestDirSum(t, dir)); diff != "" {
		t.Errorf("a refused open changed the log")
	}

	out.Reset()
	if code := cmdWAL([]string{"repair"}, &out, &errOut); code != 0 {
		t.Fatalf("wal repair exit %d; output:\n%s%s", code, out.String(), errOut.String())
	}
	if want := "dropped 8 intact records after the damage (up to LSN 13); the log now ends at LSN 4"; !strings.Contains(out.String(), want) {
		t.Errorf("wal repair output does not say %q:\n%s", want, out.String())
	}
	w = walTestOpen(t, dir, walOptions{})
	defer walTestClose(t, w)
	if diff := cmp.Diff(walTestWant(1, 4), walTestReadAll(t, w, 0)); diff != "" {
		t.Errorf("records after repair (-want +got):\n%s", diff)
	}
}
