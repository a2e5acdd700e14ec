package main

// Configuration: defaults, then a YAML file (RSTMDB_CONFIG or --config),
// then RSTMDB_* environment variables, then flags; the last one wins. Keys,
// defaults and variable names match rstmdb's so existing deployments keep
// working. Unlike rstmdb, nothing is silently ignored: an unknown key or a
// value that does not parse stops the server with a message naming the key,
// variable or flag, because a typo in a durability or auth setting must not
// quietly fall back to a default.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is every setting of the server.
type config struct {
	Bind           string        // network.bind_addr
	IdleTimeout    time.Duration // network.idle_timeout_secs
	MaxConnections int           // network.max_connections

	DataDir               string        // storage.data_dir
	SegmentSizeMB         int64         // storage.wal_segment_size_mb
	Fsync                 fsyncPolicy   // storage.fsync_policy
	MaxMachineVersions    int           // storage.max_machine_versions; 0 = unlimited
	AllowInstanceRecreate bool          // storage.allow_instance_recreate
	AllowFlushAll         bool          // storage.allow_flush_all
	IdempotencyTTL        time.Duration // storage.idempotency_ttl_secs
	MaxCtxBytes           int           // storage.max_ctx_bytes
	MaxDiskMB             int64         // storage.max_disk_mb; 0 = no quota

	MaxBatchOps   int // limits.max_batch_ops
	MaxFrameBytes int // limits.max_frame_bytes

	AuthRequired    bool     // auth.required
	AuthTokenHashes []string // auth.token_hashes, env, flags and secrets file lines; lower-case hex
	AuthSecretsFile string   // auth.secrets_file

	TLSEnabled           bool   // tls.enabled
	TLSCertPath          string // tls.cert_path
	TLSKeyPath           string // tls.key_path
	TLSRequireClientCert bool   // tls.require_client_cert
	TLSClientCAPath      string // tls.client_ca_path

	CompactEnabled     bool
	CompactEvents      uint64        // records since the last snapshot
	CompactSizeMB      int64         // WAL bytes
	CompactMinInterval time.Duration // between automatic compactions
	compactTick        time.Duration // how often the thresholds are checked; not configurable
	idemPruneTick      time.Duration // how often expired idempotency keys are dropped; not configurable
	segmentBytes       int64         // overrides SegmentSizeMB when set: tests that need tiny segments

	MetricsEnabled bool   // metrics.enabled
	MetricsBind    string // metrics.bind_addr

	HTTPBind        string // http.bind_addr; "" disables the HTTP API and console
	HTTPCORSOrigins string // http.cors_origins: comma-separated origins, "*" for any; "" = CORS off

	LogLevel  string // logging.level: debug, info, warn, error
	LogFormat string // logging.format: text, json

	// Replication (replica.go).
	ReplicaOf          string // replication.primary_addr: follow this primary ("" = a primary)
	ReplicationToken   string // replication.token: AUTH bearer token for the primary
	ReplTLS            bool   // replication.tls_enabled: reach the primary over TLS
	ReplTLSCA          string // replication.tls_ca_path
	ReplTLSClientCert  string // replication.tls_client_cert
	ReplTLSClientKey   string // replication.tls_client_key
	ReplTLSInsecure    bool   // replication.tls_insecure
	SyncReplicas       int    // replication.sync_replicas
	SyncTimeoutMS      int64  // replication.sync_timeout_ms; 0 = wait
	ReplicationMaxLag  int64  // replication.max_lag_ms: /readyz bound on a replica's lag
	replicaRebootstrap bool   // serve --rebootstrap: set by cmdServe, not a setting
	replicaRecopy      bool   // copy the primary afresh, dropping the stale data (cmdServe)
}

func defaultConfig() config {
	return config{
		Bind:           "127.0.0.1:7401",
		IdleTimeout:    300 * time.Second,
		MaxConnections: 1000,

		DataDir:               "./data",
		SegmentSizeMB:         64,
		Fsync:                 fsyncPolicy{Kind: "every_write"},
		AllowInstanceRecreate: true,
		IdempotencyTTL:        24 * time.Hour,
		MaxCtxBytes:           cfgDefaultCtx,

		MaxBatchOps:   100,
		MaxFrameBytes: maxPayload,

		CompactEnabled:     true,
		CompactEvents:      10000,
		CompactSizeMB:      100,
		CompactMinInterval: 60 * time.Second,
		compactTick:        time.Second,
		idemPruneTick:      time.Minute,

		MetricsBind: "0.0.0.0:9090",
		HTTPBind:    "127.0.0.1:7480",

		LogLevel:  "info",
		LogFormat: "text",

		ReplicationMaxLag: 5000,
	}
}

// Bounds shared by parsing and validate.
const (
	cfgMaxSecs      = math.MaxInt64 / int64(time.Second) // longest duration a time.Duration holds
	cfgMaxSegmentMB = 65536
	cfgMaxBatchOps  = 10000
	cfgMinFrame     = 1024
	// An instance's ctx may grow to this by default: half the frame limit,
	// so that it plus an event payload of up to the other half always fits
	// in one log record. At most maxPayload: a ctx no request could carry.
	cfgDefaultCtx = maxPayload / 2
)

