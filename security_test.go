package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const testToken = "s3cret-token"

func testTokenHash() string { return sha256Hex(testToken) }

// paramsFor gives every op a valid-looking request, so the auth gate is
// what decides the answer.
var paramsFor = map[string]string{
	"HELLO": `{"protocol_version":1}`, "AUTH": `{"method":"bearer","token":"wrong"}`,
	"PUT_MACHINE": ctrMachine, "GET_MACHINE": `{"machine":"ctr","version":1}`,
	"CREATE_INSTANCE": `{"machine":"ctr","version":1}`, "GET_INSTANCE": `{"instance_id":"x"}`,
	"DELETE_INSTANCE": `{"instance_id":"x"}`, "APPLY_EVENT": `{"instance_id":"x","event":"INC"}`,
	"BATCH":    `{"mode":"best_effort","ops":[{"op":"CREATE_INSTANCE","params":{"machine":"ctr","version":1}}]}`,
	"WAL_READ": `{"from_offset":0}`, "SNAPSHOT_INSTANCE": `{"instance_id":"x"}`,
	"WATCH_INSTANCE": `{"instance_id":"x"}`, "UNWATCH": `{"subscription_id":"sub-x"}`,
}

// With auth required, only HELLO, AUTH, PING and BYE work before AUTH;
// every other op in the command table (WATCH_* and BATCH included) is
// UNAUTHORIZED and changes nothing.
func TestAuthGate(t *testing.T) {
	ts := startServer(t, func(c *config) {
		c.AuthRequired = true
		c.AuthTokenHashes = []string{testTokenHash()}
		c.AllowFlushAll = true
	})
	preauth := map[string]bool{"HELLO": true, "AUTH": true, "PING": true, "BYE": true}
	for op := opCode(1); op <= numOps; op++ {
		name := opTable[op].name
		if preauth[name] != (opTable[op].flags&flagPreAuth != 0) {
			t.Errorf("%s: preauth flag in ops.spec disagrees with the contract", name)
		}
		if name == "BYE" {
			continue // closes the connection; checked below
		}
		c := ts.dial()
		m := call(t, c, name, paramsFor[name])
		switch {
		case preauth[name]:
			if m.Error != nil && m.Error.Code == codeUnauthorized {
				t.Errorf("%s must work before AUTH: %s", name, m.Raw)
			}
		case m.Error == nil || m.Error.Code != codeUnauthorized:
			t.Errorf("%s before AUTH: want UNAUTHORIZED, got %s", name, m.Raw)
		}
	}
	c := ts.dial()
	runSteps(t, c, []step{
		{op: "AUTH", params: `{"method":"bearer","token":"nope"}`, code: codeAuthFailed, messageHas: "invalid token"},
		{op: "AUTH", params: `{"method":"basic","token":"x"}`, code: codeAuthFailed, messageHas: "basic"},
		{op: "AUTH", params: `{"method":"bearer","token":""}`, code: codeAuthFailed},
		{op: "AUTH", params: `{"method":"bearer"}`, code: codeBadRequest, messageHas: "token"},
		{op: "LIST_MACHINES", code: codeUnauthorized},
		{op: "AUTH", params: fmt.Sprintf(`{"method":"bearer","token":%q}`, testToken), want: `{"authenticated":true}`},
		{op: "LIST_MACHINES", want: `{"items":[]}`},
		{op: "PUT_MACHINE", params: ctrMachine},
		{op: "BATCH", params: paramsFor["BATCH"]},
	})
	runSteps(t, c, []step{{op: "BYE", want: `{"goodbye":true}`}})
	// Nothing the unauthenticated requests asked for happened.
	c = ts.dial()
	mustOK(t, c, "AUTH", fmt.Sprintf(`{"method":"bearer","token":%q}`, testToken))
	runSteps(t, c, []step{{op: "WAL_STATS", want: `{"disk_quota_bytes":0,"disk_reserve_bytes":"<int>","disk_used_bytes":"<int>","entry_count":2,"io_stats":"<any>","latest_offset":2,"segment_count":"<int>","total_size_bytes":"<int>"}`}})
}

