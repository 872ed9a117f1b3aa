package replica

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/goleak"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/wxmock"
)

// TestBuildCloseLeavesNoGoroutines wires a fleet-mode replica on miniredis
// (Redis token store and lock, replay store, rate limiter, fallbacks), and
// checks that neither Build+Close nor Build+Run+Close leaves a goroutine
// behind. Not parallel: goleak looks at the whole process (goroutines of
// paused parallel tests are ignored).
func TestBuildCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		t.Fatal(err)
	}
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: "wxleak0000000001", Secret: "leak-secret-0123456789"}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	env := map[string]string{
		"WX_APPID": "wxleak0000000001", "WX_SECRET": "leak-secret-0123456789", "WX_API_BASE": ets.URL,
		"WXPHONE_API_KEYS": "leak-api-key-0123456789", "WXPHONE_RATE_LIMIT": "100",
		"WXPHONE_DATA_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
		"REDIS_URL":        "redis://" + mr.Addr() + "/0", "WXPHONE_SHUTDOWN_TIMEOUT": "10s",
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Client{Transport: &http.Transport{}}
	ctx := context.Background()

	// Built and closed without running.
	r, err := Build(ctx, cfg, Options{HTTPClient: up, NoWarm: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Service.Warm(ctx); err != nil { // a token in Redis, a refresher armed
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// Built, run (warm-up, an exchange through Redis), shut down, closed.
	r, err = Build(ctx, cfg, Options{HTTPClient: up})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Server.Run(rctx, ln) }()
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13900004444"})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/v1/phone-number", strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer leak-api-key-0123456789")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("exchange: %d %s", resp.StatusCode, b)
	}
	hc.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	up.CloseIdleConnections()
	ets.Close()
	mr.Close()
	goleak.VerifyNone(t, ignore)
}
