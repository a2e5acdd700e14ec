package main

import (
	"bytes"
	"strings"
	"testing"
)

// jsonTrustedSeeds are inputs for the trusted-walk fuzz targets: escapes,
// nesting, numbers, literals, empty values, whitespace and some malformed
// input.
var jsonTrustedSeeds = []string{
	`{}`, `[]`, `""`, `"x"`, `0`, `-1.5e+3`, `1E-2`, `true`, `false`, `null`,
	`"\""`, `"\\"`, `"\\\""`, `"a\\\\"`, `"\u0022"`, `"\/\b\f\n\r\t"`, `"\ud83d\ude00"`, `"\ud800"`,
	`{"a":1}`, `{"a":"b","c":[1,2,{"d":null}],"e":{"f":{"g":[]}}}`,
	`{"\"":1,"\\":2,"\u0022":3,"a\\":"b\"","":""}`,
	`[[[[[]]]],{"a":[{}]},"]}",1,-0,true]`,
	` { "a" : [ 1 , 2 ] , "b" : { } } `, "\t[\n1\r]\n", `{"k":"v with spaces"}`,
	"{\"\xff\":1}", `{"\ud800":1,"\ud800":2}`, `{"a":1,"a":2,"\u0061":3}`,
	`{"a":}`, `{"a"`, `{"a":1,}`, `[1,]`, `"abc`, `"\`, `{`, `}`, `]`, `,`, `{"a":"}`, `[1 2]`, `tru`, `{}x`,
}

func TestJSONSkipTrusted(t *testing.T) {
	for _, tt := range []struct {
		in   string
		i    int
		want int
	}{
		{`"abc"x`, 0, 5},
		{`"a\"b"x`, 0, 6},
		{`"a\\"x`, 0, 5},
		{`"a\\\"b"x`, 0, 8},
		{`"\u0022"x`, 0, 8},
		{`{"a":"}"}x`, 0, 9},
		{`[1,[2,{"]":3}]]x`, 0, 15},
		{`123,`, 0, 3},
		{`true}`, 0, 4},
		{`null `, 0, 4},
		{`-1.5e3]`, 0, 6},
		// Malformed input: any index in range.
		{`"abc`, 0, 4},
		{`{"a":[1`, 0, 7},
		{``, 0, 0},
		{`x`, 5, 1},
		{`x`, -1, 1},
	} {
		if got := jsonSkipTrusted([]byte(tt.in), tt.i); got != tt.want {
			t.Errorf("jsonSkipTrusted(%q, %d) = %d, want %d", tt.in, tt.i, got, tt.want)
		}
	}
}

// checkTrustedSkipAll asserts that jsonSkipTrusted agrees with
// paramSkipValue at the value starting at b[i] and at every value nested in
// it. b must be valid there.
func checkTrustedSkipAll(t *testing.T, b []byte, i int) int {
	t.Helper()
	want, err := paramSkipValue(b, i, 0)
	if err != nil {
		t.Fatalf("paramSkipValue(%q, %d): %v", b, i, err)
	}
	if got := jsonSkipTrusted(b, i); got != want {
		t.Fatalf("jsonSkipTrusted(%q, %d) = %d, paramSkipValue = %d", b, i, got, want)
	}
	c := b[i]
	if c != '{' && c != '[' {
		return want
	}
	j := paramSkipSpace(b, i+1)
	for b[j] != '}' && b[j] != ']' {
		if c == '{' {
			end, _, err := paramScanString(b, j)
			if err != nil {
				t.Fatalf("paramScanString(%q, %d): %v", b, j, err)
			}
			j = paramSkipSpace(b, end) // at ':'
			j = paramSkipSpace(b, j+1)
		}
		j = paramSkipSpace(b, checkTrustedSkipAll(t, b, j))
		if b[j] == ',' {
			j = paramSkipSpace(b, j+1)
		}
	}
	return want
}

// checkTrustedNoPanic walks arbitrary input with the trusted functions from
// every offset; they must stay in range and terminate.
func checkTrustedNoPanic(t *testing.T, b []byte) {
	t.Helper()
	step := 1 // every offset of small inputs; the walks are linear each
	if len(b) > 1024 {
		step = len(b) / 256
	}
	for i := -1; i <= len(b)+1; i += step {
		got := jsonSkipTrusted(b, i)
		if got < 0 || got > len(b) || (i >= 0 && i < len(b) && got < i) {
			t.Fatalf("jsonSkipTrusted(%q, %d) = %d: out of range", b, i, got)
		}
		if i >= 0 && i < len(b) && b[i] == '"' {
			if got := jsonStringEndTrusted(b, i); got <= i || got > len(b) {
				t.Fatalf("jsonStringEndTrusted(%q, %d) = %d: out of range", b, i, got)
			}
		}
	}
	if it, ok := jsonTrustedObject(b); ok {
		last := -1
		for it.next() {
			if it.pos <= last || it.pos > len(b) {
				t.Fatalf("jsonTrustedObject(%q): no progress or out of range at %d", b, it.pos)
			}
			last = it.pos
		}
	}
}

