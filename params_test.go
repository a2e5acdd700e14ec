package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"math/bits"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// paramErrText renders an *rcpError for comparisons: "" for nil, else
// "CODE field=F: message".
func paramErrText(e *rcpError) string {
	if e == nil {
		return ""
	}
	s := e.Code
	if f, ok := e.Details["field"]; ok {
		s += " field=" + f.(string)
	}
	return s + ": " + e.Message
}

type paramMember struct{ Key, Val string }

// paramScanAll runs the object scanner over raw and collects its members.
func paramScanAll(raw []byte) ([]paramMember, string) {
	sc, err := scanObject(raw)
	if err != nil {
		return nil, paramErrText(err)
	}
	var got []paramMember
	for sc.next() {
		got = append(got, paramMember{string(sc.key), string(sc.val)})
	}
	return got, paramErrText(sc.err)
}

const paramNotObject = "BAD_REQUEST field=params: params must be a JSON object"

func TestScanObject(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		nilRaw  bool
		want    []paramMember
		wantErr string // "" for none; else a prefix
	}{
		{name: "nil", nilRaw: true},
		{name: "empty", raw: ""},
		{name: "whitespace", raw: " \t\r\n"},
		{name: "null", raw: "null"},
		{name: "null spaced", raw: " null\n"},
		{name: "empty object", raw: "{}"},
		{name: "empty object spaced", raw: " {\n} "},
		{name: "one", raw: `{"a":1}`, want: []paramMember{{"a", "1"}}},
		{
			name: "all kinds",
			raw:  `{"s":"x","n":-1.5e+3,"t":true,"f":false,"z":null,"o":{"k":[1,2]},"a":[]}`,
			want: []paramMember{{"s", `"x"`}, {"n", "-1.5e+3"}, {"t", "true"}, {"f", "false"},
				{"z", "null"}, {"o", `{"k":[1,2]}`}, {"a", "[]"}},
		},
		{
			name: "whitespace everywhere",
			raw:  " \n{ \t\"a\" \r\n: \n 1 \t, \"b\"\n:[ 1 , { \"x\" : [ ] } ] \n}\n ",
			want: []paramMember{{"a", "1"}, {"b", `[ 1 , { "x" : [ ] } ]`}},
		},
		{
			name: "nested skipped",
			raw:  `{"a":{"b":{"c":[1,2,{"d":"}]"}]}},"e":"x"}`,
			want: []paramMember{{"a", `{"b":{"c":[1,2,{"d":"}]"}]}}`}, {"e", `"x"`}},
		},
		{
			name: "quotes and braces in strings",
			raw:  `{"a":"x\"}\\","b\"}":2}`,
			want: []paramMember{{"a", `"x\"}\\"`}, {`b"}`, "2"}},
		},
		{name: "escaped key", raw: `{"machin\u0065":"m"}`, want: []paramMember{{"machine", `"m"`}}},
		{name: "surrogate key", raw: `{"\ud83d\ude00":0}`, want: []paramMember{{"😀", "0"}}},
		{name: "lone surrogate key kept raw", raw: `{"\ud800":0}`, want: []paramMember{{`\ud800`, "0"}}},
		{name: "duplicate keys", raw: `{"a":1,"a":2}`, want: []paramMember{{"a", "1"}, {"a", "2"}}},
		{name: "array", raw: `[]`, wantErr: paramNotObject},
		{name: "number", raw: `1`, wantErr: paramNotObject},
		{name: "string", raw: `"x"`, wantErr: paramNotObject},
		{name: "true", raw: ` true`, wantErr: paramNotObject},
		{name: "nul", raw: `nul`, wantErr: paramNotObject},
		{name: "null garbage", raw: `null x`, wantErr: paramNotObject},
	}
	malformed := []string{
		`{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a":1 "b":2}`, `{"a":1}x`,
		`{"a":1}{}`, `{a:1}`, `{"a":01}`, `{"a":tru}`, `{"a":nulll}`, `{"a":"\x"}`,
		"{\"a\":\"\x01\"}", `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`,
		`{"a":.5}`, `{"a":+1}`, `{"a":"abc`, `{"a":"\u12"}`, `{"a":{"b"}}`, `{"a":{"b":1,}}`,
		`{"a":[}`, `{"a":]}`, `{"a":1`, `{"a" 1}`, `{1:1}`, `{"a":'x'}`, `{"a":NaN}`,
	}
	for _, m := range malformed {
		tests = append(tests, struct {
			name    string
			raw     string
			nilRaw  bool
			want    []paramMember
			wantErr string
		}{name: "malformed " + m, raw: m, wantErr: "BAD_REQUEST field=params: params is not valid JSON: "})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte(tt.raw)
			if tt.nilRaw {
				raw = nil
			}
			got, gotErr := paramScanAll(raw)
			if tt.wantErr != "" {
				if !strings.HasPrefix(gotErr, tt.wantErr) {
					t.Fatalf("error = %q, want prefix %q (members %v)", gotErr, tt.wantErr, got)
				}
				return
			}
			if gotErr != "" {
				t.Fatalf("unexpected error %q", gotErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("members mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestScanObjectDepth(t *testing.T) {
	deep := func(n int) []byte {
		return []byte(`{"a":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`)
	}
	if _, err := paramScanAll(deep(1000)); err != "" {
		t.Errorf("depth 1000: %s", err)
	}
	if _, err := paramScanAll(deep(paramMaxDepth + 1)); !strings.Contains(err, "nested too deeply") {
		t.Errorf("depth %d: error %q, want nested too deeply", paramMaxDepth+1, err)
	}
}

func TestScanObjectErrorStops(t *testing.T) {
	sc, err := scanObject([]byte(`{"a":1,"b":}`))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for sc.next() {
		keys = append(keys, string(sc.key))
	}
	if diff := cmp.Diff([]string{"a"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if sc.err == nil || !strings.Contains(sc.err.Message, "offset 11") {
		t.Errorf("err = %v, want one at offset 11", sc.err)
	}
	if sc.next() {
		t.Error("next after error returned true")
	}
}

func TestParseJSONString(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr error // nil, a sentinel, or errParamTestSyntax for any *paramSyntaxError
	}{
		{in: `""`, want: ""},
		{in: `"abc"`, want: "abc"},
		{in: " \t\"abc\"\n ", want: "abc"},
		{in: `"é日本"`, want: "é日本"},
		{in: `"\"\\\/\b\f\n\r\t"`, want: "\"\\/\b\f\n\r\t"},
		{in: `"a\u0041b"`, want: "aAb"},
		{in: `"\u00e9\u00E9"`, want: "éé"},
		{in: `"\u65e5"`, want: "日"},
		{in: `"\u0000"`, want: "\x00"},
		{in: `"\ud83d\ude00"`, want: "😀"},
		{in: `"x\uD83D\uDE00y"`, want: "x😀y"},
		{in: `"\ud800"`, wantErr: errParamInvalidUTF8},
		{in: `"\udc00"`, wantErr: errParamInvalidUTF8},
		{in: `"\ud800x"`, wantErr: errParamInvalidUTF8},
		{in: `"\ud800\u0041"`, wantErr: errParamInvalidUTF8},
		{in: `"\ud800\ud800"`, wantErr: errParamInvalidUTF8},
		{in: `"\ud800\n"`, wantErr: errParamInvalidUTF8},
		{in: "\"\xff\"", wantErr: errParamInvalidUTF8},
		{in: "\"a\xc3\"", wantErr: errParamInvalidUTF8},
		{in: "\"\xed\xa0\x80\"", wantErr: errParamInvalidUTF8}, // UTF-8 encoded surrogate
		{in: "\"\xff\\n\"", wantErr: errParamInvalidUTF8},
		{in: `1`, wantErr: errParamNotString},
		{in: `null`, wantErr: errParamNotString},
		{in: `["a"]`, wantErr: errParamNotString},
		{in: ``, wantErr: errParamNotString},
		{in: `"abc`, wantErr: errParamTestSyntax},
		{in: `"a" "b"`, wantErr: errParamTestSyntax},
		{in: `"a"b`, wantErr: errParamTestSyntax},
		{in: `"\x"`, wantErr: errParamTestSyntax},
		{in: `"\u12G4"`, wantErr: errParamTestSyntax},
		{in: `"\u12"`, wantErr: errParamTestSyntax},
		{in: `"\`, wantErr: errParamTestSyntax},
		{in: "\"a\tb\"", wantErr: errParamTestSyntax},
		{in: "\"a\nb\"", wantErr: errParamTestSyntax},
	}
	for _, tt := range tests {
		got, err := parseJSONString([]byte(tt.in))
		if !paramErrMatches(err, tt.wantErr) {
			t.Errorf("parseJSONString(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("parseJSONString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// errParamTestSyntax stands for any *paramSyntaxError in test tables.
var errParamTestSyntax = errors.New("syntax error")

func paramErrMatches(err, want error) bool {
	if want == errParamTestSyntax {
		var se *paramSyntaxError
		return errors.As(err, &se)
	}
	return err == want
}

func TestParseJSONBool(t *testing.T) {
	tests := []struct {
		in       string
		want, ok bool
	}{
		{in: "true", want: true, ok: true},
		{in: "false", want: false, ok: true},
		{in: " true\n", want: true, ok: true},
		{in: "True"},
		{in: "1"},
		{in: "0"},
		{in: `"true"`},
		{in: "null"},
		{in: "truex"},
		{in: ""},
	}
	for _, tt := range tests {
		got, ok := parseJSONBool([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseJSONBool(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseUint(t *testing.T) {
	tests := []struct {
		in   string
		bits int
		want uint64
		ok   bool
	}{
		{"0", 32, 0, true},
		{"1", 32, 1, true},
		{" 7 ", 32, 7, true},
		{"1000", 32, 1000, true},
		{"4294967295", 32, 1<<32 - 1, true},
		{"4294967296", 32, 0, false},
		{"4294967296", 64, 1 << 32, true},
		{"18446744073709551615", 64, 1<<64 - 1, true},
		{"18446744073709551616", 64, 0, false},
		{"18446744073709551620", 64, 0, false},
		{"99999999999999999999", 64, 0, false},
		{"123456789012345678901234567890", 64, 0, false},
		{"1.0", 32, 0, false},
		{"1.5", 32, 0, false},
		{"1e2", 32, 0, false},
		{"1E2", 32, 0, false},
		{"-1", 32, 0, false},
		{"-0", 32, 0, false},
		{"+1", 32, 0, false},
		{"01", 32, 0, false},
		{"00", 32, 0, false},
		{"0x10", 32, 0, false},
		{`"1"`, 32, 0, false},
		{"1 2", 32, 0, false},
		{"", 32, 0, false},
		{"null", 32, 0, false},
		{"true", 32, 0, false},
	}
	for _, tt := range tests {
		got, ok := parseUint([]byte(tt.in), tt.bits)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseUint(%q, %d) = %d, %v; want %d, %v", tt.in, tt.bits, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseStringList(t *testing.T) {
	tests := []struct {
		in      string
		max     int
		want    []string
		wantErr error
	}{
		{in: `[]`, max: -1, want: []string{}},
		{in: ` [ ] `, max: 0, want: []string{}},
		{in: `["a","b"]`, max: -1, want: []string{"a", "b"}},
		{in: " [ \"a\" ,\n\"\\u0041\\ud83d\\ude00\" ] ", max: 2, want: []string{"a", "A😀"}},
		{in: `["a","b","c"]`, max: 2, wantErr: errParamTooMany},
		{in: `["a"]`, max: 0, wantErr: errParamTooMany},
		{in: `[1]`, max: -1, wantErr: errParamNotString},
		{in: `["a",null]`, max: -1, wantErr: errParamNotString},
		{in: `[["a"]]`, max: -1, wantErr: errParamNotString},
		{in: "[\"\xff\"]", max: -1, wantErr: errParamInvalidUTF8},
		{in: `["\udc00"]`, max: -1, wantErr: errParamInvalidUTF8},
		{in: `"a"`, max: -1, wantErr: errParamNotArray},
		{in: `{}`, max: -1, wantErr: errParamNotArray},
		{in: `null`, max: -1, wantErr: errParamNotArray},
		{in: ``, max: -1, wantErr: errParamNotArray},
		{in: `["a",]`, max: -1, wantErr: errParamTestSyntax},
		{in: `["a" "b"]`, max: -1, wantErr: errParamTestSyntax},
		{in: `["a"`, max: -1, wantErr: errParamTestSyntax},
		{in: `[`, max: -1, wantErr: errParamTestSyntax},
		{in: `[] x`, max: -1, wantErr: errParamTestSyntax},
		{in: `["a"]]`, max: -1, wantErr: errParamTestSyntax},
	}
	for _, tt := range tests {
		got, err := parseStringList([]byte(tt.in), tt.max)
		if !paramErrMatches(err, tt.wantErr) {
			t.Errorf("parseStringList(%q, %d) error = %v, want %v", tt.in, tt.max, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("parseStringList(%q, %d) (-want +got):\n%s", tt.in, tt.max, diff)
		}
	}
}

func TestParseRawList(t *testing.T) {
	tests := []struct {
		in      string
		max     int
		want    []string
		wantErr error
	}{
		{in: `[]`, max: -1, want: []string{}},
		{in: `[1]`, max: 1, want: []string{"1"}},
		{
			in:   ` [ 1 , {"a" : [2, "]"]} ,"x",null, true,[] ] `,
			max:  -1,
			want: []string{"1", `{"a" : [2, "]"]}`, `"x"`, "null", "true", "[]"},
		},
		{in: `[1,2,3]`, max: 2, wantErr: errParamTooMany},
		{in: `{}`, max: -1, wantErr: errParamNotArray},
		{in: `"[]"`, max: -1, wantErr: errParamNotArray},
		{in: `[1,]`, max: -1, wantErr: errParamTestSyntax},
		{in: `[{]`, max: -1, wantErr: errParamTestSyntax},
		{in: `[01]`, max: -1, wantErr: errParamTestSyntax},
	}
	for _, tt := range tests {
		in := []byte(tt.in)
		got, err := parseRawList(in, tt.max)
		if !paramErrMatches(err, tt.wantErr) {
			t.Errorf("parseRawList(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		// The elements must not alias the input.
		for i := range in {
			in[i] = 'X'
		}
		gotS := make([]string, len(got))
		for i, e := range got {
			gotS[i] = string(e)
		}
		if diff := cmp.Diff(tt.want, gotS); diff != "" {
			t.Errorf("parseRawList(%q) (-want +got):\n%s", tt.in, diff)
		}
		// Appending to one element must not overwrite the next.
		if len(got) > 1 {
			_ = append(got[0], "zzzzzzzz"...)
			if string(got[1]) != tt.want[1] {
				t.Errorf("parseRawList(%q): append to element 0 clobbered element 1", tt.in)
			}
		}
	}
}

func TestJSONKinds(t *testing.T) {
	tests := []struct {
		in                  string
		null, object, valid bool
	}{
		{in: "null", null: true, valid: true},
		{in: " null ", null: true, valid: true},
		{in: "nul"},
		{in: "nulll"},
		{in: `"null"`, valid: true},
		{in: "{}", object: true, valid: true},
		{in: " {\"a\":[1]} ", object: true, valid: true},
		{in: "[]", valid: true},
		{in: "1", valid: true},
		{in: "-0.5e-3", valid: true},
		{in: `"x"`, valid: true},
		{in: "true", valid: true},
		{in: ""},
		{in: "{", object: true},
		{in: "[1,]"},
		{in: "1 2"},
	}
	for _, tt := range tests {
		b := []byte(tt.in)
		if got := paramIsNull(b); got != tt.null {
			t.Errorf("paramIsNull(%q) = %v", tt.in, got)
		}
		if got := paramIsObject(b); got != tt.object {
			t.Errorf("paramIsObject(%q) = %v", tt.in, got)
		}
		if got := paramJSONValid(b); got != tt.valid {
			t.Errorf("paramJSONValid(%q) = %v", tt.in, got)
		}
	}
}

func TestParamHelpers(t *testing.T) {
	type result struct {
		Val any
		Err string
	}
	res := func(v any, err *rcpError) result {
		if err != nil {
			return result{Err: paramErrText(err)}
		}
		return result{Val: v}
	}
	bad := func(field, msg string) result {
		return result{Err: "BAD_REQUEST field=" + field + ": " + msg}
	}
	str := func(v string, min, max int) result { return res(paramString("f", []byte(v), min, max)) }
	u32 := func(v string, min, max uint32) result { return res(paramU32("f", []byte(v), min, max)) }
	u64 := func(v string, min, max uint64) result { return res(paramU64("f", []byte(v), min, max)) }
	boolean := func(v string) result { return res(paramBool("f", []byte(v))) }
	rawJSON := func(v string) result {
		m, err := paramJSON("f", []byte(v))
		return res(string(m), err)
	}
	object := func(v string) result {
		m, err := paramObject("f", []byte(v))
		return res(string(m), err)
	}
	strList := func(v string, min, max int) result { return res(paramStringList("f", []byte(v), min, max)) }
	jsonList := func(v string, min, max int) result {
		l, err := paramJSONList("f", []byte(v), min, max)
		var out []string
		for _, e := range l {
			out = append(out, string(e))
		}
		return res(out, err)
	}

	tests := []struct {
		name      string
		got, want result
	}{
		{"string", str(`"abc"`, 0, -1), result{Val: "abc"}},
		{"string escaped", str(`"a\nb"`, 0, 3), result{Val: "a\nb"}},
		{"string max bytes", str(`"é"`, 0, 1), bad("f", "field 'f' must be at most 1 bytes")},
		{"string at max", str(`"ab"`, 0, 2), result{Val: "ab"}},
		{"string empty", str(`""`, 1, 10), bad("f", "field 'f' must not be empty")},
		{"string min 3", str(`"ab"`, 3, 10), bad("f", "field 'f' must be at least 3 bytes")},
		{"string number", str(`1`, 0, -1), bad("f", "field 'f' must be a string")},
		{"string object", str(`{}`, 0, -1), bad("f", "field 'f' must be a string")},
		{"string bad utf8", str("\"\xff\"", 0, -1), bad("f", "field 'f' must be valid UTF-8")},
		{"string lone surrogate", str(`"\ud800"`, 0, -1), bad("f", "field 'f' must be valid UTF-8")},
		{"bool", boolean("true"), result{Val: true}},
		{"bool string", boolean(`"true"`), bad("f", "field 'f' must be a boolean")},
		{"u32", u32("42", 0, 100), result{Val: uint32(42)}},
		{"u32 max type", u32("4294967295", 0, 1<<32-1), result{Val: uint32(1<<32 - 1)}},
		{"u32 overflow", u32("4294967296", 0, 1<<32-1), bad("f", "field 'f' must be an integer")},
		{"u32 float", u32("1.0", 0, 100), bad("f", "field 'f' must be an integer")},
		{"u32 exp", u32("1e2", 0, 100), bad("f", "field 'f' must be an integer")},
		{"u32 string", u32(`"1"`, 0, 100), bad("f", "field 'f' must be an integer")},
		{"u32 negative", u32("-1", 0, 100), bad("f", "field 'f' must be an integer")},
		{"u32 min", u32("0", 1, 100), bad("f", "field 'f' must be >= 1")},
		{"u32 max", u32("101", 0, 100), bad("f", "field 'f' must be <= 100")},
		{"u64 big", u64("18446744073709551615", 0, 1<<64-1), result{Val: uint64(1<<64 - 1)}},
		{"u64 overflow", u64("18446744073709551616", 0, 1<<64-1), bad("f", "field 'f' must be an integer")},
		{"json number", rawJSON(" 1.5 "), result{Val: "1.5"}},
		{"json object", rawJSON(`{"a":[1,"x"]}`), result{Val: `{"a":[1,"x"]}`}},
		// Malformed JSON never reaches paramJSON: the decoder's scanner
		// rejects it first (TestGenDecodeApplyEvent, TestGenDecodePutMachine).
		{"json empty", rawJSON(` `), bad("f", "field 'f' must be valid JSON")},
		{"json bad utf8", rawJSON("\"\xff\""), bad("f", "field 'f' must be valid UTF-8")},
		{"object", object(`{"k":1}`), result{Val: `{"k":1}`}},
		{"object array", object(`[1]`), bad("f", "field 'f' must be a JSON object")},
		{"object string", object(`"{}"`), bad("f", "field 'f' must be a JSON object")},
		{"string list", strList(`["a"]`, 0, 2), result{Val: []string{"a"}}},
		{"string list empty", strList(`[]`, 0, 2), result{Val: []string{}}},
		{"string list too many", strList(`["a","b","c"]`, 0, 2), bad("f", "field 'f' must have at most 2 items")},
		{"string list min 1", strList(`[]`, 1, 2), bad("f", "field 'f' must not be empty")},
		{"string list min 2", strList(`["a"]`, 2, -1), bad("f", "field 'f' must have at least 2 items")},
		{"string list of numbers", strList(`[1]`, 0, -1), bad("f", "field 'f' must be an array of strings")},
		{"string list not array", strList(`"a"`, 0, -1), bad("f", "field 'f' must be an array of strings")},
		{"string list bad utf8", strList("[\"\xff\"]", 0, -1), bad("f", "field 'f' must be an array of valid UTF-8 strings")},
		{"json list", jsonList(`[1, {"a":2}]`, 0, -1), result{Val: []string{"1", `{"a":2}`}}},
		{"json list too many", jsonList(`[1,2]`, 0, 1), bad("f", "field 'f' must have at most 1 items")},
		{"json list not array", jsonList(`{}`, 0, -1), bad("f", "field 'f' must be an array")},
		{"json list bad utf8", jsonList("[\"\xff\"]", 0, -1), bad("f", "field 'f' must be valid UTF-8")},
		{"missing", result{Err: paramErrText(paramMissing("f"))}, bad("f", "missing required field 'f'")},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestParamAbsent(t *testing.T) {
	for in, want := range map[string]bool{"null": true, " null ": true, "0": false, `""`: false, "{}": false} {
		if got := paramAbsent([]byte(in)); got != want {
			t.Errorf("paramAbsent(%q) = %v", in, got)
		}
	}
	if !paramAbsent(nil) {
		t.Error("paramAbsent(nil) = false")
	}
}

func TestParamJSONCopies(t *testing.T) {
	in := []byte(`{"a":1}`)
	got, err := paramObject("f", in)
	if err != nil {
		t.Fatal(err)
	}
	in[2] = 'X'
	if string(got) != `{"a":1}` {
		t.Errorf("paramObject result aliases its input: %s", got)
	}
	var _ json.RawMessage = got
}

func TestParamValidateObject(t *testing.T) {
	for in, want := range map[string]string{
		``:             "",
		`null`:         "",
		`{"x":[1,{}]}`: "",
		`[]`:           paramNotObject,
		`{"x":}`:       "BAD_REQUEST field=params: params is not valid JSON: invalid character '}' at offset 5",
	} {
		if got := paramErrText(paramValidateObject([]byte(in))); got != want {
			t.Errorf("paramValidateObject(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParamJSON cross-checks the hand-written scanner with encoding/json.
func FuzzParamJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `[1,{"b":"\u00e9"}]`, `"x\ud83d\ude00"`, `-1.5e3`, `{"a":[1,2,{"c":null}],"b":true}`, `"\ud800"`, "\"\xff\"", `01`, `1.`, `{"a":}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := paramJSONValid(b), json.Valid(b); got != want {
			t.Fatalf("paramJSONValid(%q) = %v, json.Valid = %v", b, got, want)
		}
		if !json.Valid(b) {
			return
		}
		var s string
		if json.Unmarshal(b, &s) == nil && !paramIsNull(b) {
			got, err := parseJSONString(b)
			if err == nil && got != s {
				t.Fatalf("parseJSONString(%q) = %q, encoding/json %q", b, got, s)
			}
			if err != nil && err != errParamInvalidUTF8 {
				t.Fatalf("parseJSONString(%q): %v", b, err)
			}
			if err == nil && !utf8.ValidString(got) {
				t.Fatalf("parseJSONString(%q) returned invalid UTF-8", b)
			}
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) == nil && m != nil {
			sc, rerr := scanObject(b)
			if rerr != nil {
				t.Fatalf("scanObject(%q): %v", b, rerr)
			}
			n := 0
			for sc.next() {
				n++
				if !json.Valid(sc.val) {
					t.Fatalf("invalid member value %q", sc.val)
				}
			}
			if sc.err != nil {
				t.Fatalf("scanObject(%q): %v", b, sc.err)
			}
			if n < len(m) {
				t.Fatalf("scanObject(%q): %d members, encoding/json %d", b, n, len(m))
			}
		}
	})
}

// TestParamJSONCallersScanned checks the assumption paramJSON and
// paramObject (and their borrowed forms) rely on to skip validating syntax: in ops_gen.go, the value
// passed to them is a variable that is only ever assigned sc.val, the
// member value of a paramObjectScanner from scanObject or scanParams (which
// validated it, or was given params the request scanner validated).
func TestParamJSONCallersScanned(t *testing.T) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "ops_gen.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	isSel := func(e ast.Expr, x, sel string) bool {
		s, ok := e.(*ast.SelectorExpr)
		if !ok {
			return false
		}
		id, ok := s.X.(*ast.Ident)
		return ok && id.Name == x && s.Sel.Name == sel
	}
	calls := 0
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		// What each name is assigned in this function.
		assigned := map[string][]ast.Expr{}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for i, lhs := range n.Lhs {
					id, ok := lhs.(*ast.Ident)
					if !ok {
						continue
					}
					var rhs ast.Expr
					if len(n.Rhs) == len(n.Lhs) {
						rhs = n.Rhs[i]
					} else {
						rhs = n.Rhs[0]
					}
					assigned[id.Name] = append(assigned[id.Name], rhs)
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if i < len(n.Values) {
						assigned[id.Name] = append(assigned[id.Name], n.Values[i])
					}
				}
			}
			return true
		})
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			name, ok := call.Fun.(*ast.Ident)
			switch {
			case !ok:
				return true
			case name.Name == "paramJSON", name.Name == "paramObject",
				name.Name == "paramJSONBorrowed", name.Name == "paramObjectBorrowed":
			default:
				return true
			}
			calls++
			pos := fset.Position(call.Pos())
			v, ok := call.Args[1].(*ast.Ident)
			if !ok {
				t.Errorf("%s: %s is passed %T, not a variable holding sc.val", pos, name.Name, call.Args[1])
				return true
			}
			if len(assigned[v.Name]) == 0 {
				t.Errorf("%s: %s is passed %s, which is never assigned", pos, name.Name, v.Name)
			}
			for _, rhs := range assigned[v.Name] {
				if !isSel(rhs, "sc", "val") {
					t.Errorf("%s: %s is passed %s, which is assigned something other than sc.val", pos, name.Name, v.Name)
				}
			}
			for _, rhs := range assigned["sc"] {
				c, ok := rhs.(*ast.CallExpr)
				if !ok {
					t.Errorf("%s: sc is not assigned from scanObject", pos)
					continue
				}
				// scanParams validates, or (trusted) takes params that
				// conn.handle validated as part of the whole request.
				if id, ok := c.Fun.(*ast.Ident); !ok || (id.Name != "scanObject" && id.Name != "scanParams") {
					t.Errorf("%s: sc is not assigned from scanObject or scanParams", pos)
				}
			}
			return true
		})
	}
	if calls == 0 {
		t.Fatal("no call of paramJSON or paramObject in ops_gen.go")
	}
}

