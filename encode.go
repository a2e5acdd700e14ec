package main

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"unicode/utf8"
)

// This file holds the JSON output side shared by responses, records and
// machine checksums: one string escaper, one canonical form, one merge.

// encAppendString appends s as a JSON string with the escaping rules of the
// reference server: short escapes for \b \f \n \r \t, \u00xx for other
// control characters, everything else (non-ASCII, '<', '>', '&') raw.
// Invalid UTF-8 is replaced by U+FFFD so the output is always valid JSON.
func encAppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, "\ufffd"...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			const hex = "0123456789abcdef"
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// encMarshal renders v as compact JSON without HTML escaping. It is used for
// results and records, whose shapes are fixed Go structs.
func encMarshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Every value passed here is built from validated data; a failure is
		// a programming error, not bad input.
		panic("encode: " + err.Error())
	}
	b := buf.Bytes()
	return b[:len(b)-1] // drop Encoder's newline
}

// canonAppend appends the canonical form of a JSON value: compact, object
// keys sorted bytewise at every level, strings escaped by encAppendString,
// numbers as written. It returns false if raw is not valid JSON.
func canonAppend(dst []byte, raw []byte) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return dst, false
	}
	if dec.More() {
		return dst, false
	}
	return canonValue(dst, v), true
}

func canonValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, x)
	case json.Number:
		return append(dst, x...)
	case string:
		return encAppendString(dst, x)
	case []any:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = canonValue(dst, e)
		}
		return append(dst, ']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = encAppendString(dst, k)
			dst = append(dst, ':')
			dst = canonValue(dst, x[k])
		}
		return append(dst, '}')
	}
	panic("canonValue: unexpected type")
}

// ctxMerge returns ctx with every top-level key of payload overwritten
// (a shallow merge; nested objects are replaced whole, null sets a key to
// null). Both are compact JSON objects (compactJSON), already validated. It
// works on the bytes: members keep their order (new keys are appended),
// values are copied as they are, and a repeated key keeps only its last
// value, so the result is compact, valid and deterministic.
func ctxMerge(ctx, payload []byte) []byte {
	if len(payload) == 0 {
		return ctx
	}
	type member struct{ key, val []byte }
	var buf [16]member
	members := buf[:0]
	var index map[string]int // built once objects get big
	add := func(key, val []byte) {
		if index == nil && len(members) > 16 {
			index = make(map[string]int, 2*len(members))
			for i, m := range members {
				index[string(m.key)] = i
			}
		}
		if index != nil {
			if i, ok := index[string(key)]; ok {
				members[i].val = val
				return
			}
			index[string(key)] = len(members)
		} else {
			for i := range members {
				if string(members[i].key) == string(key) {
					members[i].val = val
					return
				}
			}
		}
		members = append(members, member{key, val})
	}
	for _, obj := range [][]byte{ctx, payload} {
		// Both were validated before (the request scanner, or this
		// function's own output): walk them without validating again.
		it, ok := jsonTrustedObject(obj)
		if !ok {
			panic("ctxMerge: not an object")
		}
		for it.next() {
			// Keys alias obj unless they had escapes; either way they
			// outlive the iterator.
			add(it.key, it.val)
		}
		if it.bad {
			panic("ctxMerge: invalid JSON passed validation")
		}
	}
	if len(members) == 0 && len(ctx) > 0 && string(ctx) == "{}" {
		return ctx
	}
	out := make([]byte, 0, len(ctx)+len(payload))
	out = append(out, '{')
	for i, m := range members {
		if i > 0 {
			out = append(out, ',')
		}
		out = encAppendString(out, string(m.key))
		out = append(out, ':')
		out = append(out, m.val...)
	}
	return append(out, '}')
}

// compactJSON returns v (a validated JSON value the caller owns) without
// insignificant whitespace, reusing v when it has none.
func compactJSON(v []byte) []byte {
	i := jsonSpaceOutsideStrings(v)
	if i < 0 {
		return v
	}
	dst := append(make([]byte, 0, len(v)), v[:i]...)
	return ctxAppendCompact(dst, v[i:])
}

// jsonSpaceOutsideStrings returns the index of the first JSON whitespace
// byte of v that is not inside a string, or -1. Strings are jumped over as
// ctxAppendCompact reads them (a backslash escapes the next byte), so v
// without such whitespace is exactly what ctxAppendCompact would produce.
func jsonSpaceOutsideStrings(v []byte) int {
	for i := 0; i < len(v); {
		switch v[i] {
		case '"':
			i = jsonStringEndTrusted(v, i)
		case ' ', '\t', '\n', '\r':
			return i
		default:
			i++
		}
	}
	return -1
}

// ctxAppendCompact appends a valid JSON value, starting outside any string,
// without insignificant whitespace.
func ctxAppendCompact(dst, v []byte) []byte {
	inStr := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inStr:
			dst = append(dst, c)
			if c == '\\' && i+1 < len(v) {
				i++
				dst = append(dst, v[i])
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
			dst = append(dst, c)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// ctxCanonical returns the canonical form of a validated JSON object, or
// "{}" for an empty one.
func ctxCanonical(raw []byte) []byte {
	if len(raw) == 0 {
		return []byte("{}")
	}
	out, ok := canonAppend(nil, raw)
	if !ok {
		panic("ctxCanonical: invalid JSON passed validation")
	}
	return out
}
