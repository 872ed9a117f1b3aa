package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/logtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestMockH2C: `wxphone mock` with WXMOCK_H2C serves unencrypted HTTP/2
// with prior knowledge next to HTTP/1.1.
func TestMockH2C(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out logtest.Buffer
	done := make(chan int, 1)
	env := map[string]string{"WXMOCK_H2C": "true"}
	go func() {
		done <- run(ctx, []string{"mock", "--addr", addr}, &out, io.Discard, func(k string) string { return env[k] })
	}()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer h2.CloseIdleConnections()
	var resp *http.Response
	var err error
	for i := 0; ; i++ {
		resp, err = h2.Get("http://" + addr + "/admin/stats")
		if err == nil {
			break
		}
		if i > 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("h2c: %s HTTP/%d", resp.Status, resp.ProtoMajor)
	}
	h1, err := http.Get("http://" + addr + "/admin/stats")
	if err != nil {
		t.Fatal(err)
	}
	h1.Body.Close()
	if h1.ProtoMajor != 1 {
		t.Errorf("HTTP/1.1 next to h2c: HTTP/%d", h1.ProtoMajor)
	}
	cancel()
	if c := <-done; c != 0 {
		t.Errorf("exit %d", c)
	}
	if !strings.Contains(out.String(), "h2c") {
		t.Errorf("output does not mention h2c: %s", out.String())
	}
}

// TestServePprof: WXPHONE_PPROF_ADDR serves the profiler on its own
// loopback listener, never on the API port.
func TestServePprof(t *testing.T) {
	addr := freeAddr(t)
	var stderr logtest.Buffer
	stop, err := servePprof(addr, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("pprof: %s %.100s", resp.Status, b)
	}
	if !strings.Contains(stderr.String(), addr) {
		t.Errorf("no notice of the pprof address: %q", stderr.String())
	}
}
