package wxmock

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wxphone/wxphone/apisec"
)

const (
	contentTypeJSON  = "application/json; encoding=utf-8"
	contentTypeError = "text/plain"
)

// ServeHTTP serves the WeChat endpoints and the admin API:
//
//	GET  /cgi-bin/token
//	POST /cgi-bin/stable_token
//	POST /wxa/business/getuserphonenumber
//	GET  /sns/jscode2session
//	GET  /cgi-bin/get_api_domain_ip
//	POST /cgi-bin/openapi/quota/get
//	POST /cgi-bin/openapi/rid/get
//	     /admin/…
//
// Every other path answers 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL == nil {
		http.NotFound(w, r)
		return
	}
	switch p := r.URL.Path; p {
	case "/cgi-bin/token":
		s.serveWeChat(w, r, epToken)
	case "/cgi-bin/stable_token":
		s.serveWeChat(w, r, epStable)
	case "/wxa/business/getuserphonenumber":
		s.serveWeChat(w, r, epPhone)
	case "/sns/jscode2session":
		s.serveWeChat(w, r, epSession)
	case "/cgi-bin/get_api_domain_ip":
		s.serveWeChat(w, r, epDomainIP)
	case CGIPathQuotaGet, CGIPathRIDGet:
		s.serveOpenAPI(w, r, p)
	default:
		if strings.HasPrefix(p, "/admin/") {
			s.serveAdmin(w, r)
			return
		}
		http.NotFound(w, r)
	}
}

// wxRequest is one WeChat request being served. Parsing is lazy and
// idempotent because stable_token must be decoded before fault selection.
type wxRequest struct {
	r      *http.Request
	ep     endpointIdx
	query  url.Values
	parsed bool

	bodyErr  int    // 0, 44002 (empty) or 47001 (too large, unreadable, malformed)
	raw      []byte // the body read: for rid/get, and a sealed request's, opened in process
	code     string
	openid   string // getuserphonenumber's optional openid
	sealed   bool   // the request carries the API security mode's headers
	stable   stableRequest
	stableOK bool
}

type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

type phoneRequest struct {
	Code   string `json:"code"`
	OpenID string `json:"openid"`
}

func (q *wxRequest) params() url.Values {
	if q.query == nil {
		q.query = q.r.URL.Query()
	}
	return q.query
}

// readBody reads at most MaxBodyBytes and classifies the result.
func readBody(r *http.Request) ([]byte, int) {
	if r.Body == nil {
		return nil, 44002
	}
	if n := r.ContentLength; n > MaxBodyBytes {
		return nil, 47001
	} else if n > 0 {
		// Common case: one exact allocation instead of ReadAll's growth.
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, 47001
		}
		return b, 0
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	switch {
	case err != nil, len(b) > MaxBodyBytes:
		return nil, 47001
	case len(b) == 0:
		return nil, 44002
	}
	return b, 0
}

// parse reads what the endpoint needs from the request.
func (q *wxRequest) parse() {
	if q.parsed {
		return
	}
	q.parsed = true
	switch q.ep {
	case epStable:
		b, ec := readBody(q.r)
		if q.bodyErr = ec; ec != 0 {
			return
		}
		q.raw = b
		if json.Unmarshal(b, &q.stable) != nil {
			q.bodyErr = 47001
			return
		}
		q.stableOK = true
	case epPhone:
		b, ec := readBody(q.r)
		if q.bodyErr = ec; ec != 0 {
			return
		}
		q.raw = b
		if isSealed(q.r.Header) {
			q.sealed = true
			return
		}
		var pr phoneRequest
		if json.Unmarshal(b, &pr) != nil {
			q.bodyErr = 47001
			return
		}
		q.code, q.openid = pr.Code, pr.OpenID
	case epSession:
		q.code = q.params().Get("js_code")
	}
}

// faultAppID returns the appid a request is for, as used by Fault.AppID.
func (s *Server) faultAppID(q *wxRequest) string {
	switch q.ep {
	case epStable:
		q.parse()
		return q.stable.AppID
	case epPhone, epDomainIP:
		return s.tokenApp(q.params().Get("access_token"))
	default:
		return q.params().Get("appid")
	}
}

