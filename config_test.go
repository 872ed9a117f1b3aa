package wxphone

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

func TestTokenOptionsValidation(t *testing.T) {
	t.Parallel()
	bad := []TokenOptions{
		{Margin: 10 * time.Second},
		{Margin: 301 * time.Second},
		{Classic: true, Margin: 2 * time.Hour},
		{ForceInterval: 10 * time.Second},
		{ForceDailyBudget: 20},
		{ForceDailyBudget: -1},
		{RefreshTimeout: -time.Second},
		{QuotaCooldown: -time.Second},
	}
	for _, o := range bad {
		if _, err := NewTokenManager(TokenConfig{AppID: testAppID, Secret: testSecret, Token: o}); err == nil {
			t.Errorf("NewTokenManager accepted %+v", o)
		}
	}
	good := []TokenOptions{{}, {Margin: 30 * time.Second}, {Classic: true, Margin: time.Hour}, {ForceDailyBudget: 19}, {ForceInterval: time.Minute}}
	for _, o := range good {
		m, err := NewTokenManager(TokenConfig{AppID: testAppID, Secret: testSecret, Token: o})
		if err != nil {
			t.Errorf("NewTokenManager(%+v): %v", o, err)
			continue
		}
		_ = m.Close()
	}
	for _, cfg := range []Config{
		{},
		{AppID: testAppID},                       // no secret, no token source
		{AppID: "has space", Secret: testSecret}, // bad appid
		{AppID: strings.Repeat("w", 65), Secret: testSecret},
		{AppID: testAppID, Secret: testSecret, BaseURL: "http://api.weixin.qq.com"},
	} {
		if c, err := New(cfg); err == nil {
			_ = c.Close()
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

// TestConfigH2C: with H2C the default client speaks HTTP/2 with prior
// knowledge to a loopback http:// emulator; without it, HTTP/1.1.
func TestConfigH2C(t *testing.T) {
	const appID, secret = "wx00000000000000h2", "h2c-secret-0123456789"
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appID, Secret: secret}}})
	if err != nil {
		t.Fatal(err)
	}
	var major atomic.Int32
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		major.Store(int32(r.ProtoMajor))
		emu.ServeHTTP(w, r)
	}))
	ts.Config.Protocols = new(http.Protocols)
	ts.Config.Protocols.SetHTTP1(true)
	ts.Config.Protocols.SetUnencryptedHTTP2(true)
	ts.Start()
	defer ts.Close()
	for _, tc := range []struct {
		h2c  bool
		want int32
	}{{false, 1}, {true, 2}} {
		c, err := New(Config{AppID: appID, Secret: secret, BaseURL: ts.URL, H2C: tc.h2c})
		if err != nil {
			t.Fatal(err)
		}
		code, err := emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appID, PurePhoneNumber: "13800138000"})
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.PhoneNumber(context.Background(), code)
		if err != nil {
			t.Fatalf("H2C %v: %v", tc.h2c, err)
		}
		if info.PurePhoneNumber.Reveal() != "13800138000" {
			t.Fatalf("H2C %v: number %v", tc.h2c, info.PurePhoneNumber)
		}
		if got := major.Load(); got != tc.want {
			t.Fatalf("H2C %v: the emulator saw HTTP/%d, want HTTP/%d", tc.h2c, got, tc.want)
		}
		_ = c.Close()
	}
}
