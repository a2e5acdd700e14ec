package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fill writes n events spread over a few instances, with idempotency keys.
func fill(t *testing.T, c *client, prefix string, instances, events int) {
	t.Helper()
	for i := 0; i < instances; i++ {
		mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"%s%d","initial_ctx":{"pad":%q}}`, prefix, i, strings.Repeat("p", 200)))
	}
	for n := 0; n < events; n++ {
		c.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"%s%d","event":"INC","payload":{"n":%d},"event_id":"e%d","idempotency_key":"%s-%d"}`, prefix, n%instances, n, n, prefix, n))
	}
	c.flush()
	for n := 0; n < events; n++ {
		m, err := c.recv()
		if err != nil || m.Status != "ok" {
			t.Fatalf("event %d: %v %v", n, err, m)
		}
	}
}

const ctrMachine = `{"machine":"ctr","version":1,"definition":{"states":["s"],"initial":"s","transitions":[{"from":"s","event":"INC","to":"s"}]}}`

func TestCompactAndRecover(t *testing.T) {
	ts := startServer(t, func(c *config) { c.CompactEnabled = false })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	fill(t, c, "a", 10, 9000) // ~3 MB of records: several 1 MiB segments
	before := ts.srv.log.stats()
	if before.SegmentCount < 3 {
		t.Fatalf("want several segments before compaction, have %d", before.SegmentCount)
	}
	var res compactResult
	// bytes_reclaimed is the disk space freed: whole preallocated segments.
	json.Unmarshal(mustOK(t, c, "COMPACT", `{}`), &res)
	after := ts.srv.log.stats()
	if res.SnapshotsCreated != 1 || res.TotalSnapshots != 1 || res.SegmentsDeleted != int(before.SegmentCount-after.SegmentCount) ||
		res.SegmentsDeleted < 2 || res.WalSegments != after.SegmentCount || res.BytesReclaimed != int64(res.SegmentsDeleted)<<20 {
		t.Errorf("compact result %+v; WAL before %+v after %+v", res, before, after)
	}
	// More writes after the snapshot, then restart: snapshot + WAL tail.
	fill(t, c, "b", 3, 100)
	ts.restart()
	c = ts.dial()
	// Idempotency keys from before the snapshot still dedupe.
	m := call(t, c, "APPLY_EVENT", `{"instance_id":"a1","event":"INC","payload":{"n":1},"event_id":"e1","idempotency_key":"a-1"}`)
	if m.Status != "ok" || !strings.HasPrefix(string(m.Result), `{"applied":false`) {
		t.Errorf("retry of a pre-snapshot key: %s", m.Raw)
	}
	// WAL_READ from a compacted offset starts at the oldest retained record.
	var wr struct {
		Records []struct{ Offset uint64 } `json:"records"`
	}
	json.Unmarshal(mustOK(t, c, "WAL_READ", `{"from_offset":1,"limit":1}`), &wr)
	if len(wr.Records) != 1 || wr.Records[0].Offset != ts.srv.log.firstLSN() || wr.Records[0].Offset <= 1 {
		t.Errorf("WAL_READ after compaction: %+v (first retained %d)", wr, ts.srv.log.firstLSN())
	}
	// A second COMPACT replaces the snapshot; only one remains.
	json.Unmarshal(mustOK(t, c, "COMPACT", `{"force_snapshot":true}`), &res)
	snaps, _ := filepath.Glob(filepath.Join(ts.cfg.DataDir, "snapshots", "full-*.snap"))
	if len(snaps) != 1 || res.SnapshotsCreated != 1 {
		t.Errorf("snapshots after second compaction: %v, %+v", snaps, res)
	}
	// Compacting with nothing new creates nothing.
	json.Unmarshal(mustOK(t, c, "COMPACT", `{}`), &res)
	if res.SnapshotsCreated != 0 || res.SegmentsDeleted != 0 {
		t.Errorf("idle compaction did work: %+v", res)
	}
	// FLUSH_ALL, then compact, then restart: nothing comes back.
	ts.restart()
}

func TestAutoCompaction(t *testing.T) {
	ts := startServer(t, func(c *config) {
		c.CompactEvents = 200
		c.CompactMinInterval = 0
		c.compactTick = 10 * time.Millisecond
	})
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	fill(t, c, "x", 5, 300)
	deadline := time.Now().Add(5 * time.Second)
	for ts.srv.compactedAt.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := ts.srv.compactedAt.Load(); got < 200 {
		t.Fatalf("automatic compaction did not run: snapshot covers %d", got)
	}
}

