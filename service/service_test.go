package service

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"net/http/httptest"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/replay"
	"github.com/wxphone/wxphone/seal"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	appA    = "wx00000000000000a1"
	appB    = "wx00000000000000b2"
	secretA = "secret-a-0123456789"
	secretB = "secret-b-0123456789"
)

type fixture struct {
	mock  *wxmock.Server
	svc   *Service
	store replay.Store
}

func newFixture(t *testing.T, apps []string, cfg Config) *fixture {
	t.Helper()
	var mapps []wxmock.App
	secrets := map[string]string{appA: secretA, appB: secretB}
	for _, a := range apps {
		mapps = append(mapps, wxmock.App{AppID: a, Secret: secrets[a]})
	}
	mock, err := wxmock.New(wxmock.Options{Apps: mapps})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(mock)
	t.Cleanup(hs.Close)
	for _, a := range apps {
		c, err := wxphone.New(wxphone.Config{AppID: a, Secret: wxphone.Secret(secrets[a]), BaseURL: hs.URL})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Clients = append(cfg.Clients, c)
	}
	if cfg.Replay == nil {
		cfg.Replay = replay.NewMemory()
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return &fixture{mock: mock, svc: svc, store: cfg.Replay}
}

func (f *fixture) mint(t *testing.T, app, phone string) string {
	t.Helper()
	code, err := f.mock.MintPhoneCode(wxmock.PhoneGrant{AppID: app, PurePhoneNumber: phone, CountryCode: "86"})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func (f *fixture) phoneCalls() int64 { return f.mock.Stats().Endpoints.Phone.Calls }

func (f *fixture) fault(t *testing.T, flt wxmock.Fault) {
	t.Helper()
	if _, err := f.mock.AddFault(flt); err != nil {
		t.Fatal(err)
	}
}

func TestExchangeAndSequentialReplay(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	code := f.mint(t, appA, "13800138000")
	ctx := context.Background()
	req := Request{Code: wxphone.Secret(code), Caller: "k1", OpenID: "o1"}
	r1, err := f.svc.Exchange(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Replayed || r1.Phone.PhoneNumber.Reveal() != "13800138000" || r1.Phone.CountryCode != "86" || r1.AppID != appA {
		t.Fatalf("first result = %+v", r1)
	}
	for i := range 3 {
		r, err := f.svc.Exchange(ctx, req)
		if err != nil {
			t.Fatalf("replay %d: %v", i, err)
		}
		if !r.Replayed || r.Phone != r1.Phone {
			t.Fatalf("replay %d = %+v, want replay of %+v", i, r, r1)
		}
	}
	if n := f.phoneCalls(); n != 1 {
		t.Fatalf("upstream phone calls = %d, want 1", n)
	}
}

func TestConcurrentDuplicatesShareOneUpstreamCall(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 100, Count: 1})
	code := f.mint(t, appA, "13912345678")
	const n = 50
	var wg sync.WaitGroup
	results := make([]*Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"})
		})
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if results[i].Phone.PhoneNumber.Reveal() != "13912345678" {
			t.Fatalf("request %d got %v", i, results[i].Phone.PhoneNumber)
		}
		if !results[i].Replayed {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d requests reported a fresh exchange, want 1", fresh)
	}
	if c := f.phoneCalls(); c != 1 {
		t.Fatalf("upstream phone calls = %d, want 1", c)
	}
}

func TestReplayRefusedToAnotherCaller(t *testing.T) {
	tests := []struct {
		name  string
		other Request
	}{
		{"another key", Request{Caller: "k2", OpenID: "o1"}},
		{"another openid", Request{Caller: "k1", OpenID: "o2"}},
		{"no openid", Request{Caller: "k1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, []string{appA}, Config{})
			code := f.mint(t, appA, "13800138000")
			if _, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1", OpenID: "o1"}); err != nil {
				t.Fatal(err)
			}
			tt.other.Code = wxphone.Secret(code)
			_, err := f.svc.Exchange(context.Background(), tt.other)
			if !errors.Is(err, ErrForeignReplay) {
				t.Fatalf("err = %v, want ErrForeignReplay", err)
			}
			if f.phoneCalls() != 1 {
				t.Fatalf("phone calls = %d", f.phoneCalls())
			}
		})
	}
}

func TestFinalErrorsAreReplayedWithoutUpstreamCall(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fixture) string
		want  error
	}{
		{"invalid code", func(t *testing.T, f *fixture) string { return strings.Repeat("f", 64) }, wxphone.ErrInvalidCode},
		{"code of another app", func(t *testing.T, f *fixture) string { return f.mint(t, appB, "13800138000") }, wxphone.ErrAppIDMismatch},
		{"answer lost after consume", func(t *testing.T, f *fixture) string {
			f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultDropAfterConsume, Count: 1})
			return f.mint(t, appA, "13800138000")
		}, wxphone.ErrOutcomeUnknown},
		{"HTTP 502", func(t *testing.T, f *fixture) string {
			f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: 502, Count: 1})
			return f.mint(t, appA, "13800138000")
		}, wxphone.ErrOutcomeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, []string{appA, appB}, Config{})
			code := tt.setup(t, f)
			req := Request{AppID: appA, Code: wxphone.Secret(code), Caller: "k1"}
			if _, err := f.svc.Exchange(context.Background(), req); !errors.Is(err, tt.want) {
				t.Fatalf("first: err = %v, want %v", err, tt.want)
			}
			calls := f.phoneCalls()
			_, err := f.svc.Exchange(context.Background(), req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("replay: err = %v, want %v", err, tt.want)
			}
			if got := f.phoneCalls(); got != calls {
				t.Fatalf("replay made %d more upstream calls", got-calls)
			}
		})
	}
}