// setting describes one configurable value and every way to set it. The
// table below is the single source for parsing, --help and the tests.
type setting struct {
	key   string // YAML key, "section.name"
	env   string
	flag  string
	meta  string // placeholder shown in --help
	usage string
	// field points into the config: *string, *int, *int64, *uint64, *bool,
	// *time.Duration (whole seconds), *fsyncPolicy or *[]string (hashes).
	field    func(*config) any
	min, max int64 // integers and seconds, inclusive
	addr     bool  // a host:port string
	emptyOK  bool  // addr: "" is allowed too (disables a listener)
}

var settings = []setting{
	{key: "network.bind_addr", env: "RSTMDB_BIND", flag: "bind", meta: "ADDR", addr: true,
		usage: "host:port to listen on for RCP clients",
		field: func(c *config) any { return &c.Bind }},
	{key: "network.idle_timeout_secs", env: "RSTMDB_IDLE_TIMEOUT", flag: "idle-timeout-secs", meta: "SECS", min: 1, max: cfgMaxSecs,
		usage: "close a connection after this long with no traffic",
		field: func(c *config) any { return &c.IdleTimeout }},
	{key: "network.max_connections", env: "RSTMDB_MAX_CONNECTIONS", flag: "max-connections", meta: "N", min: 1, max: math.MaxInt32,
		usage: "connections accepted at once; more get RATE_LIMITED and are closed",
		field: func(c *config) any { return &c.MaxConnections }},

	{key: "storage.data_dir", env: "RSTMDB_DATA", flag: "data", meta: "DIR",
		usage: "directory holding wal/ and snapshots/",
		field: func(c *config) any { return &c.DataDir }},
	{key: "storage.wal_segment_size_mb", env: "RSTMDB_WAL_SEGMENT_SIZE_MB", flag: "wal-segment-size-mb", meta: "MB", min: 1, max: cfgMaxSegmentMB,
		usage: "size of each WAL segment file",
		field: func(c *config) any { return &c.SegmentSizeMB }},
	{key: "storage.fsync_policy", env: "RSTMDB_FSYNC_POLICY", flag: "fsync-policy", meta: "POLICY",
		usage: "every_write, never, every_n:N (writes) or every_ms:N (milliseconds)",
		field: func(c *config) any { return &c.Fsync }},
	{key: "storage.max_machine_versions", env: "RSTMDB_MAX_MACHINE_VERSIONS", flag: "max-machine-versions", meta: "N", min: 0, max: min(math.MaxUint32, math.MaxInt),
		usage: "versions kept per machine name; 0 = unlimited",
		field: func(c *config) any { return &c.MaxMachineVersions }},
	{key: "storage.allow_instance_recreate", env: "RSTMDB_ALLOW_INSTANCE_RECREATE", flag: "allow-instance-recreate", meta: "BOOL",
		usage: "allow creating an instance again under a deleted instance's id",
		field: func(c *config) any { return &c.AllowInstanceRecreate }},
	{key: "storage.allow_flush_all", env: "RSTMDB_ALLOW_FLUSH_ALL", flag: "allow-flush-all", meta: "BOOL",
		usage: "allow FLUSH_ALL, which erases every machine and instance",
		field: func(c *config) any { return &c.AllowFlushAll }},
	{key: "storage.idempotency_ttl_secs", env: "RSTMDB_IDEMPOTENCY_TTL_SECS", flag: "idempotency-ttl-secs", meta: "SECS", min: 0, max: cfgMaxSecs,
		usage: "how long an idempotency key is remembered",
		field: func(c *config) any { return &c.IdempotencyTTL }},

	{key: "storage.max_ctx_bytes", env: "RSTMDB_MAX_CTX_BYTES", flag: "max-ctx-bytes", meta: "BYTES", min: cfgMinFrame, max: maxPayload,
		usage: "largest ctx an instance may hold (initial_ctx, or after an event's payload is merged)",
		field: func(c *config) any { return &c.MaxCtxBytes }},

	{key: "storage.max_disk_mb", env: "RSTMDB_MAX_DISK_MB", flag: "max-disk-mb", meta: "MB", min: 0, max: math.MaxInt64 >> 20,
		usage: "disk quota of the data directory (WAL, snapshots, reserve); writes past it get WAL_IO_ERROR; 0 = no quota",
		field: func(c *config) any { return &c.MaxDiskMB }},

	{key: "limits.max_batch_ops", env: "RSTMDB_MAX_BATCH_OPS", flag: "max-batch-ops", meta: "N", min: 1, max: cfgMaxBatchOps,
		usage: "operations allowed in one BATCH",
		field: func(c *config) any { return &c.MaxBatchOps }},
	{key: "limits.max_frame_bytes", env: "RSTMDB_MAX_FRAME_BYTES", flag: "max-frame-bytes", meta: "BYTES", min: cfgMinFrame, max: maxPayload,
		usage: "largest request payload accepted",
		field: func(c *config) any { return &c.MaxFrameBytes }},

	{key: "auth.required", env: "RSTMDB_AUTH_REQUIRED", flag: "auth-required", meta: "BOOL",
		usage: "require AUTH before any op but HELLO, AUTH, PING, BYE",
		field: func(c *config) any { return &c.AuthRequired }},
	{key: "auth.token_hashes", env: "RSTMDB_AUTH_TOKEN_HASH", flag: "auth-token-hash", meta: "HEX",
		usage: "SHA-256 (hex) of an accepted token; env and each flag add one to the file's list",
		field: func(c *config) any { return &c.AuthTokenHashes }},
	{key: "auth.secrets_file", env: "RSTMDB_AUTH_SECRETS_FILE", flag: "auth-secrets-file", meta: "FILE",
		usage: "file of token hashes, one a line, # comments",
		field: func(c *config) any { return &c.AuthSecretsFile }},

	{key: "tls.enabled", env: "RSTMDB_TLS_ENABLED", flag: "tls-enabled", meta: "BOOL",
		usage: "serve RCP over TLS only",
		field: func(c *config) any { return &c.TLSEnabled }},
	{key: "tls.cert_path", env: "RSTMDB_TLS_CERT", flag: "tls-cert", meta: "FILE",
		usage: "PEM server certificate chain",
		field: func(c *config) any { return &c.TLSCertPath }},
	{key: "tls.key_path", env: "RSTMDB_TLS_KEY", flag: "tls-key", meta: "FILE",
		usage: "PEM server private key",
		field: func(c *config) any { return &c.TLSKeyPath }},
	{key: "tls.require_client_cert", env: "RSTMDB_TLS_REQUIRE_CLIENT_CERT", flag: "tls-require-client-cert", meta: "BOOL",
		usage: "require a client certificate signed by the client CA (mTLS)",
		field: func(c *config) any { return &c.TLSRequireClientCert }},
	{key: "tls.client_ca_path", env: "RSTMDB_TLS_CLIENT_CA", flag: "tls-client-ca", meta: "FILE",
		usage: "PEM CA certificates that sign client certificates",
		field: func(c *config) any { return &c.TLSClientCAPath }},

	{key: "compaction.enabled", env: "RSTMDB_COMPACT_ENABLED", flag: "compact-enabled", meta: "BOOL",
		usage: "snapshot and trim the WAL automatically",
		field: func(c *config) any { return &c.CompactEnabled }},
	{key: "compaction.events_threshold", env: "RSTMDB_COMPACT_EVENTS", flag: "compact-events", meta: "N", min: 0, max: math.MaxInt64,
		usage: "compact after this many records; 0 = never by count",
		field: func(c *config) any { return &c.CompactEvents }},
	{key: "compaction.size_threshold_mb", env: "RSTMDB_COMPACT_SIZE_MB", flag: "compact-size-mb", meta: "MB", min: 0, max: math.MaxInt64 >> 20,
		usage: "compact when the WAL exceeds this size; 0 = never by size",
		field: func(c *config) any { return &c.CompactSizeMB }},
	{key: "compaction.min_interval_secs", env: "RSTMDB_COMPACT_INTERVAL", flag: "compact-interval-secs", meta: "SECS", min: 0, max: cfgMaxSecs,
		usage: "least time between automatic compactions",
		field: func(c *config) any { return &c.CompactMinInterval }},

	{key: "metrics.enabled", env: "RSTMDB_METRICS_ENABLED", flag: "metrics-enabled", meta: "BOOL",
		usage: "serve Prometheus /metrics and /health over HTTP",
		field: func(c *config) any { return &c.MetricsEnabled }},
	{key: "metrics.bind_addr", env: "RSTMDB_METRICS_BIND", flag: "metrics-bind", meta: "ADDR", addr: true,
		usage: "host:port of the metrics HTTP listener",
		field: func(c *config) any { return &c.MetricsBind }},

	{key: "http.bind_addr", env: "RSTMDB_HTTP_BIND", flag: "http-bind", meta: "ADDR", addr: true, emptyOK: true,
		usage: "host:port of the HTTP API and web console (same TLS and auth as RCP); empty disables it",
		field: func(c *config) any { return &c.HTTPBind }},
	{key: "http.cors_origins", env: "RSTMDB_HTTP_CORS_ORIGINS", flag: "http-cors-origins", meta: "ORIGINS",
		usage: "comma-separated origins allowed to call the HTTP API from a browser (* for any); empty = CORS off",
		field: func(c *config) any { return &c.HTTPCORSOrigins }},

	{key: "replication.primary_addr", env: "RSTMDB_REPLICA_OF", flag: "replica-of", meta: "HOST:PORT", addr: true, emptyOK: true,
		usage: "run as a read-only replica of this primary; empty = a primary",
		field: func(c *config) any { return &c.ReplicaOf }},
	{key: "replication.token", env: "RSTMDB_REPLICATION_TOKEN", flag: "replication-token", meta: "TOKEN",
		usage: "bearer token a replica sends the primary (when the primary has auth.required)",
		field: func(c *config) any { return &c.ReplicationToken }},
	{key: "replication.tls_enabled", env: "RSTMDB_REPLICATION_TLS", flag: "replication-tls", meta: "BOOL",
		usage: "a replica reaches its primary over TLS",
		field: func(c *config) any { return &c.ReplTLS }},
	{key: "replication.tls_ca_path", env: "RSTMDB_REPLICATION_CA_CERT", flag: "replication-ca-cert", meta: "FILE",
		usage: "PEM CA certificates a replica trusts for its primary (implies replication TLS)",
		field: func(c *config) any { return &c.ReplTLSCA }},
	{key: "replication.tls_client_cert", env: "RSTMDB_REPLICATION_CLIENT_CERT", flag: "replication-client-cert", meta: "FILE",
		usage: "PEM client certificate a replica presents to its primary (implies replication TLS)",
		field: func(c *config) any { return &c.ReplTLSClientCert }},
	{key: "replication.tls_client_key", env: "RSTMDB_REPLICATION_CLIENT_KEY", flag: "replication-client-key", meta: "FILE",
		usage: "PEM client key for replication.tls_client_cert",
		field: func(c *config) any { return &c.ReplTLSClientKey }},
	{key: "replication.tls_insecure", env: "RSTMDB_REPLICATION_TLS_INSECURE", flag: "replication-tls-insecure", meta: "BOOL",
		usage: "do not verify the primary's certificate (implies replication TLS)",
		field: func(c *config) any { return &c.ReplTLSInsecure }},
	{key: "replication.sync_replicas", env: "RSTMDB_SYNC_REPLICAS", flag: "sync-replicas", meta: "N", min: 0, max: 64,
		usage: "acknowledge a write only once it is durable on this many replicas too",
		field: func(c *config) any { return &c.SyncReplicas }},
	{key: "replication.sync_timeout_ms", env: "RSTMDB_SYNC_TIMEOUT_MS", flag: "sync-timeout-ms", meta: "MS", min: 0, max: math.MaxInt64 / int64(time.Millisecond),
		usage: "after this long without enough replica acks, degrade to asynchronous replication; 0 = wait",
		field: func(c *config) any { return &c.SyncTimeoutMS }},
	{key: "replication.max_lag_ms", env: "RSTMDB_REPLICATION_MAX_LAG_MS", flag: "replication-max-lag-ms", meta: "MS", min: 0, max: math.MaxInt64 / int64(time.Millisecond),
		usage: "a replica is ready (/readyz) while its lag is at most this",
		field: func(c *config) any { return &c.ReplicationMaxLag }},

	{key: "logging.level", env: "RSTMDB_LOG_LEVEL", flag: "log-level", meta: "LEVEL",
		usage: "debug, info, warn or error",
		field: func(c *config) any { return &c.LogLevel }},
	{key: "logging.format", env: "RSTMDB_LOG_FORMAT", flag: "log-format", meta: "FORMAT",
		usage: "text or json",
		field: func(c *config) any { return &c.LogFormat }},
}

