package replica

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	fleetApp    = "wxf1ee700000000001"
	fleetSecret = "fleet-secret-0123456789abcdef"
	fleetKey    = "fleet-api-key-0123456789abcdef"
	tokenKey    = "fleet-token-key-0123456789abcdef"
)

// testRedis is a Redis the test may stop and start: a private redis-server
// process when the binary exists (CI installs it), else miniredis.
type testRedis struct {
	url   string
	stop  func()
	start func()
}

func startRedis(t *testing.T) *testRedis {
	t.Helper()
	if bin, err := exec.LookPath("redis-server"); err == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		var cmd *exec.Cmd
		tr := &testRedis{url: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
		tr.start = func() {
			cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--save", "", "--appendonly", "no", "--dir", t.TempDir())
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			c := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
			defer c.Close()
			for i := 0; c.Ping(context.Background()).Err() != nil; i++ {
				if i > 200 {
					t.Fatal("redis-server did not start")
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		tr.stop = func() {
			if cmd != nil && cmd.Process != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				cmd = nil
			}
		}
		tr.start()
		t.Cleanup(tr.stop)
		return tr
	}
	mr := miniredis.RunT(t)
	return &testRedis{url: "redis://" + mr.Addr() + "/0", stop: mr.Close, start: func() {
		if err := mr.Restart(); err != nil {
			t.Fatal(err)
		}
	}}
}

type member struct {
	*Replica
	url string
}

type fleet struct {
	emu     *wxmock.Server
	members []member
	redis   *testRedis
	prefix  string
	client  *http.Client
}

func newFleet(t *testing.T, n int, extraEnv ...string) *fleet {
	t.Helper()
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: fleetApp, Secret: fleetSecret}}, LoadPrefix: "load-"})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	t.Cleanup(ets.Close)
	f := &fleet{emu: emu, redis: startRedis(t), prefix: "fleettest" + fmt.Sprint(time.Now().UnixNano()),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	env := map[string]string{
		"WX_APPID": fleetApp, "WX_SECRET": fleetSecret, "WX_API_BASE": ets.URL,
		"WXPHONE_API_KEYS": fleetKey, "WXPHONE_TOKEN_API_KEYS": tokenKey,
		"WXPHONE_DATA_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		"REDIS_URL":        f.redis.url, "WXPHONE_RATE_LIMIT": "0",
	}
	for i := 0; i+1 < len(extraEnv); i += 2 {
		env[extraEnv[i]] = extraEnv[i+1]
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		// Generous Redis timeouts: these tests check fleet semantics, and the
		// 100 ms defaults trip the local fallback on a loaded CI machine
		// under the race detector (Redis outages have their own tests).
		r, err := Build(context.Background(), cfg, Options{NoWarm: true, RedisPrefix: f.prefix,
			Redis: redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(r.Server.Handler())
		t.Cleanup(func() { hs.Close(); _ = r.Close() })
		f.members = append(f.members, member{Replica: r, url: hs.URL})
	}
	return f
}

type answer struct {
	status int
	body   map[string]any
	raw    string
}

func (f *fleet) exchange(t *testing.T, i int, code string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.members[i%len(f.members)].url+"/v1/phone-number", strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+fleetKey)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Error(err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}

func (f *fleet) tokenFetches() int64 {
	s := f.emu.Stats().Apps[fleetApp]
	return s.TokenFetches + s.StableNormal + s.StableForce
}

func TestFleetColdBurstMakesOneTokenFetch(t *testing.T) {
	f := newFleet(t, 3)
	const n = 300
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = f.exchange(t, i, fmt.Sprintf("load-cold-%d", i)).status })
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d", i, s)
		}
	}
	if got := f.tokenFetches(); got != 1 {
		t.Fatalf("token fetches for a cold burst over 3 replicas = %d, want 1", got)
	}
	if got := f.emu.Stats().Endpoints.Phone.Calls; got != n {
		t.Fatalf("phone calls = %d, want %d (one per code)", got, n)
	}
}

func TestFleetOneCodeOnEveryReplicaMakesOneUpstreamCall(t *testing.T) {
	f := newFleet(t, 3)
	if _, err := f.emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 150, Count: 1}); err != nil {
		t.Fatal(err)
	}
	code, err := f.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13700001111"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = f.exchange(t, i, code) })
	}
	wg.Wait()
	fresh := 0
	for i, a := range answers {
		if a.status != http.StatusOK || a.body["phoneNumber"] != "13700001111" {
			t.Fatalf("replica %d answered %d %s", i%3, a.status, a.raw)
		}
		if a.body["replayed"] == false {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d fresh answers, want 1", fresh)
	}
	if got := f.emu.Stats().Endpoints.Phone.Calls; got != 1 {
		t.Fatalf("upstream phone calls = %d, want 1", got)
	}
}

