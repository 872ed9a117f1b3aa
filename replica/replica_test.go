package replica

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/ledger"
	"github.com/wxphone/wxphone/replay"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

// TestWireFailureClosesWhatItBuilt: when a part fails (here the server:
// no API key), what Wire already built (the clients, the ledger and its
// background loop, the service) is closed through the one cleanup path.
// Not parallel: goleak looks at the whole process.
func TestWireFailureClosesWhatItBuilt(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	r, err := Wire(context.Background(), Spec{
		Apps:   []wxphone.Config{{AppID: fleetApp, Secret: fleetSecret, BaseURL: "http://127.0.0.1:1"}},
		Ledger: ledger.Options{Shared: replay.NewMemory(), Fallback: true},
	})
	if err == nil {
		_ = r.Close()
		t.Fatal("Wire without an API key succeeded")
	}
	goleak.VerifyNone(t, ignore)
}

// TestReplicaWarmsAndRunCloses: a wired replica fetches its tokens without
// being served or asked (the warm-up is the wiring's, not the server's),
// and Run, once its context ends, shuts the server down and closes the
// service it did not get from the server: its token managers refuse work.
func TestReplicaWarmsAndRunCloses(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: fleetApp, Secret: fleetSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	t.Cleanup(ets.Close)
	up := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(up.CloseIdleConnections)
	r, err := Wire(context.Background(), Spec{
		Apps:   []wxphone.Config{{AppID: fleetApp, Secret: fleetSecret, BaseURL: ets.URL, HTTPClient: up}},
		Server: server.Config{APIKeys: []wxphone.Secret{fleetKey}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	for i := 0; !r.Service.Status()[0].Token.Usable; i++ {
		if i > 1000 {
			t.Fatal("no token fetched without traffic")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, ln) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := r.Service.AccessToken(context.Background(), fleetApp); !errors.Is(err, wxphone.ErrClosed) {
		t.Errorf("after Run: AccessToken %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}
