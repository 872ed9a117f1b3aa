package wxphone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wxphone/wxphone/wxmock"
)

// TestClientBuildsOneHTTPStack: a Client and the TokenManager it owns call
// WeChat through one HTTP stack: the token fetch and the exchange after it
// share one connection pool, so the exchange reuses the fetch's connection
// instead of dialling a second one.
func TestClientBuildsOneHTTPStack(t *testing.T) {
	emu := newEmulator(t)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(emu)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	c, err := New(Config{AppID: testAppID, Secret: testSecret, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if c.owned == nil || c.owned.up != c.up {
		t.Fatal("the Client's TokenManager has an HTTP stack of its own")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PhoneNumber(ctx, mintPhone(t, emu, testPhone)); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for a token fetch and an exchange, want 1 (one pool)", n)
	}
}

func TestPhoneNumberExchange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		grant    wxmock.PhoneGrant
		ccNumber bool
		want     PhoneInfo
	}{
		{
			name:  "mainland, countryCode string",
			grant: wxmock.PhoneGrant{PurePhoneNumber: testPhone},
			want:  PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, CountryCode: "86"},
		},
		{
			name:     "mainland, countryCode number",
			grant:    wxmock.PhoneGrant{PurePhoneNumber: testPhone},
			ccNumber: true,
			want:     PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, CountryCode: "86"},
		},
		{
			name:     "Hong Kong, countryCode number",
			grant:    wxmock.PhoneGrant{PurePhoneNumber: "51234567", CountryCode: "852"},
			ccNumber: true,
			want:     PhoneInfo{PhoneNumber: "+852 51234567", PurePhoneNumber: "51234567", CountryCode: "852"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t, func(o *wxmock.Options) { o.CountryCodeAsNumber = tt.ccNumber })
			c := newTestClient(t, env.config(t))
			code, err := env.emu.MintPhoneCode(tt.grant)
			if err != nil {
				t.Fatal(err)
			}
			granted := env.emu.Now().Unix()
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
			if err != nil {
				t.Fatalf("PhoneNumber: %v", err)
			}
			want := tt.want
			want.Watermark = Watermark{AppID: testAppID, Timestamp: granted}
			if diff := cmp.Diff(want, *got); diff != "" {
				t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
			}

			// The request as WeChat saw it.
			var phone []seenRequest
			for _, r := range env.rec.requests() {
				if r.Path == pathPhone {
					phone = append(phone, r)
				}
			}
			if len(phone) != 1 {
				t.Fatalf("phone requests = %d, want 1", len(phone))
			}
			r := phone[0]
			if r.Method != http.MethodPost {
				t.Errorf("method = %s, want POST", r.Method)
			}
			valid := env.emu.ValidTokens(testAppID)
			if len(valid) != 1 || r.Query != "access_token="+valid[0] {
				t.Errorf("query = %q, want access_token=<the valid token>", r.Query)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", r.Body, err)
			}
			if diff := cmp.Diff(map[string]any{"code": code}, body); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestPhoneNumberMalformedAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		reason     string // substring of the DecodeError's reason
	}{
		{"empty body", "", "empty body"},
		{"whitespace body", " \n", "empty body"},
		{"truncated", phoneStubBody[:len(phoneStubBody)/2], "truncated"},
		{"truncated after brace", "{", "truncated"},
		{"HTML", "<html><body><h1>502 Bad Gateway</h1></body></html>", "HTML"},
		{"JSON array", `[{"errcode":0}]`, "not a JSON object"},
		{"plain text", "ok", "not a JSON object"},
		{"trailing garbage", phoneStubBody + "x", "invalid JSON"},
		{"errcode 0 without phone_info", `{"errcode":0,"errmsg":"ok"}`, "without phone_info"},
		{"phone_info null", `{"errcode":0,"errmsg":"ok","phone_info":null}`, "without phone_info"},
		{"phone_info without number", `{"errcode":0,"phone_info":{"countryCode":"86","watermark":{"appid":"wx4f4bc4dec97d474b"}}}`, "without a phone number"},
		{"phone_info wrong type", `{"errcode":0,"phone_info":"13800138000"}`, "unexpected field type"},
		{"phoneNumber wrong type", `{"errcode":0,"phone_info":{"phoneNumber":13800138000}}`, "unexpected field type"},
		{"countryCode object", `{"errcode":0,"phone_info":{"phoneNumber":"13800138000","countryCode":{}}}`, "invalid JSON"},
		{"errcode not a number", `{"errcode":"zero","phone_info":{"phoneNumber":"13800138000"}}`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", tt.body) })
			c := stubClient(t, stub.URL)
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			if err == nil || got != nil {
				t.Fatalf("PhoneNumber = %v, %v; want nil and an error", got, err)
			}
			if !errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("err = %v; want ErrOutcomeUnknown", err)
			}
			if !errors.Is(err, ErrMalformedResponse) {
				t.Errorf("err = %v; want ErrMalformedResponse", err)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Op != OpPhoneNumber || !strings.Contains(de.Reason, tt.reason) {
				t.Errorf("err = %#v; want a *DecodeError for %s with reason containing %q", err, OpPhoneNumber, tt.reason)
			}
			if strings.Contains(err.Error(), "13800138000") || strings.Contains(err.Error(), "138001") {
				t.Errorf("error quotes the body: %v", err)
			}
			if n := stub.calls.Load(); n != 1 {
				t.Errorf("upstream calls = %d, want exactly 1 (a possibly consumed code is never resent)", n)
			}
		})
	}
}

