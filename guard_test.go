package main

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGuardCompileAccepts(t *testing.T) {
	tests := []struct {
		src  string
		want string // canonical String()
	}{
		{"ctx.a", "ctx.a"},
		{"  ctx.a  ", "ctx.a"},
		{"\u00a0ctx.a\u3000&&\u2028ctx.b\t", "ctx.a && ctx.b"},
		{"ctx.a.b.c", "ctx.a.b.c"},
		{"ctx.a==1", "ctx.a == 1"},
		{"ctx.a != 1", "ctx.a != 1"},
		{"ctx.a > 1", "ctx.a > 1"},
		{"ctx.a >= 1", "ctx.a >= 1"},
		{"ctx.a < 1", "ctx.a < 1"},
		{"ctx.a <= 1", "ctx.a <= 1"},
		{"ctx.a<=-1", "ctx.a <= -1"},
		{"ctx.a == true", "ctx.a == true"},
		{"ctx.a == false", "ctx.a == false"},
		{"ctx.a == null", "ctx.a == null"},
		{`ctx.a == "x"`, `ctx.a == "x"`},
		{`ctx.a == ""`, `ctx.a == ""`},
		{`ctx.a == "a\"b\\c\/d\b\f\n\r\t"`, `ctx.a == "a\"b\\c/d\u0008\u000c\n\r\t"`},
		{`ctx.a == "\u00e9\ud83d\ude00"`, `ctx.a == "é😀"`},
		{`ctx.a == "\ud83d"`, "ctx.a == \"\ufffd\""},
		{`ctx.a == "日本語 ok"`, `ctx.a == "日本語 ok"`},
		{"ctx.a == \"tab\there\"", `ctx.a == "tab\there"`},
		{"ctx.a == 1.5", "ctx.a == 1.5"},
		{"ctx.a == -0", "ctx.a == -0"},
		{"ctx.a == 0.0", "ctx.a == 0"},
		{"ctx.a == 1e5", "ctx.a == 100000"},
		{"ctx.a == 1E+21", "ctx.a == 1e+21"},
		{"ctx.a == 1.5e-3", "ctx.a == 0.0015"},
		{"ctx.a == 1e-400", "ctx.a == 0"},
		{"ctx.name_1.Ünïcödé.名前.x2", "ctx.name_1.Ünïcödé.名前.x2"},
		{"ctx.नाम", "ctx.नाम"},
		{"ctx.length", "ctx.length"},
		{"ctx.items.length > 0", "ctx.items.length > 0"},
		{"ctx.0", "ctx.0"},
		{"!ctx.a", "!ctx.a"},
		{"!!ctx.a", "!!ctx.a"},
		{"!ctx.a == 1", "!ctx.a == 1"},
		{"!(ctx.a == 1)", "!ctx.a == 1"},
		{"(ctx.a)", "ctx.a"},
		{"((((ctx.a))))", "ctx.a"},
		{"ctx.a && ctx.b || ctx.c", "ctx.a && ctx.b || ctx.c"},
		{"ctx.a || ctx.b && ctx.c", "ctx.a || ctx.b && ctx.c"},
		{"(ctx.a || ctx.b) && ctx.c", "(ctx.a || ctx.b) && ctx.c"},
		{"(ctx.a && ctx.b) && ctx.c", "ctx.a && ctx.b && ctx.c"},
		{"ctx.a && (ctx.b && ctx.c)", "ctx.a && ctx.b && ctx.c"},
		{"ctx.a || (ctx.b || ctx.c)", "ctx.a || ctx.b || ctx.c"},
		{"!(ctx.a && ctx.b)", "!(ctx.a && ctx.b)"},
		{"!(ctx.a || ctx.b) || ctx.c", "!(ctx.a || ctx.b) || ctx.c"},
		{"ctx.amount > 100 && ctx.customer.tier == \"gold\"", "ctx.amount > 100 && ctx.customer.tier == \"gold\""},
		{strings.Repeat("(", 64) + "ctx.a" + strings.Repeat(")", 64), "ctx.a"},
		{strings.Repeat("!", 64) + "ctx.a", strings.Repeat("!", 64) + "ctx.a"},
	}
	for _, tt := range tests {
		g, err := compileGuard(tt.src)
		if err != nil {
			t.Errorf("compileGuard(%q): %v", tt.src, err)
			continue
		}
		if diff := cmp.Diff(tt.want, g.String()); diff != "" {
			t.Errorf("compileGuard(%q).String() mismatch (-want +got):\n%s", tt.src, diff)
		}
	}
}

