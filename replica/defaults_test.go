package replica

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/wxmock"
)

// TestFleetDefaultsLetACampaignPeakThrough: with the default settings, 200
// concurrent cold-start requests through one API key (a backend carrying
// all its users) all get their numbers; no default rate limit answers 429.
func TestFleetDefaultsLetACampaignPeakThrough(t *testing.T) {
	f := newFleet(t, 2, "WXPHONE_RATE_LIMIT", "") // unset: the default
	const n = 200
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { statuses[i] = f.exchange(t, i, fmt.Sprintf("load-peak-%d", i)).status })
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200 (no default limit)", i, s)
		}
	}
}

// TestCallerIdentityStableAcrossDataKeyRotation: mid-rotation, one replica
// runs WXPHONE_DATA_KEY=OLD,NEW and the other NEW,OLD (the documented
// rollout). A code exchanged on one and retried on the other with the same
// API key is replayed (not 409 code_already_used), and the key has one
// rate-limit bucket, not one per keyring order.
func TestCallerIdentityStableAcrossDataKeyRotation(t *testing.T) {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: fleetApp, Secret: fleetSecret}}, LoadPrefix: "load-"})
	if err != nil {
		t.Fatal(err)
	}
	ets := httptest.NewServer(emu)
	t.Cleanup(ets.Close)
	rd := startRedis(t)
	prefix := "rotationtest" + fmt.Sprint(time.Now().UnixNano())
	oldKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	newKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	f := &fleet{emu: emu, redis: rd, prefix: prefix, client: &http.Client{Timeout: 30 * time.Second}}
	for _, keys := range []string{oldKey + "," + newKey, newKey + "," + oldKey} {
		env := map[string]string{
			"WX_APPID": fleetApp, "WX_SECRET": fleetSecret, "WX_API_BASE": ets.URL,
			"WXPHONE_API_KEYS": fleetKey, "WXPHONE_DATA_KEY": keys, "REDIS_URL": rd.url,
			"WXPHONE_RATE_LIMIT": "0.001", "WXPHONE_RATE_BURST": "4",
		}
		cfg, err := config.Load(nil, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		r, err := Build(context.Background(), cfg, Options{NoWarm: true, RedisPrefix: prefix,
			Redis: redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(r.Server.Handler())
		t.Cleanup(func() { hs.Close(); _ = r.Close() })
		f.members = append(f.members, member{Replica: r, url: hs.URL})
	}
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13700002222"})
	if err != nil {
		t.Fatal(err)
	}
	if a := f.exchange(t, 0, code); a.status != 200 {
		t.Fatalf("exchange on OLD,NEW: %d %s", a.status, a.raw)
	}
	a := f.exchange(t, 1, code)
	if a.status != 200 || a.body["replayed"] != true {
		t.Fatalf("retry on NEW,OLD: %d %s; want 200 replayed", a.status, a.raw)
	}
	if n := emu.Stats().Endpoints.Phone.Calls; n != 1 {
		t.Errorf("phone calls = %d, want 1", n)
	}
	// Two requests spent the bucket of 4: two more pass, on either
	// replica, then 429.
	ok, limited := 0, 0
	for i := range 6 {
		switch a := f.exchange(t, i, fmt.Sprintf("load-rot-%d", i)); a.status {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Fatalf("status %d %s", a.status, a.raw)
		}
	}
	if ok != 2 || limited != 4 {
		t.Errorf("ok=%d limited=%d, want 2 and 4 (one bucket of 4 for the key on both replicas)", ok, limited)
	}
}