func TestPhoneNumberWatermarkMismatchFailsClosed(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, watermark, got string }{
		{"other appid", `{"timestamp":1637744274,"appid":"wx0000000000000000"}`, "wx0000000000000000"},
		{"appid missing", `{"timestamp":1637744274}`, ""},
		{"watermark missing", `null`, ""},
		{"appid case differs", `{"timestamp":1637744274,"appid":"WX4F4BC4DEC97D474B"}`, "WX4F4BC4DEC97D474B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":` + tt.watermark + `}}`
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", body) })
			c := stubClient(t, stub.URL)
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			if got != nil {
				t.Fatalf("got a result %v despite the watermark", got)
			}
			var we *WatermarkError
			if !errors.As(err, &we) || !errors.Is(err, ErrWatermarkMismatch) {
				t.Fatalf("err = %v; want *WatermarkError", err)
			}
			if we.Want != testAppID || we.Got != tt.got {
				t.Errorf("WatermarkError = %+v", we)
			}
			if strings.Contains(err.Error(), testPhone) {
				t.Errorf("error leaks the phone number: %v", err)
			}
		})
	}
}

func TestPhoneBodyIsValidJSON(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"abc", `a"b`, `a\b`, `\"\\"`, "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144", "<>&'"} {
		var v struct{ Code string }
		if err := json.Unmarshal(phoneBody(code, ""), &v); err != nil || v.Code != code {
			t.Errorf("phoneBody(%q) = %s: decodes to %q, %v", code, phoneBody(code, ""), v.Code, err)
		}
	}
}

var ridRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$`)

// TestPhoneNumberErrcodes drives every documented errcode through the
// emulator and checks its typed error and sentinel.
func TestPhoneNumberErrcodes(t *testing.T) {
	t.Parallel()
	all := []error{ErrInvalidCode, ErrAppIDMismatch, ErrRateLimited, ErrSystemBusy, ErrTokenInvalid, ErrOutcomeUnknown, ErrTokenFetchRefused, ErrQuotaExhausted}
	tests := []struct {
		name    string
		errcode int
		want    error // the one sentinel of all that must match
	}{
		{"invalid code", 40029, ErrInvalidCode},
		{"appid mismatch", 40013, ErrAppIDMismatch},
		{"rate limited", 45011, ErrRateLimited},
		{"token invalid 40001", 40001, ErrTokenInvalid},
		{"token invalid 40014", 40014, ErrTokenInvalid},
		{"token expired 42001", 42001, ErrTokenInvalid},
		{"token missing 41001", 41001, ErrTokenInvalid},
		{"undocumented 48001", 48001, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			c := newTestClient(t, env.config(t))
			ctx := ctxTimeout(t, 10*time.Second)
			if err := c.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			// Persistent fault: the token retry, if any, sees it too.
			addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: tt.errcode})
			p, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
			if p != nil || err == nil {
				t.Fatalf("PhoneNumber = %v, %v; want an error", p, err)
			}
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v; want an *APIError", err)
			}
			if ae.ErrCode != tt.errcode || ae.Op != OpPhoneNumber || ae.ErrMsg == "" || !ridRE.MatchString(ae.RID) {
				t.Errorf("APIError = %+v; want errcode %d, an errmsg and a rid", ae, tt.errcode)
			}
			if !strings.Contains(ae.ErrMsg, "rid: "+ae.RID) {
				t.Errorf("rid %q not taken from errmsg %q", ae.RID, ae.ErrMsg)
			}
			for _, s := range all {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(err, %v) = %v", s, got)
				}
			}
			if d, ok := RetryAfter(err); ok != (tt.errcode == 45011) || (ok && d != time.Minute) {
				t.Errorf("RetryAfter = %v, %v", d, ok)
			}
		})
	}
}

