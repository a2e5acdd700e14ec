package main

// Guard JSON scanning: bounds-safe delimiting of JSON values on arbitrary
// bytes (-1 means malformed), used by the guard evaluator and parser.

import "encoding/binary"

// guardNumberEnd returns the end of the strict JSON number starting at s[i]
// ("-"? int frac? exp?), or -1 if there is none.
func guardNumberEnd[T string | []byte](s T, i int) int {
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i >= len(s) {
		return -1
	}
	switch c := s[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i++
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
	default:
		return -1
	}
	if i < len(s) && s[i] == '.' {
		i++
		d := i
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		if i == d {
			return -1
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		d := i
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		if i == d {
			return -1
		}
	}
	return i
}

// guardPlainStringByte marks bytes that need no attention inside a JSON
// string (anything but '"', '\\' and control characters).
var guardPlainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// guardStringEnd returns the index after the JSON string starting at
// b[i] == '"', or -1 if it is malformed (unterminated, bad escape, raw
// control character).
func guardStringEnd(b []byte, i int) (int, bool) {
	escaped := false
	for i++; i < len(b); {
		// Skip plain bytes eight at a time: stop at a word that may hold a
		// '"', '\\' or control byte (the tests can give false positives,
		// never false negatives), then byte by byte.
		for i+8 <= len(b) {
			const lo, hi = 0x0101010101010101, 0x8080808080808080
			x := binary.LittleEndian.Uint64(b[i:])
			q := x ^ (lo * '"')
			bs := x ^ (lo * '\\')
			if ((x-lo*0x20)&^x|(q-lo)&^q|(bs-lo)&^bs)&hi != 0 {
				break
			}
			i += 8
		}
		for i < len(b) && guardPlainStringByte[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, escaped
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return -1, escaped
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := guardHex4(b, i+2); !ok {
					return -1, escaped
				}
				i += 6
			default:
				return -1, escaped
			}
		case c < 0x20:
			return -1, escaped
		default:
			i++
		}
	}
	return -1, escaped
}

func guardSkipLiteral(b []byte, i int, lit string) int {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// guardSkipScalar skips the non-container value at b[i].
func guardSkipScalar(b []byte, i int) int {
	switch b[i] {
	case '"':
		e, _ := guardStringEnd(b, i)
		return e
	case 't':
		return guardSkipLiteral(b, i, "true")
	case 'f':
		return guardSkipLiteral(b, i, "false")
	case 'n':
		return guardSkipLiteral(b, i, "null")
	}
	return guardNumberEnd(b, i)
}

// guardSkipValue validates the JSON value starting at b[i] (no leading
// whitespace) and returns the index after it, or -1.
func guardSkipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	if c := b[i]; c != '{' && c != '[' {
		return guardSkipScalar(b, i)
	}
	// Most values nest less than 64 deep: try with a one-word stack first.
	var stack [1]uint64
	if e := guardSkipContainer(b, i, stack[:]); e != guardTooDeep {
		return e
	}
	return guardSkipDeepContainer(b, i)
}

// guardTooDeep is returned by guardSkipContainer when its stack is too small.
const guardTooDeep = -2

// guardSkipDeepContainer is guardSkipContainer with the full-size stack.
//
//go:noinline
func guardSkipDeepContainer(b []byte, i int) int {
	var stack [(guardCtxMaxDepth + 63) / 64]uint64
	if e := guardSkipContainer(b, i, stack[:]); e >= 0 {
		return e
	}
	return -1
}

// guardSkipKey skips `"key" :` at b[i] and returns the index after the colon.
func guardSkipKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	e, _ := guardStringEnd(b, i)
	if e < 0 {
		return -1
	}
	e = paramSkipSpace(b, e)
	if e >= len(b) || b[e] != ':' {
		return -1
	}
	return e + 1
}

// guardSkipContainer validates the object or array at b[i] iteratively,
// keeping a bit stack of open containers (1 = object) in stack. It returns
// guardTooDeep if stack is too small, -1 if the value is malformed or nests
// deeper than guardCtxMaxDepth.
func guardSkipContainer(b []byte, i int, stack []uint64) int {
	depth := 0
value:
	for {
		i = paramSkipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		if c := b[i]; c == '{' || c == '[' {
			if depth >= guardCtxMaxDepth {
				return -1
			}
			if depth >= len(stack)*64 {
				return guardTooDeep
			}
			obj := c == '{'
			if obj {
				stack[depth>>6] |= 1 << (depth & 63)
			} else {
				stack[depth>>6] &^= 1 << (depth & 63)
			}
			depth++
			i = paramSkipSpace(b, i+1)
			if i >= len(b) {
				return -1
			}
			if (obj && b[i] == '}') || (!obj && b[i] == ']') {
				i++
				depth--
			} else {
				if obj {
					if i = guardSkipKey(b, i); i < 0 {
						return -1
					}
				}
				continue value
			}
		} else if i = guardSkipScalar(b, i); i < 0 {
			return -1
		}
		// After a complete value: close containers or move to the next item.
		for {
			if depth == 0 {
				return i
			}
			i = paramSkipSpace(b, i)
			if i >= len(b) {
				return -1
			}
			d := depth - 1
			obj := stack[d>>6]&(1<<(d&63)) != 0
			switch b[i] {
			case ',':
				i = paramSkipSpace(b, i+1)
				if obj {
					if i = guardSkipKey(b, i); i < 0 {
						return -1
					}
				}
				continue value
			case '}':
				if !obj {
					return -1
				}
			case ']':
				if obj {
					return -1
				}
			default:
				return -1
			}
			i++
			depth--
		}
	}
}
