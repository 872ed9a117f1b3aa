package silenceper

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/miniprogram"
	"github.com/silenceper/wechat/v2/miniprogram/auth"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/replica"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	appID     = "wxsdkcheck000001"
	appSecret = "sdk-check-secret-0123456789"
	phoneKey  = "sdk-check-phone-key-0123456789"
	tokenKey  = "sdk-check-token-key-0123456789"
)

// counting counts the requests to each wxphone path.
type counting struct {
	next  http.RoundTripper
	paths map[string]*atomic.Int64
}

func (c counting) RoundTrip(r *http.Request) (*http.Response, error) {
	if n := c.paths[r.URL.Path]; n != nil {
		n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestRecipe runs the recipe with silenceper/wechat v2 against the
// emulator and `wxphone serve` (its wiring, in process): an exchange, an
// exchange after every token was revoked (40001, one invalidate, one
// retry), and a token WeChat keeps rejecting (one invalidate, one retry,
// then the error; the code was not used and works afterwards).
func TestRecipe(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appID, Secret: appSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	emuTS := httptest.NewServer(emu)
	defer emuTS.Close()

	// wxphone serve, wired from its environment as the command does.
	env := map[string]string{
		"WX_APPID": appID, "WX_SECRET": appSecret, "WX_API_BASE": emuTS.URL,
		"WXPHONE_API_KEYS": phoneKey, "WXPHONE_TOKEN_API_KEYS": tokenKey,
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := replica.Build(ctx, cfg, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Server.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// The SDK sends WeChat calls to the emulator instead of
	// api.weixin.qq.com (a package-level setting of the SDK).
	util.SetURIModifier(func(uri string) string {
		return strings.Replace(uri, "https://api.weixin.qq.com", emuTS.URL, 1)
	})
	defer util.SetURIModifier(nil)

	calls := counting{next: http.DefaultTransport, paths: map[string]*atomic.Int64{
		"/v1/access-token": {}, "/v1/access-token/invalidate": {},
	}}
	h := &Handle{Base: "http://" + ln.Addr().String(), AppID: appID, Key: tokenKey, HTTP: &http.Client{Transport: calls, Timeout: 10 * time.Second}}
	// No AppSecret: the SDK could not fetch a token itself even if it
	// tried.
	mp := miniprogram.NewMiniProgram(&mpconfig.Config{AppID: appID, Cache: cache.NewMemory()})
	mp.SetAccessTokenContextHandle(h)
	phone := func(code string) (*auth.GetPhoneNumberResponse, error) {
		return Retry(ctx, h, func(ctx context.Context) (*auth.GetPhoneNumberResponse, error) {
			return mp.GetAuth().GetPhoneNumberContext(ctx, code)
		})
	}
	mint := func(pure string) string {
		code, err := emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appID, PurePhoneNumber: pure})
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	phoneCalls := func() int64 { return emu.Stats().Endpoints.Phone.Calls }

	// 1. A plain exchange with wxphone's token.
	res, err := phone(mint("13900000001"))
	if err != nil || res.PhoneInfo.PurePhoneNumber != "13900000001" {
		t.Fatalf("exchange: %+v, %v", res, err)
	}
	if n := calls.paths["/v1/access-token"].Load(); n != 1 {
		t.Errorf("GET /v1/access-token called %d times, want 1", n)
	}

	// 2. Every token revoked: WeChat answers 40001, the wrapper reports
	// the token, wxphone fetches a new one, the retry succeeds.
	if n, err := emu.RevokeTokens(appID); err != nil || n == 0 {
		t.Fatalf("revoke: %d, %v", n, err)
	}
	before := phoneCalls()
	res, err = phone(mint("13900000002"))
	if err != nil || res.PhoneInfo.PurePhoneNumber != "13900000002" {
		t.Fatalf("exchange after the revoke: %+v, %v", res, err)
	}
	if n := calls.paths["/v1/access-token/invalidate"].Load(); n != 1 {
		t.Errorf("invalidate called %d times, want 1", n)
	}
	if n := phoneCalls() - before; n != 2 {
		t.Errorf("%d phone calls after the revoke, want 2 (40001, then the retry)", n)
	}

	// 3. WeChat keeps rejecting the token: one invalidate, one retry, then
	// the 40001 is returned (no loop). The code was not used.
	if _, err := emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001, Count: 2}); err != nil {
		t.Fatal(err)
	}
	code := mint("13900000003")
	before = phoneCalls()
	_, err = phone(code)
	var ce *util.CommonError
	if !errors.As(err, &ce) || ce.ErrCode != 40001 {
		t.Fatalf("a token rejected twice: %v, want the 40001", err)
	}
	if n := calls.paths["/v1/access-token/invalidate"].Load(); n != 2 {
		t.Errorf("invalidate called %d times in all, want 2", n)
	}
	if n := phoneCalls() - before; n != 2 {
		t.Errorf("%d phone calls, want 2", n)
	}
	if res, err := phone(code); err != nil || res.PhoneInfo.PurePhoneNumber != "13900000003" {
		t.Errorf("the code after the faults: %+v, %v", res, err)
	}

	// The SDK never fetched a token from WeChat: the only fetches are
	// wxphone's stable_token calls.
	if st := emu.Stats().Endpoints; st.Token.Calls != 0 {
		t.Errorf("/cgi-bin/token called %d times", st.Token.Calls)
	}
}

// TestEndpointErrors: the handle surfaces wxphone's refusals typed, with
// Retry-After, and never with the key.
func TestEndpointErrors(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "42")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"token_unavailable","message":"No usable WeChat access token right now.","request_id":"r1"}}`))
	}))
	defer ts.Close()
	h := &Handle{Base: ts.URL, AppID: appID, Key: tokenKey}
	_, err := h.GetAccessTokenContext(context.Background())
	var ee *EndpointError
	if !errors.As(err, &ee) || ee.Status != 503 || ee.Code != "token_unavailable" || ee.RetryAfter != 42*time.Second {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), tokenKey) {
		t.Error("the error holds the key")
	}
}