func TestAppIDMismatchThroughEmulator(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t, func(o *wxmock.Options) {
		o.Apps = append(o.Apps, wxmock.App{AppID: "wxotherapp0000001", Secret: "other-secret"})
	})
	c := newTestClient(t, env.config(t))
	code, err := env.emu.MintPhoneCode(wxmock.PhoneGrant{AppID: "wxotherapp0000001", PurePhoneNumber: testPhone})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
	if !errors.Is(err, ErrAppIDMismatch) || errors.Is(err, ErrTokenFetchRefused) {
		t.Fatalf("err = %v; want ErrAppIDMismatch only", err)
	}
}

func TestPhoneNumberNoInvalidatorReturnsTokenError(t *testing.T) {
	t.Parallel()
	stub := newStub(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "text/plain", `{"errcode":40001,"errmsg":"invalid credential rid: a-b-c"}`)
	})
	c := stubClient(t, stub.URL)
	_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
	if !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("err = %v; want ErrTokenInvalid", err)
	}
	if n := stub.calls.Load(); n != 1 {
		t.Errorf("calls = %d; a static token source cannot be refreshed, so want 1", n)
	}
}

func TestNilResultNeverWithNilError(t *testing.T) {
	t.Parallel()
	// Every shape of "success" without usable data.
	bodies := []string{`{}`, `{"errcode":0}`, `{"phone_info":{}}`, `{"phone_info":null}`, `{"phone_info":{"watermark":{"appid":"wx4f4bc4dec97d474b"}}}`}
	for _, body := range bodies {
		stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", body) })
		c := stubClient(t, stub.URL)
		p, err := c.PhoneNumber(context.Background(), "code-0123456789abcdef")
		if (p == nil) == (err == nil) {
			t.Errorf("body %s: PhoneNumber = %v, %v", body, p, err)
		}
	}
}

func TestHTTPStatusErrors(t *testing.T) {
	t.Parallel()
	for _, status := range []int{301, 400, 404, 429, 500, 502, 503, 504} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) {
				if status == 301 {
					w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
				}
				w.WriteHeader(status)
				_, _ = io.WriteString(w, "<html>gateway</html>")
			})
			c := stubClient(t, stub.URL)
			_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			var he *HTTPError
			if !errors.As(err, &he) || he.StatusCode != status || !errors.Is(err, ErrUpstream) {
				t.Fatalf("err = %v; want *HTTPError %d", err, status)
			}
			if got, want := errors.Is(err, ErrOutcomeUnknown), status >= 500; got != want {
				t.Errorf("ErrOutcomeUnknown = %v, want %v", got, want)
			}
			if n := stub.calls.Load(); n != 1 {
				t.Errorf("calls = %d, want 1 (no resend, no redirect)", n)
			}
		})
	}
}

// flakyDialer fails the next n dials without sending anything.
type flakyDialer struct {
	failNext atomic.Int64
	dials    atomic.Int64
	d        net.Dialer
}

func (f *flakyDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	f.dials.Add(1)
	if f.failNext.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (injected)")}
	}
	f.failNext.Store(0)
	return f.d.DialContext(ctx, network, addr)
}

