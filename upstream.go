package wxphone

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wxphone/wxphone/apisec"
)

// DefaultBaseURL is WeChat's API base URL.
const DefaultBaseURL = "https://api.weixin.qq.com"

// maxResponseBytes bounds how much of an upstream answer is read.
const maxResponseBytes = 1 << 20

// NewHTTPClient returns the tuned *http.Client wxphone uses by default: 5 s
// dial and TLS handshake timeouts, an idle pool of 1024 connections per host
// (Go's default keeps 2, which under load means a new TLS handshake for most
// requests), TLS 1.2 or later with verification always on, and no redirects
// (a redirect would carry the access_token in its URL to another place).
//
// It has no response or overall timeout of its own: once a request may
// have carried a code, only the caller's context decides how long to wait
// for the answer (an exchange must live until its own timeout, however slow
// WeChat is), and a call whose context has no deadline is bounded by 30 s.
// A client passed in Config.HTTPClient should follow the same rule: a
// Client.Timeout or ResponseHeaderTimeout shorter than the exchange timeout
// drops answers WeChat has already paid for.
func NewHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        2048,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
		// WeChat's answers are a few hundred bytes: gzip would cost more
		// (a header, a reader per response) than it saves.
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{MinVersion: tls.VersionTLS12},
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ParseBaseURL validates a WeChat API base URL: absolute, https, no user
// info, query or fragment; plain http only for loopback hosts (an emulator
// on this machine), so a token never crosses a network in clear.
func ParseBaseURL(s string) (*url.URL, error) {
	if s == "" {
		s = DefaultBaseURL
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse quotes the whole URL, user info included: keep only
		// the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("wxphone: base URL: %w", err)
	}
	switch {
	case u.Host == "":
		return nil, errors.New("wxphone: base URL must be absolute, e.g. https://api.weixin.qq.com")
	case u.User != nil:
		return nil, errors.New("wxphone: base URL must not carry user info")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("wxphone: base URL must not carry a query or fragment")
	case u.Scheme == "https":
	case u.Scheme == "http":
		if !isLoopback(u.Hostname()) {
			return nil, errors.New("wxphone: plain http base URL allowed only for loopback hosts")
		}
	default:
		return nil, fmt.Errorf("wxphone: base URL scheme %q not supported", u.Scheme)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RedactURL removes the query (which carries access_token, secret or
// js_code) and any user info from a URL, for logs and errors.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i] + "?REDACTED"
		}
		return "REDACTED"
	}
	u.User = nil
	q := u.RawQuery != ""
	u.RawQuery, u.Fragment, u.RawFragment = "", "", ""
	if q {
		return u.String() + "?REDACTED"
	}
	return u.String()
}

// redactErr rewrites the URL inside a *url.Error so the error text carries
// no query string.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: ue.Err}
	}
	return err
}

// Hooks receive events for metrics and tracing. Nil hooks are skipped. Hooks
// run synchronously on the caller's goroutine and must be fast. No event
// carries a code, a token or a phone number.
type Hooks struct {
	// OnUpstream is called after every HTTP call to WeChat.
	OnUpstream func(UpstreamEvent)
	// OnTokenFetch is called after every token fetch from WeChat.
	OnTokenFetch func(TokenFetchEvent)
}

// UpstreamEvent describes one HTTP call to WeChat.
type UpstreamEvent struct {
	AppID    string
	Op       string // OpPhoneNumber, OpStableToken, OpToken, OpCode2Session
	Status   int    // HTTP status; 0 when no response arrived
	ErrCode  int    // WeChat's errcode; 0 on success or when no body was decoded
	Duration time.Duration
	Err      error // nil on success
}

// TokenFetchEvent describes one token fetch.
type TokenFetchEvent struct {
	AppID    string
	Kind     string // "stable", "stable_force" or "classic"
	Trigger  string // "background", "request" or "invalidate"
	Duration time.Duration
	Err      error
}

