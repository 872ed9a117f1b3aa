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

	"github.com/wxphone/wxphone/server"
)

// TestAdminAddrMovesMetrics: with an admin address the API answers
// /metrics like any unknown route, and the admin handler serves it.
func TestAdminAddrMovesMetrics(t *testing.T) {
	e := newEnv(t, envOpts{serverCfg: func(c *server.Config) { c.AdminAddr = "127.0.0.1:0" }})
	for _, m := range []string{"GET", "HEAD", "POST"} {
		st, h, b := e.do(request{method: m, path: server.PathMetrics})
		if st != http.StatusNotFound || h.Get("Allow") != "" {
			t.Errorf("%s /metrics on the API: %d %v", m, st, h)
		}
		if m == "GET" {
			if eb := decodeErr(t, b); eb.Error.Code != "not_found" || eb.Error.RequestID == "" {
				t.Errorf("body %s", b)
			}
		}
	}
	for _, r := range e.srv.Routes() {
		if r.Path == server.PathMetrics {
			t.Errorf("route %v still registered", r)
		}
	}
	if st, _, _ := e.do(request{method: "GET", path: server.PathHealthz}); st != 200 {
		t.Errorf("healthz %d", st)
	}

	admin := httptest.NewServer(e.srv.AdminHandler())
	defer admin.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/metrics", 200, "wxphone_http_requests_total"},
		{"HEAD", "/metrics", 200, ""},
		{"POST", "/metrics", 405, `"code":"method_not_allowed"`},
		{"GET", "/debug/pprof/", 404, `"code":"not_found"`},
		{"GET", "/v1/phone-number", 404, `"code":"not_found"`},
		{"GET", "/", 404, `"code":"not_found"`},
	} {
		req, _ := http.NewRequest(tc.method, admin.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.contains) {
			t.Errorf("admin %s %s: %d %.200s", tc.method, tc.path, resp.StatusCode, b)
		}
		if tc.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("Allow %q", resp.Header.Get("Allow"))
		}
	}
}

// TestAdminDefaultKeepsMetrics: without an admin address /metrics stays on
// the API (today's behaviour), and the admin handler still works.
func TestAdminDefaultKeepsMetrics(t *testing.T) {
	e := newEnv(t, envOpts{})
	if st, _, b := e.do(request{method: "GET", path: server.PathMetrics}); st != 200 || !strings.Contains(string(b), "wxphone_token_usable") {
		t.Errorf("/metrics on the API: %d", st)
	}
}

func TestAdminPprof(t *testing.T) {
	e := newEnv(t, envOpts{serverCfg: func(c *server.Config) { c.AdminAddr, c.AdminPprof = "127.0.0.1:0", true }})
	admin := httptest.NewServer(e.srv.AdminHandler())
	defer admin.Close()
	resp, err := http.Get(admin.URL + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Errorf("pprof: %d %.200s", resp.StatusCode, b)
	}
	// The API never serves the profiler.
	if st, _, _ := e.do(request{method: "GET", path: "/debug/pprof/"}); st != 404 {
		t.Errorf("pprof on the API: %d", st)
	}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func get(addr, path string) (int, string, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}

// TestListenAndServeAdmin runs both listeners: the API without /metrics,
// the admin address with it, both closed at shutdown.
func TestListenAndServeAdmin(t *testing.T) {
	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	e := newEnv(t, envOpts{serverCfg: func(c *server.Config) { c.Addr, c.AdminAddr = apiAddr, adminAddr }})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.srv.ListenAndServe(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _, err := get(adminAddr, "/metrics")
		st2, _, err2 := get(apiAddr, server.PathHealthz)
		if err == nil && err2 == nil && st == 200 && st2 == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v %v", err, err2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _, _ := get(apiAddr, server.PathMetrics); st != 404 {
		t.Errorf("API /metrics: %d", st)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(adminAddr, "/metrics"); err == nil {
		t.Error("the admin address still answers after shutdown")
	}
	if l := e.logs.String(); !strings.Contains(l, `"msg":"admin listening"`) {
		t.Errorf("no admin log line")
	}
}

// TestListenAndServeAdminPortTaken: a taken admin port fails the start.
func TestListenAndServeAdminPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := newEnv(t, envOpts{serverCfg: func(c *server.Config) { c.Addr, c.AdminAddr = "127.0.0.1:0", ln.Addr().String() }})
	if err := e.srv.ListenAndServe(context.Background()); err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Errorf("err %v", err)
	}
}
