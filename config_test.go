package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Hashes used across the tests: lower-case SHA-256 hex.
var (
	hashA = strings.Repeat("a", 64)
	hashB = strings.Repeat("b", 64)
	hashC = strings.Repeat("c", 64)
	hashD = strings.Repeat("d", 64)
)

// envMap is a getenv over a fixed set of variables.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fieldValue reads the field of s from c, whatever its type.
func fieldValue(c *config, s *setting) any {
	switch p := s.field(c).(type) {
	case *string:
		return *p
	case *bool:
		return *p
	case *int:
		return *p
	case *int64:
		return *p
	case *uint64:
		return *p
	case *time.Duration:
		return *p
	case *fsyncPolicy:
		return *p
	case *[]string:
		return slices.Clone(*p)
	}
	panic("unknown field type for " + s.key)
}

var cmpConfig = cmp.AllowUnexported(config{})

func TestConfigDefaults(t *testing.T) {
	got, err := loadConfig(nil, envMap(nil), io.Discard)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	if diff := cmp.Diff(defaultConfig(), got, cmpConfig); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if err := defaultConfig().validate(); err != nil {
		t.Errorf("defaultConfig().validate() = %v", err)
	}
	want := map[string]any{
		"network.bind_addr": "127.0.0.1:7401", "network.idle_timeout_secs": 300 * time.Second,
		"network.max_connections": 1000, "storage.data_dir": "./data", "storage.wal_segment_size_mb": int64(64),
		"storage.fsync_policy": fsyncPolicy{Kind: "every_write"}, "storage.max_machine_versions": 0,
		"storage.allow_instance_recreate": true, "storage.allow_flush_all": false,
		"storage.idempotency_ttl_secs": 86400 * time.Second, "storage.max_ctx_bytes": 8 << 20, "storage.max_disk_mb": int64(0), "limits.max_batch_ops": 100,
		"limits.max_frame_bytes": 16777216, "auth.required": false, "auth.token_hashes": []string(nil),
		"auth.secrets_file": "", "tls.enabled": false, "tls.cert_path": "", "tls.key_path": "",
		"tls.require_client_cert": false, "tls.client_ca_path": "", "compaction.enabled": true,
		"compaction.events_threshold": uint64(10000), "compaction.size_threshold_mb": int64(100),
		"compaction.min_interval_secs": 60 * time.Second, "metrics.enabled": false,
		"metrics.bind_addr": "0.0.0.0:9090", "logging.level": "info", "logging.format": "text",
		"http.bind_addr": "127.0.0.1:7480", "http.cors_origins": "",
		"replication.primary_addr": "", "replication.token": "", "replication.tls_enabled": false,
		"replication.tls_ca_path": "", "replication.tls_client_cert": "", "replication.tls_client_key": "",
		"replication.tls_insecure": false, "replication.sync_replicas": 0, "replication.sync_timeout_ms": int64(0),
		"replication.max_lag_ms": int64(5000),
	}
	gotDefaults := map[string]any{}
	for i := range settings {
		gotDefaults[settings[i].key] = fieldValue(&got, &settings[i])
	}
	if diff := cmp.Diff(want, gotDefaults); diff != "" {
		t.Errorf("documented defaults (-want +got):\n%s", diff)
	}
	if got.compactTick != time.Second {
		t.Errorf("compactTick = %v, want 1s", got.compactTick)
	}
}

