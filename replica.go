package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Replication: read replicas, synchronous replicas, promotion and fencing.
//
// # Basics
//
// `stmdb serve --replica-of HOST:PORT` follows a primary. The follower
// (follow) opens a REPLICATE stream (replicate.go) from its own last
// offset, appends each record it receives to its own log with the same
// offset (the bytes of a record, its CRC included, are those of the
// primary's) and applies it through the same apply, under the state lock,
// as the primary's writers do. Its log's committer makes the records
// durable; an ack goroutine tells the primary each new durable offset.
// Reads, watches and WAL_READ work as on a primary; client writes are
// refused (writeGate); timers do not fire.
//
// A replica whose data directory holds nothing, or started with
// --rebootstrap, or whose next offset the primary no longer has, is first
// copied (replicaBootstrap): the primary's snapshot goes into a staging
// directory beside the data directory, is checked (transfer CRC, then
// decoded in full), and only then becomes the data directory, so a
// half-copied state is never served nor recovered. The log then follows
// from the snapshot's offset.
//
// # Epochs and fencing
//
// PROMOTE stops following and writes an epoch record (epoch+1) through
// the log; its offset is where the epoch starts. The epoch history (epoch
// -> first offset) is state: apply keeps it, snapshots carry it, and
// REPLICATE's reply sends it. A follower refuses a stream whose epoch is
// lower than one it has seen (a stale primary), and a node whose log holds
// records at or after the point where the primary's history and its own
// part (a former primary that kept writing under the old epoch) refuses to
// serve at all, naming both offsets; `--rebootstrap` moves its data
// directory aside and copies afresh. Until its first handshake with the
// primary succeeds, a replica does not serve reads: it cannot know yet
// whether its log is still part of the primary's history.
//
// # Synchronous replication
//
// With replication.sync_replicas = N, a write's reply waits (in the
// connection writer, after the local sync) until the Nth-highest durable
// offset acked by the connected replicas reaches its record: one more
// condition on the same queue. After replication.sync_timeout_ms without
// it, the primary degrades to asynchronous (WARN log, metric) and returns
// to synchronous once N replicas have caught up with its durable offset.
//
// # Caveats
//
//   - With asynchronous replication, writes the old primary acknowledged
//     but had not sent are lost at failover (and make its log diverge);
//     sync_replicas >= 1 prevents it for every write acknowledged while
//     replication was synchronous.
//   - Lock order: promoteMu, then st.mu, then the WAL's locks; repl.mu is
//     taken alone.

// epochStart is one entry of the epoch history.
type epochStart struct {
	Epoch  uint64 `json:"epoch"`
	Offset uint64 `json:"offset"` // the epoch record's offset
}

// epoch is the current epoch (under st.mu).
func (st *state) epoch() uint64 {
	if n := len(st.epochs); n > 0 {
		return st.epochs[n-1].Epoch
	}
	return 0
}

// replicationEpoch is the server's epoch as the stream and backups report it.
func replicationEpoch(s *server) uint64 {
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	return s.st.epoch()
}

// replicationEpochs is the epoch history REPLICATE's reply carries.
func replicationEpochs(s *server) []epochStart {
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	return slices.Clone(s.st.epochs)
}

const (
	replBackoffMin = 100 * time.Millisecond
	replBackoffMax = 5 * time.Second
)

// replication is a server's replication state, as a replica or a primary.
type replication struct {
	s *server

	replica  atomic.Bool // following a primary: client writes refused
	verified atomic.Bool // a replica's log was checked against the primary's history

	// Follower side.
	primary        string
	dial           dialOptions
	id             string
	promoteMu      sync.Mutex
	followMu       sync.Mutex
	followStop     chan struct{} // closed to stop following
	followDone     chan struct{} // closed when the follower has returned
	stream         atomic.Pointer[replStream]
	connected      atomic.Bool
	primaryDurable atomic.Uint64 // the primary's durable offset, as last heard
	primaryTime    atomic.Int64  // the primary's clock when last heard, Unix ms
	lastRecTime    atomic.Int64  // time field of the last record applied
	maxEpochSeen   atomic.Uint64
	applied        atomic.Uint64 // records applied from the stream (metrics)
	// fail ends the process with an error (divergence); rebootstrap asks
	// cmdServe to copy the primary afresh. Set by cmdServe; tests replace.
	fail        func(error)
	rebootstrap func()

	// Primary side.
	mu           sync.Mutex
	peers        map[*replSession]*replPeer
	notify       chan struct{} // closed when replicated changes
	replicated   atomic.Uint64 // the Nth-highest replica ack
	degraded     atomic.Bool
	degradations atomic.Uint64
}

