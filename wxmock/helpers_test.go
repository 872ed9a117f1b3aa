package wxmock

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	appA    = "wxaaaaaaaaaaaaaaa1"
	secretA = "secretaaaaaaaaaaaaaaaaaaaaaaaaa1"
	appB    = "wxbbbbbbbbbbbbbbb2"
	secretB = "secretbbbbbbbbbbbbbbbbbbbbbbbbb2"
)

// baseTime is 2025-06-01 10:00:00 UTC (18:00 in Beijing).
var baseTime = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)

var ridRE = regexp.MustCompile(` rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$`)

// newTestServer returns an emulator with apps A and B, a frozen clock at
// baseTime (move it with Advance) and a fixed seed. mod may adjust opts.
func newTestServer(t testing.TB, mod func(*Options)) *Server {
	t.Helper()
	opts := Options{
		Apps: []App{{appA, secretA}, {appB, secretB}},
		Now:  func() time.Time { return baseTime },
		Seed: 42,
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// wxResp is the union of all WeChat endpoint answers.
type wxResp struct {
	Errcode     int    `json:"errcode"`
	Errmsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	PhoneInfo   *struct {
		PhoneNumber     string          `json:"phoneNumber"`
		PurePhoneNumber string          `json:"purePhoneNumber"`
		CountryCode     json.RawMessage `json:"countryCode"`
		Watermark       struct {
			Timestamp int64  `json:"timestamp"`
			AppID     string `json:"appid"`
		} `json:"watermark"`
	} `json:"phone_info"`
	OpenID     string `json:"openid"`
	SessionKey string `json:"session_key"`
	UnionID    string `json:"unionid"`

	raw  map[string]json.RawMessage
	body string
}

// serve runs one request through the handler in-process.
func serve(h http.Handler, method, target string, body string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// wx runs a WeChat request and checks the transport-level invariants:
// HTTP 200, text/plain + rid for errors, JSON content type for success.
func wx(t *testing.T, h http.Handler, method, target, body string) wxResp {
	t.Helper()
	rec := serve(h, method, target, body)
	return parseWX(t, rec.Code, rec.Header(), rec.Body.Bytes())
}

func parseWX(t *testing.T, status int, hdr http.Header, body []byte) wxResp {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %q", status, body)
	}
	var r wxResp
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("body is not JSON: %v: %q", err, body)
	}
	if err := json.Unmarshal(body, &r.raw); err != nil {
		t.Fatalf("body is not a JSON object: %v", err)
	}
	r.body = string(body)
	ct := hdr.Get("Content-Type")
	if r.Errcode != 0 {
		if ct != "text/plain" {
			t.Errorf("error Content-Type = %q, want text/plain", ct)
		}
		if !ridRE.MatchString(r.Errmsg) {
			t.Errorf("errmsg %q does not end in a rid", r.Errmsg)
		}
	} else if ct != "application/json; encoding=utf-8" {
		t.Errorf("success Content-Type = %q", ct)
	}
	return r
}

func tokenURL(appid, secret string) string {
	return "/cgi-bin/token?" + url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {secret}}.Encode()
}

func stableBody(appid, secret string, force bool) string {
	b, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force})
	return string(b)
}

func phoneURL(token string) string {
	return "/wxa/business/getuserphonenumber?access_token=" + url.QueryEscape(token)
}

func codeBody(code string) string {
	b, _ := json.Marshal(map[string]string{"code": code})
	return string(b)
}

func sessionURL(appid, secret, code string) string {
	return "/sns/jscode2session?" + url.Values{"appid": {appid}, "secret": {secret}, "js_code": {code}, "grant_type": {"authorization_code"}}.Encode()
}

// classicToken fetches a /cgi-bin/token token for appid.
func classicToken(t *testing.T, s *Server, appid, secret string) string {
	t.Helper()
	r := wx(t, s, http.MethodGet, tokenURL(appid, secret), "")
	if r.Errcode != 0 || r.AccessToken == "" {
		t.Fatalf("token fetch failed: %s", r.body)
	}
	return r.AccessToken
}

// stableToken fetches a stable token.
func stableToken(t *testing.T, s *Server, appid, secret string, force bool) wxResp {
	t.Helper()
	r := wx(t, s, http.MethodPost, "/cgi-bin/stable_token", stableBody(appid, secret, force))
	if r.Errcode != 0 || r.AccessToken == "" {
		t.Fatalf("stable token fetch failed: %s", r.body)
	}
	return r
}

func mintPhone(t testing.TB, s *Server, appid, pure string) string {
	t.Helper()
	code, err := s.MintPhoneCode(PhoneGrant{AppID: appid, PurePhoneNumber: pure})
	if err != nil {
		t.Fatalf("MintPhoneCode: %v", err)
	}
	return code
}

// admin runs an admin request and decodes the JSON answer into out (when
// non-nil); it returns the status.
func admin(t *testing.T, h http.Handler, method, target, body string, out any) int {
	t.Helper()
	rec := serve(h, method, target, body)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type = %q", method, target, ct)
	}
	if !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("%s %s: invalid JSON %q", method, target, rec.Body.Bytes())
	}
	if out != nil {
		if err := json.NewDecoder(bytes.NewReader(rec.Body.Bytes())).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, target, err)
		}
	}
	return rec.Code
}
