package main

// HTTP routes: an op may carry one line
//
//	http METHOD /v1/PATH [body=PARAM]
//
// which makes it reachable over HTTP. {name} segments of the path are
// params of the op. GET and DELETE take the other params from the query
// string; POST and PUT from a JSON object body, or, with body=PARAM, the
// whole body is that one param. From these lines the generator emits the
// route table (httpRoutes in ops_gen.go) and the OpenAPI document.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

type httpSpec struct {
	line   int
	method string
	path   string
	body   string   // body=PARAM
	vars   []string // {name} segments, in order
}

var (
	httpPathRE = regexp.MustCompile(`^/v1(/([a-z][a-z0-9_.]*|\{[a-z][a-z0-9_]*\}))+$`)
	httpVarRE  = regexp.MustCompile(`\{([a-z][a-z0-9_]*)\}`)
)

func (p *parser) parseHTTP(n int, op *opSpec, fields []string) {
	if op.http != nil {
		p.errorf(n, "op %s: duplicate http (first at line %d)", op.name, op.http.line)
		return
	}
	if len(fields) < 2 || len(fields) > 3 {
		p.errorf(n, "op %s: http needs METHOD PATH [body=PARAM]", op.name)
		return
	}
	h := &httpSpec{line: n, method: fields[0], path: fields[1]}
	switch h.method {
	case "GET", "DELETE", "POST", "PUT":
	default:
		p.errorf(n, "op %s: http method %q: want GET, POST, PUT or DELETE", op.name, h.method)
	}
	if !httpPathRE.MatchString(h.path) {
		p.errorf(n, "op %s: http path %q: want /v1/... of lower-case segments and {param}s", op.name, h.path)
	}
	for _, m := range httpVarRE.FindAllStringSubmatch(h.path, -1) {
		h.vars = append(h.vars, m[1])
	}
	if len(fields) == 3 {
		key, value, ok := splitAttr(fields[2])
		if !ok || key != "body" || value == "" {
			p.errorf(n, "op %s: unexpected %q: want body=PARAM", op.name, fields[2])
		}
		h.body = value
		if h.method != "POST" && h.method != "PUT" {
			p.errorf(n, "op %s: body= needs POST or PUT", op.name)
		}
	}
	op.http = h
}

// checkHTTP checks the routes against their ops (params are all parsed by
// now) and against each other.
func (p *parser) checkHTTP() {
	seen := map[string]*opSpec{}
	for _, op := range p.ops {
		h := op.http
		if h == nil {
			continue
		}
		if op.flags&(1<<3|1<<4) != 0 { // preauth, streaming
			p.errorf(h.line, "op %s: preauth and streaming ops have no HTTP route", op.name)
		}
		key := h.method + " " + httpVarRE.ReplaceAllString(h.path, "{}")
		if prev := seen[key]; prev != nil {
			p.errorf(h.line, "op %s: route %s %s is already op %s's", op.name, h.method, h.path, prev.name)
		}
		seen[key] = op
		dup := map[string]bool{}
		for _, v := range h.vars {
			ps := op.param(v)
			switch {
			case dup[v]:
				p.errorf(h.line, "op %s: path param {%s} twice", op.name, v)
			case ps == nil:
				p.errorf(h.line, "op %s: path param {%s} is not a param of the op", op.name, v)
			case !ps.required:
				p.errorf(h.line, "op %s: path param {%s} must be required", op.name, v)
			case ps.typ != "string" && ps.typ != "u32" && ps.typ != "u64":
				p.errorf(h.line, "op %s: path param {%s} has type %s: want string, u32 or u64", op.name, v, ps.typ)
			}
			dup[v] = true
		}
		if h.body != "" {
			if op.param(h.body) == nil {
				p.errorf(h.line, "op %s: body=%s is not a param of the op", op.name, h.body)
			}
			for _, ps := range op.params {
				if ps.name != h.body && !dup[ps.name] && ps.required {
					p.errorf(h.line, "op %s: with body=%s, required param %s has nowhere to come from", op.name, h.body, ps.name)
				}
			}
		}
	}
}

func (op *opSpec) param(name string) *paramSpec {
	for _, ps := range op.params {
		if ps.name == name {
			return ps
		}
	}
	return nil
}

// paramIn says where a route takes a param from: path, query or body.
func (h *httpSpec) paramIn(ps *paramSpec) string {
	for _, v := range h.vars {
		if v == ps.name {
			return "path"
		}
	}
	if h.method == "GET" || h.method == "DELETE" {
		return "query"
	}
	if h.body != "" && h.body != ps.name {
		return "query"
	}
	return "body"
}

// routed returns the ops with a route, ordered by path then method.
func routed(ops []*opSpec) []*opSpec {
	var out []*opSpec
	for _, op := range ops {
		if op.http != nil {
			out = append(out, op)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].http, out[j].http
		if a.path != b.path {
			return a.path < b.path
		}
		return a.method < b.method
	})
	return out
}

