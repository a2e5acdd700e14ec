package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// req is one request of a step. Names in Params contain %P%.
type req struct {
	Op     string         `json:"op"`
	Params map[string]any `json:"params,omitempty"`
	Spec   *machineSpec   `json:"spec,omitempty"`    // PUT_MACHINE: the definition
	RawEnv string         `json:"raw_env,omitempty"` // an invalid envelope, sent as is
	WantID *string        `json:"want_id,omitempty"` // RawEnv: the id the error must carry
	// UNWATCH: which subscription, as the ordinal of a successful
	// WATCH_INSTANCE in the run (ids are the server's, so a replay cannot
	// carry them); -1 or an ordinal the run does not reach is an id no
	// connection holds.
	Sub *int `json:"sub,omitempty"`
}

// step is one unit of the run.
type step struct {
	Kind  string `json:"kind"` // "req" (pipelined on one connection), "hostile", "walcheck", "ping"
	Conn  int    `json:"conn"`
	Reqs  []req  `json:"reqs,omitempty"`
	Frame []byte `json:"frame,omitempty"` // hostile: bytes for a fresh connection
	Code  string `json:"code,omitempty"`  // hostile: the error code it must get
}

type watchModel struct {
	conn     int
	id       string // subscription id
	instance string // resolved instance id
	loose    bool   // the instance was deleted: later events are not checked
	removed  bool   // UNWATCH removed it: no events beyond want, which may stop short
	want     []*msg // expected events (instance, event, to_state, wal_offset) not yet verified
	got      []*msg // events received, not yet verified
}

type fuzzer struct {
	addr      string
	prefix    string
	exclusive bool
	conns     []*conn
	m         *model
	features  []string
	watches   []*watchModel  // held, or removed since the last checkpoint
	all       []*watchModel  // every successful WATCH, by ordinal (req.Sub)
	retired   map[string]int // removed and checked: subscription id -> connection
	subCount  []int          // subscriptions each connection holds
	maxSubs   int            // INFO max_subscriptions_per_connection; 0: unknown, no limit expected
	stats     stats
	step      int
	lastConn  int
}

