package main

//go:generate go run ./gen

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Handlers: one method per op, named in ops.spec. Decoding and validation of
// params is generated (ops_gen.go); a handler checks the params against the
// state and answers. Write handlers build a record, append it to the WAL
// and apply it, all under the state lock; the connection releases the
// reply only once reply.lsn is durable.

// reply is a handler's success: the result object, the LSN the answer
// depends on, and whether it carries meta.wal_offset.
type reply struct {
	result []byte
	rec    *record // instead of result: a single write whose result the reply renders in place
	lsn    uint64
	meta   bool
	local  bool // waits for the local sync only, never for replica acks (PROMOTE)
}

const (
	protocolVersion = 1
	serverName      = "stmdb"
)

// serverVersion is set at build time with -ldflags "-X main.serverVersion=...".
var serverVersion = "0.1.0"

// serverFeatures are what HELLO can agree to, in this order.
var serverFeatures = []string{"idempotency", "batch", "watch", "wal_read"}

func (s *server) handleHello(c *conn, p *HelloParams) (reply, *rcpError) {
	if p.ProtocolVersion != protocolVersion {
		return reply{}, newError(codeUnsupportedProtocol, "unsupported protocol version %d (this server speaks %d)", p.ProtocolVersion, protocolVersion).
			with("supported", []int{protocolVersion})
	}
	modes := p.WireModes
	if len(modes) == 0 && p.WireMode != nil {
		modes = []string{*p.WireMode}
	}
	next := c.fr.mode()
	for _, m := range modes {
		if m == "binary_json" {
			next = modeBinary
			break
		}
		if m == "jsonl" {
			next = modeJSONL
			break
		}
	}
	c.switchTo = &next
	features := []string{}
	for _, f := range serverFeatures {
		for _, want := range p.Features {
			if f == want {
				features = append(features, f)
				break
			}
		}
	}
	return reply{result: encMarshal(struct {
		Features        []string `json:"features"`
		ProtocolVersion int      `json:"protocol_version"`
		ServerName      string   `json:"server_name"`
		ServerVersion   string   `json:"server_version"`
		WireMode        string   `json:"wire_mode"`
	}{features, protocolVersion, serverName, serverVersion, next.String()}), lsn: s.readLSN()}, nil
}

// handleAuth checks a bearer token: its SHA-256 (lowercase hex) against
// every configured hash, in constant time. Failures are slowed down per
// connection (the reader sleeps, so only this connection waits).
func (s *server) handleAuth(c *conn, p *AuthParams) (reply, *rcpError) {
	fail := func(format string, args ...any) (reply, *rcpError) {
		c.authFailures++
		s.metrics.authFailure()
		time.Sleep(authDelay(c.authFailures))
		return reply{}, newError(codeAuthFailed, "authentication failed: "+format, args...)
	}
	if p.Method != "bearer" {
		return fail("unsupported auth method '%s' (only 'bearer')", p.Method)
	}
	if p.Token == "" {
		return fail("empty token")
	}
	if len(s.cfg.AuthTokenHashes) > 0 || s.cfg.AuthRequired {
		sum := sha256.Sum256([]byte(p.Token))
		got := []byte(hex.EncodeToString(sum[:]))
		ok := 0
		for _, h := range s.cfg.AuthTokenHashes {
			ok |= subtle.ConstantTimeCompare(got, []byte(strings.ToLower(h)))
		}
		if ok != 1 {
			return fail("invalid token")
		}
	}
	c.authed = true
	c.authFailures = 0
	return reply{result: []byte(`{"authenticated":true}`)}, nil
}

// authDelay grows with consecutive failures on one connection: 50 ms,
// 100 ms, 200 ms... up to 2 s.
func authDelay(failures int) time.Duration {
	d := 50 * time.Millisecond << min(failures-1, 6)
	return min(d, 2*time.Second)
}

func (s *server) handlePing(c *conn, p *PingParams) (reply, *rcpError) {
	return reply{result: []byte(`{"pong":true}`)}, nil
}

func (s *server) handleBye(c *conn, p *ByeParams) (reply, *rcpError) {
	c.closing = true
	return reply{result: []byte(`{"goodbye":true}`), lsn: s.readLSN()}, nil
}

