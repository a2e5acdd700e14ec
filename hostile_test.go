package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The hostile-input suite: one real server process takes malformed,
// oversized, slow and abusive traffic. After each case the server must
// still answer PING on a fresh connection, a canary instance must be
// unchanged, and the process's peak RSS (VmHWM) must stay bounded.

// hostileMemLimitKB bounds the server's peak RSS over the whole suite.
// The suite's legitimate peak is a few 16 MiB frames buffered at once.
const hostileMemLimitKB = 512 << 10

// hostileFrame builds a binary frame with full control of the header.
func hostileFrame(magic string, version, flags uint16, ext []byte, declared uint32, crc uint32, payload []byte) []byte {
	b := []byte(magic)
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ext)))
	b = binary.BigEndian.AppendUint32(b, declared)
	b = binary.BigEndian.AppendUint32(b, crc)
	b = append(b, ext...)
	return append(b, payload...)
}

// hostileGood frames payload correctly.
func hostileGood(payload string) []byte {
	p := []byte(payload)
	return hostileFrame("RCPX", 1, 1, nil, uint32(len(p)), crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)), p)
}

// hostileVm reads a VmXXX line (kB) of /proc/<pid>/status.
func hostileVm(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return -1
}

// hostileReply reads one message in mode m with a deadline.
func hostileReply(nc net.Conn, fr *frameReader, d time.Duration) (*message, error) {
	nc.SetReadDeadline(time.Now().Add(d))
	p, err := fr.next()
	if err != nil {
		return nil, err
	}
	m := &message{Raw: append([]byte(nil), p...)}
	if err := json.Unmarshal(p, m); err != nil {
		return nil, fmt.Errorf("undecodable reply %q: %w", p, err)
	}
	return m, nil
}