// httpRoutes emits the route table; nothing when no op has a route.
func (g *emitter) httpRoutes(ops []*opSpec) {
	rs := routed(ops)
	if len(rs) == 0 {
		return
	}
	g.p(``)
	g.p(`// httpRoute reaches an op over HTTP (an "http" line in ops.spec).`)
	g.p(`type httpRoute struct {`)
	g.p(`op opCode`)
	g.p(`pattern string // net/http pattern: method and path`)
	g.p(`body string // the param the whole body is; "" = a JSON object of params (POST, PUT)`)
	g.p(`params []httpParam`)
	g.p(`}`)
	g.p(``)
	g.p(`// httpParam is one param of a route: its spec type says how a path or`)
	g.p(`// query value is turned into JSON.`)
	g.p(`type httpParam struct {`)
	g.p(`name, typ, in string // in: path, query or body`)
	g.p(`}`)
	g.p(``)
	g.p(`// httpRoutes are the ops reachable over HTTP.`)
	g.p(`var httpRoutes = []httpRoute{`)
	for _, op := range rs {
		h := op.http
		var ps []string
		for _, q := range op.params {
			ps = append(ps, fmt.Sprintf("{%q, %q, %q}", q.name, q.typ, h.paramIn(q)))
		}
		g.p(`{op: op%s, pattern: %q, body: %q, params: []httpParam{%s}},`, op.goName, h.method+" "+h.path, h.body, strings.Join(ps, ", "))
	}
	g.p(`}`)
}

// schema is the JSON Schema of a param's values.
func (ps *paramSpec) schema() map[string]any {
	s := map[string]any{}
	switch ps.typ {
	case "string":
		s["type"] = "string"
		if ps.min != nil {
			s["minLength"] = *ps.min
		}
		if ps.max != nil {
			s["maxLength"] = *ps.max
		}
		if ps.enum != nil {
			s["enum"] = ps.enum
		}
	case "bool":
		s["type"] = "boolean"
	case "u32", "u64":
		s["type"] = "integer"
		lo, hi := uint64(0), uint64(1<<32-1)
		if ps.typ == "u64" {
			hi = 1<<64 - 1
		}
		if ps.min != nil {
			lo = *ps.min
		}
		if ps.max != nil {
			hi = *ps.max
		}
		s["minimum"] = lo
		s["maximum"] = hi
	case "object":
		s["type"] = "object"
	case "[]string":
		s["type"] = "array"
		s["items"] = map[string]any{"type": "string"}
		if ps.max != nil {
			s["maxItems"] = *ps.max
		}
	case "[]json":
		s["type"] = "array"
		s["items"] = map[string]any{}
		if ps.max != nil {
			s["maxItems"] = *ps.max
		}
	}
	if ps.def != nil {
		var v any
		if ps.typ == "string" {
			v = *ps.def
		} else if json.Unmarshal([]byte(*ps.def), &v) != nil {
			v = *ps.def
		}
		s["default"] = v
	}
	return s
}

// errorCodes are the RCP error codes, the only ones an error body carries.
var errorCodes = []string{"UNSUPPORTED_PROTOCOL", "BAD_REQUEST", "UNAUTHORIZED", "AUTH_FAILED", "NOT_FOUND",
	"MACHINE_NOT_FOUND", "MACHINE_VERSION_EXISTS", "MACHINE_VERSION_LIMIT_EXCEEDED", "INSTANCE_NOT_FOUND",
	"INSTANCE_EXISTS", "INVALID_TRANSITION", "GUARD_FAILED", "CONFLICT", "WAL_IO_ERROR", "INTERNAL_ERROR", "RATE_LIMITED"}