func TestSnapshotInstance(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", orderMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"order","version":1,"instance_id":"o","initial_ctx":{"amount":3}}`)
	var res instanceSnapshotResult
	json.Unmarshal(mustOK(t, c, "SNAPSHOT_INSTANCE", `{"instance_id":"o"}`), &res)
	data, err := os.ReadFile(filepath.Join(ts.cfg.DataDir, "snapshots", "instances", res.SnapshotID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if res.InstanceID != "o" || res.WalOffset != 2 || res.SizeBytes != len(data) || res.Checksum != sha256Hex(string(data)) || !strings.HasPrefix(res.SnapshotID, "snap-") {
		t.Errorf("result %+v for file %s", res, data)
	}
	runSteps(t, c, []step{{op: "SNAPSHOT_INSTANCE", params: `{"instance_id":"nope"}`, code: codeInstanceNotFound}})
}

// Damage to a snapshot is refused with a clear error, never ignored.
func TestDamagedSnapshotRefused(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	fill(t, c, "d", 2, 10)
	mustOK(t, c, "COMPACT", `{}`)
	ts.stop()
	snaps, _ := filepath.Glob(filepath.Join(ts.cfg.DataDir, "snapshots", "full-*.snap"))
	data, _ := os.ReadFile(snaps[0])
	data[len(data)/2] ^= 0xff
	os.WriteFile(snaps[0], data, 0o644)
	if _, err := openServer(ts.cfg, nil); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("damaged snapshot: err = %v", err)
	}
	data[len(data)/2] ^= 0xff
	os.WriteFile(snaps[0], data, 0o644)
	ts.start()
}

// A failed fdatasync is fatal under every fsync policy: the server's fatal
// hook runs (the real one logs and exits non-zero), no write waiting on the
// sync is acknowledged, later writes fail with WAL_IO_ERROR instead of being
// accepted, and a restart recovers from what is on disk. Under the
// policies that acknowledge before the sync, nothing waits on the commit,
// so only the log itself can report the failure.
func TestFsyncFailureIsFatal(t *testing.T) {
	big := `{"machine":"ctr","version":1,"instance_id":"big-%d","initial_ctx":{"pad":"` + strings.Repeat("x", 16<<10) + `"}}`
	for _, tt := range []struct {
		policy fsyncPolicy
		// trigger makes the server sync; it stops once fatal has fired.
		trigger func(c *client, i int)
	}{
		{fsyncPolicy{Kind: "every_write"}, func(c *client, i int) {
			c.send("CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"lost-%d"}`, i))
		}},
		{fsyncPolicy{Kind: "every_n", N: 2}, func(c *client, i int) {
			c.send("CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"n-%d"}`, i))
		}},
		{fsyncPolicy{Kind: "every_ms", N: 5}, func(c *client, i int) {
			c.send("CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"ms-%d"}`, i))
		}},
		// never syncs when a segment is sealed (1 MiB here).
		{fsyncPolicy{Kind: "never"}, func(c *client, i int) { c.send("CREATE_INSTANCE", fmt.Sprintf(big, i)) }},
	} {
		t.Run(tt.policy.Kind, func(t *testing.T) {
			ts := startServer(t, func(c *config) { c.Fsync = tt.policy })
			c := ts.dial()
			mustOK(t, c, "PUT_MACHINE", ctrMachine)
			mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"before"}`)
			if err := ts.srv.log.sync(); err != nil {
				t.Fatal(err)
			}
			fatal := make(chan error, 16)
			ts.srv.fatal = func(err error) { fatal <- err }
			w := ts.srv.log
			w.mu.Lock()
			w.fdatasync = func(*os.File) error { return syscall.EIO }
			w.mu.Unlock()
			var fired error
			for i := 0; i < 400 && fired == nil; i++ {
				tt.trigger(c, i)
				c.flush()
				select {
				case fired = <-fatal:
				case <-time.After(10 * time.Millisecond):
				}
			}
			if fired == nil {
				select {
				case fired = <-fatal:
				case <-time.After(5 * time.Second):
					t.Fatal("fsync failure was not fatal")
				}
			}
			if !errors.Is(fired, syscall.EIO) {
				t.Errorf("fatal error %v, want EIO", fired)
			}
			c2 := ts.dial()
			m := call(t, c2, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"later"}`)
			if m.Error == nil || m.Error.Code != codeWALIOError {
				t.Errorf("write after fsync failure: %s", m.Raw)
			}
			if tt.policy.Kind == "every_write" {
				c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if m, err := c.recv(); err == nil {
					t.Errorf("write acknowledged after a failed fsync: %s", m.Raw)
				}
			}
			// Shut down without the restart check (the live state holds
			// writes that were never durable, which is why the real server
			// exits), then restart from what is on disk.
			ts.srv.fatal = func(error) {}
			ts.srv.close()
			<-ts.done
			ts.srv = nil
			ts.start()
			c3 := ts.dial()
			mustOK(t, c3, "GET_INSTANCE", `{"instance_id":"before"}`)
			mustOK(t, c3, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"after-restart"}`)
		})
	}
}

// WAL_READ accepts any limit: the official console asks for 10,000. A page
// is cut short at 10,000 records or near the frame limit, whichever comes
// first, and next_offset says where to continue.
func TestWALReadLargeLimit(t *testing.T) {
	type page struct {
		NextOffset uint64 `json:"next_offset"`
		Records    []struct {
			Offset uint64 `json:"offset"`
		} `json:"records"`
	}
	read := func(t *testing.T, c *client, from uint64, limit int64) page {
		var p page
		if err := json.Unmarshal(mustOK(t, c, "WAL_READ", fmt.Sprintf(`{"from_offset":%d,"limit":%d}`, from, limit)), &p); err != nil {
			t.Fatal(err)
		}
		for i, r := range p.Records {
			if r.Offset != max(from, 1)+uint64(i) {
				t.Fatalf("record %d of a page from %d has offset %d", i, from, r.Offset)
			}
		}
		return p
	}

	t.Run("record cap", func(t *testing.T) {
		ts := startServer(t, func(c *config) { c.MaxBatchOps = 1000 })
		c := ts.dial()
		mustOK(t, c, "PUT_MACHINE", ctrMachine)
		for b := range 11 {
			var ops []string
			for k := range 1000 {
				ops = append(ops, fmt.Sprintf(`{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1,"instance_id":"i%d-%d"}}`, b, k))
			}
			mustOK(t, c, "BATCH", `{"mode":"best_effort","ops":[`+strings.Join(ops, ",")+`]}`)
		}
		// 11,001 records: the console's request gets 10,000 of them.
		p := read(t, c, 0, 10000)
		if len(p.Records) != 10000 || p.NextOffset != 10001 {
			t.Fatalf("limit 10000: %d records, next_offset %d; want 10000 and 10001", len(p.Records), p.NextOffset)
		}
		p = read(t, c, 1, 1<<31)
		if len(p.Records) != walReadMaxRecords || p.NextOffset != 1+walReadMaxRecords {
			t.Fatalf("huge limit: %d records, next_offset %d", len(p.Records), p.NextOffset)
		}
		p = read(t, c, p.NextOffset, 1<<31)
		if len(p.Records) != 11001-walReadMaxRecords || p.NextOffset != 11002 {
			t.Fatalf("second page: %d records, next_offset %d", len(p.Records), p.NextOffset)
		}
	})

	t.Run("frame cap", func(t *testing.T) {
		ts := startServer(t, func(c *config) { c.SegmentSizeMB = 8 })
		c := ts.dial()
		c.nc.SetDeadline(time.Now().Add(3 * time.Minute)) // large frames under -race
		mustOK(t, c, "PUT_MACHINE", ctrMachine)
		for i := range 3 {
			mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"ctr","version":1,"instance_id":"big-%d","initial_ctx":{"pad":"%s"}}`, i, strings.Repeat("x", 6<<20)))
		}
		// Three 6 MiB records do not fit in one 16 MiB frame: two do.
		p := read(t, c, 1, 10000)
		if len(p.Records) != 3 || p.NextOffset != 4 {
			t.Fatalf("first page: %d records, next_offset %d; want 3 (the machine and two) and 4", len(p.Records), p.NextOffset)
		}
		p = read(t, c, 4, 10000)
		if len(p.Records) != 1 || p.NextOffset != 5 {
			t.Fatalf("second page: %d records, next_offset %d", len(p.Records), p.NextOffset)
		}
	})
}
