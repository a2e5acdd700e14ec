package main

// The generator proper: parse and validate ops.spec, then emit ops_gen.go.
// generate is pure (bytes in, bytes out) so that tests can run it on
// in-memory specs.
//
// Spec syntax (see the header of ops.spec):
//
//	op NAME handler=METHOD flags=FLAG[,FLAG...]
//	  doc TEXT
//	  param NAME TYPE [required] [borrow] [default=V] [min=N] [max=N] [enum=A|B]
//
// A '#' at the start of a line or after whitespace starts a comment.

import (
	"bytes"
	"fmt"
	"go/format"
	"go/token"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// flagNames are the spec's flags in the order of the generated constants.
var flagNames = []struct{ spec, goName string }{
	{"read", "flagRead"},
	{"write", "flagWrite"},
	{"batchable", "flagBatchable"},
	{"preauth", "flagPreAuth"},
	{"streaming", "flagStreaming"},
}

// paramTypes maps spec types to Go types.
var paramTypes = map[string]string{
	"string":   "string",
	"bool":     "bool",
	"u32":      "uint32",
	"u64":      "uint64",
	"json":     "json.RawMessage",
	"object":   "json.RawMessage",
	"[]string": "[]string",
	"[]json":   "[]json.RawMessage",
}

var (
	opNameRE    = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)
	paramNameRE = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
)

// maxLenBound caps min/max on lengths so they fit an int everywhere.
const maxLenBound = 1<<31 - 1

type opSpec struct {
	line    int
	name    string // wire name, APPLY_EVENT
	goName  string // ApplyEvent
	handler string
	flags   uint8 // bit i = flagNames[i]
	doc     string
	docLine int
	params  []*paramSpec
	http    *httpSpec // its HTTP route, if the spec gives one (gen/http.go)
}

type paramSpec struct {
	line     int
	name     string // wire name, instance_id
	goName   string // InstanceID
	typ      string // spec type
	required bool
	borrow   bool    // string/json/object: the value aliases the request buffer
	def      *string // default, as written
	min, max *uint64
	enum     []string
}

// specError is one problem in the spec, at a 1-based line.
type specError struct {
	Line int
	Msg  string
}

