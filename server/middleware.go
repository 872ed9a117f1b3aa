package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/wxphone/wxphone"
)

// perm is what a route requires of the API key.
type perm uint8

const (
	permNone  perm = iota // no key (health, readiness, metrics)
	permPhone             // a key from APIKeys
	permToken             // a key from TokenAPIKeys
)

// route is one method on one path.
type route struct {
	method string
	path   string // the pattern, used as the metrics and log label
	perm   perm
	body   bool // a JSON body is required
	handle func(w http.ResponseWriter, r *http.Request, rc *reqCtx)
}

// Route describes one registered route (for documentation and tests).
type Route struct {
	// Method is the HTTP method (GET routes also answer HEAD).
	Method string
	// Path is the exact path, also the route label of logs and metrics.
	Path string
	// Auth is "none", "phone" (APIKeys) or "token" (TokenAPIKeys).
	Auth string
}

// Routes lists the routes the server registers.
func (s *Server) Routes() []Route {
	var out []Route
	for _, p := range sortedKeys(s.routes) {
		for _, rt := range s.routes[p] {
			out = append(out, Route{Method: rt.method, Path: rt.path, Auth: [...]string{"none", "phone", "token"}[rt.perm]})
		}
	}
	return out
}

// reqCtx carries what one request's log line reports.
type reqCtx struct {
	id       string
	route    string
	caller   string
	appID    string
	errCode  ErrorCode
	errcode  int
	rid      string
	replayed *bool
	phone    wxphone.PhoneNumber
	cause    error
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) middleware() http.Handler {
	return http.HandlerFunc(s.serve)
}

// serve is the whole middleware chain: request id, security headers,
// routing, panic recovery, logging and metrics, shutdown refusal, API key
// authentication, the per-key rate limit, content type and body limit, the
// request deadline, then the route's handler.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	rc := &reqCtx{id: requestID(r.Header.Get("X-Request-Id"))}
	h := w.Header()
	h["X-Request-Id"] = []string{rc.id}
	h["X-Content-Type-Options"] = hdrNosniff

	rt, allow := s.match(r)
	if rt == nil && allow == "" && s.fallback != nil && r.URL.RawPath == "" && !ambiguousFraming(r) {
		rc.route = "other"
		sw := &statusWriter{ResponseWriter: w}
		defer s.finish(sw, r, rc, start)
		s.fallback.ServeHTTP(sw, r)
		return
	}
	h["Cache-Control"] = hdrNoStore
	h["Content-Security-Policy"] = hdrCSP
	sw := &statusWriter{ResponseWriter: w}
	defer s.finish(sw, r, rc, start)
	if e := s.admit(r, rt, allow, rc); e != nil {
		s.writeError(sw, rc, e)
		return
	}
	if rt.body {
		r.Body = http.MaxBytesReader(sw, r.Body, MaxBodyBytes)
	}
	if rt.perm != permNone {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	rt.handle(sw, r, rc)
}

// admit routes r and applies the checks before its handler: shutdown
// refusal, API key, rate limit, content type and declared length.
func (s *Server) admit(r *http.Request, rt *route, allow string, rc *reqCtx) *apiError {
	switch {
	case ambiguousFraming(r):
		rc.route = "other"
		return errAmbiguousFraming()
	case rt == nil && allow == "":
		rc.route = "other"
		return errNotFound()
	case rt == nil:
		rc.route = routePath(r) // a known path: bounded
		e := newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed on this route; see the Allow header.")
		e.allow = allow
		return e
	}
	rc.route = rt.path
	if rt.perm != permNone {
		if s.closing.Load() {
			return newError(http.StatusServiceUnavailable, CodeShuttingDown, "This instance is shutting down; retry on another one.")
		}
		if e := s.authorize(r, rt, rc); e != nil {
			return e
		}
		if e := s.limit(r.Context(), rc); e != nil {
			return e
		}
	}
	if rt.body {
		if e := checkBody(r); e != nil {
			return e
		}
	}
	return nil
}

