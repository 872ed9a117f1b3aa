package wxmock

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// adminRoutes are the admin paths FuzzAdminAPI chooses from.
func adminRoutes() []string {
	return []string{
		"/admin/phone-codes", "/admin/login-codes", "/admin/legacy-payloads",
		"/admin/faults", "/admin/revoke-tokens", "/admin/apps", "/admin/tokens",
		"/admin/clock", "/admin/config", "/admin/stats", "/admin/stats/reset",
		"/admin/unknown", "/admin/calls",
	}
}

func fuzzRequest(method, path, rawQuery string, body []byte) *http.Request {
	return (&http.Request{
		Method:     method,
		URL:        &url.URL{Path: path, RawQuery: rawQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(body)),
		Host:       "api.weixin.qq.com",
	}).WithContext(context.Background())
}

// FuzzAdminAPI checks that no admin request body or method makes the
// emulator panic or answer anything but a JSON object with a known status,
// and that the emulator still works afterwards.
func FuzzAdminAPI(f *testing.F) {
	f.Add(uint8(0), "POST", []byte(`{"appid":"`+appA+`","purePhoneNumber":"13800138000","countryCode":"86"}`))
	f.Add(uint8(1), "POST", []byte(`{"appid":"`+appB+`","openid":"oX","unionid":"u"}`))
	f.Add(uint8(2), "POST", []byte(`{"appid":"`+appA+`","session_key":"tiihtNczf5v6AKRyjwEUhQ==","purePhoneNumber":"13580006666"}`))
	f.Add(uint8(3), "POST", []byte(`{"endpoint":"*","kind":"latency","latency_ms":5,"count":1}`))
	f.Add(uint8(3), "DELETE", []byte(nil))
	f.Add(uint8(4), "POST", []byte(`{}`))
	f.Add(uint8(5), "POST", []byte(`{"appid":"wxz","secret":"s"}`))
	f.Add(uint8(6), "GET", []byte(nil))
	f.Add(uint8(7), "POST", []byte(`{"advance_seconds":1e9}`))
	f.Add(uint8(8), "POST", []byte(`{"country_code_as_number":true,"phone_rate_limit_per_minute":1}`))
	f.Add(uint8(9), "GET", []byte(nil))
	f.Add(uint8(10), "POST", []byte(`null`))
	f.Add(uint8(8), "POST", []byte(`{"record_calls":true}`))
	f.Add(uint8(12), "GET", []byte(nil))
	f.Add(uint8(3), "POST", []byte(`{"endpoint":"phone","kind":"reset_after_consume","h2_error":"PROTOCOL_ERROR","count":1}`))
	f.Fuzz(func(t *testing.T, route uint8, method string, body []byte) {
		routes := adminRoutes()
		s := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-" })
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, fuzzRequest(method, routes[int(route)%len(routes)], "appid="+appA, body))
		switch rec.Code {
		case 200, 400, 404, 405:
		default:
			t.Fatalf("status %d", rec.Code)
		}
		var obj map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil {
			t.Fatalf("answer is not a JSON object: %q", rec.Body.Bytes())
		}
		if rec.Code != 200 {
			if msg, _ := obj["error"].(string); msg == "" {
				t.Fatalf("error answer without message: %q", rec.Body.Bytes())
			}
		}
		// Whatever happened, the WeChat side still answers sanely.
		s.ClearFaults()
		tr := httptest.NewRecorder()
		s.ServeHTTP(tr, fuzzRequest("GET", "/cgi-bin/token", "grant_type=client_credential&appid="+appA+"&secret="+secretA, nil))
		var tok struct {
			AccessToken string `json:"access_token"`
			Errcode     int    `json:"errcode"`
		}
		if err := json.Unmarshal(tr.Body.Bytes(), &tok); err != nil || (tok.AccessToken == "" && tok.Errcode == 0) {
			t.Fatalf("token fetch after admin call: %q", tr.Body.Bytes())
		}
	})
}

// FuzzWeChatEndpoints checks that no method, query or body makes a WeChat
// endpoint panic, and that every answer keeps the transport invariants.
// In the query and body, {TOKEN}, {CODE}, {LOGIN} and {SECRET} are replaced
// by a valid access token, phone code, login code and app A's secret so
// that the fuzzer also reaches the success paths.
func FuzzWeChatEndpoints(f *testing.F) {
	f.Add(uint8(0), "GET", "grant_type=client_credential&appid="+appA+"&secret={SECRET}", []byte(nil))
	f.Add(uint8(1), "POST", "", []byte(`{"grant_type":"client_credential","appid":"`+appA+`","secret":"{SECRET}","force_refresh":true}`))
	f.Add(uint8(2), "POST", "access_token={TOKEN}", []byte(`{"code":"{CODE}"}`))
	f.Add(uint8(2), "POST", "access_token={TOKEN}", []byte(`{"code":"load-1"}`))
	f.Add(uint8(2), "POST", "access_token=%zz", []byte(`{"code":`))
	f.Add(uint8(3), "GET", "appid="+appA+"&secret={SECRET}&js_code={LOGIN}&grant_type=authorization_code", []byte(nil))
	f.Add(uint8(3), "HEAD", ";;&&==", []byte("\x00"))
	f.Fuzz(func(t *testing.T, ep uint8, method, query string, body []byte) {
		paths := []string{"/cgi-bin/token", "/cgi-bin/stable_token", "/wxa/business/getuserphonenumber", "/sns/jscode2session", "/cgi-bin/unknown"}
		path := paths[int(ep)%len(paths)]
		s := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-"; o.PhoneRateLimit = 3 })
		code, err := s.MintPhoneCode(PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
		if err != nil {
			t.Fatal(err)
		}
		lc, err := s.MintLoginCode(LoginGrant{AppID: appA})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, fuzzRequest("GET", "/cgi-bin/token", "grant_type=client_credential&appid="+appA+"&secret="+secretA, nil))
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil || tr.AccessToken == "" {
			t.Fatalf("token fetch: %q", rec.Body.Bytes())
		}
		repl := strings.NewReplacer("{TOKEN}", tr.AccessToken, "{CODE}", code, "{LOGIN}", lc.Code, "{SECRET}", secretA)
		query = repl.Replace(query)
		body = []byte(repl.Replace(string(body)))

		for range 2 { // twice: single-use paths behave on repeat too
			rec = httptest.NewRecorder()
			s.ServeHTTP(rec, fuzzRequest(method, path, query, body))
			if path == "/cgi-bin/unknown" {
				if rec.Code != 404 {
					t.Fatalf("unknown path: %d", rec.Code)
				}
				return
			}
			if rec.Code != 200 {
				t.Fatalf("status %d", rec.Code)
			}
			var r struct {
				Errcode *int   `json:"errcode"`
				Errmsg  string `json:"errmsg"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
				t.Fatalf("answer is not a JSON object: %q", rec.Body.Bytes())
			}
			ct := rec.Header().Get("Content-Type")
			if r.Errcode != nil && *r.Errcode != 0 {
				if ct != "text/plain" || !ridRE.MatchString(r.Errmsg) {
					t.Fatalf("error answer %q with Content-Type %q", rec.Body.Bytes(), ct)
				}
			} else if ct != "application/json; encoding=utf-8" {
				t.Fatalf("success answer %q with Content-Type %q", rec.Body.Bytes(), ct)
			}
		}
	})
}