// trustedDecoder wraps a generated decodeXParamsWith for
// TestTrustedDecodeMatches.
func trustedDecoder[P any](decode func([]byte, *P, bool) *rcpError) func([]byte, bool) (any, *rcpError) {
	return func(raw []byte, trusted bool) (any, *rcpError) {
		var p P
		err := decode(raw, &p, trusted)
		return p, err
	}
}

// TestTrustedDecodeMatches decodes valid params both ways — validating, as
// the decoders' own callers do, and trusted, as dispatch does after the
// request scanner — and expects the same params or the same error.
func TestTrustedDecodeMatches(t *testing.T) {
	type dec func(raw []byte, trusted bool) (any, *rcpError)
	ops := map[string]dec{
		"APPLY_EVENT":     trustedDecoder(decodeApplyEventParamsWith),
		"CREATE_INSTANCE": trustedDecoder(decodeCreateInstanceParamsWith),
		"PUT_MACHINE":     trustedDecoder(decodePutMachineParamsWith),
		"LIST_INSTANCES":  trustedDecoder(decodeListInstancesParamsWith),
		"HELLO":           trustedDecoder(decodeHelloParamsWith),
		"BATCH":           trustedDecoder(decodeBatchParamsWith),
	}
	cases := []struct{ op, raw string }{
		{"APPLY_EVENT", `{"instance_id":"i-1","event":"GO","payload":{"n":1,"pad":"xx\"y\\","deep":{"a":[1,{"b":null}]}},"expected_state":"s","expected_wal_offset":7,"event_id":"e","idempotency_key":"k"}`},
		{"APPLY_EVENT", ` { "instance_id" : "i\u002d1" , "event":"G\"O", "payload" : { } , "extra":[1,2,{"x":"}"}] } `},
		{"APPLY_EVENT", `{"\u0069nstance_id":"i","event":"E"}`},
		{"APPLY_EVENT", `{"instance_id":"i","event":""}`},
		{"APPLY_EVENT", `{"instance_id":"i","event":"E","payload":[1]}`},
		{"APPLY_EVENT", `{"instance_id":"i","event":"E","expected_wal_offset":-1}`},
		{"APPLY_EVENT", `{"instance_id":"i","instance_id":"j","event":"E"}`},
		{"APPLY_EVENT", `{"event":"E"}`},
		{"APPLY_EVENT", `null`},
		{"APPLY_EVENT", `[]`},
		{"APPLY_EVENT", `{"instance_id":"\ud800","event":"E"}`},
		{"CREATE_INSTANCE", `{"machine":"m","version":1,"initial_ctx":{"a":"b\\"},"instance_id":"x"}`},
		{"PUT_MACHINE", `{"machine":"m","version":2,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"E","to":"b","guard":"ctx.n > 1 && ctx.s == \"x\""}]}}`},
		{"LIST_INSTANCES", `{"machine":"m","state":"s","limit":10,"offset":3}`},
		{"LIST_INSTANCES", `{"limit":"ten"}`},
		{"HELLO", `{"protocol_version":1,"wire_modes":["binary_json","jsonl"],"features":["a","b"]}`},
		{"BATCH", `{"mode":"atomic","ops":[{"op":"PING"},{"op":"APPLY_EVENT","params":{"instance_id":"i","event":"E"}}]}`},
	}
	for _, tc := range cases {
		if !paramJSONValid([]byte(tc.raw)) {
			t.Fatalf("%s %s: test input is not valid JSON", tc.op, tc.raw)
		}
		d := ops[tc.op]
		pv, ev := d([]byte(tc.raw), false)
		pt, et := d([]byte(tc.raw), true)
		if diff := cmp.Diff(pv, pt); diff != "" {
			t.Errorf("%s %s: trusted decode differs (-validating +trusted):\n%s", tc.op, tc.raw, diff)
		}
		if diff := cmp.Diff(paramErrText(ev), paramErrText(et)); diff != "" {
			t.Errorf("%s %s: trusted error differs (-validating +trusted):\n%s", tc.op, tc.raw, diff)
		}
	}
}

// TestParamSpecialMask checks the word-at-a-time string scan's mask against
// a byte loop: for every pair of adjacent byte values at every position
// (where a borrow from one byte could disturb the next), the lowest set
// bit must mark the first '"', '\\' or control character, and there must
// be none when there is no such byte.
func TestParamSpecialMask(t *testing.T) {
	special := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }
	var w [8]byte
	for pos := 0; pos < 7; pos++ {
		for a := 0; a < 256; a++ {
			for b := 0; b < 256; b++ {
				for i := range w {
					w[i] = 'a'
				}
				w[pos], w[pos+1] = byte(a), byte(b)
				want := -1
				for i, c := range w {
					if special(c) {
						want = i
						break
					}
				}
				m := paramSpecialMask(binary.LittleEndian.Uint64(w[:]))
				got := -1
				if m != 0 {
					got = bits.TrailingZeros64(m) >> 3
				}
				if got != want {
					t.Fatalf("%q: first special byte at %d, mask says %d", w, want, got)
				}
			}
		}
	}
}
