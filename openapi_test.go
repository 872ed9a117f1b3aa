package wxphone

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wxphone/wxphone/wxmock"
)

func TestAPIQuota(t *testing.T) {
	e := newSrvEnv(t, func(o *wxmock.Options) {
		o.QuotaDailyLimits = map[string]int{wxmock.CGIPathPhone: 1000}
	})
	c := newTestClient(t, e.config(t))
	ctx := ctxTimeout(t, 10e9)
	for range 2 {
		if _, err := c.PhoneNumber(ctx, mintPhone(t, e.emu, testPhone)); err != nil {
			t.Fatal(err)
		}
	}
	q, err := c.APIQuota(ctx, CGIPathPhoneNumber)
	if err != nil {
		t.Fatal(err)
	}
	if q != (APIQuota{DailyLimit: 1000, Used: 2, Remain: 998}) {
		t.Errorf("quota %+v", q)
	}
	if q, err := c.APIQuota(ctx, CGIPathStableToken); err != nil || q.Used != 1 {
		t.Errorf("stable_token quota %+v, %v", q, err)
	}
	// WeChat's refusals are typed errors; bad input never reaches WeChat.
	var ae *APIError
	if _, err := c.APIQuota(ctx, "/cgi-bin/nope"); !errors.As(err, &ae) || ae.ErrCode != 76021 || ae.RID == "" {
		t.Errorf("unknown path: %v", err)
	}
	before := e.rec.count("/cgi-bin/openapi/quota/get")
	for _, bad := range []string{"", "wxa/business/getuserphonenumber", "/a b", "/x?access_token=1", strings.Repeat("/x", 200)} {
		if _, err := c.APIQuota(ctx, bad); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if n := e.rec.count("/cgi-bin/openapi/quota/get"); n != before {
		t.Errorf("bad input reached WeChat (%d calls)", n-before)
	}
}

// TestAPIQuotaTokenRetry: a rejected token is replaced once.
func TestAPIQuotaTokenRetry(t *testing.T) {
	e := newSrvEnv(t)
	c := newTestClient(t, e.config(t))
	ctx := ctxTimeout(t, 10e9)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.emu.RevokeTokens(testAppID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.APIQuota(ctx, CGIPathPhoneNumber); err != nil {
		t.Fatalf("after a revocation: %v", err)
	}
	if n := e.rec.count("/cgi-bin/openapi/quota/get"); n != 2 {
		t.Errorf("%d quota calls, want 2 (one rejected, one retried)", n)
	}
}

// TestRIDInfoMasked looks up the rid of a failed exchange and of a failed
// token fetch: WeChat's record carries the code, the token and the
// AppSecret; RIDInfo carries none of them.
func TestRIDInfoMasked(t *testing.T) {
	e := newSrvEnv(t)
	c := newTestClient(t, e.config(t))
	ctx := ctxTimeout(t, 10e9)
	const badCode = "0a1b2c3d4e5f-never-minted-code"
	_, err := c.PhoneNumber(ctx, badCode)
	var ae *APIError
	if !errors.As(err, &ae) || ae.ErrCode != 40029 || ae.RID == "" {
		t.Fatalf("exchange: %v", err)
	}
	info, err := c.RIDInfo(ctx, ae.RID)
	if err != nil {
		t.Fatal(err)
	}
	if info.RID != ae.RID || info.InvokeTime.IsZero() || info.ClientIP == "" {
		t.Errorf("info %+v", info)
	}
	if info.RequestBody != `{"code":"[REDACTED]"}` {
		t.Errorf("request body %q", info.RequestBody)
	}
	if info.RequestURL != "access_token=[REDACTED]" {
		t.Errorf("request url %q", info.RequestURL)
	}
	if !strings.Contains(info.ResponseBody, `"errcode":40029`) || !strings.Contains(info.ResponseBody, ae.RID) {
		t.Errorf("response body %q", info.ResponseBody)
	}

	// A stable_token call failing by a fault: its body holds the secret.
	addFault(t, e.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 40164, Count: 1})
	c2 := newTestClient(t, e.config(t))
	_, err = c2.TokenSource().Token(ctx)
	if !errors.As(err, &ae) || ae.ErrCode != 40164 {
		t.Fatalf("token fetch: %v", err)
	}
	info, err = c.RIDInfo(ctx, ae.RID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(info.RequestBody, testSecret) || !strings.Contains(info.RequestBody, `"secret":"[REDACTED]"`) || !strings.Contains(info.RequestBody, `"appid":"`+testAppID+`"`) {
		t.Errorf("request body %q", info.RequestBody)
	}
	tok, _ := c.TokenSource().Token(ctx)
	for _, s := range []string{badCode, testSecret, tok.Value} {
		if strings.Contains(info.RequestURL+info.RequestBody+info.ResponseBody, s) {
			t.Errorf("a secret survived: %+v", info)
		}
	}

	// Errors: a malformed rid never leaves; WeChat's refusals are typed.
	for _, bad := range []string{"", "rid with spaces", strings.Repeat("a", 65), "ünï"} {
		if _, err := c.RIDInfo(ctx, bad); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := c.RIDInfo(ctx, "00000000-00000000-00000000"); !errors.As(err, &ae) || ae.ErrCode != 76001 {
		t.Errorf("unknown rid: %v", err)
	}
}

func TestMaskBody(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, ``},
		{`{"code":"abc"}`, `{"code":"[REDACTED]"}`},
		{` {"Code" : "abc", "n": 1} `, `{"Code":"[REDACTED]","n":1}`},
		{`{"grant_type":"client_credential","appid":"wx1","secret":"s","force_refresh":false}`,
			`{"grant_type":"client_credential","appid":"wx1","secret":"[REDACTED]","force_refresh":false}`},
		{`{"errcode":0,"phone_info":{"phoneNumber":"+86 13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1477314187,"appid":"wx1"}}}`,
			`{"errcode":0,"phone_info":{"phoneNumber":"+86 138****8000","purePhoneNumber":"138****8000","countryCode":"86","watermark":{"timestamp":1477314187,"appid":"wx1"}}}`},
		{`{"list":["13800138000","ok",13800138000,null,true]}`, `{"list":["138****8000","ok","138****8000",null,true]}`},
		{`{"access_token":{"nested":"x"},"iv":[1,2],"after":1}`, `{"access_token":"[REDACTED]","iv":"[REDACTED]","after":1}`},
		{`{"encryptedData":"AAAA","session_key":12345}`, `{"encryptedData":"[REDACTED]","session_key":"[REDACTED]"}`},
		{`[]`, `[]`},
		{`{}`, `{}`},
		{`"13800138000"`, `"138****8000"`},
		{`code=abc`, `[withheld: 8 bytes that are not JSON]`},
		{`{"a":1}{"b":2}`, `[withheld: 14 bytes that are not JSON]`},
		{`{"a":`, `[withheld: 5 bytes that are not JSON]`},
	}
	for _, tc := range tests {
		if got := maskBody(tc.in); got != tc.want {
			t.Errorf("maskBody(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestMaskQuery(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"access_token=abc&cgi_path=%2Fwxa%2Fx", "access_token=[REDACTED]&cgi_path=%2Fwxa%2Fx"},
		{"/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=s3", "/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=[REDACTED]"},
		{"appid=wx1&js_code=c&SECRET=x", "appid=wx1&js_code=[REDACTED]&SECRET=[REDACTED]"},
		{"mobile=13800138000&x=%zz", "mobile=138%2A%2A%2A%2A8000&x=[REDACTED]"},
		{"/wxa/business/getuserphonenumber", "/wxa/business/getuserphonenumber"},
	}
	for _, tc := range tests {
		if got := maskQuery(tc.in); got != tc.want {
			t.Errorf("maskQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzMaskBody: masking never panics, never passes a secret field's value
// through, and never returns invalid JSON for a JSON input.
func FuzzMaskBody(f *testing.F) {
	for _, s := range []string{`{"code":"abc"}`, `[1,"2",{"secret":"x"}]`, `"x"`, `{"a":{"b":[{"code":["q"]}]}}`, `nope`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := maskBody(in)
		if strings.HasPrefix(out, "[withheld") {
			return
		}
		if out == "" {
			return
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("maskBody(%q) = %q: not JSON", in, out)
		}
		var walk func(any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, e := range x {
					if secretFields[strings.ToLower(k)] && e != "[REDACTED]" {
						t.Fatalf("maskBody(%q) = %q: %s passed through", in, out, k)
					}
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(v)
	})
}