// upstream performs HTTP calls to WeChat for one app.
type upstream struct {
	hc    *http.Client
	base  url.URL
	appID string
	hooks Hooks

	// direct is set when hc is wxphone's own client (Config.HTTPClient
	// unset): requests then go straight to its transport, skipping
	// http.Client's redirect, cookie and timeout machinery, none of which
	// that client uses (no redirects, no jar; the overall timeout is
	// applied here as a context deadline when the caller set none). It
	// saves 6 allocations per exchange (TestExchangeAllocBudget); the
	// safety is the same: a redirect answer is returned, not followed
	// (TestRedirectIsNotFollowed), and a read body is never resent
	// (sendBody.rewind, which the transport calls on both paths).
	direct *http.Transport
	h2c    bool // direct speaks HTTP/2 to plain http:// (Config.H2C)

	sec                   *apisec.Client // the API security mode (Config.APISecurity); nil: plaintext
	log                   *slog.Logger
	postHeader, getHeader http.Header

	tracer trace.Tracer // nil: tracing off (Config.TracerProvider unset)
}

// defaultOverallTimeout bounds a request whose context has no deadline.
const defaultOverallTimeout = 30 * time.Second

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// envelope is the errcode/errmsg pair every WeChat answer may carry; a
// missing errcode means 0.
type envelope struct {
	ErrCode flexInt `json:"errcode"`
	ErrMsg  string  `json:"errmsg"`
}

func (e *envelope) env() *envelope { return e }

type enveloped interface{ env() *envelope }

// call sends one request to ep and decodes a 200 answer into out,
// returning a typed error for anything else. sensitive values are scrubbed
// from any upstream message that echoes them.
func (u *upstream) call(ctx context.Context, ep endpoint, rawQuery string, body []byte, out enveloped, sensitive ...string) error {
	return u.do(ctx, ep.op, ep.method, ep.path, rawQuery, body, nil, out, sensitive)
}

// callSealed is call for a POST through the API security mode when the app
// is configured for it (Config.APISecurity), else call: the body is
// encrypted and signed, and the answer must verify before it is decoded.
func (u *upstream) callSealed(ctx context.Context, ep endpoint, rawQuery string, body []byte, out enveloped, sensitive ...string) error {
	if u.sec == nil {
		return u.call(ctx, ep, rawQuery, body, out, sensitive...)
	}
	sealed, err := u.sec.Seal(u.base.Scheme+"://"+u.base.Host+u.base.Path+ep.path, body)
	if err != nil {
		return &TransportError{Op: ep.op, Err: err} // nothing sent
	}
	return u.do(ctx, ep.op, ep.method, ep.path, rawQuery, sealed.Body, sealed, out, sensitive)
}

func (u *upstream) do(ctx context.Context, op, method, path, rawQuery string, body []byte, sealed *apisec.Sealed, out enveloped, sensitive []string) error {
	start := time.Now()
	var span trace.Span
	if u.tracer != nil {
		ctx, span = u.startSpan(ctx, op, method, path)
	}
	status, err := u.roundTrip(ctx, op, method, path, rawQuery, body, sealed, out, sensitive)
	if span != nil {
		endSpan(span, status, err)
	}
	if u.hooks.OnUpstream != nil {
		ev := UpstreamEvent{AppID: u.appID, Op: op, Status: status, Duration: time.Since(start), Err: err}
		var ae *APIError
		if errors.As(err, &ae) {
			ev.ErrCode = ae.ErrCode
		}
		u.hooks.OnUpstream(ev)
	}
	return err
}

