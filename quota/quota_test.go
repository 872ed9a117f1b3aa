package quota

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	appA, secretA = "wxquotaaaaaaaaaa1", "quota-secret-aaaaaaaaaaaaa1"
	appB, secretB = "wxquotabbbbbbbbb2", "quota-secret-bbbbbbbbbbbbb2"
)

func newClients(t *testing.T) (*wxmock.Server, []*wxphone.Client) {
	t.Helper()
	emu, err := wxmock.New(wxmock.Options{
		Apps:             []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}},
		QuotaDailyLimits: map[string]int{wxmock.CGIPathPhone: 500, wxmock.CGIPathStableToken: 10000},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	var cs []*wxphone.Client
	for _, a := range []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}} {
		c, err := wxphone.New(wxphone.Config{AppID: a.AppID, Secret: wxphone.Secret(a.Secret), BaseURL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}
	return emu, cs
}

func gauge(t *testing.T, g *prometheus.GaugeVec, appid, api string) float64 {
	t.Helper()
	return testutil.ToFloat64(g.WithLabelValues(appid, api))
}

// TestProbeExportsQuotas probes the emulator: the gauges show what it
// counted, per app and API.
func TestProbeExportsQuotas(t *testing.T) {
	emu, cs := newClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
		if _, err := cs[0].PhoneNumber(ctx, code); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs[1].Warm(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := NewProber(Config{Clients: []Client{cs[0], cs[1]}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Probe(ctx)
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("%s %s: %v", r.AppID, r.API.Name, r.Err)
		}
	}
	for _, tc := range []struct {
		appid, api             string
		limit, used, remaining float64
	}{
		{appA, "getuserphonenumber", 500, 3, 497},
		{appA, "stable_token", 10000, 1, 9999},
		{appB, "getuserphonenumber", 500, 0, 500},
		{appB, "stable_token", 10000, 1, 9999}, // Warm's
	} {
		got := [3]float64{gauge(t, p.limit, tc.appid, tc.api), gauge(t, p.used, tc.appid, tc.api), gauge(t, p.remaining, tc.appid, tc.api)}
		if got != [3]float64{tc.limit, tc.used, tc.remaining} {
			t.Errorf("%s %s: %v, want %v %v %v", tc.appid, tc.api, got, tc.limit, tc.used, tc.remaining)
		}
		if ts := gauge(t, p.lastOK, tc.appid, tc.api); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
			t.Errorf("last success %v", ts)
		}
	}
	if n := testutil.CollectAndCount(reg, "wxphone_quota_probe_errors_total"); n != 4 {
		t.Errorf("%d error series, want 4 (zeros)", n)
	}
	if v := testutil.ToFloat64(p.errs.WithLabelValues(appA, "getuserphonenumber")); v != 0 {
		t.Errorf("errors %v", v)
	}
	// The probe itself shows in WeChat's count of quota/get.
	if q, _ := emu.QuotaUsage(appA, wxmock.CGIPathQuotaGet); q.Used != 2 {
		t.Errorf("quota/get used %d, want 2", q.Used)
	}
}

// fakeClient answers from fn and counts calls.
type fakeClient struct {
	appid string
	calls atomic.Int64
	fn    func(cgiPath string) (wxphone.APIQuota, error)
}

func (f *fakeClient) AppID() string { return f.appid }
func (f *fakeClient) APIQuota(_ context.Context, p string) (wxphone.APIQuota, error) {
	f.calls.Add(1)
	return f.fn(p)
}

// TestProbeErrors: a failed probe is counted, never fatal, and keeps the
// day's last values; yesterday's values are withdrawn.
func TestProbeErrors(t *testing.T) {
	fail := atomic.Bool{}
	fc := &fakeClient{appid: appA, fn: func(string) (wxphone.APIQuota, error) {
		if fail.Load() {
			return wxphone.APIQuota{}, &wxphone.APIError{Op: wxphone.OpAPIQuota, ErrCode: 45009}
		}
		return wxphone.APIQuota{DailyLimit: 10, Used: 4, Remain: 6}, nil
	}}
	reg := prometheus.NewRegistry()
	p, err := NewProber(Config{Clients: []Client{fc}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p.Probe(ctx)
	fail.Store(true)
	res := p.Probe(ctx)
	if res[0].Err == nil {
		t.Fatal("no error reported")
	}
	if v := testutil.ToFloat64(p.errs.WithLabelValues(appA, "stable_token")); v != 1 {
		t.Errorf("errors %v", v)
	}
	if v := gauge(t, p.remaining, appA, "stable_token"); v != 6 {
		t.Errorf("remaining after a failure the same day: %v", v)
	}
	// Pretend the last success was yesterday.
	p.mu.Lock()
	for k := range p.lastAt {
		p.lastAt[k] = time.Now().Add(-25 * time.Hour)
	}
	p.mu.Unlock()
	p.Probe(ctx)
	if n := testutil.CollectAndCount(reg, "wxphone_quota_remaining"); n != 0 {
		t.Errorf("%d stale series still exported", n)
	}
	if n := testutil.CollectAndCount(reg, "wxphone_quota_last_success_timestamp_seconds"); n != 2 {
		t.Errorf("%d timestamp series (kept, to show the age)", n)
	}
}

func TestRunStops(t *testing.T) {
	fc := &fakeClient{appid: appA, fn: func(string) (wxphone.APIQuota, error) { return wxphone.APIQuota{}, nil }}
	p, err := NewProber(Config{Clients: []Client{fc}, Registry: prometheus.NewRegistry(), Interval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for fc.calls.Load() < 2 { // one probe: both APIs, at once
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := fc.calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

func TestNewProberValidates(t *testing.T) {
	fc := &fakeClient{appid: appA}
	for _, cfg := range []Config{
		{Registry: prometheus.NewRegistry()},
		{Clients: []Client{fc}},
		{Clients: []Client{fc}, Registry: prometheus.NewRegistry(), Interval: time.Second},
	} {
		if _, err := NewProber(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := NewProber(Config{Clients: []Client{fc}, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewProber(Config{Clients: []Client{fc}, Registry: reg}); err == nil {
		t.Error("registered twice")
	}
}

type fakeForce struct {
	appid string
	n     int
	err   error
}

func (f fakeForce) AppID() string         { return f.appid }
func (f fakeForce) ForceDailyBudget() int { return 10 }
func (f fakeForce) ForceRefreshRemaining(context.Context) (int, error) {
	return f.n, f.err
}

func TestForceBudgetCollector(t *testing.T) {
	store := wxphone.NewMemoryTokenStore()
	m, err := wxphone.NewTokenManager(wxphone.TokenConfig{AppID: appA, Secret: "x-secret-0123456789", BaseURL: "http://127.0.0.1:1",
		Token: wxphone.TokenOptions{Store: store, ForceDailyBudget: 5}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if ok, _, _ := store.ReserveForceRefresh(context.Background(), appA, "r1", time.Now(), 0, 5); !ok {
		t.Fatal("reserve")
	}
	reg := prometheus.NewRegistry()
	if err := RegisterForceBudget(reg, []ForceSource{m, fakeForce{appid: appB, err: errors.New("redis down")}}, 0); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP wxphone_force_refresh_budget Force refreshes of the access token the app may make per day (UTC+8).
# TYPE wxphone_force_refresh_budget gauge
wxphone_force_refresh_budget{appid="wxquotaaaaaaaaaa1"} 5
wxphone_force_refresh_budget{appid="wxquotabbbbbbbbb2"} 10
# HELP wxphone_force_refresh_remaining Force refreshes of the access token the app may still make today (UTC+8), from the budget the fleet shares.
# TYPE wxphone_force_refresh_remaining gauge
wxphone_force_refresh_remaining{appid="wxquotaaaaaaaaaa1"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestProbeNeedsToken: an app without a token is not probed, so a probe
// never makes a token fetch.
func TestProbeNeedsToken(t *testing.T) {
	emu, cs := newClients(t)
	p, err := NewProber(Config{Clients: []Client{cs[0]}, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Probe(context.Background())
	if !errors.Is(res[0].Err, ErrNoToken) {
		t.Fatalf("cold: %v", res[0].Err)
	}
	if st := emu.Stats(); st.Endpoints.StableToken.Calls != 0 {
		t.Errorf("%d token fetches", st.Endpoints.StableToken.Calls)
	}
	if v := testutil.ToFloat64(p.errs.WithLabelValues(appA, "stable_token")); v != 0 {
		t.Errorf("counted as an error: %v", v)
	}
	if err := cs[0].Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if res := p.Probe(context.Background()); res[0].Err != nil {
		t.Fatalf("warm: %v", res[0].Err)
	}
}