// replPeer is a connected receiver, as the primary sees it.
type replPeer struct {
	id, addr   string
	sess       *replSession
	caughtUpAt atomic.Int64 // Unix ms when its ack last reached the durable offset
}

func newReplication(s *server) *replication {
	r := &replication{s: s, peers: map[*replSession]*replPeer{}, notify: make(chan struct{}), primary: s.cfg.ReplicaOf}
	r.fail = func(err error) {
		s.logger.Error("replication: refusing to serve", "err", err)
		os.Exit(1)
	}
	r.rebootstrap = func() {
		r.fail(errors.New("the primary no longer holds this replica's next record; restart with --rebootstrap"))
	}
	if r.primary == "" {
		r.verified.Store(true)
		return r
	}
	r.replica.Store(true)
	r.id = replicaID(s.cfg.DataDir)
	r.dial.Token = s.cfg.ReplicationToken
	return r
}

// replicaID names a replica to its primary: stable across restarts of
// the same data directory.
func replicaID(dir string) string {
	path := filepath.Join(dir, "replica-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	id := newUUID()
	if err := writeFileDurably(dir, "replica-id", []byte(id+"\n")); err != nil {
		return id
	}
	return id
}

// replicaDial builds the replica's connection settings: TLS like the CLI's.
func replicaDial(cfg config) (dialOptions, error) {
	o := dialOptions{Token: cfg.ReplicationToken}
	if cfg.ReplTLS || cfg.ReplTLSCA != "" || cfg.ReplTLSClientCert != "" || cfg.ReplTLSInsecure {
		tc, err := clientTLSConfig(cfg.ReplicaOf, cfg.ReplTLSCA, cfg.ReplTLSClientCert, cfg.ReplTLSClientKey, cfg.ReplTLSInsecure)
		if err != nil {
			return o, fmt.Errorf("replication TLS: %w", err)
		}
		o.TLS = tc
	}
	return o, nil
}

// replConnect dials the primary and opens a REPLICATE stream from from
// (nil: a bootstrap copy). A plaintext connection to a primary that serves
// TLS fails at its first request with a bare EOF, so the error then says
// what to check.
func replConnect(addr string, o dialOptions, from *uint64, id string) (*replStream, error) {
	c, err := dialClientOpts(addr, o)
	if err == nil {
		var rs *replStream
		if rs, err = replicateOpen(c, from, true, id); err == nil {
			return rs, nil
		}
		c.close()
	}
	if o.TLS == nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		err = fmt.Errorf("%w (the primary closed the connection at the first request: if it serves TLS, set replication.tls_enabled)", err)
	}
	return nil, err
}

func (r *replication) isReplica() bool { return r != nil && r.replica.Load() }

// start begins following when the server is a replica.
func (r *replication) start() error {
	if !r.isReplica() {
		return nil
	}
	d, err := replicaDial(r.s.cfg)
	if err != nil {
		return err
	}
	r.dial = d
	r.startFollowing()
	return nil
}

func (r *replication) startFollowing() {
	r.followMu.Lock()
	defer r.followMu.Unlock()
	r.followStop, r.followDone = make(chan struct{}), make(chan struct{})
	go r.follow(r.followStop, r.followDone)
}

// stopFollowing ends the stream and waits for the follower to return.
func (r *replication) stopFollowing() {
	r.followMu.Lock()
	defer r.followMu.Unlock()
	if r.followStop == nil {
		return
	}
	close(r.followStop)
	if rs := r.stream.Load(); rs != nil {
		rs.close()
	}
	<-r.followDone
	r.followStop = nil
}

// errReplSnapshot: the primary would send a snapshot (it no longer holds
// the replica's next record).
var errReplSnapshot = errors.New("the primary no longer holds this replica's next record")

// replFatal is a refusal to serve.
type replFatal struct{ error }

