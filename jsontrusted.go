package main

// Trusted JSON walking: skipping over values that are already known to be
// valid JSON, without validating them again.
//
// The request scanner (paramObjectScanner) validates every byte it walks
// over. Bytes that came out of it, or that the server built itself (a
// merged ctx, a compacted payload), do not need a second validation, only
// their structure: where a string or a value ends. The functions here find
// that quickly (bytes.IndexByte for string ends, depth counting for
// containers) and trust the input for everything else.
//
// On valid JSON they agree exactly with the validating scanner
// (FuzzTrustedSkip checks it). On any other input they still never panic,
// never loop forever and only return indexes within the input, so that a
// bug elsewhere gives wrong bytes, not a crash; what they return for
// malformed input is otherwise unspecified.

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// jsonTrustedStop marks the bytes a container walk must look at: string
// starts and brackets.
var jsonTrustedStop = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// jsonTrustedDelim marks the bytes that end a number or a literal.
var jsonTrustedDelim = [256]bool{',': true, '}': true, ']': true, ' ': true, '\t': true, '\n': true, '\r': true}

// jsonSkipTrusted returns the index just past the JSON value starting at
// b[i] (no leading whitespace). b[i:] must start with a valid value;
// otherwise the result is some index in [i, len(b)] (len(b) if i is out of
// range).
func jsonSkipTrusted(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return jsonStringEndTrusted(b, i)
	case '{', '[':
		return jsonContainerEndTrusted(b, i)
	}
	for i < len(b) && !jsonTrustedDelim[b[i]] {
		i++
	}
	return i
}

// jsonStringTrusted delimits the string starting at b[i] in JSON known to
// be valid: the index just past it and whether it holds an escape. ok is
// false unless b[i] starts a terminated string (the walk went wrong).
func jsonStringTrusted(b []byte, i int) (end int, escaped, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false, false
	}
	end = jsonStringEndTrusted(b, i)
	if end-i < 2 || b[end-1] != '"' {
		return 0, false, false
	}
	return end, bytes.IndexByte(b[i+1:end-1], '\\') >= 0, true
}

// jsonStringEndTrusted returns the index just past the string starting at
// b[i] == '"' (len(b) if it is unterminated). A quote ends the string
// unless an odd number of backslashes precede it: in a valid string, a run
// of backslashes always starts at an escape boundary, so its parity tells
// whether the last one escapes the quote.
func jsonStringEndTrusted(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return len(b)
	}
	j := i + 1
	if j+8 <= len(b) {
		// Short strings (most keys) end within one 8-byte word: find its
		// first '"' or '\\'. The lowest flagged byte of each test is exact
		// (false positives only sit above a true match).
		const ones, highs = 0x0101010101010101, 0x8080808080808080
		x := binary.LittleEndian.Uint64(b[j:])
		q := x ^ (ones * '"')
		bs := x ^ (ones * '\\')
		if m := ((q-ones)&^q | (bs-ones)&^bs) & highs; m != 0 {
			if k := j + bits.TrailingZeros64(m)/8; b[k] == '"' {
				return k + 1
			}
		}
	}
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			break
		}
		q := j + k
		// Each backslash is counted at most once: the run before q lies
		// after the previous quote.
		p := q - 1
		for p > i && b[p] == '\\' {
			p--
		}
		if (q-1-p)%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
	return len(b)
}

// jsonContainerEndTrusted returns the index just past the object or array
// starting at b[i] (len(b) if it does not close), counting brackets outside
// strings.
func jsonContainerEndTrusted(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		c := b[i]
		if !jsonTrustedStop[c] {
			i++
			continue
		}
		switch c {
		case '"':
			i = jsonStringEndTrusted(b, i)
			continue
		case '{', '[':
			depth++
		default: // '}', ']'
			depth--
			if depth <= 0 {
				return i + 1
			}
		}
		i++
	}
	return len(b)
}

// jsonTrustedMembers iterates over the members of a JSON object that is
// known to be valid, like paramObjectScanner but without validating:
//
//	it, ok := jsonTrustedObject(obj)
//	for it.next() { ... it.key ... it.val ... }
//	if it.bad { ... }
//
// key is the member name unescaped exactly as paramObjectScanner does it
// (raw bytes when the escapes do not decode to valid UTF-8), val the raw
// bytes of the value; both stay valid after the iteration (an escaped key
// is a new slice, everything else aliases obj). bad is set when the walk
// met something a valid object cannot hold; it does not catch every
// malformation.
type jsonTrustedMembers struct {
	b   []byte
	pos int
	key []byte
	val []byte
	bad bool
}

// jsonTrustedObject starts iterating over obj. Like scanObject, empty (or
// all-whitespace) and null obj are an empty object; ok is false for any
// other value that is not an object.
func jsonTrustedObject(obj []byte) (it jsonTrustedMembers, ok bool) {
	i := paramSkipSpace(obj, 0)
	if i == len(obj) || paramIsNull(obj[i:]) {
		return jsonTrustedMembers{pos: -1}, true
	}
	if obj[i] != '{' {
		return jsonTrustedMembers{pos: -1}, false
	}
	return jsonTrustedMembers{b: obj, pos: i + 1}, true
}

// next advances to the next member; it returns false at the end of the
// object or when the walk goes wrong (then bad is set).
func (it *jsonTrustedMembers) next() bool {
	if it.pos < 0 {
		return false
	}
	b := it.b
	i := paramSkipSpace(b, it.pos)
	if i < len(b) && b[i] == ',' {
		i = paramSkipSpace(b, i+1)
	}
	if i < len(b) && b[i] == '}' && paramSkipSpace(b, i+1) == len(b) {
		return it.stop(false)
	}
	end, escaped, ok := jsonStringTrusted(b, i)
	if !ok {
		return it.stop(true)
	}
	key := b[i+1 : end-1]
	if escaped {
		// As paramObjectScanner: escapes that do not decode to valid
		// UTF-8 leave the raw bytes.
		if k, err := parseJSONString(b[i:end]); err == nil {
			key = []byte(k)
		}
	}
	i = paramSkipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return it.stop(true)
	}
	i = paramSkipSpace(b, i+1)
	end = jsonSkipTrusted(b, i)
	if end <= i {
		return it.stop(true)
	}
	it.key, it.val = key, b[i:end]
	it.pos = end
	return true
}

func (it *jsonTrustedMembers) stop(bad bool) bool {
	it.pos = -1
	it.key, it.val = nil, nil
	it.bad = bad
	return false
}
