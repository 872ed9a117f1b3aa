package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

func TestHealthURL(t *testing.T) {
	tests := []struct {
		addr, want string
		bad        bool
	}{
		{addr: ":8080", want: "http://127.0.0.1:8080/healthz"},
		{addr: "0.0.0.0:8080", want: "http://127.0.0.1:8080/healthz"},
		{addr: "[::]:8080", want: "http://[::1]:8080/healthz"},
		{addr: "127.0.0.1:9000", want: "http://127.0.0.1:9000/healthz"},
		{addr: "10.1.2.3:8080", want: "http://10.1.2.3:8080/healthz"},
		{addr: "localhost:8080", want: "http://localhost:8080/healthz"},
		{addr: "[::1]:8080", want: "http://[::1]:8080/healthz"},
		{addr: "8080", bad: true},
		{addr: "host:", bad: true},
		{addr: "", bad: true},
	}
	for _, tc := range tests {
		got, err := healthURL(tc.addr)
		if tc.bad {
			if err == nil {
				t.Errorf("healthURL(%q) = %q, want an error", tc.addr, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("healthURL(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
}

func TestHealthcheckCommand(t *testing.T) {
	var healthy atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/healthz" || r.Method != http.MethodGet:
			http.NotFound(w, r)
		case healthy.Load():
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer ts.Close()
	addr := ts.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	// An address with nothing listening: a listener closed at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	_ = ln.Close()

	tests := []struct {
		name    string
		healthy bool
		env     string
		args    []string
		code    int
		stdout  string
		stderr  string
	}{
		{name: "healthy, WXPHONE_ADDR", healthy: true, env: addr, code: 0, stdout: "ok http://" + addr + "/healthz"},
		{name: "healthy, listen address without host", healthy: true, env: ":" + port, code: 0, stdout: "ok http://127.0.0.1:" + port},
		{name: "flag wins over WXPHONE_ADDR", healthy: true, env: deadAddr, args: []string{"--addr", addr}, code: 0},
		{name: "quiet", healthy: true, env: addr, args: []string{"-q"}, code: 0},
		{name: "unhealthy", healthy: false, env: addr, code: 1, stderr: "503"},
		{name: "nothing listening", env: deadAddr, code: 1, stderr: "healthcheck: http://" + deadAddr},
		{name: "bad address", env: "no-port", code: 1, stderr: `address "no-port"`},
		{name: "help", args: []string{"-h"}, code: 0, stdout: "Usage: wxphone healthcheck"},
		{name: "positional argument", args: []string{"extra"}, code: 2, stderr: "unexpected argument"},
		{name: "unknown flag", args: []string{"--nope"}, code: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			healthy.Store(tc.healthy)
			env := func(k string) string {
				if k == "WXPHONE_ADDR" {
					return tc.env
				}
				return ""
			}
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"healthcheck"}, tc.args...), &out, &errb, env)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", out.String(), tc.stdout, errb.String(), tc.stderr)
			}
			if tc.name == "quiet" && out.Len() != 0 {
				t.Errorf("-q printed %q", out.String())
			}
		})
	}
}

// TestHealthcheckAgainstServe runs `wxphone serve` against the emulator
// and probes it with `wxphone healthcheck` through the same WXPHONE_ADDR.
func TestHealthcheckAgainstServe(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: "wxhealth00000001", Secret: "health-secret-0123456789"}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	defer ets.Close()
	addr := freeAddr(t)
	envs := map[string]string{
		"WX_APPID": "wxhealth00000001", "WX_SECRET": "health-secret-0123456789", "WX_API_BASE": ets.URL,
		"WXPHONE_API_KEYS": "health-api-key-0123456789", "WXPHONE_ADDR": addr,
	}
	getenv := func(k string) string { return envs[k] }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, io.Discard, io.Discard, getenv) }()
	var out, errb bytes.Buffer
	for i := 0; ; i++ {
		out.Reset()
		errb.Reset()
		if run(context.Background(), []string{"healthcheck", "--timeout", "1s"}, &out, &errb, getenv) == 0 {
			break
		}
		if i > 500 {
			t.Fatalf("serve never became healthy: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if want := "ok http://" + addr + "/healthz"; !strings.Contains(out.String(), want) {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
	cancel()
	if c := <-done; c != 0 {
		t.Errorf("serve exited %d", c)
	}
	errb.Reset()
	if c := run(context.Background(), []string{"healthcheck"}, io.Discard, &errb, getenv); c != 1 {
		t.Errorf("healthcheck after serve stopped: exit %d, want 1", c)
	}
}