// Failed AUTHs are slowed down per connection and never close it. Another
// connection is not slowed: its PING is answered while this one's failures
// still have seconds of back-off to serve (an ordering, not a stopwatch).
func TestAuthFailuresSlowed(t *testing.T) {
	ts := startServer(t, func(c *config) { c.AuthRequired = true; c.AuthTokenHashes = []string{testTokenHash()} })
	c := ts.dial()
	c.nc.SetDeadline(time.Now().Add(time.Minute))
	const failures = 6 // 50+100+200+400+800+1600 ms of back-off
	start := time.Now()
	for i := 0; i < failures; i++ {
		c.send("AUTH", `{"method":"bearer","token":"guess"}`)
	}
	c.flush()
	var answered atomic.Int32
	done := make(chan error, 1)
	go func() {
		for i := 0; i < failures; i++ {
			m, err := c.recv()
			if err != nil || m.Error == nil || m.Error.Code != codeAuthFailed {
				done <- fmt.Errorf("failed AUTH %d: %v %v", i+1, m, err)
				return
			}
			answered.Add(1)
		}
		done <- nil
	}()
	for answered.Load() == 0 {
		select {
		case err := <-done:
			t.Fatalf("no failed AUTH answered: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	// The rest of the replies are 3.1 s of back-off away.
	other := ts.dial()
	mustOK(t, other, "PING", "")
	if n := answered.Load(); n == failures {
		t.Error("the other connection's PING waited for the back-off")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 3100*time.Millisecond {
		t.Errorf("%d failed AUTHs took %v; expected 3.15 s of back-off", failures, el)
	}
	mustOK(t, c, "AUTH", fmt.Sprintf(`{"method":"bearer","token":%q}`, testToken))
}

// testPKI is an in-process CA with a server and a client certificate.
type testPKI struct {
	dir                      string
	caPool                   *x509.CertPool
	serverCert, serverKey    string
	clientCert, clientKey    string
	caPath                   string
	clientPair, strangerPair tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), caPool: x509.NewCertPool()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stmdb test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p.caPool.AddCert(caCert)
	p.caPath = p.write("ca.pem", "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (string, string, tls.Certificate) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		cp, kp := p.write(name+".pem", "CERTIFICATE", der), p.write(name+"-key.pem", "EC PRIVATE KEY", kder)
		pair, err := tls.LoadX509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return cp, kp, pair
	}
	p.serverCert, p.serverKey, _ = issue("server", 2, x509.ExtKeyUsageServerAuth, caCert, caKey)
	p.clientCert, p.clientKey, p.clientPair = issue("client", 3, x509.ExtKeyUsageClientAuth, caCert, caKey)
	// A client certificate from a CA the server does not trust.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCA := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	_, _, p.strangerPair = issue("stranger", 4, x509.ExtKeyUsageClientAuth, otherCA, otherKey)
	return p
}

func (p *testPKI) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	return path
}

func tlsPing(addr string, cfg *tls.Config) error {
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	m, err := newClient(nc).call("PING", nil)
	if err != nil {
		return err
	}
	if m.Status != "ok" {
		return fmt.Errorf("PING: %s", m.Raw)
	}
	return nil
}

func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	ts := startServer(t, func(c *config) {
		c.TLSEnabled, c.TLSCertPath, c.TLSKeyPath = true, pki.serverCert, pki.serverKey
	})
	if err := tlsPing(ts.addr, &tls.Config{RootCAs: pki.caPool, ServerName: "localhost"}); err != nil {
		t.Errorf("TLS handshake with a trusting client: %v", err)
	}
	if err := tlsPing(ts.addr, &tls.Config{ServerName: "localhost"}); err == nil {
		t.Error("a client that does not trust the CA connected")
	}
	// Plaintext is refused (no fallback).
	nc, _ := net.Dial("tcp", ts.addr)
	nc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := newClient(nc).call("PING", nil); err == nil {
		t.Error("plaintext PING answered on a TLS port")
	}
	nc.Close()
}

func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	ts := startServer(t, func(c *config) {
		c.TLSEnabled, c.TLSCertPath, c.TLSKeyPath = true, pki.serverCert, pki.serverKey
		c.TLSRequireClientCert, c.TLSClientCAPath = true, pki.caPath
	})
	cfg := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: pki.caPool, ServerName: "localhost", Certificates: certs}
	}
	if err := tlsPing(ts.addr, cfg(pki.clientPair)); err != nil {
		t.Errorf("client with a trusted certificate: %v", err)
	}
	if err := tlsPing(ts.addr, cfg()); err == nil {
		t.Error("client without a certificate was accepted")
	}
	if err := tlsPing(ts.addr, cfg(pki.strangerPair)); err == nil {
		t.Error("client with an untrusted certificate was accepted")
	}
}

