package main

// Guard evaluation: a compiled guard run directly on the raw JSON bytes of an
// instance context, with the value lookups and string comparisons it needs.

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// eval evaluates the guard against ctx, the instance context as raw JSON.
// Anything but an object makes every path null; unreadable (malformed)
// values are null. A nil guard passes. eval never panics.
func (g *guard) eval(ctx []byte) bool {
	if g == nil || g.root == nil {
		return true
	}
	return g.root.eval(ctx, false)
}

// evalValid is eval for a ctx known to be valid JSON, as every stored
// instance ctx is (built from validated requests, merged by ctxMerge): the
// walk to the looked-up keys only delimits values (jsontrusted.go) instead
// of validating them again. The result is eval's.
func (g *guard) evalValid(ctx []byte) bool {
	if g == nil || g.root == nil {
		return true
	}
	return g.root.eval(ctx, true)
}

func (n *guardNode) eval(ctx []byte, valid bool) bool {
	switch n.kind {
	case guardOr:
		for _, k := range n.kids {
			if k.eval(ctx, valid) {
				return true
			}
		}
		return false
	case guardAnd:
		for _, k := range n.kids {
			if !k.eval(ctx, valid) {
				return false
			}
		}
		return true
	case guardNot:
		return !n.kids[0].eval(ctx, valid)
	case guardTruthy:
		return guardResolve(ctx, n.path, valid).truthy()
	case guardCmp:
		v := guardResolve(ctx, n.path, valid)
		switch n.op {
		case guardOpEq:
			return v.equal(&n.lit)
		case guardOpNe:
			return !v.equal(&n.lit)
		}
		if v.typ != guardTNumber {
			return false
		}
		f := v.number()
		switch n.op {
		case guardOpGt:
			return f > n.lit.n
		case guardOpGe:
			return f >= n.lit.n
		case guardOpLt:
			return f < n.lit.n
		case guardOpLe:
			return f <= n.lit.n
		}
	}
	return false
}

// guardVal is a value found in ctx: its type and raw JSON text, or for a
// ".length" pseudo-field a computed number.
type guardVal struct {
	typ      guardType
	raw      []byte
	computed bool
	n        float64
}

func (v guardVal) number() float64 {
	if v.computed {
		return v.n
	}
	f, _ := strconv.ParseFloat(string(v.raw), 64) // validated by guardNumberEnd; ±Inf on overflow
	return f
}

func (v guardVal) truthy() bool {
	switch v.typ {
	case guardTBool:
		return v.raw[0] == 't'
	case guardTNumber:
		return v.number() != 0
	case guardTString:
		return len(v.raw) > 2
	case guardTArray, guardTObject:
		i := paramSkipSpace(v.raw, 1)
		return i < len(v.raw) && v.raw[i] != ']' && v.raw[i] != '}'
	}
	return false
}

func (v guardVal) equal(l *guardLit) bool {
	if v.typ != l.typ {
		return false
	}
	switch l.typ {
	case guardTNull:
		return true
	case guardTBool:
		return (v.raw[0] == 't') == l.b
	case guardTNumber:
		return v.number() == l.n
	case guardTString:
		raw := v.raw[1 : len(v.raw)-1]
		return guardStringEqual(raw, bytes.IndexByte(raw, '\\') >= 0, l.s)
	}
	return false // arrays and objects never equal anything
}

func guardTypeOf(c byte) guardType {
	switch c {
	case '{':
		return guardTObject
	case '[':
		return guardTArray
	case '"':
		return guardTString
	case 't', 'f':
		return guardTBool
	case 'n':
		return guardTNull
	}
	return guardTNumber
}

// guardResolve finds the value at ctx.<path>. Missing keys, non-object
// intermediates and unreadable JSON give null. A final "length" on an array
// or string gives its element / code point count (a real "length" key of an
// object wins, as objects are looked up normally).
func guardResolve(ctx []byte, path []string, valid bool) guardVal {
	s := paramSkipSpace(ctx, 0)
	if s >= len(ctx) || ctx[s] != '{' {
		return guardVal{}
	}
	e := -1
	for k, name := range path {
		switch ctx[s] {
		case '{':
			vs, ve, end := guardObjectGet(ctx, s, name, valid)
			if ve < 0 || (k == 0 && paramSkipSpace(ctx, end) != len(ctx)) {
				return guardVal{} // missing, unreadable, or trailing garbage after ctx
			}
			s, e = vs, ve
			continue
		case '[':
			if name == "length" && k == len(path)-1 {
				return guardVal{typ: guardTNumber, computed: true, n: float64(guardArrayLen(ctx[s:e]))}
			}
		case '"':
			if name == "length" && k == len(path)-1 {
				return guardVal{typ: guardTNumber, computed: true, n: float64(guardStringLen(ctx[s+1 : e-1]))}
			}
		}
		return guardVal{}
	}
	return guardVal{typ: guardTypeOf(ctx[s]), raw: ctx[s:e]}
}

