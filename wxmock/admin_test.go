package wxmock

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAdminValidation(t *testing.T) {
	tests := []struct {
		name       string
		single     bool // server with one app
		method     string
		target     string
		body       string
		wantStatus int
		wantErr    string // substring of "error"
	}{
		{"phone ok", false, "POST", "/admin/phone-codes", `{"appid":"` + appA + `","purePhoneNumber":"13800138000"}`, 200, ""},
		{"phone single app no appid", true, "POST", "/admin/phone-codes", `{"purePhoneNumber":"13800138000","countryCode":"86"}`, 200, ""},
		{"phone appid required", false, "POST", "/admin/phone-codes", `{"purePhoneNumber":"13800138000"}`, 400, "appid is required"},
		{"phone unknown app", false, "POST", "/admin/phone-codes", `{"appid":"wxnope","purePhoneNumber":"13800138000"}`, 400, "unknown appid"},
		{"phone bad number", false, "POST", "/admin/phone-codes", `{"appid":"` + appA + `","purePhoneNumber":"138-0013"}`, 400, "purePhoneNumber"},
		{"phone bad cc", false, "POST", "/admin/phone-codes", `{"appid":"` + appA + `","purePhoneNumber":"13800138000","countryCode":"86a"}`, 400, "countryCode"},
		{"phone number type", false, "POST", "/admin/phone-codes", `{"appid":"` + appA + `","purePhoneNumber":13800138000}`, 400, "invalid JSON"},
		{"phone unknown field", false, "POST", "/admin/phone-codes", `{"appid":"` + appA + `","purePhoneNumber":"13800138000","x":1}`, 400, "unknown field"},
		{"phone trailing data", false, "POST", "/admin/phone-codes", `{"appid":"` + appA + `","purePhoneNumber":"13800138000"} {}`, 400, "trailing"},
		{"phone empty body", true, "POST", "/admin/phone-codes", ``, 400, "purePhoneNumber"},
		{"phone too large", false, "POST", "/admin/phone-codes", `{"appid":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 400, "too large"},
		{"phone GET", false, "GET", "/admin/phone-codes", ``, 405, "method not allowed"},
		{"login ok", true, "POST", "/admin/login-codes", ``, 200, ""},
		{"login bad openid", true, "POST", "/admin/login-codes", `{"openid":"a b"}`, 400, "openid"},
		{"legacy ok", true, "POST", "/admin/legacy-payloads", `{"purePhoneNumber":"13800138000"}`, 200, ""},
		{"legacy bad key", true, "POST", "/admin/legacy-payloads", `{"purePhoneNumber":"13800138000","session_key":"abc"}`, 400, "session_key"},
		{"fault ok", false, "POST", "/admin/faults", `{"endpoint":"phone","kind":"errcode","errcode":-1,"count":1}`, 200, ""},
		{"fault bad kind", false, "POST", "/admin/faults", `{"endpoint":"phone","kind":"boom"}`, 400, "kind"},
		{"fault id not accepted", false, "POST", "/admin/faults", `{"id":"f9","endpoint":"phone","kind":"reset_before_read"}`, 400, "unknown field"},
		{"faults PUT", false, "PUT", "/admin/faults", ``, 405, "method"},
		{"revoke ok all", false, "POST", "/admin/revoke-tokens", ``, 200, ""},
		{"revoke unknown", false, "POST", "/admin/revoke-tokens", `{"appid":"wxnope"}`, 400, "unknown appid"},
		{"apps add", false, "POST", "/admin/apps", `{"appid":"wxnew","secret":"s3cr3t"}`, 200, ""},
		{"apps duplicate", false, "POST", "/admin/apps", `{"appid":"` + appA + `","secret":"x"}`, 400, "already exists"},
		{"apps bad appid", false, "POST", "/admin/apps", `{"appid":"wx new","secret":"x"}`, 400, "appid"},
		{"apps no secret", false, "POST", "/admin/apps", `{"appid":"wxnew"}`, 400, "secret"},
		{"apps secret with space", false, "POST", "/admin/apps", `{"appid":"wxnew","secret":"a b"}`, 400, "secret"},
		{"tokens ok", false, "GET", "/admin/tokens", ``, 200, ""},
		{"tokens unknown app", false, "GET", "/admin/tokens?appid=wxnope", ``, 400, "unknown appid"},
		{"tokens POST", false, "POST", "/admin/tokens", ``, 405, "method"},
		{"clock negative", false, "POST", "/admin/clock", `{"advance_seconds":-1}`, 400, "advance_seconds"},
		{"clock huge", false, "POST", "/admin/clock", `{"advance_seconds":1e300}`, 400, "advance_seconds"},
		{"clock string", false, "POST", "/admin/clock", `{"advance_seconds":"60"}`, 400, "invalid JSON"},
		{"config negative", false, "POST", "/admin/config", `{"phone_rate_limit_per_minute":-5}`, 400, "negative"},
		{"config bad type", false, "POST", "/admin/config", `{"country_code_as_number":"yes"}`, 400, "invalid JSON"},
		{"stats POST", false, "POST", "/admin/stats", ``, 405, "method"},
		{"stats reset GET", false, "GET", "/admin/stats/reset", ``, 405, "method"},
		{"unknown admin path", false, "GET", "/admin/nope", ``, 404, "not found"},
		{"admin root", false, "GET", "/admin/", ``, 404, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) {
				if tt.single {
					o.Apps = o.Apps[:1]
				}
			})
			var out struct {
				Error string `json:"error"`
			}
			status := admin(t, s, tt.method, tt.target, tt.body, &out)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d (error %q)", status, tt.wantStatus, out.Error)
			}
			if tt.wantErr != "" && !strings.Contains(out.Error, tt.wantErr) {
				t.Fatalf("error %q, want it to contain %q", out.Error, tt.wantErr)
			}
			if tt.wantErr == "" && out.Error != "" {
				t.Fatalf("unexpected error %q", out.Error)
			}
		})
	}
}

func TestAdminMethodNotAllowedHeader(t *testing.T) {
	s := newTestServer(t, nil)
	rec := serve(s, http.MethodPatch, "/admin/faults", "")
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, POST, DELETE" {
		t.Fatalf("%d Allow=%q", rec.Code, rec.Header().Get("Allow"))
	}
}

// TestAdminEndToEnd drives a whole flow through the admin HTTP API only.
func TestAdminEndToEnd(t *testing.T) {
	s := newTestServer(t, nil)

	var pc struct {
		Code      string `json:"code"`
		ExpiresIn int    `json:"expires_in"`
	}
	if st := admin(t, s, "POST", "/admin/phone-codes", `{"appid":"`+appA+`","purePhoneNumber":"91234567","countryCode":"852"}`, &pc); st != 200 {
		t.Fatalf("phone-codes %d", st)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(pc.Code) || pc.ExpiresIn != 300 {
		t.Fatalf("phone code answer %+v", pc)
	}

	var lc map[string]string
	admin(t, s, "POST", "/admin/login-codes", `{"appid":"`+appB+`","openid":"oUser1","unionid":"oUnion1"}`, &lc)
	if lc["openid"] != "oUser1" || lc["unionid"] != "oUnion1" || len(lc["code"]) != 32 || lc["session_key"] == "" {
		t.Fatalf("login code answer %v", lc)
	}

	var lp map[string]string
	admin(t, s, "POST", "/admin/legacy-payloads", `{"appid":"`+appB+`","session_key":"`+lc["session_key"]+`","purePhoneNumber":"13800138000"}`, &lp)
	if pt, err := decryptLegacy(lp["session_key"], lp["iv"], lp["encryptedData"]); err != nil || !strings.Contains(string(pt), `"appid":"`+appB+`"`) {
		t.Fatalf("legacy payload %v: %v", lp, err)
	}

	// Config: number country codes and a rate limit.
	var cfg map[string]any
	admin(t, s, "POST", "/admin/config", `{"country_code_as_number":true,"phone_rate_limit_per_minute":7}`, &cfg)
	if cfg["country_code_as_number"] != true || cfg["phone_rate_limit_per_minute"] != float64(7) {
		t.Fatalf("config %v", cfg)
	}
	admin(t, s, "GET", "/admin/config", ``, &cfg)
	if cfg["phone_rate_limit_per_minute"] != float64(7) {
		t.Fatalf("config GET %v", cfg)
	}

	tok := classicToken(t, s, appA, secretA)
	r := wx(t, s, "POST", phoneURL(tok), codeBody(pc.Code))
	if r.Errcode != 0 || string(r.PhoneInfo.CountryCode) != "852" || r.PhoneInfo.PhoneNumber != "+852 91234567" {
		t.Fatalf("phone answer %s", r.body)
	}

	// Tokens listing and revocation.
	var toks struct {
		Tokens []string `json:"tokens"`
	}
	admin(t, s, "GET", "/admin/tokens?appid="+appA, ``, &toks)
	if !slices.Equal(toks.Tokens, []string{tok}) {
		t.Fatalf("tokens %v", toks.Tokens)
	}
	var rv struct {
		Revoked int `json:"revoked"`
	}
	admin(t, s, "POST", "/admin/revoke-tokens", `{"appid":"`+appA+`"}`, &rv)
	if rv.Revoked != 1 {
		t.Fatalf("revoked %d", rv.Revoked)
	}
	admin(t, s, "GET", "/admin/tokens", ``, &toks)
	if toks.Tokens == nil || len(toks.Tokens) != 0 {
		t.Fatalf("tokens after revoke %v", toks.Tokens)
	}

	// Faults: add, list, clear.
	var fid struct {
		ID string `json:"id"`
	}
	admin(t, s, "POST", "/admin/faults", `{"endpoint":"token","appid":"`+appA+`","kind":"errcode","errcode":-1,"count":2}`, &fid)
	var fl struct {
		Faults []Fault `json:"faults"`
	}
	admin(t, s, "GET", "/admin/faults", ``, &fl)
	if len(fl.Faults) != 1 || fl.Faults[0].ID != fid.ID || fl.Faults[0].Remaining != 2 || fl.Faults[0].AppID != appA {
		t.Fatalf("faults %+v", fl.Faults)
	}
	if r := wx(t, s, "GET", tokenURL(appA, secretA), ""); r.Errcode != -1 {
		t.Fatalf("faulted token %s", r.body)
	}
	admin(t, s, "DELETE", "/admin/faults", ``, nil)
	admin(t, s, "GET", "/admin/faults", ``, &fl)
	if fl.Faults == nil || len(fl.Faults) != 0 {
		t.Fatalf("faults after clear %+v", fl.Faults)
	}

	// Apps.
	admin(t, s, "POST", "/admin/apps", `{"appid":"wxnew","secret":"newsecret"}`, nil)
	var apps struct {
		Apps []string `json:"apps"`
	}
	admin(t, s, "GET", "/admin/apps", ``, &apps)
	if !slices.Equal(apps.Apps, []string{appA, appB, "wxnew"}) {
		t.Fatalf("apps %v", apps.Apps)
	}
	if r := wx(t, s, "GET", tokenURL("wxnew", "newsecret"), ""); r.Errcode != 0 {
		t.Fatalf("new app token %s", r.body)
	}

	// Clock.
	var ck struct {
		Now           int64   `json:"now"`
		NowRFC3339    string  `json:"now_rfc3339"`
		OffsetSeconds float64 `json:"offset_seconds"`
	}
	admin(t, s, "POST", "/admin/clock", `{"advance_seconds":90.5}`, &ck)
	if ck.Now != baseTime.Unix()+90 || ck.OffsetSeconds != 90.5 {
		t.Fatalf("clock %+v", ck)
	}
	admin(t, s, "GET", "/admin/clock", ``, &ck)
	if ck.NowRFC3339 != "2025-06-01T10:01:30.5Z" {
		t.Fatalf("clock GET %+v", ck)
	}
	// The advanced clock applies: a code minted now expires 5 min later.
	code := mintPhone(t, s, appA, "13800138000")
	admin(t, s, "POST", "/admin/clock", `{"advance_seconds":301}`, nil)
	tok = classicToken(t, s, appA, secretA)
	if r := wx(t, s, "POST", phoneURL(tok), codeBody(code)); r.Errcode != 40029 {
		t.Fatalf("expired code %s", r.body)
	}

	// Stats and reset.
	var st Stats
	admin(t, s, "GET", "/admin/stats", ``, &st)
	if st.Endpoints.Token.Calls != 4 || st.Endpoints.Phone.ByErrcode[40029] != 1 || st.Apps[appA].TokenFetches != 2 {
		t.Fatalf("stats %+v", st)
	}
	admin(t, s, "POST", "/admin/stats/reset", ``, nil)
	var st2 Stats // fresh: decoding merges into existing maps
	admin(t, s, "GET", "/admin/stats", ``, &st2)
	if st2.Endpoints.Token.Calls != 0 || len(st2.Endpoints.Token.ByErrcode) != 0 || len(st2.Codes) != 0 || st2.Apps[appA].TokenFetches != 0 {
		t.Fatalf("stats after reset %+v", st2)
	}
}

func TestStatsJSONShape(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-" })
	tok := classicToken(t, s, appA, secretA)
	wx(t, s, "GET", tokenURL(appA, "wrong"), "")
	stableToken(t, s, appA, secretA, false)
	stableToken(t, s, appA, secretA, true)
	code := mintPhone(t, s, appA, "13800138000")
	wx(t, s, "POST", phoneURL(tok), codeBody(code))
	wx(t, s, "POST", phoneURL(tok), codeBody(code))
	wx(t, s, "POST", phoneURL(tok), codeBody("garbage"))
	wx(t, s, "POST", phoneURL(tok), codeBody("load-1"))
	lc, _ := s.MintLoginCode(LoginGrant{AppID: appA})
	wx(t, s, "GET", sessionURL(appA, secretA, lc.Code), "")
	wx(t, s, "GET", sessionURL(appA, secretA, lc.Code), "")

	rec := serve(s, "GET", "/admin/stats", "")
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	get := func(path ...string) any {
		var v any = raw
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	tests := []struct {
		path []string
		want any
	}{
		{[]string{"endpoints", "token", "calls"}, 2.0},
		{[]string{"endpoints", "token", "by_errcode", "0"}, 1.0},
		{[]string{"endpoints", "token", "by_errcode", "40125"}, 1.0},
		{[]string{"endpoints", "stable_token", "calls"}, 2.0},
		{[]string{"endpoints", "stable_token", "normal"}, 1.0},
		{[]string{"endpoints", "stable_token", "force"}, 1.0},
		{[]string{"endpoints", "phone", "calls"}, 4.0},
		{[]string{"endpoints", "phone", "by_errcode", "0"}, 2.0},
		{[]string{"endpoints", "phone", "by_errcode", "40029"}, 2.0},
		{[]string{"endpoints", "jscode2session", "by_errcode", "40163"}, 1.0},
		{[]string{"codes", code, "calls"}, 2.0},
		{[]string{"codes", code, "answered"}, 1.0},
		{[]string{"codes", "load-1", "answered"}, 1.0},
		{[]string{"codes", "garbage"}, nil},
		{[]string{"codes", lc.Code, "calls"}, 2.0},
		{[]string{"codes", lc.Code, "answered"}, 1.0},
		{[]string{"apps", appA, "token_fetches"}, 1.0},
		{[]string{"apps", appA, "stable_normal"}, 1.0},
		{[]string{"apps", appA, "stable_force"}, 1.0},
		{[]string{"apps", appA, "tokens_minted"}, 3.0},
		{[]string{"apps", appB, "tokens_minted"}, 0.0},
	}
	for _, tt := range tests {
		if got := get(tt.path...); got != tt.want {
			t.Errorf("%v = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestStatsAfterResetStillTracksMintedCodes(t *testing.T) {
	s := newTestServer(t, nil)
	tok := classicToken(t, s, appA, secretA)
	code := mintPhone(t, s, appA, "13800138000")
	s.ResetStats()
	wx(t, s, "POST", phoneURL(tok), codeBody(code))
	if c := s.Stats().Codes[code]; c.Calls != 1 || c.Answered != 1 {
		t.Fatalf("stats %+v", c)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	s := newTestServer(t, nil)
	tests := []struct {
		method, target string
		want           int
	}{
		{"GET", "/", 404},
		{"GET", "/cgi-bin/token/", 404},
		{"GET", "/cgi-bin/tokenx", 404},
		{"POST", "/wxa/business/getuserphonenumber/", 404},
		{"HEAD", "/nope", 404},
		{"OPTIONS", "/admin", 404},
		{"GET", "/admin", 404},
	}
	for _, tt := range tests {
		if rec := serve(s, tt.method, tt.target, ""); rec.Code != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.target, rec.Code, tt.want)
		}
	}
	if st := s.Stats().Endpoints; st.Token.Calls+st.Phone.Calls != 0 {
		t.Error("404s counted as endpoint calls")
	}
}

func TestNewValidation(t *testing.T) {
	ok := []App{{appA, secretA}}
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"minimal", Options{Apps: ok}, true},
		{"no apps", Options{}, false},
		{"duplicate app", Options{Apps: []App{{appA, "x"}, {appA, "y"}}}, false},
		{"empty secret", Options{Apps: []App{{appA, ""}}}, false},
		{"bad appid", Options{Apps: []App{{"wx/a", "x"}}}, false},
		{"negative ttl", Options{Apps: ok, TokenTTL: -1}, false},
		{"negative classic limit", Options{Apps: ok, ClassicDailyLimit: -1}, false},
		{"negative force limit", Options{Apps: ok, StableForceDailyLimit: -1}, false},
		{"negative interval", Options{Apps: ok, StableForceInterval: -time.Second}, false},
		{"negative phone limit", Options{Apps: ok, PhoneRateLimit: -1}, false},
		{"load prefix too long", Options{Apps: ok, LoadPrefix: strings.Repeat("x", MaxLoadCodeLen+1)}, false},
		{"custom ttl", Options{Apps: ok, TokenTTL: time.Hour}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if s != nil && tt.opts.TokenTTL == time.Hour {
				r := wx(t, s, "GET", tokenURL(appA, secretA), "")
				if r.ExpiresIn != 3600 {
					t.Fatalf("expires_in %d", r.ExpiresIn)
				}
			}
		})
	}
}

func TestAdvanceIgnoresNegative(t *testing.T) {
	s := newTestServer(t, nil)
	s.Advance(-time.Hour)
	if !s.Now().Equal(baseTime) {
		t.Fatal("clock moved backwards")
	}
	s.Advance(time.Hour)
	if !s.Now().Equal(baseTime.Add(time.Hour)) {
		t.Fatal("clock did not advance")
	}
}
