package wxphone

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestClientBuildsOneHTTPStack: a Client and the TokenManager it owns call
// WeChat through one HTTP stack: the token fetch and the exchange after it
// share one connection pool, so the exchange reuses the fetch's connection
// instead of dialling a second one.
func TestClientBuildsOneHTTPStack(t *testing.T) {
	emu := newEmulator(t)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(emu)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	c, err := New(Config{AppID: testAppID, Secret: testSecret, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if c.owned == nil || c.owned.up != c.up {
		t.Fatal("the Client's TokenManager has an HTTP stack of its own")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PhoneNumber(ctx, mintPhone(t, emu, testPhone)); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for a token fetch and an exchange, want 1 (one pool)", n)
	}
}