// wxResult is the answer normal processing produced.
type wxResult struct {
	errcode  int
	body     []byte        // success body when errcode == 0
	known    bool          // the request's code is a minted or load-mode code
	consumed bool          // the request's code was valid and is now used
	sealed   *sealedAnswer // a success to a sealed request is sealed
}

// serveWeChat serves one WeChat request the way WeChat does: it reads the
// whole request and processes it (using a code) as soon as it has it, then
// waits out any injected latency before answering. A client that left in
// the meantime gets nothing, but its request was processed all the same.
func (s *Server) serveWeChat(w http.ResponseWriter, r *http.Request, ep endpointIdx) {
	start := time.Now()
	q := &wxRequest{r: r, ep: ep}
	var o outcome
	var delay time.Duration
	var f *Fault
	if s.faults.active.Load() > 0 {
		delay, f = s.faults.pick(ep.name(), s.faultAppID(q))
	}
	var call *Call
	if (ep == epPhone || ep == epSession) && s.calls.on.Load() {
		call = &Call{Endpoint: ep.name(), Proto: r.Proto, Received: start, LatencyMS: int(delay / time.Millisecond)}
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			call.Local = a.String()
		}
		if f != nil {
			call.Fault = f.Kind
		}
	}
	ctx := r.Context()

	if f != nil && f.Kind == FaultResetBeforeRead {
		// WeChat's front end refuses the request before passing it on:
		// nothing is processed. The body is read only for the call log.
		if call != nil {
			q.parse()
			call.Code = q.code
		}
		if delay > 0 && !sleepCtx(ctx, delay) {
			o.canceled = true
			s.finish(ep, &o, call, CallGone)
			return
		}
		o.reset = true
		s.finish(ep, &o, call, CallResetBeforeRead)
		s.log.Debug("wxmock: fault reset_before_read", "endpoint", ep.name())
		abortConn(w, true)
		return
	}

	// WeChat has the whole request from here on and processes it now.
	q.parse()
	o.code = q.code
	if q.stableOK {
		o.mode = 1
		if q.stable.ForceRefresh {
			o.mode = 2
		}
	}
	now := s.Now()
	var res wxResult
	processed := f == nil || f.Consume
	if f != nil {
		switch f.Kind {
		case FaultDropAfterConsume, FaultResetAfterConsume, FaultUnsignedSuccess, FaultBadSignature:
			processed = true
		}
	}
	if processed {
		res = s.process(q, now)
		o.code = q.code // known only now for a sealed request
		o.codeNew = res.known
	} else if o.code != "" {
		o.codeNew = s.codeKnown(ep, o.code)
	}
	o.produced = true
	switch {
	case f == nil || (f.Kind != FaultErrcode && f.Kind != FaultHTTPStatus):
		o.errcode, o.answered = res.errcode, res.errcode == 0
	case f.Kind == FaultErrcode:
		o.errcode = f.Errcode
	default: // FaultHTTPStatus
		o.status = f.Status
	}
	if call != nil {
		call.Seq = s.calls.seq.Add(1)
		call.Code = q.code
		call.Processed = processed
		call.Consumed = processed && res.consumed
		call.Answered = o.answered
		call.Errcode = o.errcode
		call.Status = http.StatusOK
		if o.status != 0 {
			call.Status = o.status
		}
	}

	if s.log.Enabled(ctx, slog.LevelDebug) {
		kind := ""
		if f != nil {
			kind = f.Kind
		}
		s.log.LogAttrs(ctx, slog.LevelDebug, "wxmock: request",
			slog.String("endpoint", ep.name()), slog.Int("errcode", o.errcode), slog.String("fault", kind))
	}

	// The answer is ready; an injected latency delays it. A client that
	// leaves meanwhile does not get it.
	if delay > 0 && !sleepCtx(ctx, delay) {
		o.canceled = true
		s.finish(ep, &o, call, CallGone)
		return
	}

	switch {
	case f != nil && f.Kind == FaultDropAfterConsume:
		o.dropped = true
		s.finish(ep, &o, call, CallDropped)
		abortConn(w, false)
		return
	case f != nil && f.Kind == FaultResetAfterConsume:
		o.resetAfter = true
		if call != nil {
			call.H2Error = s.queueReset(r, f.H2Error)
		}
		s.finish(ep, &o, call, CallResetAfterConsume)
		resetExchange(w, r)
		return
	case ctx.Err() != nil:
		// The client left just as the answer was ready.
		s.finish(ep, &o, call, CallGone)
		return
	}
	// The answer is counted as delivered before it is written, so that a
	// client that got it finds it in the statistics and the call log; a
	// failed write takes that back.
	o.delivered = true
	logged := s.finish(ep, &o, call, CallDelivered)
	switch {
	case f == nil:
		if rid, body := s.writeResult(w, now, res); rid != "" {
			s.recordFailure(q, rid, start, now, body)
		}
	case f.Kind == FaultUnsignedSuccess:
		res.sealed = nil
		s.writeResult(w, now, res)
	case f.Kind == FaultBadSignature:
		if res.sealed != nil {
			res.sealed.corrupt = true
		}
		s.writeResult(w, now, res)
	case f.Kind == FaultErrcode:
		msg := f.Errmsg
		if msg == "" {
			msg = errText(f.Errcode)
		}
		rid, body := s.writeError(w, now, f.Errcode, msg)
		s.recordFailure(q, rid, start, now, body)
	default: // FaultHTTPStatus
		h := w.Header()
		h.Set("Content-Type", "text/html")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(f.Status)
		_, _ = w.Write(gatewayPage(f.Status))
	}
	if !flushed(w) {
		s.stats.undeliver(&o)
		if call != nil {
			s.calls.undeliver(logged, call.Seq)
		}
	}
}