func TestRetryableFailuresReleaseTheCode(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 45011, Count: 1})
	code := f.mint(t, appA, "13800138000")
	req := Request{Code: wxphone.Secret(code), Caller: "k1"}
	if _, err := f.svc.Exchange(context.Background(), req); !errors.Is(err, wxphone.ErrRateLimited) {
		t.Fatalf("err = %v, want ErrRateLimited", err)
	}
	r, err := f.svc.Exchange(context.Background(), req)
	if err != nil || r.Replayed {
		t.Fatalf("retry = %+v, %v; want a fresh success", r, err)
	}
}

func TestInvalidCodeAfterBusyIsOutcomeUnknown(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	// WeChat uses the code and answers -1, then -1 again: the first request
	// fails busy; the code is released but tainted.
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1})
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1})
	code := f.mint(t, appA, "13800138000")
	req := Request{Code: wxphone.Secret(code), Caller: "k1"}
	if _, err := f.svc.Exchange(context.Background(), req); !errors.Is(err, wxphone.ErrSystemBusy) {
		t.Fatalf("first: err = %v, want ErrSystemBusy", err)
	}
	_, err := f.svc.Exchange(context.Background(), req)
	if !errors.Is(err, wxphone.ErrOutcomeUnknown) {
		t.Fatalf("second: err = %v, want ErrOutcomeUnknown (40029 after a busy attempt)", err)
	}
}