// TestConfigPrecedence sets every key in the file, then also in the
// environment, then also by flag, and checks that each later source wins.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	secretsF := writeFile(t, dir, "f.secret", hashA+"\n")
	secretsE := writeFile(t, dir, "e.secret", hashB+"\n")
	secretsG := writeFile(t, dir, "g.secret", hashC+"\n")
	crt := writeFile(t, dir, "s.crt", "x")
	key := writeFile(t, dir, "s.key", "x")
	ca := writeFile(t, dir, "ca.crt", "x")
	tlsOn := []string{"--tls-cert=" + crt, "--tls-key=" + key}

	tests := []struct {
		key                string
		file, env, flag    string   // the file's text after "name: "
		extra              []string // flags needed by every stage to pass validation
		def, inFile, inEnv any      // wanted after defaults, file, file+env
		inFlag             any      // wanted after file+env+flag
	}{
		{key: "network.bind_addr", file: `"10.0.0.1:1001"`, env: "10.0.0.2:1002", flag: "localhost:1003",
			def: "127.0.0.1:7401", inFile: "10.0.0.1:1001", inEnv: "10.0.0.2:1002", inFlag: "localhost:1003"},
		{key: "network.idle_timeout_secs", file: "10", env: "20", flag: "30",
			def: 300 * time.Second, inFile: 10 * time.Second, inEnv: 20 * time.Second, inFlag: 30 * time.Second},
		{key: "network.max_connections", file: "11", env: "12", flag: "13", def: 1000, inFile: 11, inEnv: 12, inFlag: 13},
		{key: "storage.data_dir", file: "/f", env: "/e", flag: "/g", def: "./data", inFile: "/f", inEnv: "/e", inFlag: "/g"},
		{key: "storage.wal_segment_size_mb", file: "2", env: "3", flag: "4",
			def: int64(64), inFile: int64(2), inEnv: int64(3), inFlag: int64(4)},
		{key: "storage.fsync_policy", file: "{every_n: 5}", env: "every_ms:7", flag: "never",
			def: fsyncPolicy{Kind: "every_write"}, inFile: fsyncPolicy{Kind: "every_n", N: 5},
			inEnv: fsyncPolicy{Kind: "every_ms", N: 7}, inFlag: fsyncPolicy{Kind: "never"}},
		{key: "storage.max_machine_versions", file: "1", env: "2", flag: "3", def: 0, inFile: 1, inEnv: 2, inFlag: 3},
		{key: "storage.allow_instance_recreate", file: "false", env: "1", flag: "false",
			def: true, inFile: false, inEnv: true, inFlag: false},
		{key: "storage.allow_flush_all", file: "true", env: "0", flag: "true", def: false, inFile: true, inEnv: false, inFlag: true},
		{key: "storage.idempotency_ttl_secs", file: "60", env: "120", flag: "0",
			def: 24 * time.Hour, inFile: time.Minute, inEnv: 2 * time.Minute, inFlag: time.Duration(0)},
		{key: "storage.max_ctx_bytes", file: "2048", env: "4096", flag: "16777216",
			def: 8 << 20, inFile: 2048, inEnv: 4096, inFlag: 16777216},
		{key: "storage.max_disk_mb", file: "300", env: "400", flag: "0",
			def: int64(0), inFile: int64(300), inEnv: int64(400), inFlag: int64(0)},
		{key: "limits.max_batch_ops", file: "200", env: "300", flag: "10000", def: 100, inFile: 200, inEnv: 300, inFlag: 10000},
		{key: "replication.primary_addr", file: `"10.0.0.1:7401"`, env: "10.0.0.2:7401", flag: "",
			def: "", inFile: "10.0.0.1:7401", inEnv: "10.0.0.2:7401", inFlag: ""},
		{key: "replication.token", file: "f", env: "e", flag: "g", def: "", inFile: "f", inEnv: "e", inFlag: "g"},
		{key: "replication.tls_enabled", file: "true", env: "0", flag: "true", def: false, inFile: true, inEnv: false, inFlag: true},
		{key: "replication.tls_ca_path", file: "/f", env: "/e", flag: "/g", def: "", inFile: "/f", inEnv: "/e", inFlag: "/g"},
		{key: "replication.tls_client_cert", file: "/f", env: "/e", flag: "/g", def: "", inFile: "/f", inEnv: "/e", inFlag: "/g"},
		{key: "replication.tls_client_key", file: "/f", env: "/e", flag: "/g", def: "", inFile: "/f", inEnv: "/e", inFlag: "/g"},
		{key: "replication.tls_insecure", file: "true", env: "0", flag: "true", def: false, inFile: true, inEnv: false, inFlag: true},
		{key: "replication.sync_replicas", file: "1", env: "2", flag: "0", def: 0, inFile: 1, inEnv: 2, inFlag: 0},
		{key: "replication.sync_timeout_ms", file: "100", env: "200", flag: "0",
			def: int64(0), inFile: int64(100), inEnv: int64(200), inFlag: int64(0)},
		{key: "replication.max_lag_ms", file: "100", env: "200", flag: "300",
			def: int64(5000), inFile: int64(100), inEnv: int64(200), inFlag: int64(300)},
		{key: "limits.max_frame_bytes", file: "2048", env: "4096", flag: "16777216",
			def: 16777216, inFile: 2048, inEnv: 4096, inFlag: 16777216},
		{key: "auth.required", file: "true", env: "false", flag: "true", extra: []string{"--auth-token-hash=" + hashD},
			def: false, inFile: true, inEnv: false, inFlag: true},
		{key: "auth.token_hashes", file: "[" + hashA + "]", env: strings.ToUpper(hashB), flag: " " + hashC + " ",
			def: []string(nil), inFile: []string{hashA}, inEnv: []string{hashA, hashB}, inFlag: []string{hashA, hashB, hashC}},
		{key: "auth.secrets_file", file: secretsF, env: secretsE, flag: secretsG,
			def: "", inFile: secretsF, inEnv: secretsE, inFlag: secretsG},
		{key: "tls.enabled", file: "true", env: "FALSE", flag: "true", extra: tlsOn,
			def: false, inFile: true, inEnv: false, inFlag: true},
		{key: "tls.cert_path", file: "/f.crt", env: "/e.crt", flag: "/g.crt", def: "", inFile: "/f.crt", inEnv: "/e.crt", inFlag: "/g.crt"},
		{key: "tls.key_path", file: "/f.key", env: "/e.key", flag: "/g.key", def: "", inFile: "/f.key", inEnv: "/e.key", inFlag: "/g.key"},
		{key: "tls.require_client_cert", file: "true", env: "0", flag: "1",
			extra: append([]string{"--tls-enabled", "--tls-client-ca=" + ca}, tlsOn...),
			def:   false, inFile: true, inEnv: false, inFlag: true},
		{key: "tls.client_ca_path", file: "/f.ca", env: "/e.ca", flag: "/g.ca", def: "", inFile: "/f.ca", inEnv: "/e.ca", inFlag: "/g.ca"},
		{key: "compaction.enabled", file: "false", env: "true", flag: "false", def: true, inFile: false, inEnv: true, inFlag: false},
		{key: "compaction.events_threshold", file: "1", env: "2", flag: "3",
			def: uint64(10000), inFile: uint64(1), inEnv: uint64(2), inFlag: uint64(3)},
		{key: "compaction.size_threshold_mb", file: "1", env: "2", flag: "0",
			def: int64(100), inFile: int64(1), inEnv: int64(2), inFlag: int64(0)},
		{key: "compaction.min_interval_secs", file: "1", env: "2", flag: "3",
			def: time.Minute, inFile: time.Second, inEnv: 2 * time.Second, inFlag: 3 * time.Second},
		{key: "metrics.enabled", file: "true", env: "0", flag: "true", def: false, inFile: true, inEnv: false, inFlag: true},
		{key: "metrics.bind_addr", file: "'[::1]:9000'", env: ":9001", flag: "metrics.local:9002",
			def: "0.0.0.0:9090", inFile: "[::1]:9000", inEnv: ":9001", inFlag: "metrics.local:9002"},
		{key: "http.bind_addr", file: "'[::1]:8000'", env: "web.local:8002", flag: "",
			def: "127.0.0.1:7480", inFile: "[::1]:8000", inEnv: "web.local:8002", inFlag: ""},
		{key: "http.cors_origins", file: "https://a.example", env: "https://b.example,https://c.example", flag: "*",
			def: "", inFile: "https://a.example", inEnv: "https://b.example,https://c.example", inFlag: "*"},
		{key: "logging.level", file: "debug", env: "WARN", flag: "error", def: "info", inFile: "debug", inEnv: "warn", inFlag: "error"},
		{key: "logging.format", file: "json", env: "text", flag: "JSON", def: "text", inFile: "json", inEnv: "text", inFlag: "json"},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.key] = true
		s := settingByKey(tt.key)
		if s == nil {
			t.Fatalf("no setting %s", tt.key)
		}
		section, name, _ := strings.Cut(tt.key, ".")
		cfgPath := writeFile(t, t.TempDir(), "c.yaml", "# precedence\n"+section+":\n  "+name+": "+tt.file+"\n")
		stages := []struct {
			name string
			env  map[string]string
			args []string
			want any
		}{
			{"default", nil, nil, tt.def},
			{"file", map[string]string{"RSTMDB_CONFIG": cfgPath}, nil, tt.inFile},
			{"env", map[string]string{"RSTMDB_CONFIG": cfgPath, s.env: tt.env}, nil, tt.inEnv},
			{"flag", map[string]string{"RSTMDB_CONFIG": cfgPath, s.env: tt.env}, []string{"--" + s.flag + "=" + tt.flag}, tt.inFlag},
		}
		for _, st := range stages {
			t.Run(tt.key+"/"+st.name, func(t *testing.T) {
				args := append(slices.Clone(tt.extra), st.args...)
				c, err := loadConfig(args, envMap(st.env), io.Discard)
				if err != nil {
					t.Fatalf("loadConfig(%q): %v", args, err)
				}
				if diff := cmp.Diff(st.want, fieldValue(&c, s)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", tt.key, diff)
				}
			})
		}
	}
	for _, s := range settings {
		if !covered[s.key] {
			t.Errorf("setting %s has no precedence row", s.key)
		}
	}
}

