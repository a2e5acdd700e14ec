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
//
// The code is split by concern: this file holds the types and the compile
// entry point, guard_parse.go the parser, guard_print.go the canonical
// printer, guard_eval.go the evaluator and guard_scan.go the bounds-safe
// JSON scanning the evaluator walks ctx with.

import (
	"strconv"
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
