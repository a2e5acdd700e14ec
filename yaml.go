package main

// A small YAML reader for configuration files. It covers what rstmdb's
// shipped configs use: block maps and lists nested by indentation, plain,
// single- and double-quoted scalars, one-line flow lists and maps, comments,
// a leading "---" and local tags (!every_n 100). Everything else is refused
// with "file:line: reason" rather than guessed at, so a config never means
// something other than what its author saw. No third-party dependency: a
// full YAML library is far more surface than a config file needs.

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// yamlKind is the shape of a yamlNode.
type yamlKind int

const (
	yamlScalar yamlKind = iota
	yamlMap
	yamlList
)

func (k yamlKind) String() string {
	switch k {
	case yamlMap:
		return "map"
	case yamlList:
		return "list"
	}
	return "scalar"
}

// yamlStyle records how a scalar was written: a quoted "true" is a string,
// a plain true is a boolean, and callers need to tell them apart.
type yamlStyle int

const (
	yamlPlain yamlStyle = iota
	yamlSingleQuoted
	yamlDoubleQuoted
)

// yamlNode is one parsed value. Maps keep their keys in file order, with
// the line of each key, so that errors can point at the offending line.
type yamlNode struct {
	Kind    yamlKind
	Line    int         // 1-based line where the value starts
	Tag     string      // "!every_n" for `!every_n 100`; "" when untagged
	Value   string      // scalar text, unquoted and unescaped
	Style   yamlStyle   // scalars only
	Entries []yamlEntry // maps
	Items   []*yamlNode // lists
}

// yamlEntry is one key of a map.
type yamlEntry struct {
	Key   string
	Line  int
	Value *yamlNode
}

// isNull reports whether n is an empty value, ~ or null (`key:` with
// nothing after it, or a section whose keys are all commented out).
func (n *yamlNode) isNull() bool {
	if n == nil {
		return true
	}
	if n.Kind != yamlScalar || n.Style != yamlPlain || n.Tag != "" {
		return false
	}
	switch n.Value {
	case "", "~", "null", "Null", "NULL":
		return true
	}
	return false
}