// FuzzTrustedSkip checks the trusted walk against the validating scanner:
// on valid JSON, the same value ends at every level and the same object
// members; on any input, no panic and indexes in range.
func FuzzTrustedSkip(f *testing.F) {
	for _, s := range jsonTrustedSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkTrustedNoPanic(t, b)
		if !paramJSONValid(b) {
			return
		}
		checkTrustedSkipAll(t, b, paramSkipSpace(b, 0))

		// Objects: the same members as paramObjectScanner.
		sc, rerr := scanObject(b)
		it, ok := jsonTrustedObject(b)
		if (rerr == nil) != ok {
			t.Fatalf("%q: scanObject err %v, jsonTrustedObject ok %v", b, rerr, ok)
		}
		if !ok {
			return
		}
		for sc.next() {
			if !it.next() {
				t.Fatalf("%q: trusted iterator stopped early (bad %v)", b, it.bad)
			}
			if !bytes.Equal(sc.key, it.key) || !bytes.Equal(sc.val, it.val) {
				t.Fatalf("%q: member %q:%q, trusted %q:%q", b, sc.key, sc.val, it.key, it.val)
			}
		}
		if sc.err != nil {
			t.Fatalf("%q: %v", b, sc.err)
		}
		if it.next() || it.bad {
			t.Fatalf("%q: trusted iterator did not end cleanly (bad %v)", b, it.bad)
		}
	})
}

// ctxMergeRef is ctxMerge as it was before it used the trusted walk: the
// reference model for FuzzCtxMerge.
func ctxMergeRef(ctx, payload []byte) []byte {
	if len(payload) == 0 {
		return ctx
	}
	type member struct{ key, val []byte }
	var members []member
	add := func(key, val []byte) {
		for i := range members {
			if string(members[i].key) == string(key) {
				members[i].val = val
				return
			}
		}
		members = append(members, member{key, val})
	}
	for _, obj := range [][]byte{ctx, payload} {
		sc, err := scanObject(obj)
		if err != nil {
			panic("ctxMergeRef: not an object: " + err.Message)
		}
		for sc.next() {
			add(sc.key, sc.val)
		}
		if sc.err != nil {
			panic("ctxMergeRef: invalid JSON: " + sc.err.Message)
		}
	}
	if len(members) == 0 && len(ctx) > 0 && string(ctx) == "{}" {
		return ctx
	}
	out := []byte{'{'}
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

// paramObjectValid reports whether scanObject accepts b as a whole.
func paramObjectValid(b []byte) bool {
	sc, err := scanObject(b)
	if err != nil {
		return false
	}
	for sc.next() {
	}
	return sc.err == nil
}

// ctxMergeSafe runs ctxMerge, turning its own panics (the assertion that
// its inputs are objects) into ok == false. Any other panic, such as an
// index out of range, propagates.
func ctxMergeSafe(ctx, payload []byte) (out []byte, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if s, isStr := p.(string); !isStr || !strings.HasPrefix(s, "ctxMerge: ") {
				panic(p)
			}
			ok = false
		}
	}()
	return ctxMerge(ctx, payload), true
}

func TestCtxMerge(t *testing.T) {
	for _, tt := range []struct{ ctx, payload, want string }{
		{`{"a":1}`, ``, `{"a":1}`},
		{``, `{"a":1}`, `{"a":1}`},
		{`{}`, `{}`, `{}`},
		{`null`, `{}`, `{}`},
		{`{"a":1,"b":2}`, `{"b":{"x":[1]},"c":null}`, `{"a":1,"b":{"x":[1]},"c":null}`},
		{`{"a\"":1}`, `{"a\u0022":2}`, `{"a\"":2}`},
		{`{"a":1,"a":2}`, `{"b":"}"}`, `{"a":2,"b":"}"}`},
		{` { "a" : [ 1 ] } `, `{"a\\b":"\\"}`, `{"a":[ 1 ],"a\\b":"\\"}`},
		{`{"\ud800":1}`, `{"\ud800":2}`, `{"\\ud800":2}`},
	} {
		got := ctxMerge([]byte(tt.ctx), []byte(tt.payload))
		if string(got) != tt.want {
			t.Errorf("ctxMerge(%s, %s) = %s, want %s", tt.ctx, tt.payload, got, tt.want)
		}
		if ref := ctxMergeRef([]byte(tt.ctx), []byte(tt.payload)); string(ref) != string(got) {
			t.Errorf("ctxMerge(%s, %s) = %s, reference %s", tt.ctx, tt.payload, got, ref)
		}
	}
	// More than 16 members switches to the map index.
	var ctx, payload []string
	for i := range 40 {
		ctx = append(ctx, `"k`+strings.Repeat("x", i)+`":1`)
		if i%3 == 0 {
			payload = append(payload, `"k`+strings.Repeat("x", i)+`":2`, `"n`+strings.Repeat("x", i)+`":3`)
		}
	}
	c, p := []byte("{"+strings.Join(ctx, ",")+"}"), []byte("{"+strings.Join(payload, ",")+"}")
	if got, want := ctxMerge(c, p), ctxMergeRef(c, p); !bytes.Equal(got, want) {
		t.Errorf("ctxMerge of big objects:\n got %s\nwant %s", got, want)
	}
	for _, bad := range []string{`[]`, `1`, `"x"`} {
		if _, ok := ctxMergeSafe([]byte(bad), []byte(`{"a":1}`)); ok {
			t.Errorf("ctxMerge(%s, ...) did not panic", bad)
		}
	}
}