// flushed flushes what was written and reports whether the write reached
// the connection; the caller checked just before writing that the client
// was still connected. (The request context is not looked at again: a
// client that got the whole answer may close the connection at once, which
// cancels it. A client that leaves in the very instant of the write may
// still miss an answer reported delivered, as on any network.)
func flushed(w http.ResponseWriter) bool {
	err := http.NewResponseController(w).Flush()
	return err == nil || errors.Is(err, http.ErrNotSupported)
}

// finish records a request in the statistics and, when call is set, in the
// call log.
//
// The call log is written first: a test that sees the statistics change
// finds the call in the log too.
//
// It returns the call's index in the log (-1 without a call).
func (s *Server) finish(ep endpointIdx, o *outcome, call *Call, result string) int {
	i := -1
	if call != nil {
		if call.Seq == 0 {
			call.Seq = s.calls.seq.Add(1)
		}
		call.Done = time.Now()
		call.Result = result
		call.Delivered = result == CallDelivered
		i = s.calls.add(*call)
	}
	s.stats.record(ep, o)
	return i
}

// queueReset arranges for the RST_STREAM of this HTTP/2 request to carry
// the named error code (default INTERNAL_ERROR) and returns the code that
// will be sent; "" over HTTP/1.
func (s *Server) queueReset(r *http.Request, name string) string {
	if r.ProtoMajor != 2 {
		return ""
	}
	if name == "" {
		name = "INTERNAL_ERROR"
	}
	v, ok := s.resetConns.Load(r.RemoteAddr)
	if !ok {
		return "INTERNAL_ERROR" // not accepted through Listener: Go's code
	}
	v.(*resetConn).queueReset(h2ErrorCodes[name])
	return name
}

// codeKnown reports whether code is a code the emulator would honour or
// has honoured, for the per-code statistics of unprocessed requests.
func (s *Server) codeKnown(ep endpointIdx, code string) bool {
	switch ep {
	case epPhone:
		return s.isLoadCode(code) || s.phoneMinted(code)
	case epSession:
		return s.loginMinted(code)
	}
	return false
}