// hostileExpectClose checks the contract's answer to a malformed frame:
// one error with id "" and the given code, then the connection closes.
func hostileExpectClose(t *testing.T, nc net.Conn, m wireMode, code string) {
	t.Helper()
	fr := newFrameReader(nc)
	fr.setMode(m)
	r, err := hostileReply(nc, fr, 10*time.Second)
	if err != nil {
		t.Fatalf("want a %s reply, got %v", code, err)
	}
	if r.Status != "error" || r.Error == nil || r.Error.Code != code || r.ID != "" {
		t.Fatalf("want error %s with id \"\", got %s", code, r.Raw)
	}
	if _, err := hostileReply(nc, fr, 10*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !hostileIsConnReset(err) {
		t.Fatalf("want the connection closed after %s, got %v", code, err)
	}
}

func hostileIsConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// hostileExpectOpen checks that the reply is a well-formed error with the
// given code and that the connection still answers PING.
func hostileExpectOpen(t *testing.T, nc net.Conn, m wireMode, wantID, code string) {
	t.Helper()
	fr := newFrameReader(nc)
	fr.setMode(m)
	r, err := hostileReply(nc, fr, 10*time.Second)
	if err != nil {
		t.Fatalf("want a %s reply, got %v", code, err)
	}
	if _, err := fzCheckResponse(r.Raw); err != nil {
		t.Fatalf("malformed reply %s: %v", r.Raw, err)
	}
	if code != "" && (r.Status != "error" || r.Error.Code != code) {
		t.Fatalf("want %s, got %s", code, r.Raw)
	}
	if r.ID != wantID {
		t.Fatalf("reply id %q, want %q: %s", r.ID, wantID, r.Raw)
	}
	nc.Write(appendFrame(nil, m, []byte(`{"id":"after","op":"PING"}`)))
	if r, err := hostileReply(nc, fr, 10*time.Second); err != nil || r.Status != "ok" {
		t.Fatalf("connection unusable after a %s: %v %s", code, err, crashRawOf(r))
	}
}

func hostileDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// hostileCase is one kind of abuse.
type hostileCase struct {
	name string
	run  func(t *testing.T, addr string)
}

var hostileDeep = strings.Repeat("[", 100000) + strings.Repeat("]", 100000)

func hostileCases() []hostileCase {
	closing := func(name string, frame []byte, mode wireMode, code string) hostileCase {
		return hostileCase{name, func(t *testing.T, addr string) {
			nc := hostileDial(t, addr)
			nc.Write(frame)
			hostileExpectClose(t, nc, mode, code)
		}}
	}
	open := func(name, payload, wantID, code string) hostileCase {
		return hostileCase{name, func(t *testing.T, addr string) {
			nc := hostileDial(t, addr)
			nc.Write(hostileGood(payload))
			hostileExpectOpen(t, nc, modeBinary, wantID, code)
		}}
	}
	ping := []byte(`{"id":"1","op":"PING"}`)
	pingCRC := crc32.Checksum(ping, crc32.MakeTable(crc32.Castagnoli))
	return []hostileCase{
		closing("bad magic", hostileFrame("RCPY", 1, 1, nil, uint32(len(ping)), pingCRC, ping), modeBinary, codeBadRequest),
		closing("bad magic http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), modeBinary, codeBadRequest),
		closing("bad version", hostileFrame("RCPX", 2, 1, nil, uint32(len(ping)), pingCRC, ping), modeBinary, codeUnsupportedProtocol),
		closing("bad version 0", hostileFrame("RCPX", 0, 1, nil, uint32(len(ping)), pingCRC, ping), modeBinary, codeUnsupportedProtocol),
		closing("reserved flags", hostileFrame("RCPX", 1, 0x0011, nil, uint32(len(ping)), pingCRC, ping), modeBinary, codeBadRequest),
		closing("reserved flags high", hostileFrame("RCPX", 1, 0x8000, nil, uint32(len(ping)), pingCRC, ping), modeBinary, codeBadRequest),
		closing("huge length", hostileFrame("RCPX", 1, 1, nil, 0xFFFFFFFF, 0, nil), modeBinary, codeBadRequest),
		closing("length just over the limit", hostileFrame("RCPX", 1, 1, nil, maxPayload+1, 0, nil), modeBinary, codeBadRequest),
		closing("CRC mismatch", hostileFrame("RCPX", 1, 1, nil, uint32(len(ping)), pingCRC^1, ping), modeBinary, codeBadRequest),
		closing("invalid UTF-8 binary", hostileGood("{\"id\":\"\xff\",\"op\":\"PING\"}"), modeBinary, codeBadRequest),
		closing("invalid UTF-8 JSONL", []byte("{\"id\":\"\xc3\x28\",\"op\":\"PING\"}\n"), modeJSONL, codeBadRequest),
		closing("not JSON", hostileGood(`{"id":"1","op":`), modeBinary, codeBadRequest),
		closing("very deep JSON envelope", hostileGood(`{"id":"d","op":"PING","params":`+hostileDeep+`}`), modeBinary, codeBadRequest),
		closing("very deep JSON JSONL", []byte(`{"id":"d","op":"PING","params":`+hostileDeep+"}\n"), modeJSONL, codeBadRequest),
		// Exactly as many bytes as the server reads before giving up, so that
		// closing leaves nothing unread (which would reset the connection).
		closing("JSONL line over the limit", append([]byte("{"), bytes.Repeat([]byte(" "), frameMaxLine-1)...), modeJSONL, codeBadRequest),
		closing("NaN literal", hostileGood(`{"id":"n","op":"PING","params":{"x":NaN}}`), modeBinary, codeBadRequest),
		open("id over 256 bytes", `{"id":"`+strings.Repeat("i", 257)+`","op":"PING"}`, "", codeBadRequest),
		open("huge string id", `{"id":"`+strings.Repeat("i", 8<<20)+`","op":"PING"}`, "", codeBadRequest),
		open("huge event name", `{"id":"e","op":"APPLY_EVENT","params":{"instance_id":"canary","event":"`+strings.Repeat("E", 4<<20)+`"}}`, "e", codeBadRequest),
		open("huge instance id", `{"id":"e","op":"GET_INSTANCE","params":{"instance_id":"`+strings.Repeat("x", 1<<20)+`"}}`, "e", codeBadRequest),
		open("id is a number", `{"id":1,"op":"PING"}`, "", codeBadRequest),
		open("unknown op", `{"id":"u","op":"DROP_TABLES"}`, "u", codeBadRequest),
		open("version 1.0", `{"id":"v","op":"GET_MACHINE","params":{"machine":"canary","version":1.0}}`, "v", codeBadRequest),
		open("version 1e400", `{"id":"v","op":"GET_MACHINE","params":{"machine":"canary","version":1e400}}`, "v", codeBadRequest),
		open("version -1", `{"id":"v","op":"GET_MACHINE","params":{"machine":"canary","version":-1}}`, "v", codeBadRequest),
		open("offset 2^64", `{"id":"v","op":"WAL_READ","params":{"from_offset":18446744073709551616}}`, "v", codeBadRequest),
		open("limit -0", `{"id":"v","op":"LIST_INSTANCES","params":{"limit":-0}}`, "v", ""),
		open("huge exponent in ctx", `{"id":"x","op":"APPLY_EVENT","params":{"instance_id":"hostile-scratch","event":"E","payload":{"v":1e999999,"w":-0.0e-999999,"z":123456789012345678901234567890}}}`, "x", ""),
		open("deep but valid ctx", `{"id":"x","op":"APPLY_EVENT","params":{"instance_id":"hostile-scratch","event":"E","payload":{"deep":`+strings.Repeat(`{"a":`, 5000)+`1`+strings.Repeat(`}`, 5000)+`}}}`, "x", ""),
		open("duplicate keys", `{"id":"a","id":"b","op":"PING","op":"PING"}`, "b", ""),
		open("duplicate params", `{"id":"d","op":"APPLY_EVENT","params":{"instance_id":"canary","instance_id":"hostile-scratch","event":"E","event":"E"}}`, "d", ""),
		open("batch of non-objects", `{"id":"b","op":"BATCH","params":{"mode":"atomic","ops":[1,"x",null,[]]}}`, "b", codeBadRequest),
		open("batch over the limit", `{"id":"b","op":"BATCH","params":{"mode":"best_effort","ops":[`+strings.TrimSuffix(strings.Repeat(`{"op":"DELETE_INSTANCE","params":{"instance_id":"nope"}},`, 5000), ",")+`]}}`, "b", codeBadRequest),
		{"truncated header", func(t *testing.T, addr string) {
			nc := hostileDial(t, addr)
			nc.Write(hostileGood(`{"id":"1","op":"PING"}`)[:10])
			nc.Close()
		}},
		{"truncated payload", func(t *testing.T, addr string) {
			nc := hostileDial(t, addr)
			nc.Write(hostileGood(`{"id":"1","op":"PING"}`)[:25])
			nc.Close()
		}},
		{"truncated JSONL line", func(t *testing.T, addr string) {
			nc := hostileDial(t, addr)
			nc.Write([]byte(`{"id":"1","op":"PI`))
			nc.Close()
		}},
		{"declared 16 MiB, sent 1 KiB, on 64 connections", func(t *testing.T, addr string) {
			var ncs []net.Conn
			for i := 0; i < 64; i++ {
				nc := hostileDial(t, addr)
				nc.Write(hostileFrame("RCPX", 1, 1, nil, maxPayload, 0, bytes.Repeat([]byte("x"), 1024)))
				ncs = append(ncs, nc)
			}
			hostileAlive(t, addr)
			for _, nc := range ncs {
				nc.Close()
			}
		}},
		{"thousands of idle connections", func(t *testing.T, addr string) {
			// Up to max_connections (1000 by default) they are held; past
			// it each gets RATE_LIMITED and is closed (rcp.md §3).
			var ncs []net.Conn
			defer func() {
				for _, nc := range ncs {
					nc.Close()
				}
			}()
			for i := 0; i < 3000; i++ {
				nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				ncs = append(ncs, nc)
			}
			limited := 0
			for _, nc := range ncs[1100:] {
				fr := newFrameReader(nc)
				if r, err := hostileReply(nc, fr, 5*time.Second); err == nil && r.Error != nil && r.Error.Code == codeRateLimited {
					limited++
				}
			}
			if limited != len(ncs)-1100 {
				t.Errorf("%d of %d connections over the limit got RATE_LIMITED", limited, len(ncs)-1100)
			}
			for _, nc := range ncs {
				nc.Close()
			}
			ncs = nil
			// The slots come back once they close.
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := dialClient(addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c.nc.SetDeadline(time.Now().Add(5 * time.Second))
				m, err := c.call("PING", nil)
				c.close()
				if err == nil && m.Status == "ok" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("connection slots not released: %v %s", err, crashRawOf(m))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}},
		{"slow senders", func(t *testing.T, addr string) {
			// Each sender takes over a second to send its 43 bytes, so a
			// server that read one connection at a time would keep a PING
			// waiting for half a minute; one that does not answers it at
			// once. The bound sits far from both, for loaded machines.
			frame := hostileGood(`{"id":"slow","op":"PING"}`)
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for i := 0; i < 32; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						errs <- err
						return
					}
					defer nc.Close()
					for k := range frame {
						if _, err := nc.Write(frame[k : k+1]); err != nil {
							errs <- err
							return
						}
						time.Sleep(25 * time.Millisecond)
					}
					fr := newFrameReader(nc)
					if r, err := hostileReply(nc, fr, 10*time.Second); err != nil || r.ID != "slow" || r.Status != "ok" {
						errs <- fmt.Errorf("slow sender's reply: %v %s", err, crashRawOf(r))
					}
				}()
			}
			// Others are served while the slow ones trickle.
			for i := 0; i < 10; i++ {
				start := time.Now()
				hostileAlive(t, addr)
				if d := time.Since(start); d > 8*time.Second {
					t.Errorf("PING took %s while slow senders trickle", d)
				}
				time.Sleep(20 * time.Millisecond)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		}},
		{"client that never reads its replies", func(t *testing.T, addr string) {
			nc := hostileDial(t, addr)
			frame := hostileGood(`{"id":"r","op":"GET_INSTANCE","params":{"instance_id":"canary"}}`)
			burst := bytes.Repeat(frame, 1000)
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := nc.Write(burst); err != nil {
					break // the server stopped reading: back-pressure, as it should
				}
			}
			hostileAlive(t, addr)
		}},
		{"JSONL lines of 16 MiB on 2 connections", func(t *testing.T, addr string) {
			line := append([]byte(`{"id":"big","op":"PING","params":{"pad":"`), bytes.Repeat([]byte("p"), maxPayload-100)...)
			line = append(line, "\"}}\n"...)
			var wg sync.WaitGroup
			for i := 0; i < 2; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						t.Error(err)
						return
					}
					defer nc.Close()
					nc.SetDeadline(time.Now().Add(30 * time.Second))
					nc.Write(line)
					fr := newFrameReader(bufio.NewReader(nc))
					fr.setMode(modeJSONL)
					p, err := fr.next()
					if err != nil || !bytes.Contains(p, []byte(`"pong":true`)) {
						t.Errorf("big PING: %v %.200s", err, p)
					}
				}()
			}
			wg.Wait()
		}},
		{"subscriber that never reads", hostileDeafSubscriber},
	}
}

