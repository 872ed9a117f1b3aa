package wxphone

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

func TestParseBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"", DefaultBaseURL},
		{"https://api.weixin.qq.com", "https://api.weixin.qq.com"},
		{"https://api.weixin.qq.com/", "https://api.weixin.qq.com"},
		{"https://proxy.example.com/wechat/", "https://proxy.example.com/wechat"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.9.9.9", "http://127.9.9.9"},
		{"http://localhost:9000", "http://localhost:9000"},
		{"http://[::1]:9000", "http://[::1]:9000"},
		{"http://api.weixin.qq.com", ""},
		{"http://10.0.0.1", ""},
		{"http://192.168.1.1:80", ""},
		{"http://localhost.evil.example", ""},
		{"http://127.0.0.1.evil.example", ""},
		{"http://[::ffff:8.8.8.8]", ""},
		{"https://user:pass@api.weixin.qq.com", ""},
		{"https://user@api.weixin.qq.com", ""},
		{"https://api.weixin.qq.com?access_token=x", ""},
		{"https://api.weixin.qq.com/#frag", ""},
		{"api.weixin.qq.com", ""},
		{"/wxa", ""},
		{"ftp://api.weixin.qq.com", ""},
		{"file:///etc/passwd", ""},
		{"javascript:alert(1)", ""},
		{"https://", ""},
		{"https://api.weixin.qq.com/%zz", ""},
		{" https://api.weixin.qq.com", ""},
	}
	for _, tt := range tests {
		u, err := ParseBaseURL(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseBaseURL(%q) = %v; want an error", tt.in, u)
		case tt.want != "" && err != nil:
			t.Errorf("ParseBaseURL(%q): %v", tt.in, err)
		case tt.want != "" && u.String() != tt.want:
			t.Errorf("ParseBaseURL(%q) = %v, want %s", tt.in, u, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "pass@") {
			t.Errorf("error quotes user info: %v", err)
		}
		// New refuses the same URLs.
		c, err2 := New(Config{AppID: testAppID, BaseURL: tt.in, TokenSource: StaticTokenSource(Token{Value: "x"})})
		if (err2 == nil) != (tt.want != "") {
			t.Errorf("New with BaseURL %q: %v", tt.in, err2)
		}
		if c != nil {
			_ = c.Close()
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://api.weixin.qq.com/wxa/business/getuserphonenumber?access_token=SECRET", "https://api.weixin.qq.com/wxa/business/getuserphonenumber?REDACTED"},
		{"https://u:p@host/path?secret=S&js_code=C#frag", "https://host/path?REDACTED"},
		{"https://host/path", "https://host/path"},
		{"https://host/path#frag", "https://host/path"},
		{"://bad url?access_token=SECRET", "://bad url?REDACTED"},
		{"%zz?access_token=SECRET", "%zz?REDACTED"},
		{"%zz", "REDACTED"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewHTTPClient(t *testing.T) {
	t.Parallel()
	hc := NewHTTPClient()
	tr, ok := hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T", hc.Transport)
	}
	if tr.DialContext == nil || tr.TLSHandshakeTimeout <= 0 || tr.IdleConnTimeout <= 0 {
		t.Errorf("transport lacks connection timeouts: %+v", tr)
	}
	if tr.MaxIdleConnsPerHost <= 2 || tr.MaxIdleConns < tr.MaxIdleConnsPerHost {
		t.Errorf("idle pool %d per host, %d total; want more than Go's 2 per host", tr.MaxIdleConnsPerHost, tr.MaxIdleConns)
	}
	if c := tr.TLSClientConfig; c == nil || c.InsecureSkipVerify || c.MinVersion < tls.VersionTLS12 {
		t.Errorf("TLS config %+v", c)
	}
	if hc.CheckRedirect == nil || !errors.Is(hc.CheckRedirect(nil, nil), http.ErrUseLastResponse) {
		t.Error("redirects are followed")
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	target := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", phoneStubBody) })
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirector := newStub(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.RequestURI(), status)
		})
		c := stubClient(t, redirector.URL)
		_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != status {
			t.Errorf("redirect %d: err = %v; want *HTTPError", status, err)
		}
	}
	if n := target.calls.Load(); n != 0 {
		t.Errorf("the redirect target saw %d requests; the token would have left", n)
	}
}

// TestIdlePoolKeepsConnections: under concurrency the tuned client keeps its
// connections for the next wave (Go's default keeps 2 per host).
func TestIdlePoolKeepsConnections(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t, func(o *wxmock.Options) { o.LoadPrefix = "load-" })
	c := newTestClient(t, env.config(t))
	ctx := ctxTimeout(t, 20*time.Second)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 100})
	const n = 8
	wave := func(w int) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, err := c.PhoneNumber(ctx, "load-"+strings.Repeat("w", w)+string(rune('a'+i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	wave(1)
	before := env.newConns.Load()
	wave(2)
	if d := env.newConns.Load() - before; d != 0 {
		t.Errorf("second wave opened %d new connections; the pool dropped idle ones", d)
	}
}

func TestTransportErrorsAreRedacted(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	fd := &flakyDialer{}
	hc := NewHTTPClient()
	tr := hc.Transport.(*http.Transport)
	tr.DialContext = fd.DialContext
	tr.DisableKeepAlives = true
	cfg := env.config(t)
	cfg.HTTPClient = hc
	c := newTestClient(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	token := env.emu.ValidTokens(testAppID)[0]
	fd.failNext.Store(10)
	code := mintPhone(t, env.emu, testPhone)
	_, err := c.PhoneNumber(ctx, code)
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v; want a *url.Error inside", err)
	}
	if strings.Contains(ue.URL, token) || !strings.HasSuffix(ue.URL, "?REDACTED") {
		t.Errorf("url.Error URL = %q", ue.URL)
	}
	for _, s := range []string{err.Error(), ue.Error()} {
		if strings.Contains(s, token) || strings.Contains(s, code) || strings.Contains(s, "access_token=") {
			t.Errorf("error leaks: %s", s)
		}
	}
	// Code2Session: the query carries the secret and the js_code.
	lc, _ := env.emu.MintLoginCode(wxmock.LoginGrant{})
	_, err = c.Code2Session(ctx, lc.Code)
	if !errors.As(err, &ue) || strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), lc.Code) {
		t.Errorf("Code2Session err = %v", err)
	}
}