func TestConnectionLimits(t *testing.T) {
	const idle = time.Second
	ts := startServer(t, func(c *config) {
		c.MaxConnections = 2
		c.IdleTimeout = idle
	})
	a, b := ts.dial(), ts.dial()
	mustOK(t, a, "PING", "")
	mustOK(t, b, "PING", "")
	idleSince := time.Now()
	// The third gets RATE_LIMITED, then the connection closes.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	third := newClient(nc)
	m, err := third.recv()
	if err != nil || m.Error == nil || m.Error.Code != codeRateLimited || !m.Error.Retryable {
		t.Fatalf("over max_connections: %v %v", m, err)
	}
	if _, err := third.recv(); err == nil {
		t.Error("rejected connection stayed open")
	}
	// Idle connections are closed after the idle timeout (not before; how
	// much after depends on the machine's load)...
	for _, c := range []*client{a, b} {
		if m, err := c.recv(); err == nil {
			t.Fatalf("message on an idle connection: %s", m.Raw)
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("idle connection still open 30 s after the idle timeout")
		}
	}
	if el := time.Since(idleSince); el < idle-idle/8 {
		t.Errorf("idle connections closed after %v; the idle timeout is %v", el, idle)
	}
	// ...which frees their slots; an active connection stays, through
	// several idle timeouts.
	c := ts.dial()
	for i := 0; i < 10; i++ {
		mustOK(t, c, "PING", "")
		time.Sleep(idle / 4)
	}
	// A subscriber kept busy by events is not idle.
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"k"}`)
	w := ts.dial()
	watchResult(t, w, "WATCH_INSTANCE", `{"instance_id":"k"}`)
	for i := 0; i < 10; i++ {
		mustOK(t, c, "APPLY_EVENT", `{"instance_id":"k","event":"INC"}`)
		recvEvents(t, w, 1)
		time.Sleep(idle / 4)
	}
}

// TestIdleTimeoutFromLastRequest checks that an idle connection closes
// one idle timeout after its last request, not later: the read deadline is
// re-armed lazily (deadlineTimer), so it can fire before the timeout has
// passed since the last request, and must then wait only for the rest.
// Here it fires 0.9 of the timeout after the last request; re-armed for a
// whole timeout from then, the connection would close 1.9 timeouts after
// its last request. The bound between the two, 1.6, leaves 1.2 s for a
// loaded machine to be late.
func TestIdleTimeoutFromLastRequest(t *testing.T) {
	const idle = 2 * time.Second
	ts := startServer(t, func(c *config) { c.IdleTimeout = idle })
	c := ts.dial()
	mustOK(t, c, "PING", "")
	time.Sleep(idle / 10) // within an eighth: the deadline is not re-armed
	mustOK(t, c, "PING", "")
	last := time.Now()
	_, err := c.recv() // nothing more is sent: this returns when the server closes
	closedAfter := time.Since(last)
	if err == nil {
		t.Fatal("got a message on an idle connection")
	}
	if closedAfter < idle-idle/8 || closedAfter > idle*16/10 {
		t.Errorf("idle connection closed %v after its last request; want about %v", closedAfter, idle)
	}
}

func TestRequestLimits(t *testing.T) {
	small := startServer(t, func(c *config) { c.MaxFrameBytes = 4096 })
	runSteps(t, small.dial(), []step{{op: "INFO", want: `{"features":"<any>","max_batch_ops":100,"max_frame_bytes":4096,"max_subscriptions_per_connection":1024,"protocol_version":1,"server_name":"stmdb","server_version":"<any>","timers":"<any>","disk":"<any>","role":"primary","epoch":0,"replication":"<any>"}`}})
	msgs, closed := rawSend(t, small, appendFrame(nil, modeBinary, []byte(`{"id":"1","op":"PING","params":{"pad":"`+strings.Repeat("p", 5000)+`"}}`)))
	if len(msgs) != 1 || msgs[0].Error == nil || !strings.Contains(msgs[0].Error.Message, "4096") || !closed {
		t.Errorf("frame over limits.max_frame_bytes: %v closed=%v", msgs, closed)
	}
	ts := startServer(t, nil)
	c := ts.dial()
	// A request id over 256 bytes, a batch over max_batch_ops: BAD_REQUEST,
	// connection open. An oversized frame: error frame, then close.
	runSteps(t, c, []step{
		{op: "BATCH", params: `{"mode":"atomic","ops":[` + strings.TrimSuffix(strings.Repeat(`{"op":"PING"},`, 101), ",") + `]}`, code: codeBadRequest, messageHas: "100"},
	})
	c.sendRaw([]byte(fmt.Sprintf(`{"id":%q,"op":"PING"}`, strings.Repeat("x", 300))))
	c.flush()
	if m, err := c.recv(); err != nil || m.Error == nil || m.Error.Details["field"] != "id" {
		t.Errorf("long id: %v %v", m, err)
	}
	mustOK(t, c, "PING", "")
	// The length is refused from the header, before any payload is read.
	hdr := frameWithHeader("RCPX", 1, 0, nil, 0)
	binary.BigEndian.PutUint32(hdr[10:], maxPayload+1)
	msgs, closed = rawSend(t, ts, hdr)
	if len(msgs) != 1 || msgs[0].Error == nil || msgs[0].Error.Code != codeBadRequest || !closed {
		t.Errorf("oversized frame: %v closed=%v", msgs, closed)
	}
}

// Shutdown answers every request already read (once durable) and loses
// nothing that was acknowledged.
func TestGracefulShutdown(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"g","initial_ctx":{"n":-1}}`)
	const n = 300
	for i := 0; i < n; i++ {
		c.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"g","event":"INC","payload":{"n":%d}}`, i))
	}
	c.flush()
	time.Sleep(5 * time.Millisecond)
	done := make(chan struct{})
	go func() { ts.stop(); close(done) }()
	acked := -1
	for {
		m, err := c.recv()
		if err != nil {
			break
		}
		if m.Status != "ok" {
			t.Fatalf("reply during shutdown: %s", m.Raw)
		}
		acked++
	}
	<-done
	ts.start()
	c = ts.dial()
	var got struct {
		Ctx struct{ N int } `json:"ctx"`
	}
	json.Unmarshal(mustOK(t, c, "GET_INSTANCE", `{"instance_id":"g"}`), &got)
	if got.Ctx.N < acked {
		t.Errorf("acknowledged up to n=%d, recovered n=%d", acked, got.Ctx.N)
	}
	t.Logf("%d of %d pipelined requests answered before shutdown", acked+1, n)
}

// SIGTERM (like SIGINT) shuts a real server process down gracefully:
// exit status 0, and what was acknowledged is there after a restart.
func TestSIGTERMShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	dir := t.TempDir()
	start := func() (*exec.Cmd, string) {
		cmd := exec.Command(os.Args[0], "serve", "--bind", "127.0.0.1:0", "--data", dir)
		cmd.Env = append(os.Environ(), "STMDB_TEST_SERVE=1")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if i := strings.Index(sc.Text(), "addr="); i >= 0 && strings.Contains(sc.Text(), "listening") {
				addr := strings.Fields(sc.Text()[i+5:])[0]
				go func() {
					for sc.Scan() {
					}
				}()
				return cmd, addr
			}
		}
		t.Fatal("server did not start")
		return nil, ""
	}
	cmd, addr := start()
	c, err := dialClient(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"t","initial_ctx":{"n":1}}`)
	c.close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	cmd, addr = start()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	c, err = dialClient(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	runSteps(t, c, []step{{op: "GET_INSTANCE", params: `{"instance_id":"t"}`,
		want: `{"ctx":{"n":1},"created_at":"<int>","last_wal_offset":2,"machine":"ctr","state":"s","updated_at":"<int>","version":1}`}})
}

