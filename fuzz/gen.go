package main

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand"
	"sort"
	"strings"
)

// gen draws steps. It looks at the model only to aim well (existing
// instances, states, offsets); what it produces is a plain step, so the
// same steps replay without it.
type gen struct {
	rng     *rand.Rand
	nconns  int
	conn    int   // the connection of the step being drawn
	retries []req // keyed requests that succeeded, for idempotent retries
	pending []req // keyed requests of the last step
	keyN    int
}

const nInstances = 12

func (g *gen) pick(xs []string) string { return xs[g.rng.Intn(len(xs))] }

func (g *gen) next(f *fuzzer) step {
	// Remember keyed requests of the previous step that the model accepted.
	g.learn(f)
	r := g.rng.Intn(100)
	conn := g.rng.Intn(g.nconns)
	switch {
	case r < 3:
		return g.hostile()
	case r < 6:
		return step{Kind: "walcheck", Conn: conn}
	case r < 8:
		return step{Kind: "ping"}
	}
	n := 1
	if g.rng.Intn(100) < 15 {
		n = 2 + g.rng.Intn(7) // a pipelined burst
	}
	st := step{Kind: "req", Conn: conn}
	g.conn = conn
	for k := 0; k < n; k++ {
		st.Reqs = append(st.Reqs, g.request(f))
	}
	return st
}

// learn keeps the keyed requests whose keys the model now holds.
func (g *gen) learn(f *fuzzer) {
	for i := len(g.pending) - 1; i >= 0; i-- {
		r := g.pending[i]
		p := f.resolvedParams(r)
		key, _ := str(p, "idempotency_key")
		if f.m.idem[r.Op+"\x00"+key] != nil {
			g.retries = append(g.retries, r)
		}
	}
	g.pending = g.pending[:0]
	if len(g.retries) > 50 {
		g.retries = g.retries[len(g.retries)-50:]
	}
}

func (g *gen) instanceID() string { return fmt.Sprintf("%%P%%i%d", g.rng.Intn(nInstances)) }

func (g *gen) machineName() string { return fmt.Sprintf("%%P%%m%d", g.rng.Intn(3)) }

// existing returns a modelled instance id (unresolved) and its model, or a
// random id.
func (g *gen) existing(f *fuzzer) (string, *instModel) {
	var ids []string
	for id := range f.m.insts {
		ids = append(ids, id)
	}
	if len(ids) == 0 || g.rng.Intn(10) == 0 {
		return g.instanceID(), nil
	}
	sort.Strings(ids)
	id := g.pick(ids)
	return strings.Replace(id, f.prefix, "%P%", 1), f.m.insts[id]
}

// existingMachine picks a modelled machine version (unresolved name).
func (g *gen) existingMachine(f *fuzzer) (string, int, bool) {
	var all []string
	for name, vs := range f.m.machines {
		for v := range vs {
			all = append(all, fmt.Sprintf("%s\x00%d", name, v))
		}
	}
	if len(all) == 0 {
		return "", 0, false
	}
	sort.Strings(all)
	name, v, _ := strings.Cut(g.pick(all), "\x00")
	var n int
	fmt.Sscan(v, &n)
	return strings.Replace(name, f.prefix, "%P%", 1), n, true
}

func (g *gen) key() string {
	g.keyN++
	return fmt.Sprintf("%%P%%k%d", g.keyN)
}

func (g *gen) payload() map[string]any {
	p := map[string]any{}
	if g.rng.Intn(4) > 0 {
		p["n"] = g.rng.Intn(14) - 3
	}
	if g.rng.Intn(3) == 0 {
		p[g.pick([]string{"a", "b", "tag"})] = g.pick([]string{"x", "y", "ü", ""})
	}
	return p
}

func (g *gen) spec() *machineSpec {
	ns := 2 + g.rng.Intn(3)
	s := &machineSpec{}
	for i := 0; i < ns; i++ {
		s.States = append(s.States, fmt.Sprintf("s%d", i))
	}
	s.Initial = "s0"
	for i := 0; i < 2+g.rng.Intn(6); i++ {
		t := transSpec{From: []string{g.pick(s.States)}, Event: g.pick([]string{"A", "B", "C"}), To: g.pick(s.States)}
		if g.rng.Intn(3) == 0 {
			t.From = append(t.From, g.pick(s.States))
		}
		if g.rng.Intn(2) == 0 {
			t.Guard = &guardSpec{Op: g.pick([]string{">", "<"}), K: float64(g.rng.Intn(8))}
		}
		s.Trans = append(s.Trans, t)
	}
	switch g.rng.Intn(12) {
	case 0:
		s.Initial = "nowhere"
	case 1:
		s.Trans = append(s.Trans, transSpec{From: []string{"s0"}, Event: "A", To: "nowhere"})
	}
	return s
}