// Keys of the replication section besides those of the settings table.
// rstmdb's shipped configs carry these; stmdb accepts and ignores them
// (replication.role only as standalone: a replica is made by
// replication.primary_addr).
var replicationKeys = []string{
	"role", "mode", "upstream", "max_lag_seconds", "max_lag_entries",
	"auth_token", "auth_token_hashes", "auth_secrets_file", "poll_interval_ms", "heartbeat_interval_secs",
	"reconnect_delay_secs", "reconnect_max_delay_secs", "lag_check_interval_secs",
}

const configEnv = "RSTMDB_CONFIG"

// configError is a refused setting. Key is the YAML key; From says where
// the value came from (a file line, a variable, a flag) when known.
type configError struct {
	Key  string
	From string
	Msg  string
}

func (e *configError) Error() string {
	if e.From == "" {
		return e.Key + ": " + e.Msg
	}
	if strings.HasPrefix(e.From, "--") || strings.HasPrefix(e.From, "RSTMDB_") {
		return fmt.Sprintf("%s: %s (%s)", e.From, e.Msg, e.Key)
	}
	return fmt.Sprintf("%s: %s: %s", e.From, e.Key, e.Msg)
}

func settingByKey(key string) *setting {
	for i := range settings {
		if settings[i].key == key {
			return &settings[i]
		}
	}
	return nil
}

