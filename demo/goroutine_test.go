package demo_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wxphone/wxphone/demo"
)

// TestRunLeavesNoGoroutines runs the demo (emulator, service, warm-up,
// token refresher), exchanges a code through it, cancels it and checks that
// Run leaves no goroutine behind. Not parallel: goleak looks at the whole
// process (goroutines of paused parallel tests are ignored).
func TestRunLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan demo.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- demo.Run(ctx, demo.Options{Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", OnReady: func(i demo.Info) { ready <- i }}, io.Discard)
	}()
	var info demo.Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("demo.Run: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	post := func(url, auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s, b := post(info.EmulatorURL+"/admin/phone-codes", "", `{"purePhoneNumber":"13800138000"}`)
	code, _, _ := strings.Cut(strings.TrimPrefix(b[strings.Index(b, `"code":"`)+1:], `code":"`), `"`)
	if s != 200 || code == "" {
		t.Fatalf("mint: %d %s", s, b)
	}
	if s, b := post(info.ServiceURL+"/v1/phone-number", info.APIKey, `{"code":"`+code+`"}`); s != 200 {
		t.Fatalf("exchange: %d %s", s, b)
	}
	hc.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo.Run did not return after its context ended")
	}
	goleak.VerifyNone(t, ignore)
}