// process runs the endpoint's real logic.
func (s *Server) process(q *wxRequest, now time.Time) wxResult {
	m := q.r.Method
	switch q.ep {
	case epToken:
		if m != http.MethodGet && m != http.MethodPost {
			return wxResult{errcode: 43001}
		}
		p := q.params()
		s.countCall(p.Get("appid"), CGIPathToken, now)
		return tokenBody(s.fetchClassic(p.Get("grant_type"), p.Get("appid"), p.Get("secret"), now))
	case epStable:
		if m != http.MethodPost {
			return wxResult{errcode: 43002}
		}
		if q.bodyErr != 0 {
			return wxResult{errcode: q.bodyErr}
		}
		st := &q.stable
		s.countCall(st.AppID, CGIPathStableToken, now)
		return tokenBody(s.fetchStable(st.GrantType, st.AppID, st.Secret, st.ForceRefresh, now))
	case epPhone:
		if m != http.MethodPost {
			return wxResult{errcode: 43002}
		}
		tok := q.params().Get("access_token")
		if tok == "" {
			return wxResult{errcode: 41001}
		}
		appid, ec := s.checkToken(tok, now)
		if ec != 0 {
			return wxResult{errcode: ec}
		}
		s.countCall(appid, CGIPathPhone, now)
		if q.bodyErr != 0 {
			return wxResult{errcode: q.bodyErr}
		}
		var sealed *sealedAnswer
		sec := s.secOf(appid)
		switch {
		case q.sealed && sec == nil:
			return wxResult{errcode: apisec.ErrcodeNoSymKey}
		case q.sealed:
			urlPath := requestURLPath(q.r)
			req, rerr := sec.platform.OpenRequest(urlPath, appid, q.r.Header, q.raw, now)
			if rerr != nil {
				return wxResult{errcode: rerr.Errcode}
			}
			var pr phoneRequest
			if json.Unmarshal(req.Params, &pr) != nil {
				return wxResult{errcode: 47001}
			}
			q.code, q.openid = pr.Code, pr.OpenID
			sealed = &sealedAnswer{platform: &sec.platform, urlPath: urlPath}
		case sec != nil && sec.required:
			return wxResult{errcode: apisec.ErrcodeMissingSignature}
		}
		body, ec, known := s.redeemPhone(appid, q.code, q.openid, now)
		return wxResult{errcode: ec, body: body, known: known, consumed: ec == 0, sealed: sealed}
	case epDomainIP:
		if m != http.MethodGet {
			return wxResult{errcode: 43001}
		}
		tok := q.params().Get("access_token")
		if tok == "" {
			return wxResult{errcode: 41001}
		}
		if _, ec := s.checkToken(tok, now); ec != 0 {
			return wxResult{errcode: ec}
		}
		return wxResult{body: domainIPBody}
	default: // epSession
		if m != http.MethodGet && m != http.MethodPost {
			return wxResult{errcode: 43001}
		}
		p := q.params()
		if p.Get("grant_type") != "authorization_code" {
			return wxResult{errcode: 40002}
		}
		appid := p.Get("appid")
		s.appMu.RLock()
		_, ec := s.checkCredentials(appid, p.Get("secret"))
		s.appMu.RUnlock()
		if ec != 0 {
			return wxResult{errcode: ec}
		}
		if q.code == "" {
			return wxResult{errcode: 41008}
		}
		body, ec, known := s.redeemLogin(appid, q.code, now)
		return wxResult{errcode: ec, body: body, known: known, consumed: ec == 0}
	}
}

// domainIPBody is the answer of get_api_domain_ip: WeChat's API server
// addresses (documentation addresses, RFC 5737).
var domainIPBody = []byte(`{"ip_list":["192.0.2.10","192.0.2.11","198.51.100.20"]}`)

