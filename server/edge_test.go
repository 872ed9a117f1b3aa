package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

// runEnv serves e's server with Run (the listener wrapping, timeouts and
// connection handling of production) on a loopback port until the test
// ends, and returns its address.
func runEnv(t *testing.T, e *env) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ln.Addr().String()
}

// rawExchange writes raw to a new connection to addr and reads the answers
// until the server closes the connection (or a deadline passes: then
// closed is false).
func rawExchange(t *testing.T, addr, raw string) (answers []*http.Response, bodies []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	// An upper bound so a broken server cannot hang the test; no
	// assertion depends on elapsed time.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return answers, bodies, !(errors.As(err, &ne) && ne.Timeout())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers, bodies = append(answers, resp), append(bodies, string(b))
	}
}

// checkRaw checks an answer read off the wire against docs/openapi.json.
func checkRaw(t *testing.T, method, target string, resp *http.Response, body string) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	if err := checker(t).Check(req, resp.StatusCode, resp.Header, []byte(body)); err != nil {
		t.Errorf("contract: %v", err)
	}
}

// TestFramingAmbiguityRefused: a request with both Transfer-Encoding and
// Content-Length is refused and its connection closed, so that the bytes
// after it (a smuggled request, to a proxy that framed by Content-Length)
// are never served. A request with either one is served.
func TestFramingAmbiguityRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	addr := runEnv(t, e)
	code := e.mint(appA, "13900001111")
	body := `{"code":"` + code + `"}`
	chunked := func(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n0\r\n\r\n" }
	smuggled := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

	tests := []struct {
		name, raw string
		method    string
		path      string
	}{
		{"TE and CL, pipelined request after",
			"POST /v1/phone-number HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + keyPhone + "\r\nContent-Type: application/json\r\n" +
				"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body) + smuggled, "POST", server.PathPhoneNumber},
		{"CL then TE in other letter case",
			"POST /v1/phone-number HTTP/1.1\r\nHost: x\r\ncontent-length: 60\r\nTRANSFER-ENCODING: chunked\r\nAuthorization: Bearer " + keyPhone + "\r\nContent-Type: application/json\r\n\r\n" +
				chunked(body) + smuggled, "POST", server.PathPhoneNumber},
		{"on a route without a body",
			"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, "GET", server.PathHealthz},
		{"HTTP/1.0 (net/http would frame it by Content-Length)",
			"GET /healthz HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled, "GET", server.PathHealthz},
		{"on an unknown path",
			"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, "POST", "/nowhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answers, bodies, closed := rawExchange(t, addr, tt.raw)
			if len(answers) != 1 || !closed {
				t.Fatalf("%d answers, connection closed %v; want one answer and a closed connection", len(answers), closed)
			}
			if answers[0].StatusCode != 400 || decodeErr(t, []byte(bodies[0])).Error.Code != "invalid_request" || !strings.Contains(bodies[0], "Transfer-Encoding") {
				t.Errorf("answer %d %s", answers[0].StatusCode, bodies[0])
			}
			if !answers[0].Close {
				t.Error("the answer does not say Connection: close")
			}
			if tt.path != "/nowhere" {
				checkRaw(t, tt.method, tt.path, answers[0], bodies[0])
			}
		})
	}
	if n := e.emu.Stats().Codes[code].Calls; n != 0 {
		t.Errorf("the code reached WeChat %d times through a refused request", n)
	}

	// Either header alone is fine, and the connection stays open.
	t.Run("chunked alone", func(t *testing.T) {
		raw := "POST /v1/phone-number HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + keyPhone + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
			chunked(body) + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		answers, bodies, _ := rawExchange(t, addr, raw)
		if len(answers) != 2 || answers[0].StatusCode != 200 || answers[1].StatusCode != 200 {
			t.Fatalf("answers %d: %v", len(answers), bodies)
		}
	})
	t.Run("Content-Length alone", func(t *testing.T) {
		raw := "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		answers, bodies, _ := rawExchange(t, addr, raw)
		if len(answers) != 2 || answers[0].StatusCode != 200 || answers[1].StatusCode != 200 {
			t.Fatalf("answers %d: %v", len(answers), bodies)
		}
	})
}

// TestRawPathRouting: routing uses the path as sent, so an encoded slash
// or encoded letters reach no route (nor the Fallback), over the wire and
// through a Go client.
func TestRawPathRouting(t *testing.T) {
	fallbackCalled := false
	e := newEnv(t, envOpts{fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fallbackCalled = true
		server.WriteNotFound(w, r)
	})})
	addr := runEnv(t, e)
	for _, tc := range []struct{ method, path, auth string }{
		{"POST", "/v1%2Fphone-number", keyPhone},
		{"POST", "/v1/phone%2Dnumber", keyPhone},
		{"GET", "/%6Detrics", ""},
		{"GET", "/%68ealthz", ""},
		{"GET", "/v1/access%2Dtoken", keyToken},
		{"GET", "/readyz%2F", ""},
	} {
		raw := tc.method + " " + tc.path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + tc.auth + "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
		answers, bodies, _ := rawExchange(t, addr, raw)
		if len(answers) != 1 || answers[0].StatusCode != 404 || decodeErr(t, []byte(bodies[0])).Error.Code != "not_found" {
			t.Errorf("%s %s: %d answers %v", tc.method, tc.path, len(answers), bodies)
			continue
		}
		checkRaw(t, tc.method, tc.path, answers[0], bodies[0])
		// The same through net/http's client, which keeps the encoding.
		s, _, b := e.do(request{method: tc.method, path: tc.path, key: tc.auth, body: "{}"})
		if s != 404 || decodeErr(t, b).Error.Code != "not_found" {
			t.Errorf("client %s %s: %d %s", tc.method, tc.path, s, b)
		}
	}
	if fallbackCalled {
		t.Error("an encoded path reached the Fallback")
	}
	if !strings.Contains(e.logs.String(), `"route":"other","status":404`) {
		t.Errorf("no 404 log line with the bounded route label")
	}
}

