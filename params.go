package main

// Runtime helpers for the generated parameter decoders in ops_gen.go.
//
// The decoders never use reflection or encoding/json.Unmarshal: scanObject
// walks the top-level members of the request's params object (validating
// the JSON as it goes) and the param* helpers turn one raw member value into
// a typed Go value, reporting problems with badParam so that the field is
// named in both the message and details.field.
//
// Layers:
//   - scanObject / paramObjectScanner: iterate over key/value pairs;
//   - parseJSONString, parseJSONBool, parseUint, parseStringList,
//     parseRawList, paramIsObject, paramIsNull: typed parsing of one value,
//     returning plain errors;
//   - paramAbsent, paramMissing, paramString, paramBool, paramU32,
//     paramU64, paramJSON, paramObject, paramStringList, paramJSONList:
//     what the generated code calls; they return *rcpError.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// paramMaxDepth bounds the nesting of arrays and objects the scanner
// accepts, so that a hostile request cannot exhaust the stack.
const paramMaxDepth = 10000

// paramSyntaxError is malformed JSON at a byte offset of the scanned input.
type paramSyntaxError struct {
	off int
	msg string
}

func (e *paramSyntaxError) Error() string {
	return e.msg + " at offset " + strconv.Itoa(e.off)
}

func paramSyntaxErr(off int, msg string) error {
	return &paramSyntaxError{off: off, msg: msg}
}

// Errors of the typed parsers. A malformed value gives a *paramSyntaxError
// instead.
var (
	errParamNotString   = errors.New("value is not a JSON string")
	errParamInvalidUTF8 = errors.New("string is not valid UTF-8")
	errParamNotArray    = errors.New("value is not a JSON array")
	errParamTooMany     = errors.New("array has too many items")
)

// paramSkipSpace returns the index of the first non-whitespace byte of b at
// or after i (len(b) if there is none).
func paramSkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// paramTrim strips JSON whitespace from both ends of b.
func paramTrim(b []byte) []byte {
	i := paramSkipSpace(b, 0)
	j := len(b)
	for j > i {
		switch b[j-1] {
		case ' ', '\t', '\n', '\r':
			j--
			continue
		}
		break
	}
	return b[i:j]
}

// paramScanString scans the JSON string starting at b[i] == '"'. It returns
// the index just past the closing quote and whether the string contains
// escapes. Escapes and control characters are validated; UTF-8 is not (the
// typed parsers check it).
func paramScanString(b []byte, i int) (end int, escaped bool, err error) {
	if i >= len(b) {
		return i, false, paramSyntaxErr(i, "unexpected end of input")
	}
	if b[i] != '"' {
		return i, false, paramSyntaxErr(i, "expected string")
	}
	i++
	for i < len(b) {
		// Skip plain bytes eight at a time (strings are most of a request),
		// then straight to the first special byte of the eight.
		if i+8 <= len(b) {
			m := paramSpecialMask(binary.LittleEndian.Uint64(b[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return i, escaped, paramSyntaxErr(i, "unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := paramHex4(b, i+2); !ok {
					return i, escaped, paramSyntaxErr(i, "invalid \\u escape")
				}
				i += 6
			default:
				return i, escaped, paramSyntaxErr(i, "invalid escape")
			}
		case c < 0x20:
			return i, escaped, paramSyntaxErr(i, "control character in string")
		default:
			i++
		}
	}
	return i, escaped, paramSyntaxErr(i, "unterminated string")
}

// paramSpecialMask is non-zero when any of the 8 bytes in x (little-endian)
// is '"', '\\' or a control character (< 0x20): the bytes a string scan
// must stop at. Its lowest set bit is the high bit of the first such byte;
// bits above it can be false positives (a borrow carries into the next
// byte), so only the lowest is meaningful.
func paramSpecialMask(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := x ^ (ones * '"')
	bs := x ^ (ones * '\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (x-ones*0x20)&^x) & highs
}

// paramHex4 decodes the four hex digits at b[i:i+4].
func paramHex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// paramScanNumber scans the JSON number starting at b[i].
func paramScanNumber(b []byte, i int) (int, error) {
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return i, paramSyntaxErr(start, "invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return i, paramSyntaxErr(start, "invalid number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return i, paramSyntaxErr(start, "invalid number")
		}
	}
	return i, nil
}

// paramSkipValue validates the JSON value starting at b[i] (no leading
// whitespace) and returns the index just past it.
func paramSkipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, paramSyntaxErr(i, "unexpected end of input")
	}
	switch c := b[i]; c {
	case '"':
		end, _, err := paramScanString(b, i)
		return end, err
	case '{', '[':
		if depth >= paramMaxDepth {
			return i, paramSyntaxErr(i, "nested too deeply")
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = paramSkipSpace(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1, nil
		}
		for {
			if c == '{' {
				end, _, err := paramScanString(b, i)
				if err != nil {
					return end, err
				}
				i = paramSkipSpace(b, end)
				if i >= len(b) || b[i] != ':' {
					return i, paramSyntaxErr(i, "expected ':'")
				}
				i = paramSkipSpace(b, i+1)
			}
			end, err := paramSkipValue(b, i, depth+1)
			if err != nil {
				return end, err
			}
			i = paramSkipSpace(b, end)
			if i >= len(b) {
				return i, paramSyntaxErr(i, "unexpected end of input")
			}
			if b[i] == closer {
				return i + 1, nil
			}
			if b[i] != ',' {
				return i, paramSyntaxErr(i, "expected ',' or '"+string(closer)+"'")
			}
			i = paramSkipSpace(b, i+1)
		}
	case 't':
		return paramSkipLiteral(b, i, "true")
	case 'f':
		return paramSkipLiteral(b, i, "false")
	case 'n':
		return paramSkipLiteral(b, i, "null")
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return paramScanNumber(b, i)
		}
		return i, paramSyntaxErr(i, "invalid character "+strconv.QuoteRune(rune(c)))
	}
}

func paramSkipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, paramSyntaxErr(i, "invalid literal")
	}
	return i + len(lit), nil
}

// paramJSONValid reports whether b is exactly one valid JSON value, with
// optional surrounding whitespace. It does not check UTF-8.
func paramJSONValid(b []byte) bool {
	i := paramSkipSpace(b, 0)
	end, err := paramSkipValue(b, i, 0)
	return err == nil && paramSkipSpace(b, end) == len(b)
}

// paramObjectScanner iterates over the top-level members of a JSON object.
// Use it as:
//
//	sc, err := scanObject(raw)
//	if err != nil { ... }
//	for sc.next() {
//		switch string(sc.key) { ... sc.val ... }
//	}
//	if sc.err != nil { ... }
//
// key is the unescaped member name and val the raw bytes of its value
// (trimmed, validated); both alias raw (except escaped keys) and are only
// valid until the next call.
type paramObjectScanner struct {
	data    []byte
	pos     int
	n       int
	done    bool
	trusted bool // data is known to be valid JSON: delimit, do not validate
	key     []byte
	val     []byte
	err     *rcpError
}

// scanObject starts scanning raw as the params object of a request. nil,
// empty (or all-whitespace) and null raw mean an empty object; any other
// value that is not an object is a BAD_REQUEST for field "params".
func scanObject(raw []byte) (paramObjectScanner, *rcpError) {
	i := paramSkipSpace(raw, 0)
	if i == len(raw) || paramIsNull(raw[i:]) {
		return paramObjectScanner{done: true}, nil
	}
	if raw[i] != '{' {
		return paramObjectScanner{done: true}, badParam("params", "params must be a JSON object")
	}
	return paramObjectScanner{data: raw, pos: i + 1}, nil
}

// scanParams is scanObject, or with trusted set, a scanner that only
// delimits members (jsontrusted.go) for params the request scanner in
// conn.handle has validated already: every byte of a request is then
// checked once, not once per layer. Anything else must use scanObject.
func scanParams(raw []byte, trusted bool) (paramObjectScanner, *rcpError) {
	sc, err := scanObject(raw)
	sc.trusted = trusted
	return sc, err
}

