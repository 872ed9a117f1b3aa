package wxphone

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wxphone/wxphone/wxmock"
)

func TestCode2Session(t *testing.T) {
	t.Parallel()
	for _, unionid := range []string{"", "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"} {
		env := newSrvEnv(t)
		c := newTestClient(t, env.config(t))
		lc, err := env.emu.MintLoginCode(wxmock.LoginGrant{UnionID: unionid})
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Code2Session(ctxTimeout(t, 10*time.Second), lc.Code)
		if err != nil {
			t.Fatalf("Code2Session: %v", err)
		}
		want := Session{OpenID: lc.OpenID, SessionKey: SessionKey(lc.SessionKey), UnionID: unionid}
		if diff := cmp.Diff(want, *s); diff != "" {
			t.Errorf("Session mismatch (-want +got):\n%s", diff)
		}
		if s.SessionKey.Reveal() != lc.SessionKey {
			t.Errorf("session key not revealed intact")
		}
		reqs := env.rec.requests()
		if len(reqs) != 1 {
			t.Fatalf("requests = %d, want 1 (no token needed)", len(reqs))
		}
		r := reqs[0]
		q, _ := url.ParseQuery(r.Query)
		wantQ := url.Values{"appid": {testAppID}, "secret": {testSecret}, "js_code": {lc.Code}, "grant_type": {"authorization_code"}}
		if r.Method != http.MethodGet || r.Path != pathSession || r.Body != "" {
			t.Errorf("request = %s %s body %q", r.Method, r.Path, r.Body)
		}
		if diff := cmp.Diff(wantQ, q); diff != "" {
			t.Errorf("query mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestCode2SessionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     *wxmock.Fault
		reuse     bool // redeem the code once before
		unknown   bool // a code the emulator never minted
		want      error
		notWant   error
		wantCalls int
	}{
		{name: "unknown code", unknown: true, want: ErrInvalidCode, notWant: ErrOutcomeUnknown, wantCalls: 1},
		{name: "reused code 40163", reuse: true, want: ErrInvalidCode, notWant: ErrOutcomeUnknown, wantCalls: 2},
		{name: "-1 then success", fault: &wxmock.Fault{Endpoint: wxmock.EndpointJSCode2Session, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1}, wantCalls: 2},
		{name: "-1 consuming then 40163", fault: &wxmock.Fault{Endpoint: wxmock.EndpointJSCode2Session, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1}, want: ErrOutcomeUnknown, notWant: ErrInvalidCode, wantCalls: 2},
		{name: "45011", fault: &wxmock.Fault{Endpoint: wxmock.EndpointJSCode2Session, Kind: wxmock.FaultErrcode, Errcode: 45011}, want: ErrRateLimited, wantCalls: 1},
		{name: "dropped answer", fault: &wxmock.Fault{Endpoint: wxmock.EndpointJSCode2Session, Kind: wxmock.FaultDropAfterConsume}, want: ErrOutcomeUnknown, wantCalls: 1},
		{name: "HTTP 503", fault: &wxmock.Fault{Endpoint: wxmock.EndpointJSCode2Session, Kind: wxmock.FaultHTTPStatus, Status: 503}, want: ErrOutcomeUnknown, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			c := newTestClient(t, env.config(t))
			ctx := ctxTimeout(t, 10*time.Second)
			lc, err := env.emu.MintLoginCode(wxmock.LoginGrant{})
			if err != nil {
				t.Fatal(err)
			}
			code := lc.Code
			if tt.unknown {
				code = "0a3Xk0000d5FMR1Jb0000ExZ5g0Xk00e"
			}
			if tt.reuse {
				if _, err := c.Code2Session(ctx, code); err != nil {
					t.Fatal(err)
				}
			}
			if tt.fault != nil {
				addFault(t, env.emu, *tt.fault)
			}
			s, err := c.Code2Session(ctx, code)
			if n := env.rec.count(pathSession); n != tt.wantCalls {
				t.Errorf("jscode2session calls = %d, want %d", n, tt.wantCalls)
			}
			if tt.want == nil {
				if err != nil || s.OpenID != lc.OpenID {
					t.Fatalf("Code2Session = %v, %v", s, err)
				}
				return
			}
			if s != nil || !errors.Is(err, tt.want) {
				t.Fatalf("Code2Session = %v, %v; want %v", s, err, tt.want)
			}
			if tt.notWant != nil && errors.Is(err, tt.notWant) {
				t.Errorf("err %v must not match %v", err, tt.notWant)
			}
			for _, secret := range []string{testSecret, code, lc.SessionKey} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks %q: %v", secret, err)
				}
			}
		})
	}
}

func TestCode2SessionIncompleteAnswer(t *testing.T) {
	t.Parallel()
	for _, body := range []string{`{}`, `{"openid":"o1"}`, `{"session_key":"tiihtNczf5v6AKRyjwEUhQ=="}`, `{"errcode":0,"errmsg":"ok"}`} {
		stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", body) })
		c := newTestClient(t, Config{AppID: testAppID, Secret: testSecret, BaseURL: stub.URL, TokenSource: StaticTokenSource(Token{Value: "x"})})
		s, err := c.Code2Session(ctxTimeout(t, 10*time.Second), "0a3Xk0000d5FMR1Jb0000ExZ5g0Xk00e")
		if s != nil || !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrMalformedResponse) {
			t.Errorf("body %s: Code2Session = %v, %v; want a malformed, outcome-unknown error", body, s, err)
		}
		if strings.Contains(err.Error(), "tiihtNczf5v6AKRyjwEUhQ") {
			t.Errorf("error leaks the session key: %v", err)
		}
	}
}

func TestCode2SessionNeedsSecret(t *testing.T) {
	t.Parallel()
	stub := newStub(t, func(w http.ResponseWriter, r *http.Request) {})
	c := newTestClient(t, Config{AppID: testAppID, BaseURL: stub.URL, TokenSource: StaticTokenSource(Token{Value: "x"})})
	if _, err := c.Code2Session(ctxTimeout(t, time.Second), "0a3Xk0000d5FMR1Jb0000ExZ5g0Xk00e"); err == nil {
		t.Fatal("Code2Session without a secret succeeded")
	}
	if n := stub.calls.Load(); n != 0 {
		t.Errorf("calls = %d, want 0", n)
	}
}