func TestGuardCompileRejects(t *testing.T) {
	tests := []struct {
		src     string
		pos     int
		msgPart string
	}{
		{"", 1, "empty guard expression"},
		{"   \t\n", 1, "empty guard expression"},
		{"a.b", 1, "field must start with 'ctx.'"},
		{"ctx", 1, "field must start with 'ctx.'"},
		{"ctxa.b", 1, "field must start with 'ctx.'"},
		{"true", 1, "field must start with 'ctx.'"},
		{"ctx.", 5, "empty field name"},
		{"ctx.a..b", 7, "empty field name"},
		{"ctx.a.", 7, "empty field name"},
		{"ctx.a. b", 7, "empty field name"},
		{"(ctx.a", 7, "expected ')'"},
		{"(ctx.a == 1 ctx.b)", 13, "expected ')'"},
		{"ctx.a)", 6, "unexpected ')'"},
		{`ctx.a == "abc`, 10, "unterminated string"},
		{`ctx.a == "abc\`, 10, "unterminated string"},
		{`ctx.a == "a\x"`, 12, "invalid escape"},
		{`ctx.a == "a\u12"`, 12, "invalid \\u escape"},
		{`ctx.a == "a\u12G4"`, 12, "invalid \\u escape"},
		{"ctx.a > 1.", 9, "invalid number: '1.'"},
		{"ctx.a > .5", 9, "invalid number: '.5'"},
		{"ctx.a > 01", 9, "invalid number: '01'"},
		{"ctx.a > +1", 9, "invalid number: '+1'"},
		{"ctx.a > -", 9, "invalid number: '-'"},
		{"ctx.a > 1e", 9, "invalid number: '1e'"},
		{"ctx.a > 1e+", 9, "invalid number: '1e+'"},
		{"ctx.a > 1-2", 9, "invalid number: '1-2'"},
		{"ctx.a > 1e400", 9, "out of range"},
		{"ctx.a == 1e400", 10, "out of range"},
		{`ctx.a > "5"`, 9, "expected a number after '>'"},
		{"ctx.a > true", 9, "invalid number: 'true'"},
		{"ctx.a >", 8, "expected a number after '>'"},
		{"ctx.a ==", 9, "expected a value"},
		{"ctx.a == 'x'", 10, "expected a value"},
		{"ctx.a == trueish", 10, "invalid value: 'trueish'"},
		{"ctx.a == nullx", 10, "invalid value: 'nullx'"},
		{"ctx.a == ctx.b", 10, "invalid value: 'ctx.b'"},
		{"ctx.a foo", 7, "unexpected 'foo'"},
		{"ctx.a and ctx.b", 7, "unexpected 'and'"},
		{"ctx.a & ctx.b", 7, "unknown operator '&'"},
		{"ctx.a | ctx.b", 7, "unknown operator '|'"},
		{"ctx.a = 1", 7, "unknown operator '='"},
		{"ctx.a === 1", 9, "expected a value"},
		{"ctx.a == 1 ctx.b", 12, "unexpected 'ctx.b'"},
		{`ctx.a == "x"y`, 13, "unexpected 'y'"},
		{"(ctx.a) == 5", 9, "unexpected '='"},
		{"ctx.x > 1e5x", 9, "invalid number: '1e5x'"},
		{"ctx.a-b > 1", 6, "unexpected '-b'"},
		{"ctx.a &&", 9, "end of input"},
		{"ctx.a && && ctx.b", 10, "expected a field"},
		{"&& ctx.a", 1, "expected a field"},
		{"!", 2, "end of input"},
		{"()", 2, "expected a field"},
		{"ctx.é.\u00a0", 7, "empty field name"},
		{"ctx.日本 > x", 10, "invalid number: 'x'"},
		{"ctx.a == \"\xff\"", 11, "invalid UTF-8"},
		{strings.Repeat("(", 65) + "ctx.a" + strings.Repeat(")", 65), 65, "nested too deeply"},
		{strings.Repeat("!", 65) + "ctx.a", 65, "nested too deeply"},
		{strings.Repeat("!(", 33) + "ctx.a" + strings.Repeat(")", 33), 65, "nested too deeply"},
	}
	for _, tt := range tests {
		g, err := compileGuard(tt.src)
		if err == nil {
			t.Errorf("compileGuard(%q) = %q, want error", tt.src, g.String())
			continue
		}
		var ge *guardError
		if !errors.As(err, &ge) {
			t.Errorf("compileGuard(%q) error %T is not *guardError", tt.src, err)
			continue
		}
		if ge.Pos != tt.pos || !strings.Contains(ge.Msg, tt.msgPart) {
			t.Errorf("compileGuard(%q) = %v, want position %d and message containing %q", tt.src, err, tt.pos, tt.msgPart)
		}
	}
}

func TestGuardErrorString(t *testing.T) {
	_, err := compileGuard("ctx.a foo")
	if diff := cmp.Diff("at position 7: unexpected 'foo'", err.Error()); diff != "" {
		t.Errorf("Error() mismatch (-want +got):\n%s", diff)
	}
}

// guardEvalCase runs one guard on one ctx.
type guardEvalCase struct {
	expr string
	ctx  string
	want bool
}

func guardRunEvalCases(t *testing.T, tests []guardEvalCase) {
	t.Helper()
	for _, tt := range tests {
		g, err := compileGuard(tt.expr)
		if err != nil {
			t.Errorf("compileGuard(%q): %v", tt.expr, err)
			continue
		}
		if got := g.eval([]byte(tt.ctx)); got != tt.want {
			t.Errorf("eval(%q, %s) = %v, want %v", tt.expr, tt.ctx, got, tt.want)
		}
		if paramJSONValid([]byte(tt.ctx)) {
			if got := g.evalValid([]byte(tt.ctx)); got != tt.want {
				t.Errorf("evalValid(%q, %s) = %v, want %v", tt.expr, tt.ctx, got, tt.want)
			}
		}
		if oracle, ok := guardOracleEval(g, []byte(tt.ctx)); ok && oracle != tt.want {
			t.Errorf("oracle(%q, %s) = %v, want %v", tt.expr, tt.ctx, oracle, tt.want)
		}
	}
}

const guardTestCtx = `{
	"n": 5, "neg": -2.5, "zero": 0, "negzero": -0.0, "big": 1e21, "exp": 1.5E-3,
	"t": true, "f": false, "nul": null,
	"s": "hello", "empty": "", "five": "5",
	"arr": [1, "two", {"three": 3}, [4]], "earr": [],
	"obj": {"x": 1, "inner": {"y": "deep"}}, "eobj": {},
	"lenobj": {"length": 42}, "lenstr": {"length": "long"},
	"uni": "héllo 😀", "名前": "太郎", "ünï": {"ç": 1},
	"esc": "a\"b\\c\nd\u00e9\ud83d\ude00",
	"k\"q": 1, "k\\b": 2, "k\u00e9y": 3, "\ud83d\ude00": 4, "k\/s": 5,
	"dup": 1, "dup": 2,
	"ndup": {"a": 1}, "ndup": {"b": 2}
}`

func TestGuardEvalOperators(t *testing.T) {
	c := guardTestCtx
	guardRunEvalCases(t, []guardEvalCase{
		// numbers
		{"ctx.n == 5", c, true},
		{"ctx.n == 5.0", c, true},
		{"ctx.n == 5e0", c, true},
		{"ctx.n == 0.5e1", c, true},
		{"ctx.n == 6", c, false},
		{"ctx.n != 5", c, false},
		{"ctx.n != 6", c, true},
		{"ctx.n > 4", c, true},
		{"ctx.n > 5", c, false},
		{"ctx.n >= 5", c, true},
		{"ctx.n >= 5.0000001", c, false},
		{"ctx.n < 6", c, true},
		{"ctx.n < 5", c, false},
		{"ctx.n <= 5", c, true},
		{"ctx.n <= 4.999", c, false},
		{"ctx.neg == -2.5", c, true},
		{"ctx.neg < -2", c, true},
		{"ctx.neg > -2.6", c, true},
		{"ctx.big == 1e21", c, true},
		{"ctx.big == 1000000000000000000000", c, true},
		{"ctx.big > 1e20", c, true},
		{"ctx.exp == 0.0015", c, true},
		{"ctx.exp == 1.5e-3", c, true},
		{"ctx.exp < 2E-3", c, true},
		{"ctx.zero == -0", c, true},
		{"ctx.negzero == 0", c, true},
		// exact: no epsilon
		{"ctx.n == 5.000000000000001", c, false},
		{"ctx.n != 5.000000000000001", c, true},
		// bools and null
		{"ctx.t == true", c, true},
		{"ctx.t == false", c, false},
		{"ctx.t != false", c, true},
		{"ctx.f == false", c, true},
		{"ctx.f != true", c, true},
		{"ctx.nul == null", c, true},
		{"ctx.nul != null", c, false},
		{"ctx.missing == null", c, true},
		{"ctx.missing != null", c, false},
		// strings
		{`ctx.s == "hello"`, c, true},
		{`ctx.s == "hell"`, c, false},
		{`ctx.s == "hello!"`, c, false},
		{`ctx.s == "Hello"`, c, false},
		{`ctx.s != "hello"`, c, false},
		{`ctx.s != "x"`, c, true},
		{`ctx.empty == ""`, c, true},
		{`ctx.uni == "héllo 😀"`, c, true},
		{`ctx.uni == "h\u00e9llo \ud83d\ude00"`, c, true},
		{`ctx.esc == "a\"b\\c\nd\u00e9😀"`, c, true},
		{`ctx.esc == "a\"b\\c\nd\u00e9"`, c, false},
		{`ctx.esc == "a\"b\\c\nd\u00e9😀x"`, c, false},
		// type mismatch: == false, != true
		{`ctx.five == 5`, c, false},
		{`ctx.five != 5`, c, true},
		{`ctx.n == "5"`, c, false},
		{`ctx.n != "5"`, c, true},
		{`ctx.t == 1`, c, false},
		{`ctx.zero == false`, c, false},
		{`ctx.zero == null`, c, false},
		{`ctx.nul == false`, c, false},
		{`ctx.empty == null`, c, false},
		{`ctx.missing != "x"`, c, true},
		{`ctx.missing == "x"`, c, false},
		// arrays and objects never equal anything
		{`ctx.earr == null`, c, false},
		{`ctx.eobj == null`, c, false},
		{`ctx.arr != 1`, c, true},
		{`ctx.obj != null`, c, true},
		// ordering only on numbers
		{`ctx.five > 1`, c, false},
		{`ctx.five < 10`, c, false},
		{`!(ctx.five > 1)`, c, true},
		{`ctx.t > 0`, c, false},
		{`ctx.nul <= 0`, c, false},
		{`ctx.missing >= 0`, c, false},
		{`ctx.arr > 0`, c, false},
		{`ctx.obj < 0`, c, false},
	})
}

func TestGuardEvalTruthiness(t *testing.T) {
	c := guardTestCtx
	guardRunEvalCases(t, []guardEvalCase{
		{"ctx.n", c, true},
		{"ctx.neg", c, true},
		{"ctx.zero", c, false},
		{"ctx.negzero", c, false},
		{"ctx.exp", c, true},
		{"ctx.t", c, true},
		{"ctx.f", c, false},
		{"ctx.nul", c, false},
		{"ctx.missing", c, false},
		{"ctx.s", c, true},
		{"ctx.empty", c, false},
		{"ctx.arr", c, true},
		{"ctx.earr", c, false},
		{"ctx.obj", c, true},
		{"ctx.eobj", c, false},
		{"!ctx.eobj", c, true},
		{"!ctx.n", c, false},
		{"ctx.x", `{"x": [ ]}`, false},
		{"ctx.x", `{"x": { }}`, false},
		{"ctx.x", `{"x": [ 0 ]}`, true},
		{"ctx.x", `{"x": "0"}`, true},
		{"ctx.x", `{"x": "\u0000"}`, true},
	})
}

func TestGuardEvalPaths(t *testing.T) {
	c := guardTestCtx
	guardRunEvalCases(t, []guardEvalCase{
		{"ctx.obj.x == 1", c, true},
		{`ctx.obj.inner.y == "deep"`, c, true},
		{"ctx.obj.inner.y.z == null", c, true},
		{"ctx.obj.missing == null", c, true},
		{"ctx.obj.missing.deeper == null", c, true},
		// non-object intermediates give null
		{"ctx.n.x == null", c, true},
		{"ctx.s.x == null", c, true},
		{"ctx.t.x == null", c, true},
		{"ctx.nul.x == null", c, true},
		{"ctx.arr.0 == null", c, true},
		{"ctx.arr.three == null", c, true},
		{"ctx.arr.length.x == null", c, true},
		// Unicode names and escaped keys in ctx
		{`ctx.名前 == "太郎"`, c, true},
		{`ctx.ünï.ç == 1`, c, true},
		{`ctx.kéy == 3`, c, true},
		// duplicate keys: last wins, at every level
		{"ctx.dup == 2", c, true},
		{"ctx.dup == 1", c, false},
		{"ctx.ndup.b == 2", c, true},
		{"ctx.ndup.a == null", c, true},
		{"ctx.a == 3", `{"a":1,"a":2,"b":{"a":9},"a":3}`, true},
		// escaped key spellings
		{"ctx.abc == 1", `{"\u0061b\u0063": 1}`, true},
		{"ctx.abc == 1", `{"ab": 1}`, false},
		{"ctx.abc == 1", `{"abcd": 1}`, false},
		{"ctx.é == 1", `{"\u00E9": 1}`, true},
		{"ctx.é == 1", `{"\u00e": 1}`, false},
		{"ctx.x == 1", `{"\u0078": 1}`, true},
		{"ctx.a_b == 1", `{"a\u005fb": 1}`, true},
		{"ctx.𝐀 == 1", `{"\ud835\udc00": 1}`, true},
		// whitespace in ctx
		{"ctx.a.b == true", " \n\t{ \"a\" : { \"b\" :\ttrue } } \n", true},
		{"ctx.a == 1", `{"a":1}`, true},
	})
	if _, err := compileGuard("ctx.😀"); err == nil {
		t.Errorf("compileGuard(ctx.😀) succeeded; emoji are not name characters")
	}
}

func TestGuardEvalLength(t *testing.T) {
	c := guardTestCtx
	guardRunEvalCases(t, []guardEvalCase{
		{"ctx.arr.length == 4", c, true},
		{"ctx.arr.length > 3", c, true},
		{"ctx.arr.length", c, true},
		{"ctx.earr.length == 0", c, true},
		{"ctx.earr.length", c, false},
		{"ctx.s.length == 5", c, true},
		{"ctx.empty.length == 0", c, true},
		{"ctx.uni.length == 7", c, true},         // code points, not bytes
		{"ctx.esc.length == 9", c, true},         // escapes decoded, pair = one
		{"ctx.lenobj.length == 42", c, true},     // real key wins
		{`ctx.lenstr.length == "long"`, c, true}, // real key wins
		{"ctx.obj.length == null", c, true},      // object without key
		{"ctx.n.length == null", c, true},
		{"ctx.t.length == null", c, true},
		{"ctx.missing.length == null", c, true},
		{"ctx.arr.length.length == null", c, true},
		{"ctx.a.length == 3", `{"a":[[1,2],{"x":[3]},"s,]"]}`, true},
		{"ctx.a.length == 2", `{"a":"\ud83d\ude00\ud83d"}`, true},
		{"ctx.length == 1", `{"length": 1}`, true},
		{"ctx.length == null", `{"a": 1}`, true},
	})
}

func TestGuardEvalPrecedence(t *testing.T) {
	tt := `{"t": true, "f": false, "one": 1}`
	guardRunEvalCases(t, []guardEvalCase{
		{"ctx.t || ctx.f && ctx.f", tt, true}, // t || (f && f)
		{"(ctx.t || ctx.f) && ctx.f", tt, false},
		{"ctx.f && ctx.f || ctx.t", tt, true}, // (f && f) || t
		{"ctx.f && (ctx.f || ctx.t)", tt, false},
		{"!ctx.f && ctx.f", tt, false}, // (!f) && f
		{"!(ctx.f && ctx.f)", tt, true},
		{"!ctx.t || ctx.t", tt, true}, // (!t) || t
		{"!(ctx.t || ctx.t)", tt, false},
		{"!ctx.one == 1", tt, false}, // !(one == 1)
		{"!ctx.one == 2", tt, true},
		{"!!ctx.t", tt, true},
		{"!!!ctx.t", tt, false},
		{"ctx.f || ctx.f || ctx.t", tt, true},
		{"ctx.t && ctx.t && ctx.f", tt, false},
		{"ctx.t && ctx.t && ctx.t", tt, true},
		{"ctx.f || ctx.t && ctx.one > 0 && !ctx.f", tt, true},
	})
}

// TestGuardEvalChains evaluates || and && chains of two to four operands
// against every combination of true and false operands, written flat and
// with parentheses (both compile to one flat node), so that an evaluator
// that stops early or wrongly at some position of a chain (say the third
// operand of an or-chain) is caught.
func TestGuardEvalChains(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	var cases []guardEvalCase
	for n := 2; n <= 4; n++ {
		for bits := 0; bits < 1<<n; bits++ {
			fields := make([]string, n)
			members := make([]string, n)
			some, all := false, true
			for i := 0; i < n; i++ {
				v := bits&(1<<i) != 0
				some, all = some || v, all && v
				fields[i] = "ctx." + names[i]
				members[i] = strconv.Quote(names[i]) + ":" + strconv.FormatBool(v)
			}
			ctx := "{" + strings.Join(members, ",") + "}"
			for _, c := range []struct {
				op   string
				want bool
			}{{"||", some}, {"&&", all}} {
				flat := strings.Join(fields, " "+c.op+" ")
				left := "(" + strings.Join(fields[:n-1], " "+c.op+" ") + ") " + c.op + " " + fields[n-1]
				right := fields[0] + " " + c.op + " (" + strings.Join(fields[1:], " "+c.op+" ") + ")"
				for _, e := range []string{flat, left, right} {
					cases = append(cases, guardEvalCase{e, ctx, c.want})
				}
			}
		}
	}
	// Falsy and truthy values of every kind, not only booleans.
	falsy := `{"f": false, "z": 0, "e": "", "nul": null, "earr": [], "eobj": {}}`
	truthy := `{"t": true, "one": 1, "s": "x", "arr": [0], "obj": {"k": 0}}`
	cases = append(cases,
		guardEvalCase{"ctx.f || ctx.z || ctx.e", falsy, false},
		guardEvalCase{"ctx.nul || ctx.missing || ctx.f", falsy, false},
		guardEvalCase{"ctx.z || ctx.e || ctx.nul || ctx.f", falsy, false},
		guardEvalCase{"ctx.earr || ctx.eobj || ctx.f", falsy, false},
		guardEvalCase{"ctx.t && ctx.one && ctx.s", truthy, true},
		guardEvalCase{"ctx.s && ctx.arr && ctx.obj", truthy, true},
		guardEvalCase{"ctx.t && ctx.one && ctx.s && ctx.arr && ctx.obj", truthy, true},
		guardEvalCase{"ctx.t && ctx.one && ctx.missing", truthy, false},
		guardEvalCase{"ctx.missing || ctx.missing || ctx.missing", `{}`, false},
		guardEvalCase{"ctx.missing && ctx.missing && ctx.missing", `{}`, false},
	)
	guardRunEvalCases(t, cases)

	// The chains above must really be one node with every operand as a
	// child, or they would not test a chain of three.
	for _, src := range []string{"ctx.a || ctx.b || ctx.c", "(ctx.a || ctx.b) || ctx.c", "ctx.a || (ctx.b || ctx.c)"} {
		for _, op := range []struct {
			text string
			kind guardKind
		}{{"||", guardOr}, {"&&", guardAnd}} {
			src := strings.ReplaceAll(src, "||", op.text)
			g, err := compileGuard(src)
			if err != nil {
				t.Fatalf("compileGuard(%q): %v", src, err)
			}
			if g.root.kind != op.kind || len(g.root.kids) != 3 {
				t.Errorf("compileGuard(%q): root kind %d with %d kids, want kind %d with 3", src, g.root.kind, len(g.root.kids), op.kind)
			}
		}
	}
}

func TestGuardEvalNonObjectAndMalformedCtx(t *testing.T) {
	exprs := []string{
		"ctx.a", "!ctx.a", "ctx.a == null", "ctx.a != null", "ctx.a == 1", "ctx.a > 0",
		"ctx.a.length == 0", `ctx.a == "x"`, "ctx.a.b",
	}
	ctxs := []string{
		"", " ", "null", "1", `"a"`, "[]", `[{"a":1}]`, "true",
		`{`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":01}`,
		`{"a":1x}`, `{"a":tru}`, `{"a":"x}`, `{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}",
		`{"a":[1,2}`, `{"a":{"b":1]}`, `{"a":[1,]}`, `{"a":{"b"}}`, `{"a":1}}`, `{"a":1,"b":[`,
		`{"a":-}`, `{"a":1.}`, `{"a":1e}`, `{"a":.5}`, `{"a":+1}`, "{\"a\":\xff}", "{\"\xff\":1}",
		`{"a":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
		"\x00", "{\x00", `{"a":1,"a":`,
	}
	for _, e := range exprs {
		g, err := compileGuard(e)
		if err != nil {
			t.Fatalf("compileGuard(%q): %v", e, err)
		}
		null, _ := compileGuard(strings.Replace(e, "ctx.a", "ctx.missing", 1))
		for _, c := range ctxs {
			got := g.eval([]byte(c)) // must not panic
			want := null.eval([]byte(`{}`))
			if got != want {
				t.Errorf("eval(%q, %q) = %v, want %v (as if null)", e, c, got, want)
			}
		}
	}
	// Partially readable objects: an unreadable object is null as a whole.
	guardRunEvalCases(t, []guardEvalCase{
		{"ctx.a == 1", `{"a":1,"b":}`, false},
		{"ctx.a == 1", `{"a":1} trailing`, false},
		{"ctx.a == 1", "{\"a\":1} \r\n\t", true},
		{"ctx.b.c == 1", `{"a":[},"b":{"c":1}}`, false},
		{"ctx.a == 1", `{"a":1,"b":[` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `]}`, true},
		{"ctx.a.length == 1", `{"a":[` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `]}`, true},
		{"ctx.a == 1", `{"a":1,"b":[` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `]}`, false},
	})
	var nilGuard *guard
	if !nilGuard.eval([]byte(`{}`)) || nilGuard.String() != "" {
		t.Errorf("nil guard should pass and print as empty")
	}
}

// guardRoundTripCtxs are contexts used to check that String() preserves meaning.
var guardRoundTripCtxs = []string{
	`{}`,
	guardTestCtx,
	`{"a": 1, "b": 0, "c": "x", "d": [1], "t": true, "f": false}`,
	`{"a": 0, "b": 1, "c": "", "d": [], "t": false, "f": true}`,
	`{"a": {"b": {"c": 2}}, "x": -1e3}`,
	`not json`,
}

func TestGuardStringRoundTrip(t *testing.T) {
	srcs := []string{
		"ctx.a",
		"!ctx.a == 1",
		"!(ctx.a == 1) && ctx.b",
		"ctx.a && ctx.b || ctx.c && !ctx.d",
		"(ctx.a || ctx.b) && (ctx.c || !(ctx.t && ctx.f))",
		"!((ctx.a)) || ((ctx.b && (ctx.c)))",
		`ctx.c == "x" || ctx.c != "\n\"\\\u0001" && ctx.a.b.c >= 2`,
		"ctx.x <= -1e3 && ctx.x > -1000.5 && ctx.x < 1.5E+300",
		"ctx.d.length == 1 || ctx.s.length != 5",
		"ctx.名前 == \"太郎\" && ctx.kéy == 3",
		strings.Repeat("(", 30) + "ctx.a || ctx.b" + strings.Repeat(") && ctx.c", 30),
		strings.Repeat("!(", 32) + "ctx.a || ctx.b" + strings.Repeat(")", 32),
		strings.Repeat("(ctx.a || ", 64) + "ctx.b" + strings.Repeat(")", 64),
		strings.Repeat("ctx.a && (", 64) + "ctx.b || ctx.c" + strings.Repeat(")", 64),
	}
	for _, src := range srcs {
		g, err := compileGuard(src)
		if err != nil {
			t.Errorf("compileGuard(%q): %v", src, err)
			continue
		}
		s := g.String()
		g2, err := compileGuard(s)
		if err != nil {
			t.Errorf("compileGuard(String() of %q = %q): %v", src, s, err)
			continue
		}
		if diff := cmp.Diff(s, g2.String()); diff != "" {
			t.Errorf("String() not a fixpoint for %q (-first +second):\n%s", src, diff)
		}
		for _, c := range guardRoundTripCtxs {
			if a, b := g.eval([]byte(c)), g2.eval([]byte(c)); a != b {
				t.Errorf("%q and %q disagree on %s: %v vs %v", src, s, c, a, b)
			}
		}
	}
}

const guardBenchCtx = `{"id":"order-1234","amount":250.75,"currency":"EUR","items":[{"sku":"A1","qty":2},{"sku":"B2","qty":1}],"customer":{"id":"c-9","tier":"gold","since":2019,"flags":{"vip":true}},"status":"open","notes":"please deliver after 5pm","retries":0}`

const guardBenchExpr = `ctx.amount > 100 && ctx.customer.tier == "gold"`

func TestGuardEvalAllocs(t *testing.T) {
	ctx := []byte(guardBenchCtx)
	for _, src := range []string{
		guardBenchExpr,
		`ctx.customer.flags.vip && ctx.retries == 0 && ctx.currency != "USD" || ctx.missing`,
		`ctx.items.length >= 2 && ctx.notes.length > 3 && ctx.customer.since <= 2020.5`,
		`ctx.status == "open" && ctx.amount == 250.75 && !ctx.customer.flags.vip == false`,
	} {
		g, err := compileGuard(src)
		if err != nil {
			t.Fatalf("compileGuard(%q): %v", src, err)
		}
		allocs := testing.AllocsPerRun(200, func() { g.eval(ctx) })
		if allocs != 0 {
			t.Errorf("eval(%q) allocates %v times per run, want 0", src, allocs)
		}
	}
	g, _ := compileGuard(guardBenchExpr)
	if !g.eval(ctx) {
		t.Errorf("benchmark guard should pass on the benchmark ctx")
	}
	esc := []byte(`{"k\u00e9y":"\u00e9\ud83d\ude00","amount":1e3,"customer":{"tier":"gold"}}`)
	g2, _ := compileGuard(`ctx.kéy == "é😀" && ` + guardBenchExpr)
	if !g2.eval(esc) {
		t.Errorf("escaped ctx should pass")
	}
	if allocs := testing.AllocsPerRun(200, func() { g2.eval(esc) }); allocs != 0 {
		t.Errorf("eval on escaped keys allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkGuardEval(b *testing.B) {
	g, err := compileGuard(guardBenchExpr)
	if err != nil {
		b.Fatal(err)
	}
	ctx := []byte(guardBenchCtx)
	b.ReportAllocs()
	b.SetBytes(int64(len(ctx)))
	for b.Loop() {
		if !g.eval(ctx) {
			b.Fatal("guard failed")
		}
	}
}

func BenchmarkGuardCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := compileGuard(guardBenchExpr); err != nil {
			b.Fatal(err)
		}
	}
}

func TestGuardConcurrentEval(t *testing.T) {
	g, err := compileGuard(guardBenchExpr + ` && ctx.items.length == 2`)
	if err != nil {
		t.Fatal(err)
	}
	ctx := []byte(guardBenchCtx)
	done := make(chan bool)
	for range 4 {
		go func() {
			ok := true
			for range 200 {
				ok = ok && g.eval(ctx)
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Errorf("concurrent eval returned false")
		}
	}
}

// TestGuardStringScanBoundaries moves quotes, escapes, control bytes and
// multi-byte characters across the 8-byte word boundaries of the string
// scanner.
func TestGuardStringScanBoundaries(t *testing.T) {
	specials := []struct{ raw, decoded string }{
		{`\"`, `"`}, {`\\`, `\`}, {`\n`, "\n"}, {`\u00e9`, "é"}, {"é", "é"}, {"😀", "😀"}, {`\ud83d\ude00`, "😀"},
	}
	for n := 0; n < 20; n++ {
		for at := 0; at <= n; at++ {
			for _, sp := range specials {
				pad := strings.Repeat("x", n)
				raw := pad[:at] + sp.raw + pad[at:]
				dec := pad[:at] + sp.decoded + pad[at:]
				ctx := `{"p":"` + raw + `","k` + raw + `":"` + raw + `","n":1}`
				for _, tt := range []guardEvalCase{
					{"ctx.p == " + guardTestQuote(dec), ctx, true},
					{"ctx.p == " + guardTestQuote(dec+"x"), ctx, false},
					{"ctx.p.length == " + strconv.Itoa(len([]rune(dec))), ctx, true},
					{"ctx.n == 1", ctx, true},
				} {
					g, err := compileGuard(tt.expr)
					if err != nil {
						t.Fatalf("compileGuard(%q): %v", tt.expr, err)
					}
					if got := g.eval([]byte(tt.ctx)); got != tt.want {
						t.Fatalf("eval(%q, %s) = %v, want %v", tt.expr, tt.ctx, got, tt.want)
					}
				}
				// A raw control byte anywhere makes the object unreadable.
				bad := `{"n":1,"p":"` + pad[:at] + "\x01" + pad[at:] + `"}`
				if g, _ := compileGuard("ctx.n == 1"); g.eval([]byte(bad)) {
					t.Fatalf("eval on %q should see an unreadable ctx", bad)
				}
			}
		}
	}
}

func guardTestQuote(s string) string {
	var sb strings.Builder
	guardWriteQuoted(&sb, s)
	return sb.String()
}

func BenchmarkGuardEvalLongString(b *testing.B) {
	g, err := compileGuard(guardBenchExpr)
	if err != nil {
		b.Fatal(err)
	}
	ctx := []byte(`{"notes":"` + strings.Repeat("lorem ipsum dolor sit amet ", 40) + `","amount":250.75,"customer":{"tier":"gold"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(ctx)))
	for b.Loop() {
		if !g.eval(ctx) {
			b.Fatal("guard failed")
		}
	}
}