// loadConfig builds the configuration for `stmdb serve args`: defaults,
// then the YAML file (--config, else RSTMDB_CONFIG), then RSTMDB_*
// variables, then flags, then the secrets file; then validate. --help
// prints every setting to stderr and returns flag.ErrHelp.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	from := map[string]string{} // key -> where its current value came from

	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	configPath := fs.String("config", "", "")
	type flagValue struct {
		s   *setting
		val string
	}
	var given []flagValue // in command-line order, so repeated flags apply in order
	for i := range settings {
		s := &settings[i]
		fs.Var(&cfgFlag{isBool: isBoolSetting(s), set: func(v string) error {
			given = append(given, flagValue{s, v})
			return nil
		}}, s.flag, "")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printServeHelp(stderr)
			return c, flag.ErrHelp
		}
		return c, fmt.Errorf("%v (stmdb serve --help lists the flags)", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (stmdb serve takes only flags; boolean flags take --flag=false)", fs.Arg(0))
	}

	path := *configPath
	if path == "" {
		path = getenv(configEnv)
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config file: %w", err)
		}
		if err := c.applyYAML(path, data, from); err != nil {
			return c, err
		}
	}
	if err := c.applyEnvFrom(getenv, from); err != nil {
		return c, err
	}
	if v := getenv("RSTMDB_REPL_ROLE"); v != "" && !strings.EqualFold(v, "standalone") {
		return c, fmt.Errorf("RSTMDB_REPL_ROLE: %q: only standalone is accepted; a replica is made by RSTMDB_REPLICA_OF", v)
	}
	for _, g := range given {
		name := "--" + g.s.flag
		if err := c.setString(g.s, g.val); err != nil {
			return c, &configError{Key: g.s.key, From: name, Msg: err.Error()}
		}
		from[g.s.key] = name
	}
	if err := c.loadSecretsFile(); err != nil {
		return c, &configError{Key: "auth.secrets_file", From: from["auth.secrets_file"], Msg: err.Error()}
	}
	if err := c.validate(); err != nil {
		var ce *configError
		if errors.As(err, &ce) && ce.From == "" {
			ce.From = from[ce.Key]
		}
		return c, err
	}
	return c, nil
}