func TestDialFailureIsResentAtMostTwice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		failures  int64
		wantOK    bool
		wantDials int64
	}{
		{1, true, 2},
		{2, true, 3},
		{3, false, 3}, // the first attempt and two resends
		{10, false, 3},
	}
	for _, tt := range tests {
		env := newSrvEnv(t)
		fd := &flakyDialer{}
		hc := NewHTTPClient()
		tr := hc.Transport.(*http.Transport)
		tr.DialContext = fd.DialContext
		tr.DisableKeepAlives = true // every request dials
		t.Cleanup(hc.CloseIdleConnections)
		cfg := env.config(t)
		cfg.HTTPClient = hc
		c := newTestClient(t, cfg)
		ctx := ctxTimeout(t, 20*time.Second)
		if err := c.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		code := mintPhone(t, env.emu, testPhone)
		fd.dials.Store(0)
		fd.failNext.Store(tt.failures)
		p, err := c.PhoneNumber(ctx, code)
		if got := fd.dials.Load(); got != tt.wantDials {
			t.Errorf("failures=%d: dials = %d, want %d", tt.failures, got, tt.wantDials)
		}
		if tt.wantOK {
			if err != nil || p.PhoneNumber.Reveal() != testPhone {
				t.Errorf("failures=%d: PhoneNumber = %v, %v", tt.failures, p, err)
			}
			continue
		}
		var te *TransportError
		if !errors.As(err, &te) || te.Sent || errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("failures=%d: err = %v; want a *TransportError with nothing sent", tt.failures, err)
		}
		if n := env.rec.count(pathPhone); n != 0 {
			t.Errorf("failures=%d: phone requests = %d, want 0", tt.failures, n)
		}
		// Nothing was sent, so the code is still good.
		fd.failNext.Store(0)
		if p, err := c.PhoneNumber(ctx, code); err != nil || p.PurePhoneNumber.Reveal() != testPhone {
			t.Errorf("failures=%d: code unusable after unsent attempts: %v, %v", tt.failures, p, err)
		}
	}
}

func TestTokenErrorInvalidatesAndRetriesOnce(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	var fetches fetchLog
	cfg := env.config(t)
	cfg.Hooks.OnTokenFetch = fetches.hook
	c := newTestClient(t, cfg)
	ctx := ctxTimeout(t, 20*time.Second)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	old := env.emu.ValidTokens(testAppID)
	if n, err := env.emu.RevokeTokens(testAppID); err != nil || n != 1 {
		t.Fatalf("RevokeTokens = %d, %v", n, err)
	}
	// Assumption (UNVERIFIED against real WeChat, reference §2.4): a call
	// refused with 40001 does not consume the code. The emulator checks the
	// token before the code, so the retry can succeed.
	p, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
	if err != nil || p.PhoneNumber.Reveal() != testPhone {
		t.Fatalf("PhoneNumber = %v, %v", p, err)
	}
	if n := env.rec.count(pathPhone); n != 2 {
		t.Errorf("phone calls = %d, want 2", n)
	}
	if n := fetches.count(func(e fetchAt) bool { return e.Trigger == TriggerInvalidate }); n != 1 {
		t.Errorf("invalidation fetches = %d, want 1", n)
	}
	if n := fetches.count(nil); n != 2 { // warm + the refresh
		t.Errorf("token fetches = %d, want 2", n)
	}
	toks := env.rec.accessTokens()
	if len(toks) != 2 || toks[0] != old[0] || toks[1] == old[0] {
		t.Errorf("phone calls used tokens %v; want the revoked one, then a new one", toks)
	}
}

func TestSystemBusyRetriedOnceWithJitter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     wxmock.Fault
		wantCalls int
		want      error // nil: success
		notWant   error
	}{
		{"-1 once then success", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1}, 2, nil, nil},
		{"-1 twice", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 2}, 2, ErrSystemBusy, ErrOutcomeUnknown},
		{"-1 consuming, then 40029", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1}, 2, ErrOutcomeUnknown, ErrInvalidCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			c := newTestClient(t, env.config(t))
			ctx := ctxTimeout(t, 20*time.Second)
			if err := c.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			addFault(t, env.emu, tt.fault)
			p, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
			if n := env.rec.count(pathPhone); n != tt.wantCalls {
				t.Errorf("phone calls = %d, want %d", n, tt.wantCalls)
			}
			if tt.want == nil {
				if err != nil || p.PhoneNumber.Reveal() != testPhone {
					t.Fatalf("PhoneNumber = %v, %v", p, err)
				}
				return
			}
			if p != nil || !errors.Is(err, tt.want) {
				t.Fatalf("PhoneNumber = %v, %v; want %v", p, err, tt.want)
			}
			if errors.Is(err, tt.notWant) {
				t.Errorf("err %v must not match %v", err, tt.notWant)
			}
		})
	}
}

