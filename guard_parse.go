package main

// Guard parsing: the recursive-descent parser behind compileGuard, with its
// lexing helpers and syntax error reporting.

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

type guardParser struct {
	src   string
	pos   int // byte offset into src
	depth int
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