func TestCallerGivingUpDoesNotLoseTheAnswer(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	if err := f.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 300, Count: 1})
	code := f.mint(t, appA, "13800138000")
	req := Request{Code: wxphone.Secret(code), Caller: "k1"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.svc.Exchange(ctx, req); !errors.Is(err, ErrInFlight) {
		t.Fatalf("first: err = %v, want ErrInFlight", err)
	}
	// The retry waits for the detached exchange and gets its answer.
	r, err := f.svc.Exchange(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if r.Phone.PhoneNumber.Reveal() != "13800138000" {
		t.Fatalf("got %v", r.Phone.PhoneNumber)
	}
	if f.phoneCalls() != 1 {
		t.Fatalf("phone calls = %d, want 1", f.phoneCalls())
	}
}

func TestAbandonedClaimIsOutcomeUnknown(t *testing.T) {
	kr := seal.NewRandomKeyring()
	f := newFixture(t, []string{appA}, Config{Keyring: kr})
	code := f.mint(t, appA, "13800138000")
	owner := kr.Index("owner", "k1", appA, "")
	// A replica claimed the code and died: its lease has passed.
	if res, err := f.store.Claim(context.Background(), replay.Claim{Key: kr.Index("phone", appA, code), ID: "dead", Owner: owner, Lease: time.Now().Add(-time.Second), TTL: time.Minute}); err != nil || !res.Claimed {
		t.Fatal(res, err)
	}
	_, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"})
	if !errors.Is(err, wxphone.ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
	}
	if f.phoneCalls() != 0 {
		t.Fatal("the code was sent again")
	}
}

func TestBadRequestsNeverReachWeChat(t *testing.T) {
	f := newFixture(t, []string{appA, appB}, Config{})
	tests := []struct {
		name string
		req  Request
		want error
	}{
		{"no app with several", Request{Code: "abc"}, ErrAppRequired},
		{"unknown app", Request{AppID: "wxnope", Code: "abc"}, ErrUnknownApp},
		{"empty code", Request{AppID: appA}, wxphone.ErrInvalidInput},
		{"code with space", Request{AppID: appA, Code: "a b"}, wxphone.ErrInvalidInput},
		{"long code", Request{AppID: appA, Code: wxphone.Secret(strings.Repeat("a", wxphone.MaxCodeLen+1))}, wxphone.ErrInvalidInput},
		{"long openid", Request{AppID: appA, Code: "abc", OpenID: strings.Repeat("o", wxphone.MaxOpenIDLen+1)}, wxphone.ErrInvalidInput},
		{"openid with control char", Request{AppID: appA, Code: "abc", OpenID: "o\n1"}, wxphone.ErrInvalidInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.svc.Exchange(context.Background(), tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	st := f.mock.Stats()
	if st.Endpoints.Phone.Calls != 0 {
		t.Fatalf("phone calls = %d, want 0", st.Endpoints.Phone.Calls)
	}
}

func TestStoredOutcomesAreSealed(t *testing.T) {
	store := replay.NewMemory()
	kr := seal.NewRandomKeyring()
	f := newFixture(t, []string{appA}, Config{Replay: store, Keyring: kr})
	code := f.mint(t, appA, "13800138000")
	if _, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1", OpenID: "openid-1"}); err != nil {
		t.Fatal(err)
	}
	key := kr.Index("phone", appA, code)
	rec, err := store.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{code, "13800138000", "openid-1", "k1"} {
		if strings.Contains(string(rec.Sealed), secret) || strings.Contains(key, secret) || strings.Contains(rec.Owner, secret) {
			t.Fatalf("%q stored in clear", secret)
		}
	}
	// The sealed value is bound to its key: under another key it does not open.
	if _, err := kr.Open(rec.Sealed, []byte("other")); err == nil {
		t.Fatal("sealed outcome opened under another key")
	}
}

// failingComplete drops every Complete, as a shared store that went down
// mid-exchange would.
type failingComplete struct{ replay.Store }

func (failingComplete) Complete(context.Context, string, string, []byte, bool) error {
	return errors.New("store down")
}

func TestOutcomeKeptLocallyWhenTheStoreFailsToRecordIt(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{Replay: failingComplete{replay.NewMemory()}})
	code := f.mint(t, appA, "13800138000")
	req := Request{Code: wxphone.Secret(code), Caller: "k1"}
	if _, err := f.svc.Exchange(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.Exchange(context.Background(), req)
	if err != nil || !r.Replayed || r.Phone.PhoneNumber.Reveal() != "13800138000" {
		t.Fatalf("retry = %+v, %v; want the kept answer", r, err)
	}
	if f.phoneCalls() != 1 {
		t.Fatalf("phone calls = %d, want 1", f.phoneCalls())
	}
}

func TestRecordUnderOlderKeyIsFound(t *testing.T) {
	k1 := []byte(strings.Repeat("1", 32))
	k2 := []byte(strings.Repeat("2", 32))
	old, _ := seal.NewKeyring(k1)
	rotated, _ := seal.NewKeyring(k2, k1)
	store := replay.NewMemory()
	f := newFixture(t, []string{appA}, Config{Replay: store, Keyring: old})
	code := f.mint(t, appA, "13800138000")
	if _, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"}); err != nil {
		t.Fatal(err)
	}
	// A replica already sealing with the new key must see the record.
	svc2, err := New(Config{Clients: f.svc.clients(), Replay: store, Keyring: rotated})
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc2.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"})
	if err != nil || !r.Replayed || r.Phone.PhoneNumber.Reveal() != "13800138000" {
		t.Fatalf("rotated replica: %+v, %v; want the replay", r, err)
	}
	if f.phoneCalls() != 1 {
		t.Fatalf("phone calls = %d, want 1", f.phoneCalls())
	}
}

func (s *Service) clients() []*wxphone.Client {
	var out []*wxphone.Client
	for _, id := range s.appIDs {
		out = append(out, s.apps[id])
	}
	return out
}

func TestCloseWaitsForInFlightExchanges(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	if err := f.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 200, Count: 1})
	code := f.mint(t, appA, "13800138000")
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(code), Caller: "k1"})
		done <- err
	}()
	for f.phoneCalls() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := f.svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close returned only after WeChat's answer was received and recorded.
	if n := f.mock.Stats().Endpoints.Phone.ByErrcode[0]; n != 1 {
		t.Fatalf("successful upstream answers when Close returned = %d, want 1", n)
	}
	if err := <-done; err != nil {
		t.Fatalf("in-flight exchange failed: %v", err)
	}
	if _, err := f.svc.Exchange(context.Background(), Request{Code: wxphone.Secret(f.mint(t, appA, "13800138001")), Caller: "k1"}); !errors.Is(err, wxphone.ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
}

// TestTaintAfterSystemBusySurvivesTheRelease (issue 10, violation 3): WeChat
// used the code and answered -1; the one retry met 45011, so the exchange
// ended without an answer and the claim was released. The caller's next
// retry meets 40029, which must read outcome_unknown: before the fix the
// release was clean and the 40029 was stored and replayed as invalid_code.
func TestTaintAfterSystemBusySurvivesTheRelease(t *testing.T) {
	f := newFixture(t, []string{appA}, Config{})
	if err := f.svc.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1})
	f.fault(t, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 45011, Count: 1})
	req := Request{Code: wxphone.Secret(f.mint(t, appA, "13800138000")), Caller: "k1"}
	_, err := f.svc.Exchange(context.Background(), req)
	if !errors.Is(err, wxphone.ErrRateLimited) || !errors.Is(err, wxphone.ErrCodeMayBeUsed) {
		t.Fatalf("first exchange: %v, want 45011 that says the code may have been used", err)
	}
	for i := range 2 {
		_, err = f.svc.Exchange(context.Background(), req)
		if !errors.Is(err, wxphone.ErrOutcomeUnknown) || errors.Is(err, wxphone.ErrInvalidCode) {
			t.Fatalf("retry %d: %v, want outcome unknown", i+1, err)
		}
	}
}
