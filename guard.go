package main

// Guard expression language (rcp.md §5, rstmdb-behaviour.md §5).
//
//	expr       := or
//	or         := and ( "||" and )*
//	and        := unary ( "&&" unary )*
//	unary      := "!" unary | primary
//	primary    := "(" expr ")" | comparison
//	comparison := field [ ("==" | "!=") value | (">=" | "<=" | ">" | "<") number ]
//	field      := "ctx." name ( "." name )*
//	value      := "true" | "false" | "null" | string | number
//
// Guards are compiled once (compileGuard) and evaluated many times directly on
// the raw JSON bytes of the instance context, without decoding it and without
// allocating on the common paths.

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// guardMaxNesting bounds the number of nested "(" and "!" levels.
	guardMaxNesting = 64
	// guardCtxMaxDepth bounds container nesting inside ctx values; deeper
	// values are treated as unreadable (null).
	guardCtxMaxDepth = 10000
	// guardSnippetMax bounds the length (in runes) of quoted input in errors.
	guardSnippetMax = 24
)

// guard is a compiled guard expression.
type guard struct {
	root *guardNode
}

// guardError reports a syntax error; Pos is the 1-based character (rune)
// column in the source.
type guardError struct {
	Pos int
	Msg string
}

func (e *guardError) Error() string {
	return "at position " + strconv.Itoa(e.Pos) + ": " + e.Msg
}

type guardKind uint8

const (
	guardOr     guardKind = iota // kids joined by ||
	guardAnd                     // kids joined by &&
	guardNot                     // !kids[0]
	guardTruthy                  // bare field
	guardCmp                     // field op lit
)

type guardOp uint8

const (
	guardOpEq guardOp = iota
	guardOpNe
	guardOpGt
	guardOpGe
	guardOpLt
	guardOpLe
)

var guardOpText = [...]string{
	guardOpEq: "==",
	guardOpNe: "!=",
	guardOpGt: ">",
	guardOpGe: ">=",
	guardOpLt: "<",
	guardOpLe: "<=",
}

// guardType is the JSON type of a literal or of a value found in ctx.
type guardType uint8

const (
	guardTNull guardType = iota
	guardTBool
	guardTNumber
	guardTString
	guardTArray
	guardTObject
)

type guardLit struct {
	typ guardType
	b   bool
	n   float64
	s   string
}

type guardNode struct {
	kind guardKind
	kids []*guardNode // guardOr, guardAnd, guardNot
	path []string     // guardTruthy, guardCmp: the names after "ctx."
	op   guardOp      // guardCmp
	lit  guardLit     // guardCmp
}

// ---------------------------------------------------------------------------
// Parsing

type guardParser struct {
	src   string
	pos   int // byte offset into src
	depth int
}

// compileGuard parses src; the error is a *guardError.
func compileGuard(src string) (*guard, error) {
	p := &guardParser{src: src}
	p.skipSpace()
	if p.pos >= len(src) {
		return nil, &guardError{Pos: 1, Msg: "empty guard expression"}
	}
	if !utf8.ValidString(src) {
		off := 0
		for off < len(src) {
			r, n := utf8.DecodeRuneInString(src[off:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			off += n
		}
		return nil, p.errAt(off, "invalid UTF-8")
	}
	root, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(src) {
		return nil, p.unexpected()
	}
	return &guard{root: root}, nil
}

func (p *guardParser) errAt(off int, msg string) *guardError {
	if off > len(p.src) {
		off = len(p.src)
	}
	return &guardError{Pos: utf8.RuneCountInString(p.src[:off]) + 1, Msg: msg}
}

// found describes the input at p.pos for error messages.
func (p *guardParser) found() string {
	if p.pos >= len(p.src) {
		return "end of input"
	}
	rest := p.src[p.pos:]
	n := 0
	for n < len(rest) {
		r, w := utf8.DecodeRuneInString(rest[n:])
		if !guardIsWordRune(r) {
			break
		}
		n += w
	}
	if n == 0 {
		_, n = utf8.DecodeRuneInString(rest)
	}
	return guardSnippet(rest[:n])
}

func guardSnippet(s string) string {
	if utf8.RuneCountInString(s) > guardSnippetMax {
		i, k := 0, 0
		for k < guardSnippetMax {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
			k++
		}
		s = s[:i] + "..."
	}
	return "'" + s + "'"
}

// unexpected builds the error for input the grammar cannot continue with.
func (p *guardParser) unexpected() *guardError {
	rest := p.src[p.pos:]
	switch {
	case rest == "":
		return p.errAt(p.pos, "unexpected end of input")
	case rest[0] == '=' && !strings.HasPrefix(rest, "=="):
		return p.errAt(p.pos, "unknown operator '=' (use '==')")
	case rest[0] == '&' && !strings.HasPrefix(rest, "&&"):
		return p.errAt(p.pos, "unknown operator '&' (use '&&')")
	case rest[0] == '|' && !strings.HasPrefix(rest, "||"):
		return p.errAt(p.pos, "unknown operator '|' (use '||')")
	}
	return p.errAt(p.pos, "unexpected "+p.found())
}

func (p *guardParser) skipSpace() {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c < utf8.RuneSelf {
			if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' {
				p.pos++
				continue
			}
			return
		}
		r, w := utf8.DecodeRuneInString(p.src[p.pos:])
		if !unicode.IsSpace(r) {
			return
		}
		p.pos += w
	}
}