// cfgFlag collects a flag's raw text; values are applied after the file
// and the environment so that flags win regardless of their position.
type cfgFlag struct {
	isBool bool
	set    func(string) error
}

func (f *cfgFlag) String() string     { return "" }
func (f *cfgFlag) Set(v string) error { return f.set(v) }
func (f *cfgFlag) IsBoolFlag() bool   { return f.isBool }

func isBoolSetting(s *setting) bool {
	_, ok := s.field(new(config)).(*bool)
	return ok
}

// applyEnv overrides c from RSTMDB_* variables. An empty variable counts as
// unset. A value that does not parse is an error naming the variable,
// never silently ignored.
func (c *config) applyEnv(getenv func(string) string) error {
	return c.applyEnvFrom(getenv, map[string]string{})
}

func (c *config) applyEnvFrom(getenv func(string) string, from map[string]string) error {
	for i := range settings {
		s := &settings[i]
		v := getenv(s.env)
		if v == "" {
			continue
		}
		if err := c.setString(s, v); err != nil {
			return &configError{Key: s.key, From: s.env, Msg: err.Error()}
		}
		from[s.key] = s.env
	}
	return nil
}

// setString sets one setting from its env or flag text.
func (c *config) setString(s *setting, v string) error {
	switch p := s.field(c).(type) {
	case *string:
		return c.setStr(s, p, v)
	case *bool:
		b, err := parseEnvBool(v)
		if err != nil {
			return err
		}
		*p = b
		return nil
	case *fsyncPolicy:
		fp, err := parseFsyncPolicy(v)
		if err != nil {
			return err
		}
		*p = fp
		return nil
	case *[]string:
		h, err := normalizeHash(v)
		if err != nil {
			return err
		}
		*p = append(*p, h)
		return nil
	}
	n, err := parseCount(strings.TrimSpace(v), s)
	if err != nil {
		return err
	}
	c.setInt(s, n)
	return nil
}

func (c *config) setStr(s *setting, p *string, v string) error {
	if s.addr && (v != "" || !s.emptyOK) {
		if err := checkAddr(v); err != nil {
			return err
		}
	}
	switch s.key {
	case "logging.level":
		v = strings.ToLower(v)
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, v) {
			return fmt.Errorf("%q is not one of debug, info, warn, error", v)
		}
	case "logging.format":
		v = strings.ToLower(v)
		if v != "text" && v != "json" {
			return fmt.Errorf("%q is not one of text, json", v)
		}
	}
	*p = v
	return nil
}

// setInt stores an integer that parseCount has range-checked for s.
func (c *config) setInt(s *setting, n int64) {
	switch p := s.field(c).(type) {
	case *int:
		*p = int(n)
	case *int64:
		*p = n
	case *uint64:
		*p = uint64(n)
	case *time.Duration:
		*p = time.Duration(n) * time.Second
	}
}