// Header values shared by every response. net/http only reads a response
// header's value slices, and nothing here appends to them (len == cap, so
// an append would copy), so one slice serves every request instead of one
// allocation per header per request.
var (
	hdrNosniff  = []string{"nosniff"}
	hdrNoStore  = []string{"no-store"}
	hdrCSP      = []string{"default-src 'none'; frame-ancestors 'none'"}
	hdrJSONUTF8 = []string{"application/json; charset=utf-8"}
)

// finish recovers a panic, records metrics and writes the log line.
func (s *Server) finish(sw *statusWriter, r *http.Request, rc *reqCtx, start time.Time) {
	if p := recover(); p != nil {
		if p == http.ErrAbortHandler {
			panic(p)
		}
		msg := fmt.Sprint(p)
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		s.log.Error("panic serving a request", "request_id", rc.id, "route", rc.route, "panic", msg, "stack", string(debug.Stack()))
		if sw.status == 0 {
			s.writeError(sw, rc, newError(http.StatusInternalServerError, CodeInternalError, "Internal error."))
		} else {
			rc.errCode = CodeInternalError
		}
	}
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	now := time.Now()
	elapsed := now.Sub(start)
	annotateSpan(r, rc)
	s.metrics.Requests.WithLabelValues(rc.route, strconv.Itoa(status)).Inc()
	s.metrics.RequestDuration.WithLabelValues(rc.route).Observe(elapsed.Seconds())

	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelWarn
		if status == http.StatusInternalServerError {
			level = slog.LevelError
		}
	case rc.route == "other" && status < 400, rc.route == "/healthz", rc.route == "/readyz" && status == http.StatusOK, rc.route == "/metrics":
		level = slog.LevelDebug
	}
	// The line goes to the handler as a record without a caller (its pc,
	// runtime.Callers, cost 1 % of the service's CPU): the caller would be
	// this function for every line, so AddSource has nothing to say here.
	ctx, h := r.Context(), s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12) // room for every optional one: one allocation
	attrs = append(attrs,
		slog.String("request_id", rc.id),
		slog.String("method", r.Method),
		slog.String("route", rc.route),
		slog.Int("status", status),
		slog.Float64("latency_ms", float64(elapsed.Microseconds())/1000),
	)
	if rc.caller != "" {
		attrs = append(attrs, slog.String("key_id", rc.caller[:12]))
	}
	if rc.appID != "" {
		attrs = append(attrs, slog.String("appid", rc.appID))
	}
	if rc.errCode != "" {
		attrs = append(attrs, slog.String("error", string(rc.errCode)))
	}
	if rc.errcode != 0 {
		attrs = append(attrs, slog.Int("errcode", rc.errcode))
	}
	if rc.rid != "" {
		attrs = append(attrs, slog.String("rid", rc.rid))
	}
	if rc.replayed != nil {
		attrs = append(attrs, slog.Bool("replayed", *rc.replayed))
	}
	if rc.phone != "" {
		attrs = append(attrs, slog.Attr{Key: "phone", Value: rc.phone.LogValue()}) // masked
	}
	if rc.cause != nil {
		attrs = append(attrs, slog.String("cause", rc.cause.Error()))
	}
	rec := slog.NewRecord(now, level, "request", 0)
	rec.AddAttrs(attrs...)
	_ = h.Handle(ctx, rec)
}

// match finds the route of r, or the Allow header value when the path
// exists with other methods.
func (s *Server) match(r *http.Request) (*route, string) {
	rs := s.routes[routePath(r)]
	if len(rs) == 0 {
		return nil, ""
	}
	var methods []string
	for _, rt := range rs {
		if rt.method == r.Method || (rt.method == http.MethodGet && r.Method == http.MethodHead) {
			return rt, ""
		}
		methods = append(methods, rt.method)
		if rt.method == http.MethodGet {
			methods = append(methods, http.MethodHead)
		}
	}
	return nil, strings.Join(methods, ", ")
}