// TestStrictJSONBodies: a duplicate key, a key in another letter case, an
// unknown field, a non-string value or trailing data is refused with a
// clear 400 invalid_request, and the code never reaches WeChat.
func TestStrictJSONBodies(t *testing.T) {
	e := newEnv(t, envOpts{})
	code := e.mint(appA, "13900002222")
	q := func(s string) string { return strings.ReplaceAll(s, "@", code) }
	for _, tc := range []struct {
		name, body, msg string
	}{
		{"duplicate code", q(`{"code":"@","code":"@"}`), "twice"},
		{"duplicate code, other value", q(`{"code":"junk-code-0000","code":"@"}`), "twice"},
		{"duplicate appid", q(`{"code":"@","appid":"` + appA + `","appid":"` + appB + `"}`), "twice"},
		{"escaped duplicate", q(`{"code":"@","\u0063ode":"@"}`), "twice"},
		{"upper-case key", q(`{"CODE":"@"}`), "letter case"},
		{"title-case key", q(`{"Code":"@"}`), "letter case"},
		{"folded openid", q(`{"code":"@","openID":"o1"}`), "letter case"},
		{"unknown field", q(`{"code":"@","open_id":"o1"}`), "unknown field"},
		{"number", `{"code":12345}`, "wrong type"},
		{"null", q(`{"code":"@","openid":null}`), "wrong type"},
		{"object", q(`{"code":{"v":"@"}}`), "wrong type"},
		{"array body", q(`["@"]`), "JSON object"},
		{"trailing object", q(`{"code":"@"} {"code":"@"}`), "exactly one"},
		{"trailing garbage", q(`{"code":"@"}x`), "exactly one"},
		{"truncated", q(`{"code":"@"`), "not a valid JSON object"},
		{"empty", ``, "not a valid JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, b := e.do(request{key: keyPhone, body: tc.body, contentType: "application/json"})
			if tc.body == "" {
				s, _, b = e.do(request{key: keyPhone, body: " "})
			}
			eb := decodeErr(t, b)
			if s != 400 || eb.Error.Code != "invalid_request" || !strings.Contains(eb.Error.Message, tc.msg) {
				t.Errorf("%d %s; want 400 invalid_request mentioning %q", s, b, tc.msg)
			}
		})
	}
	if n := e.emu.Stats().Codes[code].Calls; n != 0 {
		t.Errorf("the code reached WeChat %d times", n)
	}
	// The invalidate route decodes the same way.
	for _, body := range []string{`{"access_token":"a","access_token":"b"}`, `{"ACCESS_TOKEN":"a"}`, `{"access_token":"a","AppID":"x"}`, `{"access_to\u212Aen":"a"}`, "{\"access_to\u212Aen\":\"a\"}"} {
		s, _, b := e.do(request{key: keyToken, path: server.PathTokenInvalidate, body: body})
		if s != 400 || decodeErr(t, b).Error.Code != "invalid_request" {
			t.Errorf("invalidate %s: %d %s", body, s, b)
		}
	}
	// A well-formed body still works, field order and escapes aside.
	s, _, b := e.do(request{key: keyPhone, body: `{"openid":"o1", "appid":"` + appA + `", "\u0063ode":"` + code + `"}`})
	if s != 200 || decodeOK(t, b).PurePhoneNumber != "13900002222" {
		t.Errorf("well-formed: %d %s", s, b)
	}
	e.checkNoLeaks()
}

