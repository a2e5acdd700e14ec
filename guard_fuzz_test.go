package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"unicode/utf8"
)

// FuzzGuard compiles arbitrary source and evaluates it on arbitrary ctx
// bytes: nothing may panic, errors are *guardError with a sane position, and
// a compiled guard's String() must compile back to a guard that prints the
// same and evaluates identically.
func FuzzGuard(f *testing.F) {
	seeds := []struct{ src, ctx string }{
		{`ctx.amount > 100 && ctx.customer.tier == "gold"`, guardBenchCtx},
		{`ctx.a`, `{"a":1}`},
		{`!ctx.a == 1 || ctx.b != null`, `{"a":1,"b":null}`},
		{`(ctx.a || ctx.b) && !(ctx.c && ctx.d)`, `{"a":0,"b":[],"c":{},"d":""}`},
		{`ctx.items.length >= 2 && ctx.name.length < 10`, `{"items":[1,[2],{"3":3}],"name":"h\u00e9llo"}`},
		{`ctx.x == 1.5e-3 || ctx.x <= -2E+10`, `{"x":0.0015}`},
		{`ctx.s == "a\"b\\c\n\u00e9\ud83d\ude00"`, `{"s":"a\"b\\c\n\u00e9\ud83d\ude00"}`},
		{`ctx.名前 == "太郎" && ctx.kéy`, `{"\u540d\u524d":"太郎","k\u00e9y":true}`},
		{`ctx.dup == 2`, `{"dup":1,"dup":2}`},
		{`ctx.a.b.c == false`, `{"a":{"b":"not an object"}}`},
		{`ctx.a == trueish`, `{"a":true}`},
		{`((ctx.a)) && ctx.b.length`, `{"a":1,"b":"x"`},
		{`ctx.a & ctx.b`, `[1,2,3]`},
		{`ctx.length == 1`, `{"length":1}`},
	}
	for _, s := range seeds {
		f.Add(s.src, []byte(s.ctx))
	}
	fixed := [][]byte{
		[]byte(`{}`),
		[]byte(guardTestCtx),
		[]byte(guardBenchCtx),
		[]byte(`{"a":1,"b":0,"c":"x","d":[1],"e":{"f":true},"length":3}`),
		[]byte(`{"a":0,"b":-1.5e3,"c":"","d":[],"e":{},"f":null}`),
	}
	f.Fuzz(func(t *testing.T, src string, ctx []byte) {
		g, err := compileGuard(src)
		if err != nil {
			var ge *guardError
			if !errors.As(err, &ge) {
				t.Fatalf("compileGuard(%q): error %T is not *guardError", src, err)
			}
			if ge.Pos < 1 || ge.Pos > len([]rune(src))+1 {
				t.Fatalf("compileGuard(%q): position %d out of range", src, ge.Pos)
			}
			return
		}
		s := g.String()
		g2, err := compileGuard(s)
		if err != nil {
			t.Fatalf("compileGuard(%q) ok, but its String() %q does not compile: %v", src, s, err)
		}
		if s2 := g2.String(); s2 != s {
			t.Fatalf("String() not stable for %q: %q then %q", src, s, s2)
		}
		for _, c := range append(fixed, ctx) {
			a, b := g.eval(c), g2.eval(c)
			if a != b {
				t.Fatalf("%q and its String() %q disagree on ctx %q: %v vs %v", src, s, c, a, b)
			}
			if paramJSONValid(c) {
				if v := g.evalValid(c); v != a {
					t.Fatalf("evalValid(%q, %q) = %v, eval says %v", src, c, v, a)
				}
			}
			if want, ok := guardOracleEval(g, c); ok && a != want {
				t.Fatalf("eval(%q, %q) = %v, but the encoding/json oracle says %v", src, c, a, want)
			}
		}
	})
}

// guardOracleEval evaluates g the slow way: decode ctx with encoding/json
// (invalid JSON or a non-object means every path is null) and walk the
// decoded values. ok is false for inputs where the fast evaluator is allowed
// to differ: invalid UTF-8 (encoding/json rewrites it, eval compares bytes).
func guardOracleEval(g *guard, ctx []byte) (result, ok bool) {
	if !utf8.Valid(ctx) {
		return false, false
	}
	var root any
	d := json.NewDecoder(bytes.NewReader(ctx))
	d.UseNumber()
	if err := d.Decode(&root); err != nil || len(bytes.TrimLeft(ctx[d.InputOffset():], " \t\r\n")) != 0 {
		root = nil // invalid JSON or trailing data
	}
	return guardOracleNode(g.root, root), true
}

func guardOracleNode(n *guardNode, root any) bool {
	switch n.kind {
	case guardOr:
		for _, k := range n.kids {
			if guardOracleNode(k, root) {
				return true
			}
		}
		return false
	case guardAnd:
		for _, k := range n.kids {
			if !guardOracleNode(k, root) {
				return false
			}
		}
		return true
	case guardNot:
		return !guardOracleNode(n.kids[0], root)
	}
	v := root
	for i, name := range n.path {
		switch x := v.(type) {
		case map[string]any:
			v = x[name] // missing: nil
		case []any:
			if name == "length" && i == len(n.path)-1 {
				v = json.Number(strconv.Itoa(len(x)))
			} else {
				v = nil
			}
		case string:
			if name == "length" && i == len(n.path)-1 {
				v = json.Number(strconv.Itoa(utf8.RuneCountInString(x)))
			} else {
				v = nil
			}
		default:
			v = nil
		}
	}
	if n.kind == guardTruthy {
		switch x := v.(type) {
		case bool:
			return x
		case json.Number:
			f, _ := strconv.ParseFloat(string(x), 64)
			return f != 0
		case string:
			return x != ""
		case []any:
			return len(x) > 0
		case map[string]any:
			return len(x) > 0
		}
		return false
	}
	eq := false
	switch x := v.(type) {
	case nil:
		eq = n.lit.typ == guardTNull
	case bool:
		eq = n.lit.typ == guardTBool && n.lit.b == x
	case string:
		eq = n.lit.typ == guardTString && n.lit.s == x
	case json.Number:
		f, _ := strconv.ParseFloat(string(x), 64)
		eq = n.lit.typ == guardTNumber && n.lit.n == f
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
	switch n.op {
	case guardOpEq:
		return eq
	case guardOpNe:
		return !eq
	}
	return false // ordering on a non-number
}