// follow keeps a stream open, reconnecting with backoff, until stop.
func (r *replication) follow(stop, done chan struct{}) {
	defer close(done)
	backoff := replBackoffMin
	for {
		start := time.Now()
		err := r.followOnce(stop)
		r.connected.Store(false)
		select {
		case <-stop:
			return
		default:
		}
		var fatal replFatal
		switch {
		case errors.As(err, &fatal):
			r.fail(fatal.error)
			return
		case errors.Is(err, errReplSnapshot):
			r.s.logger.Warn("replication: the primary compacted past this replica's offset; copying it afresh", "primary", r.primary)
			r.rebootstrap()
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = replBackoffMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		r.s.logger.Warn("replication: not connected to the primary; retrying", "primary", r.primary, "err", err, "retry_in", wait)
		select {
		case <-stop:
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, replBackoffMax)
	}
}

// followOnce runs one stream until it fails or stop.
func (r *replication) followOnce(stop chan struct{}) error {
	s := r.s
	from := s.log.lastLSN()
	rs, err := replConnect(r.primary, r.dial, &from, r.id)
	if err != nil {
		var re *rcpError
		if errors.As(err, &re) && re.Details["last_offset"] != nil {
			return replFatal{fmt.Errorf("this node's log ends at offset %d, past the primary's last offset %v: its log has diverged from the primary's (a former primary with writes that were never replicated); restart with --rebootstrap to move this data directory aside and copy the primary afresh", from, re.Details["last_offset"])}
		}
		return err
	}
	r.stream.Store(rs)
	defer func() {
		r.stream.Store(nil)
		rs.close()
	}()
	select {
	case <-stop: // stopFollowing may have missed the stream
		return nil
	default:
	}
	h := rs.hello
	s.st.mu.RLock()
	local := slices.Clone(s.st.epochs)
	localEpoch := s.st.epoch()
	s.st.mu.RUnlock()
	if seen := max(localEpoch, r.maxEpochSeen.Load()); h.Epoch < seen {
		return fmt.Errorf("refusing the stream of %s: its epoch %d is lower than epoch %d, which this node has seen (a stale primary)", r.primary, h.Epoch, seen)
	}
	if err := replDivergence(local, from, h.Epochs); err != nil {
		return replFatal{err}
	}
	if h.SnapshotOffset != nil {
		return errReplSnapshot
	}
	r.maxEpochSeen.Store(max(r.maxEpochSeen.Load(), h.Epoch))
	r.primaryDurable.Store(h.LastOffset)
	r.primaryTime.Store(s.now())
	r.verified.Store(true)
	r.connected.Store(true)
	s.logger.Info("replication: following the primary", "primary", r.primary, "from_offset", from, "primary_last_offset", h.LastOffset, "epoch", h.Epoch)

	ackDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.ackLoop(rs, ackDone)
	}()
	defer func() {
		close(ackDone)
		wg.Wait()
	}()
	for {
		m, err := rs.next()
		if err != nil {
			return err
		}
		switch m.kind {
		case replMsgRecords:
			if err := r.applyRecords(m.data, m.offset, m.last); err != nil {
				return err
			}
		case replMsgHeartbeat:
			r.primaryDurable.Store(m.offset)
			r.primaryTime.Store(m.time)
		default:
			return fmt.Errorf("unexpected stream message %q", m.kind)
		}
	}
}

// applyRecords appends records first..last (checked by the stream) to the
// log with their offsets and applies them.
func (r *replication) applyRecords(data []byte, first, last uint64) error {
	s := r.s
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if !r.replica.Load() {
		return errors.New("promoted: no longer following")
	}
	var t int64
	err := replEachRecord(data, func(lsn uint64, typ uint8, payload, _ []byte) error {
		rec, err := decodeRecord(typ, payload)
		if err != nil {
			return replFatal{fmt.Errorf("record %d from the primary: %v", lsn, err)}
		}
		got, err := s.log.append(typ, payload)
		if err != nil {
			return err
		}
		if got != lsn {
			return replFatal{fmt.Errorf("the primary sent record %d where this log's next offset is %d", lsn, got)}
		}
		rec.lsn = lsn
		st.apply(rec)
		t = rec.Time
		r.applied.Add(1)
		return nil
	})
	if t != 0 {
		r.lastRecTime.Store(t)
	}
	r.primaryDurable.Store(max(r.primaryDurable.Load(), last))
	return err
}