func (s *server) handleInfo(c *conn, p *InfoParams) (reply, *rcpError) {
	ri := s.repl.info()
	return reply{result: encMarshal(struct {
		Features        []string `json:"features"`
		MaxBatchOps     int      `json:"max_batch_ops"`
		MaxFrameBytes   int      `json:"max_frame_bytes"`
		MaxSubsPerConn  int      `json:"max_subscriptions_per_connection"`
		ProtocolVersion int      `json:"protocol_version"`
		ServerName      string   `json:"server_name"`
		ServerVersion   string   `json:"server_version"`
		Timers          any      `json:"timers"`
		Disk            diskInfo `json:"disk"`
		Role            string   `json:"role"`
		Epoch           uint64   `json:"epoch"`
		Replication     replInfo `json:"replication"`
	}{serverFeatures, s.cfg.MaxBatchOps, s.frameLimit(), maxSubsPerConn, protocolVersion, serverName, serverVersion, s.timerInfo(),
		s.disk.info(s.log.stats().AllocatedBytes), ri.Role, ri.Epoch, ri}), lsn: s.readLSN()}, nil
}

// frameLimit is the largest request payload this server accepts.
func (s *server) frameLimit() int {
	if n := s.cfg.MaxFrameBytes; n > 0 && n < maxPayload {
		return n
	}
	return maxPayload
}

// readLSN is the newest record a read may have observed: a read's answer
// waits until that record is durable, so no reader sees a state a crash
// could take back.
func (s *server) readLSN() uint64 { return s.log.lastLSN() }

// commit appends r to the WAL and applies it. Caller holds st.mu.
func (s *server) commit(r *record) *rcpError {
	if s.repl.isReplica() { // the fence under the lock: promotion flips it under st.mu
		return s.repl.readOnlyError()
	}
	r.Type = recTypeNames[r.typ]
	s.recBuf = appendRecord(s.recBuf[:0], r)
	if err := recordTooLarge(len(s.recBuf)); err != nil {
		return err
	}
	add := s.log.append
	if r.typ == recDeleteInstance {
		add = s.log.appendOverdraft // a delete may pass the disk quota (disk.go)
	}
	lsn, err := add(r.typ, s.recBuf)
	if err != nil {
		return newError(codeWALIOError, "write-ahead log append failed: %v", err)
	}
	r.lsn = lsn
	s.st.apply(r)
	return nil
}

// recordTooLarge refuses, before it reaches the log, a write whose record
// would not fit: the same request would fail the same way on every retry.
func recordTooLarge(n int) *rcpError {
	if n <= walMaxPayload {
		return nil
	}
	return newError(codeBadRequest, "the write's log record would be %d bytes, over the limit of %d bytes (payload and resulting ctx together)", n, walMaxPayload).
		with("size", n).with("limit", walMaxPayload)
}

// ctxTooLarge refuses a ctx that would grow past storage.max_ctx_bytes. A
// ctx already over the limit (the limit was lowered) may still shrink or
// stay, so an instance never becomes unwritable.
func (s *server) ctxTooLarge(field, id string, ctx []byte, before int) *rcpError {
	limit := s.cfg.MaxCtxBytes
	if limit <= 0 || len(ctx) <= limit || len(ctx) <= before {
		return nil
	}
	return badParam(field, "%s would make instance '%s' ctx %d bytes, over storage.max_ctx_bytes (%d)", field, id, len(ctx), limit).
		with("size", len(ctx)).with("limit", limit).with("instance_id", id)
}

// paramsHash fingerprints the params of an idempotent request, so the same
// key with different params is told apart from a retry.
func paramsHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func optStr(p *string) string {
	if p == nil {
		return "\x00absent"
	}
	return *p
}

func optU64(p *uint64) string {
	if p == nil {
		return "absent"
	}
	return strconv.FormatUint(*p, 10)
}