// FuzzCtxMerge checks ctxMerge against the validating reference on valid
// objects (as given and compacted) and that it fails only by its own
// assertion on anything else.
func FuzzCtxMerge(f *testing.F) {
	for _, s := range jsonTrustedSeeds {
		f.Add([]byte(`{"a":1,"b":"x"}`), []byte(s))
		f.Add([]byte(s), []byte(`{"b":2}`))
	}
	f.Add([]byte(`{"n":0,"pad":"xxxx"}`), []byte(`{"n":1,"pad":"yy","z":{"a":[1,"\""]}}`))
	f.Add([]byte(`{"\u0061":1,"b":2}`), []byte(`{"a":3,"\\":4,"\"":5}`))
	f.Fuzz(func(t *testing.T, ctx, payload []byte) {
		got, ok := ctxMergeSafe(ctx, payload)
		if !paramObjectValid(ctx) || !paramObjectValid(payload) {
			return
		}
		if !ok {
			t.Fatalf("ctxMerge(%q, %q) panicked on valid objects", ctx, payload)
		}
		if want := ctxMergeRef(ctx, payload); !bytes.Equal(got, want) {
			t.Fatalf("ctxMerge(%q, %q) = %q, reference %q", ctx, payload, got, want)
		}
		cc, cp := compactJSON(bytes.Clone(ctx)), compactJSON(bytes.Clone(payload))
		if got, want := ctxMerge(cc, cp), ctxMergeRef(cc, cp); !bytes.Equal(got, want) {
			t.Fatalf("ctxMerge(%q, %q) = %q, reference %q", cc, cp, got, want)
		}
		if !paramJSONValid(got) && len(payload) > 0 {
			t.Fatalf("ctxMerge(%q, %q) = %q: not valid JSON", ctx, payload, got)
		}
	})
}

// compactJSONRef is compactJSON as it was before it skipped strings with
// jsonStringEndTrusted to find the first whitespace: the whole value through
// the compacting loop (which TestCompactJSON checks on its own). The
// reference model for FuzzCompactJSON.
func compactJSONRef(v []byte) []byte {
	if bytes.IndexAny(v, " \t\n\r") < 0 {
		return v
	}
	return ctxAppendCompact(nil, v)
}

func TestCompactJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1}`:                      `{"a":1}`,
		` { "a" : [ 1 , 2 ] } `:        `{"a":[1,2]}`,
		`{"a b":"c d"}`:                `{"a b":"c d"}`,
		`{"a\" b":"c\\", "d":"e \" "}`: `{"a\" b":"c\\","d":"e \" "}`,
		"[\"\\u0022 \",\t\n\r1]":       `["\u0022 ",1]`,
		``:                             ``,
	} {
		if got := compactJSON([]byte(in)); string(got) != want {
			t.Errorf("compactJSON(%q) = %q, want %q", in, got, want)
		}
	}
	in := []byte(`{"a":"b c"}`)
	if got := compactJSON(in); &got[0] != &in[0] {
		t.Error("compactJSON copied a value without insignificant whitespace")
	}
}

// FuzzCompactJSON checks compactJSON against the previous implementation
// on any input, valid JSON or not.
func FuzzCompactJSON(f *testing.F) {
	for _, s := range jsonTrustedSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		want := compactJSONRef(bytes.Clone(v))
		if got := compactJSON(bytes.Clone(v)); !bytes.Equal(got, want) {
			t.Fatalf("compactJSON(%q) = %q, reference %q", v, got, want)
		}
	})
}