func (g *gen) request(f *fuzzer) req {
	r := g.rng.Intn(100)
	switch {
	case r < 8:
		name := g.machineName()
		v := 1 + g.rng.Intn(3)
		res := strings.Replace(name, "%P%", f.prefix, 1)
		if old := f.m.machines[res][v]; old != nil && g.rng.Intn(2) == 0 {
			return req{Op: "PUT_MACHINE", Params: map[string]any{"machine": name, "version": v}, Spec: old} // identical re-put
		}
		return req{Op: "PUT_MACHINE", Params: map[string]any{"machine": name, "version": v}, Spec: g.spec()}
	case r < 22:
		p := map[string]any{"machine": g.machineName(), "version": 1 + g.rng.Intn(3)}
		if name, v, ok := g.existingMachine(f); ok && g.rng.Intn(5) > 0 {
			p["machine"], p["version"] = name, v
		}
		if g.rng.Intn(12) > 0 {
			p["instance_id"] = g.instanceID()
		}
		if g.rng.Intn(3) > 0 {
			p["initial_ctx"] = g.payload()
		} else if g.rng.Intn(10) == 0 {
			p["initial_ctx"] = []int{1}
		}
		return g.keyed(req{Op: "CREATE_INSTANCE", Params: p})
	case r < 28:
		if len(g.retries) > 0 {
			old := g.retries[g.rng.Intn(len(g.retries))]
			if g.rng.Intn(4) > 0 {
				return old // the same key and params: the original result
			}
			// The same key, different params: CONFLICT.
			p := map[string]any{}
			for k, v := range old.Params {
				p[k] = v
			}
			p["instance_id"] = g.instanceID() + "x"
			return req{Op: old.Op, Params: p}
		}
		fallthrough
	case r < 58:
		id, in := g.existing(f)
		p := map[string]any{"instance_id": id, "event": g.pick([]string{"A", "B", "C", "A"})}
		if g.rng.Intn(4) > 0 {
			p["payload"] = g.payload()
		}
		if in != nil && g.rng.Intn(6) == 0 {
			if g.rng.Intn(2) == 0 {
				p["expected_state"] = in.State
			} else {
				p["expected_state"] = "s9"
			}
		}
		if in != nil && g.rng.Intn(6) == 0 {
			p["expected_wal_offset"] = in.LastLSN + uint64(g.rng.Intn(2))
		}
		return g.keyed(req{Op: "APPLY_EVENT", Params: p})
	case r < 63:
		id, _ := g.existing(f)
		return g.keyed(req{Op: "DELETE_INSTANCE", Params: map[string]any{"instance_id": id}})
	case r < 73:
		mode := g.pick([]string{"atomic", "best_effort"})
		ops := []any{}
		for i := 0; i < 1+g.rng.Intn(5); i++ {
			m := g.request(f)
			switch m.Op {
			case "CREATE_INSTANCE", "APPLY_EVENT", "DELETE_INSTANCE":
			default:
				if g.rng.Intn(3) > 0 {
					continue
				}
				m = req{Op: "PING"} // not batchable: BAD_REQUEST
			}
			ops = append(ops, map[string]any{"op": m.Op, "params": m.Params})
		}
		return req{Op: "BATCH", Params: map[string]any{"mode": mode, "ops": ops}}
	case r < 81:
		id, _ := g.existing(f)
		return req{Op: "GET_INSTANCE", Params: map[string]any{"instance_id": id}}
	case r < 85:
		return req{Op: "LIST_INSTANCES", Params: map[string]any{"machine": g.machineName(), "limit": 1000}}
	case r < 88:
		return req{Op: "GET_MACHINE", Params: map[string]any{"machine": g.machineName(), "version": 1 + g.rng.Intn(3)}}
	case r < 91 && f.has("watch"):
		id, _ := g.existing(f)
		return req{Op: "WATCH_INSTANCE", Params: map[string]any{"instance_id": id}}
	case r < 93 && f.has("watch"):
		return g.unwatch(f)
	case r < 98:
		return g.badEnvelope()
	}
	return req{Op: "PING"}
}

