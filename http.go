package main

// The HTTP front door: a JSON API under /v1, server-sent events, and the
// console. It is another way into the same handlers as RCP: a route
// (generated from ops.spec, httpRoutes) turns the path, query string and
// body into the op's params object, and the generated decoder and the op's
// handler take it from there, exactly as for an RCP request. Replies wait
// for durability as RCP replies do (reply.lsn), and an rcpError becomes a
// JSON error body with an HTTP status mapped from its code.
//
// Handlers receive a nil *conn from here: the routed ops are the ones that
// need no connection (no HELLO, AUTH, BYE or WATCH_*; gen/http.go refuses
// routes for preauth and streaming ops).
//
// Auth is the RCP auth: with auth.required, every /v1 request must carry
// Authorization: Bearer TOKEN. There are no cookies and no token in URLs,
// so a page on another origin cannot make a browser send an authenticated
// request (no CSRF); CORS is off unless http.cors_origins allows origins.

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed console
var consoleFS embed.FS

// HTTP server timeouts. SSE streams lift the read and write deadlines and
// set their own per write.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 60 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpMaxHeaderBytes    = 64 << 10
)

// httpStatus maps an RCP error code to an HTTP status.
func httpStatus(code string) int {
	switch code {
	case codeBadRequest, codeUnsupportedProtocol:
		return http.StatusBadRequest
	case codeUnauthorized, codeAuthFailed:
		return http.StatusUnauthorized
	case codeNotFound, codeMachineNotFound, codeInstanceNotFound:
		return http.StatusNotFound
	case codeConflict, codeInstanceExists, codeMachineVersionExists, codeInvalidTransition, codeMachineVersionLimit:
		return http.StatusConflict
	case codeGuardFailed:
		return http.StatusPreconditionFailed
	case codeRateLimited:
		return http.StatusTooManyRequests
	case codeWALIOError:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// httpWriteError sends an error body with its mapped status (or status,
// when not 0).
func httpWriteError(w http.ResponseWriter, status int, e *rcpError) {
	if status == 0 {
		status = httpStatus(e.Code)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	switch status {
	case http.StatusUnauthorized:
		if e.Code == codeAuthFailed {
			h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		} else {
			h.Set("WWW-Authenticate", `Bearer realm="stmdb"`)
		}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	b := append([]byte(`{"error":`), encMarshal(errBody(e))...)
	w.Write(append(b, '}', '\n'))
}

// httpHandler is the whole HTTP front door.
func (s *server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range httpRoutes {
		mux.Handle(rt.pattern, s.httpOp(rt))
	}
	mux.HandleFunc("GET /v1/events", s.httpEvents)
	mux.HandleFunc("GET /v1/machines/{machine}/{version}/diagram.svg", s.httpDiagram)
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		b, _ := consoleFS.ReadFile("console/openapi.json")
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		httpWriteError(w, http.StatusNotFound, newError(codeNotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	sub, _ := fs.Sub(consoleFS, "console")
	files := http.FileServerFS(sub)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
		files.ServeHTTP(w, r)
	})
	return s.httpGate(mux)
}

// httpGate applies CORS, auth and the body limit before any route.
func (s *server) httpGate(next http.Handler) http.Handler {
	origins := map[string]bool{}
	for _, o := range strings.Split(s.cfg.HTTPCORSOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins[o] = true
		}
	}
	limit := int64(s.frameLimit())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" && (origins[o] || origins["*"]) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", o)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "X-Wal-Offset")
			if r.Method == http.MethodOptions {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Last-Event-ID")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent) // a preflight from an origin not allowed: no CORS headers
			return
		}
		if strings.HasPrefix(r.URL.Path, "/v1/") || r.URL.Path == "/v1" {
			if e := s.httpAuth(r); e != nil {
				httpWriteError(w, 0, e)
				return
			}
		}
		if r.ContentLength > limit {
			httpWriteError(w, http.StatusRequestEntityTooLarge, newError(codeBadRequest, "request body is %d bytes; the limit is %d", r.ContentLength, limit).with("limit", limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// httpAuth checks the bearer token when auth is required, with the same
// check (and the same delay on failure) as the AUTH op.
func (s *server) httpAuth(r *http.Request) *rcpError {
	if !s.cfg.AuthRequired {
		return nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return newError(codeUnauthorized, "authentication required: send Authorization: Bearer TOKEN")
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return newError(codeAuthFailed, "authentication failed: unsupported scheme '%s' (only Bearer)", scheme)
	}
	c := &conn{} // AUTH's per-connection state, thrown away: one failure, one delay
	_, err := s.handleAuth(c, &AuthParams{Method: "bearer", Token: strings.TrimSpace(tok)})
	return err
}

// httpOp serves one route.
func (s *server) httpOp(rt httpRoute) http.HandlerFunc {
	name := opTable[rt.op].name
	hasIdem := false
	for _, p := range rt.params {
		hasIdem = hasIdem || p.name == "idempotency_key"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		params, status, rerr := httpParams(rt, r, hasIdem)
		var rep reply
		if rerr == nil {
			rerr = s.writeGate(rt.op)
		}
		if rerr == nil {
			rep, rerr = s.dispatch(nil, rt.op, params)
		}
		if rerr != nil {
			s.metrics.request(name, rerr.Code, time.Since(start))
			if rerr.Code != codeWALIOError && status == 0 {
				// An error can describe state too (not found, conflict).
				if err := s.log.waitDurable(s.readLSN()); err != nil {
					rerr = newError(codeWALIOError, "write-ahead log: %v", err)
				}
			}
			httpWriteError(w, status, rerr)
			return
		}
		if rep.lsn > 0 {
			if err := s.log.waitDurable(rep.lsn); err != nil {
				s.metrics.request(name, codeWALIOError, time.Since(start))
				httpWriteError(w, 0, newError(codeWALIOError, "write-ahead log: %v", err))
				return
			}
			if opTable[rt.op].flags&flagWrite != 0 && s.repl.syncWait() && !s.repl.waitReplicated(rep.lsn) { // replica.go
				httpWriteError(w, 0, newError(codeInternalError, "server shutting down"))
				return
			}
		}
		s.metrics.request(name, "", time.Since(start))
		body := rep.result
		if rep.rec != nil {
			body = appendResult(make([]byte, 0, resultSize(rep.rec)+1), rep.rec, true)
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		if rep.meta {
			h.Set("X-Wal-Offset", strconv.FormatUint(rep.lsn, 10))
		}
		w.Write(append(body, '\n'))
	}
}

// httpParams builds an op's params object from the request: path values,
// the query string, the Idempotency-Key header and the body. A param may
// come from one place only. status is set for errors that are not the op's
// (413 for a body over the limit).
func httpParams(rt httpRoute, r *http.Request, hasIdem bool) (params []byte, status int, _ *rcpError) {
	p := make([]byte, 0, 256)
	p = append(p, '{')
	given := map[string]bool{}
	add := func(name string) {
		if len(p) > 1 {
			p = append(p, ',')
		}
		p = encAppendString(p, name)
		p = append(p, ':')
		given[name] = true
	}
	var q map[string][]string
	for _, hp := range rt.params {
		var v string
		switch hp.in {
		case "path":
			v = r.PathValue(hp.name)
		case "query":
			if q == nil {
				q = r.URL.Query()
			}
			vs, ok := q[hp.name]
			if !ok {
				continue
			}
			v = vs[len(vs)-1]
		default:
			continue
		}
		add(hp.name)
		var err *rcpError
		if p, err = httpValue(p, hp, v); err != nil {
			return nil, 0, err
		}
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" && hasIdem {
		if given["idempotency_key"] {
			return nil, 0, badParam("idempotency_key", "idempotency_key given both as a query parameter and as the Idempotency-Key header")
		}
		add("idempotency_key")
		p = encAppendString(p, k)
	}
	method := r.Method
	if method == http.MethodPost || method == http.MethodPut {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, http.StatusRequestEntityTooLarge, newError(codeBadRequest, "request body is over the limit of %d bytes", mbe.Limit).with("limit", mbe.Limit)
			}
			return nil, http.StatusBadRequest, newError(codeBadRequest, "reading the request body: %v", err)
		}
		body = bytes.TrimSpace(body)
		if !paramJSONValid(body) && len(body) > 0 {
			return nil, 0, newError(codeBadRequest, "request body is not valid JSON")
		}
		if rt.body != "" {
			if len(body) == 0 {
				return nil, 0, paramMissing(rt.body)
			}
			add(rt.body)
			p = append(p, body...)
		} else if len(body) > 0 {
			if body[0] != '{' {
				return nil, 0, newError(codeBadRequest, "request body must be a JSON object")
			}
			sc, err := scanObject(body)
			if err != nil {
				return nil, 0, err
			}
			for sc.next() {
				if k := string(sc.key); given[k] {
					return nil, 0, badParam(k, "field '%s' is given twice (in the body and in the URL or a header)", k)
				}
			}
			if sc.err != nil {
				return nil, 0, sc.err
			}
			if inner := bytes.TrimSpace(body[1 : len(body)-1]); len(inner) > 0 {
				if len(p) > 1 {
					p = append(p, ',')
				}
				p = append(p, inner...)
			}
		}
	}
	return append(p, '}'), 0, nil
}

// httpValue appends the JSON form of a path or query value for the
// param's type. A value that is not of the type goes in as a string, so
// that the op's decoder refuses it naming the field.
func httpValue(p []byte, hp httpParam, v string) ([]byte, *rcpError) {
	switch hp.typ {
	case "u32", "u64":
		if v != "" && len(v) <= 20 && strings.Trim(v, "0123456789") == "" {
			return append(p, v...), nil
		}
	case "bool":
		switch v {
		case "true", "1":
			return append(p, "true"...), nil
		case "false", "0":
			return append(p, "false"...), nil
		}
	case "[]string":
		p = append(p, '[')
		for i, s := range strings.Split(v, ",") {
			if i > 0 {
				p = append(p, ',')
			}
			p = encAppendString(p, s)
		}
		return append(p, ']'), nil
	case "json", "object":
		if paramJSONValid([]byte(v)) {
			return append(p, v...), nil
		}
		return nil, badParam(hp.name, "field '%s' is not valid JSON", hp.name)
	}
	return encAppendString(p, v), nil
}

// serveHTTP serves the HTTP API and console on ln until close.
func (s *server) serveHTTP(ln net.Listener) {
	if s.tlsConfig != nil {
		tc := s.tlsConfig.Clone()
		tc.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, tc)
	}
	hs := &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          nil,
	}
	s.wg.Add(1)
	done := make(chan struct{})
	go func() {
		defer s.wg.Done()
		select {
		case <-s.stop:
		case <-done:
			return
		}
		// Requests in flight finish (their replies wait for durability);
		// event streams end on s.stop.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if hs.Shutdown(ctx) != nil {
			hs.Close()
		}
	}()
	err := hs.Serve(ln)
	close(done)
	if err != nil && err != http.ErrServerClosed {
		s.logger.Error("http listener failed", "err", err)
	}
}