// next advances to the next member; it returns false at the end of the
// object or on malformed JSON (then err is set).
func (s *paramObjectScanner) next() bool {
	if s.done {
		return false
	}
	b := s.data
	i := paramSkipSpace(b, s.pos)
	if i >= len(b) {
		return s.fail(paramSyntaxErr(i, "unexpected end of input"))
	}
	if b[i] == '}' {
		return s.finish(i + 1)
	}
	if s.n > 0 {
		if i >= len(b) || b[i] != ',' {
			return s.fail(paramSyntaxErr(i, "expected ',' or '}'"))
		}
		i = paramSkipSpace(b, i+1)
	}
	var end int
	var escaped bool
	var err error
	if s.trusted {
		var ok bool
		if end, escaped, ok = jsonStringTrusted(b, i); !ok {
			return s.fail(paramSyntaxErr(i, "expected string"))
		}
	} else if end, escaped, err = paramScanString(b, i); err != nil {
		return s.fail(err)
	}
	key := b[i+1 : end-1]
	if escaped {
		// Invalid UTF-8 or lone surrogates cannot match a known key;
		// keep the raw bytes then.
		if k, err := parseJSONString(b[i:end]); err == nil {
			key = []byte(k)
		}
	}
	i = paramSkipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return s.fail(paramSyntaxErr(i, "expected ':'"))
	}
	i = paramSkipSpace(b, i+1)
	if s.trusted {
		if end = jsonSkipTrusted(b, i); end <= i {
			return s.fail(paramSyntaxErr(i, "expected a value"))
		}
	} else if end, err = paramSkipValue(b, i, 1); err != nil {
		return s.fail(err)
	}
	s.key, s.val = key, b[i:end]
	s.pos = end
	s.n++
	return true
}

func (s *paramObjectScanner) finish(i int) bool {
	s.done = true
	s.key, s.val = nil, nil
	if j := paramSkipSpace(s.data, i); j != len(s.data) {
		s.err = badParam("params", "params is not valid JSON: %v", paramSyntaxErr(j, "trailing data after object"))
	}
	return false
}

func (s *paramObjectScanner) fail(err error) bool {
	s.done = true
	s.key, s.val = nil, nil
	s.err = badParam("params", "params is not valid JSON: %v", err)
	return false
}

// paramValidateObject checks that raw is a params object (or absent) and
// ignores its members: the decoder of an op without params.
func paramValidateObject(raw []byte) *rcpError {
	sc, err := scanObject(raw)
	if err != nil {
		return err
	}
	for sc.next() {
	}
	return sc.err
}

// paramIsNull reports whether v (surrounding whitespace allowed) is null.
func paramIsNull(v []byte) bool {
	return string(paramTrim(v)) == "null"
}

// paramIsObject reports whether v, a valid JSON value such as the val of a
// paramObjectScanner, is an object. Only the first byte is looked at; use
// paramJSONValid for untrusted input.
func paramIsObject(v []byte) bool {
	i := paramSkipSpace(v, 0)
	return i < len(v) && v[i] == '{'
}

// parseJSONString decodes the JSON string v (surrounding whitespace
// allowed), resolving escapes including UTF-16 surrogate pairs. It fails
// with errParamNotString if v is not a string, a *paramSyntaxError if the
// string is malformed and errParamInvalidUTF8 for invalid UTF-8 or a lone
// surrogate escape.
func parseJSONString(v []byte) (string, error) { return parseJSONStringMode(v, false) }

// parseJSONStringBorrowed is parseJSONString, except that a string without
// escapes aliases v instead of being copied: it is valid only while v is
// unchanged. It saves an allocation per field on the request path.
func parseJSONStringBorrowed(v []byte) (string, error) { return parseJSONStringMode(v, true) }

func parseJSONStringMode(v []byte, borrow bool) (string, error) {
	v = paramTrim(v)
	if len(v) == 0 || v[0] != '"' {
		return "", errParamNotString
	}
	end, escaped, err := paramScanString(v, 0)
	if err != nil {
		return "", err
	}
	if end != len(v) {
		return "", paramSyntaxErr(end, "trailing data after string")
	}
	body := v[1 : end-1]
	// Escapes are ASCII, so the raw body is valid UTF-8 exactly when its
	// unescaped bytes are.
	if !utf8.Valid(body) {
		return "", errParamInvalidUTF8
	}
	if !escaped {
		if borrow {
			return unsafe.String(unsafe.SliceData(body), len(body)), nil
		}
		return string(body), nil
	}
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			j := i + 1
			for j < len(body) && body[j] != '\\' {
				j++
			}
			out = append(out, body[i:j]...)
			i = j
			continue
		}
		// paramScanString validated the escape syntax.
		switch body[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, _ := paramHex4(body, i+2)
			i += 6
			if utf16.IsSurrogate(r) {
				if r >= 0xDC00 || i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
					return "", errParamInvalidUTF8
				}
				r2, _ := paramHex4(body, i+2)
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return "", errParamInvalidUTF8
				}
				i += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, body[i+1])
		}
		i += 2
	}
	return string(out), nil
}