// ackLoop tells the primary each new durable offset, and at least once per
// heartbeat.
func (r *replication) ackLoop(rs *replStream, done chan struct{}) {
	var last uint64
	tick := time.NewTicker(replHeartbeat / 2)
	defer tick.Stop()
	force := true
	for {
		ch := r.s.log.durableNotify()
		if d := r.s.log.durableLSN(); d != last || force {
			if err := rs.ack(d); err != nil {
				rs.close()
				return
			}
			last, force = d, false
		}
		select {
		case <-ch:
			if r.s.log.failure() != nil {
				return
			}
		case <-tick.C:
			force = true
		case <-done:
			return
		}
	}
}

// replDivergence compares a node's epoch history and last offset with the
// primary's history: the node's log must be a prefix of the primary's.
func replDivergence(local []epochStart, last uint64, primary []epochStart) error {
	in := func(h []epochStart, e epochStart) bool { return slices.Contains(h, e) }
	at := uint64(0)
	why := ""
	for _, e := range primary {
		if e.Offset <= last && !in(local, e) && (at == 0 || e.Offset < at) {
			at, why = e.Offset, fmt.Sprintf("the primary's epoch %d starts at offset %d", e.Epoch, e.Offset)
		}
	}
	for _, e := range local {
		if !in(primary, e) && (at == 0 || e.Offset < at) {
			at, why = e.Offset, fmt.Sprintf("this node's epoch %d starts at offset %d, which the primary's history does not have", e.Epoch, e.Offset)
		}
	}
	if at == 0 {
		return nil
	}
	return fmt.Errorf("this node's log diverges from the primary's at offset %d: it holds records %d..%d that are not the primary's (%s); restart with --rebootstrap to move this data directory aside and copy the primary afresh", at, at, last, why)
}

// ---- the primary's side ----

// track registers a REPLICATE session; receivers that name themselves
// replicas count for synchronous replication.
func (r *replication) track(sess *replSession, id string) {
	r.mu.Lock()
	p := &replPeer{id: id, addr: sess.c.remote, sess: sess}
	p.caughtUpAt.Store(r.s.now())
	r.peers[sess] = p
	r.mu.Unlock()
	r.recompute()
	if id != "" {
		r.s.logger.Info("replication: replica connected", "replica_id", id, "remote", sess.c.remote, "start_offset", sess.start)
	}
}

func (r *replication) untrack(sess *replSession) {
	r.mu.Lock()
	p := r.peers[sess]
	delete(r.peers, sess)
	r.mu.Unlock()
	r.recompute()
	if p != nil && p.id != "" {
		r.s.logger.Info("replication: replica disconnected", "replica_id", p.id, "remote", p.addr, "acked", sess.acked.Load())
	}
}

// ackedBy is told each ack a session receives.
func (r *replication) ackedBy(sess *replSession) {
	r.mu.Lock()
	p := r.peers[sess]
	r.mu.Unlock()
	if p != nil && sess.acked.Load() >= r.s.log.durableLSN() {
		p.caughtUpAt.Store(r.s.now())
	}
	r.recompute()
}

// recompute sets the replicated watermark, wakes the writers waiting on
// it, and leaves degraded mode once enough replicas have caught up.
func (r *replication) recompute() {
	n := r.s.cfg.SyncReplicas
	r.mu.Lock()
	var acks []uint64
	for _, p := range r.peers {
		if p.id != "" {
			acks = append(acks, p.sess.acked.Load())
		}
	}
	var wm uint64
	if n > 0 && len(acks) >= n {
		sort.Slice(acks, func(i, j int) bool { return acks[i] > acks[j] })
		wm = acks[n-1]
	}
	changed := wm != r.replicated.Load()
	r.replicated.Store(wm)
	if changed {
		close(r.notify)
		r.notify = make(chan struct{})
	}
	r.mu.Unlock()
	if n > 0 && r.degraded.Load() && wm >= r.s.log.durableLSN() && r.degraded.CompareAndSwap(true, false) {
		r.s.logger.Warn("replication: synchronous again: enough replicas have caught up", "sync_replicas", n, "replicated_offset", wm)
	}
}