// get returns the value of key in map n, or nil.
func (n *yamlNode) get(key string) *yamlNode {
	if n == nil || n.Kind != yamlMap {
		return nil
	}
	for _, e := range n.Entries {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

// yamlError is a refusal with its position.
type yamlError struct {
	File string
	Line int
	Msg  string
}

func (e *yamlError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// yamlMaxDepth bounds nesting so that hostile input cannot exhaust the stack.
const yamlMaxDepth = 64

// yamlLine is one line that carries content: its number, its indentation in
// spaces and its text after the indentation, trailing blanks removed.
type yamlLine struct {
	num    int
	indent int
	text   string
}

type yamlParser struct {
	file  string
	lines []yamlLine
	pos   int
	depth int
}

func (p *yamlParser) errf(line int, format string, args ...any) error {
	return &yamlError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// yamlParse reads one YAML document. file names the source in errors. An
// empty document (only blanks and comments) is an empty map.
func yamlParse(file string, data []byte) (*yamlNode, error) {
	p := &yamlParser{file: file}
	if err := p.split(data); err != nil {
		return nil, err
	}
	if len(p.lines) == 0 {
		return &yamlNode{Kind: yamlMap, Line: 1}, nil
	}
	first := p.lines[0]
	if first.indent != 0 {
		return nil, p.errf(first.num, "bad indentation: the document must start in column 1")
	}
	root, err := p.block(0)
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.lines) {
		l := p.lines[p.pos]
		return nil, p.errf(l.num, "unexpected %q after the end of the top-level value", l.text)
	}
	return root, nil
}

// split turns the input into content lines, dropping blanks and comment
// lines and refusing what is decided by a line alone: tabs in indentation,
// directives, document markers other than one leading "---".
func (p *yamlParser) split(data []byte) error {
	text := strings.TrimPrefix(string(data), "\ufeff")
	if !utf8.ValidString(text) {
		for i, raw := range strings.Split(text, "\n") {
			if !utf8.ValidString(raw) {
				return p.errf(i+1, "invalid UTF-8")
			}
		}
	}
	seenStart := false
	for i, raw := range strings.Split(text, "\n") {
		num := i + 1
		raw = strings.TrimRight(raw, "\r")
		content := strings.TrimLeft(raw, " \t")
		if content == "" || content[0] == '#' {
			continue
		}
		lead := raw[:len(raw)-len(content)]
		if strings.Contains(lead, "\t") {
			return p.errf(num, "tab in indentation: YAML indents with spaces only")
		}
		content = strings.TrimRight(content, " \t")
		if len(lead) == 0 {
			if content == "---" || strings.HasPrefix(content, "--- ") || strings.HasPrefix(content, "---\t") {
				if seenStart || len(p.lines) > 0 {
					return p.errf(num, "multiple documents are not supported")
				}
				rest := strings.TrimLeft(content[3:], " \t")
				if rest != "" && rest[0] != '#' {
					return p.errf(num, "content on the '---' line is not supported; start it on the next line")
				}
				seenStart = true
				continue
			}
			if content == "..." || strings.HasPrefix(content, "... ") || strings.HasPrefix(content, "...\t") {
				return p.errf(num, "document end marker '...' is not supported")
			}
			if content[0] == '%' {
				return p.errf(num, "directives (%%YAML, %%TAG) are not supported")
			}
		}
		p.lines = append(p.lines, yamlLine{num: num, indent: len(lead), text: content})
	}
	return nil
}

// block parses the value that starts at the current line, which is indented
// by exactly indent: a list, a map, or a single-line value.
func (p *yamlParser) block(indent int) (*yamlNode, error) {
	l := p.lines[p.pos]
	if p.depth >= yamlMaxDepth {
		return nil, p.errf(l.num, "nesting deeper than %d levels", yamlMaxDepth)
	}
	p.depth++
	defer func() { p.depth-- }()
	if yamlIsListItem(l.text) {
		return p.list(indent)
	}
	_, _, isKey, err := p.splitKey(l)
	if err != nil {
		return nil, err
	}
	if isKey {
		return p.mapping(indent)
	}
	p.pos++
	return p.inline(l.text, l.num)
}

// yamlIsListItem reports whether text is a block list entry ("- x" or "-").
func yamlIsListItem(text string) bool {
	return text == "-" || strings.HasPrefix(text, "- ") || strings.HasPrefix(text, "-\t")
}

func (p *yamlParser) list(indent int) (*yamlNode, error) {
	node := &yamlNode{Kind: yamlList, Line: p.lines[p.pos].num}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, p.errf(l.num, "bad indentation: expected %d spaces like the list item above, found %d", indent, l.indent)
		}
		if !yamlIsListItem(l.text) {
			// A list under a map key may sit at the key's own indentation;
			// the map's next key ends it.
			break
		}
		rest := strings.TrimLeft(l.text[1:], " \t")
		var item *yamlNode
		var err error
		if rest == "" || rest[0] == '#' {
			p.pos++
			if p.pos < len(p.lines) && p.lines[p.pos].indent > indent {
				item, err = p.block(p.lines[p.pos].indent)
			} else {
				item = &yamlNode{Kind: yamlScalar, Line: l.num}
			}
		} else {
			// "- key: v" starts a map whose keys line up with "key"; "- - x"
			// a nested list. Re-read the rest of the line as if it stood
			// alone at its own column.
			col := indent + len(l.text) - len(rest)
			p.lines[p.pos] = yamlLine{num: l.num, indent: col, text: rest}
			item, err = p.block(col)
		}
		if err != nil {
			return nil, err
		}
		node.Items = append(node.Items, item)
	}
	return node, nil
}

func (p *yamlParser) mapping(indent int) (*yamlNode, error) {
	node := &yamlNode{Kind: yamlMap, Line: p.lines[p.pos].num}
	seen := map[string]int{}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, p.errf(l.num, "bad indentation: expected %d spaces like the key above, found %d", indent, l.indent)
		}
		if yamlIsListItem(l.text) {
			return nil, p.errf(l.num, "a list item where a map key was expected")
		}
		key, rest, isKey, err := p.splitKey(l)
		if err != nil {
			return nil, err
		}
		if !isKey {
			return nil, p.errf(l.num, "expected 'key: value', found %q (a ':' must be followed by a space)", l.text)
		}
		if first, dup := seen[key]; dup {
			return nil, p.errf(l.num, "duplicate key %q (first at line %d)", key, first)
		}
		seen[key] = l.num
		p.pos++
		var val *yamlNode
		switch {
		case rest != "":
			val, err = p.inline(rest, l.num)
		case p.pos < len(p.lines) && p.lines[p.pos].indent > indent:
			val, err = p.block(p.lines[p.pos].indent)
		case p.pos < len(p.lines) && p.lines[p.pos].indent == indent && yamlIsListItem(p.lines[p.pos].text):
			p.depth++
			val, err = p.list(indent)
			p.depth--
		default:
			val = &yamlNode{Kind: yamlScalar, Line: l.num}
		}
		if err != nil {
			return nil, err
		}
		node.Entries = append(node.Entries, yamlEntry{Key: key, Line: l.num, Value: val})
	}
	return node, nil
}