// parseJSONBool parses the JSON literal true or false.
func parseJSONBool(v []byte) (value, ok bool) {
	switch string(paramTrim(v)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// parseUint parses v as an unsigned integer of the given bit size (at most
// 64). Only plain JSON integers are accepted: no sign, fraction, exponent,
// leading zeros or quotes; the value must fit in bits.
func parseUint(v []byte, bits int) (uint64, bool) {
	v = paramTrim(v)
	if len(v) == 0 || (v[0] == '0' && len(v) > 1) {
		return 0, false
	}
	limit := uint64(1)<<bits - 1
	if bits >= 64 {
		limit = 1<<64 - 1
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// paramArrayEach calls fn for each element of the JSON array v (surrounding
// whitespace allowed), validating the array as it goes. maxItems < 0 means
// no limit; more elements give errParamTooMany before fn sees them.
func paramArrayEach(v []byte, maxItems int, fn func(elem []byte) error) error {
	i := paramSkipSpace(v, 0)
	if i >= len(v) || v[i] != '[' {
		return errParamNotArray
	}
	i = paramSkipSpace(v, i+1)
	n := 0
	if i < len(v) && v[i] == ']' {
		i++
	} else {
		for {
			end, err := paramSkipValue(v, i, 1)
			if err != nil {
				return err
			}
			if n++; maxItems >= 0 && n > maxItems {
				return errParamTooMany
			}
			if err := fn(v[i:end]); err != nil {
				return err
			}
			i = paramSkipSpace(v, end)
			if i >= len(v) {
				return paramSyntaxErr(i, "unexpected end of input")
			}
			if v[i] == ']' {
				i++
				break
			}
			if v[i] != ',' {
				return paramSyntaxErr(i, "expected ',' or ']'")
			}
			i = paramSkipSpace(v, i+1)
		}
	}
	if j := paramSkipSpace(v, i); j != len(v) {
		return paramSyntaxErr(j, "trailing data after array")
	}
	return nil
}

// parseStringList parses a JSON array of strings. An empty array gives an
// empty, non-nil slice. Errors are those of paramArrayEach and
// parseJSONString.
func parseStringList(v []byte, maxItems int) ([]string, error) {
	out := []string{}
	err := paramArrayEach(v, maxItems, func(elem []byte) error {
		s, err := parseJSONString(elem)
		if err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseRawList parses a JSON array into the raw bytes of its elements.
// The elements alias one new copy of v, not v itself. An empty array gives
// an empty, non-nil slice.
func parseRawList(v []byte, maxItems int) ([]json.RawMessage, error) {
	buf := append([]byte(nil), v...)
	out := []json.RawMessage{}
	err := paramArrayEach(buf, maxItems, func(elem []byte) error {
		out = append(out, json.RawMessage(elem[:len(elem):len(elem)]))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// paramAbsent reports whether a member value collected by a decoder means
// "not given": the key is missing (nil) or the value is null.
func paramAbsent(v []byte) bool {
	return v == nil || paramIsNull(v)
}

// paramMissing is the error for an absent required field.
func paramMissing(field string) *rcpError {
	return badParam(field, "missing required field '%s'", field)
}

// paramString decodes a string field whose byte length must lie within
// [minLen, maxLen]; maxLen < 0 means no upper bound.
func paramString(field string, v []byte, minLen, maxLen int) (string, *rcpError) {
	s, err := parseJSONString(v)
	return paramStringCheck(field, s, err, minLen, maxLen)
}

// paramStringBorrowed is paramString for a borrowed field: the string
// aliases v (see parseJSONStringBorrowed).
func paramStringBorrowed(field string, v []byte, minLen, maxLen int) (string, *rcpError) {
	s, err := parseJSONStringBorrowed(v)
	return paramStringCheck(field, s, err, minLen, maxLen)
}

func paramStringCheck(field, s string, err error, minLen, maxLen int) (string, *rcpError) {
	switch {
	case err == errParamInvalidUTF8:
		return "", badParam(field, "field '%s' must be valid UTF-8", field)
	case err != nil:
		return "", badParam(field, "field '%s' must be a string", field)
	case len(s) < minLen && minLen == 1:
		return "", badParam(field, "field '%s' must not be empty", field)
	case len(s) < minLen:
		return "", badParam(field, "field '%s' must be at least %d bytes", field, minLen)
	case maxLen >= 0 && len(s) > maxLen:
		return "", badParam(field, "field '%s' must be at most %d bytes", field, maxLen)
	}
	return s, nil
}

// paramBool decodes a bool field.
func paramBool(field string, v []byte) (bool, *rcpError) {
	b, ok := parseJSONBool(v)
	if !ok {
		return false, badParam(field, "field '%s' must be a boolean", field)
	}
	return b, nil
}

// paramU32 decodes a u32 field whose value must lie within [min, max].
func paramU32(field string, v []byte, min, max uint32) (uint32, *rcpError) {
	n, err := paramUint(field, v, 32, uint64(min), uint64(max))
	return uint32(n), err
}

// paramU64 decodes a u64 field whose value must lie within [min, max].
func paramU64(field string, v []byte, min, max uint64) (uint64, *rcpError) {
	return paramUint(field, v, 64, min, max)
}

func paramUint(field string, v []byte, bits int, min, max uint64) (uint64, *rcpError) {
	n, ok := parseUint(v, bits)
	switch {
	case !ok:
		return 0, badParam(field, "field '%s' must be an integer", field)
	case n < min:
		return 0, badParam(field, "field '%s' must be >= %d", field, min)
	case n > max:
		return 0, badParam(field, "field '%s' must be <= %d", field, max)
	}
	return n, nil
}

// paramJSON keeps a copy of any JSON value. v must be a member value of a
// paramObjectScanner, as it is in every generated decoder (the test
// TestParamJSONCallersScanned checks ops_gen.go): the scanner validated its
// syntax already, so only UTF-8, which the scanner does not check, is
// checked here. The copy is needed unless the field is borrowed: v aliases
// the request buffer.
func paramJSON(field string, v []byte) (json.RawMessage, *rcpError) {
	b, err := paramJSONBorrowed(field, v)
	if err != nil {
		return nil, err
	}
	return append(json.RawMessage(nil), b...), nil
}

// paramObject keeps a copy of a JSON object value; v is as for paramJSON.
func paramObject(field string, v []byte) (json.RawMessage, *rcpError) {
	b, err := paramObjectBorrowed(field, v)
	if err != nil {
		return nil, err
	}
	return append(json.RawMessage(nil), b...), nil
}

// paramJSONBorrowed is paramJSON without the copy: the value aliases v.
func paramJSONBorrowed(field string, v []byte) (json.RawMessage, *rcpError) {
	v = paramTrim(v)
	if len(v) == 0 {
		return nil, badParam(field, "field '%s' must be valid JSON", field)
	}
	if !utf8.Valid(v) {
		return nil, badParam(field, "field '%s' must be valid UTF-8", field)
	}
	return v, nil
}

// paramObjectBorrowed is paramObject without the copy: the value aliases v.
func paramObjectBorrowed(field string, v []byte) (json.RawMessage, *rcpError) {
	if !paramIsObject(v) {
		return nil, badParam(field, "field '%s' must be a JSON object", field)
	}
	return paramJSONBorrowed(field, v)
}

// paramStringList decodes an array of strings with between minItems and
// maxItems elements; maxItems < 0 means no upper bound.
func paramStringList(field string, v []byte, minItems, maxItems int) ([]string, *rcpError) {
	list, err := parseStringList(v, maxItems)
	switch {
	case err == errParamTooMany:
		return nil, badParam(field, "field '%s' must have at most %d items", field, maxItems)
	case err == errParamInvalidUTF8:
		return nil, badParam(field, "field '%s' must be an array of valid UTF-8 strings", field)
	case err != nil:
		return nil, badParam(field, "field '%s' must be an array of strings", field)
	}
	if err := paramCheckItems(field, len(list), minItems); err != nil {
		return nil, err
	}
	return list, nil
}

// paramJSONList decodes an array of arbitrary JSON values (copied) with
// between minItems and maxItems elements; maxItems < 0 means no upper bound.
func paramJSONList(field string, v []byte, minItems, maxItems int) ([]json.RawMessage, *rcpError) {
	list, err := parseRawList(v, maxItems)
	switch {
	case err == errParamTooMany:
		return nil, badParam(field, "field '%s' must have at most %d items", field, maxItems)
	case err != nil:
		return nil, badParam(field, "field '%s' must be an array", field)
	}
	for _, elem := range list {
		if !utf8.Valid(elem) {
			return nil, badParam(field, "field '%s' must be valid UTF-8", field)
		}
	}
	if err := paramCheckItems(field, len(list), minItems); err != nil {
		return nil, err
	}
	return list, nil
}

func paramCheckItems(field string, n, minItems int) *rcpError {
	switch {
	case n >= minItems:
		return nil
	case minItems == 1:
		return badParam(field, "field '%s' must not be empty", field)
	default:
		return badParam(field, "field '%s' must have at least %d items", field, minItems)
	}
}
