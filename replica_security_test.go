package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Replication through the primary's security settings: a replica reaches
// a TLS (and mTLS) primary with the client TLS settings the CLI has
// (replication.tls_*), and a primary that requires auth with
// replication.token. A replica whose settings do not match gets nothing,
// says why in its log, keeps retrying, stays up and is not ready
// (/readyz). Real processes on loopback, as in replica_test.go. (That
// replicas refuse client writes is TestReplicationTwoReplicas's.)

// secStart runs `serve` on dir with extra environment and flags, like
// replStart.
func secStart(t *testing.T, dir string, env []string, extra ...string) *replProc {
	t.Helper()
	p, err := crashStartServer(os.Args[0], append([]string{"STMDB_TEST_SERVE=1", "RSTMDB_WAL_SEGMENT_SIZE_MB=1"}, env...), dir,
		append([]string{"--http-bind", ""}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.kill()
		}
	})
	return &replProc{crashProc: p, dir: dir, args: extra}
}

// secProc is a replica process and its metrics listener (/readyz).
type secProc struct {
	*replProc
	metrics string
}

var secMetricsRE = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// secReplica starts a replica (extra holds --replica-of and the rest)
// with a metrics listener.
func secReplica(t *testing.T, dir string, env []string, extra ...string) *secProc {
	t.Helper()
	p := secStart(t, dir, env, append([]string{"--metrics-enabled", "--metrics-bind", "127.0.0.1:0"}, extra...)...)
	for _, l := range p.lines() {
		if m := secMetricsRE.FindStringSubmatch(l); m != nil {
			return &secProc{replProc: p, metrics: m[1]}
		}
	}
	t.Fatalf("no metrics listener:\n%s", strings.Join(p.lines(), "\n"))
	return nil
}

// secReady is r's /readyz status code and body.
func secReady(t *testing.T, r *secProc) (int, string) {
	t.Helper()
	res, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + r.metrics + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// secDial connects to a primary the way a CLI with these options would.
func secDial(t *testing.T, addr string, o dialOptions) *client {
	t.Helper()
	c, err := dialClientOpts(addr, o)
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// secTLS is the CLI's client TLS for addr (--ca-cert, --client-cert/--client-key).
func secTLS(t *testing.T, addr, ca, cert, key string) dialOptions {
	t.Helper()
	tc, err := clientTLSConfig(addr, ca, cert, key, false)
	if err != nil {
		t.Fatal(err)
	}
	return dialOptions{TLS: tc}
}

// secWrite creates n instances named prefix-i and applies an event to each.
func secWrite(t *testing.T, c *client, prefix string, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		replCall(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"acct","version":1,"instance_id":%q,"initial_ctx":{"n":%d}}`, id, i))
		replCall(t, c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"DEP","payload":{"n":%d}}`, id, i+1))
	}
}

// secInfo is INFO's replication member, over c.
func secInfo(t *testing.T, c *client) replInfo {
	t.Helper()
	var in struct {
		Replication replInfo `json:"replication"`
	}
	if err := json.Unmarshal(replCall(t, c, "INFO", ""), &in); err != nil {
		t.Fatal(err)
	}
	return in.Replication
}

// secOffset is WAL_STATS's latest_offset, over c.
func secOffset(t *testing.T, c *client) uint64 {
	t.Helper()
	var st struct {
		LatestOffset uint64 `json:"latest_offset"`
	}
	if err := json.Unmarshal(replCall(t, c, "WAL_STATS", ""), &st); err != nil {
		t.Fatal(err)
	}
	return st.LatestOffset
}

// secFollows checks that replica r holds what the primary (reached over
// pc) holds: it catches up with the primary's last offset, and machines,
// instances and offsets are the same on both.
func secFollows(t *testing.T, pc *client, r *secProc) {
	t.Helper()
	last := secOffset(t, pc)
	secWaitCaughtUp(t, r.replProc, last)
	rc := replDial(t, r.addr)
	if x, y := replCall(t, pc, "LIST_MACHINES", ""), replCall(t, rc, "LIST_MACHINES", ""); string(x) != string(y) {
		t.Fatalf("LIST_MACHINES differs:\nprimary %s\nreplica %s", x, y)
	}
	replCompareInstances(t, pc, rc)
	if got := secOffset(t, rc); got != last {
		t.Fatalf("replica %s at offset %d, primary at %d", r.addr, got, last)
	}
	in := replInfoOf(t, r.addr)
	if in.Role != "replica" || in.Connected == nil || !*in.Connected {
		t.Fatalf("replica %s INFO replication: %+v", r.addr, in)
	}
	if code, body := secReady(t, r); code != http.StatusOK {
		t.Fatalf("replica %s /readyz: %d %s", r.addr, code, body)
	}
}