// TestConfigConfigFlagOverridesEnv checks that --config wins over
// RSTMDB_CONFIG, like every other flag over its variable.
func TestConfigConfigFlagOverridesEnv(t *testing.T) {
	dir := t.TempDir()
	envFile := writeFile(t, dir, "env.yaml", "network:\n  max_connections: 5\n")
	flagFile := writeFile(t, dir, "flag.yaml", "network:\n  max_connections: 6\n")
	c, err := loadConfig([]string{"--config", flagFile}, envMap(map[string]string{"RSTMDB_CONFIG": envFile}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnections != 6 {
		t.Errorf("MaxConnections = %d, want 6 from the --config file", c.MaxConnections)
	}
}

func TestConfigFsyncForms(t *testing.T) {
	tests := []struct {
		name string
		yaml string // value of storage.fsync_policy, may span lines
		env  string
		flag string
		want fsyncPolicy
	}{
		{name: "yaml every_write", yaml: "every_write", want: fsyncPolicy{Kind: "every_write"}},
		{name: "yaml quoted never", yaml: `"never"`, want: fsyncPolicy{Kind: "never"}},
		{name: "yaml everywrite alias", yaml: "everywrite", want: fsyncPolicy{Kind: "every_write"}},
		{name: "yaml flow map every_n", yaml: "{every_n: 100}", want: fsyncPolicy{Kind: "every_n", N: 100}},
		{name: "yaml flow map every_ms", yaml: "{ every_ms: 100 }", want: fsyncPolicy{Kind: "every_ms", N: 100}},
		{name: "yaml block map every_ms", yaml: "\n    # every 100 ms\n    every_ms: 100", want: fsyncPolicy{Kind: "every_ms", N: 100}},
		{name: "yaml block map every_n", yaml: "\n    every_n: 7", want: fsyncPolicy{Kind: "every_n", N: 7}},
		{name: "yaml tag every_n", yaml: "!every_n 100", want: fsyncPolicy{Kind: "every_n", N: 100}},
		{name: "yaml tag every_ms", yaml: "!every_ms 250 # ms", want: fsyncPolicy{Kind: "every_ms", N: 250}},
		{name: "yaml env form", yaml: "every_n:3", want: fsyncPolicy{Kind: "every_n", N: 3}},
		{name: "env every_n", env: "every_n:100", want: fsyncPolicy{Kind: "every_n", N: 100}},
		{name: "env every_ms", env: "EVERY_MS:5", want: fsyncPolicy{Kind: "every_ms", N: 5}},
		{name: "env never", env: "never", want: fsyncPolicy{Kind: "never"}},
		{name: "env everywrite", env: "everywrite", want: fsyncPolicy{Kind: "every_write"}},
		{name: "flag every_ms", flag: "every_ms:20", want: fsyncPolicy{Kind: "every_ms", N: 20}},
		{name: "flag over yaml tag", yaml: "!every_n 9", flag: "every_write", want: fsyncPolicy{Kind: "every_write"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"RSTMDB_FSYNC_POLICY": tt.env}
			if tt.yaml != "" {
				env["RSTMDB_CONFIG"] = writeFile(t, t.TempDir(), "c.yaml", "storage:\n  fsync_policy: "+tt.yaml+"\n  data_dir: d\n")
			}
			var args []string
			if tt.flag != "" {
				args = []string{"--fsync-policy", tt.flag}
			}
			c, err := loadConfig(args, envMap(env), io.Discard)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, c.Fsync); diff != "" {
				t.Errorf("fsync (-want +got):\n%s", diff)
			}
			if p, err := parseFsyncPolicy(formatFsyncPolicy(c.Fsync)); err != nil || p != c.Fsync {
				t.Errorf("formatFsyncPolicy does not round-trip: %q -> %+v, %v", formatFsyncPolicy(c.Fsync), p, err)
			}
		})
	}
}

