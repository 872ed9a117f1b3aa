package service

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/wxmock"
)

// TestCloseLeavesNoGoroutines: Close waits for a detached exchange whose
// caller gave up, stops every client's token refresher and leaves no
// goroutine behind. Not parallel: goleak looks at the whole process
// (goroutines of paused parallel tests are ignored).
func TestCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	mock, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(mock)
	up := &http.Client{Transport: &http.Transport{}}
	var clients []*wxphone.Client
	for _, a := range []struct{ id, secret string }{{appA, secretA}, {appB, secretB}} {
		c, err := wxphone.New(wxphone.Config{AppID: a.id, Secret: wxphone.Secret(a.secret), BaseURL: hs.URL, HTTPClient: up})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	svc, err := New(Config{Clients: clients, ExchangeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := svc.Warm(ctx); err != nil { // both refreshers armed
		t.Fatal(err)
	}
	code, err := mock.MintPhoneCode(wxmock.PhoneGrant{AppID: appA, PurePhoneNumber: "13900002222"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Exchange(ctx, Request{AppID: appA, Code: wxphone.Secret(code)}); err != nil {
		t.Fatal(err)
	}
	// An exchange still upstream when its caller gives up.
	if _, err := mock.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	code, _ = mock.MintPhoneCode(wxmock.PhoneGrant{AppID: appA, PurePhoneNumber: "13900003333"})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = svc.Exchange(short, Request{AppID: appA, Code: wxphone.Secret(code)})
	cancel()
	if !errors.Is(err, ErrInFlight) {
		t.Fatalf("err = %v, want ErrInFlight", err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := svc.Close(cctx); err != nil {
		t.Fatal(err)
	}
	up.CloseIdleConnections()
	hs.Close()
	goleak.VerifyNone(t, ignore)
}