// TestRequestIDKeptOnlyWhenSafe: an incoming X-Request-Id is echoed only
// when it is 1 to 64 of [A-Za-z0-9._-]; any other is replaced by a
// generated one and never written to the log.
func TestRequestIDKeptOnlyWhenSafe(t *testing.T) {
	e := newEnv(t, envOpts{})
	generated := regexp.MustCompile(`^[0-9a-f]{24}$`)
	for _, tc := range []struct {
		id   string
		kept bool
	}{
		{"req-1", true},
		{"A.b_c-9", true},
		{strings.Repeat("r", 64), true},
		{strings.Repeat("r", 65), false},
		{"has space", false},
		{`quote"d`, false},
		{"<script>alert(1)</script>", false},
		{"line\\nbreak", false},
		{"%0d%0aX-Injected:1", false},
		{"caf\u00e9", false},
		{"{\"level\":\"ERROR\"}", false},
	} {
		s, h, b := e.do(request{method: "GET", path: server.PathHealthz, header: map[string]string{"X-Request-Id": tc.id}})
		got := h.Get("X-Request-Id")
		if s != 200 || (tc.kept && got != tc.id) || (!tc.kept && !generated.MatchString(got)) {
			t.Errorf("X-Request-Id %q: answered %d with %q %s", tc.id, s, got, b)
		}
		// Error bodies carry the same id.
		_, h, b = e.do(request{method: "GET", path: "/nope", header: map[string]string{"X-Request-Id": tc.id}})
		if eb := decodeErr(t, b); eb.Error.RequestID != h.Get("X-Request-Id") {
			t.Errorf("request_id %q, header %q", eb.Error.RequestID, h.Get("X-Request-Id"))
		}
		if !tc.kept && strings.Contains(e.logs.String(), tc.id) {
			t.Errorf("the refused id %q is in the log", tc.id)
		}
	}
}

