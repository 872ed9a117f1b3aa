package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

func TestSequentialReplay(t *testing.T) {
	e := newEnv(t, envOpts{})
	code := e.mint(appA, "13922223333")
	var first okBody
	for i := range 3 {
		s, _, b := e.phone(keyPhone, map[string]string{"code": code, "openid": "oUser"})
		if s != 200 {
			t.Fatalf("request %d: %d %s", i, s, b)
		}
		got := decodeOK(t, b)
		if got.Replayed != (i > 0) {
			t.Errorf("request %d: replayed = %v", i, got.Replayed)
		}
		got.Replayed = false
		if i == 0 {
			first = got
		} else if got != first {
			t.Errorf("request %d: %+v, want %+v", i, got, first)
		}
	}
	if n := e.emu.Stats().Codes[code].Calls; n != 1 {
		t.Errorf("upstream calls for the code: %d, want 1", n)
	}
	if !strings.Contains(e.logs.String(), `"replayed":true`) {
		t.Error("no log line says replayed")
	}
	e.checkNoLeaks()
}

func TestConcurrentDuplicates(t *testing.T) {
	e := newEnv(t, envOpts{})
	code := e.mint(appA, "13922224444")
	// Hold the upstream answer a little so the duplicates overlap.
	e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 200, Count: 1})
	const n = 50
	var wg sync.WaitGroup
	bodies := make([]okBody, n)
	statuses := make([]int, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, _, b := e.phone(keyPhone, map[string]string{"code": code})
			statuses[i] = s
			if s == 200 {
				_ = json.Unmarshal(b, &bodies[i])
			}
		}()
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i := range n {
		if statuses[i] != 200 {
			t.Fatalf("request %d: status %d", i, statuses[i])
		}
		if !bodies[i].Replayed {
			fresh++
		}
		b := bodies[i]
		b.Replayed = bodies[0].Replayed
		if b != bodies[0] {
			t.Errorf("request %d: %+v differs from %+v", i, bodies[i], bodies[0])
		}
	}
	if fresh != 1 {
		t.Errorf("%d answers not replayed, want exactly 1", fresh)
	}
	st := e.emu.Stats()
	if c := st.Codes[code].Calls; c != 1 {
		t.Errorf("upstream calls for the code: %d, want 1", c)
	}
	if c := st.Endpoints.Phone.Calls; c != 1 {
		t.Errorf("upstream phone calls: %d, want 1", c)
	}
	e.checkNoLeaks()
}

// A request whose deadline passes while its exchange is still running gets
// 504 upstream_timeout (safe to retry); the retry receives the outcome.
func TestDeadlineThenRetry(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	hold := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/wxa/business/getuserphonenumber" {
				arrived <- struct{}{}
				<-release
			}
			next.ServeHTTP(w, r)
		})
	}
	e := newEnv(t, envOpts{requestTimeout: 200 * time.Millisecond, exchangeTimeout: 30 * time.Second, wrap: hold})
	code := e.mint(appA, "13922225555")
	s, _, b := e.phone(keyPhone, map[string]string{"code": code})
	if s != 504 {
		t.Fatalf("status %d: %s", s, b)
	}
	eb := decodeErr(t, b)
	if eb.Error.Code != "upstream_timeout" || !strings.Contains(eb.Error.Message, "Retry with the same code") {
		t.Errorf("error %+v", eb.Error)
	}
	<-arrived
	// While the exchange is still held, a retry also times out, safely.
	if s, _, b := e.phone(keyPhone, map[string]string{"code": code}); s != 504 || decodeErr(t, b).Error.Code != "upstream_timeout" {
		t.Fatalf("retry while in flight: %d %s", s, b)
	}
	close(release)
	// Once the exchange finished, the retry receives its outcome. The
	// exchange finishes asynchronously: retry until it is recorded.
	for i := 0; ; i++ {
		s, _, b := e.phone(keyPhone, map[string]string{"code": code})
		if s == 200 {
			if ok := decodeOK(t, b); !ok.Replayed || ok.PhoneNumber != "13922225555" {
				t.Errorf("retry: %+v", ok)
			}
			break
		}
		if s != 504 || i > 100 {
			t.Fatalf("retry %d: %d %s", i, s, b)
		}
	}
	if n := e.emu.Stats().Codes[code].Calls; n != 1 {
		t.Errorf("upstream calls for the code: %d, want 1", n)
	}
	e.checkNoLeaks()
}

