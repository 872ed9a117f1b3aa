package server_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/replaytest"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

// rewriteWatermark wraps the emulator so that phone answers carry another
// appid in their watermark.
func rewriteWatermark(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/wxa/business/getuserphonenumber" {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}}
		next.ServeHTTP(rec, r)
		body := bytes.ReplaceAll(rec.body.Bytes(), []byte(`"appid":"`+appA+`"`), []byte(`"appid":"wxsomeoneelse0000"`))
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(body)
	})
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int)   { r.status = s }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(b)
}

// TestStatuses drives every error status through the real handler, the
// real service and the emulator (with its faults), and checks on each path
// that nothing secret leaks into logs, headers or bodies (every env logs at
// DEBUG).
func TestStatuses(t *testing.T) {
	phoneReq := func(e *env, code string) result {
		s, h, b := e.phone(keyPhone, map[string]string{"code": code})
		return result{s, h, b}
	}
	tests := []struct {
		name       string
		opts       envOpts
		run        func(t *testing.T, e *env) result
		status     int
		code       string // "" for a 200
		errcode    int
		retryAfter string // expected Retry-After ("" none, "*" any)
		check      func(t *testing.T, e *env, r result)
	}{
		{name: "ok", run: func(t *testing.T, e *env) result {
			return phoneReq(e, e.mint(appA, "13911112222"))
		}, status: 200, check: func(t *testing.T, e *env, r result) {
			ok := decodeOK(t, r.body)
			if ok.PhoneNumber != "13911112222" || ok.PurePhoneNumber != "13911112222" || ok.CountryCode != "86" || ok.Watermark.AppID != appA || ok.Replayed {
				t.Errorf("body %+v", ok)
			}
			if !strings.Contains(e.logs.String(), `"phone":"139****2222"`) {
				t.Errorf("the log line lacks the masked phone:\n%s", e.logs.String())
			}
		}},
		{name: "malformed JSON", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, body: `{"code":`})
			return result{s, h, b}
		}, status: 400, code: "invalid_request"},
		{name: "unknown field", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, body: `{"code":"` + e.mint(appA, "13911112223") + `","open_id":"x"}`})
			return result{s, h, b}
		}, status: 400, code: "invalid_request", check: noPhoneCalls},
		{name: "trailing data", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, body: `{"code":"abc"} {}`})
			return result{s, h, b}
		}, status: 400, code: "invalid_request"},
		{name: "wrong type", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, body: `{"code":12345}`})
			return result{s, h, b}
		}, status: 400, code: "invalid_request"},
		{name: "empty code", run: func(t *testing.T, e *env) result {
			return phoneReq(e, "")
		}, status: 400, code: "malformed_code", check: noPhoneCalls},
		{name: "code too long", run: func(t *testing.T, e *env) result {
			return phoneReq(e, strings.Repeat("a", 129))
		}, status: 400, code: "malformed_code", check: noPhoneCalls},
		{name: "code with a space", run: func(t *testing.T, e *env) result {
			return phoneReq(e, "abc def")
		}, status: 400, code: "malformed_code", check: noPhoneCalls},
		{name: "bad openid", run: func(t *testing.T, e *env) result {
			s, h, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13911112224"), "openid": "o p"})
			return result{s, h, b}
		}, status: 400, code: "invalid_request", check: noPhoneCalls},
		{name: "unknown appid", run: func(t *testing.T, e *env) result {
			s, h, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13911112225"), "appid": "wxnotserved"})
			return result{s, h, b}
		}, status: 400, code: "unknown_appid", check: noPhoneCalls},
		{name: "appid required", opts: envOpts{served: []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}}},
			run: func(t *testing.T, e *env) result {
				return phoneReq(e, e.mint(appA, "13911112226"))
			}, status: 400, code: "appid_required", check: noPhoneCalls},
		{name: "second app by appid", opts: envOpts{served: []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}}},
			run: func(t *testing.T, e *env) result {
				s, h, b := e.phone(keyPhone, map[string]string{"code": e.mint(appB, "13911112227"), "appid": appB})
				return result{s, h, b}
			}, status: 200, check: func(t *testing.T, e *env, r result) {
				if ok := decodeOK(t, r.body); ok.Watermark.AppID != appB {
					t.Errorf("watermark %q", ok.Watermark.AppID)
				}
			}},
		{name: "no key", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{body: `{"code":"abc"}`})
			return result{s, h, b}
		}, status: 401, code: "unauthorized", check: wantBearerChallenge},
		{name: "unknown key", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: "not-a-configured-key-000", body: `{"code":"abc"}`})
			return result{s, h, b}
		}, status: 401, code: "unauthorized", check: wantBearerChallenge},
		{name: "basic auth", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{auth: "Basic " + keyPhone, body: `{"code":"abc"}`})
			return result{s, h, b}
		}, status: 401, code: "unauthorized", check: wantBearerChallenge},
		{name: "token key on the phone route", run: func(t *testing.T, e *env) result {
			s, h, b := e.phone(keyToken, map[string]string{"code": e.mint(appA, "13911112228")})
			return result{s, h, b}
		}, status: 403, code: "forbidden", check: noPhoneCalls},
		{name: "phone key on the token route", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{method: "GET", path: server.PathAccessToken, key: keyPhone})
			return result{s, h, b}
		}, status: 403, code: "forbidden"},
		{name: "GET on the phone route", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{method: "GET", key: keyPhone})
			return result{s, h, b}
		}, status: 405, code: "method_not_allowed", check: func(t *testing.T, e *env, r result) {
			if got := r.header.Get("Allow"); got != "POST" {
				t.Errorf("Allow = %q", got)
			}
		}},
		{name: "unknown route", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{method: "GET", path: "/v1/nope", key: keyPhone})
			return result{s, h, b}
		}, status: 404, code: "not_found"},
		{name: "text/plain", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, contentType: "text/plain", body: `{"code":"abc"}`})
			return result{s, h, b}
		}, status: 415, code: "unsupported_media_type"},
		{name: "no content type", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, contentType: "-", body: `{"code":"abc"}`})
			return result{s, h, b}
		}, status: 415, code: "unsupported_media_type"},
		{name: "body over 4 KiB", run: func(t *testing.T, e *env) result {
			s, h, b := e.do(request{key: keyPhone, body: `{"code":"` + strings.Repeat("a", 5000) + `"}`})
			return result{s, h, b}
		}, status: 413, code: "body_too_large"},
		{name: "chunked body over 4 KiB", run: func(t *testing.T, e *env) result {
			req, _ := http.NewRequest("POST", e.ts.URL+server.PathPhoneNumber, struct{ *strings.Reader }{strings.NewReader(`{"code":"` + strings.Repeat("a", 5000) + `"}`)})
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+keyPhone)
			if req.ContentLength != 0 {
				t.Fatalf("the request would not be chunked")
			}
			resp, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			return result{resp.StatusCode, resp.Header, buf.Bytes()}
		}, status: 413, code: "body_too_large"},
		{name: "unknown code (40029)", run: func(t *testing.T, e *env) result {
			return phoneReq(e, strings.Repeat("f", 64))
		}, status: 422, code: "invalid_code", errcode: 40029, check: wantRID},
		{name: "code used elsewhere (40029)", run: func(t *testing.T, e *env) result {
			code := e.mint(appA, "13911112229")
			// Someone else spends the code directly with WeChat.
			tok := e.emu.ValidTokens(appA)[0]
			resp, err := e.hc.Post(e.emuTS.URL+"/wxa/business/getuserphonenumber?access_token="+tok, "application/json", strings.NewReader(`{"code":"`+code+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return phoneReq(e, code)
		}, status: 422, code: "invalid_code", errcode: 40029},
		{name: "code of another app (40013)", run: func(t *testing.T, e *env) result {
			return phoneReq(e, e.mint(appB, "13911112230"))
		}, status: 422, code: "appid_mismatch", errcode: 40013},
		{name: "WeChat 45011", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 45011, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112231"))
		}, status: 429, code: "wechat_rate_limited", errcode: 45011, retryAfter: "60", check: phoneCalls(1)},
		{name: "-1 once is retried", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112232"))
		}, status: 200, check: phoneCalls(2)},
		{name: "-1 twice", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 2})
			return phoneReq(e, e.mint(appA, "13911112233"))
		}, status: 502, code: "wechat_busy", errcode: -1, check: phoneCalls(2)},
		{name: "-1 after consuming the code", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112234"))
		}, status: 502, code: "outcome_unknown", errcode: 40029, check: phoneCalls(2)},
		{name: "drop after consume", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultDropAfterConsume, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112235"))
		}, status: 502, code: "outcome_unknown", check: phoneCalls(1)},
		{name: "HTTP 502 from a gateway", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 502, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112236"))
		}, status: 502, code: "outcome_unknown", check: phoneCalls(1)},
		{name: "HTTP 503 after consuming", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 503, Consume: true, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112237"))
		}, status: 502, code: "outcome_unknown", check: phoneCalls(1)},
		{name: "HTTP 404 (refused before processing)", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 404, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112238"))
		}, status: 502, code: "upstream_error", check: phoneCalls(1)},
		{name: "unexpected errcode", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 48001, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112239"))
		}, status: 502, code: "upstream_error", errcode: 48001},
		{name: "reset before read", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultResetBeforeRead, Count: 1})
			return phoneReq(e, e.mint(appA, "13911112240"))
		}, status: 502, code: "outcome_unknown", check: phoneCalls(1)},
		{name: "latency beyond the exchange timeout", opts: envOpts{exchangeTimeout: 300 * time.Millisecond, requestTimeout: 5 * time.Second},
			run: func(t *testing.T, e *env) result {
				e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 3000, Count: 1})
				return phoneReq(e, e.mint(appA, "13911112241"))
			}, status: 504, code: "outcome_unknown"},
		{name: "token fetch slower than the exchange timeout (nothing sent)", opts: envOpts{exchangeTimeout: 300 * time.Millisecond, requestTimeout: 5 * time.Second, noWarm: true},
			run: func(t *testing.T, e *env) result {
				e.fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 3000, Count: 1})
				return phoneReq(e, e.mint(appA, "13911112242"))
			}, status: 504, code: "upstream_timeout", check: phoneCalls(0)},
		{name: "wrong AppSecret", opts: envOpts{served: []wxmock.App{{AppID: appA, Secret: "wrong-secret-0123456789"}}, noWarm: true},
			run: func(t *testing.T, e *env) result {
				if s := phoneReq(e, e.mint(appA, "13911112243")); s.status != 503 {
					t.Errorf("first request: %d %s", s.status, s.body)
				}
				// The second one meets the cool-down, with a Retry-After.
				return phoneReq(e, e.mint(appA, "13911112244"))
			}, status: 503, code: "token_unavailable", errcode: 40125, retryAfter: "*", check: phoneCalls(0)},
		{name: "token quota 45009", opts: envOpts{noWarm: true},
			run: func(t *testing.T, e *env) result {
				e.fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 45009})
				phoneReq(e, e.mint(appA, "13911112245"))
				return phoneReq(e, e.mint(appA, "13911112246"))
			}, status: 503, code: "token_unavailable", errcode: 45009, retryAfter: "*", check: phoneCalls(0)},
		{name: "all tokens revoked: refreshed transparently", run: func(t *testing.T, e *env) result {
			if n, err := e.emu.RevokeTokens(""); err != nil || n == 0 {
				t.Fatalf("revoke: %d %v", n, err)
			}
			return phoneReq(e, e.mint(appA, "13911112247"))
		}, status: 200, check: func(t *testing.T, e *env, r result) {
			phoneCalls(2)(t, e, r)
			if st := e.emu.Stats().Apps[appA]; st.TokensMinted != 2 {
				t.Errorf("tokens minted %d, want 2", st.TokensMinted)
			}
		}},
		{name: "token keeps being rejected", run: func(t *testing.T, e *env) result {
			e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001})
			return phoneReq(e, e.mint(appA, "13911112248"))
		}, status: 503, code: "token_unavailable", errcode: 40001, check: phoneCalls(2)},
		{name: "replay store down", opts: envOpts{replay: replaytest.Down{}}, run: func(t *testing.T, e *env) result {
			return phoneReq(e, e.mint(appA, "13911112249"))
		}, status: 503, code: "store_unavailable", check: phoneCalls(0)},
		{name: "replay store slower than the request's deadline", opts: envOpts{replay: replaytest.Stalled{}, requestTimeout: 300 * time.Millisecond}, run: func(t *testing.T, e *env) result {
			return phoneReq(e, e.mint(appA, "13911112259"))
		}, status: 504, code: "upstream_timeout", check: phoneCalls(0)},
		{name: "service closed", run: func(t *testing.T, e *env) result {
			if err := e.svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			return phoneReq(e, e.mint(appA, "13911112250"))
		}, status: 503, code: "shutting_down", check: phoneCalls(0)},
		{name: "watermark of another app", opts: envOpts{wrap: rewriteWatermark}, run: func(t *testing.T, e *env) result {
			return phoneReq(e, e.mint(appA, "13911112251"))
		}, status: 502, code: "watermark_mismatch"},
		{name: "local rate limit", opts: envOpts{rate: ratelimit.Limit{Rate: 0.001, Burst: 1}}, run: func(t *testing.T, e *env) result {
			if r := phoneReq(e, e.mint(appA, "13911112252")); r.status != 200 {
				t.Fatalf("first: %d %s", r.status, r.body)
			}
			return phoneReq(e, e.mint(appA, "13911112253"))
		}, status: 429, code: "rate_limited", retryAfter: "*", check: func(t *testing.T, e *env, r result) {
			phoneCalls(1)(t, e, r)
			if got := metricValue(t, e, `wxphone_rate_limited_total{source="local"}`); got != "1" {
				t.Errorf("rate-limited metric %q", got)
			}
			// Another key has its own bucket.
			if s, _, b := e.phone(keyPhone2, map[string]string{"code": e.mint(appA, "13911112254")}); s != 200 {
				t.Errorf("other key: %d %s", s, b)
			}
		}},
		{name: "replay for another key", run: func(t *testing.T, e *env) result {
			code := e.mint(appA, "13911112255")
			if r := phoneReq(e, code); r.status != 200 {
				t.Fatalf("first: %d", r.status)
			}
			s, h, b := e.phone(keyPhone2, map[string]string{"code": code})
			return result{s, h, b}
		}, status: 409, code: "code_already_used", check: phoneCalls(1)},
		{name: "replay for another openid", run: func(t *testing.T, e *env) result {
			code := e.mint(appA, "13911112256")
			if s, _, b := e.phone(keyPhone, map[string]string{"code": code, "openid": "oUser1"}); s != 200 {
				t.Fatalf("first: %d %s", s, b)
			}
			s, h, b := e.phone(keyPhone, map[string]string{"code": code, "openid": "oUser2"})
			return result{s, h, b}
		}, status: 409, code: "code_already_used", check: phoneCalls(1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.opts)
			e.collectTokens()
			r := tc.run(t, e)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if r.header.Get("X-Request-Id") == "" || r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("headers: %v", r.header)
			}
			if tc.code != "" {
				eb := decodeErr(t, r.body)
				if eb.Error.Code != tc.code || eb.Error.Errcode != tc.errcode {
					t.Errorf("error %s errcode %d, want %s %d: %s", eb.Error.Code, eb.Error.Errcode, tc.code, tc.errcode, r.body)
				}
				if eb.Error.RequestID != r.header.Get("X-Request-Id") || eb.Error.Message == "" {
					t.Errorf("request id or message: %s", r.body)
				}
				if !strings.Contains(e.logs.String(), `"error":"`+tc.code+`"`) {
					t.Errorf("no log line with the error code")
				}
			}
			switch ra := r.header.Get("Retry-After"); {
			case tc.retryAfter == "" && ra != "":
				t.Errorf("unexpected Retry-After %q", ra)
			case tc.retryAfter == "*" && ra == "", tc.retryAfter != "*" && tc.retryAfter != "" && ra != tc.retryAfter:
				t.Errorf("Retry-After %q, want %q", ra, tc.retryAfter)
			}
			if tc.check != nil {
				tc.check(t, e, r)
			}
			e.checkNoLeaks()
		})
	}
}

// result is one answer.
type result struct {
	status int
	header http.Header
	body   []byte
}

func noPhoneCalls(t *testing.T, e *env, r result) { phoneCalls(0)(t, e, r) }

// phoneCalls checks the number of getuserphonenumber calls the emulator saw.
func phoneCalls(n int64) func(*testing.T, *env, result) {
	return func(t *testing.T, e *env, _ result) {
		t.Helper()
		if got := e.emu.Stats().Endpoints.Phone.Calls; got != n {
			t.Errorf("%d upstream phone calls, want %d", got, n)
		}
	}
}

func wantBearerChallenge(t *testing.T, _ *env, r result) {
	t.Helper()
	if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("WWW-Authenticate = %q", got)
	}
}

func wantRID(t *testing.T, _ *env, r result) {
	t.Helper()
	if eb := decodeErr(t, r.body); eb.Error.RID == "" {
		t.Errorf("no rid: %s", r.body)
	}
}

// metricValue scrapes /metrics and returns the value of the series.
func metricValue(t *testing.T, e *env, series string) string {
	t.Helper()
	s, _, b := e.do(request{method: "GET", path: server.PathMetrics})
	if s != 200 {
		t.Fatalf("/metrics: %d", s)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}