// parseCount reads a decimal integer within s's bounds.
func parseCount(v string, s *setting) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("%q is out of range %d..%d", v, s.min, s.max)
		}
		return 0, fmt.Errorf("%q is not an integer", v)
	}
	if n < s.min || n > s.max {
		return 0, fmt.Errorf("%d is out of range %d..%d", n, s.min, s.max)
	}
	return n, nil
}

// parseEnvBool accepts 1, 0, true and false in any case: the forms
// rstmdb's documentation uses, and nothing a typo could produce by chance.
func parseEnvBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (1, 0, true or false)", v)
}

// normalizeHash trims and lower-cases a token hash and checks that it is a
// SHA-256 digest in hex, the only form AUTH can ever match.
func normalizeHash(v string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(v))
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a SHA-256 hash (64 hex digits; rstmdb-cli hash-token makes one)", v)
	}
	return h, nil
}

// checkAddr requires host:port with a numeric port; the host may be empty
// (all interfaces), an IP or a host name.
func checkAddr(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port", v)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number 0..65535", v, port)
	}
	if host == "" || net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("%q: host name too long", v)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q: %q is neither an IP address nor a host name", v, host)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("%q: %q is neither an IP address nor a host name", v, host)
			}
		}
	}
	return nil
}

// applyYAML applies a configuration file. Every key must be known; a value
// of the wrong type is refused with its line.
func (c *config) applyYAML(file string, data []byte, from map[string]string) error {
	root, err := yamlParse(file, data)
	if err != nil {
		return err
	}
	if root.isNull() {
		return nil
	}
	if root.Kind != yamlMap {
		return &yamlError{File: file, Line: root.Line, Msg: "the top level must be a map of sections (network:, storage:, ...)"}
	}
	sections := map[string]bool{}
	for _, s := range settings {
		sections[strings.SplitN(s.key, ".", 2)[0]] = true
	}
	at := func(line int) string { return fmt.Sprintf("%s:%d", file, line) }
	for _, sec := range root.Entries {
		inert := map[string]bool{}
		if sec.Key == "replication" {
			if err := checkReplication(file, sec.Value); err != nil {
				return err
			}
			// rstmdb's files say role: standalone or mode: async where
			// its sync settings are not in effect; so they are not here.
			for _, e := range sec.Value.Entries {
				if e.Value.Kind == yamlScalar && (e.Key == "role" && e.Value.Value == "standalone" || e.Key == "mode" && e.Value.Value == "async") {
					inert["replication.sync_replicas"], inert["replication.sync_timeout_ms"] = true, true
				}
			}
		}
		if !sections[sec.Key] {
			return &yamlError{File: file, Line: sec.Line, Msg: fmt.Sprintf("unknown section '%s'", sec.Key)}
		}
		if sec.Value.isNull() {
			continue
		}
		if sec.Value.Kind != yamlMap {
			return &yamlError{File: file, Line: sec.Value.Line, Msg: fmt.Sprintf("'%s' must be a map of settings, not a %s", sec.Key, sec.Value.Kind)}
		}
		for _, e := range sec.Value.Entries {
			key := sec.Key + "." + e.Key
			s := settingByKey(key)
			if s == nil && sec.Key == "replication" || inert[key] {
				continue // an rstmdb key, checked above
			}
			if s == nil {
				return &yamlError{File: file, Line: e.Line, Msg: fmt.Sprintf("unknown key '%s'", key)}
			}
			if e.Value.isNull() {
				continue // as if absent: the default stays
			}
			if err := c.setYAML(s, e.Value); err != nil {
				line := e.Value.Line
				var le *lineError
				if errors.As(err, &le) {
					line = le.line
				}
				return &configError{Key: key, From: at(line), Msg: err.Error()}
			}
			from[key] = at(e.Line)
		}
	}
	return nil
}

func checkReplication(file string, n *yamlNode) error {
	if n.isNull() {
		return nil
	}
	if n.Kind != yamlMap {
		return &yamlError{File: file, Line: n.Line, Msg: "'replication' must be a map of settings"}
	}
	for _, e := range n.Entries {
		if settingByKey("replication."+e.Key) != nil {
			continue
		}
		if !slices.Contains(replicationKeys, e.Key) {
			return &yamlError{File: file, Line: e.Line, Msg: fmt.Sprintf("unknown key 'replication.%s'", e.Key)}
		}
		if e.Key == "role" && !e.Value.isNull() && (e.Value.Kind != yamlScalar || e.Value.Value != "standalone") {
			return &yamlError{File: file, Line: e.Line, Msg: "replication.role: only standalone is accepted; a replica is made by replication.primary_addr"}
		}
	}
	return nil
}