func (u *upstream) roundTrip(ctx context.Context, op, method, path, rawQuery string, body []byte, sealed *apisec.Sealed, out enveloped, sensitive []string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, &TransportError{Op: op, Err: err} // nothing sent
	}
	if _, ok := ctx.Deadline(); !ok {
		// A call is bounded by its context only (see NewHTTPClient).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultOverallTimeout)
		defer cancel()
	}
	req, sb, st := u.request(ctx, method, path, rawQuery, body)
	if sealed != nil {
		// The mode's headers, on a copy of the shared read-only map.
		h := make(http.Header, len(req.Header)+len(sealed.Header))
		maps.Copy(h, req.Header)
		maps.Copy(h, sealed.Header)
		req.Header = h
	}
	if u.tracer != nil {
		injectTraceparent(req, trace.SpanFromContext(ctx))
	}
	var resp *http.Response
	var err error
	if u.direct != nil {
		resp, err = u.direct.RoundTrip(req)
	} else {
		resp, err = u.hc.Do(req)
	}
	if err != nil {
		return 0, &TransportError{Op: op, Sent: mayHaveSent(sb, st), Err: redactErr(err)}
	}
	return u.answer(op, resp, sealed, out, sensitive)
}

// mayHaveSent reports whether a failed request may have reached WeChat:
// its body was read (a POST), or the transport started it and did not
// report that it stopped before writing (a GET; see request).
func mayHaveSent(sb *sendBody, st *sendTrace) bool {
	if sb != nil {
		return sb.read.Load()
	}
	return st.wrote.Load() || !st.started.Load()
}

// request builds the request of roundTrip, with the body (a POST) or the
// trace (a GET) that mayHaveSent reads.
func (u *upstream) request(ctx context.Context, method, path, rawQuery string, body []byte) (*http.Request, *sendBody, *sendTrace) {
	target := u.base // copy
	target.Path = u.base.Path + path
	target.RawQuery = rawQuery
	// Built by hand rather than with http.NewRequestWithContext, which
	// would format and parse the URL and build a header map per request:
	// 8 allocations of the 76 of an exchange (TestExchangeAllocBudget).
	base := http.Request{
		Method:     method,
		URL:        &target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       target.Host,
	}
	// "Nothing was sent" must be proven, never assumed.
	var sb *sendBody
	var st *sendTrace
	if body != nil {
		// A POST carries its secret (the code, the AppSecret) only in the
		// body: a body no transport has read proves nothing reached
		// WeChat, whatever the RoundTripper. A read counts as sent even if
		// the bytes then fail to reach the wire (conservative).
		sb = &sendBody{body: body, h2c: u.h2c}
		sb.r.Reset(body)
		sb.trace.GotConn = sb.gotConn
		sb.trace.WroteRequest = sb.wroteRequest
		ctx = httptrace.WithClientTrace(ctx, &sb.trace)
		base.Header = u.header(true)
		base.Body = sb
		base.ContentLength = int64(len(body))
		// net/http resends through GetBody when it proved that nothing
		// was written (HTTP/1.1), but HTTP/2 also resends after some
		// stream errors that arrive once WeChat may have processed the
		// request: rewind refuses to give the body again once it was read,
		// unless the write itself failed on HTTP/1.1.
		base.GetBody = sb.rewind
	} else {
		// A GET carries its secrets in the URL. net/http's Transport
		// reports GetConn before it dials and WroteHeaders once the
		// request line and headers are in its buffer, before any byte can
		// leave; a RoundTripper that reports neither (a custom or wrapping
		// transport) may have sent the request, so its failures count as
		// sent.
		st = new(sendTrace)
		st.trace.GetConn = func(string) { st.started.Store(true) }
		st.trace.WroteHeaders = func() { st.wrote.Store(true) }
		ctx = httptrace.WithClientTrace(ctx, &st.trace)
		base.Header = u.header(false)
		// net/http silently replays a GET (it deems GET idempotent) when a
		// kept-alive connection fails before the first response byte,
		// which would send a js_code twice. A non-rewindable body makes
		// the request non-replayable; an empty one sends no body.
		base.Body = noReplayBody{}
	}
	return base.WithContext(ctx), sb, st
}

