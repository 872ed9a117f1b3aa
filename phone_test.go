package wxphone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wxphone/wxphone/wxmock"
)

func TestPhoneNumberExchange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		grant    wxmock.PhoneGrant
		ccNumber bool
		want     PhoneInfo
	}{
		{
			name:  "mainland, countryCode string",
			grant: wxmock.PhoneGrant{PurePhoneNumber: testPhone},
			want:  PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, CountryCode: "86"},
		},
		{
			name:     "mainland, countryCode number",
			grant:    wxmock.PhoneGrant{PurePhoneNumber: testPhone},
			ccNumber: true,
			want:     PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, CountryCode: "86"},
		},
		{
			name:     "Hong Kong, countryCode number",
			grant:    wxmock.PhoneGrant{PurePhoneNumber: "51234567", CountryCode: "852"},
			ccNumber: true,
			want:     PhoneInfo{PhoneNumber: "+852 51234567", PurePhoneNumber: "51234567", CountryCode: "852"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t, func(o *wxmock.Options) { o.CountryCodeAsNumber = tt.ccNumber })
			c := newTestClient(t, env.config(t))
			code, err := env.emu.MintPhoneCode(tt.grant)
			if err != nil {
				t.Fatal(err)
			}
			granted := env.emu.Now().Unix()
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
			if err != nil {
				t.Fatalf("PhoneNumber: %v", err)
			}
			want := tt.want
			want.Watermark = Watermark{AppID: testAppID, Timestamp: granted}
			if diff := cmp.Diff(want, *got); diff != "" {
				t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
			}

			// The request as WeChat saw it.
			var phone []seenRequest
			for _, r := range env.rec.requests() {
				if r.Path == pathPhone {
					phone = append(phone, r)
				}
			}
			if len(phone) != 1 {
				t.Fatalf("phone requests = %d, want 1", len(phone))
			}
			r := phone[0]
			if r.Method != http.MethodPost {
				t.Errorf("method = %s, want POST", r.Method)
			}
			valid := env.emu.ValidTokens(testAppID)
			if len(valid) != 1 || r.Query != "access_token="+valid[0] {
				t.Errorf("query = %q, want access_token=<the valid token>", r.Query)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", r.Body, err)
			}
			if diff := cmp.Diff(map[string]any{"code": code}, body); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

// phoneStubBody answers a successful exchange for testAppID.
const phoneStubBody = `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`

func TestPhoneNumberLenientDecoding(t *testing.T) {
	t.Parallel()
	want := PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, CountryCode: "86", Watermark: Watermark{AppID: testAppID, Timestamp: 1637744274}}
	tests := []struct {
		name, ct, body string
		want           PhoneInfo
	}{
		{"text/plain content type", "text/plain", phoneStubBody, want},
		{"no content type", "", phoneStubBody, want},
		{"countryCode number", "application/json",
			`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"missing errcode and errmsg", "text/plain",
			`{"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"errcode as string", "text/plain",
			`{"errcode":"0","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"timestamp as string", "text/plain",
			`{"errcode":0,"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":"1637744274","appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"unknown fields everywhere", "text/plain",
			`{"errcode":0,"errmsg":"ok","new":[1,{"x":null}],"phone_info":{"extra":{"a":"b"},"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b","v":2}}}`, want},
		{"whitespace around body", "text/plain", "\r\n  " + phoneStubBody + "\n", want},
		{"escaped strings", "text/plain",
			`{"errcode":0,"phone_info":{"phoneNumber":"\u0031\u0033800138000","purePhoneNumber":"13800138000","countryCode":"\u0038\u0036","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"countryCode null", "text/plain",
			`{"errcode":0,"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":null,"watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`,
			PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, Watermark: want.Watermark}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, tt.ct, tt.body) })
			c := stubClient(t, stub.URL)
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			if err != nil {
				t.Fatalf("PhoneNumber: %v", err)
			}
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPhoneNumberMalformedAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		reason     string // substring of the DecodeError's reason
	}{
		{"empty body", "", "empty body"},
		{"whitespace body", " \n", "empty body"},
		{"truncated", phoneStubBody[:len(phoneStubBody)/2], "truncated"},
		{"truncated after brace", "{", "truncated"},
		{"HTML", "<html><body><h1>502 Bad Gateway</h1></body></html>", "HTML"},
		{"JSON array", `[{"errcode":0}]`, "not a JSON object"},
		{"plain text", "ok", "not a JSON object"},
		{"trailing garbage", phoneStubBody + "x", "invalid JSON"},
		{"errcode 0 without phone_info", `{"errcode":0,"errmsg":"ok"}`, "without phone_info"},
		{"phone_info null", `{"errcode":0,"errmsg":"ok","phone_info":null}`, "without phone_info"},
		{"phone_info without number", `{"errcode":0,"phone_info":{"countryCode":"86","watermark":{"appid":"wx4f4bc4dec97d474b"}}}`, "without a phone number"},
		{"phone_info wrong type", `{"errcode":0,"phone_info":"13800138000"}`, "unexpected field type"},
		{"phoneNumber wrong type", `{"errcode":0,"phone_info":{"phoneNumber":13800138000}}`, "unexpected field type"},
		{"countryCode object", `{"errcode":0,"phone_info":{"phoneNumber":"13800138000","countryCode":{}}}`, "invalid JSON"},
		{"errcode not a number", `{"errcode":"zero","phone_info":{"phoneNumber":"13800138000"}}`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", tt.body) })
			c := stubClient(t, stub.URL)
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			if err == nil || got != nil {
				t.Fatalf("PhoneNumber = %v, %v; want nil and an error", got, err)
			}
			if !errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("err = %v; want ErrOutcomeUnknown", err)
			}
			if !errors.Is(err, ErrMalformedResponse) {
				t.Errorf("err = %v; want ErrMalformedResponse", err)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Op != OpPhoneNumber || !strings.Contains(de.Reason, tt.reason) {
				t.Errorf("err = %#v; want a *DecodeError for %s with reason containing %q", err, OpPhoneNumber, tt.reason)
			}
			if strings.Contains(err.Error(), "13800138000") || strings.Contains(err.Error(), "138001") {
				t.Errorf("error quotes the body: %v", err)
			}
			if n := stub.calls.Load(); n != 1 {
				t.Errorf("upstream calls = %d, want exactly 1 (a possibly consumed code is never resent)", n)
			}
		})
	}
}