func TestTokenEndpoint(t *testing.T) {
	e := newEnv(t, envOpts{})
	s, h, b := e.do(request{method: "GET", path: server.PathAccessToken, key: keyToken})
	if s != 200 {
		t.Fatalf("GET: %d %s", s, b)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", h.Get("Cache-Control"))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatal(err)
	}
	valid := e.emu.ValidTokens(appA)
	if len(valid) != 1 || tok.AccessToken != valid[0] || tok.ExpiresIn < 6700 || tok.ExpiresIn > 6900 {
		t.Fatalf("token %+v, emulator has %d valid", tok, len(valid))
	}
	// By appid, and the same for a key that may do both.
	if s, _, b := e.do(request{method: "GET", path: server.PathAccessToken + "?appid=" + appA, key: keyBoth}); s != 200 || !strings.Contains(string(b), tok.AccessToken) {
		t.Errorf("GET ?appid: %d", s)
	}
	for _, tc := range []struct {
		name   string
		r      request
		status int
		code   string
	}{
		{"no key", request{method: "GET", path: server.PathAccessToken}, 401, "unauthorized"},
		{"phone key", request{method: "GET", path: server.PathAccessToken, key: keyPhone}, 403, "forbidden"},
		{"unknown app", request{method: "GET", path: server.PathAccessToken + "?appid=wxnope", key: keyToken}, 400, "unknown_appid"},
		{"extra parameter", request{method: "GET", path: server.PathAccessToken + "?appid=" + appA + "&x=1", key: keyToken}, 400, "invalid_request"},
		{"POST", request{method: "POST", path: server.PathAccessToken, key: keyToken, body: "{}"}, 405, "method_not_allowed"},
		{"invalidate, phone key", request{path: server.PathTokenInvalidate, key: keyPhone, body: `{"access_token":"x"}`}, 403, "forbidden"},
		{"invalidate, no token", request{path: server.PathTokenInvalidate, key: keyToken, body: `{"appid":"` + appA + `"}`}, 400, "invalid_request"},
		{"invalidate, unknown field", request{path: server.PathTokenInvalidate, key: keyToken, body: `{"token":"x"}`}, 400, "invalid_request"},
		{"invalidate, text/plain", request{path: server.PathTokenInvalidate, key: keyToken, contentType: "text/plain", body: `{"access_token":"x"}`}, 415, "unsupported_media_type"},
	} {
		s, _, b := e.do(tc.r)
		if s != tc.status || decodeErr(t, b).Error.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, s, b, tc.status, tc.code)
		}
	}

	// A stale token (not the current one) leaves the current one alone.
	s, _, b = e.do(request{path: server.PathTokenInvalidate, key: keyToken, body: `{"appid":"` + appA + `","access_token":"stale-token-value"}`})
	if s != 200 || !strings.Contains(string(b), tok.AccessToken) {
		t.Fatalf("invalidate stale: %d %s", s, b)
	}
	// The current one, which WeChat still accepts, is left alone (see
	// TestInvalidateWithALiveToken). Once WeChat rejects it, it is replaced
	// (WeChat keeps handing it out in normal mode, so the manager forces a
	// refresh).
	e.fault(wxmock.Fault{Endpoint: wxmock.EndpointAPIDomainIP, Kind: wxmock.FaultErrcode, Errcode: 40001, Count: 1})
	s, _, b = e.do(request{path: server.PathTokenInvalidate, key: keyToken, body: `{"appid":"` + appA + `","access_token":"` + tok.AccessToken + `"}`})
	if s != 200 {
		t.Fatalf("invalidate: %d %s", s, b)
	}
	var fresh struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(b, &fresh)
	e.collectTokens()
	if fresh.AccessToken == "" || fresh.AccessToken == tok.AccessToken {
		t.Errorf("invalidate returned the same token")
	}
	if st := e.emu.Stats().Endpoints.StableToken; st.Force != 1 {
		t.Errorf("force refreshes %d, want 1", st.Force)
	}
	// Exchanges keep working with the new token.
	if s, _, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13922226666")}); s != 200 {
		t.Errorf("exchange after invalidate: %d %s", s, b)
	}
	e.tokens[tok.AccessToken] = true
	e.checkNoLeaks()
}

