package replica

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/seal"
	"github.com/wxphone/wxphone/wxmock"
)

// TestFleetExportsForceBudget: every replica exports the force-refresh
// budget the fleet shares through Redis, and the quota probe's series.
func TestFleetExportsForceBudget(t *testing.T) {
	f := newFleet(t, 2)
	want := func(remaining int) string {
		return `
# HELP wxphone_force_refresh_remaining Force refreshes of the access token the app may still make today (UTC+8), from the budget the fleet shares.
# TYPE wxphone_force_refresh_remaining gauge
wxphone_force_refresh_remaining{appid="` + fleetApp + `"} ` + strconv.Itoa(remaining) + `
`
	}
	for _, m := range f.members {
		if err := testutil.GatherAndCompare(m.Metrics.Registry, strings.NewReader(want(10)), "wxphone_force_refresh_remaining"); err != nil {
			t.Error(err)
		}
	}
	// One force refresh reserved anywhere in the fleet shows on every replica.
	rc, err := redis.Open(context.Background(), f.redis.url, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	kr, err := seal.ParseKeys(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := redis.NewTokenStore(rc, kr, redis.StoreOptions{Prefix: f.prefix})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := ts.ReserveForceRefresh(context.Background(), fleetApp, "r1", time.Now(), 30*time.Second, 10); !ok || err != nil {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	for _, m := range f.members {
		if err := testutil.GatherAndCompare(m.Metrics.Registry, strings.NewReader(want(9)), "wxphone_force_refresh_remaining"); err != nil {
			t.Error(err)
		}
		if n := testutil.CollectAndCount(m.Metrics.Registry, "wxphone_quota_probe_errors_total"); n != 2 {
			t.Errorf("%d quota probe series, want 2 (zeros)", n)
		}
	}
}

// TestQuotaProbeOff: WXPHONE_QUOTA_INTERVAL=0 starts no prober.
func TestQuotaProbeOff(t *testing.T) {
	f := newFleet(t, 1, "WXPHONE_QUOTA_INTERVAL", "0")
	if n := testutil.CollectAndCount(f.members[0].Metrics.Registry, "wxphone_quota_probe_errors_total"); n != 0 {
		t.Errorf("%d quota probe series", n)
	}
	if f.members[0].probing {
		t.Error("a prober runs")
	}
}

// TestReplicaTracing: Options.TracerProvider reaches the server and the
// clients: an exchange is a server span with the WeChat call as its child.
func TestReplicaTracing(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: fleetApp, Secret: fleetSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	defer ets.Close()
	env := map[string]string{"WX_APPID": fleetApp, "WX_SECRET": fleetSecret, "WX_API_BASE": ets.URL, "WXPHONE_API_KEYS": fleetKey, "WXPHONE_ADMIN_ADDR": "127.0.0.1:0"}
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	r, err := Build(context.Background(), cfg, Options{NoWarm: true, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	hs := httptest.NewServer(r.Server.Handler())
	defer hs.Close()
	f := &fleet{emu: emu, members: []member{{Replica: r, url: hs.URL}}, client: hs.Client()}
	code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000"})
	if a := f.exchange(t, 0, code); a.status != 200 {
		t.Fatalf("exchange: %d %s", a.status, a.raw)
	}
	var server, client sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "POST /v1/phone-number":
			server = s
		case "WeChat getuserphonenumber":
			client = s
		}
	}
	if server == nil || client == nil || client.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Fatalf("spans: %v", rec.Ended())
	}
	// WXPHONE_ADMIN_ADDR reached the server: /metrics is off the API.
	if a := f.exchangeGet(t, "/metrics"); a != 404 {
		t.Errorf("/metrics on the API: %d", a)
	}
}

func (f *fleet) exchangeGet(t *testing.T, path string) int {
	t.Helper()
	resp, err := f.client.Get(f.members[0].url + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