// setYAML sets one setting from its YAML value. Numbers and booleans must be
// plain scalars (a quoted "64" is a string in YAML); strings may be either.
func (c *config) setYAML(s *setting, n *yamlNode) error {
	switch p := s.field(c).(type) {
	case *fsyncPolicy:
		fp, err := fsyncFromYAML(n)
		if err != nil {
			return err
		}
		*p = fp
		return nil
	case *[]string:
		if n.Kind != yamlList {
			return fmt.Errorf("expected a list of hashes, got a %s", n.Kind)
		}
		for _, item := range n.Items {
			if item.Kind != yamlScalar || item.Tag != "" {
				return &lineError{item.Line, fmt.Sprintf("expected a hash string, got a %s", item.Kind)}
			}
			h, err := normalizeHash(item.Value)
			if err != nil {
				return &lineError{item.Line, err.Error()}
			}
			*p = append(*p, h)
		}
		return nil
	}
	if n.Kind != yamlScalar || n.Tag != "" {
		what := n.Kind.String()
		if n.Tag != "" {
			what = "tagged value " + n.Tag
		}
		return fmt.Errorf("expected a single value, got a %s", what)
	}
	switch p := s.field(c).(type) {
	case *string:
		return c.setStr(s, p, n.Value)
	case *bool:
		if n.Style != yamlPlain {
			return fmt.Errorf("expected true or false, got the quoted string %q", n.Value)
		}
		switch strings.ToLower(n.Value) {
		case "true":
			*p = true
		case "false":
			*p = false
		default:
			return fmt.Errorf("expected true or false, got %q", n.Value)
		}
		return nil
	}
	if n.Style != yamlPlain {
		return fmt.Errorf("expected an integer, got the quoted string %q", n.Value)
	}
	v, err := parseCount(n.Value, s)
	if err != nil {
		return err
	}
	c.setInt(s, v)
	return nil
}

// lineError places an error inside a value on a line of its own (a list
// item), so the message points at the item rather than at its key.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return e.msg }

// fsyncFromYAML accepts every spelling in use: the scalars every_write and
// never (and the env form every_n:N), the tag form `!every_n 100` that
// rstmdb's parser requires, and the map form `{every_ms: 100}` that its
// documentation and shipped configs show.
func fsyncFromYAML(n *yamlNode) (fsyncPolicy, error) {
	const forms = "use every_write, never, every_n: N, every_ms: N or !every_n N"
	switch {
	case n.Kind == yamlScalar && n.Tag != "":
		kind := strings.TrimPrefix(n.Tag, "!")
		if kind != "every_n" && kind != "every_ms" {
			return fsyncPolicy{}, fmt.Errorf("unknown tag %s; %s", n.Tag, forms)
		}
		return fsyncParam(kind, n)
	case n.Kind == yamlScalar:
		return parseFsyncPolicy(n.Value)
	case n.Kind == yamlMap:
		if len(n.Entries) != 1 {
			return fsyncPolicy{}, fmt.Errorf("the map form takes exactly one key, every_n or every_ms; got %d", len(n.Entries))
		}
		e := n.Entries[0]
		if e.Key != "every_n" && e.Key != "every_ms" {
			return fsyncPolicy{}, fmt.Errorf("unknown policy %q in the map form; %s", e.Key, forms)
		}
		if e.Value.Kind != yamlScalar || e.Value.Tag != "" {
			return fsyncPolicy{}, fmt.Errorf("%s needs a positive integer", e.Key)
		}
		return fsyncParam(e.Key, e.Value)
	}
	return fsyncPolicy{}, fmt.Errorf("expected a policy, got a list; %s", forms)
}

