package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// The model: what the fuzzer's own requests did to the server, enough to
// predict every answer the contract (rcp.md) pins down. Only names under
// the run's prefix are modelled; the fuzzer never touches anything else.

type guardSpec struct {
	Op string  // ">" or "<"
	K  float64 // ctx.n Op K
}

// eval follows rcp.md §5: a missing or non-number ctx.n compares false.
func (g *guardSpec) eval(ctx map[string]any) bool {
	if g == nil {
		return true
	}
	n, ok := ctx["n"].(float64)
	if !ok {
		return false
	}
	if g.Op == ">" {
		return n > g.K
	}
	return n < g.K
}

type transSpec struct {
	From  []string
	Event string
	To    string
	Guard *guardSpec
}

type machineSpec struct {
	States  []string
	Initial string
	Trans   []transSpec
}

// definition renders the spec as the PUT_MACHINE definition.
func (m *machineSpec) definition() map[string]any {
	ts := []any{}
	for _, t := range m.Trans {
		o := map[string]any{"from": t.From, "event": t.Event, "to": t.To}
		if len(t.From) == 1 {
			o["from"] = t.From[0]
		}
		if t.Guard != nil {
			o["guard"] = fmt.Sprintf("ctx.n %s %g", t.Guard.Op, t.Guard.K)
		}
		ts = append(ts, o)
	}
	return map[string]any{"states": m.States, "initial": m.Initial, "transitions": ts}
}

// valid reports whether the definition is one the contract accepts.
func (m *machineSpec) valid() bool {
	if len(m.States) == 0 || !slices.Contains(m.States, m.Initial) {
		return false
	}
	for _, t := range m.Trans {
		if !slices.Contains(m.States, t.To) {
			return false
		}
		for _, f := range t.From {
			if !slices.Contains(m.States, f) {
				return false
			}
		}
	}
	return true
}

type instModel struct {
	Machine string
	Version int
	State   string
	Ctx     map[string]any
	LastLSN uint64
}

type idemModel struct {
	Params string          // canonical params
	Result json.RawMessage // the first result as the server sent it
}

type model struct {
	machines map[string]map[int]*machineSpec
	insts    map[string]*instModel
	anon     map[string]*instModel // created without an id: counted, never addressed
	idem     map[string]*idemModel // op + "\x00" + key
	head     uint64                // last WAL offset (exclusive mode)
}

func newModel() *model {
	return &model{machines: map[string]map[int]*machineSpec{}, insts: map[string]*instModel{},
		anon: map[string]*instModel{}, idem: map[string]*idemModel{}}
}

func (m *model) clone() *model {
	c := &model{machines: m.machines, insts: map[string]*instModel{}, anon: maps.Clone(m.anon), idem: maps.Clone(m.idem), head: m.head}
	for k, v := range m.insts {
		cp := *v
		cp.Ctx = maps.Clone(v.Ctx)
		c.insts[k] = &cp
	}
	return c
}

// outcome is what the model predicts for one request.
type outcome struct {
	codes  []string       // acceptable error codes; empty: success
	want   map[string]any // fields the result must have (subset match)
	write  bool           // a success appends one WAL record
	cached *idemModel     // an idempotent replay: the result must equal this one's
	// commit applies the success to the model, given the server's result
	// and the record's offset.
	commit func(result json.RawMessage, lsn uint64)
}

func fail(codes ...string) outcome { return outcome{codes: codes} }

func canon(v any) string {
	b, _ := json.Marshal(v)
	var x any
	json.Unmarshal(b, &x)
	b, _ = json.Marshal(x) // map keys sorted
	return string(b)
}

func str(p map[string]any, k string) (string, bool) {
	s, ok := p[k].(string)
	return s, ok
}