// guardObjectGet looks up key in the object starting at b[i] == '{' and
// returns the span of its value (the last duplicate key wins) and the index
// after the object. ve is -1 when the key is missing or the object cannot be
// read to its end (an unreadable object is null as a whole). valid: b is
// known to be valid JSON, so strings and values are only delimited.
func guardObjectGet(b []byte, i int, key string, valid bool) (vs, ve, end int) {
	vs, ve = -1, -1
	i = paramSkipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return -1, -1, i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1, -1, -1
		}
		var ke int
		var escaped bool
		if valid {
			var ok bool
			if ke, escaped, ok = jsonStringTrusted(b, i); !ok {
				return -1, -1, -1
			}
		} else if ke, escaped = guardStringEnd(b, i); ke < 0 {
			return -1, -1, -1
		}
		match := guardStringEqual(b[i+1:ke-1], escaped, key)
		i = paramSkipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return -1, -1, -1
		}
		s := paramSkipSpace(b, i+1)
		var e int
		if valid {
			if e = jsonSkipTrusted(b, s); e <= s {
				return -1, -1, -1
			}
		} else if e = guardSkipValue(b, s); e < 0 {
			return -1, -1, -1
		}
		if match {
			vs, ve = s, e
		}
		i = paramSkipSpace(b, e)
		if i >= len(b) {
			return -1, -1, -1
		}
		if b[i] == '}' {
			return vs, ve, i + 1
		}
		if b[i] != ',' {
			return -1, -1, -1
		}
		i = paramSkipSpace(b, i+1)
	}
}

// guardArrayLen counts the elements of the valid JSON array b.
func guardArrayLen(b []byte) int {
	i := paramSkipSpace(b, 1)
	if i >= len(b) || b[i] == ']' {
		return 0
	}
	n := 0
	for i < len(b) {
		e := guardSkipValue(b, i)
		if e < 0 {
			return n
		}
		n++
		i = paramSkipSpace(b, e)
		if i >= len(b) || b[i] != ',' {
			return n
		}
		i = paramSkipSpace(b, i+1)
	}
	return n
}

// guardStringLen counts the code points of the JSON string body raw.
func guardStringLen(raw []byte) int {
	n := 0
	for i := 0; i < len(raw); {
		if raw[i] == '\\' {
			_, i = guardUnescapeAt(raw, i)
		} else if raw[i] < utf8.RuneSelf {
			i++
		} else {
			_, w := utf8.DecodeRune(raw[i:])
			i += w
		}
		n++
	}
	return n
}

// guardStringEqual reports whether the JSON string body raw (escapes not yet
// decoded; escaped tells whether it has any) equals s.
func guardStringEqual(raw []byte, escaped bool, s string) bool {
	if !escaped {
		return string(raw) == s
	}
	j := 0
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			if j >= len(s) || s[j] != raw[i] {
				return false
			}
			i++
			j++
			continue
		}
		var r rune
		r, i = guardUnescapeAt(raw, i)
		if r < utf8.RuneSelf {
			if j >= len(s) || s[j] != byte(r) {
				return false
			}
			j++
			continue
		}
		var buf [utf8.UTFMax]byte
		w := utf8.EncodeRune(buf[:], r)
		if len(s)-j < w || s[j:j+w] != string(buf[:w]) {
			return false
		}
		j += w
	}
	return j == len(s)
}

// guardUnescapeAt decodes the escape sequence at raw[i] == '\\' and returns
// the rune and the index after it. Malformed escapes (not expected after
// guardStringEnd) decode as U+FFFD and consume what is there.
func guardUnescapeAt(raw []byte, i int) (rune, int) {
	if i+1 >= len(raw) {
		return utf8.RuneError, len(raw)
	}
	switch raw[i+1] {
	case '"', '\\', '/':
		return rune(raw[i+1]), i + 2
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		r, n := guardUnescapeU(raw, i)
		if n == 0 {
			return utf8.RuneError, i + 2
		}
		return r, i + n
	}
	return utf8.RuneError, i + 2
}

// guardUnescapeU decodes "\uXXXX" (or a surrogate pair "\uXXXX\uXXXX") at
// s[i]; n is the number of bytes consumed, 0 if malformed. Lone surrogates
// decode as U+FFFD, like encoding/json.
func guardUnescapeU[T string | []byte](s T, i int) (r rune, n int) {
	hi, ok := guardHex4(s, i+2)
	if !ok {
		return 0, 0
	}
	if hi < 0xD800 || hi > 0xDFFF {
		return hi, 6
	}
	if hi <= 0xDBFF && i+7 < len(s) && s[i+6] == '\\' && s[i+7] == 'u' {
		if lo, ok := guardHex4(s, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
			return 0x10000 + (hi-0xD800)<<10 + (lo - 0xDC00), 12
		}
	}
	return utf8.RuneError, 6
}

func guardHex4[T string | []byte](s T, i int) (rune, bool) {
	if i < 0 || i+4 > len(s) {
		return 0, false
	}
	var r rune
	for k := i; k < i+4; k++ {
		c := s[k]
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