// hostileDeafSubscriber: a WATCH_ALL subscriber stops reading while
// others write thousands of events with fat payloads. Writers must not
// stall, server memory must stay bounded (checked by the suite), and the
// subscriber is not allowed to make the server buffer without limit.
func hostileDeafSubscriber(t *testing.T, addr string) {
	w, err := dialClient(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	w.nc.SetDeadline(time.Now().Add(3 * time.Minute))
	control := hostileWriteEvents(t, w, 500)
	deaf, err := dialClient(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.close()
	deaf.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if m, err := deaf.call("WATCH_ALL", `{"machines":["canary"]}`); err != nil || m.Status != "ok" {
		t.Fatalf("WATCH_ALL: %v %s", err, crashRawOf(m))
	}
	// From here on, deaf never reads.
	const total = 2000
	d := hostileWriteEvents(t, w, total)
	t.Logf("500 events with 8 KiB payloads: %s without a subscriber; %d with one that never reads: %s (%.1f ms/event vs %.1f)",
		control.Round(time.Millisecond), total, d.Round(time.Millisecond),
		float64(d.Microseconds())/1000/total, float64(control.Microseconds())/1000/500)
}

// hostileWriteEvents pipelines n fat events on the scratch instance and
// returns how long they took.
func hostileWriteEvents(t *testing.T, w *client, n int) time.Duration {
	t.Helper()
	pad := strings.Repeat("z", 8<<10)
	const depth = 100
	start := time.Now()
	for i := 0; i < n; i += depth {
		for k := 0; k < depth; k++ {
			w.send("APPLY_EVENT", fmt.Sprintf(`{"instance_id":"hostile-scratch","event":"E","payload":{"pad":%q,"i":%d}}`, pad, i+k))
		}
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < depth; k++ {
			m, err := w.recv()
			if err != nil || m.Status != "ok" {
				t.Fatalf("write %d: %v %s", i+k, err, crashRawOf(m))
			}
		}
	}
	return time.Since(start)
}

// hostileAlive checks that a fresh connection gets PING answered.
func hostileAlive(t *testing.T, addr string) {
	t.Helper()
	c, err := dialClient(addr, 5*time.Second)
	if err != nil {
		t.Fatalf("server not accepting: %v", err)
	}
	defer c.close()
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if m, err := c.call("PING", nil); err != nil || m.Status != "ok" {
		t.Fatalf("PING after abuse: %v %s", err, crashRawOf(m))
	}
}

func TestHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("real process; skipped with -short")
	}
	p := crashStartProc(t, t.TempDir())
	pid := p.cmd.Process.Pid
	c, err := dialClient(p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.nc.SetDeadline(time.Now().Add(5 * time.Minute))
	defer c.close()
	mustOK(t, c, "PUT_MACHINE", `{"machine":"canary","version":1,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"E","to":"b","guard":"ctx.n > 1"},{"from":["a","b"],"event":"E","to":"a"}]}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"canary","version":1,"instance_id":"canary","initial_ctx":{"n":2,"s":"canary"}}`)
	mustOK(t, c, "APPLY_EVENT", `{"instance_id":"canary","event":"E","payload":{"k":"v"}}`)
	mustOK(t, c, "CREATE_INSTANCE", `{"machine":"canary","version":1,"instance_id":"hostile-scratch"}`)
	canary := string(mustOK(t, c, "GET_INSTANCE", `{"instance_id":"canary"}`))
	base := hostileVm(pid, "VmHWM")
	t.Logf("server RSS after setup: %d kB", base)
	for _, hc := range hostileCases() {
		if !t.Run(hc.name, func(t *testing.T) {
			hc.run(t, p.addr)
			hostileAlive(t, p.addr)
			if got := string(mustOK(t, c, "GET_INSTANCE", `{"instance_id":"canary"}`)); got != canary {
				t.Fatalf("canary changed:\n was %s\n now %s", canary, got)
			}
			t.Logf("server VmHWM %d kB, VmRSS %d kB", hostileVm(pid, "VmHWM"), hostileVm(pid, "VmRSS"))
		}) {
			break
		}
	}
	peak := hostileVm(pid, "VmHWM")
	limit := int64(hostileMemLimitKB)
	if raceEnabled {
		// The race detector's shadow memory multiplies the heap several
		// times; the bound itself is checked by the plain `go test` run.
		limit *= 3
	}
	t.Logf("server peak RSS over the suite: %d kB (limit %d kB)", peak, limit)
	if peak > limit {
		t.Errorf("server peak RSS %d kB over the %d kB bound", peak, limit)
	}
}

// TestBlackBoxFuzzer builds the protocol fuzzer (./fuzz) and runs it for a
// few seconds against a real server process: no divergence allowed.
func TestBlackBoxFuzzer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ./fuzz; skipped with -short")
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		t.Skipf("no go tool at %s", goTool)
	}
	bin := filepath.Join(t.TempDir(), "rcpfuzz")
	if out, err := exec.Command(goTool, "build", "-o", bin, "./fuzz").CombinedOutput(); err != nil {
		t.Fatalf("building ./fuzz: %v\n%s", err, out)
	}
	p := crashStartProc(t, t.TempDir())
	out, err := exec.Command(bin, "--addr", p.addr, "--duration", "4s", "--seed", "1").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("fuzzer: %v", err)
	}
	if !bytes.Contains(out, []byte("no divergence")) {
		t.Fatal("fuzzer did not report a clean run")
	}
}