func newFuzzer(addr string, n int, exclusive bool, prefix string) (*fuzzer, error) {
	f := &fuzzer{addr: addr, prefix: prefix, exclusive: exclusive, m: newModel(), retired: map[string]int{}, subCount: make([]int, n)}
	for i := 0; i < n; i++ {
		c, err := dial(addr)
		if err != nil {
			f.close()
			return nil, err
		}
		f.conns = append(f.conns, c)
		r, err := f.call(c, "HELLO", map[string]any{"protocol_version": 1, "client_name": "stmdb-fuzz",
			"wire_modes": []string{"binary_json"}, "features": []string{"idempotency", "batch", "watch", "wal_read"}})
		if err != nil {
			f.close()
			return nil, err
		}
		if r.Status != "ok" {
			f.close()
			return nil, fmt.Errorf("HELLO: %s", r.raw)
		}
		var h struct {
			Features []string `json:"features"`
		}
		json.Unmarshal(r.Result, &h)
		f.features = h.Features
	}
	if err := f.syncHead(); err != nil {
		f.close()
		return nil, err
	}
	if err := f.readLimits(); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// readLimits takes the limits the model must respect from INFO. A server
// that does not advertise max_subscriptions_per_connection is expected to
// have no such limit.
func (f *fuzzer) readLimits() error {
	r, err := f.call(f.conns[0], "INFO", nil)
	if err != nil {
		return err
	}
	if r.Status != "ok" {
		return nil // no INFO: nothing advertised
	}
	var info struct {
		MaxSubs *int `json:"max_subscriptions_per_connection"`
	}
	if err := json.Unmarshal(r.Result, &info); err != nil {
		return fmt.Errorf("INFO: %v: %s", err, r.raw)
	}
	if info.MaxSubs != nil {
		if *info.MaxSubs < 1 {
			return fmt.Errorf("INFO: max_subscriptions_per_connection %d: %s", *info.MaxSubs, r.raw)
		}
		f.maxSubs = *info.MaxSubs
	}
	return nil
}

func (f *fuzzer) has(feature string) bool { return slices.Contains(f.features, feature) }

func (f *fuzzer) syncHead() error {
	r, err := f.call(f.conns[0], "WAL_STATS", nil)
	if err != nil {
		return err
	}
	var ws struct {
		Latest uint64 `json:"latest_offset"`
	}
	if r.Status != "ok" || json.Unmarshal(r.Result, &ws) != nil {
		return fmt.Errorf("WAL_STATS: %s", r.raw)
	}
	f.m.head = ws.Latest
	return nil
}

func (f *fuzzer) close() {
	for _, c := range f.conns {
		c.close()
	}
}

// call sends one request and waits for its response.
func (f *fuzzer) call(c *conn, op string, params any) (*msg, error) {
	id, err := f.send(c, op, params)
	if err != nil {
		return nil, err
	}
	r, err := c.readResponse(10 * time.Second)
	if err != nil {
		return nil, err
	}
	if r.ID == nil || *r.ID != id {
		return nil, fmt.Errorf("response id %v, want %q: %s", r.ID, id, r.raw)
	}
	return r, nil
}

func (f *fuzzer) send(c *conn, op string, params any) (string, error) {
	c.nextID++
	id := fmt.Sprintf("r%d", c.nextID)
	env := map[string]any{"type": "request", "id": id, "op": op}
	if params != nil {
		env["params"] = params
	}
	b, _ := json.Marshal(env)
	_, err := c.nc.Write(encodeFrame([]byte(f.resolve(string(b)))))
	return id, err
}

// resolve puts the run's prefix in place of %P%.
func (f *fuzzer) resolve(s string) string { return strings.ReplaceAll(s, "%P%", f.prefix) }

// resolvedParams returns the params as the model sees them: %P% replaced,
// numbers as float64 (as they come back from JSON).
func (f *fuzzer) resolvedParams(r req) map[string]any {
	b, _ := json.Marshal(r.Params)
	var p map[string]any
	json.Unmarshal([]byte(f.resolve(string(b))), &p)
	if p == nil {
		p = map[string]any{}
	}
	if r.Spec != nil {
		p["_spec"] = r.Spec
	}
	if r.Sub != nil {
		p["subscription_id"] = f.subID(*r.Sub)
	}
	return p
}

// subWatch is the subscription a req.Sub ordinal names, or nil.
func (f *fuzzer) subWatch(ord int) *watchModel {
	if ord < 0 || ord >= len(f.all) {
		return nil
	}
	return f.all[ord]
}

// subID is the subscription id a req.Sub ordinal names: a well-formed id
// no connection holds when the ordinal names none.
func (f *fuzzer) subID(ord int) string {
	if w := f.subWatch(ord); w != nil {
		return w.id
	}
	return "sub-00000000-0000-4000-8000-00000000f022"
}

func (f *fuzzer) diverge(format string, args ...any) *divergence {
	return &divergence{step: f.step, msg: fmt.Sprintf(format, args...)}
}

// wireParams is what goes on the wire for r.
func (f *fuzzer) wireParams(r req) map[string]any {
	p := maps.Clone(r.Params)
	if r.Spec != nil || r.Sub != nil {
		if p == nil {
			p = map[string]any{}
		}
	}
	if r.Spec != nil {
		p["definition"] = r.Spec.definition()
	}
	if r.Sub != nil {
		p["subscription_id"] = f.subID(*r.Sub)
	}
	return p
}

// do runs one step and checks every answer.
func (f *fuzzer) do(i int, st step) *divergence {
	f.step = i
	if st.Conn >= len(f.conns) {
		st.Conn %= len(f.conns)
	}
	c := f.conns[st.Conn]
	f.lastConn = st.Conn
	switch st.Kind {
	case "hostile":
		return f.doHostile(st)
	case "ping":
		for k, c := range f.conns {
			r, err := f.call(c, "PING", nil)
			if err != nil {
				return f.diverge("connection %d: PING: %v (is the server alive?)", k, err)
			}
			if r.Status != "ok" || !strings.Contains(string(r.Result), `"pong":true`) {
				return f.diverge("connection %d: PING answered %s", k, r.raw)
			}
		}
		return nil
	case "walcheck":
		if !f.exclusive || f.m.head == 0 {
			return nil
		}
		r, err := f.call(c, "WAL_READ", map[string]any{"from_offset": f.m.head, "limit": 1})
		if err != nil {
			return f.diverge("WAL_READ: %v", err)
		}
		var wr struct {
			Records []struct {
				Offset   uint64 `json:"offset"`
				Sequence uint64 `json:"sequence"`
			} `json:"records"`
			Next uint64 `json:"next_offset"`
		}
		if r.Status != "ok" || json.Unmarshal(r.Result, &wr) != nil || len(wr.Records) != 1 ||
			wr.Records[0].Offset != f.m.head || wr.Records[0].Sequence != f.m.head || wr.Next != f.m.head+1 {
			return f.diverge("WAL_READ from the head %d: want one record at offset %d and next_offset %d, got %s", f.m.head, f.m.head, f.m.head+1, r.raw)
		}
		return nil
	}
	// Pipelined: send all, then read all in order.
	if len(st.Reqs) > 1 {
		f.stats.bursts++
	}
	ids := make([]string, len(st.Reqs))
	for k, r := range st.Reqs {
		if r.RawEnv != "" {
			c.nc.Write(encodeFrame([]byte(f.resolve(r.RawEnv))))
			continue
		}
		id, err := f.send(c, r.Op, f.wireParams(r))
		if err != nil {
			return f.diverge("connection %d: send %s: %v (is the server alive?)", st.Conn, r.Op, err)
		}
		ids[k] = id
	}
	for k, r := range st.Reqs {
		resp, err := c.readResponse(10 * time.Second)
		if err != nil {
			return f.diverge("connection %d: no response to %s: %v", st.Conn, r.Op, err)
		}
		f.stats.requests++
		if err := checkEnvelope(resp); err != nil {
			return f.diverge("%s: malformed response %s: %v", r.Op, resp.raw, err)
		}
		wantID := ids[k]
		if r.RawEnv != "" {
			wantID = *r.WantID
		}
		if *resp.ID != wantID {
			return f.diverge("%s: response id %q, want %q (responses must come in request order)", r.Op, *resp.ID, wantID)
		}
		if r.RawEnv != "" {
			if resp.Status != "error" || resp.Error.Code != "BAD_REQUEST" {
				return f.diverge("invalid envelope %s: want BAD_REQUEST, got %s", f.resolve(r.RawEnv), resp.raw)
			}
			f.stats.errors++
			continue
		}
		if d := f.check(r, resp); d != nil {
			return d
		}
	}
	return nil
}

var knownCodes = map[string]bool{
	"UNSUPPORTED_PROTOCOL": false, "BAD_REQUEST": false, "UNAUTHORIZED": false, "AUTH_FAILED": false,
	"NOT_FOUND": false, "MACHINE_NOT_FOUND": false, "MACHINE_VERSION_EXISTS": false,
	"MACHINE_VERSION_LIMIT_EXCEEDED": false, "INSTANCE_NOT_FOUND": false, "INSTANCE_EXISTS": false,
	"INVALID_TRANSITION": false, "GUARD_FAILED": false, "CONFLICT": false,
	"WAL_IO_ERROR": true, "INTERNAL_ERROR": true, "RATE_LIMITED": true,
}

// checkEnvelope checks rcp.md §2 for any response.
func checkEnvelope(r *msg) error {
	if r.Type != "response" {
		return fmt.Errorf("type %q", r.Type)
	}
	if r.ID == nil {
		return fmt.Errorf("no string id")
	}
	switch r.Status {
	case "ok":
		var obj map[string]any
		if json.Unmarshal(r.Result, &obj) != nil || obj == nil {
			return fmt.Errorf("result is not an object")
		}
	case "error":
		if r.Error == nil || r.Error.Message == "" || r.Error.Retryable == nil {
			return fmt.Errorf("error lacks code, message or retryable")
		}
		retry, ok := knownCodes[r.Error.Code]
		if !ok {
			return fmt.Errorf("unknown error code %q", r.Error.Code)
		}
		if retry != *r.Error.Retryable {
			return fmt.Errorf("%s with retryable=%v", r.Error.Code, *r.Error.Retryable)
		}
	default:
		return fmt.Errorf("status %q", r.Status)
	}
	return nil
}

// check compares one response with the model and applies it.
func (f *fuzzer) check(r req, resp *msg) *divergence {
	p := f.resolvedParams(r)
	if r.Op == "BATCH" {
		return f.checkBatch(p, resp)
	}
	if r.Op == "WATCH_INSTANCE" {
		return f.checkWatch(p, resp)
	}
	if r.Op == "UNWATCH" {
		return f.checkUnwatch(r, p, resp)
	}
	o := f.m.predict(r.Op, p)
	return f.checkOutcome(r.Op, p, o, resp.Status, resp.Error, resp.Result, resp.Meta, -1)
}

// checkOutcome checks one answer (a response, or one slot of a batch:
// slot >= 0, lsn given by the caller through meta).
func (f *fuzzer) checkOutcome(op string, p map[string]any, o outcome, status string, e *errBody, result json.RawMessage, meta *struct {
	WalOffset *uint64 `json:"wal_offset"`
}, slot int) *divergence {
	what := fmt.Sprintf("%s %s", op, canon(without(p, "_spec")))
	if slot >= 0 {
		what = fmt.Sprintf("batch slot %d: %s", slot, what)
	}
	if len(o.codes) > 0 {
		if status != "error" || e == nil || !slices.Contains(o.codes, e.Code) {
			return f.diverge("%s: want error %s, got status %s %s %s", what, codeList(o.codes), status, errText(e), result)
		}
		f.stats.errors++
		return nil
	}
	if status != "ok" {
		return f.diverge("%s: want success, got %s", what, errText(e))
	}
	f.stats.ok++
	if o.cached != nil {
		f.stats.retries++
		if err := sameExceptApplied(o.cached.Result, result, op); err != nil {
			return f.diverge("%s: idempotent retry: %v", what, err)
		}
		return nil
	}
	if err := matchSubset(o.want, result); err != nil {
		return f.diverge("%s: %v (result %s)", what, err, result)
	}
	if !o.write {
		return nil
	}
	var lsn uint64
	if slot < 0 {
		if meta == nil || meta.WalOffset == nil {
			return f.diverge("%s: a write's response has no meta.wal_offset", what)
		}
		lsn = *meta.WalOffset
		if f.exclusive && lsn != f.m.head+1 {
			return f.diverge("%s: wal_offset %d, want %d (offsets are dense: one record per write)", what, lsn, f.m.head+1)
		}
		f.m.head = max(f.m.head, lsn)
	} else {
		lsn = f.m.head // the batch code sets head before the slots commit
	}
	if o.commit != nil {
		o.commit(result, lsn)
	}
	if op == "APPLY_EVENT" {
		f.noteEvent(p, result, lsn)
	}
	if op == "DELETE_INSTANCE" {
		id, _ := str(p, "instance_id")
		for _, w := range f.watches {
			if w.instance == id {
				w.loose = true
			}
		}
	}
	return nil
}

func without(p map[string]any, k string) map[string]any {
	q := maps.Clone(p)
	delete(q, k)
	return q
}

func errText(e *errBody) string {
	if e == nil {
		return ""
	}
	return e.Code + ": " + e.Message
}

// checkBatch follows rcp.md §8.
func (f *fuzzer) checkBatch(p map[string]any, resp *msg) *divergence {
	f.stats.batches++
	mode, _ := str(p, "mode")
	ops, _ := p["ops"].([]any)
	var res struct {
		Results []struct {
			Status string          `json:"status"`
			Result json.RawMessage `json:"result"`
			Error  *errBody        `json:"error"`
		} `json:"results"`
	}
	if resp.Status == "ok" {
		if err := json.Unmarshal(resp.Result, &res); err != nil || len(res.Results) != len(ops) {
			return f.diverge("BATCH: want %d results, got %s", len(ops), resp.Result)
		}
	}
	member := func(i int) (string, map[string]any) {
		el, _ := ops[i].(map[string]any)
		op, _ := el["op"].(string)
		mp, _ := el["params"].(map[string]any)
		if mp == nil {
			mp = map[string]any{}
		}
		return op, mp
	}
	batchable := func(op string) bool {
		return op == "CREATE_INSTANCE" || op == "APPLY_EVENT" || op == "DELETE_INSTANCE"
	}
	if mode == "best_effort" {
		if resp.Status != "ok" {
			return f.diverge("best_effort BATCH failed as a whole: %s", resp.raw)
		}
		for i := range ops {
			op, mp := member(i)
			o := fail("BAD_REQUEST")
			if batchable(op) {
				o = f.m.predict(op, mp)
			}
			sl := res.Results[i]
			if o.write && len(o.codes) == 0 && o.cached == nil && sl.Status == "ok" {
				f.m.head++ // each member that writes is its own record
			}
			if d := f.checkOutcome(op, mp, o, sl.Status, sl.Error, sl.Result, nil, i); d != nil {
				return d
			}
		}
		return nil
	}
	// Atomic: all members apply as one record, or none does. First find
	// the first member that must fail, on a scratch copy of the model.
	scratch := f.m.clone()
	for i := range ops {
		op, mp := member(i)
		o := fail("BAD_REQUEST")
		if batchable(op) {
			o = scratch.predict(op, mp)
		}
		if len(o.codes) > 0 {
			if resp.Status != "error" || !slices.Contains(o.codes, resp.Error.Code) {
				return f.diverge("atomic BATCH: member %d (%s %s) must fail with %s, so the batch must; got %s", i, op, canon(mp), codeList(o.codes), resp.raw)
			}
			if idx, ok := resp.Error.Details["index"].(float64); !ok || int(idx) != i {
				return f.diverge("atomic BATCH failing at member %d: details.index is %v", i, resp.Error.Details["index"])
			}
			f.stats.errors++
			return nil
		}
		if o.commit != nil {
			o.commit(json.RawMessage(`{}`), scratch.head+1)
		}
	}
	if resp.Status != "ok" {
		return f.diverge("atomic BATCH: every member should succeed, got %s", resp.raw)
	}
	// Then apply it for real, checking each slot.
	saved := f.m
	trial := f.m.clone()
	f.m = trial
	wrote := false
	for i := range ops {
		op, mp := member(i)
		o := trial.predict(op, mp)
		if o.write && o.cached == nil && !wrote {
			wrote = true
			trial.head = saved.head + 1
			if f.exclusive && (resp.Meta == nil || resp.Meta.WalOffset == nil || *resp.Meta.WalOffset != trial.head) {
				f.m = saved
				return f.diverge("atomic BATCH: meta.wal_offset %s, want %d (one record for the batch)", metaText(resp), trial.head)
			}
		}
		sl := res.Results[i]
		if d := f.checkOutcome(op, mp, o, sl.Status, sl.Error, sl.Result, nil, i); d != nil {
			f.m = saved
			return d
		}
	}
	return nil
}

func metaText(r *msg) string {
	if r.Meta == nil || r.Meta.WalOffset == nil {
		return "missing"
	}
	return fmt.Sprint(*r.Meta.WalOffset)
}

// doHostile sends a malformed frame on a fresh connection: one error with
// id "" and the connection closes; nothing else changes.
func (f *fuzzer) doHostile(st step) *divergence {
	f.stats.hostile++
	c, err := dial(f.addr)
	if err != nil {
		return f.diverge("dial for a hostile frame: %v (is the server alive?)", err)
	}
	defer c.close()
	c.nc.Write(st.Frame)
	var r *msg
	if st.Frame[0] == '{' { // JSONL: the reply is a line
		c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, rerr := c.br.ReadBytes('\n')
		err = rerr
		if err == nil {
			r = &msg{raw: line}
			err = json.Unmarshal(line, r)
		}
	} else {
		r, err = c.read(10 * time.Second)
	}
	if err != nil {
		return f.diverge("hostile frame %x...: want a %s reply, got %v", st.Frame[:min(len(st.Frame), 24)], st.Code, err)
	}
	if checkEnvelope(r) != nil || r.Status != "error" || r.Error.Code != st.Code || *r.ID != "" {
		return f.diverge("hostile frame %x...: want error %s with id \"\", got %s", st.Frame[:min(len(st.Frame), 24)], st.Code, r.raw)
	}
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.br.ReadByte(); !isEOF(err) {
		return f.diverge("hostile frame: want the connection closed after the error, got %v", err)
	}
	return nil
}

// checkWatch registers a subscription (rcp.md §9). A connection holding
// max_subscriptions_per_connection subscriptions gets BAD_REQUEST, and
// only then.
func (f *fuzzer) checkWatch(p map[string]any, resp *msg) *divergence {
	id, _ := str(p, "instance_id")
	conn := f.curConn(resp)
	atLimit := f.maxSubs > 0 && f.subCount[conn] >= f.maxSubs
	if f.m.insts[id] == nil {
		codes := []string{"INSTANCE_NOT_FOUND"}
		if atLimit {
			codes = append(codes, "BAD_REQUEST") // rcp.md does not order the checks
		}
		if resp.Status != "error" || !slices.Contains(codes, resp.Error.Code) {
			return f.diverge("WATCH_INSTANCE of unknown %s (connection %d holds %d subscriptions, limit %s): want %s, got %s",
				id, conn, f.subCount[conn], f.limitText(), codeList(codes), resp.raw)
		}
		f.stats.errors++
		return nil
	}
	if atLimit {
		if resp.Status != "error" || resp.Error.Code != "BAD_REQUEST" {
			return f.diverge("WATCH_INSTANCE %s: connection %d holds %d subscriptions, the limit: want BAD_REQUEST, got %s",
				id, conn, f.subCount[conn], resp.raw)
		}
		f.stats.errors++
		f.stats.atLimit++
		return nil
	}
	var w struct {
		Sub string `json:"subscription_id"`
	}
	if resp.Status != "ok" || json.Unmarshal(resp.Result, &w) != nil || w.Sub == "" {
		return f.diverge("WATCH_INSTANCE %s (connection %d holds %d subscriptions, limit %s): want a subscription_id, got %s",
			id, conn, f.subCount[conn], f.limitText(), resp.raw)
	}
	f.stats.ok++
	wm := &watchModel{conn: conn, id: w.Sub, instance: id}
	f.watches = append(f.watches, wm)
	f.all = append(f.all, wm)
	f.subCount[conn]++
	return nil
}

func (f *fuzzer) limitText() string {
	if f.maxSubs == 0 {
		return "none advertised"
	}
	return fmt.Sprint(f.maxSubs)
}

// checkUnwatch follows rcp.md §9: removed is true only for a subscription
// this connection holds; any other id (unknown, already removed, another
// connection's) is removed:false and changes nothing.
func (f *fuzzer) checkUnwatch(r req, p map[string]any, resp *msg) *divergence {
	sub, _ := str(p, "subscription_id")
	conn := f.curConn(resp)
	w := f.subWatch(*r.Sub)
	held := w != nil && !w.removed && w.conn == conn
	if resp.Status != "ok" {
		return f.diverge("UNWATCH %s: want success, got %s", sub, resp.raw)
	}
	if err := matchSubset(map[string]any{"subscription_id": sub, "removed": held}, resp.Result); err != nil {
		return f.diverge("UNWATCH %s on connection %d (%s): %v (result %s)", sub, conn, f.subWhere(w), err, resp.Result)
	}
	f.stats.ok++
	if held {
		w.removed = true
		f.subCount[conn]--
		f.stats.unwatches++
	}
	return nil
}

func (f *fuzzer) subWhere(w *watchModel) string {
	switch {
	case w == nil:
		return "an id no connection holds"
	case w.removed:
		return "already removed"
	}
	return fmt.Sprintf("held by connection %d", w.conn)
}

// curConn finds the connection a response came on (the one of the
// current step).
func (f *fuzzer) curConn(*msg) int { return f.lastConn }

// noteEvent records an applied event for the watchers of its instance.
func (f *fuzzer) noteEvent(p map[string]any, result json.RawMessage, lsn uint64) {
	id, _ := str(p, "instance_id")
	ev, _ := str(p, "event")
	var r struct {
		To string `json:"to_state"`
	}
	json.Unmarshal(result, &r)
	for _, w := range f.watches {
		if w.instance == id && !w.loose && !w.removed {
			w.want = append(w.want, &msg{InstanceID: id, Event: ev, ToState: r.To, WalOffset: lsn, SubscriptionID: w.id})
		}
	}
}

// checkpoint: every connection answers PING, and every watcher got
// exactly the events it should have, in WAL order. Verified events are
// dropped, and subscriptions removed since the last checkpoint are checked
// once more and retired.
func (f *fuzzer) checkpoint(i int) *divergence {
	f.step = i
	if d := f.do(i, step{Kind: "ping"}); d != nil {
		return d
	}
	byID := map[string]*watchModel{}
	for _, w := range f.watches {
		byID[w.id] = w
	}
	sortEvents := func(c *conn) *divergence {
		for _, e := range c.events {
			w := byID[e.SubscriptionID]
			if w == nil {
				if k, ok := f.retired[e.SubscriptionID]; ok && f.conns[k] == c {
					continue // removed earlier; a late event is not checked
				}
				return f.diverge("event for a subscription this connection does not hold: %s", e.raw)
			}
			if f.conns[w.conn] != c {
				return f.diverge("event for connection %d's subscription on another connection: %s", w.conn, e.raw)
			}
			w.got = append(w.got, e)
		}
		c.events = c.events[:0]
		return nil
	}
	for _, w := range f.watches {
		c := f.conns[w.conn]
		deadline := time.Now().Add(3 * time.Second)
		for {
			if d := sortEvents(c); d != nil {
				return d
			}
			// A removed subscription may stop short: wait for nothing.
			if w.removed || len(w.got) >= len(w.want) || time.Now().After(deadline) {
				break
			}
			if m, err := c.read(100 * time.Millisecond); err == nil {
				if m.Type != "event" {
					return f.diverge("unexpected response while waiting for events: %s", m.raw)
				}
				c.events = append(c.events, m)
			}
		}
		n := len(w.want)
		switch {
		case w.removed && !w.loose && len(w.got) > n:
			return f.diverge("subscription %s on %s: got %d events, want at most %d (it was removed by UNWATCH)", w.id, w.instance, len(w.got), n)
		case w.removed:
			n = min(n, len(w.got))
		case len(w.got) < n || (!w.loose && len(w.got) != n):
			return f.diverge("subscription %s on %s: got %d events, want %d", w.id, w.instance, len(w.got), n)
		}
		for k := 0; k < n; k++ {
			g, want := w.got[k], w.want[k]
			if g.InstanceID != want.InstanceID || g.Event != want.Event || g.ToState != want.ToState || g.WalOffset != want.WalOffset {
				return f.diverge("subscription %s: event %d is %s, want instance %s event %s to %s at offset %d",
					w.id, k, g.raw, want.InstanceID, want.Event, want.ToState, want.WalOffset)
			}
		}
		f.stats.events += n
		w.want = nil
		if w.loose {
			w.got = nil // events of an instance created again under the id: not modelled
		} else {
			w.got = w.got[n:]
		}
	}
	kept := f.watches[:0]
	for _, w := range f.watches {
		if w.removed {
			f.retired[w.id] = w.conn
			w.got = nil
			continue
		}
		kept = append(kept, w)
	}
	clear(f.watches[len(kept):])
	f.watches = kept
	return nil
}
