package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var replCycles = flag.Int("repl.cycles", 20, "failover cycles in TestFailoverLoop (soak with more)")

// replProc is a real stmdb process (this test binary) for replication tests.
type replProc struct {
	*crashProc
	dir  string
	args []string
}

// replStart runs `serve` on dir with extra flags and waits until it
// listens; it fails the test if the process exits first.
func replStart(t *testing.T, dir string, extra ...string) *replProc {
	t.Helper()
	p, err := replStartProc(dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.kill()
		}
	})
	return p
}

func replStartProc(dir string, extra ...string) (*replProc, error) {
	p, err := crashStartServer(os.Args[0], []string{"STMDB_TEST_SERVE=1", "RSTMDB_WAL_SEGMENT_SIZE_MB=1"}, dir,
		append([]string{"--http-bind", ""}, extra...)...)
	if err != nil {
		return nil, err
	}
	return &replProc{crashProc: p, dir: dir, args: extra}, nil
}

func replDial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := dialClient(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

func replCall(t *testing.T, c *client, op, params string) json.RawMessage {
	t.Helper()
	res, err := crashCall(c, op, params)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// replInfoOf reads INFO's replication member.
func replInfoOf(t *testing.T, addr string) replInfo {
	t.Helper()
	c := replDial(t, addr)
	defer c.close()
	var in struct {
		Role        string   `json:"role"`
		Epoch       uint64   `json:"epoch"`
		Replication replInfo `json:"replication"`
	}
	if err := json.Unmarshal(replCall(t, c, "INFO", ""), &in); err != nil {
		t.Fatal(err)
	}
	return in.Replication
}

func replLastOffset(t *testing.T, addr string) uint64 {
	t.Helper()
	c := replDial(t, addr)
	defer c.close()
	var st struct {
		LatestOffset uint64 `json:"latest_offset"`
	}
	json.Unmarshal(replCall(t, c, "WAL_STATS", ""), &st)
	return st.LatestOffset
}

// replWaitCaughtUp waits until the replica's durable offset reaches off.
func replWaitCaughtUp(t *testing.T, addr string, off uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A replica copying its primary afresh does not listen meanwhile.
		var in struct {
			Replication replInfo `json:"replication"`
		}
		if c, err := dialClient(addr, time.Second); err == nil {
			if res, err := crashCall(c, "INFO", ""); err == nil {
				json.Unmarshal(res, &in)
			}
			c.close()
		}
		if d := in.Replication.DurableOffset; d != nil && *d >= off {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s did not reach offset %d: %+v", addr, off, in.Replication)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const replMachine = `{"machine":"acct","version":1,"definition":{"states":["open","held"],"initial":"open","transitions":[{"from":"open","event":"DEP","to":"open"},{"from":"open","event":"HOLD","to":"held"},{"from":"held","event":"FREE","to":"open"}]}}`

// replLoad runs writers against addr until stop; it returns the acked
// writes as instance id -> last acked wal_offset.
type replLoad struct {
	mu     sync.Mutex
	acked  map[string]uint64
	wg     sync.WaitGroup
	stop   atomic.Bool
	n      atomic.Int64
	prefix string
}

func replStartLoad(addr, prefix string, writers int, pad ...int) *replLoad {
	l := &replLoad{acked: map[string]uint64{}, prefix: prefix}
	padding := ""
	if len(pad) > 0 {
		padding = strings.Repeat("x", pad[0])
	}
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c, err := dialClient(addr, 5*time.Second)
			if err != nil {
				return
			}
			defer c.close()
			for i := 0; !l.stop.Load(); i++ {
				id := fmt.Sprintf("%s-%d-%d", prefix, w, i/4)
				var res json.RawMessage
				if i%4 == 0 {
					res, err = crashCall(c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"acct","version":1,"instance_id":%q,"initial_ctx":{"n":0},"idempotency_key":%q}`, id, id+"-c"))
				} else {
					res, err = crashCall(c, "APPLY_EVENT", fmt.Sprintf(`{"instance_id":%q,"event":"DEP","payload":{"n":%d,"pad":%q}}`, id, i, padding))
				}
				if err != nil {
					return // the server went away
				}
				var r struct {
					WalOffset uint64 `json:"wal_offset"`
				}
				json.Unmarshal(res, &r)
				l.mu.Lock()
				l.acked[id] = r.WalOffset
				l.mu.Unlock()
				l.n.Add(1)
			}
		}()
	}
	return l
}

func (l *replLoad) finish() map[string]uint64 {
	l.stop.Store(true)
	l.wg.Wait()
	return l.acked
}

// replCompare checks that two servers hold the same machines, instances
// (every field), idempotency results and WAL_READ pages.
func replCompare(t *testing.T, a, b string) {
	t.Helper()
	ca, cb := replDial(t, a), replDial(t, b)
	defer ca.close()
	defer cb.close()
	same := func(op, params string) json.RawMessage {
		ra, rb := replCall(t, ca, op, params), replCall(t, cb, op, params)
		if diff := cmp.Diff(string(ra), string(rb)); diff != "" {
			t.Fatalf("%s %s differs (-%s +%s):\n%s", op, params, a, b, diff)
		}
		return ra
	}
	same("LIST_MACHINES", "")
	n := 0
	for off := 0; ; off += 500 {
		var page struct {
			Instances []struct {
				ID string `json:"id"`
			} `json:"instances"`
			HasMore bool `json:"has_more"`
		}
		json.Unmarshal(same("LIST_INSTANCES", fmt.Sprintf(`{"limit":500,"offset":%d}`, off)), &page)
		for _, in := range page.Instances {
			same("GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, in.ID))
			n++
		}
		if !page.HasMore {
			break
		}
	}
	// WAL_READ from the first offset both still hold (a copied replica
	// starts after its snapshot; compaction trims either).
	first := func(c *client) uint64 {
		var st struct {
			EntryCount   uint64 `json:"entry_count"`
			LatestOffset uint64 `json:"latest_offset"`
		}
		json.Unmarshal(replCall(t, c, "WAL_STATS", ""), &st)
		return st.LatestOffset - st.EntryCount + 1
	}
	pages := 0
	for from := max(first(ca), first(cb)); ; pages++ {
		var p struct {
			Next    *uint64           `json:"next_offset"`
			Records []json.RawMessage `json:"records"`
		}
		json.Unmarshal(same("WAL_READ", fmt.Sprintf(`{"from_offset":%d,"limit":1000}`, from)), &p)
		if len(p.Records) == 0 || p.Next == nil || *p.Next <= from {
			break
		}
		from = *p.Next
	}
	t.Logf("%s and %s agree: %d instances, %d WAL_READ pages", a, b, n, pages)
}

// TestReplicationTwoReplicas: a primary with two replicas under write
// load; one replica is killed with SIGKILL and restarted mid-stream; the
// replicas refuse writes, answer INFO, and end identical to the primary.
func TestReplicationTwoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	p := replStart(t, filepath.Join(root, "p"))
	c := replDial(t, p.addr)
	replCall(t, c, "PUT_MACHINE", replMachine)
	r1 := replStart(t, filepath.Join(root, "r1"), "--replica-of", p.addr)
	r2 := replStart(t, filepath.Join(root, "r2"), "--replica-of", p.addr)

	load := replStartLoad(p.addr, "w", 8)
	time.Sleep(300 * time.Millisecond)
	r2.kill()
	time.Sleep(200 * time.Millisecond)
	r2 = replStart(t, r2.dir, r2.args...)
	time.Sleep(300 * time.Millisecond)
	acked := load.finish()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged")
	}

	// Writes are refused on a replica, with the primary named.
	rc := replDial(t, r1.addr)
	m, err := rc.call("CREATE_INSTANCE", map[string]any{"machine": "acct", "version": 1, "instance_id": "x"})
	if err != nil {
		t.Fatal(err)
	}
	e := m.rcpErr()
	if e == nil || e.Code != codeBadRequest || e.Details["role"] != "replica" || e.Details["primary"] != p.addr || !strings.Contains(e.Message, "read-only replica") {
		t.Fatalf("write on a replica: %s", m.Raw)
	}

	last := replLastOffset(t, p.addr)
	replWaitCaughtUp(t, r1.addr, last)
	replWaitCaughtUp(t, r2.addr, last)
	in := replInfoOf(t, p.addr)
	if in.Role != "primary" || len(in.Replicas) != 2 {
		t.Fatalf("primary INFO replication: %+v", in)
	}
	replCompare(t, p.addr, r1.addr)
	replCompare(t, p.addr, r2.addr)
	t.Logf("%d writes acknowledged, last offset %d", load.n.Load(), last)
}

// replProxy forwards TCP to a target; cut closes every connection
// through it, and stall holds traffic until released.
type replProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	stall  atomic.Bool
}

func replStartProxy(t *testing.T, target string) *replProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x := &replProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); x.cut() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			x.mu.Lock()
			x.conns = append(x.conns, a, b)
			x.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 997) // odd: cuts land mid-record
				for {
					for x.stall.Load() {
						time.Sleep(5 * time.Millisecond)
					}
					n, err := src.Read(buf)
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.Close()
				src.Close()
			}
			go pipe(a, b)
			go pipe(b, a)
		}
	}()
	return x
}

func (x *replProxy) cut() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range x.conns {
		c.Close()
	}
	x.conns = nil
}

// TestReplicationCutsAndStalls: the replica's connection is cut mid-record
// and stalled, repeatedly, under load; it reconnects by itself and ends
// identical to the primary.
func TestReplicationCutsAndStalls(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	p := replStart(t, filepath.Join(root, "p"))
	replCall(t, replDial(t, p.addr), "PUT_MACHINE", replMachine)
	x := replStartProxy(t, p.addr)
	r := replStart(t, filepath.Join(root, "r"), "--replica-of", x.ln.Addr().String())
	load := replStartLoad(p.addr, "cut", 4)
	for i := range 6 {
		time.Sleep(150 * time.Millisecond)
		if i%2 == 0 {
			x.cut()
		} else {
			x.stall.Store(true)
			time.Sleep(200 * time.Millisecond)
			x.stall.Store(false)
		}
	}
	load.finish()
	replWaitCaughtUp(t, r.addr, replLastOffset(t, p.addr))
	replCompare(t, p.addr, r.addr)
}

// TestReplicationBootstrapAfterCompaction: a new replica of a primary
// whose early log was compacted away starts from a snapshot; a replica
// that was away while that happened is copied afresh by itself.
func TestReplicationBootstrapAfterCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	p := replStart(t, filepath.Join(root, "p"))
	c := replDial(t, p.addr)
	replCall(t, c, "PUT_MACHINE", replMachine)
	old := replStart(t, filepath.Join(root, "old"), "--replica-of", p.addr)
	load := replStartLoad(p.addr, "a", 4)
	time.Sleep(200 * time.Millisecond)
	load.finish()
	replWaitCaughtUp(t, old.addr, replLastOffset(t, p.addr))
	old.stop()

	load = replStartLoad(p.addr, "b", 4, 4000)
	time.Sleep(600 * time.Millisecond)
	load.finish()
	var cr struct {
		SegmentsDeleted int `json:"segments_deleted"`
	}
	json.Unmarshal(replCall(t, c, "COMPACT", `{"force_snapshot":true}`), &cr)
	if cr.SegmentsDeleted == 0 {
		t.Fatal("compaction deleted no segment: the test needs the early log gone")
	}
	load = replStartLoad(p.addr, "c", 2)
	r := replStart(t, filepath.Join(root, "new"), "--replica-of", p.addr)
	// The replica that was away resumes past the compacted log: copied again.
	old = replStart(t, old.dir, old.args...)
	time.Sleep(200 * time.Millisecond)
	load.finish()
	last := replLastOffset(t, p.addr)
	replWaitCaughtUp(t, r.addr, last)
	replWaitCaughtUp(t, old.addr, last)
	// WAL_READ pages differ where the primary holds records the copies never
	// had; compare state, then the log from where every copy has it.
	for _, a := range []string{r.addr, old.addr} {
		ca, cb := replDial(t, p.addr), replDial(t, a)
		for _, op := range []string{"LIST_MACHINES"} {
			if x, y := replCall(t, ca, op, ""), replCall(t, cb, op, ""); string(x) != string(y) {
				t.Fatalf("%s differs", op)
			}
		}
		replCompareInstances(t, ca, cb)
	}
	joined := strings.Join(old.lines(), "\n")
	if !strings.Contains(joined, "copied the primary") {
		t.Fatalf("the replica that was away was not copied afresh:\n%s", joined)
	}
}

func replCompareInstances(t *testing.T, ca, cb *client) {
	t.Helper()
	for off := 0; ; off += 500 {
		pa := replCall(t, ca, "LIST_INSTANCES", fmt.Sprintf(`{"limit":500,"offset":%d}`, off))
		pb := replCall(t, cb, "LIST_INSTANCES", fmt.Sprintf(`{"limit":500,"offset":%d}`, off))
		if diff := cmp.Diff(string(pa), string(pb)); diff != "" {
			t.Fatalf("LIST_INSTANCES differs:\n%s", diff)
		}
		var page struct {
			Instances []struct {
				ID string `json:"id"`
			} `json:"instances"`
			HasMore bool `json:"has_more"`
		}
		json.Unmarshal(pa, &page)
		for _, in := range page.Instances {
			q := fmt.Sprintf(`{"instance_id":%q}`, in.ID)
			if x, y := replCall(t, ca, "GET_INSTANCE", q), replCall(t, cb, "GET_INSTANCE", q); string(x) != string(y) {
				t.Fatalf("instance %s differs:\n%s\n%s", in.ID, x, y)
			}
		}
		if !page.HasMore {
			return
		}
	}
}

// replWaitExit waits for p to exit and returns its log.
func replWaitExit(t *testing.T, p *replProc) string {
	t.Helper()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("process did not exit:\n%s", strings.Join(p.lines(), "\n"))
	}
	<-p.done
	return strings.Join(p.lines(), "\n")
}

// TestPromoteAndFence: promotion writes an epoch record and takes writes;
// the old primary, back as a replica after writing under the old epoch,
// refuses to serve, naming both offsets, and --rebootstrap copies afresh;
// a replica refuses a stream of lower epoch.
func TestPromoteAndFence(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	p := replStart(t, filepath.Join(root, "p"))
	c := replDial(t, p.addr)
	replCall(t, c, "PUT_MACHINE", replMachine)
	replCall(t, c, "CREATE_INSTANCE", `{"machine":"acct","version":1,"instance_id":"a"}`)
	r := replStart(t, filepath.Join(root, "r"), "--replica-of", p.addr)
	replWaitCaughtUp(t, r.addr, replLastOffset(t, p.addr))

	res := replCall(t, replDial(t, r.addr), "PROMOTE", "")
	var pr struct {
		Role   string `json:"role"`
		Epoch  uint64 `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	json.Unmarshal(res, &pr)
	if pr.Role != "primary" || pr.Epoch != 1 || pr.Offset != 3 {
		t.Fatalf("PROMOTE = %s", res)
	}
	// Promoting again is a no-op answer.
	if again := replCall(t, replDial(t, r.addr), "PROMOTE", ""); string(again) != string(res) {
		t.Fatalf("second PROMOTE = %s, want %s", again, res)
	}
	rc := replDial(t, r.addr)
	replCall(t, rc, "CREATE_INSTANCE", `{"machine":"acct","version":1,"instance_id":"b"}`)
	// The old primary takes a write under the old epoch, then comes back
	// as a replica of the new one.
	replCall(t, c, "CREATE_INSTANCE", `{"machine":"acct","version":1,"instance_id":"lost"}`)
	p.stop()
	p2, err := replStartProc(p.dir, "--replica-of", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	out := replWaitExit(t, p2)
	if !strings.Contains(out, "diverges from the primary's at offset 3") || !strings.Contains(out, "records 3..3") || !strings.Contains(out, "epoch 1 starts at offset 3") {
		t.Fatalf("the diverged node did not refuse as expected:\n%s", out)
	}
	if p2.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("the refusing node exited 0")
	}
	p3 := replStart(t, p.dir, "--replica-of", r.addr, "--rebootstrap")
	replWaitCaughtUp(t, p3.addr, replLastOffset(t, r.addr))
	replCompare(t, r.addr, p3.addr)
	matches, _ := filepath.Glob(p.dir + ".discarded-*")
	if len(matches) != 1 {
		t.Fatalf("the old data directory was not moved aside: %v", matches)
	}

	// Fencing: a node at epoch 1 refuses a primary at epoch 0.
	stale := replStart(t, filepath.Join(root, "stale"))
	sc := replDial(t, stale.addr)
	replCall(t, sc, "PUT_MACHINE", replMachine)
	for i := range 10 {
		replCall(t, sc, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"acct","version":1,"instance_id":"s%d"}`, i))
	}
	p3.stop()
	p4, err := replStartProc(p.dir, "--replica-of", stale.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p4.kill()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(strings.Join(p4.lines(), "\n"), "epoch 0 is lower than epoch 1") {
		if time.Now().After(deadline) {
			t.Fatalf("no fencing refusal:\n%s", strings.Join(p4.lines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And does not serve reads meanwhile.
	m, err := replDial(t, p4.addr).call("GET_INSTANCE", map[string]any{"instance_id": "a"})
	if err != nil {
		t.Fatal(err)
	}
	if m.rcpErr() == nil {
		t.Fatalf("a replica that never checked its log served a read: %s", m.Raw)
	}
}

// replRestartAsReplica restarts a node as a replica of primary: when its
// log has diverged it must refuse (exit non-zero, naming the offsets),
// and is then started with --rebootstrap.
func replRestartAsReplica(t *testing.T, dir, primary string, extra ...string) (*replProc, bool) {
	t.Helper()
	args := append([]string{"--replica-of", primary}, extra...)
	p := replStart(t, dir, args...)
	// Either it follows (INFO says connected) or it refuses and exits.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			p.cmd.Wait()
			out := strings.Join(p.lines(), "\n")
			if !strings.Contains(out, "diverges from the primary's at offset") && !strings.Contains(out, "past the primary's last offset") {
				t.Fatalf("replica exited without a divergence refusal:\n%s", out)
			}
			return replStart(t, dir, append(args, "--rebootstrap")...), true
		default:
		}
		if c, err := dialClient(p.addr, time.Second); err == nil {
			res, err := crashCall(c, "INFO", "")
			c.close()
			var in struct {
				Replication replInfo `json:"replication"`
			}
			if err == nil && json.Unmarshal(res, &in) == nil && in.Replication.Connected != nil && *in.Replication.Connected {
				return p, false
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica neither followed nor refused:\n%s", strings.Join(p.lines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailoverLoop: with sync_replicas=1, kill -9 the primary under load,
// promote the replica furthest ahead, check that every write the old
// primary acknowledged is there, point the other replica at it and bring
// the old primary back as a replica (it catches up, or refuses and is
// copied afresh). go test -run TestFailoverLoop -repl.cycles=200 soaks it.
func TestFailoverLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	root := t.TempDir()
	syncArgs := []string{"--sync-replicas", "1"}
	primary := replStart(t, filepath.Join(root, "n0"), syncArgs...)
	replicas := []*replProc{
		replStart(t, filepath.Join(root, "n1"), append([]string{"--replica-of", primary.addr}, syncArgs...)...),
		replStart(t, filepath.Join(root, "n2"), append([]string{"--replica-of", primary.addr}, syncArgs...)...),
	}
	// With sync_replicas=1 a write waits for a replica's ack.
	replCall(t, replDial(t, primary.addr), "PUT_MACHINE", replMachine)
	refusals := 0
	for cycle := range *replCycles {
		load := replStartLoad(primary.addr, fmt.Sprintf("c%d", cycle), 4)
		time.Sleep(time.Duration(50+cycle%5*30) * time.Millisecond)
		primary.kill()
		acked := load.finish()

		// The orchestrator promotes the replica furthest ahead.
		best, bestOff := 0, uint64(0)
		for i, r := range replicas {
			in := replInfoOf(t, r.addr)
			if *in.DurableOffset >= bestOff {
				best, bestOff = i, *in.DurableOffset
			}
		}
		np := replicas[best]
		var pr struct {
			Epoch uint64 `json:"epoch"`
		}
		json.Unmarshal(replCall(t, replDial(t, np.addr), "PROMOTE", ""), &pr)
		if pr.Epoch != uint64(cycle+1) {
			t.Fatalf("cycle %d: promoted to epoch %d", cycle, pr.Epoch)
		}
		c := replDial(t, np.addr)
		for id, off := range acked {
			var in struct {
				LastWalOffset uint64 `json:"last_wal_offset"`
			}
			res, err := crashCall(c, "GET_INSTANCE", fmt.Sprintf(`{"instance_id":%q}`, id))
			if err != nil {
				t.Fatalf("cycle %d: acknowledged write to %s (offset %d) lost at failover: %v", cycle, id, off, err)
			}
			json.Unmarshal(res, &in)
			if in.LastWalOffset < off {
				t.Fatalf("cycle %d: instance %s at offset %d on the new primary; offset %d was acknowledged", cycle, id, in.LastWalOffset, off)
			}
		}
		other := replicas[1-best]
		other.stop()
		o, r1 := replRestartAsReplica(t, other.dir, np.addr, syncArgs...)
		old, r2 := replRestartAsReplica(t, primary.dir, np.addr, syncArgs...)
		for _, r := range []bool{r1, r2} {
			if r {
				refusals++
			}
		}
		primary, replicas = np, []*replProc{o, old}
		last := replLastOffset(t, primary.addr)
		replWaitCaughtUp(t, o.addr, last)
		replWaitCaughtUp(t, old.addr, last)
		t.Logf("cycle %d: %d writes acknowledged, promoted %s at epoch %d, refusals so far %d", cycle, len(acked), filepath.Base(np.dir), pr.Epoch, refusals)
	}
	replCompare(t, primary.addr, replicas[0].addr)
	replCompare(t, primary.addr, replicas[1].addr)
}
