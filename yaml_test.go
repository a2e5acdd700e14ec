package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Shorthands for expected trees.
func ys(line int, v string) *yamlNode { return &yamlNode{Kind: yamlScalar, Line: line, Value: v} }
func ysq(line int, v string, st yamlStyle) *yamlNode {
	return &yamlNode{Kind: yamlScalar, Line: line, Value: v, Style: st}
}
func yl(line int, items ...*yamlNode) *yamlNode {
	return &yamlNode{Kind: yamlList, Line: line, Items: items}
}
func ym(line int, entries ...yamlEntry) *yamlNode {
	return &yamlNode{Kind: yamlMap, Line: line, Entries: entries}
}
func ye(line int, key string, v *yamlNode) yamlEntry {
	return yamlEntry{Key: key, Line: line, Value: v}
}

func TestYAMLParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *yamlNode
	}{
		{"empty document", "", ym(1)},
		{"only comments", "# nothing\n\n   # here\n", ym(1)},
		{"document start", "---\na: 1\n", ym(2, ye(2, "a", ys(2, "1")))},
		{"document start with comment", "--- # cfg\na: 1\n", ym(2, ye(2, "a", ys(2, "1")))},
		{"nested maps", "a:\n  b:\n    c: x\n  d: y\ne: z\n",
			ym(1, ye(1, "a", ym(2, ye(2, "b", ym(3, ye(3, "c", ys(3, "x")))), ye(4, "d", ys(4, "y")))), ye(5, "e", ys(5, "z")))},
		{"indent by four", "a:\n    b: 1\n    c: 2\n",
			ym(1, ye(1, "a", ym(2, ye(2, "b", ys(2, "1")), ye(3, "c", ys(3, "2")))))},
		{"comments everywhere", "# head\na: 1 # one\n  # indented comment\nb: x#y\nc: 'q # not a comment' # but this is\n",
			ym(2, ye(2, "a", ys(2, "1")), ye(4, "b", ys(4, "x#y")), ye(5, "c", ysq(5, "q # not a comment", yamlSingleQuoted)))},
		{"blank lines and trailing spaces", "a:   \n\n  b: 1   \n\n",
			ym(1, ye(1, "a", ym(3, ye(3, "b", ys(3, "1")))))},
		{"CRLF and BOM", "\ufeffa: 1\r\nb: 2\r\n", ym(1, ye(1, "a", ys(1, "1")), ye(2, "b", ys(2, "2")))},
		{"plain scalars keep inner colons and spaces", "u: http://h:1/p\nt: two words here\n",
			ym(1, ye(1, "u", ys(1, "http://h:1/p")), ye(2, "t", ys(2, "two words here")))},
		{"single quoted", `a: 'it''s'`, ym(1, ye(1, "a", ysq(1, "it's", yamlSingleQuoted)))},
		{"double quoted escapes", `a: "t\tn\nq\"b\\s\/x\x41u\u00e9U\U0001F600"`,
			ym(1, ye(1, "a", ysq(1, "t\tn\nq\"b\\s/xAu\u00e9U\U0001F600", yamlDoubleQuoted)))},
		{"quoted keys", `"a b": 1` + "\n'c': 2\n", ym(1, ye(1, "a b", ys(1, "1")), ye(2, "c", ys(2, "2")))},
		{"empty and null values", "a:\nb: ~\nc: ''\n",
			ym(1, ye(1, "a", ys(1, "")), ye(2, "b", ys(2, "~")), ye(3, "c", ysq(3, "", yamlSingleQuoted)))},
		{"block list", "l:\n  - a\n  - 'b'\n  # between\n  - c # tail\n",
			ym(1, ye(1, "l", yl(2, ys(2, "a"), ysq(3, "b", yamlSingleQuoted), ys(5, "c"))))},
		{"list at the key's indentation", "l:\n- a\n- b\nm: 1\n",
			ym(1, ye(1, "l", yl(2, ys(2, "a"), ys(3, "b"))), ye(4, "m", ys(4, "1")))},
		{"list of maps", "l:\n  - name: a\n    n: 1\n  - name: b\n",
			ym(1, ye(1, "l", yl(2, ym(2, ye(2, "name", ys(2, "a")), ye(3, "n", ys(3, "1"))), ym(4, ye(4, "name", ys(4, "b"))))))},
		{"flow values as list items", "- {x: [1, 2]}\n- [a]\n- \"k\"\n",
			yl(1, ym(1, ye(1, "x", yl(1, ys(1, "1"), ys(1, "2")))), yl(2, ys(2, "a")), ysq(3, "k", yamlDoubleQuoted))},
		{"nested list", "- - a\n  - b\n- c\n", yl(1, yl(1, ys(1, "a"), ys(2, "b")), ys(3, "c"))},
		{"list item on its own line", "-\n  a: 1\n-\n", yl(1, ym(2, ye(2, "a", ys(2, "1"))), ys(3, ""))},
		{"flow list", `l: [a, "b c", 'd', 3]`,
			ym(1, ye(1, "l", yl(1, ys(1, "a"), ysq(1, "b c", yamlDoubleQuoted), ysq(1, "d", yamlSingleQuoted), ys(1, "3"))))},
		{"flow list empty and trailing comma", "a: []\nb: [x, ]\n",
			ym(1, ye(1, "a", yl(1)), ye(2, "b", yl(2, ys(2, "x"))))},
		{"nested flow", "a: [[1, 2], {k: v}]\n",
			ym(1, ye(1, "a", yl(1, yl(1, ys(1, "1"), ys(1, "2")), ym(1, ye(1, "k", ys(1, "v"))))))},
		{"flow map", "f: {every_ms: 100}  # comment\n", ym(1, ye(1, "f", ym(1, ye(1, "every_ms", ys(1, "100")))))},
		{"flow map quoted and empty", `f: {"a": 'x', b: , c}` + "\ng: {}\n",
			ym(1, ye(1, "f", ym(1, ye(1, "a", ysq(1, "x", yamlSingleQuoted)), ye(1, "b", ys(1, "")), ye(1, "c", ys(1, "")))), ye(2, "g", ym(2)))},
		{"tag", "p: !every_n 100 # sync every 100 writes\n",
			ym(1, ye(1, "p", &yamlNode{Kind: yamlScalar, Line: 1, Value: "100", Tag: "!every_n"}))},
		{"tag on quoted", `p: !x "1"`,
			ym(1, ye(1, "p", &yamlNode{Kind: yamlScalar, Line: 1, Value: "1", Tag: "!x", Style: yamlDoubleQuoted}))},
		{"top-level scalar", "hello\n", ys(1, "hello")},
		{"tabs inside a line", "a:\tb\n", ym(1, ye(1, "a", ys(1, "b")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := yamlParse("t.yaml", []byte(tt.in))
			if err != nil {
				t.Fatalf("yamlParse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("tree mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestYAMLRefused(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"anchor", "a: &x 1\n", "t.yaml:1: anchors (&name) are not supported"},
		{"alias", "a: 1\nb: *x\n", "t.yaml:2: aliases (*name) are not supported"},
		{"anchor in list", "l:\n  - &a x\n", "t.yaml:2: anchors (&name) are not supported"},
		{"anchor on key", "&a k: 1\n", "t.yaml:1: anchors (&name) are not supported"},
		{"flow key", "[a]: 1\n", `t.yaml:1: unexpected ": 1" after the value`},
		{"second document", "a: 1\n---\nb: 2\n", "t.yaml:2: multiple documents are not supported"},
		{"two document starts", "---\n---\na: 1\n", "t.yaml:2: multiple documents are not supported"},
		{"document end", "a: 1\n...\n", "t.yaml:2: document end marker '...' is not supported"},
		{"content on document start", "--- a: 1\n", "t.yaml:1: content on the '---' line is not supported; start it on the next line"},
		{"directive", "%YAML 1.2\n---\na: 1\n", "t.yaml:1: directives (%YAML, %TAG) are not supported"},
		{"literal block scalar", "a: |\n  text\n", "t.yaml:1: block scalars (| and >) are not supported; use a quoted string"},
		{"folded block scalar", "a:\n  b: >-\n    text\n", "t.yaml:2: block scalars (| and >) are not supported; use a quoted string"},
		{"tab indentation", "a:\n\tb: 1\n", "t.yaml:2: tab in indentation: YAML indents with spaces only"},
		{"tab after spaces", "a:\n  \tb: 1\n", "t.yaml:2: tab in indentation: YAML indents with spaces only"},
		{"duplicate key", "a: 1\nb: 2\na: 3\n", `t.yaml:3: duplicate key "a" (first at line 1)`},
		{"duplicate nested key", "s:\n  k: 1\n  k: 2\n", `t.yaml:3: duplicate key "k" (first at line 2)`},
		{"duplicate flow key", "f: {a: 1, a: 2}\n", `t.yaml:1: duplicate key "a"`},
		{"over-indented key", "a:\n  b: 1\n    c: 2\n", "t.yaml:3: bad indentation: expected 2 spaces like the key above, found 4"},
		{"dedent between levels", "a:\n    b: 1\n  c: 2\n", "t.yaml:3: bad indentation: expected 0 spaces like the key above, found 2"},
		{"value then nested block", "a: 1\n  b: 2\n", "t.yaml:2: bad indentation: expected 0 spaces like the key above, found 2"},
		{"indented first line", "  a: 1\n", "t.yaml:1: bad indentation: the document must start in column 1"},
		{"over-indented list item", "l:\n  - a\n    - b\n", "t.yaml:3: bad indentation: expected 2 spaces like the list item above, found 4"},
		{"list item in a map", "a: 1\n- b\n", "t.yaml:2: a list item where a map key was expected"},
		{"list after top-level list", "- a\nb: 1\n", `t.yaml:2: unexpected "b: 1" after the end of the top-level value`},
		{"missing space after colon", "a: 1\nb:2\n", `t.yaml:2: expected 'key: value', found "b:2" (a ':' must be followed by a space)`},
		{"colon inside plain value", "a: b: c\n", "t.yaml:1: unexpected ': ' inside a value; quote the value"},
		{"list on the key's line", "a: - b\n", "t.yaml:1: a list item cannot start on the line of its key; put it on the next line"},
		{"unterminated double quote", "a: \"abc\n", "t.yaml:1: unterminated quoted string (quoted strings must end on the same line)"},
		{"unterminated single quote", "a: 'abc\n", "t.yaml:1: unterminated quoted string (quoted strings must end on the same line)"},
		{"text after quoted", "a: \"x\" y\n", `t.yaml:1: unexpected "y" after the value`},
		{"invalid escape", `a: "\q"`, `t.yaml:1: invalid escape '\q' in a double-quoted string`},
		{"short hex escape", `a: "\x4"`, `t.yaml:1: escape '\x' needs 2 hex digits`},
		{"surrogate escape", `a: "\ud800"`, `t.yaml:1: invalid escape '\ud800'`},
		{"multi-line flow list", "a: [1,\n  2]\n", "t.yaml:1: unterminated flow list: '[' must be closed by ']' on the same line"},
		{"multi-line flow map", "a: {b: 1,\n  c: 2}\n", "t.yaml:1: unterminated flow map: '{' must be closed by '}' on the same line"},
		{"flow list missing comma", "a: [1 2}\n", `t.yaml:1: expected ',' or ']' in a flow list, found "}"`},
		{"flow list empty item", "a: [1, , 2]\n", "t.yaml:1: missing value before ',' in a flow list"},
		{"flow map missing comma", "a: {b: 1 c: 2}\n", `t.yaml:1: expected ',' or '}' in a flow map, found ": 2}"`},
		{"flow map complex key", "a: {[x]: 1}\n", "t.yaml:1: flow map keys must be plain or quoted scalars"},
		{"map in flow list", "a: [b: 1]\n", "t.yaml:1: maps inside flow lists are not supported"},
		{"explicit key", "? a\n: 1\n", "t.yaml:1: explicit keys ('? ') are not supported"},
		{"tag without value", "p: !every_n\n  100\n", "t.yaml:1: tag !every_n needs a value on the same line"},
		{"global tag", "p: !!str 1\n", `t.yaml:1: tag "!!str": only local tags such as !every_n are supported`},
		{"tag on a flow map", "p: !x {a: 1}\n", "t.yaml:1: tag !x must be followed by a scalar"},
		{"two tags", "p: !x !y 1\n", "t.yaml:1: a value may carry only one tag"},
		{"reserved indicator", "a: @x\n", `t.yaml:1: '@' cannot start a plain value; quote it`},
		{"empty key", ": 1\n", "t.yaml:1: empty key"},
		{"invalid UTF-8", "a: 1\nb: \xff\n", "t.yaml:2: invalid UTF-8"},
		{"too deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), "t.yaml:1: nesting deeper than 64 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := yamlParse("t.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("yamlParse accepted it: %+v", n)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestYAMLDeepBlock checks that deep block nesting is refused, not a stack
// overflow.
func TestYAMLDeepBlock(t *testing.T) {
	var b strings.Builder
	for i := range 200 {
		b.WriteString(strings.Repeat(" ", i) + "k:\n")
	}
	_, err := yamlParse("t.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "nesting deeper than") {
		t.Fatalf("err = %v, want a nesting error", err)
	}
}

func TestYAMLNodeHelpers(t *testing.T) {
	n, err := yamlParse("t.yaml", []byte("a: 1\nb: null\nc: 'null'\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := []bool{n.get("a").isNull(), n.get("b").isNull(), n.get("c").isNull(), n.get("missing").isNull(), n.isNull()}
	if diff := cmp.Diff([]bool{false, true, false, true, false}, got); diff != "" {
		t.Errorf("isNull (-want +got):\n%s", diff)
	}
	if n.get("a").get("x") != nil {
		t.Errorf("get on a scalar returned a node")
	}
}

func FuzzYAMLParse(f *testing.F) {
	for _, s := range []string{
		"a: 1\n", "l:\n  - a\n  - b: c\n", "f: {every_ms: 100}\n", "p: !every_n 5\n",
		"a: \"x\\u00e9\"\n", "- - [a, {b: c}]\n", "---\n# c\nk: 'v''w'\n", "a:\n  b:\n    - x\n  c: y\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := yamlParse("f.yaml", data)
		if err == nil && n == nil {
			t.Fatal("nil node without an error")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml:") {
			t.Fatalf("error without position: %v", err)
		}
	})
}
