package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// config is every setting of the server. Defaults come from defaultConfig;
// environment variables (RSTMDB_*) override them and flags override those.
type config struct {
	Bind           string
	IdleTimeout    time.Duration
	MaxConnections int
	MaxFrameBytes  int

	AllowInstanceRecreate bool
	AuthRequired          bool
	AuthTokenHashes       []string
	AuthSecretsFile       string
	TLSEnabled            bool
	TLSCertPath           string
	TLSKeyPath            string
	TLSRequireClientCert  bool
	TLSClientCAPath       string
	MetricsEnabled        bool
	MetricsBind           string
	LogLevel              string
	LogFormat             string

	DataDir            string
	SegmentSizeMB      int64
	Fsync              fsyncPolicy
	MaxMachineVersions int
	MaxBatchOps        int
	AllowFlushAll      bool
	IdempotencyTTL     time.Duration

	CompactEnabled     bool
	CompactEvents      uint64        // records since the last snapshot
	CompactSizeMB      int64         // WAL bytes
	CompactMinInterval time.Duration // between automatic compactions
	compactTick        time.Duration // how often the thresholds are checked
}

func defaultConfig() config {
	return config{
		Bind:                  "127.0.0.1:7401",
		IdleTimeout:           300 * time.Second,
		MaxConnections:        1000,
		MaxFrameBytes:         maxPayload,
		MetricsBind:           "0.0.0.0:9090",
		LogLevel:              "info",
		LogFormat:             "text",
		AllowInstanceRecreate: true,
		DataDir:               "./data",
		SegmentSizeMB:         64,
		Fsync:                 fsyncPolicy{Kind: "every_write"},
		MaxBatchOps:           100,
		IdempotencyTTL:        24 * time.Hour,

		CompactEnabled:     true,
		CompactEvents:      10000,
		CompactSizeMB:      100,
		CompactMinInterval: 60 * time.Second,
		compactTick:        time.Second,
	}
}

// applyEnv overrides c from RSTMDB_* variables. A value that does not parse
// is an error naming the variable, never silently ignored.
func (c *config) applyEnv(getenv func(string) string) error {
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	var firstErr error
	num := func(name string, set func(int64)) {
		v := getenv(name)
		if v == "" {
			return
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %q is not a non-negative integer", name, v)
			}
			return
		}
		set(n)
	}
	boolean := func(name string, dst *bool) {
		v := getenv(name)
		if v == "" {
			return
		}
		b, err := strconv.ParseBool(strings.ToLower(v))
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %q is not a boolean", name, v)
			}
			return
		}
		*dst = b
	}
	str("RSTMDB_BIND", &c.Bind)
	str("RSTMDB_DATA", &c.DataDir)
	num("RSTMDB_WAL_SEGMENT_SIZE_MB", func(n int64) { c.SegmentSizeMB = n })
	num("RSTMDB_MAX_MACHINE_VERSIONS", func(n int64) { c.MaxMachineVersions = int(n) })
	num("RSTMDB_MAX_BATCH_OPS", func(n int64) { c.MaxBatchOps = int(n) })
	num("RSTMDB_IDEMPOTENCY_TTL_SECS", func(n int64) { c.IdempotencyTTL = time.Duration(n) * time.Second })
	boolean("RSTMDB_ALLOW_FLUSH_ALL", &c.AllowFlushAll)
	boolean("RSTMDB_COMPACT_ENABLED", &c.CompactEnabled)
	num("RSTMDB_COMPACT_EVENTS", func(n int64) { c.CompactEvents = uint64(n) })
	num("RSTMDB_COMPACT_SIZE_MB", func(n int64) { c.CompactSizeMB = n })
	num("RSTMDB_COMPACT_INTERVAL", func(n int64) { c.CompactMinInterval = time.Duration(n) * time.Second })
	if v := getenv("RSTMDB_FSYNC_POLICY"); v != "" {
		p, err := parseFsyncPolicy(v)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("RSTMDB_FSYNC_POLICY: %v", err)
		}
		c.Fsync = p
	}
	return firstErr
}

// parseFsyncPolicy reads "every_write", "never", "every_n:N" or "every_ms:N".
func parseFsyncPolicy(v string) (fsyncPolicy, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	switch s {
	case "every_write", "everywrite":
		return fsyncPolicy{Kind: "every_write"}, nil
	case "never":
		return fsyncPolicy{Kind: "never"}, nil
	}
	for _, kind := range []string{"every_n", "every_ms"} {
		if rest, ok := strings.CutPrefix(s, kind+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil || n < 1 {
				return fsyncPolicy{Kind: "every_write"}, fmt.Errorf("%q: %s needs a positive integer", v, kind)
			}
			return fsyncPolicy{Kind: kind, N: n}, nil
		}
	}
	return fsyncPolicy{Kind: "every_write"}, fmt.Errorf("%q is not one of every_write, never, every_n:N, every_ms:N", v)
}

func (c config) validate() error {
	if c.SegmentSizeMB < 1 {
		return fmt.Errorf("storage.wal_segment_size_mb must be at least 1")
	}
	if c.MaxBatchOps < 1 {
		return fmt.Errorf("limits.max_batch_ops must be at least 1")
	}
	return nil
}
