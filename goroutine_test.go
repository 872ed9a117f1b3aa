package wxphone

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wxphone/wxphone/wxmock"
)

// TestCloseLeavesNoGoroutines is not parallel: goleak inspects the whole
// process. Goroutines that exist when it starts (paused parallel tests) are
// ignored.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	emu := newEmulator(t)
	rec := &recorder{h: emu}
	srv := httptest.NewServer(rec)
	hc := NewHTTPClient()
	cfg := Config{AppID: testAppID, Secret: testSecret, BaseURL: srv.URL, HTTPClient: hc}

	// A Client that exchanged a code and holds a token with a refresh
	// timer armed.
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.PhoneNumber(ctx, mintPhone(t, emu, testPhone)); err != nil {
		t.Fatal(err)
	}

	// A TokenManager closed while its refresh is stuck in a fetch that
	// nothing but Close can end: no client timeouts, a long refresh
	// deadline, a ten-minute stall.
	addFault(t, emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 600_000})
	slow := &http.Client{Transport: &http.Transport{}}
	mcfg := cfg
	mcfg.HTTPClient = slow
	mcfg.Token.RefreshTimeout = time.Hour
	m, err := NewTokenManager(mcfg.tokenConfig())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := m.Token(context.Background())
		done <- err
	}()
	for i := 0; rec.count(pathStable) < 2; i++ { // the slow fetch reached the server
		if i > 2000 {
			t.Fatal("the slow fetch never reached the server")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// A guard, not a performance bound: without Close's cancellation the
	// fetch would stall for ten minutes.
	select {
	case err := <-done:
		if err == nil {
			t.Error("Token succeeded although Close cancelled its refresh")
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not end the refresh in flight")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	slow.CloseIdleConnections()
	srv.Close()
	goleak.VerifyNone(t, ignore)
}