// requestID keeps an incoming id that validRequestID accepts and
// otherwise generates one (the refused one is never logged).
func requestID(in string) string {
	if validRequestID(in) {
		return in
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// authorize checks the bearer key against every configured key in constant
// time (SHA-256 digests compared with crypto/subtle, over all keys, always)
// and the route's permission.
func (s *Server) authorize(r *http.Request, rt *route, rc *reqCtx) *apiError {
	unauthorized := func(msg string) *apiError {
		return newError(http.StatusUnauthorized, CodeUnauthorized, msg)
	}
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return unauthorized("Missing API key: send \"Authorization: Bearer <key>\".")
	}
	scheme, key, ok := strings.Cut(hdr, " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return unauthorized("Malformed Authorization header: send \"Authorization: Bearer <key>\".")
	}
	d := sha256.Sum256([]byte(key))
	idx := -1
	for i := range s.keys {
		eq := subtle.ConstantTimeCompare(d[:], s.keys[i].digest[:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
	}
	if idx < 0 {
		return unauthorized("Unknown API key.")
	}
	k := &s.keys[idx]
	rc.caller = k.caller
	if (rt.perm == permPhone && !k.phone) || (rt.perm == permToken && !k.token) {
		return newError(http.StatusForbidden, CodeForbidden, "This API key is not allowed on this route.")
	}
	return nil
}

// limit applies the per-key rate limit. A limiter failure lets the request
// through (logged): the limit protects capacity, it is not a security
// boundary, and a shared limiter's outage must not stop traffic.
func (s *Server) limit(ctx context.Context, rc *reqCtx) *apiError {
	if s.limiter == nil {
		return nil
	}
	ok, after, err := s.limiter.Allow(ctx, rc.caller)
	if err != nil {
		s.log.Warn("rate limiter failed; letting the request through", "request_id", rc.id, "err", err)
		return nil
	}
	if ok {
		return nil
	}
	s.metrics.RateLimited.WithLabelValues("local").Inc()
	e := newError(http.StatusTooManyRequests, CodeRateLimited, "Too many requests for this API key; retry after the delay in Retry-After.")
	e.retryAfter = max(after, time.Second)
	return e
}

// checkBody checks the content type and the declared length.
func checkBody(r *http.Request) *apiError {
	ct := r.Header.Get("Content-Type")
	mt, err := ct, error(nil)
	if ct != "application/json" { // the usual value needs no parsing
		mt, _, err = mime.ParseMediaType(ct)
	}
	if ct == "" || err != nil || mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "The body must be JSON with \"Content-Type: application/json\".")
	}
	if r.ContentLength > MaxBodyBytes {
		return errBodyTooLarge()
	}
	return nil
}

func errBodyTooLarge() *apiError {
	return newError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "The body exceeds "+strconv.Itoa(MaxBodyBytes)+" bytes.")
}

// writeJSON writes v as the JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := bodyPool.Get().(*bytes.Buffer)
	defer putBody(buf)
	if err := json.NewEncoder(buf).Encode(v); err != nil { // as json.Marshal, and a newline
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":"internal_error","message":"Internal error."}}` + "\n")
	}
	writeRaw(w, status, buf.Bytes())
}

// writeRaw writes body, a JSON answer, with status.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header()["Content-Type"] = hdrJSONUTF8
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// putBody clears buf (it held a phone number or a token) and returns it
// to bodyPool.
func putBody(buf *bytes.Buffer) {
	clear(buf.Bytes())
	buf.Reset()
	if buf.Cap() <= 64<<10 {
		bodyPool.Put(buf)
	}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      ErrorCode `json:"code"`
	Message   string    `json:"message"`
	Errcode   int       `json:"errcode,omitempty"`
	RID       string    `json:"rid,omitempty"`
	RequestID string    `json:"request_id"`
}

// writeError writes e and records it for the log line.
func (s *Server) writeError(w http.ResponseWriter, rc *reqCtx, e *apiError) {
	rc.errCode, rc.errcode, rc.rid, rc.cause = e.code, e.errcode, e.rid, e.cause
	h := w.Header()
	switch {
	case e.status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="wxphone"`)
	case e.allow != "":
		h.Set("Allow", e.allow)
	}
	if e.close {
		h.Set("Connection", "close")
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	writeJSON(w, e.status, errorBody{errorDetail{Code: e.code, Message: e.msg, Errcode: e.errcode, RID: e.rid, RequestID: rc.id}})
}
