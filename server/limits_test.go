package server_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/server"
)

// TestServerRefusesOversizeAndSlowRequests runs the real listener (Run) and
// checks on the wire that a 1 MiB header, a 5 KiB body (declared or
// chunked) and a slowloris client that never finishes its headers are all
// refused, without reaching the service.
func TestServerRefusesOversizeAndSlowRequests(t *testing.T) {
	t.Parallel()
	base, emu := runServer(t, false)
	addr := strings.TrimPrefix(base, "http://")
	t.Cleanup(func() { // after the parallel subtests
		if n := emu.Stats().Endpoints.Phone.Calls; n != 0 {
			t.Errorf("%d refused requests reached WeChat", n)
		}
	})
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	post := func(body io.Reader, length int64, header map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+server.PathPhoneNumber, body)
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+keyPhone)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("1 MiB header", func(t *testing.T) {
		t.Parallel()
		if s, b := post(strings.NewReader(`{"code":"abc"}`), 14, map[string]string{"X-Padding": strings.Repeat("p", 1<<20)}); s != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d %.200s; want 431", s, b)
		}
	})
	t.Run("5 KiB body", func(t *testing.T) {
		t.Parallel()
		body := `{"code":"` + strings.Repeat("a", 5<<10) + `"}`
		if s, b := post(strings.NewReader(body), int64(len(body)), nil); s != http.StatusRequestEntityTooLarge || !strings.Contains(b, "body_too_large") {
			t.Errorf("declared: %d %s; want 413 body_too_large", s, b)
		}
		// Chunked: no Content-Length to refuse up front.
		if s, b := post(struct{ io.Reader }{strings.NewReader(body)}, -1, nil); s != http.StatusRequestEntityTooLarge || !strings.Contains(b, "body_too_large") {
			t.Errorf("chunked: %d %s; want 413 body_too_large", s, b)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		t.Parallel()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, "POST "+server.PathPhoneNumber+" HTTP/1.1\r\nHost: wxphone\r\n"); err != nil {
			t.Fatal(err)
		}
		// One header byte every 200 ms, never the blank line: the server
		// must hang up once its header timeout (5 s) passes.
		closed := make(chan time.Duration, 1)
		go func() {
			r := bufio.NewReader(conn)
			_, _ = io.Copy(io.Discard, r) // returns when the server closes
			closed <- time.Since(start)
		}()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case d := <-closed:
				if d < 4*time.Second {
					t.Errorf("closed after %v: before the header timeout?", d)
				}
				return
			case <-tick.C:
				if _, err := io.WriteString(conn, "X"); err != nil && !errors.Is(err, net.ErrClosed) {
					// The server hung up: the reader sees it next.
					continue
				}
			case <-deadline:
				t.Fatal("a client trickling its headers kept the connection for 20 s")
			}
		}
	})
}