func TestPhoneNumberWatermarkMismatchFailsClosed(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, watermark, got string }{
		{"other appid", `{"timestamp":1637744274,"appid":"wx0000000000000000"}`, "wx0000000000000000"},
		{"appid missing", `{"timestamp":1637744274}`, ""},
		{"watermark missing", `null`, ""},
		{"appid case differs", `{"timestamp":1637744274,"appid":"WX4F4BC4DEC97D474B"}`, "WX4F4BC4DEC97D474B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":` + tt.watermark + `}}`
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", body) })
			c := stubClient(t, stub.URL)
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			if got != nil {
				t.Fatalf("got a result %v despite the watermark", got)
			}
			var we *WatermarkError
			if !errors.As(err, &we) || !errors.Is(err, ErrWatermarkMismatch) {
				t.Fatalf("err = %v; want *WatermarkError", err)
			}
			if we.Want != testAppID || we.Got != tt.got {
				t.Errorf("WatermarkError = %+v", we)
			}
			if strings.Contains(err.Error(), testPhone) {
				t.Errorf("error leaks the phone number: %v", err)
			}
		})
	}
}

func TestValidateCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, code string
		ok         bool
	}{
		{"real phone code", "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144", true},
		{"login code", "0a3Xk0000d5FMR1Jb0000ExZ5g0Xk00e", true},
		{"punctuation", `a"b\c<d>{}`, true},
		{"max length", strings.Repeat("a", MaxCodeLen), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxCodeLen+1), false},
		{"huge", strings.Repeat("a", 1<<20), false},
		{"space", "abc def", false},
		{"leading space", " abc", false},
		{"tab", "abc\tdef", false},
		{"newline", "abc\n", false},
		{"NUL", "abc\x00", false},
		{"DEL", "abc\x7f", false},
		{"non-ASCII", "abcé", false},
		{"full-width", "ａｂｃ", false},
		{"invalid UTF-8", "abc\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateCode(tt.code)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateCode: %v", err)
				}
				return
			}
			var ie *InputError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidInput) || ie.Field != "code" {
				t.Fatalf("ValidateCode = %v; want an *InputError for field code", err)
			}
			if len(tt.code) >= 3 && strings.Contains(err.Error(), tt.code) {
				t.Errorf("error contains the code: %v", err)
			}
		})
	}
}