// TestLostAnswerIsNeverResent covers every way the answer to a phone call can
// be lost after the request was written: the code may have been used, so
// the caller gets ErrOutcomeUnknown and WeChat sees exactly one call.
func TestLostAnswerIsNeverResent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		fault    wxmock.Fault
		deadline time.Duration
		consumed bool
	}{
		{"timeout after write", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 60_000}, 300 * time.Millisecond, false},
		{"reset after write", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultDropAfterConsume}, 0, true},
		{"HTTP 500", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 500}, 0, false},
		{"HTTP 502 after consuming", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 502, Consume: true}, 0, true},
		{"HTTP 504", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 504}, 0, false},
		{"HTML with 200", wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 200, Consume: true}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			c := newTestClient(t, env.config(t))
			if err := c.Warm(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			addFault(t, env.emu, tt.fault)
			code := mintPhone(t, env.emu, testPhone)
			ctx := ctxTimeout(t, 20*time.Second)
			if tt.deadline > 0 {
				ctx = ctxTimeout(t, tt.deadline)
			}
			p, err := c.PhoneNumber(ctx, code)
			if p != nil || !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("PhoneNumber = %v, %v; want ErrOutcomeUnknown", p, err)
			}
			var oe *OutcomeUnknownError
			if !errors.As(err, &oe) || oe.Op != OpPhoneNumber || oe.Err == nil {
				t.Errorf("err = %#v; want *OutcomeUnknownError with a cause", err)
			}
			if tt.deadline > 0 && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v; want it to wrap context.DeadlineExceeded", err)
			}
			if n := env.rec.count(pathPhone); n != 1 {
				t.Errorf("phone calls = %d, want exactly 1", n)
			}
			env.srv.Close() // waits for the handler, so its counters are final
			if got := env.emu.Stats().Endpoints.Phone.Calls; got != 1 {
				t.Errorf("emulator phone calls = %d, want 1", got)
			}
			if tt.consumed {
				// The emulator did use the code: telling the user
				// "invalid code" on a resend would have been wrong.
				env.emu.ClearFaults()
				code2 := httptestEmuPhone(t, env.emu, code)
				if code2 != 40029 {
					t.Errorf("code after the fault: errcode %d, want 40029 (consumed)", code2)
				}
			}
		})
	}
}

func TestRateLimitNotRetried(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t, func(o *wxmock.Options) { o.PhoneRateLimit = 1 })
	c := newTestClient(t, env.config(t))
	ctx := ctxTimeout(t, 10*time.Second)
	if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
		t.Fatal(err)
	}
	_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
	if !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v; want ErrRateLimited", err)
	}
	d, ok := RetryAfter(err)
	if !ok || d < 55*time.Second || d > 65*time.Second {
		t.Errorf("RetryAfter = %v, %v; want about a minute", d, ok)
	}
	var ae *APIError
	if !errors.As(err, &ae) || !ae.Temporary() {
		t.Errorf("err = %v; want a temporary *APIError", err)
	}
	if n := env.rec.count(pathPhone); n != 2 {
		t.Errorf("phone calls = %d, want 2 (45011 is not retried)", n)
	}
}