// syncWait reports whether a reply must wait for replica acks.
func (r *replication) syncWait() bool {
	return r != nil && r.s.cfg.SyncReplicas > 0 && !r.replica.Load()
}

// waitReplicated waits until lsn is durable on sync_replicas replicas, or
// sync_timeout_ms passes (then replication degrades to asynchronous), or
// the server stops (false: the reply must not be sent).
func (r *replication) waitReplicated(lsn uint64) bool {
	var timeout <-chan time.Time
	for {
		if r.degraded.Load() || r.replica.Load() || r.replicated.Load() >= lsn {
			return true
		}
		r.mu.Lock()
		ch := r.notify
		r.mu.Unlock()
		if r.replicated.Load() >= lsn {
			return true
		}
		if timeout == nil && r.s.cfg.SyncTimeoutMS > 0 {
			t := time.NewTimer(time.Duration(r.s.cfg.SyncTimeoutMS) * time.Millisecond)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ch:
		case <-timeout:
			if r.degraded.CompareAndSwap(false, true) {
				r.degradations.Add(1)
				r.s.logger.Warn("replication: degraded to asynchronous: too few replicas acknowledged in time",
					"sync_replicas", r.s.cfg.SyncReplicas, "sync_timeout_ms", r.s.cfg.SyncTimeoutMS, "offset", lsn, "replicated_offset", r.replicated.Load())
			}
			return true
		case <-r.s.stop:
			return false
		}
	}
}

// ---- the client write gate, INFO, health ----

// writeGate refuses a client write on a replica, and any read before a
// replica has checked its log against the primary's.
func (s *server) writeGate(op opCode) *rcpError {
	r := s.repl
	if !r.isReplica() {
		return nil
	}
	switch op {
	case opCompact, opPromote, opInfo, opPing, opHello, opAuth, opBye, opWalStats:
		return nil
	}
	if opTable[op].flags&flagWrite != 0 {
		return r.readOnlyError()
	}
	if !r.verified.Load() {
		return newError(codeInternalError, "this replica has not yet checked its log against its primary %s; it serves reads once it has", r.primary).
			with("role", "replica").with("primary", r.primary)
	}
	return nil
}

func (r *replication) readOnlyError() *rcpError {
	return newError(codeBadRequest, "this server is a read-only replica of %s: send writes to the primary", r.primary).
		with("role", "replica").with("primary", r.primary)
}

// replInfo is INFO's replication member and the health endpoints' body.
type replInfo struct {
	Role          string        `json:"role"`
	Epoch         uint64        `json:"epoch"`
	Offset        uint64        `json:"offset"`
	Primary       string        `json:"primary,omitempty"`
	Connected     *bool         `json:"connected,omitempty"`
	DurableOffset *uint64       `json:"durable_offset,omitempty"`
	LagRecords    *uint64       `json:"lag_records,omitempty"`
	LagMS         *int64        `json:"lag_ms,omitempty"`
	SyncReplicas  *int          `json:"sync_replicas,omitempty"`
	Synchronous   *bool         `json:"synchronous,omitempty"`
	Replicas      []replicaInfo `json:"replicas,omitempty"`
	Ready         *bool         `json:"ready,omitempty"`
	Degradations  *uint64       `json:"sync_degradations,omitempty"`
}

type replicaInfo struct {
	ID            string `json:"id"`
	Address       string `json:"address"`
	DurableOffset uint64 `json:"durable_offset"`
	LagRecords    uint64 `json:"lag_records"`
	LagMS         int64  `json:"lag_ms"`
}

// info reports the role, epoch and replication state.
func (r *replication) info() replInfo {
	s := r.s
	durable := s.log.durableLSN()
	in := replInfo{Role: "primary", Epoch: replicationEpoch(s), Offset: durable}
	if r.isReplica() {
		in.Role, in.Primary = "replica", r.primary
		conn := r.connected.Load()
		lag, ms := r.lag()
		in.Connected, in.DurableOffset, in.LagRecords, in.LagMS = &conn, &durable, &lag, &ms
		return in
	}
	n := s.cfg.SyncReplicas
	syncNow := n > 0 && !r.degraded.Load()
	deg := r.degradations.Load()
	in.SyncReplicas, in.Synchronous, in.Degradations = &n, &syncNow, &deg
	in.Replicas = []replicaInfo{}
	now := s.now()
	r.mu.Lock()
	for _, p := range r.peers {
		if p.id == "" {
			continue
		}
		a := p.sess.acked.Load()
		ri := replicaInfo{ID: p.id, Address: p.addr, DurableOffset: a}
		if durable > a {
			ri.LagRecords = durable - a
			ri.LagMS = max(now-p.caughtUpAt.Load(), 0)
		}
		in.Replicas = append(in.Replicas, ri)
	}
	r.mu.Unlock()
	sort.Slice(in.Replicas, func(i, j int) bool { return in.Replicas[i].ID < in.Replicas[j].ID })
	return in
}