// idemCheck looks up an idempotency key for a write op: an earlier result
// to return (same params), a CONFLICT (different params), or nothing, in
// which case the hash goes into the new record. hashParams runs only when
// a key is given.
func (s *server) idemCheck(typ uint8, key *string, now int64, hashParams func() string) (string, *idemEntry, *rcpError) {
	if key == nil {
		return "", nil, nil
	}
	hash := hashParams()
	if e := s.st.idemLookup(typ, *key, now); e != nil {
		if e.hash != hash {
			return "", nil, idemConflict(*key)
		}
		return hash, e, nil
	}
	return hash, nil, nil
}

func idemConflict(key string) *rcpError {
	return newError(codeConflict, "idempotency key '%s' was already used with different parameters", key).
		with("idempotency_key", key)
}

// ---- machines ----

func (s *server) handlePutMachine(c *conn, p *PutMachineParams) (reply, *rcpError) {
	if p.Definition == nil {
		return reply{}, badParam("definition", "missing required field 'definition'")
	}
	mv, err := compileMachine(p.Machine, p.Version, p.Definition)
	if err != nil {
		return reply{}, err
	}
	if p.Checksum != nil && *p.Checksum != mv.checksum {
		return reply{}, badParam("checksum", "checksum '%s' does not match the definition's checksum '%s'", *p.Checksum, mv.checksum).
			with("expected", *p.Checksum).with("actual", mv.checksum)
	}
	result := func(created bool, lsn uint64) reply {
		return reply{result: encMarshal(struct {
			Created        bool   `json:"created"`
			Machine        string `json:"machine"`
			StoredChecksum string `json:"stored_checksum"`
			Version        uint32 `json:"version"`
		}{created, p.Machine, mv.checksum, p.Version}), lsn: lsn, meta: true}
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	vs := s.st.machines[p.Machine]
	if old := vs[p.Version]; old != nil {
		if old.checksum == mv.checksum {
			return result(false, old.lsn), nil
		}
		return reply{}, newError(codeMachineVersionExists, "machine '%s' version %d already exists with a different definition", p.Machine, p.Version).
			with("machine", p.Machine).with("version", p.Version).with("stored_checksum", old.checksum)
	}
	if lim := s.cfg.MaxMachineVersions; lim > 0 && len(vs) >= lim {
		return reply{}, newError(codeMachineVersionLimit, "machine '%s' already has %d versions (limit %d)", p.Machine, len(vs), lim).
			with("machine", p.Machine).with("limit", lim)
	}
	r := &record{typ: recPutMachine, Time: s.now(), Machine: p.Machine, Version: p.Version, Def: mv.def, Checksum: mv.checksum, mv: mv}
	if err := s.commit(r); err != nil {
		return reply{}, err
	}
	return result(true, r.lsn), nil
}

func (s *server) machineNotFound(name string, version uint32) *rcpError {
	return newError(codeMachineNotFound, "machine '%s' version %d not found", name, version).
		with("machine", name).with("version", version)
}

func (s *server) handleGetMachine(c *conn, p *GetMachineParams) (reply, *rcpError) {
	s.st.mu.RLock()
	mv := s.st.machines[p.Machine][p.Version] // compiled machines are immutable
	lsn := s.readLSN()
	s.st.mu.RUnlock()
	if mv == nil {
		return reply{}, s.machineNotFound(p.Machine, p.Version)
	}
	return reply{result: encMarshal(struct {
		Checksum   string          `json:"checksum"`
		Definition json.RawMessage `json:"definition"`
	}{mv.checksum, mv.def}), lsn: lsn}, nil
}

func (s *server) handleListMachines(c *conn, p *ListMachinesParams) (reply, *rcpError) {
	type item struct {
		Machine  string   `json:"machine"`
		Versions []uint32 `json:"versions"`
	}
	s.st.mu.RLock()
	items := make([]item, 0, len(s.st.machines))
	for name, vs := range s.st.machines {
		it := item{Machine: name, Versions: make([]uint32, 0, len(vs))}
		for v := range vs {
			it.Versions = append(it.Versions, v)
		}
		sort.Slice(it.Versions, func(i, j int) bool { return it.Versions[i] < it.Versions[j] })
		items = append(items, it)
	}
	lsn := s.readLSN()
	s.st.mu.RUnlock()
	sort.Slice(items, func(i, j int) bool { return items[i].Machine < items[j].Machine })
	return reply{result: encMarshal(struct {
		Items []item `json:"items"`
	}{items}), lsn: lsn}, nil
}

// ---- instances ----

func instanceNotFound(id string) *rcpError {
	return newError(codeInstanceNotFound, "instance '%s' not found", id).with("instance_id", id)
}

// prepared is a write op checked against the state: either a record to
// commit, or the stored result of an idempotent retry.
type prepared struct {
	rec    *record
	cached *idemEntry
}

func (s *server) prepCreate(p *CreateInstanceParams, now int64) (prepared, *rcpError) {
	st := s.st
	hash, cached, err := s.idemCheck(recCreateInstance, p.IdempotencyKey, now, func() string {
		return paramsHash(optStr(p.InstanceID), p.Machine, strconv.FormatUint(uint64(p.Version), 10), string(ctxCanonical(p.InitialCtx)))
	})
	if err != nil || cached != nil {
		return prepared{cached: cached}, err
	}
	id := ""
	if p.InstanceID != nil {
		id = *p.InstanceID
		if st.instances[id] != nil {
			return prepared{}, newError(codeInstanceExists, "instance '%s' already exists", id).with("instance_id", id)
		}
		if st.tombstones != nil && st.tombstones.has(id) {
			return prepared{}, newError(codeInstanceExists, "instance '%s' was deleted and storage.allow_instance_recreate is false", id).with("instance_id", id)
		}
	} else {
		for id == "" || st.instances[id] != nil {
			id = newUUID()
		}
	}
	mv := st.machines[p.Machine][p.Version]
	if mv == nil {
		return prepared{}, s.machineNotFound(p.Machine, p.Version)
	}
	r := &record{typ: recCreateInstance, Time: now, Machine: p.Machine, Version: p.Version, InstanceID: id,
		InitialState: mv.initial, InitialCtx: ctxMerge(nil, compactJSON(p.InitialCtx))}
	if err := s.ctxTooLarge("initial_ctx", id, r.InitialCtx, 0); err != nil {
		return prepared{}, err
	}
	r.IdemKey, r.IdemHash = optStrEmpty(p.IdempotencyKey), hash
	return prepared{rec: r}, nil
}

// prepApply checks an APPLY_EVENT and builds its record into r, or a new
// record when r is nil.
func (s *server) prepApply(p *ApplyEventParams, now int64, r *record) (prepared, *rcpError) {
	st := s.st
	hash, cached, err := s.idemCheck(recApplyEvent, p.IdempotencyKey, now, func() string {
		return paramsHash(p.InstanceID, p.Event, string(ctxCanonical(p.Payload)), optStr(p.ExpectedState), optU64(p.ExpectedWalOffset), optStr(p.EventID))
	})
	if err != nil || cached != nil {
		return prepared{cached: cached}, err
	}
	inst := st.instances[p.InstanceID]
	if inst == nil {
		return prepared{}, instanceNotFound(p.InstanceID)
	}
	if p.ExpectedState != nil && *p.ExpectedState != inst.state {
		return prepared{}, newError(codeConflict, "instance '%s' is in state '%s', expected '%s'", p.InstanceID, inst.state, *p.ExpectedState).
			with("instance_id", p.InstanceID).with("expected", *p.ExpectedState).with("actual", inst.state)
	}
	if p.ExpectedWalOffset != nil && *p.ExpectedWalOffset != inst.lastLSN {
		return prepared{}, newError(codeConflict, "instance '%s' is at wal offset %d, expected %d", p.InstanceID, inst.lastLSN, *p.ExpectedWalOffset).
			with("instance_id", p.InstanceID).with("expected", *p.ExpectedWalOffset).with("actual", inst.lastLSN)
	}
	cands := inst.mv.trans[transKey{inst.state, p.Event}]
	if len(cands) == 0 {
		return prepared{}, newError(codeInvalidTransition, "event '%s' is not valid in state '%s' of machine '%s' version %d", p.Event, inst.state, inst.mv.name, inst.mv.version).
			with("instance_id", p.InstanceID).with("current_state", inst.state).with("event", p.Event)
	}
	var to *transition
	for i := range cands {
		if t := &cands[i]; t.guard == nil || t.guard.evalValid(inst.ctx) {
			to = t
			break
		}
	}
	if to == nil {
		return prepared{}, newError(codeGuardFailed, "no transition for event '%s' from state '%s' passed its guard", p.Event, inst.state).
			with("instance_id", p.InstanceID).with("current_state", inst.state).with("event", p.Event)
	}
	// instance_id, event and payload are borrowed from the request (see
	// ops.spec): the record takes the instance's and the machine's own
	// strings, and the payload only until it is encoded into the log.
	payload := compactJSON(p.Payload)
	if r == nil {
		r = new(record)
	}
	*r = record{typ: recApplyEvent, Time: now, InstanceID: inst.id, Machine: inst.mv.name, Version: inst.mv.version, Event: to.event, FromState: inst.state, ToState: to.to,
		Payload: payload, Ctx: ctxMerge(inst.ctx, payload), EventID: optStrEmpty(p.EventID), Prev: inst.lastLSN}
	if err := s.ctxTooLarge("payload", inst.id, r.Ctx, len(inst.ctx)); err != nil {
		return prepared{}, err
	}
	r.IdemKey, r.IdemHash = optStrEmpty(p.IdempotencyKey), hash
	return prepared{rec: r}, nil
}

func (s *server) prepDelete(p *DeleteInstanceParams, now int64) (prepared, *rcpError) {
	st := s.st
	hash, cached, err := s.idemCheck(recDeleteInstance, p.IdempotencyKey, now, func() string { return paramsHash(p.InstanceID) })
	if err != nil || cached != nil {
		return prepared{cached: cached}, err
	}
	if st.instances[p.InstanceID] == nil {
		return prepared{}, instanceNotFound(p.InstanceID)
	}
	r := &record{typ: recDeleteInstance, Time: now, InstanceID: p.InstanceID}
	r.IdemKey, r.IdemHash = optStrEmpty(p.IdempotencyKey), hash
	return prepared{rec: r}, nil
}

func optStrEmpty(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// runPrepared commits a prepared write on its own and returns its reply
// (under the state lock).
func (s *server) runPrepared(pr prepared, err *rcpError) (reply, *rcpError) {
	r, err := preparedReply(s.commitPrepared(pr, err))
	if r.rec != nil {
		r.result, r.rec = liveResult(r.rec), nil // read by the batch, not a frame
	}
	return r, err
}

// commitPrepared commits a prepared write (under the state lock).
func (s *server) commitPrepared(pr prepared, err *rcpError) (prepared, *rcpError) {
	if err == nil && pr.cached == nil {
		err = s.commit(pr.rec)
	}
	return pr, err
}

// preparedReply renders the reply of a committed write. It needs no lock:
// a record is never changed once applied, nor is a cached result.
func preparedReply(pr prepared, err *rcpError) (reply, *rcpError) {
	if err != nil {
		return reply{}, err
	}
	if pr.cached != nil {
		return reply{result: pr.cached.result, lsn: pr.cached.lsn, meta: true}, nil
	}
	return reply{rec: pr.rec, lsn: pr.rec.lsn, meta: true}, nil
}

// The single-write handlers hold the state lock only to check and commit;
// the reply is rendered after it is released.

func (s *server) handleCreateInstance(c *conn, p *CreateInstanceParams) (reply, *rcpError) {
	s.st.mu.Lock()
	pr, err := s.commitPrepared(s.prepCreate(p, s.now()))
	s.st.mu.Unlock()
	return preparedReply(pr, err)
}

func (s *server) handleApplyEvent(c *conn, p *ApplyEventParams) (reply, *rcpError) {
	// The connection's record is free again once the reply is rendered,
	// before its next request is read.
	var r *record
	if c != nil {
		r = &c.rec
	}
	s.st.mu.Lock()
	pr, err := s.commitPrepared(s.prepApply(p, s.now(), r))
	s.st.mu.Unlock()
	return preparedReply(pr, err)
}

func (s *server) handleDeleteInstance(c *conn, p *DeleteInstanceParams) (reply, *rcpError) {
	s.st.mu.Lock()
	pr, err := s.commitPrepared(s.prepDelete(p, s.now()))
	s.st.mu.Unlock()
	return preparedReply(pr, err)
}

func (s *server) handleGetInstance(c *conn, p *GetInstanceParams) (reply, *rcpError) {
	// Instances are never modified in place, so the result is encoded
	// after the lock is released.
	s.st.mu.RLock()
	in := s.st.instances[p.InstanceID]
	timers := s.st.instanceTimers(p.InstanceID)
	lsn := s.readLSN()
	s.st.mu.RUnlock()
	if in == nil {
		return reply{}, instanceNotFound(p.InstanceID)
	}
	return reply{result: appendInstanceResult(nil, in, timers), lsn: lsn}, nil
}

func (s *server) handleListInstances(c *conn, p *ListInstancesParams) (reply, *rcpError) {
	s.st.mu.RLock()
	ids := s.st.sortedIDs()
	if p.Machine != nil || p.State != nil {
		var matched []string
		for _, id := range ids {
			in := s.st.instances[id]
			if (p.Machine == nil || in.mv.name == *p.Machine) && (p.State == nil || in.state == *p.State) {
				matched = append(matched, id)
			}
		}
		ids = matched
	}
	total := uint64(len(ids))
	start := min(p.Offset, total)
	end := min(start+uint64(p.Limit), total)
	// Instances are never modified in place: render the page after the
	// lock is released.
	page := make([]*instance, 0, end-start)
	for _, id := range ids[start:end] {
		page = append(page, s.st.instances[id])
	}
	lsn := s.readLSN()
	s.st.mu.RUnlock()
	return reply{result: appendListResult(nil, page, end < total, total), lsn: lsn}, nil
}

// ---- batch ----

type batchSlot struct {
	Error  *errorBody      `json:"error"`
	Result json.RawMessage `json:"result"`
	Status string          `json:"status"`
}

// batchOp decodes one element of a batch: {"op": NAME, "params": {...}}.
func batchOp(raw json.RawMessage, i int) (opCode, json.RawMessage, *rcpError) {
	var el struct {
		Op     *string         `json:"op"`
		Params json.RawMessage `json:"params"`
	}
	field := fmt.Sprintf("ops[%d]", i)
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' || json.Unmarshal(raw, &el) != nil || el.Op == nil {
		return 0, nil, badParam(field, "batch element %d must be an object with a string 'op'", i).with("index", i)
	}
	op, ok := lookupOp(*el.Op)
	if !ok || opTable[op].flags&flagBatchable == 0 {
		return 0, nil, badParam(field+".op", "op '%s' cannot be used in a batch (only CREATE_INSTANCE, APPLY_EVENT, DELETE_INSTANCE)", *el.Op).with("index", i)
	}
	return op, el.Params, nil
}

// prepBatchOp decodes and checks one batch element against the current state.
func (s *server) prepBatchOp(c *conn, op opCode, params json.RawMessage, now int64) (prepared, *rcpError) {
	switch op {
	case opCreateInstance:
		var p CreateInstanceParams
		if err := decodeCreateInstanceParams(params, &p); err != nil {
			return prepared{}, err
		}
		return s.prepCreate(&p, now)
	case opApplyEvent:
		var p ApplyEventParams
		if err := decodeApplyEventParams(params, &p); err != nil {
			return prepared{}, err
		}
		return s.prepApply(&p, now, nil)
	case opDeleteInstance:
		var p DeleteInstanceParams
		if err := decodeDeleteInstanceParams(params, &p); err != nil {
			return prepared{}, err
		}
		return s.prepDelete(&p, now)
	}
	return prepared{}, newError(codeBadRequest, "op %s cannot be used in a batch", op)
}

func (s *server) handleBatch(c *conn, p *BatchParams) (reply, *rcpError) {
	if len(p.Ops) > s.cfg.MaxBatchOps {
		return reply{}, badParam("ops", "batch has %d ops, more than the limit of %d", len(p.Ops), s.cfg.MaxBatchOps).with("limit", s.cfg.MaxBatchOps)
	}
	slots := make([]batchSlot, len(p.Ops))
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	now := s.now()
	lsn := s.readLSN()
	if p.Mode == "best_effort" {
		// Each member is its own record; the group makes them one sync.
		s.log.hold()
		defer s.log.release()
		for i, raw := range p.Ops {
			op, params, err := batchOp(raw, i)
			var r reply
			if err == nil {
				r, err = s.runPrepared(s.prepBatchOp(c, op, params, now))
			}
			if err != nil {
				slots[i] = batchSlot{Error: errBody(err), Status: "error"}
				continue
			}
			slots[i] = batchSlot{Result: r.result, Status: "ok"}
			lsn = max(lsn, r.lsn)
		}
		return reply{result: encMarshal(struct {
			Results []batchSlot `json:"results"`
		}{slots}), lsn: lsn, meta: true}, nil
	}

	// Atomic: apply each member as it is checked (later members see earlier
	// ones), remembering what was overwritten; on any failure roll back.
	// The members are then logged as one record that replay applies whole.
	batchLSN := s.log.nextLSN()
	var members []*record
	s.st.beginUndo()
	for i, raw := range p.Ops {
		op, params, err := batchOp(raw, i)
		var pr prepared
		if err == nil {
			pr, err = s.prepBatchOp(c, op, params, now)
		}
		if err != nil {
			s.st.rollback()
			err.with("index", i)
			err.Message = fmt.Sprintf("atomic batch failed at op %d, nothing was applied: %s", i, err.Message)
			return reply{}, err
		}
		if pr.cached != nil {
			slots[i] = batchSlot{Result: pr.cached.result, Status: "ok"}
			continue
		}
		pr.rec.lsn = batchLSN
		pr.rec.Type = recTypeNames[pr.rec.typ]
		s.st.apply(pr.rec)
		members = append(members, pr.rec)
		slots[i] = batchSlot{Result: liveResult(pr.rec), Status: "ok"}
	}
	if len(members) > 0 {
		br := &record{Type: recTypeNames[recBatch], typ: recBatch, Time: now, Ops: members}
		s.recBuf = appendRecord(s.recBuf[:0], br)
		if err := recordTooLarge(len(s.recBuf)); err != nil {
			s.st.rollback()
			err.Message = "atomic batch failed, nothing was applied: " + err.Message
			return reply{}, err
		}
		got, err := s.log.append(recBatch, s.recBuf)
		if err != nil {
			s.st.rollback()
			return reply{}, newError(codeWALIOError, "write-ahead log append failed: %v", err)
		}
		if got != batchLSN {
			panic(fmt.Sprintf("atomic batch: reserved lsn %d but the log assigned %d", batchLSN, got))
		}
		lsn = got
	}
	s.st.undo = nil
	s.st.flushTimers()
	return reply{result: encMarshal(struct {
		Results []batchSlot `json:"results"`
	}{slots}), lsn: lsn, meta: true}, nil
}

// ---- storage ----

// A WAL_READ page is cut short at walReadMaxRecords records, or before its
// rendered entries pass walReadBudget (well under the frame limit),
// whichever comes first; any larger limit is accepted, since clients such
// as the official console ask for 10,000 at once.
const (
	walReadMaxRecords = 10000
	walReadBudget     = maxPayload - 64<<10
)

func (s *server) handleWalRead(c *conn, p *WalReadParams) (reply, *rcpError) {
	type rec struct {
		Entry    json.RawMessage `json:"entry"`
		Offset   uint64          `json:"offset"`
		Sequence uint64          `json:"sequence"`
	}
	from := max(p.FromOffset, 1)
	// In uint32 first: int(p.Limit) is negative on 32-bit platforms past 2^31.
	limit := int(min(p.Limit, walReadMaxRecords))
	recs := make([]rec, 0, min(limit, 128))
	size := 0
	next := p.FromOffset
	var decodeErr error
	err := s.log.read(from, func(r walRecord) bool {
		if len(recs) >= limit || size+len(r.Payload)+64 > walReadBudget {
			return false
		}
		dr, err := decodeRecord(r.Type, r.Payload)
		if err != nil {
			decodeErr = fmt.Errorf("record %d: %v", r.LSN, err)
			return false
		}
		entry := encMarshal(dr)
		// The rendered entry can outgrow the record (escaped strings);
		// the first record always goes, so a page is never empty.
		n := len(entry) + 64
		if len(recs) > 0 && size+n > walReadBudget {
			return false
		}
		size += n
		recs = append(recs, rec{entry, r.LSN, r.LSN})
		next = r.LSN + 1
		return true
	})
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return reply{}, newError(codeWALIOError, "reading the write-ahead log failed: %v", err)
	}
	return reply{result: encMarshal(struct {
		NextOffset uint64 `json:"next_offset"`
		Records    []rec  `json:"records"`
	}{next, recs})}, nil
}