func (p *guardParser) consume(tok string) bool {
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *guardParser) enter() error {
	p.depth++
	if p.depth > guardMaxNesting {
		return p.errAt(p.pos, "expression nested too deeply (more than "+strconv.Itoa(guardMaxNesting)+" levels)")
	}
	return nil
}

func (p *guardParser) parseOr() (*guardNode, error) {
	return p.parseChain("||", guardOr, p.parseAnd)
}

func (p *guardParser) parseAnd() (*guardNode, error) {
	return p.parseChain("&&", guardAnd, p.parseUnary)
}

// parseChain parses operand (op operand)*, left-associative, as one node of
// kind with the operands flattened into it.
func (p *guardParser) parseChain(op string, kind guardKind, operand func() (*guardNode, error)) (*guardNode, error) {
	first, err := operand()
	if err != nil {
		return nil, err
	}
	var kids []*guardNode
	for {
		p.skipSpace()
		if !p.consume(op) {
			break
		}
		next, err := operand()
		if err != nil {
			return nil, err
		}
		if kids == nil {
			kids = guardAppendFlat(kids, first, kind)
		}
		kids = guardAppendFlat(kids, next, kind)
	}
	if kids == nil {
		return first, nil
	}
	return &guardNode{kind: kind, kids: kids}, nil
}

// guardAppendFlat appends n to kids, splicing in n's children when n has the
// same (associative) kind, e.g. from "(a && b) && c".
func guardAppendFlat(kids []*guardNode, n *guardNode, kind guardKind) []*guardNode {
	if n.kind == kind {
		return append(kids, n.kids...)
	}
	return append(kids, n)
}

func (p *guardParser) parseUnary() (*guardNode, error) {
	p.skipSpace()
	if p.pos < len(p.src) && p.src[p.pos] == '!' && !strings.HasPrefix(p.src[p.pos:], "!=") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		p.pos++
		kid, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		p.depth--
		return &guardNode{kind: guardNot, kids: []*guardNode{kid}}, nil
	}
	return p.parsePrimary()
}

func (p *guardParser) parsePrimary() (*guardNode, error) {
	p.skipSpace()
	if p.pos < len(p.src) && p.src[p.pos] == '(' {
		if err := p.enter(); err != nil {
			return nil, err
		}
		open := p.pos
		p.pos++
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if !p.consume(")") {
			e := p.errAt(p.pos, "expected ')' (to close '(' at position "+
				strconv.Itoa(utf8.RuneCountInString(p.src[:open])+1)+") but found "+p.found())
			return nil, e
		}
		p.depth--
		return n, nil
	}
	return p.parseComparison()
}

func (p *guardParser) parseComparison() (*guardNode, error) {
	path, err := p.parseField()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	rest := p.src[p.pos:]
	var op guardOp
	switch {
	case strings.HasPrefix(rest, "=="):
		op = guardOpEq
	case strings.HasPrefix(rest, "!="):
		op = guardOpNe
	case strings.HasPrefix(rest, ">="):
		op = guardOpGe
	case strings.HasPrefix(rest, "<="):
		op = guardOpLe
	case strings.HasPrefix(rest, ">"):
		op = guardOpGt
	case strings.HasPrefix(rest, "<"):
		op = guardOpLt
	default:
		return &guardNode{kind: guardTruthy, path: path}, nil
	}
	p.pos += len(guardOpText[op])
	p.skipSpace()
	lit, err := p.parseValue(op)
	if err != nil {
		return nil, err
	}
	return &guardNode{kind: guardCmp, path: path, op: op, lit: lit}, nil
}

