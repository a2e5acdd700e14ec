package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// machineVersion is a compiled machine definition: states interned,
// transitions indexed by (state, event), guards compiled once at PUT.
type machineVersion struct {
	name    string
	version uint32
	initial string
	states  map[string]string // interning: state name -> the one shared string
	trans   map[transKey][]transition
	// timed lists, per state, the transitions out of it that fire by
	// themselves (after_ms), in definition order.
	timed    map[string][]timedTransition
	def      []byte // canonical definition JSON (what GET_MACHINE returns)
	checksum string // SHA-256 hex of def
	lsn      uint64 // record that registered it
}

type transKey struct{ from, event string }

// timedTransition is a transition with after_ms: it fires by itself that
// long after an instance enters its from state.
type timedTransition struct {
	event   string
	to      string
	afterMS int64
}

// maxAfterMS is the longest timer delay: 365 days.
const maxAfterMS = 365 * 24 * 3600 * 1000

// transition is one candidate for a (state, event); candidates are tried
// in definition order and the first whose guard passes wins.
type transition struct {
	event string // the machine's own copy: records keep it, not the request's
	to    string
	guard *guard // nil: always passes
}

// compileMachine validates a definition and compiles it. Every problem is a
// BAD_REQUEST naming the offending part of the definition.
func compileMachine(name string, version uint32, raw json.RawMessage) (*machineVersion, *rcpError) {
	bad := func(field, format string, args ...any) *rcpError {
		return badParam(field, "invalid machine definition: "+format, args...)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, bad("definition", "definition must be a JSON object")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, bad("definition", "definition is not valid JSON: %v", err)
	}
	for _, f := range []string{"states", "initial", "transitions"} {
		if v, ok := top[f]; !ok || isJSONNull(v) {
			what := ""
			if f == "transitions" {
				what = " (it may be an empty list)"
			}
			return nil, bad("definition."+f, "missing required field '%s'%s", f, what)
		}
	}
	var states []string
	if err := json.Unmarshal(orNull(top["states"]), &states); err != nil || states == nil {
		return nil, bad("definition.states", "'states' must be an array of strings")
	}
	if len(states) == 0 {
		return nil, bad("definition.states", "'states' must not be empty")
	}
	mv := &machineVersion{name: name, version: version, states: make(map[string]string, len(states)), trans: map[transKey][]transition{}}
	for i, s := range states {
		if s == "" {
			return nil, bad(fmt.Sprintf("definition.states[%d]", i), "state names must not be empty")
		}
		if _, dup := mv.states[s]; !dup {
			mv.states[s] = s
		}
	}
	var initial string
	if err := json.Unmarshal(orNull(top["initial"]), &initial); err != nil || top["initial"] == nil || isJSONNull(top["initial"]) {
		return nil, bad("definition.initial", "'initial' must be a string")
	}
	if _, ok := mv.states[initial]; !ok {
		return nil, bad("definition.initial", "initial state '%s' is not in states", initial)
	}
	mv.initial = mv.states[initial]

	var rawTrans []json.RawMessage
	if err := json.Unmarshal(top["transitions"], &rawTrans); err != nil {
		return nil, bad("definition.transitions", "'transitions' must be an array")
	}
	canon := make([]byte, 0, len(raw)+32)
	canon = append(canon, `{"states":[`...)
	for i, s := range states {
		if i > 0 {
			canon = append(canon, ',')
		}
		canon = encAppendString(canon, s)
	}
	canon = append(canon, `],"initial":`...)
	canon = encAppendString(canon, initial)
	canon = append(canon, `,"transitions":[`...)
	for i, rt := range rawTrans {
		field := fmt.Sprintf("definition.transitions[%d]", i)
		var t struct {
			From  json.RawMessage `json:"from"`
			Event *string         `json:"event"`
			To    *string         `json:"to"`
			Guard *string         `json:"guard"`
			After json.RawMessage `json:"after_ms"`
		}
		if err := json.Unmarshal(rt, &t); err != nil || bytes.TrimSpace(rt)[0] != '{' {
			return nil, bad(field, "each transition must be an object with string 'from', 'event' and 'to'")
		}
		var froms []string
		var one string
		switch {
		case json.Unmarshal(t.From, &one) == nil && !isJSONNull(t.From):
			froms = []string{one}
		case json.Unmarshal(t.From, &froms) == nil && froms != nil:
		default:
			return nil, bad(field+".from", "'from' must be a state name or an array of state names")
		}
		if t.Event == nil || *t.Event == "" {
			return nil, bad(field+".event", "'event' must be a non-empty string")
		}
		if t.To == nil {
			return nil, bad(field+".to", "'to' must be a string")
		}
		to, ok := mv.states[*t.To]
		if !ok {
			return nil, bad(field+".to", "transition target '%s' is not in states", *t.To)
		}
		var g *guard
		if t.Guard != nil {
			var err error
			g, err = compileGuard(*t.Guard)
			if err != nil {
				e := bad(field+".guard", "invalid guard %q: %v", *t.Guard, err)
				if ge, ok := err.(*guardError); ok {
					e.with("position", ge.Pos)
				}
				return nil, e
			}
		}
		var after int64
		if t.After != nil {
			v := string(bytes.TrimSpace(t.After))
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 || n > maxAfterMS {
				return nil, bad(field+".after_ms", "'after_ms' must be an integer from 1 to %d (365 days), got %s", int64(maxAfterMS), v)
			}
			after = n
		}
		for _, f := range froms {
			from, ok := mv.states[f]
			if !ok {
				return nil, bad(field+".from", "transition source '%s' is not in states", f)
			}
			k := transKey{from, *t.Event}
			mv.trans[k] = append(mv.trans[k], transition{event: *t.Event, to: to, guard: g})
			if after > 0 {
				if mv.timed == nil {
					mv.timed = map[string][]timedTransition{}
				}
				mv.timed[from] = append(mv.timed[from], timedTransition{event: *t.Event, to: to, afterMS: after})
			}
		}
		if i > 0 {
			canon = append(canon, ',')
		}
		canon = append(canon, `{"from":[`...)
		for j, f := range froms {
			if j > 0 {
				canon = append(canon, ',')
			}
			canon = encAppendString(canon, f)
		}
		canon = append(canon, `],"event":`...)
		canon = encAppendString(canon, *t.Event)
		canon = append(canon, `,"to":`...)
		canon = encAppendString(canon, *t.To)
		if t.Guard != nil {
			canon = append(canon, `,"guard":`...)
			canon = encAppendString(canon, *t.Guard)
		}
		if after > 0 {
			// Only when present, so definitions without timers keep
			// their checksums.
			canon = append(canon, `,"after_ms":`...)
			canon = strconv.AppendInt(canon, after, 10)
		}
		canon = append(canon, '}')
	}
	canon = append(canon, ']')
	if m, ok := top["meta"]; ok && !isJSONNull(m) {
		canon = append(canon, `,"meta":`...)
		var okc bool
		if canon, okc = canonAppend(canon, m); !okc {
			return nil, bad("definition.meta", "'meta' is not valid JSON")
		}
	}
	canon = append(canon, '}')
	sum := sha256.Sum256(canon)
	mv.def = canon
	mv.checksum = hex.EncodeToString(sum[:])
	return mv, nil
}

func orNull(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return json.RawMessage("null")
	}
	return raw
}

func isJSONNull(raw []byte) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