func (s *server) handleWalStats(c *conn, p *WalStatsParams) (reply, *rcpError) {
	st := s.log.stats()
	type io struct {
		BytesRead    uint64 `json:"bytes_read"`
		BytesWritten uint64 `json:"bytes_written"`
		Fsyncs       uint64 `json:"fsyncs"`
		Reads        uint64 `json:"reads"`
		Writes       uint64 `json:"writes"`
	}
	disk := s.disk.info(st.AllocatedBytes)
	return reply{result: encMarshal(struct {
		DiskQuotaBytes   int64  `json:"disk_quota_bytes"`
		DiskReserveBytes int64  `json:"disk_reserve_bytes"`
		DiskUsedBytes    int64  `json:"disk_used_bytes"`
		EntryCount       uint64 `json:"entry_count"`
		IOStats          io     `json:"io_stats"`
		LatestOffset     uint64 `json:"latest_offset"`
		SegmentCount     uint64 `json:"segment_count"`
		TotalSizeBytes   int64  `json:"total_size_bytes"`
	}{disk.QuotaBytes, disk.ReserveBytes, disk.UsedBytes, st.EntryCount, io{st.BytesRead, st.BytesWritten, st.Fsyncs, st.Reads, st.Writes},
		st.DurableLSN, st.SegmentCount, st.TotalSizeBytes}), lsn: st.DurableLSN}, nil
}

