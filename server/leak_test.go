package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

// TestTokenEndpointFailuresLeakNothing drives the central token endpoints'
// failure paths (TestStatuses covers the exchange's) at DEBUG and checks
// every log line, header and body: no access token outside a 200 body of
// these endpoints, no token a caller reported, no API key, no AppSecret.
func TestTokenEndpointFailuresLeakNothing(t *testing.T) {
	t.Parallel()
	const stale = "86_stale_token_reported_by_a_caller_0123456789"
	const junk = "86_junk_token_in_a_query_0123456789"
	body := func(appid, tok string) string {
		return `{"appid":"` + appid + `","access_token":"` + tok + `"}`
	}
	t.Run("healthy upstream", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{})
		e.secrets = append(e.secrets, stale, junk)
		e.collectTokens()
		cur := e.emu.ValidTokens(appA)[0]
		for _, tc := range []struct {
			name   string
			r      request
			status int
		}{
			{"stale token", request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, stale)}, 200},
			{"unknown app", request{path: server.PathTokenInvalidate, key: keyToken, body: body("wxunknownapp00001", stale)}, 400},
			{"token too long", request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, stale+strings.Repeat("x", 513))}, 400},
			{"token not printable", request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, stale+`\u0001`)}, 400},
			{"unknown field", request{path: server.PathTokenInvalidate, key: keyToken, body: `{"appid":"` + appA + `","token":"` + stale + `"}`}, 400},
			{"wrong type", request{path: server.PathTokenInvalidate, key: keyToken, body: `{"access_token":["` + stale + `"]}`}, 400},
			{"query with a token", request{method: "GET", path: server.PathAccessToken + "?appid=" + appA + "&access_token=" + junk, key: keyToken}, 400},
			{"key in the query", request{method: "GET", path: server.PathAccessToken + "?key=" + keyToken}, 401},
			{"phone key", request{path: server.PathTokenInvalidate, key: keyPhone, body: body(appA, stale)}, 403},
			{"current token, still valid", request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, cur)}, 409},
			{"{REJECT}current token, rejected", request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, cur)}, 200},
			// Within 30 s of the last force refresh: the budget refuses.
			{"current token again", request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, "{NEW}")}, 503},
		} {
			if name, ok := strings.CutPrefix(tc.name, "{REJECT}"); ok {
				// From here on WeChat rejects every token on
				// get_api_domain_ip, confirming the reports.
				tc.name = name
				e.fault(wxmock.Fault{Endpoint: wxmock.EndpointAPIDomainIP, Kind: wxmock.FaultErrcode, Errcode: 40001})
			}
			if tc.r.body != "" && strings.Contains(tc.r.body, "{NEW}") {
				e.collectTokens()
				toks := e.emu.ValidTokens(appA)
				tc.r.body = strings.ReplaceAll(tc.r.body, "{NEW}", toks[len(toks)-1])
			}
			if s, h, b := e.do(tc.r); s != tc.status {
				t.Errorf("%s: %d %s, want %d", tc.name, s, b, tc.status)
			} else if s == 503 && h.Get("Retry-After") == "" {
				t.Errorf("%s: no Retry-After", tc.name)
			}
		}
		e.checkNoLeaks()
	})
	t.Run("token fetch refused", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{served: []wxmock.App{{AppID: appA, Secret: "wrong-secret-0123456789"}}, noWarm: true})
		e.secrets = append(e.secrets, "wrong-secret-0123456789", stale)
		for range 2 { // the fetch, then the cool-down
			if s, _, b := e.do(request{method: "GET", path: server.PathAccessToken, key: keyToken}); s != 503 || decodeErr(t, b).Error.Errcode != 40125 {
				t.Errorf("GET: %d %s", s, b)
			}
		}
		if s, _, b := e.do(request{path: server.PathTokenInvalidate, key: keyToken, body: body(appA, stale)}); s != 503 {
			t.Errorf("invalidate: %d %s", s, b)
		}
		e.checkNoLeaks()
	})
	t.Run("token fetch too slow", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOpts{noWarm: true, requestTimeout: 300 * time.Millisecond})
		e.fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 2000, Count: 1})
		if s, _, b := e.do(request{method: "GET", path: server.PathAccessToken, key: keyToken}); s != 504 {
			t.Errorf("GET: %d %s", s, b)
		}
		e.checkNoLeaks()
	})
}