// secWaitCaughtUp waits until replica r's durable offset reaches off;
// failing, it shows r's log.
func secWaitCaughtUp(t *testing.T, r *replProc, off uint64) {
	t.Helper()
	// One connection: polling must not fill the replica's log tail with
	// connection lines.
	c := replDial(t, r.addr)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var in struct {
			Replication replInfo `json:"replication"`
		}
		json.Unmarshal(replCall(t, c, "INFO", ""), &in)
		if d := in.Replication.DurableOffset; d != nil && *d >= off {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s did not reach offset %d; its log:\n%s", filepath.Base(r.dir), off, strings.Join(r.lines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const secRetryMsg = "not connected to the primary; retrying"

// secRefused checks that replica r, pointed at a primary that holds data,
// gets none of it: its log says, at least three times (it keeps retrying),
// why it could not connect (each of want appears in a retry line); it is
// still running; INFO says not connected, at offset 0; it refuses reads;
// and the primary (reached over pc) does not list it among its replicas.
func secRefused(t *testing.T, pc *client, r *secProc, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var retries []string
		for _, l := range r.lines() {
			if strings.Contains(l, secRetryMsg) {
				retries = append(retries, l)
			}
			if strings.Contains(l, "following the primary") || strings.Contains(l, "copied the primary") {
				t.Fatalf("the replica that should be refused connected: %s", l)
			}
		}
		select {
		case <-r.done:
			r.cmd.Wait()
			t.Fatalf("the refused replica exited:\n%s", strings.Join(r.lines(), "\n"))
		default:
		}
		if len(retries) >= 3 {
			joined := strings.Join(retries, "\n")
			for _, w := range want {
				if !strings.Contains(joined, w) {
					t.Fatalf("the replica's retries do not say %q:\n%s", w, joined)
				}
			}
			t.Logf("%s: %s", filepath.Base(r.dir), retries[len(retries)-1])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not retry three times:\n%s", strings.Join(r.lines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if secOffset(t, pc) == 0 {
		t.Fatal("the primary holds nothing: the test needs data it could leak")
	}
	in := replInfoOf(t, r.addr)
	if in.Role != "replica" || in.Connected == nil || *in.Connected || in.DurableOffset == nil || *in.DurableOffset != 0 {
		t.Fatalf("refused replica INFO replication: %+v", in)
	}
	if code, body := secReady(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to the primary") {
		t.Fatalf("refused replica /readyz: %d %s", code, body)
	}
	rc := replDial(t, r.addr)
	if got := secOffset(t, rc); got != 0 {
		t.Fatalf("the refused replica's log reaches offset %d", got)
	}
	m, err := rc.call("LIST_INSTANCES", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.rcpErr() == nil {
		t.Fatalf("the refused replica served a read: %s", m.Raw)
	}
	id, err := os.ReadFile(filepath.Join(r.dir, "replica-id"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range secInfo(t, pc).Replicas {
		if p.ID == strings.TrimSpace(string(id)) {
			t.Fatalf("the primary lists the refused replica: %+v", p)
		}
	}
	select {
	case <-r.done:
		t.Fatalf("the refused replica exited:\n%s", strings.Join(r.lines(), "\n"))
	default:
	}
}

// TestReplicaTLS: a replica reaches a TLS-only primary with the same
// client TLS settings as the CLI. With the primary's CA
// (--replication-ca-cert, which implies TLS) it copies the primary's log
// and follows later writes; with replication.tls_insecure
// (RSTMDB_REPLICATION_TLS_INSECURE) it follows too. Without TLS (plaintext), with another CA, or with TLS and only
// the system roots, it gets nothing, logs why and keeps retrying.
func TestReplicaTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	pki, other := newTestPKI(t), newTestPKI(t)
	p := secStart(t, filepath.Join(root, "p"), nil, "--tls-enabled", "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey)
	pc := secDial(t, p.addr, secTLS(t, p.addr, pki.caPath, "", ""))
	replCall(t, pc, "PUT_MACHINE", replMachine)
	secWrite(t, pc, "before", 5)

	good := secReplica(t, filepath.Join(root, "good"), nil, "--replica-of", p.addr, "--replication-ca-cert", pki.caPath)
	insecure := secReplica(t, filepath.Join(root, "insecure"), []string{"RSTMDB_REPLICATION_TLS_INSECURE=true"}, "--replica-of", p.addr)
	plain := secReplica(t, filepath.Join(root, "plain"), nil, "--replica-of", p.addr)
	wrongCA := secReplica(t, filepath.Join(root, "wrong-ca"), nil, "--replica-of", p.addr, "--replication-ca-cert", other.caPath)
	noCA := secReplica(t, filepath.Join(root, "no-ca"), nil, "--replica-of", p.addr, "--replication-tls")

	secWrite(t, pc, "after", 5) // while the replicas are up: followed, not only copied
	secFollows(t, pc, good)
	secFollows(t, pc, insecure)
	secRefused(t, pc, plain, "replication.tls_enabled")
	secRefused(t, pc, wrongCA, "certificate")
	secRefused(t, pc, noCA, "certificate")
	if n := len(secInfo(t, pc).Replicas); n != 2 {
		t.Fatalf("the primary lists %d replicas, want 2", n)
	}
}

// TestReplicaMutualTLS: against a primary that requires client
// certificates, a replica presenting one signed by the primary's client
// CA (--replication-client-cert/--replication-client-key) follows; one
// with the right CA but no client certificate gets nothing and retries.
func TestReplicaMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	pki := newTestPKI(t)
	p := secStart(t, filepath.Join(root, "p"), nil, "--tls-enabled", "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey,
		"--tls-require-client-cert", "--tls-client-ca", pki.caPath)
	pc := secDial(t, p.addr, secTLS(t, p.addr, pki.caPath, pki.clientCert, pki.clientKey))
	replCall(t, pc, "PUT_MACHINE", replMachine)
	secWrite(t, pc, "before", 5)

	good := secReplica(t, filepath.Join(root, "good"), nil, "--replica-of", p.addr, "--replication-ca-cert", pki.caPath,
		"--replication-client-cert", pki.clientCert, "--replication-client-key", pki.clientKey)
	noCert := secReplica(t, filepath.Join(root, "no-cert"), nil, "--replica-of", p.addr, "--replication-ca-cert", pki.caPath)

	secWrite(t, pc, "after", 5)
	secFollows(t, pc, good)
	secRefused(t, pc, noCert)
}

// TestReplicaToken: against a primary with auth.required, a replica with
// the right replication.token follows, whether the token comes from
// RSTMDB_REPLICATION_TOKEN, --replication-token or the YAML file; with no
// token, or a wrong one, it gets nothing, logs the primary's refusal
// (UNAUTHORIZED, AUTH_FAILED) and keeps retrying; the token is not
// logged. A raw client's REPLICATE without AUTH is answered UNAUTHORIZED
// (and after a failed AUTH too), and streams once AUTH succeeds.
func TestReplicaToken(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	p := secStart(t, filepath.Join(root, "p"), nil, "--auth-required", "--auth-token-hash", testTokenHash())
	pc := secDial(t, p.addr, dialOptions{Token: testToken})
	replCall(t, pc, "PUT_MACHINE", replMachine)
	secWrite(t, pc, "before", 5)

	// The primary's gate, seen by a raw client.
	raw := replDial(t, p.addr)
	replicate := func() *message {
		t.Helper()
		raw.nc.SetDeadline(time.Now().Add(10 * time.Second))
		m, err := raw.call("REPLICATE", map[string]any{"from_offset": 0, "follow": true})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if e := replicate().rcpErr(); e == nil || e.Code != codeUnauthorized {
		t.Fatalf("REPLICATE without AUTH: %v", e)
	}
	if m, err := raw.call("AUTH", map[string]string{"method": "bearer", "token": "wrong-" + testToken}); err != nil || m.rcpErr() == nil || m.rcpErr().Code != codeAuthFailed {
		t.Fatalf("AUTH with a wrong token: %v %v", m, err)
	}
	if e := replicate().rcpErr(); e == nil || e.Code != codeUnauthorized {
		t.Fatalf("REPLICATE after a failed AUTH: %v", e)
	}
	if m, err := raw.call("AUTH", map[string]string{"method": "bearer", "token": testToken}); err != nil || m.rcpErr() != nil {
		t.Fatalf("AUTH with the token: %v %v", m, err)
	}
	from := uint64(0)
	rs, err := replicateOpen(raw, &from, false)
	if err != nil {
		t.Fatalf("REPLICATE after AUTH: %v", err)
	}
	rs.close()

	yaml := filepath.Join(root, "replica.yaml")
	if err := os.WriteFile(yaml, fmt.Appendf(nil, "replication:\n  token: %q\n", testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	byEnv := secReplica(t, filepath.Join(root, "env"), []string{"RSTMDB_REPLICATION_TOKEN=" + testToken}, "--replica-of", p.addr)
	byFlag := secReplica(t, filepath.Join(root, "flag"), nil, "--replica-of", p.addr, "--replication-token", testToken)
	byYAML := secReplica(t, filepath.Join(root, "yaml"), nil, "--config", yaml, "--replica-of", p.addr)
	none := secReplica(t, filepath.Join(root, "none"), nil, "--replica-of", p.addr)
	wrong := secReplica(t, filepath.Join(root, "wrong"), []string{"RSTMDB_REPLICATION_TOKEN=wrong-" + testToken}, "--replica-of", p.addr)

	secWrite(t, pc, "after", 5)
	for _, r := range []*secProc{byEnv, byFlag, byYAML} {
		secFollows(t, pc, r)
	}
	secRefused(t, pc, none, codeUnauthorized)
	secRefused(t, pc, wrong, codeAuthFailed)
	if n := len(secInfo(t, pc).Replicas); n != 3 {
		t.Fatalf("the primary lists %d replicas, want 3", n)
	}
	for _, r := range []*secProc{byEnv, byFlag, byYAML, none, wrong} {
		for _, l := range r.lines() {
			if strings.Contains(l, testToken) {
				t.Fatalf("replica %s logged its token: %s", filepath.Base(r.dir), l)
			}
		}
	}
}