// predict computes the outcome of op with params p (names already
// resolved) against m, mutating nothing until commit is called.
func (m *model) predict(op string, p map[string]any) outcome {
	switch op {
	case "PUT_MACHINE":
		name, _ := str(p, "machine")
		v := int(p["version"].(float64))
		spec := p["_spec"].(*machineSpec)
		if !spec.valid() || spec.hasBadGuard() {
			return fail("BAD_REQUEST")
		}
		if old := m.machines[name][v]; old != nil {
			if canon(old.definition()) == canon(spec.definition()) {
				return outcome{want: map[string]any{"created": false, "machine": name, "version": float64(v)}}
			}
			return fail("MACHINE_VERSION_EXISTS")
		}
		return outcome{want: map[string]any{"created": true, "machine": name, "version": float64(v)}, write: true,
			commit: func(json.RawMessage, uint64) {
				if m.machines[name] == nil {
					m.machines[name] = map[int]*machineSpec{}
				}
				m.machines[name][v] = spec
			}}
	case "CREATE_INSTANCE", "APPLY_EVENT", "DELETE_INSTANCE":
		return m.predictKeyed(op, p)
	case "GET_INSTANCE":
		id, _ := str(p, "instance_id")
		in := m.insts[id]
		if in == nil {
			return fail("INSTANCE_NOT_FOUND")
		}
		return outcome{want: map[string]any{"state": in.State, "ctx": in.Ctx, "machine": in.Machine,
			"version": float64(in.Version), "last_wal_offset": float64(in.LastLSN)}}
	case "GET_MACHINE":
		name, _ := str(p, "machine")
		v := int(p["version"].(float64))
		if m.machines[name][v] == nil {
			return fail("MACHINE_NOT_FOUND", "NOT_FOUND")
		}
		return outcome{want: map[string]any{}}
	case "LIST_INSTANCES":
		name, _ := str(p, "machine")
		var ids []string
		for id, in := range m.insts {
			if in.Machine == name {
				ids = append(ids, id)
			}
		}
		n := len(ids)
		for _, in := range m.anon {
			if in.Machine == name {
				n++
			}
		}
		want := map[string]any{"total": float64(n)}
		if n == len(ids) {
			sort.Strings(ids)
			want["_ids"] = ids
		}
		return outcome{want: want}
	case "PING":
		return outcome{want: map[string]any{"pong": true}}
	}
	return outcome{want: map[string]any{}}
}

func (s *machineSpec) hasBadGuard() bool { return false }

// predictKeyed handles the ops that take an idempotency key.
func (m *model) predictKeyed(op string, p map[string]any) outcome {
	key, keyed := str(p, "idempotency_key")
	params := map[string]any{}
	for k, v := range p {
		if k != "idempotency_key" {
			params[k] = v
		}
	}
	if keyed {
		if e := m.idem[op+"\x00"+key]; e != nil {
			if e.Params != canon(params) {
				return fail("CONFLICT")
			}
			return outcome{cached: e}
		}
	}
	o := m.predictPlain(op, p)
	if keyed && len(o.codes) == 0 {
		inner := o.commit
		o.commit = func(res json.RawMessage, lsn uint64) {
			inner(res, lsn)
			m.idem[op+"\x00"+key] = &idemModel{Params: canon(params), Result: res}
		}
	}
	return o
}