func fsyncParam(kind string, n *yamlNode) (fsyncPolicy, error) {
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < 1 || n.Style != yamlPlain {
		return fsyncPolicy{}, fmt.Errorf("%s needs a positive integer, got %q", kind, n.Value)
	}
	return fsyncPolicy{Kind: kind, N: v}, nil
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

// formatFsyncPolicy is the inverse of parseFsyncPolicy.
func formatFsyncPolicy(p fsyncPolicy) string {
	switch p.Kind {
	case "every_n", "every_ms":
		return fmt.Sprintf("%s:%d", p.Kind, p.N)
	case "":
		return "every_write"
	}
	return p.Kind
}

// loadSecretsFile appends the hashes of auth.secrets_file: one a line,
// trimmed, blank lines and # comments skipped.
func (c *config) loadSecretsFile() error {
	if c.AuthSecretsFile == "" {
		return nil
	}
	data, err := os.ReadFile(c.AuthSecretsFile)
	if err != nil {
		return err
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		h, err := normalizeHash(line)
		if err != nil {
			return fmt.Errorf("%s:%d: %v", c.AuthSecretsFile, i+1, err)
		}
		c.AuthTokenHashes = append(c.AuthTokenHashes, h)
	}
	return nil
}

// validate checks the whole configuration, however it was built: ranges,
// and the rules that tie settings together. Errors are *configError.
func (c config) validate() error {
	bad := func(key, format string, args ...any) error {
		return &configError{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	for i := range settings {
		s := &settings[i]
		var n int64
		switch p := s.field(&c).(type) {
		case *string:
			if s.addr && (*p != "" || !s.emptyOK) {
				if err := checkAddr(*p); err != nil {
					return bad(s.key, "%v", err)
				}
			}
			continue
		case *int:
			n = int64(*p)
		case *int64:
			n = *p
		case *uint64:
			if *p > math.MaxInt64 {
				return bad(s.key, "%d is out of range %d..%d", *p, s.min, s.max)
			}
			n = int64(*p)
		case *time.Duration:
			if *p < time.Duration(s.min)*time.Second {
				return bad(s.key, "%v is less than %ds", *p, s.min)
			}
			continue // at most cfgMaxSecs by the type's own range
		default:
			continue
		}
		if n < s.min || n > s.max {
			return bad(s.key, "%d is out of range %d..%d", n, s.min, s.max)
		}
	}
	if c.DataDir == "" {
		return bad("storage.data_dir", "must not be empty")
	}
	switch c.Fsync.Kind {
	case "every_write", "never":
	case "every_n", "every_ms":
		if c.Fsync.N < 1 {
			return bad("storage.fsync_policy", "%s needs a positive integer, got %d", c.Fsync.Kind, c.Fsync.N)
		}
	default:
		return bad("storage.fsync_policy", "unknown policy %q", c.Fsync.Kind)
	}
	for _, h := range c.AuthTokenHashes {
		if n, err := normalizeHash(h); err != nil || n != h {
			return bad("auth.token_hashes", "%q is not a lower-case SHA-256 hash (64 hex digits)", h)
		}
	}
	if c.AuthRequired && len(c.AuthTokenHashes) == 0 {
		return bad("auth.required", "auth is required but no token hashes are configured (auth.token_hashes, RSTMDB_AUTH_TOKEN_HASH or auth.secrets_file)")
	}
	if c.TLSEnabled {
		for _, f := range []struct{ key, path string }{{"tls.cert_path", c.TLSCertPath}, {"tls.key_path", c.TLSKeyPath}} {
			if f.path == "" {
				return bad(f.key, "required when tls.enabled is true")
			}
			if err := checkReadable(f.path); err != nil {
				return bad(f.key, "%v", err)
			}
		}
	}
	if c.TLSRequireClientCert {
		if !c.TLSEnabled {
			return bad("tls.require_client_cert", "needs tls.enabled: client certificates exist only over TLS")
		}
		if c.TLSClientCAPath == "" {
			return bad("tls.client_ca_path", "required when tls.require_client_cert is true")
		}
		if err := checkReadable(c.TLSClientCAPath); err != nil {
			return bad("tls.client_ca_path", "%v", err)
		}
	}
	if c.MaxDiskMB != 0 && c.MaxDiskMB < diskMinQuotaSegments*c.SegmentSizeMB {
		return bad("storage.max_disk_mb", "%d MB cannot hold the WAL's working set: at least %d segments of %d MB (storage.wal_segment_size_mb) are needed", c.MaxDiskMB, diskMinQuotaSegments, c.SegmentSizeMB)
	}
	if c.idemPruneTick <= 0 {
		return bad("storage.idempotency_ttl_secs", "internal prune interval must be positive")
	}
	if c.compactTick <= 0 {
		return bad("compaction", "internal check interval must be positive")
	}
	for _, f := range []struct {
		key, v string
		ok     []string
	}{{"logging.level", c.LogLevel, []string{"debug", "info", "warn", "error"}}, {"logging.format", c.LogFormat, []string{"text", "json"}}} {
		if !slices.Contains(f.ok, f.v) {
			return bad(f.key, "%q is not one of %s", f.v, strings.Join(f.ok, ", "))
		}
	}
	return nil
}

// checkReadable opens path so that a missing or unreadable certificate is
// reported at start, not at the first TLS handshake.
func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// printServeHelp lists every setting with its flag, YAML key, variable,
// default and meaning.
func printServeHelp(w io.Writer) {
	def := defaultConfig()
	fmt.Fprintf(w, `usage: stmdb serve [flags]

Each setting comes from, in increasing precedence: its default, the YAML file
named by --config or %s, its RSTMDB_* environment variable, its flag.
Booleans take 1, 0, true or false (a bare boolean flag means true).

  --config FILE
        YAML configuration file (env %s)
`, configEnv, configEnv)
	for i := range settings {
		s := &settings[i]
		arg := " " + s.meta
		if isBoolSetting(s) {
			arg = "[=" + s.meta + "]"
		}
		fmt.Fprintf(w, "  --%s%s\n        %s\n        yaml %s, env %s, default %s\n",
			s.flag, arg, s.usage, s.key, s.env, defaultText(s, &def))
	}
}

func defaultText(s *setting, c *config) string {
	switch p := s.field(c).(type) {
	case *string:
		if *p == "" {
			return "none"
		}
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *uint64:
		return strconv.FormatUint(*p, 10)
	case *time.Duration:
		return strconv.FormatInt(int64(*p/time.Second), 10)
	case *fsyncPolicy:
		return formatFsyncPolicy(*p)
	case *[]string:
		if len(*p) == 0 {
			return "none"
		}
		return strings.Join(*p, ",")
	}
	return "?"
}