// splitKey splits a "key: value" line. isKey is false when the line is a
// value on its own (a list item's scalar, say). rest is the value text with
// any trailing comment still attached, or "" when nothing but a comment
// follows the colon.
func (p *yamlParser) splitKey(l yamlLine) (key, rest string, isKey bool, err error) {
	t := l.text
	switch t[0] {
	case '"', '\'':
		c := &yamlCursor{p: p, s: t, line: l.num}
		n, err := c.quoted()
		if err != nil {
			return "", "", false, err
		}
		c.skipSpace()
		if c.i >= len(t) || t[c.i] != ':' || (c.i+1 < len(t) && !yamlIsSpace(t[c.i+1])) {
			return "", "", false, nil
		}
		key = n.Value
		rest = t[c.i+1:]
	case '?':
		if len(t) == 1 || yamlIsSpace(t[1]) {
			return "", "", false, p.errf(l.num, "explicit keys ('? ') are not supported")
		}
		fallthrough
	case '[', '{', '&', '*', '!', '|', '>', '%', '@', '`':
		// A flow collection, or an indicator that inline refuses with a
		// precise reason; never a plain key.
		return "", "", false, nil
	default:
		i := yamlKeyColon(t)
		if i < 0 {
			return "", "", false, nil
		}
		key = strings.TrimRight(t[:i], " \t")
		if key == "" {
			return "", "", false, p.errf(l.num, "empty key")
		}
		rest = t[i+1:]
	}
	rest = strings.TrimLeft(rest, " \t")
	if rest != "" && rest[0] == '#' {
		rest = ""
	}
	return key, rest, true, nil
}

// yamlKeyColon finds the colon that ends a plain key: the first ':'
// followed by a blank or the end of the line, before any comment.
func yamlKeyColon(t string) int {
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '#':
			if i > 0 && yamlIsSpace(t[i-1]) {
				return -1
			}
		case ':':
			if i+1 == len(t) || yamlIsSpace(t[i+1]) {
				return i
			}
		}
	}
	return -1
}

func yamlIsSpace(b byte) bool { return b == ' ' || b == '\t' }

// inline parses a value that must end on its line, followed by nothing but
// blanks and an optional comment.
func (p *yamlParser) inline(s string, line int) (*yamlNode, error) {
	c := &yamlCursor{p: p, s: s, line: line}
	n, err := c.value(false)
	if err != nil {
		return nil, err
	}
	c.skipSpace()
	if c.i < len(s) {
		if s[c.i] == '#' && c.i > 0 && yamlIsSpace(s[c.i-1]) {
			return n, nil
		}
		return nil, p.errf(line, "unexpected %q after the value", s[c.i:])
	}
	return n, nil
}

// yamlCursor reads values within one line.
type yamlCursor struct {
	p     *yamlParser
	s     string
	i     int
	line  int
	depth int
}

func (c *yamlCursor) errf(format string, args ...any) error { return c.p.errf(c.line, format, args...) }

func (c *yamlCursor) skipSpace() {
	for c.i < len(c.s) && yamlIsSpace(c.s[c.i]) {
		c.i++
	}
}

