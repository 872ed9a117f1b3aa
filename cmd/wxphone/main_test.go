package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/internal/contract"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

func TestCommands(t *testing.T) {
	env := func(string) string { return "" }
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderr   string
		notInOut string
	}{
		{name: "no args", args: nil, code: 2, stderr: "Usage:"},
		{name: "unknown", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{name: "help", args: []string{"help"}, code: 0, stdout: "wxphone serve"},
		{name: "version", args: []string{"version"}, code: 0, stdout: "wxphone "},
		{name: "serve -h", args: []string{"serve", "-h"}, code: 0, stdout: "WXPHONE_API_KEYS"},
		{name: "mock -h", args: []string{"mock", "-h"}, code: 0, stdout: "-load-prefix"},
		{name: "demo -h", args: []string{"demo", "-h"}, code: 0, stdout: "-emulator-addr"},
		{name: "serve without config", args: []string{"serve"}, code: 1, stderr: "no Mini Program configured"},
		{name: "serve with a secret flag", args: []string{"serve", "--secret", "s3cr3t-value-0123456789"}, code: 1, stderr: "not accepted on the command line", notInOut: "s3cr3t-value-0123456789"},
		{name: "mock bad flag", args: []string{"mock", "--nope"}, code: 2},
		{name: "demo on a public address", args: []string{"demo", "--addr", "0.0.0.0:0"}, code: 1, stderr: "loopback"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb, env)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", out.String(), tc.stdout, errb.String(), tc.stderr)
			}
			if tc.notInOut != "" && strings.Contains(out.String()+errb.String(), tc.notInOut) {
				t.Errorf("the output echoes the secret")
			}
		})
	}
}

// TestServeWiring builds the serve stack from the environment, as the
// command does, against the emulator, and exchanges a code through it.
func TestServeWiring(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: "wxwiring00000001", Secret: "wiring-secret-0123456789"}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	defer ets.Close()
	envs := map[string]string{
		"WX_APPID": "wxwiring00000001", "WX_SECRET": "wiring-secret-0123456789", "WX_API_BASE": ets.URL,
		"WXPHONE_API_KEYS": "wiring-api-key-0123456789", "WXPHONE_LOG_LEVEL": "debug",
	}
	cfg, err := config.Load(nil, func(k string) string { return envs[k] })
	if err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	r, err := build(context.Background(), cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv := r.Server
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx, ln) }()
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13944445555"})
	if err != nil {
		t.Fatal(err)
	}
	// Every answer is checked against docs/openapi.json.
	p, err := contract.FindDoc()
	if err != nil {
		t.Fatal(err)
	}
	ck, err := contract.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: ck.Transport(t, nil)}
	base := "http://" + ln.Addr().String()
	req, _ := http.NewRequest("POST", base+server.PathPhoneNumber, strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer wiring-api-key-0123456789")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "13944445555") {
		t.Fatalf("exchange: %d %s", resp.StatusCode, b)
	}
	// The other routes of the wired server, each checked by the contract.
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", server.PathHealthz, 200}, {"HEAD", server.PathHealthz, 200}, {"GET", server.PathReadyz, 200},
		{"HEAD", server.PathMetrics, 200}, {"GET", server.PathAccessToken, 401}, {"DELETE", server.PathPhoneNumber, 405},
		{"GET", "/v1/phone-number/", 404}, {"GET", "/%6Detrics", 404},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	l := logs.String()
	for _, secret := range []string{"wiring-secret-0123456789", "wiring-api-key-0123456789", code, "13944445555"} {
		if strings.Contains(l, secret) {
			t.Errorf("the logs contain a secret, code or full number")
		}
	}
	if !strings.Contains(l, `"phone":"139****5555"`) || !strings.Contains(l, `"route":"/v1/phone-number"`) {
		t.Errorf("logs:\n%s", l)
	}
	if !strings.Contains(l, `"msg":"stopped"`) {
		t.Errorf("no stop line")
	}
}

// TestMockCommand runs `wxphone mock` and mints a code through its admin API.
func TestMockCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var out logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"mock", "--addr", addr, "--app", "wxmockapp0000001:mock-secret-01234", "--seed", "7"}, &out, io.Discard, func(string) string { return "" })
	}()
	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.Post("http://"+addr+"/admin/phone-codes", "application/json", strings.NewReader(`{"purePhoneNumber":"13800138000"}`))
		if err == nil {
			break
		}
		if i > 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"code"`) {
		t.Errorf("mint: %d %s", resp.StatusCode, b)
	}
	cancel()
	if c := <-done; c != 0 {
		t.Errorf("exit %d", c)
	}
	if o := out.String(); !strings.Contains(o, "http://"+addr+"/admin/") || !strings.Contains(o, "wxmockapp0000001") || strings.Contains(o, "mock-secret-01234") {
		t.Errorf("output: %s", o)
	}
}

// TestServeWritesEveryLogLineOnShutdown runs the serve command, whose info
// lines are buffered (internal/logbuf), makes requests and stops it at once:
// by the time serve returns every request's line and the stop line are out.
func TestServeWritesEveryLogLineOnShutdown(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: "wxwiring00000001", Secret: "wiring-secret-0123456789"}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	defer ets.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // serve listens on it again
	envs := map[string]string{
		"WX_APPID": "wxwiring00000001", "WX_SECRET": "wiring-secret-0123456789", "WX_API_BASE": ets.URL,
		"WXPHONE_API_KEYS": "wiring-api-key-0123456789", "WXPHONE_ADDR": addr, "WXPHONE_LOG_LEVEL": "debug",
	}
	var stdout, stderr logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, &stdout, &stderr, func(k string) string { return envs[k] })
	}()
	base := "http://" + addr
	get := func() error {
		resp, err := http.Get(base + server.PathHealthz)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	for i := 0; get() != nil; i++ {
		if i == 200 {
			t.Fatal("serve did not start listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const n = 50
	for range n {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d: %s", code, stderr.String())
	}
	l := stdout.String()
	if got := strings.Count(l, `"route":"/healthz"`); got < n+1 {
		t.Errorf("%d /healthz lines, want at least %d (the start-up probe and %d requests)", got, n+1, n)
	}
	if !strings.HasSuffix(strings.TrimSpace(l), "}") || !strings.Contains(l, `"msg":"stopped"`) {
		t.Errorf("no stop line, or a torn last line:\n%s", l)
	}
}