func (e specError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// specErrors is every problem found in a spec, in line order.
type specErrors []specError

func (es specErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// goName turns a snake_case or SCREAMING_SNAKE name into a Go CamelCase
// name: each part capitalised, the part "id" becoming "ID".
func goName(name string) string {
	var b strings.Builder
	for _, part := range strings.Split(strings.ToLower(name), "_") {
		if part == "id" {
			b.WriteString("ID")
			continue
		}
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// stripComment drops a '#' comment: one at the start of the line or after
// whitespace, so that doc text may still contain '#' inside a word.
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			return line[:i]
		}
	}
	return line
}

type parser struct {
	errs specErrors
	ops  []*opSpec
}

func (p *parser) errorf(line int, format string, args ...any) {
	p.errs = append(p.errs, specError{Line: line, Msg: fmt.Sprintf(format, args...)})
}

// parseSpec parses and validates a spec.
func parseSpec(src []byte) ([]*opSpec, error) {
	p := &parser{}
	var cur *opSpec
	for i, line := range strings.Split(string(src), "\n") {
		n := i + 1
		line = strings.TrimSpace(stripComment(line))
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		switch fields[0] {
		case "op":
			cur = p.parseOp(n, fields[1:])
			p.ops = append(p.ops, cur)
		case "doc":
			text := strings.TrimSpace(strings.TrimPrefix(line, "doc"))
			switch {
			case cur == nil:
				p.errorf(n, "doc outside of an op")
			case text == "":
				p.errorf(n, "empty doc for op %s", cur.name)
			case cur.docLine != 0:
				p.errorf(n, "duplicate doc for op %s (first at line %d)", cur.name, cur.docLine)
			default:
				cur.doc, cur.docLine = text, n
			}
		case "param":
			if cur == nil {
				p.errorf(n, "param outside of an op")
				continue
			}
			if ps := p.parseParam(n, fields[1:]); ps != nil {
				for _, q := range cur.params {
					if q.name == ps.name {
						p.errorf(n, "duplicate param %s in op %s (first at line %d)", ps.name, cur.name, q.line)
						ps = nil
						break
					}
					if q.goName == ps.goName {
						p.errorf(n, "param %s in op %s has the same Go name %s as param %s", ps.name, cur.name, ps.goName, q.name)
						ps = nil
						break
					}
				}
				if ps != nil {
					cur.params = append(cur.params, ps)
				}
			}
		case "http":
			if cur == nil {
				p.errorf(n, "http outside of an op")
				continue
			}
			p.parseHTTP(n, cur, fields[1:])
		default:
			p.errorf(n, "unknown directive %q", fields[0])
		}
	}
	p.checkOps()
	p.checkHTTP()
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	ops := append([]*opSpec(nil), p.ops...)
	sort.Slice(ops, func(i, j int) bool { return ops[i].name < ops[j].name })
	return ops, nil
}

// splitAttr splits key=value; ok is false for a bare word.
func splitAttr(f string) (key, value string, ok bool) {
	return strings.Cut(f, "=")
}

func (p *parser) parseOp(n int, fields []string) *opSpec {
	op := &opSpec{line: n}
	if len(fields) == 0 {
		p.errorf(n, "op without a name")
		return op
	}
	op.name = fields[0]
	op.goName = goName(op.name)
	if !opNameRE.MatchString(op.name) {
		p.errorf(n, "invalid op name %q: want UPPER_SNAKE_CASE", op.name)
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, value, ok := splitAttr(f)
		if !ok {
			p.errorf(n, "op %s: unexpected %q: want handler=METHOD or flags=FLAGS", op.name, f)
			continue
		}
		if seen[key] && (key == "handler" || key == "flags") {
			p.errorf(n, "op %s: duplicate %s=", op.name, key)
			continue
		}
		seen[key] = true
		switch key {
		case "handler":
			if !token.IsIdentifier(value) {
				p.errorf(n, "op %s: invalid handler %q: want a Go method name", op.name, value)
			}
			op.handler = value
		case "flags":
			for _, fl := range strings.Split(value, ",") {
				bit := -1
				for i, fn := range flagNames {
					if fn.spec == fl {
						bit = i
					}
				}
				switch {
				case bit < 0:
					p.errorf(n, "op %s: unknown flag %q", op.name, fl)
				case op.flags&(1<<bit) != 0:
					p.errorf(n, "op %s: duplicate flag %q", op.name, fl)
				default:
					op.flags |= 1 << bit
				}
			}
		default:
			p.errorf(n, "op %s: unknown attribute %q", op.name, key)
		}
	}
	if op.handler == "" {
		p.errorf(n, "op %s has no handler=", op.name)
	}
	if !seen["flags"] {
		p.errorf(n, "op %s has no flags=", op.name)
	}
	return op
}

func (p *parser) parseParam(n int, fields []string) *paramSpec {
	if len(fields) < 2 {
		p.errorf(n, "param needs a name and a type")
		return nil
	}
	ps := &paramSpec{line: n, name: fields[0], goName: goName(fields[0]), typ: fields[1]}
	ok := true
	bad := func(format string, args ...any) {
		p.errorf(n, "param %s: "+format, append([]any{ps.name}, args...)...)
		ok = false
	}
	if !paramNameRE.MatchString(ps.name) {
		bad("invalid name: want lower_snake_case")
	}
	if _, known := paramTypes[ps.typ]; !known {
		bad("unknown type %q", ps.typ)
		return nil
	}
	seen := map[string]bool{}
	for _, f := range fields[2:] {
		key, value, isAttr := splitAttr(f)
		if seen[key] {
			bad("duplicate %s", key)
			continue
		}
		seen[key] = true
		switch {
		case !isAttr && key == "required":
			ps.required = true
		case !isAttr && key == "borrow":
			ps.borrow = true
		case isAttr && key == "default":
			ps.def = &value
		case isAttr && (key == "min" || key == "max"):
			v, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				bad("%s=%s is not a non-negative integer", key, value)
				continue
			}
			if key == "min" {
				ps.min = &v
			} else {
				ps.max = &v
			}
		case isAttr && key == "enum":
			ps.enum = strings.Split(value, "|")
		default:
			bad("unknown attribute %q", f)
		}
	}
	if !ok {
		return nil
	}
	if ps.required && ps.def != nil {
		bad("required together with default")
	}
	if ps.borrow && ps.typ != "string" && ps.typ != "json" && ps.typ != "object" {
		bad("borrow is only supported for types string, json and object, not %s", ps.typ)
	}
	// min/max: bounds of a value for integers, of a length for strings and
	// lists; nothing else has them.
	var typeMax uint64
	switch ps.typ {
	case "u32":
		typeMax = 1<<32 - 1
	case "u64":
		typeMax = 1<<64 - 1
	case "string", "[]string", "[]json":
		typeMax = maxLenBound
	default:
		if ps.min != nil || ps.max != nil {
			bad("min/max are not supported for type %s", ps.typ)
		}
	}
	for _, b := range []struct {
		name string
		v    *uint64
	}{{"min", ps.min}, {"max", ps.max}} {
		if b.v != nil && typeMax != 0 && *b.v > typeMax {
			bad("%s=%d is out of range for type %s", b.name, *b.v, ps.typ)
		}
	}
	if ps.min != nil && ps.max != nil && *ps.min > *ps.max {
		bad("min=%d is greater than max=%d", *ps.min, *ps.max)
	}
	if ps.enum != nil {
		if ps.typ != "string" {
			bad("enum is only supported for type string, not %s", ps.typ)
		}
		seenVal := map[string]bool{}
		for _, e := range ps.enum {
			switch {
			case e == "":
				bad("empty enum value")
			case seenVal[e]:
				bad("duplicate enum value %q", e)
			default:
				seenVal[e] = true
				if err := ps.checkLen(uint64(len(e))); err != "" {
					bad("enum value %q %s", e, err)
				}
			}
		}
	}
	if ps.def != nil && ok {
		if msg := ps.checkDefault(*ps.def); msg != "" {
			bad("default=%s %s", *ps.def, msg)
		}
	}
	if !ok {
		return nil
	}
	return ps
}