// value reads one value at the cursor. In flow context (inside [] or {})
// plain scalars end at ',', ']', '}' and ': '.
func (c *yamlCursor) value(flow bool) (*yamlNode, error) {
	if c.i >= len(c.s) {
		return &yamlNode{Kind: yamlScalar, Line: c.line}, nil
	}
	switch ch := c.s[c.i]; ch {
	case '"', '\'':
		return c.quoted()
	case '[', '{':
		if c.depth >= yamlMaxDepth {
			return nil, c.errf("nesting deeper than %d levels", yamlMaxDepth)
		}
		c.depth++
		defer func() { c.depth-- }()
		if ch == '[' {
			return c.flowList()
		}
		return c.flowMap()
	case '!':
		return c.tagged(flow)
	case '&':
		return nil, c.errf("anchors (&name) are not supported")
	case '*':
		return nil, c.errf("aliases (*name) are not supported")
	case '|', '>':
		return nil, c.errf("block scalars (| and >) are not supported; use a quoted string")
	case '%', '@', '`':
		return nil, c.errf("%q cannot start a plain value; quote it", ch)
	}
	return c.plain(flow)
}

func (c *yamlCursor) tagged(flow bool) (*yamlNode, error) {
	start := c.i
	for c.i < len(c.s) && !yamlIsSpace(c.s[c.i]) && !(flow && strings.IndexByte(",]}", c.s[c.i]) >= 0) {
		c.i++
	}
	tag := c.s[start:c.i]
	if len(tag) < 2 || tag[1] == '!' || tag[1] == '<' {
		return nil, c.errf("tag %q: only local tags such as !every_n are supported", tag)
	}
	c.skipSpace()
	if c.i >= len(c.s) || c.s[c.i] == '#' || (flow && strings.IndexByte(",]}", c.s[c.i]) >= 0) {
		return nil, c.errf("tag %s needs a value on the same line", tag)
	}
	switch c.s[c.i] {
	case '!':
		return nil, c.errf("a value may carry only one tag")
	case '[', '{':
		return nil, c.errf("tag %s must be followed by a scalar", tag)
	}
	n, err := c.value(flow)
	if err != nil {
		return nil, err
	}
	n.Tag = tag
	return n, nil
}

func (c *yamlCursor) plain(flow bool) (*yamlNode, error) {
	start := c.i
	for c.i < len(c.s) {
		b := c.s[c.i]
		if b == '#' && c.i > start && yamlIsSpace(c.s[c.i-1]) {
			break
		}
		if b == ':' && (c.i+1 == len(c.s) || yamlIsSpace(c.s[c.i+1]) || (flow && strings.IndexByte(",]}", c.s[c.i+1]) >= 0)) {
			if !flow {
				return nil, c.errf("unexpected ': ' inside a value; quote the value")
			}
			break
		}
		if flow {
			if strings.IndexByte(",]}", b) >= 0 {
				break
			}
			if b == '[' || b == '{' {
				return nil, c.errf("unexpected %q inside a value; quote the value", b)
			}
		}
		c.i++
	}
	v := strings.TrimRight(c.s[start:c.i], " \t")
	if !flow && (v == "-" || strings.HasPrefix(v, "- ")) {
		return nil, c.errf("a list item cannot start on the line of its key; put it on the next line")
	}
	return &yamlNode{Kind: yamlScalar, Line: c.line, Value: v}, nil
}

// quoted reads a single- or double-quoted scalar, which must close on the
// same line.
func (c *yamlCursor) quoted() (*yamlNode, error) {
	q := c.s[c.i]
	c.i++
	var b strings.Builder
	for {
		if c.i >= len(c.s) {
			return nil, c.errf("unterminated quoted string (quoted strings must end on the same line)")
		}
		ch := c.s[c.i]
		if q == '\'' {
			c.i++
			if ch == '\'' {
				if c.i < len(c.s) && c.s[c.i] == '\'' {
					b.WriteByte('\'')
					c.i++
					continue
				}
				return &yamlNode{Kind: yamlScalar, Line: c.line, Value: b.String(), Style: yamlSingleQuoted}, nil
			}
			b.WriteByte(ch)
			continue
		}
		switch ch {
		case '"':
			c.i++
			return &yamlNode{Kind: yamlScalar, Line: c.line, Value: b.String(), Style: yamlDoubleQuoted}, nil
		case '\\':
			if err := c.escape(&b); err != nil {
				return nil, err
			}
		default:
			b.WriteByte(ch)
			c.i++
		}
	}
}