// generateOpenAPI turns a spec into the OpenAPI 3.1 document of its routes,
// plus the routes that are not ops (events, the document itself, diagrams).
func generateOpenAPI(spec []byte) ([]byte, error) {
	ops, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	errResp := map[string]any{"$ref": "#/components/responses/Error"}
	jsonObj := func(desc string) map[string]any {
		return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}}
	}
	paths := map[string]any{}
	item := func(path string) map[string]any {
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		return paths[path].(map[string]any)
	}
	for _, op := range routed(ops) {
		h := op.http
		var params []any
		props := map[string]any{}
		var required []string
		for _, ps := range op.params {
			in := h.paramIn(ps)
			if in == "body" {
				if h.body == "" {
					props[ps.name] = ps.schema()
					if ps.required {
						required = append(required, ps.name)
					}
				}
				continue
			}
			params = append(params, map[string]any{"name": ps.name, "in": in, "required": ps.required || in == "path", "schema": ps.schema()})
			if ps.name == "idempotency_key" {
				params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": false,
					"description": "Same as the idempotency_key param.", "schema": ps.schema()})
			}
		}
		o := map[string]any{
			"operationId": op.name,
			"summary":     op.doc,
			"description": "RCP op " + op.name + ".",
			"responses":   map[string]any{"200": jsonObj("The op's result object."), "default": errResp},
		}
		if op.flags&(1<<1) != 0 { // write
			resp := jsonObj("The op's result object.")
			resp["headers"] = map[string]any{"X-Wal-Offset": map[string]any{"description": "The log offset the write (or the retried write) was recorded at.", "schema": map[string]any{"type": "integer"}}}
			o["responses"].(map[string]any)["200"] = resp
		}
		for _, ps := range op.params {
			if ps.name == "idempotency_key" && h.paramIn(ps) == "body" {
				params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": false,
					"description": "Same as the idempotency_key param.", "schema": ps.schema()})
			}
		}
		if len(params) > 0 {
			o["parameters"] = params
		}
		switch {
		case h.body != "":
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": op.param(h.body).schema()}}}
		case h.method == "POST" || h.method == "PUT":
			s := map[string]any{"type": "object", "properties": props}
			if len(required) > 0 {
				s["required"] = required
			}
			o["requestBody"] = map[string]any{"required": len(required) > 0, "content": map[string]any{"application/json": map[string]any{"schema": s}}}
		}
		item(h.path)[strings.ToLower(h.method)] = o
	}
	str := map[string]any{"type": "string"}
	u64 := map[string]any{"type": "integer", "minimum": 0}
	q := func(name, desc string, schema map[string]any) map[string]any {
		return map[string]any{"name": name, "in": "query", "required": false, "description": desc, "schema": schema}
	}
	item("/v1/events")["get"] = map[string]any{
		"operationId": "EVENTS",
		"summary":     "Server-sent events: one instance's events (instance_id), or those matching the filters. A watch cursor, as WATCH_INSTANCE and WATCH_ALL.",
		"description": "Each event is sent with id: its wal_offset. Reconnecting with the Last-Event-ID header (or from_offset) resumes after that offset with no gap and no duplicate. A comment heartbeat is sent every 15 s.",
		"parameters": []any{
			q("instance_id", "Watch one instance.", str),
			q("machine", "Machine names, comma-separated.", str),
			q("event", "Event names, comma-separated.", str),
			q("from_state", "From-states, comma-separated.", str),
			q("to_state", "To-states, comma-separated.", str),
			q("include_ctx", "Send each event's post-event ctx (default true).", map[string]any{"type": "boolean", "default": true}),
			q("from_offset", "Replay events after this offset first.", u64),
			map[string]any{"name": "Last-Event-ID", "in": "header", "required": false, "description": "Resume after this offset (takes precedence over from_offset).", "schema": u64},
		},
		"responses": map[string]any{"200": map[string]any{"description": "An event stream.", "content": map[string]any{"text/event-stream": map[string]any{"schema": str}}}, "default": errResp},
	}
	item("/v1/openapi.json")["get"] = map[string]any{
		"operationId": "OPENAPI",
		"summary":     "This document.",
		"responses":   map[string]any{"200": jsonObj("The OpenAPI document."), "default": errResp},
	}
	item("/v1/machines/{machine}/{version}/diagram.svg")["get"] = map[string]any{
		"operationId": "DIAGRAM",
		"summary":     "The machine version's state diagram as SVG, laid out by the server, with instance counts per state.",
		"parameters": []any{
			map[string]any{"name": "machine", "in": "path", "required": true, "schema": str},
			map[string]any{"name": "version", "in": "path", "required": true, "schema": map[string]any{"type": "integer", "minimum": 1}},
			q("highlight", "A state to highlight.", str),
		},
		"responses": map[string]any{"200": map[string]any{"description": "An SVG image.", "content": map[string]any{"image/svg+xml": map[string]any{"schema": str}}}, "default": errResp},
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "stmdb HTTP API",
			"version":     "1",
			"description": "The HTTP front door to stmdb: the same ops as RCP, generated from ops.spec. Authenticate with Authorization: Bearer TOKEN when auth is on.",
		},
		"paths":    paths,
		"security": []any{map[string]any{"bearer": []any{}}},
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"responses": map[string]any{"Error": map[string]any{"description": "An RCP error; the HTTP status is mapped from its code.",
				"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}},
			"schemas": map[string]any{"Error": map[string]any{
				"type": "object", "required": []string{"error"},
				"properties": map[string]any{"error": map[string]any{
					"type": "object", "required": []string{"code", "message", "retryable"},
					"properties": map[string]any{
						"code":      map[string]any{"type": "string", "enum": errorCodes},
						"message":   str,
						"retryable": map[string]any{"type": "boolean"},
						"details":   map[string]any{"type": "object"},
					},
				}},
			}},
		},
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