// answer reads and decodes resp.
func (u *upstream) answer(op string, resp *http.Response, sealed *apisec.Sealed, out enveloped, sensitive []string) (int, error) {
	defer resp.Body.Close()
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 64<<10 {
			bufPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponseBytes+1)); err != nil {
		return resp.StatusCode, &TransportError{Op: op, Sent: true, Err: redactErr(err)}
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, &HTTPError{Op: op, StatusCode: resp.StatusCode}
	}
	if buf.Len() > maxResponseBytes {
		return resp.StatusCode, &DecodeError{Op: op, Reason: "body larger than 1 MiB"}
	}
	if sealed != nil {
		return resp.StatusCode, u.openSealed(op, resp.Header, buf.Bytes(), sealed, out, sensitive)
	}
	return resp.StatusCode, decodeAnswer(op, buf.Bytes(), out, sensitive)
}

// openSealed verifies and decrypts the answer to a sealed request, then
// decodes it. An answer that fails verification is never decoded: it is a
// *VerificationError, logged (without its content), which the exchange
// reports as an outcome unknown since WeChat may have used the code.
func (u *upstream) openSealed(op string, h http.Header, body []byte, sealed *apisec.Sealed, out enveloped, sensitive []string) error {
	a, err := u.sec.Open(sealed, h, body)
	if err != nil {
		ve := &apisec.VerifyError{Reason: apisec.ReasonMalformed}
		errors.As(err, &ve)
		u.log.Warn("WeChat's answer failed verification (API security mode): it is not trusted and the outcome is unknown",
			"op", op, "reason", ve.Reason, "serials", ve.Serials)
		return &VerificationError{Op: op, Reason: ve.Reason, Serials: ve.Serials}
	}
	err = decodeAnswer(op, a.Body, out, sensitive)
	if a.Signed {
		clear(a.Body) // the decrypted plaintext, phone number included
	}
	return err
}

var (
	hdrJSON      = []string{"application/json"}
	hdrUserAgent = []string{"wxphone/1"}
)

// header returns the request headers. On the direct path (our own
// transport, which never modifies a request) one read-only map per client
// serves every request; otherwise each request gets its own, since an
// http.Client with a cookie jar adds to it.
func (u *upstream) header(post bool) http.Header {
	if u.direct != nil {
		if post {
			return u.postHeader
		}
		return u.getHeader
	}
	return newHeader(post)
}

func newHeader(post bool) http.Header {
	h := http.Header{"Accept": hdrJSON, "User-Agent": hdrUserAgent}
	if post {
		h["Content-Type"] = hdrJSON
	}
	return h
}

// sendBody is a request body that records whether it was ever read, and
// that net/http may read a second time only when that cannot send it twice.
type sendBody struct {
	read        atomic.Bool
	writeFailed atomic.Bool // the last write of the request reported an error
	h2          atomic.Bool // the request went out on an HTTP/2 connection
	h2c         bool        // plain-http connections speak HTTP/2 (Config.H2C)
	body        []byte
	r           bytes.Reader
	trace       httptrace.ClientTrace
}

func (b *sendBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.r.Read(p)
}

func (b *sendBody) Close() error { return nil }

// errNoReplay refuses a resend of a body that may have reached WeChat.
var errNoReplay = errors.New("request may have reached WeChat; not resent")

// refusedBody is what rewind gives instead of the body: every read fails,
// so a resend (or a redirect a caller's http.Client would follow) fails
// before the code is written, while an http.Client that only prepares a
// redirect it will not follow (CheckRedirect refuses it) still returns the
// redirect response.
type refusedBody struct{}

func (refusedBody) Read([]byte) (int, error) { return 0, errNoReplay }
func (refusedBody) Close() error             { return nil }