// A client that pipelines requests with big replies and reads none holds
// at most maxQueuedBytes of replies in the server (plus the message being
// encoded); its requests wait, and all replies arrive once it reads.
func TestQueuedRepliesBounded(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	pad := strings.Repeat("x", 1<<20)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"big","initial_ctx":{"pad":"`+pad+`"}}`)
	const n = 120 // 120 MiB of replies
	go func() {
		for i := 0; i < n; i++ {
			c.send("GET_INSTANCE", `{"instance_id":"big"}`)
		}
		c.flush()
	}()
	var sc *conn
	ts.srv.mu.Lock()
	for cc := range ts.srv.conns {
		if cc.remote == c.nc.LocalAddr().String() {
			sc = cc
		}
	}
	ts.srv.mu.Unlock()
	gate := func() (queued, peak int) {
		sc.gate.mu.Lock()
		defer sc.gate.mu.Unlock()
		return sc.gate.queued, sc.gate.peak
	}
	// The queue fills to its bound (the kernel holds the rest) and stops.
	waitFor(t, 2*time.Minute, "replies to queue up", func() bool {
		q, _ := gate()
		return q >= maxQueuedBytes-(2<<20)
	})
	if _, peak := gate(); peak > maxQueuedBytes+(2<<20) {
		t.Errorf("a connection had %d MiB of replies queued", peak>>20)
	}
	// Reading 120 MiB is slow under the race detector on a loaded machine:
	// a generous deadline, and no JSON decoding of megabyte replies.
	c.nc.SetDeadline(time.Now().Add(5 * time.Minute))
	for i := 0; i < n; i++ {
		p, err := c.fr.next()
		if err != nil || !bytes.HasPrefix(p, []byte(`{"type":"response","id":"`+strconv.Itoa(i+3)+`","status":"ok"`)) {
			t.Fatalf("reply %d: %v %.100s", i, err, p)
		}
	}
}

// TestSlowSteadyReaderKeepsConnection: a client that pipelines more than
// it reads back, but keeps reading, must not be cut off by the write
// deadline. The writer is then always behind (its buffer never empty, the
// socket full), and the deadline must still move with each write that
// reaches the socket. (The client must not itself pause for most of the
// idle timeout, which a loaded machine can make it do with a short one.)
func TestSlowSteadyReaderKeepsConnection(t *testing.T) {
	const idle = 1500 * time.Millisecond
	ts := startServer(t, func(c *config) { c.IdleTimeout = idle })
	setup := ts.dial()
	mustOK(t, setup, "PUT_MACHINE", ctrMachine)
	mustOK(t, setup, "CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"k","initial_ctx":{"big":"`+strings.Repeat("x", 20000)+`"}}`)
	d := net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
	}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Small socket buffers on the server's side too, so its writes block.
	deadline := time.Now().Add(2 * time.Second)
	for found := false; !found; {
		ts.srv.mu.Lock()
		for c := range ts.srv.conns {
			if c.nc.RemoteAddr().String() == nc.LocalAddr().String() {
				c.nc.(*net.TCPConn).SetWriteBuffer(64 << 10)
				found = true
			}
		}
		ts.srv.mu.Unlock()
		if !found && time.Now().After(deadline) {
			t.Fatal("the server never registered the connection")
		}
		time.Sleep(time.Millisecond)
	}
	frame := appendFrame(nil, modeBinary, []byte(`{"id":"g","op":"GET_INSTANCE","params":{"instance_id":"k"}}`))
	chunk := bytes.Repeat(frame, 200)
	var stop atomic.Bool
	defer stop.Store(true)
	go func() {
		for !stop.Load() {
			if _, err := nc.Write(chunk); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 2<<10)
	start := time.Now()
	total := 0
	for time.Since(start) < 3*idle {
		n, err := io.ReadFull(nc, buf) // about 1 MB/s: slower than the server writes
		total += n
		if err != nil {
			t.Fatalf("connection closed after %v while the client read steadily (%d bytes read): %v", time.Since(start), total, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