// TestBodyReadTimeout: a body that does not arrive within the server's
// read deadline is answered 408 request_timeout (not 400), and the
// connection is closed.
func TestBodyReadTimeout(t *testing.T) {
	e := newEnv(t, envOpts{})
	ts := httptest.NewUnstartedServer(e.srv.Handler())
	ts.Config.ReadTimeout = 300 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	addr := strings.TrimPrefix(ts.URL, "http://")
	for _, path := range []string{server.PathPhoneNumber, server.PathTokenInvalidate} {
		key := keyPhone
		if path == server.PathTokenInvalidate {
			key = keyToken
		}
		// The header promises 100 bytes; 10 arrive, then nothing.
		raw := "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"co"
		answers, bodies, closed := rawExchange(t, addr, raw)
		if len(answers) != 1 || !closed {
			t.Fatalf("%s: %d answers, closed %v", path, len(answers), closed)
		}
		eb := decodeErr(t, []byte(bodies[0]))
		if answers[0].StatusCode != http.StatusRequestTimeout || eb.Error.Code != "request_timeout" {
			t.Errorf("%s: %d %s", path, answers[0].StatusCode, bodies[0])
		}
		checkRaw(t, "POST", path, answers[0], bodies[0])
	}
}

// TestEveryRouteAnswersHEADAnd405: GET routes answer HEAD like GET without
// a body; every route answers another method with 405 and Allow. The
// contract check of newEnv validates each answer.
func TestEveryRouteAnswersHEADAnd405(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, r := range e.srv.Routes() {
		key := map[string]string{"none": "", "phone": keyPhone, "token": keyToken}[r.Auth]
		if r.Method == http.MethodGet {
			s, h, b := e.do(request{method: "HEAD", path: r.Path, key: key})
			if s != 200 || len(b) != 0 || h.Get("X-Request-Id") == "" {
				t.Errorf("HEAD %s: %d %q", r.Path, s, b)
			}
		}
		for _, m := range []string{"PUT", "DELETE", "PATCH", "OPTIONS"} {
			s, h, b := e.do(request{method: m, path: r.Path, key: key})
			if s != 405 || decodeErr(t, b).Error.Code != "method_not_allowed" || !strings.Contains(h.Get("Allow"), r.Method) {
				t.Errorf("%s %s: %d Allow %q %s", m, r.Path, s, h.Get("Allow"), b)
			}
		}
	}
	if s, _, _ := e.do(request{method: "HEAD", path: server.PathPhoneNumber, key: keyPhone}); s != 405 {
		t.Errorf("HEAD on a POST route: %d", s)
	}
}

// TestTokenRoutesTellTokenClients: a 503 of the token routes tells a token
// client what to do, never speaks of a code, and the first one after a
// refused fetch already carries Retry-After, as the later ones do (the
// callers sharing the refused fetch used to get WeChat's 45009 without
// it).
func TestTokenRoutesTellTokenClients(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(e *env) (int, http.Header, []byte)
	}{
		{"GET", func(e *env) (int, http.Header, []byte) {
			return e.do(request{method: "GET", path: server.PathAccessToken, key: keyToken})
		}},
		{"invalidate", func(e *env) (int, http.Header, []byte) {
			return e.do(request{path: server.PathTokenInvalidate, key: keyToken, body: `{"access_token":"86_rejected_token_0123456789"}`})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{noWarm: true})
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 45009, Count: 1})
			for i := range 2 {
				s, h, b := tc.do(e)
				eb := decodeErr(t, b)
				if s != 503 || eb.Error.Code != "token_unavailable" || eb.Error.Errcode != 45009 {
					t.Fatalf("answer %d: %d %s", i, s, b)
				}
				if h.Get("Retry-After") == "" {
					t.Errorf("answer %d has no Retry-After", i)
				}
				if strings.Contains(strings.ToLower(eb.Error.Message), "code") || !strings.Contains(eb.Error.Message, "Retry-After") {
					t.Errorf("answer %d message %q", i, eb.Error.Message)
				}
			}
		})
	}
	// The phone route's first 503 after the refusal has it too.
	e := newEnv(t, envOpts{noWarm: true})
	e.fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 45009, Count: 1})
	s, h, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13900003333")})
	if s != 503 || h.Get("Retry-After") == "" || !strings.Contains(decodeErr(t, b).Error.Message, "did not send the code") {
		t.Errorf("phone route: %d Retry-After %q %s", s, h.Get("Retry-After"), b)
	}
}
