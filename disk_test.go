package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const diskTestMachine = `{"machine":"d","version":1,"definition":{"states":["a"],"initial":"a","transitions":[{"from":"a","event":"SET","to":"a"}]}}`

type diskTestStats struct {
	Quota   int64 `json:"disk_quota_bytes"`
	Reserve int64 `json:"disk_reserve_bytes"`
	Used    int64 `json:"disk_used_bytes"`
}

func diskTestWALStats(t *testing.T, c *client) diskTestStats {
	t.Helper()
	var st diskTestStats
	if err := json.Unmarshal(mustOK(t, c, "WAL_STATS", `{}`), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func diskTestCreate(id string, pad int) string {
	return fmt.Sprintf(`{"machine":"d","version":1,"instance_id":%q,"initial_ctx":{"id":%q,"pad":%q}}`, id, id, strings.Repeat("x", pad))
}

// diskTestWaitFor polls cond for up to 10 s.
func diskTestWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// diskTestRefused checks a refusal: a retryable WAL_IO_ERROR saying msg.
func diskTestRefused(t *testing.T, m *message, msg string) {
	t.Helper()
	if m.Status == "ok" || m.Error == nil {
		t.Fatalf("write succeeded, want it refused: %s", m.Raw)
	}
	if m.Error.Code != codeWALIOError || !m.Error.Retryable || !strings.Contains(m.Error.Message, msg) {
		t.Fatalf("refusal = %s, want a retryable %s saying %q", m.Raw, codeWALIOError, msg)
	}
}

// diskTestFill creates instances until a write is refused, with smaller
// and smaller ctx so that the active segment ends up full to the last
// few bytes. It returns the ids created and the last refusal.
func diskTestFill(t *testing.T, c *client, prefix string) ([]string, *message) {
	t.Helper()
	var ids []string
	var refused *message
	for _, pad := range []int{8 << 10, 1 << 10, 0} {
		for i := 0; ; i++ {
			if i == 5000 {
				t.Fatalf("the disk never filled up (pad %d)", pad)
			}
			id := fmt.Sprintf("%s-%d-%d", prefix, pad, i)
			m := call(t, c, "CREATE_INSTANCE", diskTestCreate(id, pad))
			if m.Status != "ok" {
				refused = m
				break
			}
			ids = append(ids, id)
		}
	}
	return ids, refused
}

// diskTestCrashCheck copies the data directory as a kill -9 leaves it (the
// page cache outlives the process; every acknowledged write has been
// through it), opens a server over the copy and compares its state with
// the live one. Compaction is held off while the files are copied.
func diskTestCrashCheck(t *testing.T, ts *testServer) {
	t.Helper()
	s := ts.srv
	s.compactMu.Lock()
	before := dumpState(s.st)
	dst := t.TempDir()
	err := filepath.Walk(ts.cfg.DataDir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(ts.cfg.DataDir, path)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if strings.HasSuffix(path, walTempSuffix) || fi.Name() == diskReserveName {
			return nil // a spare being made; the reserve holds no data
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.Create(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		_, err = io.Copy(out, src)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return err
	})
	s.compactMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ts.cfg
	cfg.DataDir = dst
	s2, err := openServer(cfg, nil)
	if err != nil {
		t.Fatalf("reopening after a crash: %v", err)
	}
	defer s2.close()
	if diff := cmp.Diff(before, dumpState(s2.st)); diff != "" {
		t.Errorf("state after a crash differs (-live +recovered):\n%s", diff)
	}
}

// TestDiskQuota fills a quota on the real disk: writes are refused with a
// retryable WAL_IO_ERROR saying "disk quota" and the quota holds, reads
// keep working, DELETE_INSTANCE may pass it by a segment, COMPACT frees
// space, writes resume without a restart, and a crash keeps everything.
func TestDiskQuota(t *testing.T) {
	ts := startServer(t, func(c *config) {
		c.MaxDiskMB = 8
		c.CompactEnabled = false
		c.compactTick = 10 * time.Millisecond
	})
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", diskTestMachine)
	ids, refused := diskTestFill(t, c, "q")
	diskTestRefused(t, refused, "disk quota")
	st := diskTestWALStats(t, c)
	if st.Quota != 8<<20 || st.Used > st.Quota || st.Used < st.Quota-2<<20 {
		t.Errorf("after filling the quota: %+v, want used within 2 segments under the quota", st)
	}
	diskTestRefused(t, call(t, c, "CREATE_INSTANCE", diskTestCreate("late", 0)), "disk quota")
	mustOK(t, c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, ids[0]))

	// Deletes go past the quota (by at most a segment); other writes do not.
	for _, id := range ids[:len(ids)*3/4] {
		mustOK(t, c, "DELETE_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id))
	}
	if st := diskTestWALStats(t, c); st.Used > st.Quota+1<<20 {
		t.Errorf("after the deletes: %+v, want at most one segment over the quota", st)
	}
	diskTestRefused(t, call(t, c, "CREATE_INSTANCE", diskTestCreate("late", 0)), "disk quota")

	mustOK(t, c, "COMPACT", `{}`)
	for i := range 20 {
		mustOK(t, c, "CREATE_INSTANCE", diskTestCreate(fmt.Sprintf("after-%d", i), 8<<10))
	}
	var info struct {
		Disk diskInfo `json:"disk"`
	}
	mustUnmarshal(t, mustOK(t, c, "INFO", `{}`), &info)
	if info.Disk.QuotaBytes != 8<<20 || info.Disk.UsedBytes <= 0 || info.Disk.UsedBytes > 8<<20 {
		t.Errorf("INFO disk = %+v", info.Disk)
	}
	diskTestCrashCheck(t, ts)
}

// TestDiskQuotaCompactsAhead overwrites a few instances with far more data
// than the quota holds: compaction runs ahead of the quota, so no write is
// ever refused.
func TestDiskQuotaCompactsAhead(t *testing.T) {
	ts := startServer(t, func(c *config) {
		c.MaxDiskMB = 8
		c.CompactEvents, c.CompactSizeMB = 0, 0 // the quota is the only trigger
		c.compactTick = 10 * time.Millisecond
	})
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", diskTestMachine)
	for i := range 16 {
		mustOK(t, c, "CREATE_INSTANCE", diskTestCreate(fmt.Sprintf("o%d", i), 0))
	}
	pad := strings.Repeat("y", 16<<10)
	var written int64
	for i := 0; written < 3*8<<20; i++ {
		p := fmt.Sprintf(`{"instance_id":"o%d","event":"SET","payload":{"pad":%q,"n":%d}}`, i%16, pad, i)
		m := call(t, c, "APPLY_EVENT", p)
		if m.Status != "ok" {
			t.Fatalf("write %d (%d bytes in) refused: %s", i, written, m.Raw)
		}
		written += int64(len(p))
		if st := ts.srv.disk.usedWith(ts.srv.log.stats().AllocatedBytes); st > 8<<20 {
			t.Fatalf("write %d: used %d bytes, over the quota", i, st)
		}
	}
	diskTestCrashCheck(t, ts)
}

// diskTestFullHook makes preallocation fail with ENOSPC while full is set,
// for the log's segments and for the reserve.
func diskTestFullHook(s *server, full *atomic.Bool) {
	hook := func(f *os.File, size int64) error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return preallocate(f, size)
	}
	s.log.mu.Lock()
	s.log.fallocate = hook
	s.log.mu.Unlock()
	s.disk.mu.Lock()
	s.disk.fallocate = hook
	s.disk.mu.Unlock()
}

// TestDiskFullReserve fills the disk with a fault hook: writes are refused
// with a retryable WAL_IO_ERROR, the reserve is released and a compaction
// runs, COMPACT works, and once space is back writes resume and the
// reserve is made again, all without a restart.
func TestDiskFullReserve(t *testing.T) {
	ts := startServer(t, func(c *config) {
		c.CompactEvents, c.CompactSizeMB = 0, 0 // only a full disk triggers compaction
		c.compactTick = 10 * time.Millisecond
	})
	reserve := filepath.Join(ts.cfg.DataDir, diskReserveName)
	if fi, err := os.Stat(reserve); err != nil || fi.Size() < 1<<20 {
		t.Fatalf("reserve at start: %v, %v; want at least one segment", fi, err)
	}
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", diskTestMachine)
	for i := range 50 {
		mustOK(t, c, "CREATE_INSTANCE", diskTestCreate(fmt.Sprintf("f%d", i), 1<<10))
	}
	var full atomic.Bool
	diskTestFullHook(ts.srv, &full)
	full.Store(true)
	ids, refused := diskTestFill(t, c, "full")
	diskTestRefused(t, refused, "no space left on device")
	diskTestWaitFor(t, "the reserve is released", func() bool {
		_, err := os.Stat(reserve)
		return os.IsNotExist(err) && diskTestWALStats(t, c).Reserve == 0
	})
	diskTestWaitFor(t, "a compaction ran", func() bool { return ts.srv.compactedAt.Load() > 0 })
	mustOK(t, c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, ids[len(ids)-1]))
	mustOK(t, c, "COMPACT", `{}`)
	diskTestRefused(t, call(t, c, "CREATE_INSTANCE", diskTestCreate("still-full", 8<<10)), "no space left on device")

	full.Store(false) // space is back: after the next compaction, writes go on
	diskTestResume(t, c, "CREATE_INSTANCE", diskTestCreate("back", 8<<10))
	for i := range 200 {
		mustOK(t, c, "CREATE_INSTANCE", diskTestCreate(fmt.Sprintf("back-%d", i), 8<<10))
	}
	diskTestWaitFor(t, "the reserve is made again", func() bool {
		fi, err := os.Stat(reserve)
		return err == nil && fi.Size() > 1<<20 && diskTestWALStats(t, c).Reserve == fi.Size()
	})
	diskTestCrashCheck(t, ts)
}

// diskTestProcVerify kills p with SIGKILL, starts a server over dir again
// and checks that every acknowledged write is there: acked maps an
// instance to the ctx.n of its last acknowledged write.
func diskTestProcVerify(t *testing.T, p *crashServerProc, dir string, acked map[string]int, env ...string) {
	t.Helper()
	p.kill()
	p = crashStartProc(t, dir, env...)
	defer p.kill()
	c, err := dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	for id, n := range acked {
		var in struct {
			Ctx struct {
				ID string `json:"id"`
				N  int    `json:"n"`
			} `json:"ctx"`
		}
		mustUnmarshal(t, mustOK(t, c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id)), &in)
		if in.Ctx.ID != id || in.Ctx.N != n {
			t.Fatalf("after kill -9: instance %s has ctx %+v, want n %d", id, in.Ctx, n)
		}
	}
}