func TestHealthReadyMetrics(t *testing.T) {
	var checkErr error
	var mu sync.Mutex
	e := newEnv(t, envOpts{noWarm: true, checks: []server.Check{{Name: "store", Check: func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return checkErr
	}}}})
	if s, _, b := e.do(request{method: "GET", path: server.PathHealthz}); s != 200 || !strings.Contains(string(b), `"ok"`) {
		t.Errorf("healthz: %d %s", s, b)
	}
	if s, _, _ := e.do(request{method: "HEAD", path: server.PathHealthz}); s != 200 {
		t.Errorf("HEAD healthz: %d", s)
	}
	type ready struct {
		Status string `json:"status"`
		Apps   []struct {
			AppID string `json:"appid"`
			Ready bool   `json:"ready"`
		} `json:"apps"`
		NotReady []string `json:"not_ready"`
		Checks   []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"checks"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	get := func() (int, ready) {
		s, _, b := e.do(request{method: "GET", path: server.PathReadyz})
		var r ready
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return s, r
	}
	// No token yet.
	if s, r := get(); s != 503 || r.Status != "not_ready" || len(r.NotReady) != 1 || r.NotReady[0] != appA || r.Error == nil || r.Error.Code != "not_ready" {
		t.Errorf("before warm-up: %d %+v", s, r)
	}
	if err := e.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, r := get(); s != 200 || r.Status != "ready" || len(r.Apps) != 1 || !r.Apps[0].Ready || len(r.Checks) != 1 || !r.Checks[0].OK {
		t.Errorf("after warm-up: %d %+v", s, r)
	}
	mu.Lock()
	checkErr = errors.New("redis://user:pw@host down")
	mu.Unlock()
	if s, r := get(); s != 503 || len(r.Checks) != 1 || r.Checks[0].OK || len(r.NotReady) != 0 {
		t.Errorf("failing check: %d %+v", s, r)
	}
	mu.Lock()
	checkErr = nil
	mu.Unlock()

	if s, _, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13922227777")}); s != 200 {
		t.Fatalf("exchange: %d %s", s, b)
	}
	s, h, b := e.do(request{method: "GET", path: server.PathMetrics})
	if s != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %s", s, h.Get("Content-Type"))
	}
	for _, want := range []string{
		`wxphone_http_requests_total{route="/v1/phone-number",status="200"} 1`,
		`wxphone_http_requests_total{route="/readyz",status="503"} 2`,
		`wxphone_http_request_duration_seconds_count{route="/v1/phone-number"} 1`,
		`wxphone_token_usable{appid="` + appA + `"} 1`,
		`wxphone_token_remaining_seconds{appid="` + appA + `"} 7`,
		`wxphone_upstream_requests_total{endpoint="getuserphonenumber",errcode="0"} 1`,
		`wxphone_exchanges_total{appid="` + appA + `",result="ok"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	e.checkNoLeaks()
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, tc := range []struct {
		in   string
		keep bool
	}{
		{"abc-123", true},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
		{"has space", false},
		{"", false},
		{"caf\u00e9", false},
	} {
		_, h, b := e.do(request{key: keyPhone, body: `{"code":""}`, header: map[string]string{"X-Request-Id": tc.in}})
		got := h.Get("X-Request-Id")
		if tc.keep && got != tc.in || !tc.keep && (got == tc.in || len(got) != 24) {
			t.Errorf("in %q: got %q", tc.in, got)
		}
		if decodeErr(t, b).Error.RequestID != got {
			t.Errorf("body request id differs")
		}
		if !strings.Contains(e.logs.String(), `"request_id":"`+got+`"`) {
			t.Errorf("log lacks the request id %q", got)
		}
	}
}

func TestPanicRecovery(t *testing.T) {
	e := newEnv(t, envOpts{
		checks:   []server.Check{{Name: "boom", Check: func(context.Context) error { panic("check exploded") }}},
		fallback: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("fallback exploded") }),
	})
	for _, path := range []string{server.PathReadyz, "/some/page"} {
		s, _, b := e.do(request{method: "GET", path: path})
		if s != 500 || decodeErr(t, b).Error.Code != "internal_error" {
			t.Errorf("%s: %d %s", path, s, b)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "check exploded") || !strings.Contains(logs, `"error":"internal_error"`) {
		t.Errorf("logs:\n%s", logs)
	}
	// The server still serves.
	if s, _, _ := e.do(request{method: "GET", path: server.PathHealthz}); s != 200 {
		t.Errorf("healthz after panics: %d", s)
	}
}

func TestNewValidates(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, tc := range []struct {
		name string
		cfg  server.Config
	}{
		{"no service", server.Config{APIKeys: []wxphone.Secret{keyPhone}}},
		{"no key", server.Config{Service: e.svc}},
		{"short key", server.Config{Service: e.svc, APIKeys: []wxphone.Secret{"short"}}},
		{"short token key", server.Config{Service: e.svc, APIKeys: []wxphone.Secret{keyPhone}, TokenAPIKeys: []wxphone.Secret{"short"}}},
		{"negative timeout", server.Config{Service: e.svc, APIKeys: []wxphone.Secret{keyPhone}, RequestTimeout: -1}},
		{"bad check", server.Config{Service: e.svc, APIKeys: []wxphone.Secret{keyPhone}, ReadyChecks: []server.Check{{Name: "x"}}}},
	} {
		if _, err := server.New(tc.cfg); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestRoutesListed(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := map[string]string{
		"POST " + server.PathPhoneNumber:     "phone",
		"GET " + server.PathAccessToken:      "token",
		"POST " + server.PathTokenInvalidate: "token",
		"GET " + server.PathHealthz:          "none",
		"GET " + server.PathReadyz:           "none",
		"GET " + server.PathMetrics:          "none",
	}
	got := map[string]string{}
	for _, r := range e.srv.Routes() {
		got[r.Method+" "+r.Path] = r.Auth
	}
	if len(got) != len(want) {
		t.Errorf("routes %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("route %s: auth %q, want %q", k, got[k], v)
		}
	}
}
