package service

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/seal"
	"github.com/wxphone/wxphone/wxmock"
)

// TestInlineWhenDeadlineOutlastsTimeout: with a deadline beyond the
// exchange timeout the exchange runs on the caller's goroutine, and a
// cancellation (a caller that disconnects) still does not stop the
// upstream call: the caller receives the answer and WeChat sees the code
// once.
func TestInlineWhenDeadlineOutlastsTimeout(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{ExchangeTimeout: 2 * time.Second})
	if err := f.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 200, Count: 1})
	code := f.mint(t, appA, "13800138000")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !f.svc.inline(ctx) {
		t.Fatal("inline = false with a deadline beyond the exchange timeout")
	}
	var seen atomic.Bool
	go func() {
		// The caller disconnects while the upstream call is in flight.
		time.Sleep(50 * time.Millisecond)
		seen.Store(onCallerGoroutine("TestInlineWhenDeadlineOutlastsTimeout"))
		cancel()
	}()
	r, err := f.svc.Exchange(ctx, Request{Code: wxphone.Secret(code), Caller: "k1"})
	if err != nil {
		t.Fatalf("inline exchange after a cancellation: %v (the upstream call must not be cancelled)", err)
	}
	if r.Phone.PhoneNumber.Reveal() != "13800138000" || r.Replayed {
		t.Fatalf("result = %+v", r)
	}
	if !seen.Load() {
		t.Fatal("the exchange did not run on the caller's goroutine")
	}
	if n := f.phoneCalls(); n != 1 {
		t.Fatalf("phone calls = %d, want 1", n)
	}
	// A retry replays the recorded outcome.
	r2, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"})
	if err != nil || !r2.Replayed || r2.Phone != r.Phone {
		t.Fatalf("replay = %+v, %v", r2, err)
	}
}

// TestDetachedWhenDeadlineIsShorter: a deadline shorter than the exchange
// timeout keeps the detached goroutine, so the caller gets ErrInFlight at
// its deadline and a retry gets the answer.
func TestDetachedWhenDeadlineIsShorter(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{ExchangeTimeout: 2 * time.Second})
	if err := f.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 300, Count: 1})
	code := f.mint(t, appA, "13800138000")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if f.svc.inline(ctx) {
		t.Fatal("inline = true with a deadline shorter than the exchange timeout")
	}
	if f.svc.inline(context.Background()) {
		t.Fatal("inline = true without a deadline")
	}
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(30*time.Millisecond, ccancel)
	start := time.Now()
	if _, err := f.svc.Exchange(cctx, Request{Code: wxphone.Secret(code), Caller: "k1"}); !errors.Is(err, ErrInFlight) {
		t.Fatalf("err = %v, want ErrInFlight", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("detached caller waited %s for the upstream call", d)
	}
	r, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"})
	if err != nil || r.Phone.PhoneNumber.Reveal() != "13800138000" {
		t.Fatalf("retry = %+v, %v", r, err)
	}
	if n := f.phoneCalls(); n != 1 {
		t.Fatalf("phone calls = %d, want 1", n)
	}
}

// TestCloseWaitsForInlineExchanges: Close waits for an exchange running on
// a caller's goroutine like for a detached one.
func TestCloseWaitsForInlineExchanges(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{ExchangeTimeout: time.Second})
	if err := f.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 200, Count: 1})
	code := f.mint(t, appA, "13800138000")
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := f.svc.Exchange(ctx, Request{Code: wxphone.Secret(code), Caller: "k1"})
		errc <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for f.phoneCalls() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := f.svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("inline exchange: %v", err)
		}
	default:
		t.Fatal("Close returned before the inline exchange finished")
	}
}

// onCallerGoroutine reports whether some goroutine runs an exchange called
// from caller (a function name) on its own stack.
func onCallerGoroutine(caller string) bool {
	b := make([]byte, 1<<20)
	for _, g := range strings.Split(string(b[:runtime.Stack(b, true)]), "\n\n") {
		if strings.Contains(g, "service.(*Service).exchange(") && strings.Contains(g, caller) {
			return true
		}
	}
	return false
}

// TestOwnerCache: the owner index of a request without an openid comes
// from the cache and equals the keyed hash; with an openid it is computed.
func TestOwnerCache(t *testing.T) {
	kr := seal.NewRandomKeyring()
	f := newFixture(t, []string{appA}, Config{Keyring: kr})
	for range 2 {
		if got, want := f.svc.owner("k1", appA, ""), kr.Index("owner", "k1", appA, ""); got != want {
			t.Fatalf("owner = %s, want %s", got, want)
		}
	}
	if got, want := f.svc.owner("k1", appA, "o1"), kr.Index("owner", "k1", appA, "o1"); got != want {
		t.Fatalf("owner with openid = %s, want %s", got, want)
	}
	if n := f.svc.ownersN.Load(); n != 1 {
		t.Fatalf("cache entries = %d, want 1 (requests with an openid are not cached)", n)
	}
	// Replays stay bound to the caller.
	code := f.mint(t, appA, "13800138000")
	if _, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k2"}); !errors.Is(err, ErrForeignReplay) {
		t.Fatalf("another caller: err = %v, want ErrForeignReplay", err)
	}
}