func (s *server) handleFlushAll(c *conn, p *FlushAllParams) (reply, *rcpError) {
	if !s.cfg.AllowFlushAll {
		return reply{}, newError(codeBadRequest, "FLUSH_ALL is disabled; set storage.allow_flush_all: true to enable it")
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	instances := len(s.st.instances)
	machines := 0
	for _, vs := range s.st.machines {
		machines += len(vs)
	}
	r := &record{typ: recFlushAll, Time: s.now()}
	if err := s.commit(r); err != nil {
		return reply{}, err
	}
	return reply{result: encMarshal(struct {
		Flushed          bool `json:"flushed"`
		InstancesRemoved int  `json:"instances_removed"`
		MachinesRemoved  int  `json:"machines_removed"`
	}{true, instances, machines}), lsn: r.lsn, meta: true}, nil
}

// newUUID returns a random (version 4) UUID, lowercase and hyphenated.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func (s *server) handleSnapshotInstance(c *conn, p *SnapshotInstanceParams) (reply, *rcpError) {
	s.st.mu.RLock()
	in := s.st.instances[p.InstanceID]
	var cp instance
	if in != nil {
		cp = *in
	}
	s.st.mu.RUnlock()
	if in == nil {
		return reply{}, instanceNotFound(p.InstanceID)
	}
	// The file must not describe a state a crash could take back.
	if err := s.log.waitDurable(cp.lastLSN); err != nil {
		return reply{}, newError(codeWALIOError, "write-ahead log: %v", err)
	}
	res, err := writeInstanceSnapshot(filepath.Join(s.cfg.DataDir, "snapshots", "instances"), &cp)
	if err != nil {
		return reply{}, newError(codeInternalError, "writing the instance snapshot failed: %v", err)
	}
	return reply{result: encMarshal(res), lsn: cp.lastLSN}, nil
}

func (s *server) handleCompact(c *conn, p *CompactParams) (reply, *rcpError) {
	res, err := s.compact()
	if err != nil {
		return reply{}, newError(codeWALIOError, "compaction failed: %v", err)
	}
	return reply{result: encMarshal(res), lsn: res.SnapshotLSN, meta: true}, nil
}