func TestFleetKeepsServingWhenRedisStops(t *testing.T) {
	f := newFleet(t, 3)
	for i := range 6 {
		if a := f.exchange(t, i, fmt.Sprintf("load-before-%d", i)); a.status != http.StatusOK {
			t.Fatalf("before the outage: %d %s", a.status, a.raw)
		}
	}
	f.redis.stop()
	for i := range 30 {
		code := fmt.Sprintf("load-during-%d", i)
		a := f.exchange(t, i, code)
		if a.status != http.StatusOK {
			t.Fatalf("during the outage, replica %d: %d %s", i%3, a.status, a.raw)
		}
		// The same replica replays its own answer from its local store.
		if b := f.exchange(t, i, code); b.status != http.StatusOK || b.body["replayed"] != true {
			t.Fatalf("local replay during the outage: %d %s", b.status, b.raw)
		}
	}
	// /healthz stays 200; /readyz stays 200 but says degraded; metrics show it.
	for _, m := range f.members {
		if s := get(t, f.client, m.url+"/healthz"); s.status != 200 {
			t.Fatalf("/healthz = %d", s.status)
		}
		r := get(t, f.client, m.url+"/readyz")
		if r.status != 200 || !strings.Contains(r.raw, `"degraded"`) {
			t.Fatalf("/readyz = %d %s, want 200 degraded", r.status, r.raw)
		}
		if mt := get(t, f.client, m.url+"/metrics"); !strings.Contains(mt.raw, `wxphone_degraded{component="replay"} 1`) {
			t.Fatal("/metrics does not show the degraded replay store")
		}
	}
	f.redis.start()
	// Everything recovers by itself: shared dedupe works again.
	time.Sleep(1100 * time.Millisecond) // the breaker's cool-off
	code, _ := f.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13700002222"})
	calls := f.emu.Stats().Endpoints.Phone.Calls
	for i := range 3 {
		if a := f.exchange(t, i, code); a.status != http.StatusOK || a.body["phoneNumber"] != "13700002222" {
			t.Fatalf("after recovery, replica %d: %d %s", i, a.status, a.raw)
		}
	}
	if got := f.emu.Stats().Endpoints.Phone.Calls - calls; got != 1 {
		t.Fatalf("after recovery one code on 3 replicas made %d upstream calls, want 1", got)
	}
	r := get(t, f.client, f.members[0].url+"/readyz")
	if r.status != 200 || strings.Contains(r.raw, `"degraded"`) {
		t.Fatalf("/readyz after recovery = %d %s", r.status, r.raw)
	}
}

func TestFleetStoresNothingInClear(t *testing.T) {
	f := newFleet(t, 3)
	var codes, phones []string
	for i := range 9 {
		phone := fmt.Sprintf("1390000%04d", i)
		code, err := f.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: phone})
		if err != nil {
			t.Fatal(err)
		}
		if a := f.exchange(t, i, code); a.status != 200 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
		codes, phones = append(codes, code), append(phones, phone)
	}
	// Also exercise the token endpoint so a token is in use fleet-wide.
	tok := getWithKey(t, f.client, f.members[1].url+"/v1/access-token", tokenKey)
	if tok.status != 200 {
		t.Fatalf("token endpoint: %d %s", tok.status, tok.raw)
	}
	secrets := append(append(append([]string{fleetSecret, fleetKey, tokenKey}, codes...), phones...), f.emu.ValidTokens(fleetApp)...)
	c := goredis.NewClient(&goredis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(f.redis.url, "redis://"), "/0")})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, f.prefix+"*").Result()
	if err != nil || len(keys) < 10 {
		t.Fatalf("keys = %d, %v; want the token and the replay records", len(keys), err)
	}
	var dump strings.Builder
	for _, k := range keys {
		dump.WriteString(k)
		typ, _ := c.Type(ctx, k).Result()
		switch typ {
		case "hash":
			for fld, v := range c.HGetAll(ctx, k).Val() {
				dump.WriteString(fld + v)
			}
		case "string":
			dump.WriteString(c.Get(ctx, k).Val())
		}
	}
	for _, s := range secrets {
		if strings.Contains(dump.String(), s) {
			t.Fatalf("Redis holds %q in clear", s[:4]+"…")
		}
	}
	if !strings.Contains(dump.String(), "replay") {
		t.Fatal("scan saw no replay record: the test checks nothing")
	}
}

func TestFleetRateLimitIsShared(t *testing.T) {
	f := newFleet(t, 2, "WXPHONE_RATE_LIMIT", "0.01", "WXPHONE_RATE_BURST", "3")
	ok, limited := 0, 0
	for i := range 8 {
		switch a := f.exchange(t, i, fmt.Sprintf("load-rl-%d", i)); a.status {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Fatalf("status %d %s", a.status, a.raw)
		}
	}
	if ok != 3 || limited != 5 {
		t.Fatalf("ok=%d limited=%d over 2 replicas, want 3 and 5 (one shared bucket of 3)", ok, limited)
	}
}

func TestFleetTokenEndpointSharesOneToken(t *testing.T) {
	f := newFleet(t, 3)
	var first string
	for i, m := range f.members {
		a := getWithKey(t, f.client, m.url+"/v1/access-token", tokenKey)
		if a.status != 200 {
			t.Fatalf("replica %d: %d %s", i, a.status, a.raw)
		}
		tok, _ := a.body["access_token"].(string)
		if first == "" {
			first = tok
		}
		if tok == "" || tok != first {
			t.Fatalf("replica %d hands out another token", i)
		}
	}
	if got := f.tokenFetches(); got != 1 {
		t.Fatalf("token fetches = %d, want 1", got)
	}
}

func get(t *testing.T, c *http.Client, url string) answer { return getWithKey(t, c, url, "") }

func getWithKey(t *testing.T, c *http.Client, url, key string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}
