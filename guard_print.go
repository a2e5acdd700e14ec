package main

// Guard printing: the canonical form of a compiled guard (guard.String).

import (
	"strconv"
	"strings"
)

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