// TestConfigShippedShapes loads configs in the shapes rstmdb ships: a
// production file using every section, an example file with optional keys
// commented out and a standalone replication section, and a dev-TLS file
// using the tag form and a flow list.
func TestConfigShippedShapes(t *testing.T) {
	prod := defaultConfig()
	prod.Bind = "0.0.0.0:7401"
	prod.IdleTimeout = 600 * time.Second
	prod.MaxConnections = 10000
	prod.DataDir = "/var/lib/rstmdb"
	prod.SegmentSizeMB = 128
	prod.Fsync = fsyncPolicy{Kind: "every_ms", N: 100}
	prod.MaxMachineVersions = 20
	prod.AllowInstanceRecreate = false
	prod.IdempotencyTTL = time.Hour
	prod.MaxBatchOps = 500
	prod.MaxFrameBytes = 1 << 20
	prod.AuthRequired = true
	prod.AuthTokenHashes = []string{
		"ea5add57437cbf20af59034d7ed17968dcc56767b41965fcc5b376d45db8b4a3",
		"ea5add57437cbf20af59034d7ed17968dcc56767b41965fcc5b376d45db8b4a4",
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
	}
	prod.AuthSecretsFile = "testdata/config/tokens.secret"
	prod.TLSEnabled = true
	prod.TLSCertPath = "testdata/config/tls/server.crt"
	prod.TLSKeyPath = "testdata/config/tls/server.key"
	prod.TLSRequireClientCert = true
	prod.TLSClientCAPath = "testdata/config/tls/client-ca.crt"
	prod.CompactEvents = 50000
	prod.CompactSizeMB = 500
	prod.CompactMinInterval = 300 * time.Second
	prod.MetricsEnabled = true
	prod.LogLevel = "warn"
	prod.LogFormat = "json"

	devTLS := defaultConfig()
	devTLS.TLSEnabled = true
	devTLS.TLSCertPath = "testdata/config/tls/server.crt"
	devTLS.TLSKeyPath = "testdata/config/tls/server.key"
	devTLS.AuthRequired = true
	devTLS.AuthTokenHashes = []string{hashA, hashB}
	devTLS.Fsync = fsyncPolicy{Kind: "every_n", N: 100}
	devTLS.AllowFlushAll = true

	tests := []struct {
		name string
		path string
		want config
	}{
		{"production", "testdata/config/rstmdb.yaml", prod},
		{"example", "testdata/config/rstmdb-example.yaml", defaultConfig()},
		{"dev tls", writeFile(t, t.TempDir(), "dev-tls.yaml", `# dev with TLS
network:
  bind_addr: "127.0.0.1:7401"
tls:
  enabled: true
  cert_path: "testdata/config/tls/server.crt"
  key_path: "testdata/config/tls/server.key"
auth:
  required: true
  token_hashes: ["`+hashA+`", '`+hashB+`']
storage:
  fsync_policy: !every_n 100
  allow_flush_all: true
`), devTLS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig([]string{"--config", tt.path}, envMap(nil), io.Discard)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpConfig); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigSecretsFile(t *testing.T) {
	dir := t.TempDir()
	secrets := writeFile(t, dir, "tokens", "# comment\n\n  "+strings.ToUpper(hashC)+"\t\r\n   # indented comment\n"+hashD)
	cfgPath := writeFile(t, dir, "c.yaml", "auth:\n  required: true\n  token_hashes:\n    - "+hashA+"\n  secrets_file: "+secrets+"\n")
	c, err := loadConfig([]string{"--auth-token-hash", hashB}, envMap(map[string]string{"RSTMDB_CONFIG": cfgPath}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{hashA, hashB, hashC, hashD}, c.AuthTokenHashes); diff != "" {
		t.Errorf("hashes: file list, flag, then secrets file (-want +got):\n%s", diff)
	}
}

func TestConfigEnvBool(t *testing.T) {
	tests := []struct {
		v       string
		want    bool
		wantErr string
	}{
		{v: "", want: false}, // unset
		{v: "1", want: true},
		{v: "true", want: true},
		{v: "TRUE", want: true},
		{v: "True", want: true},
		{v: "0", want: false},
		{v: "false", want: false},
		{v: "FaLsE", want: false},
		{v: "yes", wantErr: `RSTMDB_METRICS_ENABLED: "yes" is not a boolean (1, 0, true or false) (metrics.enabled)`},
		{v: "on", wantErr: `RSTMDB_METRICS_ENABLED: "on" is not a boolean (1, 0, true or false) (metrics.enabled)`},
		{v: "2", wantErr: `RSTMDB_METRICS_ENABLED: "2" is not a boolean (1, 0, true or false) (metrics.enabled)`},
	}
	for _, tt := range tests {
		t.Run(tt.v, func(t *testing.T) {
			c, err := loadConfig(nil, envMap(map[string]string{"RSTMDB_METRICS_ENABLED": tt.v}), io.Discard)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MetricsEnabled != tt.want {
				t.Errorf("MetricsEnabled = %v, want %v", c.MetricsEnabled, tt.want)
			}
		})
	}
}

// TestConfigErrors checks that every refusal names the key, variable or
// flag (and file line) and says why.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	crt := writeFile(t, dir, "s.crt", "x")
	badSecrets := writeFile(t, dir, "bad.secret", "# ok\n"+hashA+"\nnot-a-hash\n")
	tests := []struct {
		name string
		yaml string // written to cfg.yaml when non-empty
		env  map[string]string
		args []string
		want string // with the temp dir's path removed, or DIR for the dir itself
	}{
		// The file.
		{name: "unknown key", yaml: "storage:\n  # typo\n  fsync: never\n", want: "cfg.yaml:3: unknown key 'storage.fsync'"},
		{name: "unknown section", yaml: "network: {}\nlogs:\n  level: x\n", want: "cfg.yaml:2: unknown section 'logs'"},
		{name: "section not a map", yaml: "network: 5\n", want: "cfg.yaml:1: 'network' must be a map of settings, not a scalar"},
		{name: "top level not a map", yaml: "- a\n", want: "cfg.yaml:1: the top level must be a map of sections (network:, storage:, ...)"},
		{name: "syntax error", yaml: "network:\n  bind_addr: &a x\n", want: "cfg.yaml:2: anchors (&name) are not supported"},
		{name: "quoted integer", yaml: "storage:\n  wal_segment_size_mb: \"64\"\n",
			want: `cfg.yaml:2: storage.wal_segment_size_mb: expected an integer, got the quoted string "64"`},
		{name: "not an integer", yaml: "network:\n  max_connections: lots\n", want: `cfg.yaml:2: network.max_connections: "lots" is not an integer`},
		{name: "negative", yaml: "compaction:\n  events_threshold: -1\n", want: `cfg.yaml:2: compaction.events_threshold: -1 is out of range 0..9223372036854775807`},
		{name: "yaml bool", yaml: "auth:\n  required: yes\n", want: `cfg.yaml:2: auth.required: expected true or false, got "yes"`},
		{name: "quoted bool", yaml: "tls:\n  enabled: 'true'\n", want: `cfg.yaml:2: tls.enabled: expected true or false, got the quoted string "true"`},
		{name: "list for a scalar", yaml: "network:\n  bind_addr:\n    - a\n", want: "cfg.yaml:3: network.bind_addr: expected a single value, got a list"},
		{name: "tag for a scalar", yaml: "network:\n  max_connections: !n 5\n", want: "cfg.yaml:2: network.max_connections: expected a single value, got a tagged value !n"},
		{name: "segment size zero", yaml: "storage:\n  wal_segment_size_mb: 0\n", want: "cfg.yaml:2: storage.wal_segment_size_mb: 0 is out of range 1..65536"},
		{name: "batch ops zero", yaml: "limits:\n  max_batch_ops: 0\n", want: "cfg.yaml:2: limits.max_batch_ops: 0 is out of range 1..10000"},
		{name: "frame too large", yaml: "limits:\n  max_frame_bytes: 16777217\n", want: "cfg.yaml:2: limits.max_frame_bytes: 16777217 is out of range 1024..16777216"},
		{name: "idle timeout zero", yaml: "network:\n  idle_timeout_secs: 0\n", want: "cfg.yaml:2: network.idle_timeout_secs: 0 is out of range 1..9223372036"},
		{name: "hashes not a list", yaml: "auth:\n  token_hashes: " + hashA + "\n", want: "cfg.yaml:2: auth.token_hashes: expected a list of hashes, got a scalar"},
		{name: "bad hash in list", yaml: "auth:\n  token_hashes:\n    - " + hashA + "\n    - abc\n",
			want: `cfg.yaml:4: auth.token_hashes: "abc" is not a SHA-256 hash (64 hex digits; rstmdb-cli hash-token makes one)`},
		{name: "fsync zero", yaml: "storage:\n  fsync_policy: {every_n: 0}\n", want: `cfg.yaml:2: storage.fsync_policy: every_n needs a positive integer, got "0"`},
		{name: "fsync unknown tag", yaml: "storage:\n  fsync_policy: !every_s 5\n",
			want: "cfg.yaml:2: storage.fsync_policy: unknown tag !every_s; use every_write, never, every_n: N, every_ms: N or !every_n N"},
		{name: "fsync unknown word", yaml: "storage:\n  fsync_policy: sometimes\n",
			want: `cfg.yaml:2: storage.fsync_policy: "sometimes" is not one of every_write, never, every_n:N, every_ms:N`},
		{name: "fsync two keys", yaml: "storage:\n  fsync_policy:\n    every_n: 1\n    every_ms: 2\n",
			want: "cfg.yaml:3: storage.fsync_policy: the map form takes exactly one key, every_n or every_ms; got 2"},
		{name: "fsync map unknown", yaml: "storage:\n  fsync_policy: {every_s: 2}\n",
			want: `cfg.yaml:2: storage.fsync_policy: unknown policy "every_s" in the map form; use every_write, never, every_n: N, every_ms: N or !every_n N`},
		{name: "replication primary", yaml: "replication:\n  role: primary\n", want: "cfg.yaml:2: replication.role: only standalone is accepted; a replica is made by replication.primary_addr"},
		{name: "replication unknown key", yaml: "replication:\n  role: standalone\n  rol: x\n", want: "cfg.yaml:3: unknown key 'replication.rol'"},
		{name: "missing file", args: []string{"--config", "/nonexistent/c.yaml"}, want: "config file: open /nonexistent/c.yaml: no such file or directory"},

		// The environment.
		{name: "env not an integer", env: map[string]string{"RSTMDB_MAX_CONNECTIONS": "lots"},
			want: `RSTMDB_MAX_CONNECTIONS: "lots" is not an integer (network.max_connections)`},
		{name: "env segment zero", env: map[string]string{"RSTMDB_WAL_SEGMENT_SIZE_MB": "0"},
			want: "RSTMDB_WAL_SEGMENT_SIZE_MB: 0 is out of range 1..65536 (storage.wal_segment_size_mb)"},
		{name: "env overflow", env: map[string]string{"RSTMDB_COMPACT_EVENTS": "99999999999999999999"},
			want: `RSTMDB_COMPACT_EVENTS: "99999999999999999999" is out of range 0..9223372036854775807 (compaction.events_threshold)`},
		{name: "env fsync", env: map[string]string{"RSTMDB_FSYNC_POLICY": "every_n:x"},
			want: `RSTMDB_FSYNC_POLICY: "every_n:x": every_n needs a positive integer (storage.fsync_policy)`},
		{name: "env bind", env: map[string]string{"RSTMDB_BIND": "7401"}, want: `RSTMDB_BIND: "7401" is not host:port (network.bind_addr)`},
		{name: "env metrics bind port", env: map[string]string{"RSTMDB_METRICS_BIND": "h:99999"},
			want: `RSTMDB_METRICS_BIND: "h:99999": port "99999" is not a number 0..65535 (metrics.bind_addr)`},
		{name: "env log level", env: map[string]string{"RSTMDB_LOG_LEVEL": "verbose"},
			want: `RSTMDB_LOG_LEVEL: "verbose" is not one of debug, info, warn, error (logging.level)`},
		{name: "env hash", env: map[string]string{"RSTMDB_AUTH_TOKEN_HASH": "xyz"},
			want: `RSTMDB_AUTH_TOKEN_HASH: "xyz" is not a SHA-256 hash (64 hex digits; rstmdb-cli hash-token makes one) (auth.token_hashes)`},
		{name: "env replication role", env: map[string]string{"RSTMDB_REPL_ROLE": "replica"},
			want: `RSTMDB_REPL_ROLE: "replica": only standalone is accepted; a replica is made by RSTMDB_REPLICA_OF`},

		// Flags.
		{name: "flag range", args: []string{"--max-batch-ops=10001"}, want: "--max-batch-ops: 10001 is out of range 1..10000 (limits.max_batch_ops)"},
		{name: "flag bool", args: []string{"--auth-required=maybe"}, want: `--auth-required: "maybe" is not a boolean (1, 0, true or false) (auth.required)`},
		{name: "flag bind host", args: []string{"--bind", "bad host!:1"}, want: `--bind: "bad host!:1": "bad host!" is neither an IP address nor a host name (network.bind_addr)`},
		{name: "flag log format", args: []string{"--log-format", "xml"}, want: `--log-format: "xml" is not one of text, json (logging.format)`},
		{name: "unknown flag", args: []string{"--nope"}, want: "flag provided but not defined: -nope (stmdb serve --help lists the flags)"},
		{name: "positional", args: []string{"--auth-required", "false"},
			want: `unexpected argument "false" (stmdb serve takes only flags; boolean flags take --flag=false)`},

		// Cross-setting validation, named by the source of the setting.
		{name: "auth without hashes from file", yaml: "auth:\n  required: true\n",
			want: "cfg.yaml:2: auth.required: auth is required but no token hashes are configured (auth.token_hashes, RSTMDB_AUTH_TOKEN_HASH or auth.secrets_file)"},
		{name: "auth without hashes from env", env: map[string]string{"RSTMDB_AUTH_REQUIRED": "1"},
			want: "RSTMDB_AUTH_REQUIRED: auth is required but no token hashes are configured (auth.token_hashes, RSTMDB_AUTH_TOKEN_HASH or auth.secrets_file) (auth.required)"},
		{name: "secrets file missing", env: map[string]string{"RSTMDB_AUTH_SECRETS_FILE": "/nonexistent/tokens"},
			want: "RSTMDB_AUTH_SECRETS_FILE: open /nonexistent/tokens: no such file or directory (auth.secrets_file)"},
		{name: "secrets file bad line", args: []string{"--auth-secrets-file", badSecrets},
			want: `--auth-secrets-file: bad.secret:3: "not-a-hash" is not a SHA-256 hash (64 hex digits; rstmdb-cli hash-token makes one) (auth.secrets_file)`},
		{name: "tls without cert", args: []string{"--tls-enabled"}, want: "tls.cert_path: required when tls.enabled is true"},
		{name: "tls without key", yaml: "tls:\n  enabled: true\n  cert_path: " + crt + "\n", want: "tls.key_path: required when tls.enabled is true"},
		{name: "tls cert unreadable", args: []string{"--tls-enabled", "--tls-cert=/nonexistent/s.crt", "--tls-key=" + crt},
			want: "--tls-cert: open /nonexistent/s.crt: no such file or directory (tls.cert_path)"},
		{name: "tls key is a directory", args: []string{"--tls-enabled", "--tls-cert=" + crt, "--tls-key=" + dir},
			want: "--tls-key: DIR is a directory (tls.key_path)"},
		{name: "mtls without ca", args: []string{"--tls-enabled", "--tls-cert=" + crt, "--tls-key=" + crt, "--tls-require-client-cert"},
			want: "tls.client_ca_path: required when tls.require_client_cert is true"},
		{name: "mtls ca unreadable", env: map[string]string{"RSTMDB_TLS_CLIENT_CA": "/nonexistent/ca"},
			args: []string{"--tls-enabled", "--tls-cert=" + crt, "--tls-key=" + crt, "--tls-require-client-cert"},
			want: "RSTMDB_TLS_CLIENT_CA: open /nonexistent/ca: no such file or directory (tls.client_ca_path)"},
		{name: "mtls without tls", yaml: "tls:\n  enabled: false\n  require_client_cert: true\n",
			want: "cfg.yaml:3: tls.require_client_cert: needs tls.enabled: client certificates exist only over TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.yaml != "" {
				env["RSTMDB_CONFIG"] = writeFile(t, dir, "cfg.yaml", tt.yaml)
			}
			_, err := loadConfig(tt.args, envMap(env), io.Discard)
			if err == nil {
				t.Fatalf("loadConfig accepted it")
			}
			got := strings.ReplaceAll(strings.ReplaceAll(err.Error(), dir+"/", ""), dir, "DIR")
			if got != tt.want {
				t.Errorf("error\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestConfigValidate checks configs built in code, not loaded.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config)
		want string
	}{
		{"defaults", func(*config) {}, ""},
		{"test harness shape", func(c *config) { c.SegmentSizeMB = 1; c.DataDir = "/tmp/x" }, ""},
		{"hostname bind", func(c *config) { c.Bind = "localhost:7401" }, ""},
		{"ipv6 bind", func(c *config) { c.Bind = "[::1]:0" }, ""},
		{"bad bind", func(c *config) { c.Bind = "localhost" }, `network.bind_addr: "localhost" is not host:port`},
		{"frame bytes", func(c *config) { c.MaxFrameBytes = 0 }, "limits.max_frame_bytes: 0 is out of range 1024..16777216"},
		{"idle timeout", func(c *config) { c.IdleTimeout = 100 * time.Millisecond }, "network.idle_timeout_secs: 100ms is less than 1s"},
		{"fsync kind", func(c *config) { c.Fsync = fsyncPolicy{Kind: "sometimes"} }, `storage.fsync_policy: unknown policy "sometimes"`},
		{"fsync n", func(c *config) { c.Fsync = fsyncPolicy{Kind: "every_ms"} }, "storage.fsync_policy: every_ms needs a positive integer, got 0"},
		{"upper-case hash", func(c *config) { c.AuthTokenHashes = []string{strings.ToUpper(hashA)} },
			`auth.token_hashes: "` + strings.ToUpper(hashA) + `" is not a lower-case SHA-256 hash (64 hex digits)`},
		{"empty data dir", func(c *config) { c.DataDir = "" }, "storage.data_dir: must not be empty"},
		{"log level", func(c *config) { c.LogLevel = "INFO" }, `logging.level: "INFO" is not one of debug, info, warn, error`},
		{"compact tick", func(c *config) { c.compactTick = 0 }, "compaction: internal check interval must be positive"},
		{"disk quota", func(c *config) { c.MaxDiskMB = 256 }, ""},
		{"disk quota too small", func(c *config) { c.MaxDiskMB = 255 },
			"storage.max_disk_mb: 255 MB cannot hold the WAL's working set: at least 4 segments of 64 MB (storage.wal_segment_size_mb) are needed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig()
			tt.edit(&c)
			err := c.validate()
			got := ""
			if err != nil {
				got = err.Error()
				var ce *configError
				if !errors.As(err, &ce) {
					t.Errorf("error %T is not a *configError", err)
				}
			}
			if got != tt.want {
				t.Errorf("validate() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestServeHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			_, err := loadConfig([]string{arg}, envMap(nil), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			help := out.String()
			def := defaultConfig()
			for _, s := range settings {
				for _, want := range []string{"--" + s.flag, "yaml " + s.key + ",", "env " + s.env + ",", "default " + defaultText(&s, &def) + "\n", s.usage} {
					if !strings.Contains(help, want) {
						t.Errorf("help lacks %q for %s", want, s.key)
					}
				}
			}
			for _, want := range []string{"--config FILE", "RSTMDB_CONFIG"} {
				if !strings.Contains(help, want) {
					t.Errorf("help lacks %q", want)
				}
			}
		})
	}
}

// TestSettingsTable guards the table itself: every name unique, and every
// exported config field reachable from exactly one setting.
func TestSettingsTable(t *testing.T) {
	seen := map[string]string{}
	var c config
	ptrs := map[any]string{}
	for _, s := range settings {
		for _, name := range []string{s.key, s.env, s.flag} {
			if prev, dup := seen[name]; dup {
				t.Errorf("%q used by %s and %s", name, prev, s.key)
			}
			seen[name] = s.key
		}
		if !strings.HasPrefix(s.env, "RSTMDB_") {
			t.Errorf("%s: env %q lacks the RSTMDB_ prefix", s.key, s.env)
		}
		p := s.field(&c)
		if prev, dup := ptrs[p]; dup {
			t.Errorf("%s and %s set the same field", prev, s.key)
		}
		ptrs[p] = s.key
	}
	// One setting per exported config field; the unexported ones (internal
	// intervals) are deliberately not settable.
	exported := 0
	for f := range reflect.TypeFor[config]().Fields() {
		if f.IsExported() {
			exported++
		}
	}
	if len(settings) != exported {
		t.Errorf("%d settings, want %d (one per exported config field)", len(settings), exported)
	}
}