func TestBadCodesNeverReachWeChat(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := newTestClient(t, env.config(t))
	ctx := ctxTimeout(t, 10*time.Second)
	bad := []string{"", strings.Repeat("x", MaxCodeLen+1), "has space", "ctl\x01", "non-ascii-é", "nul\x00"}
	for _, code := range bad {
		if p, err := c.PhoneNumber(ctx, code); p != nil || !errors.Is(err, ErrInvalidInput) {
			t.Errorf("PhoneNumber(%q) = %v, %v; want ErrInvalidInput", code, p, err)
		}
		if s, err := c.Code2Session(ctx, code); s != nil || !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Code2Session(%q) = %v, %v; want ErrInvalidInput", code, s, err)
		}
	}
	// Not even a token fetch: the code is checked before anything else.
	if n := len(env.rec.requests()); n != 0 {
		t.Errorf("upstream requests = %d, want 0", n)
	}
}

func TestPhoneBodyIsValidJSON(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"abc", `a"b`, `a\b`, `\"\\"`, "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144", "<>&'"} {
		var v struct{ Code string }
		if err := json.Unmarshal(phoneBody(code, ""), &v); err != nil || v.Code != code {
			t.Errorf("phoneBody(%q) = %s: decodes to %q, %v", code, phoneBody(code, ""), v.Code, err)
		}
	}
}

var ridRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$`)

// TestPhoneNumberErrcodes drives every documented errcode through the
// emulator and checks its typed error and sentinel.
func TestPhoneNumberErrcodes(t *testing.T) {
	t.Parallel()
	all := []error{ErrInvalidCode, ErrAppIDMismatch, ErrRateLimited, ErrSystemBusy, ErrTokenInvalid, ErrOutcomeUnknown, ErrTokenFetchRefused, ErrQuotaExhausted}
	tests := []struct {
		name    string
		errcode int
		want    error // the one sentinel of all that must match
	}{
		{"invalid code", 40029, ErrInvalidCode},
		{"appid mismatch", 40013, ErrAppIDMismatch},
		{"rate limited", 45011, ErrRateLimited},
		{"token invalid 40001", 40001, ErrTokenInvalid},
		{"token invalid 40014", 40014, ErrTokenInvalid},
		{"token expired 42001", 42001, ErrTokenInvalid},
		{"token missing 41001", 41001, ErrTokenInvalid},
		{"undocumented 48001", 48001, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newSrvEnv(t)
			c := newTestClient(t, env.config(t))
			ctx := ctxTimeout(t, 10*time.Second)
			if err := c.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			// Persistent fault: the token retry, if any, sees it too.
			addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: tt.errcode})
			p, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
			if p != nil || err == nil {
				t.Fatalf("PhoneNumber = %v, %v; want an error", p, err)
			}
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v; want an *APIError", err)
			}
			if ae.ErrCode != tt.errcode || ae.Op != OpPhoneNumber || ae.ErrMsg == "" || !ridRE.MatchString(ae.RID) {
				t.Errorf("APIError = %+v; want errcode %d, an errmsg and a rid", ae, tt.errcode)
			}
			if !strings.Contains(ae.ErrMsg, "rid: "+ae.RID) {
				t.Errorf("rid %q not taken from errmsg %q", ae.RID, ae.ErrMsg)
			}
			for _, s := range all {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(err, %v) = %v", s, got)
				}
			}
			if d, ok := RetryAfter(err); ok != (tt.errcode == 45011) || (ok && d != time.Minute) {
				t.Errorf("RetryAfter = %v, %v", d, ok)
			}
		})
	}
}

func TestAppIDMismatchThroughEmulator(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t, func(o *wxmock.Options) {
		o.Apps = append(o.Apps, wxmock.App{AppID: "wxotherapp0000001", Secret: "other-secret"})
	})
	c := newTestClient(t, env.config(t))
	code, err := env.emu.MintPhoneCode(wxmock.PhoneGrant{AppID: "wxotherapp0000001", PurePhoneNumber: testPhone})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
	if !errors.Is(err, ErrAppIDMismatch) || errors.Is(err, ErrTokenFetchRefused) {
		t.Fatalf("err = %v; want ErrAppIDMismatch only", err)
	}
}

func TestAPIErrorIs(t *testing.T) {
	t.Parallel()
	sentinels := map[string]error{
		"ErrInvalidCode": ErrInvalidCode, "ErrAppIDMismatch": ErrAppIDMismatch, "ErrRateLimited": ErrRateLimited,
		"ErrSystemBusy": ErrSystemBusy, "ErrTokenInvalid": ErrTokenInvalid, "ErrTokenFetchRefused": ErrTokenFetchRefused,
		"ErrQuotaExhausted": ErrQuotaExhausted, "ErrOutcomeUnknown": ErrOutcomeUnknown,
	}
	tests := []struct {
		op   string
		code int
		want []string
	}{
		{OpPhoneNumber, 40029, []string{"ErrInvalidCode"}},
		{OpPhoneNumber, 40013, []string{"ErrAppIDMismatch"}},
		{OpPhoneNumber, 45011, []string{"ErrRateLimited"}},
		{OpPhoneNumber, -1, []string{"ErrSystemBusy"}},
		{OpPhoneNumber, 40001, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 40014, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 42001, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 41001, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 40163, nil},
		{OpPhoneNumber, 47001, nil},
		{OpCode2Session, 40029, []string{"ErrInvalidCode"}},
		{OpCode2Session, 40163, []string{"ErrInvalidCode"}},
		{OpCode2Session, -1, []string{"ErrSystemBusy"}},
		{OpStableToken, 40013, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 40125, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 40164, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 40243, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 45009, []string{"ErrTokenFetchRefused", "ErrQuotaExhausted"}},
		{OpStableToken, 89503, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, -1, []string{"ErrSystemBusy"}},
		{OpStableToken, 45011, []string{"ErrRateLimited"}},
		{OpToken, 40001, []string{"ErrTokenFetchRefused"}},
		{OpToken, 40164, []string{"ErrTokenFetchRefused"}},
		{OpToken, 45009, []string{"ErrTokenFetchRefused", "ErrQuotaExhausted"}},
	}
	for _, tt := range tests {
		err := error(&APIError{Op: tt.op, ErrCode: tt.code})
		for name, s := range sentinels {
			want := false
			for _, w := range tt.want {
				want = want || w == name
			}
			if got := errors.Is(err, s); got != want {
				t.Errorf("%s errcode %d: errors.Is(%s) = %v, want %v", tt.op, tt.code, name, got, want)
			}
		}
	}
}

func TestParseRID(t *testing.T) {
	t.Parallel()
	tests := []struct{ msg, want string }{
		{"invalid code hint: [hElexSDNRa-XiBFgA] rid: 632d16be-15ad5486-1e378de4", "632d16be-15ad5486-1e378de4"},
		{"invalid code, hints: [ req_id: GEbaO6yFe-g8Msfa ]", "GEbaO6yFe-g8Msfa"},
		{"code been used, hints: [ req_id: abc123 ]", "abc123"},
		{"access_token missing rid: 66739825-2e4f4a1d-0f8e7b6a", "66739825-2e4f4a1d-0f8e7b6a"},
		{"rid:nospace", "nospace"},
		{"system error", ""},
		{"rid: ", ""},
		{"req_id: ]", ""},
		{"", ""},
		{"rid: " + strings.Repeat("a", 100), strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		if got := parseRID(tt.msg); got != tt.want {
			t.Errorf("parseRID(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

// TestAPIErrorFromStub covers rid formats the emulator does not produce and
// the scrubbing of echoed secrets.
func TestAPIErrorFromStub(t *testing.T) {
	t.Parallel()
	const code = "code-0123456789abcdef"
	tests := []struct {
		name, body string
		errcode    int
		rid        string
		sentinel   error
	}{
		{"req_id format", `{"errcode":40029,"errmsg":"invalid code, hints: [ req_id: GEbaO6yFe-g8Msfa ]"}`, 40029, "GEbaO6yFe-g8Msfa", ErrInvalidCode},
		{"rid format", `{"errcode":45011,"errmsg":"api minute-quota reach limit mustslower retry next minute rid: 632d16be-15ad5486-1e378de4"}`, 45011, "632d16be-15ad5486-1e378de4", ErrRateLimited},
		{"errcode as string", `{"errcode":"40029","errmsg":"invalid code"}`, 40029, "", ErrInvalidCode},
		{"echoes code and token", `{"errcode":40029,"errmsg":"invalid code ` + code + ` for STATIC-TOKEN-0123456789 rid: 1-2-3"}`, 40029, "1-2-3", ErrInvalidCode},
		{"control characters", "{\"errcode\":40029,\"errmsg\":\"bad\\n\\u0000code\"}", 40029, "", ErrInvalidCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", tt.body) })
			c := stubClient(t, stub.URL)
			_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
			var ae *APIError
			if !errors.As(err, &ae) || ae.ErrCode != tt.errcode || ae.RID != tt.rid || !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %#v; want APIError %d rid %q", err, tt.errcode, tt.rid)
			}
			if s := err.Error(); strings.Contains(s, code) || strings.Contains(s, "STATIC-TOKEN") || strings.ContainsAny(s, "\n\x00") {
				t.Errorf("error not sanitised: %q", s)
			}
		})
	}
}

func TestAPIErrorMessageBounded(t *testing.T) {
	t.Parallel()
	msg := sanitizeMsg(strings.Repeat("é", 1000))
	if n := len(msg); n > maxErrMsg+8 {
		t.Errorf("sanitized message is %d bytes", n)
	}
	if !strings.HasSuffix(msg, "…") {
		t.Errorf("truncated message lacks an ellipsis: %q", msg[len(msg)-8:])
	}
}

func TestPhoneNumberNoInvalidatorReturnsTokenError(t *testing.T) {
	t.Parallel()
	stub := newStub(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "text/plain", `{"errcode":40001,"errmsg":"invalid credential rid: a-b-c"}`)
	})
	c := stubClient(t, stub.URL)
	_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
	if !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("err = %v; want ErrTokenInvalid", err)
	}
	if n := stub.calls.Load(); n != 1 {
		t.Errorf("calls = %d; a static token source cannot be refreshed, so want 1", n)
	}
}

func TestNilResultNeverWithNilError(t *testing.T) {
	t.Parallel()
	// Every shape of "success" without usable data.
	bodies := []string{`{}`, `{"errcode":0}`, `{"phone_info":{}}`, `{"phone_info":null}`, `{"phone_info":{"watermark":{"appid":"wx4f4bc4dec97d474b"}}}`}
	for _, body := range bodies {
		stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", body) })
		c := stubClient(t, stub.URL)
		p, err := c.PhoneNumber(context.Background(), "code-0123456789abcdef")
		if (p == nil) == (err == nil) {
			t.Errorf("body %s: PhoneNumber = %v, %v", body, p, err)
		}
	}
}

func TestHTTPStatusErrors(t *testing.T) {
	t.Parallel()
	for _, status := range []int{301, 400, 404, 429, 500, 502, 503, 504} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) {
				if status == 301 {
					w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
				}
				w.WriteHeader(status)
				_, _ = io.WriteString(w, "<html>gateway</html>")
			})
			c := stubClient(t, stub.URL)
			_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			var he *HTTPError
			if !errors.As(err, &he) || he.StatusCode != status || !errors.Is(err, ErrUpstream) {
				t.Fatalf("err = %v; want *HTTPError %d", err, status)
			}
			if got, want := errors.Is(err, ErrOutcomeUnknown), status >= 500; got != want {
				t.Errorf("ErrOutcomeUnknown = %v, want %v", got, want)
			}
			if n := stub.calls.Load(); n != 1 {
				t.Errorf("calls = %d, want 1 (no resend, no redirect)", n)
			}
		})
	}
}

// TestFlexDecodingMatchesReference pins the hand-written fast paths to the
// behaviour of encoding/json and strconv they replace.
func TestFlexDecodingMatchesReference(t *testing.T) {
	t.Parallel()
	ints := []string{"0", "-0", "+5", "-5", "007", "1637744274", "999999999999999999", "-999999999999999999",
		"9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
		"12345678901234567890", "", "-", "+", "1.5", "1e3", "0x10", "1_000", " 1", "١٢٣"}
	for _, s := range ints {
		want, err := strconv.ParseInt(s, 10, 64)
		got, ok := parseInt64([]byte(s))
		if ok != (err == nil) || (ok && got != want) {
			t.Errorf("parseInt64(%q) = %d, %v; strconv says %d, %v", s, got, ok, want, err)
		}
	}
	strs := []string{`"86"`, `"852"`, `""`, `"\u0038\u0036"`, `"a\"b"`, `"a\\b"`, "\"\xff\"", `"中国"`, `86`, `-1`, `8.6e1`, `null`, `true`, `{}`, `[]`}
	for _, in := range strs {
		var got flexString
		gotErr := json.Unmarshal([]byte(in), &got)
		// Reference: json's own string decoding, or the number's text.
		var ref string
		var refErr error
		switch {
		case strings.HasPrefix(in, `"`):
			refErr = json.Unmarshal([]byte(in), &ref)
		case in == "null":
		case in == "true" || in == "{}" || in == "[]":
			refErr = errors.New("not a string or number")
		default:
			var n json.Number
			refErr = json.Unmarshal([]byte(in), &n)
			ref = n.String()
		}
		if (gotErr == nil) != (refErr == nil) || string(got) != ref {
			t.Errorf("flexString(%s) = %q, %v; want %q, %v", in, got, gotErr, ref, refErr)
		}
	}
	for in, want := range map[string]int64{`1637744274`: 1637744274, `"1637744274"`: 1637744274, `"\u0031"`: 1, `null`: 0, `-3`: -3} {
		var got flexInt
		if err := json.Unmarshal([]byte(in), &got); err != nil || int64(got) != want {
			t.Errorf("flexInt(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{`1.5`, `"x"`, `true`, `"1e3"`, `{}`} {
		var got flexInt
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("flexInt(%s) = %d; want an error", in, got)
		}
	}
}

func TestPhoneInfoUnmarshalJSON(t *testing.T) {
	t.Parallel()
	var p PhoneInfo
	in := `{"phoneNumber":"+852 51234567","purePhoneNumber":"51234567","countryCode":852,"watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":"1477314187"},"extra":1}`
	if err := json.Unmarshal([]byte(in), &p); err != nil {
		t.Fatal(err)
	}
	want := PhoneInfo{PhoneNumber: "+852 51234567", PurePhoneNumber: "51234567", CountryCode: "852", Watermark: Watermark{AppID: testAppID, Timestamp: 1477314187}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
	}
	if err := json.Unmarshal([]byte(`{"countryCode":true}`), &p); err == nil {
		t.Error("countryCode true accepted")
	}
}