// checkLen checks a length against min/max (strings).
func (ps *paramSpec) checkLen(n uint64) string {
	if ps.min != nil && n < *ps.min {
		return fmt.Sprintf("is shorter than min=%d", *ps.min)
	}
	if ps.max != nil && n > *ps.max {
		return fmt.Sprintf("is longer than max=%d", *ps.max)
	}
	return ""
}

// checkDefault checks that a default parses for the type and satisfies the
// param's constraints; it returns "" or what is wrong.
func (ps *paramSpec) checkDefault(def string) string {
	switch ps.typ {
	case "string":
		if msg := ps.checkLen(uint64(len(def))); msg != "" {
			return msg
		}
		if ps.enum != nil {
			for _, e := range ps.enum {
				if e == def {
					return ""
				}
			}
			return "is not one of the enum values"
		}
		return ""
	case "bool":
		if def != "true" && def != "false" {
			return "is not a bool (true or false)"
		}
		return ""
	case "u32", "u64":
		bits := 32
		if ps.typ == "u64" {
			bits = 64
		}
		if def == "" || (def[0] == '0' && len(def) > 1) || strings.ContainsAny(def, "+-") {
			return "is not a " + ps.typ
		}
		v, err := strconv.ParseUint(def, 10, bits)
		if err != nil {
			return "is not a " + ps.typ
		}
		if ps.min != nil && v < *ps.min {
			return fmt.Sprintf("is less than min=%d", *ps.min)
		}
		if ps.max != nil && v > *ps.max {
			return fmt.Sprintf("is greater than max=%d", *ps.max)
		}
		return ""
	default:
		return "is not supported for type " + ps.typ
	}
}

// checkOps runs the checks across ops.
func (p *parser) checkOps() {
	byName := map[string]*opSpec{}
	byGoName := map[string]*opSpec{}
	byHandler := map[string]*opSpec{}
	for _, op := range p.ops {
		if op.name == "" {
			continue
		}
		if prev := byName[op.name]; prev != nil {
			p.errorf(op.line, "duplicate op %s (first at line %d)", op.name, prev.line)
			continue
		}
		byName[op.name] = op
		if prev := byGoName[op.goName]; prev != nil {
			p.errorf(op.line, "op %s has the same Go name %s as op %s", op.name, op.goName, prev.name)
		}
		byGoName[op.goName] = op
		switch op.goName {
		case "Code", "Desc", "Table":
			p.errorf(op.line, "op %s: its constant op%s would clash with a generated name", op.name, op.goName)
		}
		if op.handler != "" {
			if prev := byHandler[op.handler]; prev != nil {
				p.errorf(op.line, "op %s: handler %s is already used by op %s", op.name, op.handler, prev.name)
			}
			byHandler[op.handler] = op
		}
	}
	if len(p.ops) == 0 {
		p.errorf(1, "no ops")
	}
	if len(p.ops) > 255 {
		p.errorf(p.ops[255].line, "too many ops for a uint8 opCode")
	}
}