// rewind is GetBody: a fresh reader over the same bytes that reports reads
// to the same flag, given only while no byte of the body can have reached
// WeChat. That holds when the body was never read, or when HTTP/1.1's
// transport, which resends a body only after a write that put no byte on
// the wire (its nothingWrittenError), saw the write fail. HTTP/2 resends
// after stream errors (RST_STREAM PROTOCOL_ERROR, GOAWAY) that may follow
// the server's processing of the request: a read body is never given to it
// again.
func (b *sendBody) rewind() (io.ReadCloser, error) {
	if b.read.Load() && (b.h2.Load() || !b.writeFailed.Load()) {
		return refusedBody{}, nil
	}
	b.writeFailed.Store(false)
	return &rewoundBody{b: b, r: bytes.NewReader(b.body)}, nil
}

// gotConn notes an HTTP/2 connection: TLS that negotiated h2, or a plain
// connection of a transport configured for h2c.
func (b *sendBody) gotConn(ci httptrace.GotConnInfo) {
	if tc, ok := ci.Conn.(*tls.Conn); ok {
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			b.h2.Store(true)
		}
		return
	}
	if b.h2c {
		b.h2.Store(true)
	}
}

func (b *sendBody) wroteRequest(wi httptrace.WroteRequestInfo) {
	b.writeFailed.Store(wi.Err != nil)
}

type rewoundBody struct {
	b *sendBody
	r *bytes.Reader
}

func (r *rewoundBody) Read(p []byte) (int, error) {
	r.b.read.Store(true)
	return r.r.Read(p)
}

func (r *rewoundBody) Close() error { return nil }

// sendTrace records whether net/http started and wrote a request.
type sendTrace struct {
	started, wrote atomic.Bool
	trace          httptrace.ClientTrace
}

// noReplayBody is an empty request body without GetBody; see roundTrip.
type noReplayBody struct{}

func (noReplayBody) Read([]byte) (int, error) { return 0, io.EOF }
func (noReplayBody) Close() error             { return nil }

// decodeAnswer decodes the body of an HTTP 200 answer into out and turns a
// non-zero errcode into an *APIError.
func decodeAnswer(op string, b []byte, out enveloped, sensitive []string) error {
	if err := decodeBody(op, b, out); err != nil {
		return err
	}
	if e := out.env(); e.ErrCode != 0 {
		msg := sanitizeMsg(e.ErrMsg, sensitive...)
		return &APIError{Op: op, ErrCode: int(e.ErrCode), ErrMsg: msg, RID: parseRID(msg)}
	}
	return nil
}

// decodeBody decodes a JSON answer whatever its Content-Type, and turns
// anything else into a *DecodeError that names the problem without quoting
// the body.
func decodeBody(op string, b []byte, out any) error {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return &DecodeError{Op: op, Reason: "empty body"}
	}
	if t[0] == '<' {
		return &DecodeError{Op: op, Reason: "HTML or XML instead of JSON"}
	}
	if t[0] != '{' {
		return &DecodeError{Op: op, Reason: "not a JSON object"}
	}
	if f, ok := out.(fastDecoder); ok && f.decodeFast(t) {
		return nil
	}
	if err := json.Unmarshal(t, out); err != nil {
		reason := "invalid JSON"
		var se *json.SyntaxError
		if errors.As(err, &se) && se.Offset >= int64(len(t)) && strings.HasPrefix(se.Error(), "unexpected end of JSON input") {
			// Only running out of input is truncation; trailing garbage
			// also fails at the last offset.
			reason = "truncated JSON"
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			reason = "unexpected field type"
		}
		return &DecodeError{Op: op, Reason: reason, Err: scrubJSONErr(err)}
	}
	return nil
}

// fastDecoder is an answer with a decoder of its own for its common
// shapes, which reports any other input as not handled (answer.go).
type fastDecoder interface{ decodeFast(b []byte) bool }

// scrubJSONErr keeps a decoder error's kind but never its quoted input.
func scrubJSONErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: cannot decode a JSON %s", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("syntax error at offset %d", se.Offset)
	}
	return errors.New("cannot decode")
}