// lag is a replica's lag behind its primary: records, and ms (the
// primary's clock when last heard minus the time of the last record
// applied; 0 when caught up).
func (r *replication) lag() (uint64, int64) {
	d := r.s.log.durableLSN()
	p := r.primaryDurable.Load()
	if p <= d {
		if !r.connected.Load() {
			// Not hearing from the primary: lag grows with the silence.
			return 0, max(r.s.now()-r.primaryTime.Load(), 0)
		}
		return 0, 0
	}
	ms := r.primaryTime.Load() - r.lastRecTime.Load()
	if !r.connected.Load() {
		ms = r.s.now() - r.lastRecTime.Load()
	}
	return p - d, max(ms, 1)
}

// ready is /readyz: a primary that accepts writes, or a replica that is
// connected, checked and within replication.max_lag_ms.
func (r *replication) ready() (bool, string) {
	s := r.s
	if s.log.failure() != nil {
		return false, "the write-ahead log has failed"
	}
	if !r.isReplica() {
		return true, ""
	}
	if !r.verified.Load() || !r.connected.Load() {
		return false, "not connected to the primary"
	}
	if _, ms := r.lag(); ms > s.cfg.ReplicationMaxLag {
		return false, fmt.Sprintf("lag %d ms is over replication.max_lag_ms (%d)", ms, s.cfg.ReplicationMaxLag)
	}
	return true, ""
}

// healthHandler serves GET /healthz and GET /readyz on the metrics listener.
func (s *server) healthHandler(ready bool) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		in := s.repl.info()
		status := http.StatusOK
		body := struct {
			Status string `json:"status"`
			Reason string `json:"reason,omitempty"`
			Role   string `json:"role"`
			Epoch  uint64 `json:"epoch"`
			Offset uint64 `json:"offset"`
			LagRec uint64 `json:"lag_records"`
			LagMS  int64  `json:"lag_ms"`
		}{Status: "ok", Role: in.Role, Epoch: in.Epoch, Offset: in.Offset}
		if in.LagRecords != nil {
			body.LagRec, body.LagMS = *in.LagRecords, *in.LagMS
		}
		if ready {
			if ok, why := s.repl.ready(); !ok {
				status, body.Status, body.Reason = http.StatusServiceUnavailable, "not_ready", why
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}
}

// ---- promotion ----

func (s *server) handlePromote(c *conn, p *PromoteParams) (reply, *rcpError) {
	r := s.repl
	r.promoteMu.Lock()
	defer r.promoteMu.Unlock()
	result := func(epoch, off uint64) reply {
		return reply{result: fmt.Appendf(nil, `{"role":"primary","epoch":%d,"offset":%d}`, epoch, off), lsn: off, local: true}
	}
	if !r.isReplica() {
		s.st.mu.RLock()
		e, off := s.st.epoch(), uint64(0)
		if n := len(s.st.epochs); n > 0 {
			off = s.st.epochs[n-1].Offset
		}
		s.st.mu.RUnlock()
		return result(e, off), nil
	}
	r.stopFollowing()
	s.st.mu.Lock()
	rec := &record{typ: recEpoch, Time: s.now(), Epoch: max(s.st.epoch(), r.maxEpochSeen.Load()) + 1}
	r.replica.Store(false)
	if err := s.commit(rec); err != nil {
		r.replica.Store(true)
		s.st.mu.Unlock()
		r.startFollowing()
		return reply{}, err
	}
	s.st.mu.Unlock()
	if err := s.log.waitDurable(rec.lsn); err != nil {
		return reply{}, newError(codeWALIOError, "write-ahead log: %v", err)
	}
	r.verified.Store(true)
	r.connected.Store(false)
	select { // the timers of the instances are armed already: let them fire
	case s.st.timers.wake <- struct{}{}:
	default:
	}
	s.logger.Warn("promoted to primary", "epoch", rec.Epoch, "offset", rec.lsn, "former_primary", r.primary)
	return result(rec.Epoch, rec.lsn), nil
}