func (m *model) predictPlain(op string, p map[string]any) outcome {
	id, hasID := str(p, "instance_id")
	switch op {
	case "CREATE_INSTANCE":
		name, _ := str(p, "machine")
		v := int(p["version"].(float64))
		var codes []string
		if hasID && (m.insts[id] != nil) {
			codes = append(codes, "INSTANCE_EXISTS")
		}
		spec := m.machines[name][v]
		if spec == nil {
			codes = append(codes, "MACHINE_NOT_FOUND", "NOT_FOUND")
		}
		ctx, isObj := p["initial_ctx"].(map[string]any)
		if _, present := p["initial_ctx"]; present && !isObj {
			codes = append(codes, "BAD_REQUEST")
		}
		if len(codes) > 0 {
			return fail(codes...)
		}
		want := map[string]any{"state": spec.Initial}
		if hasID {
			want["instance_id"] = id
		}
		return outcome{want: want, write: true, commit: func(res json.RawMessage, lsn uint64) {
			in := &instModel{Machine: name, Version: v, State: spec.Initial, Ctx: maps.Clone(ctx), LastLSN: lsn}
			if in.Ctx == nil {
				in.Ctx = map[string]any{}
			}
			if hasID {
				m.insts[id] = in
				return
			}
			var r struct {
				ID string `json:"instance_id"`
			}
			json.Unmarshal(res, &r)
			m.anon[r.ID] = in
		}}
	case "DELETE_INSTANCE":
		if m.insts[id] == nil {
			return fail("INSTANCE_NOT_FOUND")
		}
		return outcome{want: map[string]any{"deleted": true, "instance_id": id}, write: true,
			commit: func(json.RawMessage, uint64) { delete(m.insts, id) }}
	case "APPLY_EVENT":
		in := m.insts[id]
		if in == nil {
			return fail("INSTANCE_NOT_FOUND")
		}
		ev, _ := str(p, "event")
		payload, isObj := p["payload"].(map[string]any)
		if _, present := p["payload"]; present && !isObj {
			return fail("BAD_REQUEST")
		}
		// Every check that fails is an acceptable answer: rcp.md does not
		// order them.
		var codes []string
		if es, ok := str(p, "expected_state"); ok && es != in.State {
			codes = append(codes, "CONFLICT")
		}
		if ew, ok := p["expected_wal_offset"].(float64); ok && uint64(ew) != in.LastLSN {
			codes = append(codes, "CONFLICT")
		}
		spec := m.machines[in.Machine][in.Version]
		to, matched := "", false
		for _, t := range spec.Trans {
			if t.Event != ev || !slices.Contains(t.From, in.State) {
				continue
			}
			matched = true
			if t.Guard.eval(in.Ctx) { // guards see the ctx before the merge
				to = t.To
				break
			}
		}
		switch {
		case !matched:
			codes = append(codes, "INVALID_TRANSITION")
		case to == "":
			codes = append(codes, "GUARD_FAILED")
		}
		if len(codes) > 0 {
			return fail(codes...)
		}
		ctx := maps.Clone(in.Ctx)
		maps.Copy(ctx, payload)
		return outcome{want: map[string]any{"applied": true, "from_state": in.State, "to_state": to, "ctx": ctx}, write: true,
			commit: func(_ json.RawMessage, lsn uint64) {
				in.State, in.Ctx, in.LastLSN = to, ctx, lsn
			}}
	}
	return fail("BAD_REQUEST")
}

// matchSubset checks that every field of want is in got with an equal
// value ("_ids": the instance ids of a LIST_INSTANCES page, in order).
func matchSubset(want map[string]any, got json.RawMessage) error {
	var g map[string]any
	if err := json.Unmarshal(got, &g); err != nil || g == nil {
		return fmt.Errorf("result %s is not an object", got)
	}
	for k, w := range want {
		if k == "_ids" {
			var page struct {
				Instances []struct {
					ID string `json:"id"`
				} `json:"instances"`
			}
			json.Unmarshal(got, &page)
			var ids []string
			for _, in := range page.Instances {
				ids = append(ids, in.ID)
			}
			if !reflect.DeepEqual(ids, w) && !(len(ids) == 0 && len(w.([]string)) == 0) {
				return fmt.Errorf("instances %v, want %v (ordered by id)", ids, w)
			}
			continue
		}
		gv, ok := g[k]
		if !ok {
			return fmt.Errorf("result has no %q", k)
		}
		if canon(gv) != canon(w) {
			return fmt.Errorf("%s is %s, want %s", k, canon(gv), canon(w))
		}
	}
	return nil
}

// sameExceptApplied compares an idempotent replay with the original.
func sameExceptApplied(orig, replay json.RawMessage, op string) error {
	var a, b map[string]any
	json.Unmarshal(orig, &a)
	if err := json.Unmarshal(replay, &b); err != nil {
		return fmt.Errorf("replay result %s is not an object", replay)
	}
	if op == "APPLY_EVENT" {
		if b["applied"] != false {
			return fmt.Errorf("replay of APPLY_EVENT has applied=%v, want false", b["applied"])
		}
		delete(a, "applied")
		delete(b, "applied")
	}
	if canon(a) != canon(b) {
		return fmt.Errorf("replay result %s differs from the original %s", replay, orig)
	}
	return nil
}

func codeList(codes []string) string { return strings.Join(codes, " or ") }