// TestHostileAuthBruteForce: many wrong tokens on many connections. Each
// failure is AUTH_FAILED after a growing per-connection delay; nothing
// crashes or closes, nothing but HELLO/AUTH/PING/BYE works before AUTH,
// the right token still works, and memory stays bounded.
func TestHostileAuthBruteForce(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds; skipped with -short")
	}
	const token = "correct horse battery staple"
	sum := sha256.Sum256([]byte(token))
	ts := startServer(t, func(c *config) {
		c.AuthRequired = true
		c.AuthTokenHashes = []string{hex.EncodeToString(sum[:])}
	})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const conns, attempts = 20, 5
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := dialClient(ts.addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.close()
			c.nc.SetDeadline(time.Now().Add(time.Minute))
			var last time.Duration
			for k := 0; k < attempts; k++ {
				start := time.Now()
				m, err := c.call("AUTH", fmt.Sprintf(`{"method":"bearer","token":"guess-%d-%d"}`, i, k))
				last = time.Since(start)
				if err != nil || m.Status != "error" || m.Error.Code != codeAuthFailed {
					errs <- fmt.Errorf("conn %d attempt %d: want AUTH_FAILED, got %v %s", i, k, err, crashRawOf(m))
					return
				}
			}
			if last < 200*time.Millisecond {
				errs <- fmt.Errorf("conn %d: attempt %d answered in %s: failures are not rate-limited", i, attempts, last)
			}
			if m, err := c.call("GET_INSTANCE", `{"instance_id":"x"}`); err != nil || m.Error == nil || m.Error.Code != codeUnauthorized {
				errs <- fmt.Errorf("conn %d: GET_INSTANCE before AUTH: %v %s", i, err, crashRawOf(m))
			}
			if m, err := c.call("PING", nil); err != nil || m.Status != "ok" {
				errs <- fmt.Errorf("conn %d: PING after failures: %v %s", i, err, crashRawOf(m))
			}
			if m, err := c.call("AUTH", fmt.Sprintf(`{"method":"bearer","token":%q}`, token)); err != nil || m.Status != "ok" {
				errs <- fmt.Errorf("conn %d: the right token after failures: %v %s", i, err, crashRawOf(m))
			}
			if m, err := c.call("LIST_INSTANCES", nil); err != nil || m.Status != "ok" {
				errs <- fmt.Errorf("conn %d: after AUTH: %v %s", i, err, crashRawOf(m))
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("heap in use: %d KiB before, %d KiB after %d failed AUTHs", before.HeapInuse>>10, after.HeapInuse>>10, conns*attempts)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB during the brute force", grown>>20)
	}
}