// tokenBody renders a token fetch: {"access_token":"…","expires_in":N}
// without an errcode field.
func tokenBody(t tokenResult) wxResult {
	if t.errcode != 0 {
		return wxResult{errcode: t.errcode}
	}
	b := make([]byte, 0, 48+len(t.token))
	b = append(b, `{"access_token":"`...)
	b = append(b, t.token...) // [A-Za-z0-9_-] only
	b = append(b, `","expires_in":`...)
	b = strconv.AppendInt(b, t.expiresIn, 10)
	b = append(b, '}')
	return wxResult{body: b}
}

// writeResult writes res; for an error it returns the rid and body written.
func (s *Server) writeResult(w http.ResponseWriter, now time.Time, res wxResult) (rid string, body []byte) {
	if res.errcode != 0 {
		return s.writeError(w, now, res.errcode, errText(res.errcode))
	}
	out := res.body
	if sa := res.sealed; sa != nil {
		b, h, err := sa.platform.SealResponse(sa.urlPath, res.body, now)
		if err != nil {
			return s.writeError(w, now, -1, errText(-1))
		}
		if sa.corrupt {
			sig := h[apisec.HeaderSignature][0]
			h[apisec.HeaderSignature] = []string{flipBase64(sig)}
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		out = b
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return "", nil
}

// flipBase64 changes the first character of a base64 signature, keeping
// it valid base64 that no longer verifies.
func flipBase64(s string) string {
	if s == "" {
		return "AAAA"
	}
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

// writeError writes a WeChat business error: HTTP 200, text/plain,
// {"errcode":N,"errmsg":"<msg> rid: xxxxxxxx-xxxxxxxx-xxxxxxxx"}. It
// returns the rid and the body.
func (s *Server) writeError(w http.ResponseWriter, now time.Time, errcode int, msg string) (string, []byte) {
	b := make([]byte, 0, 64+len(msg)+26)
	b = append(b, `{"errcode":`...)
	b = strconv.AppendInt(b, int64(errcode), 10)
	b = append(b, `,"errmsg":"`...)
	b = appendJSONText(b, msg)
	b = append(b, " rid: "...)
	rid := s.rid(now)
	b = append(b, rid...)
	b = append(b, `"}`...)
	w.Header().Set("Content-Type", contentTypeError)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return rid, b
}

// appendJSONText appends v escaped for use inside a JSON string. v is valid
// UTF-8 (fault texts are validated).
func appendJSONText(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, lowerHex[c>>4], lowerHex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}

// errText returns WeChat's errmsg text for errcode, without the rid.
func errText(errcode int) string {
	switch errcode {
	case -1:
		return "system error"
	case 40001:
		return "invalid credential, access_token is invalid or not latest"
	case 40002:
		return "invalid grant_type"
	case 40013:
		return "invalid appid"
	case 40014:
		return "invalid access_token"
	case 40029:
		return "invalid code"
	case 40125:
		return "invalid appsecret"
	case 40163:
		return "code been used,"
	case 40164:
		return "invalid ip, not in whitelist"
	case 40226:
		return "code blocked"
	case 40003:
		return "invalid openid"
	case 40230:
		return "missing Wechatmp-Serial"
	case 40231:
		return "missing timestamp"
	case 40232:
		return "missing signature"
	case 40233:
		return "missing appid"
	case 40234:
		return "invalid signature"
	case 40235:
		return "invalid encryption"
	case 40236:
		return "invalid Wechatmp-Appid"
	case 40237:
		return "Wechatmp-Appid not match access_token"
	case 40238:
		return "no symmetric key configured"
	case 40239:
		return "no public key configured"
	case 40240:
		return "timestamp expired"
	case 41001:
		return "access_token missing"
	case 41002:
		return "appid missing"
	case 41004:
		return "appsecret missing"
	case 41008:
		return "missing code"
	case 42001:
		return "access_token expired"
	case 43001:
		return "require GET method"
	case 43002:
		return "require POST method"
	case 44002:
		return "empty post data"
	case 45009:
		return "reach max api daily quota limit"
	case 45011:
		return "api minute-quota reach limit mustslower retry next minute"
	case 47001:
		return "data format error"
	case 48001:
		return "api unauthorized"
	case 50002:
		return "user limited"
	default:
		return "system error"
	}
}