// generate turns a spec into the formatted source of ops_gen.go.
func generate(spec []byte) ([]byte, error) {
	ops, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	g := &emitter{}
	g.file(ops)
	out, err := format.Source(g.buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting generated code: %v\n%s", err, g.buf.Bytes())
	}
	return out, nil
}

type emitter struct {
	buf bytes.Buffer
}

func (g *emitter) p(format string, args ...any) {
	fmt.Fprintf(&g.buf, format, args...)
	g.buf.WriteByte('\n')
}

func (g *emitter) file(ops []*opSpec) {
	needJSON, needMath := false, false
	for _, op := range ops {
		for _, ps := range op.params {
			switch ps.typ {
			case "json", "object", "[]json":
				needJSON = true
			case "u32", "u64":
				if ps.max == nil {
					needMath = true
				}
			}
		}
	}

	g.p(`// Code generated by "go run ./gen"; DO NOT EDIT.`)
	g.p(``)
	g.p(`package main`)
	g.p(``)
	g.p(`import (`)
	if needJSON {
		g.p(`"encoding/json"`)
	}
	if needMath {
		g.p(`"math"`)
	}
	g.p(`"strconv"`)
	g.p(`)`)
	g.p(``)

	g.p(`// opFlag is a set of properties of an op.`)
	g.p(`type opFlag uint8`)
	g.p(``)
	g.p(`const (`)
	g.p(`flagRead opFlag = 1 << iota // reads state`)
	g.p(`flagWrite // changes state`)
	g.p(`flagBatchable // allowed inside BATCH`)
	g.p(`flagPreAuth // allowed before AUTH`)
	g.p(`flagStreaming // streams its result`)
	g.p(`)`)
	g.p(``)

	g.p(`// opCode identifies an op; 0 is invalid.`)
	g.p(`type opCode uint8`)
	g.p(``)
	g.p(`const (`)
	for i, op := range ops {
		g.p(`op%s opCode = %d // %s`, op.goName, i+1, op.name)
	}
	g.p(`)`)
	g.p(``)
	g.p(`// numOps is the number of ops; valid codes are 1..numOps.`)
	g.p(`const numOps = %d`, len(ops))
	g.p(``)

	g.p(`// opDesc describes an op. (Not opInfo: that is the INFO op's code.)`)
	g.p(`type opDesc struct {`)
	g.p(`name string // wire name`)
	g.p(`flags opFlag`)
	g.p(`doc string // one line describing the result`)
	g.p(`}`)
	g.p(``)
	g.p(`// opTable is indexed by opCode; opTable[0] is the zero opDesc.`)
	g.p(`var opTable = [numOps + 1]opDesc{`)
	for _, op := range ops {
		g.p(`op%s: {name: %q, flags: %s, doc: %s},`, op.goName, op.name, flagExpr(op.flags), strconv.Quote(op.doc))
	}
	g.p(`}`)
	g.p(``)

	g.p(`// lookupOp returns the code of the op with the given wire name.`)
	g.p(`func lookupOp(name string) (opCode, bool) {`)
	g.p(`switch name {`)
	for _, op := range ops {
		g.p(`case %q:`, op.name)
		g.p(`return op%s, true`, op.goName)
	}
	g.p(`}`)
	g.p(`return 0, false`)
	g.p(`}`)
	g.p(``)

	g.p(`// String returns the op's wire name.`)
	g.p(`func (o opCode) String() string {`)
	g.p(`if o == 0 || o > numOps {`)
	g.p(`return "opCode(" + strconv.Itoa(int(o)) + ")"`)
	g.p(`}`)
	g.p(`return opTable[o].name`)
	g.p(`}`)
	g.p(``)

	g.p(`func _() {`)
	g.p(`// An "invalid array index" compiler error signifies that the constant`)
	g.p(`// values have changed. Re-run go generate.`)
	g.p(`var x [1]struct{}`)
	for i, fn := range flagNames {
		g.p(`_ = x[%s-%d]`, fn.goName, 1<<i)
	}
	for i, op := range ops {
		g.p(`_ = x[op%s-%d]`, op.goName, i+1)
	}
	g.p(`_ = x[numOps-%d]`, len(ops))
	g.p(`}`)

	for _, op := range ops {
		g.params(op)
		g.decoder(op)
	}

	g.p(``)
	g.p(`// dispatch decodes the params of op and calls its handler. params must`)
	g.p(`// be valid JSON: conn.handle validated the whole request.`)
	g.p(`func (s *server) dispatch(c *conn, op opCode, params []byte) (reply, *rcpError) {`)
	g.p(`switch op {`)
	for _, op := range ops {
		g.p(`case op%s:`, op.goName)
		g.p(`var p %sParams`, op.goName)
		g.p(`if err := decode%sParamsWith(params, &p, true); err != nil {`, op.goName)
		g.p(`return reply{}, err`)
		g.p(`}`)
		g.p(`return s.%s(c, &p)`, op.handler)
	}
	g.p(`}`)
	g.p(`return reply{}, newError(codeBadRequest, "unknown op")`)
	g.p(`}`)
	g.httpRoutes(ops)
}