// yamlEscapes are the single-character escapes of double-quoted scalars.
var yamlEscapes = map[byte]string{
	'0': "\x00", 'a': "\a", 'b': "\b", 't': "\t", '\t': "\t", 'n': "\n", 'v': "\v",
	'f': "\f", 'r': "\r", 'e': "\x1b", ' ': " ", '"': "\"", '/': "/", '\\': "\\",
	'N': "\u0085", '_': "\u00a0", 'L': "\u2028", 'P': "\u2029",
}

// escape reads the escape sequence at the cursor (which is on the '\').
func (c *yamlCursor) escape(b *strings.Builder) error {
	c.i++
	if c.i >= len(c.s) {
		return c.errf("unterminated quoted string (a line cannot end in '\\')")
	}
	e := c.s[c.i]
	c.i++
	if s, ok := yamlEscapes[e]; ok {
		b.WriteString(s)
		return nil
	}
	width := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
	if width == 0 {
		return c.errf("invalid escape '\\%c' in a double-quoted string", e)
	}
	if c.i+width > len(c.s) || strings.Trim(c.s[c.i:c.i+width], "0123456789abcdefABCDEF") != "" {
		return c.errf("escape '\\%c' needs %d hex digits", e, width)
	}
	n, err := strconv.ParseUint(c.s[c.i:c.i+width], 16, 32)
	if err != nil || !utf8.ValidRune(rune(n)) {
		return c.errf("invalid escape '\\%c%s'", e, c.s[c.i:c.i+width])
	}
	c.i += width
	b.WriteRune(rune(n))
	return nil
}

func (c *yamlCursor) flowList() (*yamlNode, error) {
	node := &yamlNode{Kind: yamlList, Line: c.line}
	c.i++ // '['
	for {
		c.skipSpace()
		if c.i >= len(c.s) || c.s[c.i] == '#' {
			return nil, c.errf("unterminated flow list: '[' must be closed by ']' on the same line")
		}
		if c.s[c.i] == ']' {
			c.i++
			return node, nil
		}
		if c.s[c.i] == ',' {
			return nil, c.errf("missing value before ',' in a flow list")
		}
		item, err := c.value(true)
		if err != nil {
			return nil, err
		}
		node.Items = append(node.Items, item)
		c.skipSpace()
		if c.i < len(c.s) {
			switch c.s[c.i] {
			case ',':
				c.i++
				continue
			case ']':
				continue
			case ':':
				return nil, c.errf("maps inside flow lists are not supported")
			}
			return nil, c.errf("expected ',' or ']' in a flow list, found %q", c.s[c.i:])
		}
	}
}

func (c *yamlCursor) flowMap() (*yamlNode, error) {
	node := &yamlNode{Kind: yamlMap, Line: c.line}
	seen := map[string]bool{}
	c.i++ // '{'
	for {
		c.skipSpace()
		if c.i >= len(c.s) || c.s[c.i] == '#' {
			return nil, c.errf("unterminated flow map: '{' must be closed by '}' on the same line")
		}
		if c.s[c.i] == '}' {
			c.i++
			return node, nil
		}
		var key *yamlNode
		var err error
		switch c.s[c.i] {
		case '"', '\'':
			key, err = c.quoted()
		case ',':
			return nil, c.errf("missing key before ',' in a flow map")
		case '[', '{', '!', '&', '*', '?':
			return nil, c.errf("flow map keys must be plain or quoted scalars")
		default:
			key, err = c.plain(true)
		}
		if err != nil {
			return nil, err
		}
		if seen[key.Value] {
			return nil, c.errf("duplicate key %q", key.Value)
		}
		seen[key.Value] = true
		c.skipSpace()
		val := &yamlNode{Kind: yamlScalar, Line: c.line}
		if c.i < len(c.s) && c.s[c.i] == ':' {
			c.i++
			c.skipSpace()
			if c.i < len(c.s) && c.s[c.i] != ',' && c.s[c.i] != '}' {
				if val, err = c.value(true); err != nil {
					return nil, err
				}
			}
		}
		node.Entries = append(node.Entries, yamlEntry{Key: key.Value, Line: c.line, Value: val})
		c.skipSpace()
		if c.i < len(c.s) {
			switch c.s[c.i] {
			case ',':
				c.i++
				continue
			case '}':
				continue
			}
			return nil, c.errf("expected ',' or '}' in a flow map, found %q", c.s[c.i:])
		}
	}
}