// unwatch removes a subscription, mostly one this connection holds; less
// often one already removed, another connection's, or an id nobody holds.
// Fewer UNWATCHes than WATCHes: a connection's subscriptions grow to the
// server's limit and then hover around it.
func (g *gen) unwatch(f *fuzzer) req {
	var mine []int
	for ord, w := range f.all {
		if !w.removed && w.conn == g.conn {
			mine = append(mine, ord)
		}
	}
	ord := -1
	switch x := g.rng.Intn(10); {
	case x < 8 && len(mine) > 0:
		ord = mine[g.rng.Intn(len(mine))]
	case x < 9 && len(f.all) > 0:
		ord = g.rng.Intn(len(f.all)) // any: held here or elsewhere, or removed
	}
	return req{Op: "UNWATCH", Sub: &ord}
}

// keyed adds an idempotency key to a third of the requests.
func (g *gen) keyed(r req) req {
	if g.rng.Intn(3) == 0 {
		r.Params["idempotency_key"] = g.key()
		g.pending = append(g.pending, r)
	}
	return r
}

// badEnvelope is a well-framed request the server must answer with
// BAD_REQUEST and keep the connection.
func (g *gen) badEnvelope() req {
	id := fmt.Sprintf("bad%d", g.rng.Intn(1000))
	empty := ""
	cases := []req{
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"NO_SUCH_OP"}`, id), WantID: &id},
		{RawEnv: `{"id":17,"op":"PING"}`, WantID: &empty},
		{RawEnv: `{"op":"PING"}`, WantID: &empty},
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"PING","x":1}`, strings.Repeat("i", 300)), WantID: &empty},
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"GET_INSTANCE","params":{"instance_id":5}}`, id), WantID: &id},
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"GET_MACHINE","params":{"machine":"%%P%%m0","version":1.5}}`, id), WantID: &id},
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"APPLY_EVENT","params":{"instance_id":"%%P%%i0","event":"A","payload":[1]}}`, id), WantID: &id},
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"BATCH","params":{"mode":"sometimes","ops":[]}}`, id), WantID: &id},
		{RawEnv: fmt.Sprintf(`{"id":%q,"op":"CREATE_INSTANCE","params":"nope"}`, id), WantID: &id},
	}
	r := cases[g.rng.Intn(len(cases))]
	r.Op = "(invalid envelope)"
	return r
}

// hostile is a malformed frame for a throw-away connection.
func (g *gen) hostile() step {
	ping := []byte(`{"id":"h","op":"PING"}`)
	frame := func(magic string, version, flags uint16, n uint32, crc uint32, payload []byte) []byte {
		b := []byte(magic)
		b = binary.BigEndian.AppendUint16(b, version)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint32(b, n)
		b = binary.BigEndian.AppendUint32(b, crc)
		return append(b, payload...)
	}
	sum := func(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }
	bad := []byte("{\"id\":\"\xff\",\"op\":\"PING\"}")
	notJSON := []byte(`{"id":"h","op":`)
	cases := []step{
		{Frame: frame("RCPY", 1, 1, uint32(len(ping)), sum(ping), ping), Code: "BAD_REQUEST"},
		{Frame: frame("RCPX", 2, 1, uint32(len(ping)), sum(ping), ping), Code: "UNSUPPORTED_PROTOCOL"},
		{Frame: frame("RCPX", 1, 0x0101, uint32(len(ping)), sum(ping), ping), Code: "BAD_REQUEST"},
		{Frame: frame("RCPX", 1, 1, 0xFFFFFFF0, 0, nil), Code: "BAD_REQUEST"},
		{Frame: frame("RCPX", 1, 1, uint32(len(ping)), sum(ping)^0x55, ping), Code: "BAD_REQUEST"},
		{Frame: frame("RCPX", 1, 1, uint32(len(bad)), sum(bad), bad), Code: "BAD_REQUEST"},
		{Frame: frame("RCPX", 1, 1, uint32(len(notJSON)), sum(notJSON), notJSON), Code: "BAD_REQUEST"},
		{Frame: []byte("{\"id\":\"h\",\"op\":\"PING\"\xfe}\n"), Code: "BAD_REQUEST"},
	}
	st := cases[g.rng.Intn(len(cases))]
	st.Kind = "hostile"
	return st
}