// TestReusedConnectionReadError forces the server to read a request on a
// kept-alive connection and hang up without answering. Go's transport
// silently replays such requests when it deems them idempotent (GET, or an
// Idempotency-Key header): WeChat must see the code exactly once.
func TestReusedConnectionReadError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		endpoint string
		path     string
		call     func(ctx context.Context, c *Client, env *srvEnv) error
	}{
		{"phone", wxmock.EndpointPhone, pathPhone, func(ctx context.Context, c *Client, env *srvEnv) error {
			_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
			return err
		}},
		{"jscode2session", wxmock.EndpointJSCode2Session, pathSession, func(ctx context.Context, c *Client, env *srvEnv) error {
			lc, err := env.emu.MintLoginCode(wxmock.LoginGrant{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Code2Session(ctx, lc.Code)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			c := newTestClient(t, env.config(t))
			ctx := ctxTimeout(t, 10*time.Second)
			// One successful call leaves a kept-alive connection.
			if err := tt.call(ctx, c, env); err != nil {
				t.Fatal(err)
			}
			addFault(t, env.emu, wxmock.Fault{Endpoint: tt.endpoint, Kind: wxmock.FaultDropAfterConsume, Count: 1})
			var reused atomic.Bool
			tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				if i.Reused {
					reused.Store(true)
				}
			}})
			err := tt.call(tctx, c, env)
			if !reused.Load() {
				t.Fatal("the second call did not reuse the connection; the test proves nothing")
			}
			if !errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("err = %v; want ErrOutcomeUnknown", err)
			}
			if n := env.rec.count(tt.path); n != 2 {
				t.Errorf("%s requests = %d, want 2 (one each call, no transport replay)", tt.path, n)
			}
			for _, r := range env.rec.requests() {
				for _, h := range []string{"Idempotency-Key", "X-Idempotency-Key"} {
					if _, ok := r.Header[h]; ok {
						t.Errorf("%s %s carries %s", r.Method, r.Path, h)
					}
				}
			}
		})
	}
}

func TestNoIdempotencyHeaderAnywhere(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	cfg := env.config(t)
	c := newTestClient(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
		t.Fatal(err)
	}
	lc, _ := env.emu.MintLoginCode(wxmock.LoginGrant{})
	if _, err := c.Code2Session(ctx, lc.Code); err != nil {
		t.Fatal(err)
	}
	cfg.Token.Classic = true
	cc := newTestClient(t, cfg)
	if err := cc.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := env.rec.requests()
	paths := map[string]bool{}
	for _, r := range reqs {
		paths[r.Path] = true
		for h := range r.Header {
			if http.CanonicalHeaderKey(h) == "Idempotency-Key" || http.CanonicalHeaderKey(h) == "X-Idempotency-Key" {
				t.Errorf("%s %s carries %s", r.Method, r.Path, h)
			}
		}
	}
	for _, p := range []string{pathPhone, pathStable, pathClassic, pathSession} {
		if !paths[p] {
			t.Errorf("no request to %s was checked", p)
		}
	}
}

func TestCancelledContextSendsNothing(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := newTestClient(t, env.config(t))
	if err := c.Warm(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("err = %v; want context.Canceled, not outcome unknown (nothing was sent)", err)
	}
	if n := env.rec.count(pathPhone); n != 0 {
		t.Errorf("phone calls = %d, want 0", n)
	}
}

// httptestEmuPhone redeems code directly against the emulator with a valid
// token and returns the errcode it answers.
func httptestEmuPhone(t *testing.T, emu *wxmock.Server, code string) int {
	t.Helper()
	env := &memEnv{emu: emu, rec: &recorder{h: emu}}
	env.tr = &memTransport{h: env.rec}
	env.hc = &http.Client{Transport: env.tr}
	cfg := env.config()
	c := newTestClient(t, cfg)
	_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.ErrCode
	}
	if err != nil {
		t.Fatalf("redeem: %v", err)
	}
	return 0
}

// TestBusyRetryPauseAndDeadline measures, on synctest's fake clock, the
// jittered pause before the single -1 retry, and checks that no retry is
// made when the caller's deadline leaves no room for it.
func TestBusyRetryPauseAndDeadline(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		c := newTestClient(t, env.config())
		ctx := context.Background()
		if err := c.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		seen := map[time.Duration]bool{}
		for range 20 {
			addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1})
			n0 := len(env.rec.requests())
			if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
				t.Fatal(err)
			}
			reqs := env.rec.requests()[n0:]
			if len(reqs) != 2 {
				t.Fatalf("requests = %d, want 2", len(reqs))
			}
			pause := reqs[1].At.Sub(reqs[0].At)
			if pause < 100*time.Millisecond || pause > 300*time.Millisecond {
				t.Errorf("retry after %v, want 100ms..300ms", pause)
			}
			seen[pause] = true
		}
		if len(seen) < 2 {
			t.Errorf("the pause never varied (%v): no jitter", seen)
		}
		// 120 ms left: a retry would overrun the caller's deadline.
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1})
		dctx, cancel := context.WithTimeout(ctx, 120*time.Millisecond)
		defer cancel()
		n0 := env.rec.count(pathPhone)
		_, err := c.PhoneNumber(dctx, mintPhone(t, env.emu, testPhone))
		if !errors.Is(err, ErrSystemBusy) || errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("err = %v; want ErrSystemBusy", err)
		}
		if n := env.rec.count(pathPhone) - n0; n != 1 {
			t.Errorf("phone calls = %d, want 1", n)
		}
	})
}