// guardIsNameRune reports whether r may appear in a field name.
func guardIsNameRune(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')
	}
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r)
}

// guardIsWordRune reports whether r continues a bare word (literal, number
// or name) for the purpose of tokenising values and error snippets.
func guardIsWordRune(r rune) bool {
	return guardIsNameRune(r) || r == '.' || r == '+' || r == '-'
}

// name scans a (possibly empty) name at p.pos.
func (p *guardParser) name() string {
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c < utf8.RuneSelf {
			if !guardIsNameRune(rune(c)) {
				break
			}
			p.pos++
			continue
		}
		r, w := utf8.DecodeRuneInString(p.src[p.pos:])
		if !guardIsNameRune(r) {
			break
		}
		p.pos += w
	}
	return p.src[start:p.pos]
}

func (p *guardParser) parseField() ([]string, error) {
	start := p.pos
	if p.pos >= len(p.src) {
		return nil, p.errAt(p.pos, "unexpected end of input, expected a field, '(' or '!'")
	}
	if p.name() != "ctx" || p.pos >= len(p.src) || p.src[p.pos] != '.' {
		p.pos = start
		if r, _ := utf8.DecodeRuneInString(p.src[start:]); !guardIsNameRune(r) {
			return nil, p.errAt(start, "expected a field, '(' or '!' but found "+p.found())
		}
		return nil, p.errAt(start, "field must start with 'ctx.'")
	}
	var path []string
	for p.pos < len(p.src) && p.src[p.pos] == '.' {
		p.pos++
		at := p.pos
		n := p.name()
		if n == "" {
			return nil, p.errAt(at, "empty field name")
		}
		path = append(path, n)
	}
	return path, nil
}

func (p *guardParser) word() string {
	start := p.pos
	for p.pos < len(p.src) {
		r, w := utf8.DecodeRuneInString(p.src[p.pos:])
		if !guardIsWordRune(r) {
			break
		}
		p.pos += w
	}
	return p.src[start:p.pos]
}

func (p *guardParser) parseValue(op guardOp) (guardLit, error) {
	start := p.pos
	if op == guardOpEq || op == guardOpNe {
		if p.pos < len(p.src) && p.src[p.pos] == '"' {
			s, err := p.parseString()
			if err != nil {
				return guardLit{}, err
			}
			return guardLit{typ: guardTString, s: s}, nil
		}
		w := p.word()
		switch w {
		case "true":
			return guardLit{typ: guardTBool, b: true}, nil
		case "false":
			return guardLit{typ: guardTBool}, nil
		case "null":
			return guardLit{typ: guardTNull}, nil
		case "":
			p.pos = start
			return guardLit{}, p.errAt(start, "expected a value (true, false, null, string or number) after '"+
				guardOpText[op]+"' but found "+p.found())
		}
		if guardNumberEnd(w, 0) != len(w) {
			return guardLit{}, p.errAt(start, "invalid value: "+guardSnippet(w))
		}
		return p.number(start, w)
	}
	w := p.word()
	if w == "" {
		p.pos = start
		return guardLit{}, p.errAt(start, "expected a number after '"+guardOpText[op]+"' but found "+p.found())
	}
	if guardNumberEnd(w, 0) != len(w) {
		return guardLit{}, p.errAt(start, "invalid number: "+guardSnippet(w))
	}
	return p.number(start, w)
}

func (p *guardParser) number(start int, w string) (guardLit, error) {
	f, err := strconv.ParseFloat(w, 64)
	if err != nil {
		return guardLit{}, p.errAt(start, "number out of range: "+guardSnippet(w))
	}
	return guardLit{typ: guardTNumber, n: f}, nil
}