// diskTestResume retries a write until it succeeds: on a really full disk
// the reserve may be made again and given up again first.
func diskTestResume(t *testing.T, c *client, op, params string) {
	t.Helper()
	for try := 0; ; try++ {
		m := call(t, c, op, params)
		if m.Status == "ok" {
			return
		}
		if try == 100 {
			t.Fatalf("writes did not resume after COMPACT: %s", m.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDiskQuotaKill9 runs the quota case in a real server process: fill
// the quota, read, delete, COMPACT, write again, kill -9, restart.
func TestDiskQuotaKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	dir := t.TempDir()
	env := []string{"RSTMDB_MAX_DISK_MB=8", "RSTMDB_COMPACT_ENABLED=false"}
	p := crashStartProc(t, dir, env...)
	c, err := dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	mustOK(t, c, "PUT_MACHINE", diskTestMachine)
	ids, refused := diskTestFill(t, c, "p")
	diskTestRefused(t, refused, "disk quota")
	mustOK(t, c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, ids[0]))
	for _, id := range ids[:len(ids)/2] {
		mustOK(t, c, "DELETE_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id))
	}
	mustOK(t, c, "COMPACT", `{}`)
	acked := map[string]int{}
	for _, id := range ids[len(ids)/2:] {
		acked[id] = 0
	}
	for i := range 5 {
		id := fmt.Sprintf("after-%d", i)
		diskTestResume(t, c, "CREATE_INSTANCE", diskTestCreate(id, 1<<10))
		acked[id] = 0
	}
	diskTestProcVerify(t, p, dir, acked, env...)
}

// TestDiskTmpfs fills a real 8 MB tmpfs "for other reasons" (a file that
// is not the server's) under an overwrite workload: the write that finds
// the disk full is refused, the reserve is released, COMPACT works, writes
// resume, and a kill -9 keeps everything acknowledged. It needs to mount a
// tmpfs (root, and a sandbox that allows it) and skips itself otherwise.
func TestDiskTmpfs(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root and a sandbox that allows it): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	data := filepath.Join(dir, "data")
	env := []string{"RSTMDB_COMPACT_ENABLED=false"}
	p := crashStartProc(t, data, env...)
	c, err := dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	mustOK(t, c, "PUT_MACHINE", diskTestMachine)
	acked := map[string]int{}
	for i := range 8 {
		id := fmt.Sprintf("o%d", i)
		mustOK(t, c, "CREATE_INSTANCE", diskTestCreate(id, 0))
		acked[id] = 0
	}
	if st := diskTestWALStats(t, c); st.Reserve < 1<<20 {
		t.Fatalf("reserve at start: %+v, want at least a segment", st)
	}

	// Something else fills the disk, to within 3 MB.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	var size int64
	for {
		n, err := filler.Write(chunk)
		size += int64(n)
		if err != nil {
			break
		}
	}
	if err := filler.Truncate(max(size-3<<20, 0)); err != nil {
		t.Fatal(err)
	}
	filler.Close()

	pad := strings.Repeat("z", 8<<10)
	set := func(i int) *message {
		id := fmt.Sprintf("o%d", i%8)
		return call(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"SET","payload":{"n":%d,"pad":%q}}`, id, i, pad))
	}
	var refused *message
	for i := 1; refused == nil; i++ {
		if i == 10000 {
			t.Fatal("the disk never filled up")
		}
		if m := set(i); m.Status != "ok" {
			refused = m
		} else {
			acked[fmt.Sprintf("o%d", i%8)] = i
		}
	}
	diskTestRefused(t, refused, "no space left on device")
	diskTestWaitFor(t, "the reserve is released", func() bool { return diskTestWALStats(t, c).Reserve == 0 })
	mustOK(t, c, "GET_INSTANCE", `{"instance_id":"o0"}`)
	mustOK(t, c, "COMPACT", `{}`)
	for i := 20000; i < 20100; i++ {
		id := fmt.Sprintf("o%d", i%8)
		diskTestResume(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"SET","payload":{"n":%d,"pad":%q}}`, id, i, pad))
		acked[id] = i
	}
	diskTestProcVerify(t, p, data, acked, env...)
}