// ---- bootstrap: copying the primary's state before serving ----

// replicaDirEmpty reports whether dir holds no state: no snapshot and no
// record in the log.
func replicaDirEmpty(dir string) (bool, error) {
	_, lsns, err := listSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if len(lsns) > 0 {
		return false, nil
	}
	segs, err := walListSegments(filepath.Join(dir, "wal"))
	if err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "wal")); errors.Is(serr, os.ErrNotExist) {
			return true, nil
		}
		return false, err
	}
	for _, sf := range segs {
		f, err := os.Open(filepath.Join(dir, "wal", sf.name))
		if err != nil {
			return false, err
		}
		var h [walHeaderSize]byte
		_, err = io.ReadFull(f, h[:])
		f.Close()
		if err == nil && walFirstNonZero(h[:]) >= 0 {
			return false, nil
		}
	}
	return true, nil
}

// replicaBootstrap prepares a replica's data directory. With
// --rebootstrap it moves a directory that holds data aside, so the
// replica starts empty. An empty replica follows from offset 0 and gets
// the primary's whole log when the primary still has it; otherwise
// (replicaRecopy, when the follower found the primary would send a
// snapshot) the primary's state is copied here, retrying with backoff
// until ctx ends.
func replicaBootstrap(ctx context.Context, cfg config, logger *slog.Logger) error {
	empty, err := replicaDirEmpty(cfg.DataDir)
	if err != nil {
		return err
	}
	if cfg.replicaRebootstrap && !empty {
		return replicaMoveAside(cfg.DataDir, logger)
	}
	if !cfg.replicaRecopy {
		return nil
	}
	dial, err := replicaDial(cfg)
	if err != nil {
		return err
	}
	backoff := replBackoffMin
	for {
		err := replicaCopy(cfg, dial, logger)
		if err == nil {
			return nil
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		logger.Warn("replication: copying the primary failed; retrying", "primary", cfg.ReplicaOf, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while copying the primary %s: %w", cfg.ReplicaOf, err)
		case <-time.After(wait):
		}
		backoff = min(2*backoff, replBackoffMax)
	}
}

// replicaCopy receives the primary's snapshot into a staging directory,
// checks it whole, and installs it as the data directory (moving the old
// one aside when asked).
func replicaCopy(cfg config, dial dialOptions, logger *slog.Logger) error {
	dir := filepath.Clean(cfg.DataDir)
	if err := replicaCheckUnused(dir); err != nil {
		return err
	}
	staging := dir + ".bootstrap"
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	for _, d := range []string{staging, filepath.Join(staging, "snapshots"), filepath.Join(staging, "wal")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	defer os.RemoveAll(staging) // a no-op once installed
	start := time.Now()
	rs, err := replConnect(cfg.ReplicaOf, dial, nil, replicaID(staging))
	if err != nil {
		return err
	}
	defer rs.close()
	h := rs.hello
	if h.SnapshotOffset == nil {
		return errors.New("the primary sent no snapshot")
	}
	b := &backupWriter{dir: staging}
	if err := b.receiveSnapshot(rs, *h.SnapshotOffset, func() {}); err != nil {
		return fmt.Errorf("receiving the snapshot: %w", err)
	}
	rs.close()
	// Decode it whole: what is installed must load.
	st, _, err := loadNewestSnapshot(filepath.Join(staging, "snapshots"), cfg.IdempotencyTTL.Milliseconds())
	if err != nil {
		return fmt.Errorf("the copied snapshot does not load: %w", err)
	}
	instances := len(st.instances)
	st = nil
	if err := syncDir(staging); err != nil {
		return err
	}
	// Install: the old directory (a stale prefix of the primary's log,
	// checked when the follower connected) goes away, the staging
	// directory takes its name.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := renameFile(staging, dir); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	el := time.Since(start)
	logger.Info("replication: copied the primary", "primary", cfg.ReplicaOf, "snapshot_offset", *h.SnapshotOffset,
		"instances", instances, "bytes", b.bytes, "elapsed", el, "mb_per_s", fmt.Sprintf("%.1f", float64(b.bytes)/1e6/max(el.Seconds(), 1e-9)))
	return nil
}

// replicaCheckUnused fails when another server holds dir's log.
func replicaCheckUnused(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "wal")); err != nil {
		return nil
	}
	lock, err := walLock(filepath.Join(dir, "wal"))
	if err != nil {
		return err
	}
	return lock.Close()
}

