package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
	"github.com/wxphone/wxphone/wxmock"
)

// runServer runs a server over a fresh emulator and returns its base URL,
// the emulator and a stop function.
func runServer(t *testing.T, h2c bool) (string, *wxmock.Server) {
	t.Helper()
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appA, Secret: secretA}}})
	if err != nil {
		t.Fatal(err)
	}
	emuTS := httptest.NewServer(emu)
	t.Cleanup(emuTS.Close)
	client, err := wxphone.New(wxphone.Config{AppID: appA, Secret: secretA, BaseURL: emuTS.URL})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Clients: []*wxphone.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Service: svc, APIKeys: []wxphone.Secret{keyPhone}, H2C: h2c})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), emu
}

func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func exchangeOver(t *testing.T, hc *http.Client, base string, emu *wxmock.Server) (*http.Response, string) {
	t.Helper()
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+server.PathPhoneNumber, strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Authorization", "Bearer "+keyPhone)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestH2C: with Config.H2C the listener serves h2c with prior knowledge
// and HTTP/1.1 side by side; without it, an h2c client is refused.
func TestH2C(t *testing.T) {
	base, emu := runServer(t, true)
	h2 := h2cClient()
	defer h2.CloseIdleConnections()
	resp, body := exchangeOver(t, h2, base, emu)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(body, `"purePhoneNumber":"13800138000"`) {
		t.Fatalf("h2c: %s HTTP/%d %s", resp.Status, resp.ProtoMajor, body)
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Fatalf("h2c: X-Content-Type-Options = %q", got)
	}
	h1 := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer h1.CloseIdleConnections()
	resp, body = exchangeOver(t, h1, base, emu)
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Fatalf("HTTP/1.1 next to h2c: %s HTTP/%d %s", resp.Status, resp.ProtoMajor, body)
	}

	base2, _ := runServer(t, false)
	if resp, err := h2.Get(base2 + server.PathHealthz); err == nil {
		resp.Body.Close()
		t.Fatalf("h2c accepted without Config.H2C: %s HTTP/%d", resp.Status, resp.ProtoMajor)
	}
}

// TestInFlightGauge: /metrics reports the requests being served (the
// scrape itself included).
func TestInFlightGauge(t *testing.T) {
	base, _ := runServer(t, false)
	resp, err := http.Get(base + server.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "\nwxphone_http_requests_in_flight 1\n") {
		t.Fatalf("metrics lack wxphone_http_requests_in_flight 1:\n%s", b)
	}
}