func flagExpr(flags uint8) string {
	var parts []string
	for i, fn := range flagNames {
		if flags&(1<<i) != 0 {
			parts = append(parts, fn.goName)
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, " | ")
}

// pointer reports whether the param decodes to a pointer: optional scalars
// without a default.
func (ps *paramSpec) pointer() bool {
	switch ps.typ {
	case "string", "bool", "u32", "u64":
		return !ps.required && ps.def == nil
	}
	return false
}

func (ps *paramSpec) goType() string {
	if ps.pointer() {
		return "*" + paramTypes[ps.typ]
	}
	return paramTypes[ps.typ]
}

// describe is the field comment: the wire name and constraints.
func (ps *paramSpec) describe() string {
	parts := []string{ps.name}
	if ps.required {
		parts = append(parts, "required")
	}
	if ps.borrow {
		parts = append(parts, "borrowed")
	}
	if ps.def != nil {
		parts = append(parts, "default="+*ps.def)
	}
	if ps.min != nil {
		parts = append(parts, fmt.Sprintf("min=%d", *ps.min))
	}
	if ps.max != nil {
		parts = append(parts, fmt.Sprintf("max=%d", *ps.max))
	}
	if ps.enum != nil {
		parts = append(parts, "enum="+strings.Join(ps.enum, "|"))
	}
	return strings.Join(parts, " ")
}

func (g *emitter) params(op *opSpec) {
	g.p(``)
	g.p(`// %sParams are the params of %s.`, op.goName, op.name)
	if len(op.params) == 0 {
		g.p(`type %sParams struct{}`, op.goName)
		return
	}
	for _, ps := range op.params {
		if ps.borrow {
			g.p(`//`)
			g.p(`// Borrowed fields alias the request buffer: they are valid only while`)
			g.p(`// the request is handled, and must be copied to be kept.`)
			break
		}
	}
	g.p(`type %sParams struct {`, op.goName)
	for _, ps := range op.params {
		g.p(`%s %s // %s`, ps.goName, ps.goType(), ps.describe())
	}
	g.p(`}`)
}

// call is the expression decoding the param's raw value v.
func (ps *paramSpec) call(v string) string {
	lenMin, lenMax := "0", "-1"
	if ps.min != nil {
		lenMin = strconv.FormatUint(*ps.min, 10)
	}
	if ps.max != nil {
		lenMax = strconv.FormatUint(*ps.max, 10)
	}
	borrowed := ""
	if ps.borrow {
		borrowed = "Borrowed"
	}
	switch ps.typ {
	case "string":
		return fmt.Sprintf("paramString%s(%q, %s, %s, %s)", borrowed, ps.name, v, lenMin, lenMax)
	case "bool":
		return fmt.Sprintf("paramBool(%q, %s)", ps.name, v)
	case "u32", "u64":
		fn, max := "paramU32", "math.MaxUint32"
		if ps.typ == "u64" {
			fn, max = "paramU64", "math.MaxUint64"
		}
		if ps.max != nil {
			max = lenMax
		}
		return fmt.Sprintf("%s(%q, %s, %s, %s)", fn, ps.name, v, lenMin, max)
	case "json":
		return fmt.Sprintf("paramJSON%s(%q, %s)", borrowed, ps.name, v)
	case "object":
		return fmt.Sprintf("paramObject%s(%q, %s)", borrowed, ps.name, v)
	case "[]string":
		return fmt.Sprintf("paramStringList(%q, %s, %s, %s)", ps.name, v, lenMin, lenMax)
	case "[]json":
		return fmt.Sprintf("paramJSONList(%q, %s, %s, %s)", ps.name, v, lenMin, lenMax)
	}
	panic("unknown type " + ps.typ)
}

// defaultLit is the Go literal of the param's default.
func (ps *paramSpec) defaultLit() string {
	if ps.typ == "string" {
		return strconv.Quote(*ps.def)
	}
	return *ps.def // bool and integers were validated
}

// enumCheck emits the check that the string expression x is an enum value.
func (g *emitter) enumCheck(ps *paramSpec, x string) {
	if ps.enum == nil {
		return
	}
	quoted := make([]string, len(ps.enum))
	for i, e := range ps.enum {
		quoted[i] = strconv.Quote(e)
	}
	msg := fmt.Sprintf("field '%s' must be one of: %s", ps.name, strings.Join(ps.enum, ", "))
	g.p(`switch %s {`, x)
	g.p(`case %s:`, strings.Join(quoted, ", "))
	g.p(`default:`)
	g.p(`return badParam(%q, %s)`, ps.name, strconv.Quote(strings.ReplaceAll(msg, "%", "%%")))
	g.p(`}`)
}

func (g *emitter) decoder(op *opSpec) {
	g.p(``)
	g.p(`// decode%sParams decodes the params of %s into p.`, op.goName, op.name)
	g.p(`func decode%sParams(raw []byte, p *%sParams) *rcpError {`, op.goName, op.goName)
	g.p(`return decode%sParamsWith(raw, p, false)`, op.goName)
	g.p(`}`)
	g.p(``)
	g.p(`// decode%sParamsWith is decode%sParams; trusted: raw was validated`, op.goName, op.goName)
	g.p(`// as JSON already (see scanParams).`)
	g.p(`func decode%sParamsWith(raw []byte, p *%sParams, trusted bool) *rcpError {`, op.goName, op.goName)
	if len(op.params) == 0 {
		g.p(`*p = %sParams{}`, op.goName)
		g.p(`return paramValidateObject(raw)`)
		g.p(`}`)
		return
	}
	vars := make([]string, len(op.params))
	for i, ps := range op.params {
		vars[i] = "v" + ps.goName
	}
	g.p(`*p = %sParams{}`, op.goName)
	g.p(`var %s []byte`, strings.Join(vars, ", "))
	g.p(`sc, err := scanParams(raw, trusted)`)
	g.p(`if err != nil {`)
	g.p(`return err`)
	g.p(`}`)
	g.p(`for sc.next() {`)
	g.p(`switch string(sc.key) {`)
	for i, ps := range op.params {
		g.p(`case %q:`, ps.name)
		g.p(`%s = sc.val`, vars[i])
	}
	g.p(`}`)
	g.p(`}`)
	g.p(`if sc.err != nil {`)
	g.p(`return sc.err`)
	g.p(`}`)
	for i, ps := range op.params {
		v, field := vars[i], "p."+ps.goName
		g.p(`// %s`, ps.name)
		switch {
		case ps.required:
			g.p(`if paramAbsent(%s) {`, v)
			g.p(`return paramMissing(%q)`, ps.name)
			g.p(`}`)
			g.p(`if %s, err = %s; err != nil {`, field, ps.call(v))
			g.p(`return err`)
			g.p(`}`)
			g.enumCheck(ps, field)
		case ps.pointer():
			g.p(`if !paramAbsent(%s) {`, v)
			g.p(`v, err := %s`, ps.call(v))
			g.p(`if err != nil {`)
			g.p(`return err`)
			g.p(`}`)
			g.enumCheck(ps, "v")
			g.p(`%s = &v`, field)
			g.p(`}`)
		default:
			if ps.def != nil {
				g.p(`%s = %s`, field, ps.defaultLit())
			}
			g.p(`if !paramAbsent(%s) {`, v)
			g.p(`if %s, err = %s; err != nil {`, field, ps.call(v))
			g.p(`return err`)
			g.p(`}`)
			g.enumCheck(ps, field)
			g.p(`}`)
		}
	}
	g.p(`return nil`)
	g.p(`}`)
}
