package main

// The load tool's fsync baseline: a server that syncs every write, without
// the server.

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// benchFsyncBaseline writes --payload-bytes (rounded up to a multiple of 8,
// plus a 24-byte header, like a WAL record) at increasing offsets of a
// preallocated scratch file and fdatasyncs after every write: the most a
// server that syncs each write on its own can acknowledge per second.
func benchFsyncBaseline(cfg *benchConfig, stderr io.Writer) (*benchReport, error) {
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(cfg.dir, "stmdb-bench-fsync-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const fileSize = 64 << 20
	if cfg.baseline == "prealloc" {
		if err := preallocate(f, fileSize); err != nil {
			return nil, fmt.Errorf("preallocate %s: %w", filepath.Base(f.Name()), err)
		}
		zeros := make([]byte, 1<<20)
		for off := int64(0); off < fileSize; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros, off); err != nil {
				return nil, err
			}
		}
	}
	if err := syncData(f); err != nil {
		return nil, err
	}
	rec := make([]byte, (24+cfg.payloadBytes+7)&^7)
	for i := range rec {
		rec[i] = byte(i)
	}
	var h benchHist
	var done, errs atomic.Uint64
	var ops uint64
	start := time.Now()
	measureStart := start.Add(cfg.warmup)
	measureEnd := measureStart.Add(cfg.duration)
	prog := &benchProgress{
		w: stderr, tty: benchIsTerminal(stderr), interval: cfg.progress, done: &done, errs: &errs,
		phase: func() string {
			if time.Now().Before(measureStart) {
				return "warmup"
			}
			return "run"
		},
	}
	prog.start()
	defer prog.end()
	var off int64
	var last time.Time
	for {
		t0 := time.Now()
		measured := !t0.Before(measureStart)
		if measured && (cfg.n > 0 && int64(ops) >= cfg.n || cfg.n == 0 && !t0.Before(measureEnd)) {
			break
		}
		if off+int64(len(rec)) > fileSize {
			if cfg.baseline == "append" {
				if err := f.Truncate(0); err != nil {
					return nil, err
				}
			}
			off = 0
		}
		if _, err := f.WriteAt(rec, off); err != nil {
			return nil, err
		}
		if err := syncData(f); err != nil {
			return nil, fmt.Errorf("fdatasync: %w", err)
		}
		off += int64(len(rec))
		t1 := time.Now()
		done.Add(1)
		if measured {
			ops++
			h.record(t1.Sub(t0))
			last = t1
		}
	}
	elapsed := cfg.duration
	if cfg.n > 0 {
		elapsed = max(last.Sub(measureStart), 0)
	}
	rep := &benchReport{
		Op: "fsync-baseline", Baseline: cfg.baseline, Conns: 1, Pipeline: 1, PayloadBytes: cfg.payloadBytes, WarmupSec: cfg.warmup.Seconds(),
		ElapsedSec: math.Round(elapsed.Seconds()*1000) / 1000, Ops: ops, Errors: map[string]uint64{},
	}
	rep.fill(&h)
	return rep, nil
}