// replicaMoveAside renames dir to dir.discarded-TIME (--rebootstrap).
func replicaMoveAside(dir string, logger *slog.Logger) error {
	dir = filepath.Clean(dir)
	if err := replicaCheckUnused(dir); err != nil {
		return err
	}
	moved := fmt.Sprintf("%s.discarded-%s", dir, time.Now().UTC().Format("20060102T150405.000"))
	if err := os.Rename(dir, moved); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	logger.Warn("replication: --rebootstrap: moved the data directory aside; copying the primary afresh", "from", dir, "to", moved)
	return nil
}

// ---- metrics ----

// replMetrics are the replication gauges a scrape reports.
type replMetrics struct {
	Replica      bool
	Connected    uint64
	Lags         []replicaInfo
	Applied      uint64
	Degradations uint64
	Synchronous  bool
	LagMS        int64
	LagRecords   uint64
	Epoch        uint64
}

func (r *replication) metrics() replMetrics {
	in := r.info()
	m := replMetrics{Replica: in.Role == "replica", Applied: r.applied.Load(), Degradations: r.degradations.Load(), Epoch: in.Epoch}
	if m.Replica {
		if r.connected.Load() {
			m.Connected = 1
		}
		m.LagRecords, m.LagMS = *in.LagRecords, *in.LagMS
		return m
	}
	m.Connected, m.Lags, m.Synchronous = uint64(len(in.Replicas)), in.Replicas, *in.Synchronous
	return m
}

func (m replMetrics) families() []metricsFamily {
	lagMS := metricsFamily{name: "rstmdb_replication_replica_lag_ms", typ: "gauge",
		help: "Per replica (on a primary): how long its acked durable offset has been behind; 0 when caught up."}
	lagRec := metricsFamily{name: "rstmdb_replication_replica_lag_records", typ: "gauge",
		help: "Per replica (on a primary): records durable here but not yet acked by it."}
	for _, l := range m.Lags {
		lagMS.samples = append(lagMS.samples, metricsSample{labels: []string{"replica", l.ID}, value: metricsInt(l.LagMS)})
		lagRec.samples = append(lagRec.samples, metricsSample{labels: []string{"replica", l.ID}, value: metricsUint(l.LagRecords)})
	}
	b := func(v bool) string { return metricsUint(map[bool]uint64{true: 1}[v]) }
	return []metricsFamily{
		metricsScalar("rstmdb_replication_is_replica", "gauge", "1 on a replica, 0 on a primary.", b(m.Replica)),
		metricsScalar("rstmdb_replication_epoch", "gauge", "The epoch: promotions in this data directory's history.", metricsUint(m.Epoch)),
		metricsScalar("rstmdb_replication_connected_replicas", "gauge", "On a primary: replicas streaming from it; on a replica: 1 while connected to its primary.", metricsUint(m.Connected)),
		lagMS, lagRec,
		metricsScalar("rstmdb_replication_lag_ms", "gauge", "On a replica: its lag behind the primary in ms.", metricsInt(m.LagMS)),
		metricsScalar("rstmdb_replication_lag_records", "gauge", "On a replica: records the primary holds durably that this replica does not yet.", metricsUint(m.LagRecords)),
		metricsScalar("rstmdb_replication_applied_records_total", "counter", "On a replica: records received from the primary and applied (its rate is the apply rate).", metricsUint(m.Applied)),
		metricsScalar("rstmdb_replication_synchronous", "gauge", "On a primary with sync_replicas > 0: 1 while replication is synchronous, 0 while degraded.", b(m.Synchronous)),
		metricsScalar("rstmdb_replication_sync_degradations_total", "counter", "Times synchronous replication degraded to asynchronous after sync_timeout_ms.", metricsUint(m.Degradations)),
	}
}