// parseString decodes the string literal starting at the '"' at p.pos.
func (p *guardParser) parseString() (string, error) {
	open := p.pos
	p.pos++
	// Fast path: no escapes.
	for i := p.pos; i < len(p.src); i++ {
		if p.src[i] == '"' {
			s := p.src[p.pos:i]
			p.pos = i + 1
			return s, nil
		}
		if p.src[i] == '\\' {
			break
		}
	}
	var sb strings.Builder
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch c {
		case '"':
			p.pos++
			return sb.String(), nil
		case '\\':
			esc := p.pos
			if p.pos+1 >= len(p.src) {
				return "", p.errAt(open, "unterminated string")
			}
			switch e := p.src[p.pos+1]; e {
			case '"', '\\', '/':
				sb.WriteByte(e)
				p.pos += 2
			case 'b':
				sb.WriteByte('\b')
				p.pos += 2
			case 'f':
				sb.WriteByte('\f')
				p.pos += 2
			case 'n':
				sb.WriteByte('\n')
				p.pos += 2
			case 'r':
				sb.WriteByte('\r')
				p.pos += 2
			case 't':
				sb.WriteByte('\t')
				p.pos += 2
			case 'u':
				r, n := guardUnescapeU(p.src, p.pos)
				if n == 0 {
					return "", p.errAt(esc, "invalid \\u escape in string")
				}
				sb.WriteRune(r)
				p.pos += n
			default:
				return "", p.errAt(esc, "invalid escape in string: "+guardSnippet(p.src[esc:esc+1+guardRuneLen(p.src[p.pos+1:])]))
			}
		default:
			sb.WriteByte(c)
			p.pos++
		}
	}
	return "", p.errAt(open, "unterminated string")
}

func guardRuneLen(s string) int {
	_, n := utf8.DecodeRuneInString(s)
	return n
}

// ---------------------------------------------------------------------------
// Printing

// String prints the guard in a canonical form with minimal parentheses that
// compileGuard parses back to the same meaning (and never nests deeper than
// the source it was compiled from).
func (g *guard) String() string {
	if g == nil || g.root == nil {
		return ""
	}
	var sb strings.Builder
	guardWrite(&sb, g.root, 0)
	return sb.String()
}

// guardWrite prints n; prec is the binding strength of the surrounding
// context: 0 = or operand, 1 = and operand, 2 = "!" operand.
func guardWrite(sb *strings.Builder, n *guardNode, prec int) {
	switch n.kind {
	case guardOr, guardAnd:
		my, sep := 0, " || "
		if n.kind == guardAnd {
			my, sep = 1, " && "
		}
		if prec > my {
			sb.WriteByte('(')
		}
		for i, k := range n.kids {
			if i > 0 {
				sb.WriteString(sep)
			}
			guardWrite(sb, k, my+1)
		}
		if prec > my {
			sb.WriteByte(')')
		}
	case guardNot:
		sb.WriteByte('!')
		guardWrite(sb, n.kids[0], 2)
	case guardTruthy:
		guardWriteField(sb, n.path)
	case guardCmp:
		guardWriteField(sb, n.path)
		sb.WriteByte(' ')
		sb.WriteString(guardOpText[n.op])
		sb.WriteByte(' ')
		guardWriteLit(sb, n.lit)
	}
}

func guardWriteField(sb *strings.Builder, path []string) {
	sb.WriteString("ctx")
	for _, name := range path {
		sb.WriteByte('.')
		sb.WriteString(name)
	}
}

func guardWriteLit(sb *strings.Builder, l guardLit) {
	switch l.typ {
	case guardTNull:
		sb.WriteString("null")
	case guardTBool:
		sb.WriteString(strconv.FormatBool(l.b))
	case guardTNumber:
		sb.WriteString(strconv.FormatFloat(l.n, 'g', -1, 64))
	case guardTString:
		guardWriteQuoted(sb, l.s)
	}
}

func guardWriteQuoted(sb *strings.Builder, s string) {
	const hexDigits = "0123456789abcdef"
	sb.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c == '\n':
			sb.WriteString(`\n`)
		case c == '\r':
			sb.WriteString(`\r`)
		case c == '\t':
			sb.WriteString(`\t`)
		case c < 0x20:
			sb.WriteString(`\u00`)
			sb.WriteByte(hexDigits[c>>4])
			sb.WriteByte(hexDigits[c&0xf])
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('"')
}

// ---------------------------------------------------------------------------
// Evaluation

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

// ---------------------------------------------------------------------------
// JSON scanning (bounds-safe on arbitrary bytes; -1 means malformed)

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