// TestCustomRoundTripperFailureCountsAsSent: a RoundTripper that reports no
// httptrace events (a custom or wrapping transport) may have sent the
// request before failing, so its failures must never cause a resend.
func TestCustomRoundTripperFailureCountsAsSent(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		c := newTestClient(t, env.config())
		ctx := context.Background()
		if err := c.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		code := mintPhone(t, env.emu, testPhone)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultDropAfterConsume, Count: 1})
		_, err := c.PhoneNumber(ctx, code)
		var te *TransportError
		if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrInvalidCode) || !errors.As(err, &te) || !te.Sent {
			t.Errorf("err = %v; want ErrOutcomeUnknown from a sent *TransportError", err)
		}
		if n := env.rec.count(pathPhone); n != 1 {
			t.Errorf("phone calls = %d, want 1", n)
		}
	})
}

// failAfterDialer lets the first ok dials through and fails every later one
// before anything is sent.
type failAfterDialer struct {
	ok    int64
	dials atomic.Int64
	d     net.Dialer
}

func (f *failAfterDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if f.dials.Add(1) > f.ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (injected)")}
	}
	return f.d.DialContext(ctx, network, addr)
}

// TestTaintAfterSystemBusyIsKept: WeChat may have used a code it answered
// with -1. Whatever ends the exchange after that (the one retry meets
// 45011, a token error whose refresh fails, a failure before anything was
// sent, or the deadline), the error must say that the code may have been
// used, so that nobody later reads a 40029 for it as "invalid code".
func TestTaintAfterSystemBusyIsKept(t *testing.T) {
	t.Parallel()
	busy := wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1}
	tests := []struct {
		name     string
		setup    func(t *testing.T, env *srvEnv, cfg *Config)
		warmed   func(t *testing.T, env *srvEnv) // after the first token fetch
		deadline time.Duration
		also     error // a sentinel the error must still match
	}{
		{"retry meets 45011", func(t *testing.T, env *srvEnv, _ *Config) {
			addFault(t, env.emu, busy)
			addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 45011, Count: 1})
		}, nil, 20 * time.Second, ErrRateLimited},
		{"retry meets 40001 and the refresh is refused", func(t *testing.T, env *srvEnv, _ *Config) {
			addFault(t, env.emu, busy)
			addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001, Count: 1})
		}, func(t *testing.T, env *srvEnv) {
			addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 40164})
		}, 20 * time.Second, ErrTokenFetchRefused},
		{"retry fails before anything was sent", func(t *testing.T, env *srvEnv, cfg *Config) {
			addFault(t, env.emu, busy)
			tr := cfg.HTTPClient.Transport.(*http.Transport)
			tr.DisableKeepAlives = true
			tr.DialContext = (&failAfterDialer{ok: 2}).DialContext // the token fetch, the first phone call
		}, nil, 20 * time.Second, ErrUpstream},
		{"deadline before the retry", func(t *testing.T, env *srvEnv, _ *Config) {
			addFault(t, env.emu, busy)
		}, nil, 120 * time.Millisecond, ErrSystemBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			cfg := env.config(t)
			tt.setup(t, env, &cfg)
			c := newTestClient(t, cfg)
			if err := c.Warm(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if tt.warmed != nil {
				tt.warmed(t, env)
			}
			code := mintPhone(t, env.emu, testPhone)
			p, err := c.PhoneNumber(ctxTimeout(t, tt.deadline), code)
			if p != nil || !errors.Is(err, ErrCodeMayBeUsed) {
				t.Fatalf("PhoneNumber = %v, %v; want an error matching ErrCodeMayBeUsed", p, err)
			}
			if !errors.Is(err, tt.also) {
				t.Errorf("error %v no longer matches %v", err, tt.also)
			}
			if errors.Is(err, ErrInvalidCode) {
				t.Errorf("error %v matches ErrInvalidCode", err)
			}
		})
	}
}
