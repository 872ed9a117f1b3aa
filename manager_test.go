package wxphone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxphone/wxphone/internal/budget"
	"github.com/wxphone/wxphone/wxmock"
)

// Inside a synctest bubble time is fake: every sleep below costs nothing
// and every duration measured is exact.

func newManager(t testing.TB, cfg Config) *TokenManager {
	t.Helper()
	m, err := NewTokenManager(cfg.tokenConfig())
	if err != nil {
		t.Fatalf("NewTokenManager: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func stableStats(emu *wxmock.Server) wxmock.StableTokenStats {
	return emu.Stats().Endpoints.StableToken
}

func TestStableTokenIsTheDefault(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		c := newTestClient(t, env.config())
		ctx := context.Background()
		for range 3 {
			if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
				t.Fatal(err)
			}
		}
		// An invalidation and many background refreshes.
		if _, err := env.emu.RevokeTokens(testAppID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Hour)
		if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
			t.Fatal(err)
		}
		st := env.emu.Stats().Endpoints
		if st.Token.Calls != 0 {
			t.Errorf("/cgi-bin/token calls = %d, want 0", st.Token.Calls)
		}
		if st.StableToken.Force != 0 || st.StableToken.Normal < 6 {
			t.Errorf("stable_token normal %d, force %d; want >= 6 normal, no force", st.StableToken.Normal, st.StableToken.Force)
		}
		for _, r := range env.rec.requests() {
			if r.Path != pathStable {
				continue
			}
			var body map[string]any
			if r.Method != http.MethodPost || json.Unmarshal([]byte(r.Body), &body) != nil {
				t.Fatalf("stable_token request %s %q", r.Method, r.Body)
			}
			want := map[string]any{"grant_type": "client_credential", "appid": testAppID, "secret": testSecret, "force_refresh": false}
			if fmt.Sprint(body) != fmt.Sprint(want) || r.Query != "" {
				t.Errorf("stable_token body %v query %q; want %v", body, r.Query, want)
			}
		}
	})
}

func TestClassicModeOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		var fetches fetchLog
		cfg := env.config()
		cfg.Token.Classic = true
		cfg.Hooks.OnTokenFetch = fetches.hook
		c := newTestClient(t, cfg)
		if _, err := c.PhoneNumber(context.Background(), mintPhone(t, env.emu, testPhone)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(7200 * time.Second)
		st := env.emu.Stats().Endpoints
		if st.StableToken.Calls != 0 || st.Token.Calls != 2 {
			t.Errorf("stable calls %d, classic calls %d; want 0 and 2", st.StableToken.Calls, st.Token.Calls)
		}
		for _, r := range env.rec.requests() {
			if r.Path == pathClassic {
				q, _ := url.ParseQuery(r.Query)
				if r.Method != http.MethodGet || q.Get("grant_type") != "client_credential" || q.Get("appid") != testAppID || q.Get("secret") != testSecret {
					t.Errorf("classic request %s %q", r.Method, r.Query)
				}
			}
		}
		// Classic refreshes start RefreshLead/2..RefreshLead (30..60 s)
		// before the margin: 6840..6870 s after the first fetch.
		ev := fetches.all()
		if len(ev) != 2 || ev[1].Kind != KindClassic || ev[1].Trigger != TriggerBackground {
			t.Fatalf("fetches = %+v", ev)
		}
		if d := ev[1].At.Sub(ev[0].At); d < 6840*time.Second || d > 6870*time.Second {
			t.Errorf("classic refresh after %v, want 6840s..6870s", d)
		}
	})
}

// TestRefreshAheadFollowsExpiresIn: the next refresh is scheduled from the
// expires_in WeChat returned, at expiry minus the 300 s margin.
func TestRefreshAheadFollowsExpiresIn(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{345 * time.Second, 7200 * time.Second, 1000 * time.Second} {
		t.Run(ttl.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				env := newMemEnv(t, func(o *wxmock.Options) { o.TokenTTL = ttl })
				var fetches fetchLog
				cfg := env.config()
				cfg.Hooks.OnTokenFetch = fetches.hook
				m := newManager(t, cfg)
				t1, err := m.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if got := t1.ExpiresAt.Sub(start); got != ttl {
					t.Fatalf("token expires in %v, want %v", got, ttl)
				}
				refreshAt := ttl - 300*time.Second
				time.Sleep(refreshAt - time.Millisecond)
				synctest.Wait()
				if n := fetches.count(nil); n != 1 {
					t.Fatalf("fetches before %v = %d, want 1", refreshAt, n)
				}
				time.Sleep(time.Millisecond)
				synctest.Wait()
				ev := fetches.all()
				if len(ev) != 2 || ev[1].Trigger != TriggerBackground || ev[1].At.Sub(start) != refreshAt {
					t.Fatalf("fetches = %+v; want a background refresh at exactly %v", ev, refreshAt)
				}
				t2, err := m.Token(context.Background())
				if err != nil || t2.Value == t1.Value || time.Until(t2.ExpiresAt) != ttl {
					t.Errorf("after refresh: %v, %v; want a new token with %v left", t2, err, ttl)
				}
				// And again, from the new token's expires_in.
				time.Sleep(refreshAt)
				synctest.Wait()
				if n := fetches.count(func(e fetchAt) bool { return e.Trigger == TriggerBackground }); n != 2 {
					t.Errorf("background fetches = %d, want 2", n)
				}
			})
		})
	}
}

// TestRefreshAheadFromStub uses a stub that always answers expires_in 345
// with a fresh token, as the stable_token documentation's example does.
func TestRefreshAheadFromStub(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, "text/plain", fmt.Sprintf(`{"access_token":"TOKEN-%d","expires_in":345}`, n.Add(1)))
		})
		hc := &http.Client{Transport: &memTransport{h: stub}}
		var fetches fetchLog
		m := newManager(t, Config{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1", HTTPClient: hc, Hooks: Hooks{OnTokenFetch: fetches.hook}})
		start := time.Now()
		if _, err := m.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		var at []time.Duration
		for _, e := range fetches.all() {
			at = append(at, e.At.Sub(start))
		}
		want := []time.Duration{0}
		for d := 45 * time.Second; d <= 10*time.Minute; d += 45 * time.Second {
			want = append(want, d)
		}
		if fmt.Sprint(at) != fmt.Sprint(want) {
			t.Errorf("fetch times %v, want %v", at, want)
		}
	})
}

// TestRefreshAheadThroughADay drives 24 h of traffic: no request may carry a
// token with less than the 300 s margin left (as issued by the emulator),
// and after the cold start no fetch may happen on the request path.
func TestRefreshAheadThroughADay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		var mu sync.Mutex
		expiry := map[string]time.Time{} // token -> expiry as issued
		minLeft := time.Duration(1<<63 - 1)
		env.tr.observe = func(req *http.Request, _ []byte, _ int, body []byte) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			switch req.URL.Path {
			case pathStable:
				var r struct {
					AccessToken string `json:"access_token"`
					ExpiresIn   int64  `json:"expires_in"`
				}
				if json.Unmarshal(body, &r) == nil && r.AccessToken != "" {
					if e := now.Add(time.Duration(r.ExpiresIn) * time.Second); e.After(expiry[r.AccessToken]) {
						expiry[r.AccessToken] = e
					}
				}
			case pathPhone:
				e, ok := expiry[req.URL.Query().Get("access_token")]
				if !ok {
					t.Errorf("a phone call carried a token that was never issued")
					return
				}
				minLeft = min(minLeft, e.Sub(now))
			}
		}
		var fetches fetchLog
		cfg := env.config()
		cfg.Hooks.OnTokenFetch = fetches.hook
		c := newTestClient(t, cfg)
		ctx := context.Background()
		if err := c.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		requests := 0
		for time.Since(start) < 24*time.Hour {
			time.Sleep(7*time.Second + 300*time.Millisecond)
			if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
				t.Fatalf("request %d at %v: %v", requests, time.Since(start), err)
			}
			requests++
		}
		mu.Lock()
		defer mu.Unlock()
		if minLeft < 300*time.Second {
			t.Errorf("a request carried a token with %v left, want >= 300s", minLeft)
		}
		t.Logf("%d requests; least token life used: %v", requests, minLeft)
		byTrigger := map[string]int{}
		for _, e := range fetches.all()[1:] { // the first is the cold start
			byTrigger[e.Trigger]++
			if e.Err != nil {
				t.Errorf("fetch failed: %v", e.Err)
			}
		}
		// One refresh every 7200-300 s: 12 in a day.
		if byTrigger[TriggerRequest] != 0 || byTrigger[TriggerInvalidate] != 0 || byTrigger[TriggerBackground] != 12 {
			t.Errorf("fetches by trigger %v; want 12 background and nothing else", byTrigger)
		}
		if bad := env.emu.Stats().Endpoints.Phone.ByErrcode; len(bad) != 1 || bad[0] != int64(requests) {
			t.Errorf("phone answers by errcode %v; want only successes", bad)
		}
	})
}

func TestColdStampedeFetchesOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 200})
		m := newManager(t, env.config())
		const n = 1000
		toks := make([]Token, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { toks[i], errs[i] = m.Token(context.Background()) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || toks[i].Value == "" || toks[i] != toks[0] {
				t.Fatalf("caller %d got %v, %v; want the shared token %v", i, toks[i], errs[i], toks[0])
			}
		}
		if c := stableStats(env.emu).Calls; c != 1 {
			t.Errorf("stable_token calls = %d, want 1", c)
		}
	})
}

func TestCancelledCallerDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 2000})
		m := newManager(t, env.config())
		ctxA, cancelA := context.WithCancel(context.Background())
		ctxC, cancelC := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancelC()
		var errA, errB, errC error
		var tokB Token
		var wg sync.WaitGroup
		wg.Go(func() { _, errA = m.Token(ctxA) }) // starts the refresh
		synctest.Wait()
		wg.Go(func() { tokB, errB = m.Token(context.Background()) })
		wg.Go(func() { _, errC = m.Token(ctxC) })
		synctest.Wait()
		cancelA()
		wg.Wait()
		if !errors.Is(errA, context.Canceled) {
			t.Errorf("cancelled caller: %v, want context.Canceled", errA)
		}
		if !errors.Is(errC, context.DeadlineExceeded) {
			t.Errorf("caller with a deadline: %v, want context.DeadlineExceeded", errC)
		}
		if errB != nil || tokB.Value == "" {
			t.Errorf("patient caller: %v, %v; want the token", tokB, errB)
		}
		if c := stableStats(env.emu).Calls; c != 1 {
			t.Errorf("stable_token calls = %d, want 1", c)
		}
	})
}

func TestInvalidateIfEqual(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		store := NewMemoryTokenStore()
		var fetches fetchLog
		cfg := env.config()
		cfg.Token.Store = store
		cfg.Hooks.OnTokenFetch = fetches.hook
		m := newManager(t, cfg)
		ctx := context.Background()
		t1, err := m.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.emu.RevokeTokens(testAppID); err != nil {
			t.Fatal(err)
		}
		const k = 50
		got := make([]Token, k)
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i := range k {
			wg.Go(func() { got[i], errs[i] = m.Invalidate(ctx, t1.Value) })
		}
		wg.Wait()
		t2 := got[0]
		for i := range k {
			if errs[i] != nil || got[i] != t2 || got[i].Value == t1.Value {
				t.Fatalf("Invalidate %d = %v, %v; want one new token", i, got[i], errs[i])
			}
		}
		if n := fetches.count(nil); n != 2 {
			t.Errorf("fetches = %d, want 2 (cold start, one replacement)", n)
		}
		// Late errors against T1 never evict T2.
		for range k {
			tok, err := m.Invalidate(ctx, t1.Value)
			if err != nil || tok != t2 {
				t.Fatalf("late Invalidate(T1) = %v, %v; want T2", tok, err)
			}
		}
		if n := fetches.count(nil); n != 2 {
			t.Errorf("fetches after late invalidations = %d, want 2", n)
		}
		if st := m.Status(); st.Fingerprint != Fingerprint(t2.Value) || !st.Usable {
			t.Errorf("Status = %+v; want T2 held", st)
		}
		if stored, err := store.LoadToken(ctx, testAppID); err != nil || stored.Value != t2.Value {
			t.Errorf("store holds %v, %v; want T2", stored, err)
		}
		if tok, err := m.Token(ctx); err != nil || tok != t2 {
			t.Errorf("Token = %v, %v; want T2", tok, err)
		}
	})
}

func TestConcurrentTokenErrorsEvictOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		var fetches fetchLog
		cfg := env.config()
		cfg.Hooks.OnTokenFetch = fetches.hook
		c := newTestClient(t, cfg)
		ctx := context.Background()
		if err := c.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := env.emu.RevokeTokens(testAppID); err != nil {
			t.Fatal(err)
		}
		const k = 40
		codes := make([]string, k)
		for i := range codes {
			codes[i] = mintPhone(t, env.emu, testPhone)
		}
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i := range k {
			wg.Go(func() { _, errs[i] = c.PhoneNumber(ctx, codes[i]) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		}
		if n := fetches.count(nil); n != 2 {
			t.Errorf("token fetches = %d, want 2 (cold start, one replacement)", n)
		}
		if n := env.rec.count(pathPhone); n > 2*k {
			t.Errorf("phone calls = %d, want at most %d", n, 2*k)
		}
	})
}

// TestPersistentTokenErrorIsBounded: WeChat rejects every token. Each
// request makes at most one replay, force refreshes are spaced 30 s apart
// and stop at the daily budget, and the budget comes back at the UTC+8
// midnight.
func TestPersistentTokenErrorIsBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		var fetches fetchLog
		cfg := env.config()
		cfg.Hooks.OnTokenFetch = fetches.hook
		c := newTestClient(t, cfg)
		ctx := context.Background()
		if err := c.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001})
		start := time.Now()
		var lastErr error
		for time.Since(start) < 30*time.Minute {
			f0, p0 := fetches.count(nil), env.rec.count(pathPhone)
			_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
			f1, p1 := fetches.count(nil), env.rec.count(pathPhone)
			if p1-p0 > 2 || f1-f0 > 3 {
				t.Fatalf("one request made %d phone calls and %d token fetches", p1-p0, f1-f0)
			}
			if !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenUnavailable) {
				t.Fatalf("err = %v; want a typed token error", err)
			}
			lastErr = err
			time.Sleep(5 * time.Second)
		}
		forces := func() []fetchAt {
			var out []fetchAt
			for _, e := range fetches.all() {
				if e.Kind == KindStableForce {
					out = append(out, e)
				}
			}
			return out
		}
		fs := forces()
		if len(fs) != 10 {
			t.Errorf("force refreshes = %d, want the daily budget of 10", len(fs))
		}
		for i := 1; i < len(fs); i++ {
			if gap := fs[i].At.Sub(fs[i-1].At); gap < 30*time.Second {
				t.Errorf("force refreshes %v apart", gap)
			}
		}
		if n := stableStats(env.emu).Force; n != int64(len(fs)) {
			t.Errorf("emulator saw %d force refreshes, hooks %d", n, len(fs))
		}
		var tue *TokenUnavailableError
		midnight := time.Date(2000, 1, 1, 16, 0, 0, 0, time.UTC) // 00:00 in UTC+8
		if !errors.As(lastErr, &tue) || !errors.Is(lastErr, ErrForceRefreshLimited) || !tue.Until.Equal(midnight) {
			t.Fatalf("last error %v; want force budget exhausted until %v", lastErr, midnight)
		}
		if d, ok := RetryAfter(lastErr); !ok || d != time.Until(midnight) {
			t.Errorf("RetryAfter = %v, %v; want %v", d, ok, time.Until(midnight))
		}
		// Still refused just before the UTC+8 midnight, allowed after.
		time.Sleep(time.Until(midnight) - 10*time.Second)
		if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err == nil {
			t.Fatal("success despite the fault")
		}
		if n := len(forces()); n != 10 {
			t.Errorf("force refreshes before midnight = %d, want 10", n)
		}
		time.Sleep(20 * time.Second)
		_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
		if n := len(forces()); n != 11 {
			t.Errorf("force refreshes after midnight = %d, want 11", n)
		}
		if !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("after midnight err = %v; want ErrTokenInvalid (the replay was rejected too)", err)
		}
	})
}

func TestRefusedFetchTripsCooldown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		errcode  int
		cooldown time.Duration
		quota    bool
	}{
		{45009, 10 * time.Minute, true},
		{40164, time.Minute, false},
		{40125, time.Minute, false},
		{40013, time.Minute, false},
		{40243, time.Minute, false},
		{89503, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.errcode), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				env := newMemEnv(t)
				m := newManager(t, env.config())
				ctx := context.Background()
				addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: tt.errcode, Count: 1})
				start := time.Now()
				_, err := m.Token(ctx)
				var ae *APIError
				if !errors.As(err, &ae) || ae.ErrCode != tt.errcode || !errors.Is(err, ErrTokenFetchRefused) || errors.Is(err, ErrQuotaExhausted) != tt.quota {
					t.Fatalf("err = %v; want a refused fetch %d", err, tt.errcode)
				}
				// The refused fetch itself already says when to retry, as the
				// cool-down's answers do.
				var first *TokenUnavailableError
				if !errors.As(err, &first) || !first.Until.Equal(start.Add(tt.cooldown)) {
					t.Errorf("the refused fetch's error %v carries no cool-down", err)
				}
				if d, ok := RetryAfter(err); !ok || d != tt.cooldown {
					t.Errorf("RetryAfter of the refused fetch = %v, %v; want %v", d, ok, tt.cooldown)
				}
				if c := stableStats(env.emu).Calls; c != 1 {
					t.Fatalf("stable_token calls = %d, want 1 (refusals are not retried)", c)
				}
				// The fault is gone, yet nothing is fetched during the cool-down.
				for i := range 10 {
					time.Sleep(tt.cooldown / 11)
					_, err := m.Token(ctx)
					var tue *TokenUnavailableError
					if !errors.As(err, &tue) || !errors.Is(err, ErrTokenFetchRefused) || !tue.Until.Equal(start.Add(tt.cooldown)) {
						t.Fatalf("during cool-down (%d): %v", i, err)
					}
					if d, ok := RetryAfter(err); !ok || d != time.Until(tue.Until) {
						t.Errorf("RetryAfter = %v, %v", d, ok)
					}
				}
				if st := m.Status(); !st.CooldownUntil.Equal(start.Add(tt.cooldown)) || st.LastError == nil {
					t.Errorf("Status = %+v", st)
				}
				if c := stableStats(env.emu).Calls; c != 1 {
					t.Fatalf("stable_token calls during cool-down = %d, want 1", c)
				}
				time.Sleep(time.Until(start.Add(tt.cooldown)))
				if tok, err := m.Token(ctx); err != nil || tok.Value == "" {
					t.Fatalf("after cool-down: %v, %v", tok, err)
				}
				if c := stableStats(env.emu).Calls; c != 2 {
					t.Errorf("stable_token calls = %d, want 2", c)
				}
			})
		})
	}
}

func TestTransientFetchFailuresRetried(t *testing.T) {
	t.Parallel()
	busy := wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: -1}
	tests := []struct {
		name       string
		fault      *wxmock.Fault
		failDials  int // transport failures before the emulator is reached
		timeout    time.Duration
		wantErr    error
		wantCalls  int // requests that reached the emulator
		maxElapsed time.Duration
	}{
		{name: "-1 three times", fault: &wxmock.Fault{Endpoint: busy.Endpoint, Kind: busy.Kind, Errcode: -1, Count: 3}, wantCalls: 4},
		{name: "45011 once", fault: &wxmock.Fault{Endpoint: busy.Endpoint, Kind: busy.Kind, Errcode: 45011, Count: 1}, wantCalls: 2},
		{name: "HTTP 502 twice", fault: &wxmock.Fault{Endpoint: busy.Endpoint, Kind: wxmock.FaultHTTPStatus, Status: 502, Count: 2}, wantCalls: 3},
		{name: "answer dropped once", fault: &wxmock.Fault{Endpoint: busy.Endpoint, Kind: wxmock.FaultDropAfterConsume, Count: 1}, wantCalls: 2},
		{name: "transport failures", failDials: 2, wantCalls: 1},
		{name: "-1 forever", fault: &busy, wantErr: ErrSystemBusy, wantCalls: 6, maxElapsed: 15 * time.Second},
		{name: "-1 forever, short refresh deadline", fault: &busy, timeout: time.Second, wantErr: ErrSystemBusy, maxElapsed: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				env := newMemEnv(t)
				var failed atomic.Int64
				env.tr.setFail(func(r *http.Request) error {
					if failed.Add(1) <= int64(tt.failDials) {
						return errors.New("connection refused (injected)")
					}
					return nil
				})
				var fetches fetchLog
				cfg := env.config()
				cfg.Token.RefreshTimeout = tt.timeout
				cfg.Hooks.OnTokenFetch = fetches.hook
				m := newManager(t, cfg)
				if tt.fault != nil {
					addFault(t, env.emu, *tt.fault)
				}
				start := time.Now()
				tok, err := m.Token(context.Background())
				elapsed := time.Since(start)
				if tt.wantErr == nil && (err != nil || tok.Value == "") {
					t.Fatalf("Token = %v, %v", tok, err)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Token err = %v, want %v", err, tt.wantErr)
				}
				calls := int(stableStats(env.emu).Calls)
				if tt.wantCalls > 0 && calls != tt.wantCalls {
					t.Errorf("stable_token calls = %d, want %d", calls, tt.wantCalls)
				}
				if calls < 1 || calls > 6 {
					t.Errorf("stable_token calls = %d, want 1..6", calls)
				}
				if tt.maxElapsed > 0 && elapsed > tt.maxElapsed {
					t.Errorf("gave up after %v, want within %v", elapsed, tt.maxElapsed)
				}
				// Backoff: every pause at least 50 ms, and growing.
				ev := fetches.all()
				var prev time.Duration
				for i := 1; i < len(ev); i++ {
					gap := ev[i].At.Sub(ev[i-1].At)
					if gap < 50*time.Millisecond || gap > 2*time.Second || (i > 1 && gap < prev/2) {
						t.Errorf("pause %d = %v (previous %v)", i, gap, prev)
					}
					prev = gap
				}
			})
		})
	}
}

func TestCallerDeadlineBoundsTokenWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 5000, Count: 1})
		c := newTestClient(t, env.config())
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("err = %v after %v; want the caller's deadline after 1s", err, time.Since(start))
		}
		if n := env.rec.count(pathPhone); n != 0 {
			t.Errorf("phone calls = %d, want 0", n)
		}
		// The refresh finished on its own and serves the next caller.
		time.Sleep(5 * time.Second)
		if _, err := c.PhoneNumber(context.Background(), mintPhone(t, env.emu, testPhone)); err != nil {
			t.Fatal(err)
		}
		if n := stableStats(env.emu).Calls; n != 1 {
			t.Errorf("stable calls = %d, want 1", n)
		}
	})
}

// TestStalledRefreshNeverOverwritesNewer: two instances share a store. The
// first one's fetch stalls 10 s in transit; meanwhile the second stores a
// newer token. The stalled answer must not replace it.
func TestStalledRefreshNeverOverwritesNewer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		var mu sync.Mutex
		issued := map[string]time.Time{}
		stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i := n.Add(1)
			tok := fmt.Sprintf("TOKEN-%d", i)
			mu.Lock()
			issued[tok] = time.Now()
			mu.Unlock()
			if i == 1 {
				time.Sleep(10 * time.Second) // the answer is slow to arrive
			}
			writeJSON(w, "text/plain", `{"access_token":"`+tok+`","expires_in":7200}`)
		})
		store := NewMemoryTokenStore()
		mk := func() *TokenManager {
			hc := &http.Client{Transport: &memTransport{h: stub}}
			return newManager(t, Config{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1", HTTPClient: hc, Token: TokenOptions{Store: store}})
		}
		m1, m2 := mk(), mk()
		ctx := context.Background()
		var t1 Token
		var err1 error
		var wg sync.WaitGroup
		wg.Go(func() { t1, err1 = m1.Token(ctx) })
		time.Sleep(time.Second)
		t2, err := m2.Token(ctx)
		if err != nil || t2.Value != "TOKEN-2" {
			t.Fatalf("m2.Token = %v, %v", t2, err)
		}
		wg.Wait()
		if err1 != nil {
			t.Fatal(err1)
		}
		if stored, _ := store.LoadToken(ctx, testAppID); stored.Value != "TOKEN-2" {
			t.Errorf("store holds %v; the stalled TOKEN-1 overwrote TOKEN-2", stored)
		}
		if t1.Value != "TOKEN-2" {
			t.Errorf("m1 adopted %v; want the newer TOKEN-2 from the store", t1)
		}
		// Expiry never later than WeChat's own: counted from the send.
		mu.Lock()
		defer mu.Unlock()
		if got, max := t2.ExpiresAt, issued["TOKEN-2"].Add(7200*time.Second); got.After(max) {
			t.Errorf("TOKEN-2 expires %v, after its real expiry %v", got, max)
		}
	})
}

func TestTokenExpiryCountsFromTheSend(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(20 * time.Second) // the answer spends 20 s in transit
			writeJSON(w, "", `{"access_token":"TOKEN","expires_in":7200}`)
		})
		hc := &http.Client{Transport: &memTransport{h: stub}}
		m := newManager(t, Config{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1", HTTPClient: hc, Token: TokenOptions{RefreshTimeout: time.Minute}})
		start := time.Now()
		tok, err := m.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if want := start.Add(7200 * time.Second); tok.ExpiresAt.After(want) {
			t.Errorf("ExpiresAt = %v, later than the latest possible real expiry %v", tok.ExpiresAt, want)
		}
	})
}

func TestTokenManagerClose(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		m, err := NewTokenManager(env.config().tokenConfig())
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Warm(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := m.Token(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Token after Close = %v, want ErrClosed", err)
		}
		if _, err := m.Invalidate(context.Background(), "x"); !errors.Is(err, ErrClosed) {
			t.Errorf("Invalidate after Close = %v, want ErrClosed", err)
		}
		calls := stableStats(env.emu).Calls
		time.Sleep(48 * time.Hour) // no refresher left to fire
		if c := stableStats(env.emu).Calls; c != calls {
			t.Errorf("fetches after Close: %d, want %d", c, calls)
		}
	})
}

func TestCloseCancelsRefreshInFlight(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultLatency, LatencyMS: 10_000})
		m, err := NewTokenManager(env.config().tokenConfig())
		if err != nil {
			t.Fatal(err)
		}
		var tokErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, tokErr = m.Token(context.Background()) })
		synctest.Wait()
		start := time.Now()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if time.Since(start) != 0 {
			t.Errorf("Close waited %v for the refresh", time.Since(start))
		}
		if tokErr == nil {
			t.Error("Token succeeded although Close cancelled its refresh")
		}
	})
}

// TestHeldTokenServedThroughSlowOrFailingRefresh: at the refresh point
// ("refresh from", 300 s before expiry) stable_token is slow or fails for
// three minutes. Requests, one a second, keep using the held token
// without waiting and without failing, never with less than the serve
// margin (60 s) left, and the background refresher replaces the token once
// WeChat answers again, before the serve margin is reached.
func TestHeldTokenServedThroughSlowOrFailingRefresh(t *testing.T) {
	t.Parallel()
	stable := wxmock.EndpointStableToken
	tests := []struct {
		name  string
		fault wxmock.Fault
		lasts time.Duration // cleared after this long; 0: a one-shot fault
	}{
		{"answers in 2 s", wxmock.Fault{Endpoint: stable, Kind: wxmock.FaultLatency, LatencyMS: 2000, Count: 1}, 0},
		{"-1 for 3 minutes", wxmock.Fault{Endpoint: stable, Kind: wxmock.FaultErrcode, Errcode: -1}, 3 * time.Minute},
		{"HTTP 502 for 3 minutes", wxmock.Fault{Endpoint: stable, Kind: wxmock.FaultHTTPStatus, Status: 502}, 3 * time.Minute},
		{"no answer for 3 minutes", wxmock.Fault{Endpoint: stable, Kind: wxmock.FaultLatency, LatencyMS: 60000}, 3 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				env := newMemEnv(t)
				var mu sync.Mutex
				expiry := map[string]time.Time{} // token -> expiry as issued
				used := map[string]bool{}
				minLeft := time.Duration(1<<63 - 1)
				env.tr.observe = func(req *http.Request, _ []byte, _ int, body []byte) {
					now := time.Now()
					mu.Lock()
					defer mu.Unlock()
					switch req.URL.Path {
					case pathStable:
						var r struct {
							AccessToken string `json:"access_token"`
							ExpiresIn   int64  `json:"expires_in"`
						}
						if json.Unmarshal(body, &r) == nil && r.AccessToken != "" {
							if e := now.Add(time.Duration(r.ExpiresIn) * time.Second); e.After(expiry[r.AccessToken]) {
								expiry[r.AccessToken] = e
							}
						}
					case pathPhone:
						tok := req.URL.Query().Get("access_token")
						used[tok] = true
						minLeft = min(minLeft, expiry[tok].Sub(now))
					}
				}
				var fetches fetchLog
				cfg := env.config()
				cfg.Hooks.OnTokenFetch = fetches.hook
				c := newTestClient(t, cfg)
				ctx := context.Background()
				if err := c.Warm(ctx); err != nil {
					t.Fatal(err)
				}
				refreshFrom := time.Now().Add(7200*time.Second - 300*time.Second)
				time.Sleep(time.Until(refreshFrom) - 10*time.Second)
				addFault(t, env.emu, tt.fault)
				if tt.lasts > 0 {
					clear := time.AfterFunc(10*time.Second+tt.lasts, env.emu.ClearFaults)
					defer clear.Stop()
				}
				// A request every second from 10 s before the refresh point
				// to 230 s after it (the token is servable until 240 s).
				for time.Now().Before(refreshFrom.Add(230 * time.Second)) {
					start := time.Now()
					if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
						t.Fatalf("request %v after the refresh point: %v", start.Sub(refreshFrom), err)
					}
					if waited := time.Since(start); waited != 0 {
						t.Errorf("request %v after the refresh point waited %v", start.Sub(refreshFrom), waited)
					}
					time.Sleep(time.Second)
				}
				mu.Lock()
				defer mu.Unlock()
				if minLeft < 60*time.Second {
					t.Errorf("a request carried a token with %v left, want > 60s", minLeft)
				}
				if len(used) != 2 {
					t.Errorf("requests used %d tokens, want 2 (the held one, then its replacement)", len(used))
				}
				for _, e := range fetches.all()[1:] {
					if e.Trigger != TriggerBackground {
						t.Errorf("a %s fetch at %v: fetches belong to the background", e.Trigger, e.At.Sub(refreshFrom))
					}
				}
				if n := stableStats(env.emu).Calls; n > 120 {
					t.Errorf("stable_token calls = %d: the retries are not backing off", n)
				}
			})
		})
	}
}

// refuser sits before the emulator and answers stable_token calls with an
// errcode, for one instance of a fleet (a replica whose IP is not
// whitelisted, say).
type refuser struct {
	h http.Handler

	mu           sync.Mutex
	errcode      int // answered to normal-mode calls when non-zero
	forceErrcode int // answered to force calls when non-zero
	calls        int // stable_token calls that reached the refuser
	forces       int // of which force calls
}

func (r *refuser) set(normal, force int) {
	r.mu.Lock()
	r.errcode, r.forceErrcode = normal, force
	r.mu.Unlock()
}

func (r *refuser) counts() (calls, forces int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, r.forces
}

func (r *refuser) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == pathStable {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		var b struct {
			ForceRefresh bool `json:"force_refresh"`
		}
		_ = json.Unmarshal(body, &b)
		r.mu.Lock()
		r.calls++
		ec := r.errcode
		if b.ForceRefresh {
			r.forces++
			ec = r.forceErrcode
		}
		r.mu.Unlock()
		if ec != 0 {
			writeJSON(w, "text/plain", fmt.Sprintf(`{"errcode":%d,"errmsg":"refused (test)"}`, ec))
			return
		}
	}
	r.h.ServeHTTP(w, req)
}

// replicaManager is one instance of a fleet sharing store, reaching the
// emulator through its own refuser.
func replicaManager(t *testing.T, env *memEnv, store TokenStore) (*TokenManager, *refuser) {
	ref := &refuser{h: env.rec}
	m := newManager(t, Config{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1",
		HTTPClient: &http.Client{Transport: &memTransport{h: ref}}, Token: TokenOptions{Store: store}})
	return m, ref
}

// TestCooldownStopsOnlyCallsToWeChat: WeChat refuses one replica's fetch
// (IP not whitelisted, wrong secret, daily quota). During the cool-down
// that replica makes no call to WeChat, yet it adopts the token another
// replica stored and keeps serving the token it holds.
func TestCooldownStopsOnlyCallsToWeChat(t *testing.T) {
	t.Parallel()
	for _, errcode := range []int{40164, 40125, 45009} {
		t.Run(fmt.Sprint(errcode), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				env := newMemEnv(t)
				store := NewMemoryTokenStore()
				ctx := context.Background()
				a, refA := replicaManager(t, env, store)
				refA.set(errcode, 0)

				// 1. No token held: the refused fetch starts a cool-down;
				// another replica then stores a token, which A adopts.
				if _, err := a.Token(ctx); !errors.Is(err, ErrTokenFetchRefused) {
					t.Fatalf("A's first Token: %v, want the refusal", err)
				}
				if a.Status().CooldownUntil.IsZero() {
					t.Fatal("no cool-down after a refused fetch")
				}
				b, _ := replicaManager(t, env, store)
				t1, err := b.Token(ctx)
				if err != nil {
					t.Fatal(err)
				}
				got, err := a.Token(ctx)
				if err != nil || got != t1 {
					t.Fatalf("A during its cool-down: %v, %v; want the token B stored", got, err)
				}
				if calls, _ := refA.counts(); calls != 1 {
					t.Errorf("A made %d stable_token calls, want 1 (none during the cool-down)", calls)
				}
				_ = b.Close()

				// 2. A holds T1 when its refresh (at "refresh from") is
				// refused: it keeps serving T1, makes no call during the
				// cool-down, and adopts T2 as soon as another replica has
				// stored it.
				time.Sleep(time.Until(t1.ExpiresAt.Add(-300*time.Second)) + time.Second)
				calls0, _ := refA.counts()
				if calls0 != 2 || a.Status().CooldownUntil.IsZero() {
					t.Fatalf("A made %d calls by the refresh point, want 2 (the refused refresh), and cooled down", calls0)
				}
				for range 10 {
					start := time.Now()
					if got, err := a.Token(ctx); err != nil || got != t1 || time.Since(start) != 0 {
						t.Fatalf("A at its refresh point, cooling down: %v, %v after %v; want T1 at once", got, err, time.Since(start))
					}
					time.Sleep(time.Second)
				}
				c, _ := replicaManager(t, env, store)
				if _, err := c.Token(ctx); err != nil { // adopts T1 from the store, then refreshes
					t.Fatal(err)
				}
				time.Sleep(time.Second)
				t2, err := store.LoadToken(ctx, testAppID)
				if err != nil || t2.Value == t1.Value {
					t.Fatalf("store holds %v, %v; want C's new token", t2, err)
				}
				time.Sleep(30 * time.Second)
				if got, err := a.Token(ctx); err != nil || got != t2 {
					t.Errorf("A 30 s after C stored T2: %v, %v; want T2", got, err)
				}
				if calls, _ := refA.counts(); calls != calls0 {
					t.Errorf("A made %d stable_token calls during its cool-down", calls-calls0)
				}
			})
		})
	}
}

// TestForceRefused45009StopsOnlyForcing: WeChat answers 45009 to a force
// refresh (the day's force refreshes are spent). Normal fetches go on, no
// further force refresh is attempted that day, and a token another replica
// stored is adopted.
func TestForceRefused45009StopsOnlyForcing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		store := NewMemoryTokenStore()
		ctx := context.Background()
		a, refA := replicaManager(t, env, store)
		refA.set(0, 45009)
		t1, err := a.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// WeChat keeps handing out T1 in normal mode: only a force would
		// replace it, and WeChat refuses the force.
		if _, err := a.Invalidate(ctx, t1.Value); !errors.Is(err, ErrQuotaExhausted) {
			t.Fatalf("Invalidate: %v, want WeChat's 45009", err)
		}
		if _, forces := refA.counts(); forces != 1 {
			t.Fatalf("force calls = %d, want 1", forces)
		}
		if st := a.Status(); !st.CooldownUntil.IsZero() {
			t.Errorf("a refused force started a cool-down of every fetch until %v", st.CooldownUntil)
		}
		// Normal fetches go on.
		if got, err := a.Token(ctx); err != nil || got.Value != t1.Value {
			t.Fatalf("Token after the refused force: %v, %v; want T1 (normal mode)", got, err)
		}
		// No second force today, whatever the shared budget says.
		time.Sleep(time.Minute)
		_, err = a.Invalidate(ctx, t1.Value)
		var tue *TokenUnavailableError
		if !errors.As(err, &tue) || !errors.Is(err, ErrForceRefreshLimited) || !tue.Until.Equal(budget.NextMidnight(time.Now())) {
			t.Fatalf("second Invalidate: %v; want force refreshes refused until midnight UTC+8", err)
		}
		if _, forces := refA.counts(); forces != 1 {
			t.Errorf("force calls = %d, want 1", forces)
		}
		// Another replica replaces the token: A adopts it.
		b, _ := replicaManager(t, env, store)
		if _, err := b.Token(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		t2, err := b.Invalidate(ctx, t1.Value)
		if err != nil || t2.Value == t1.Value {
			t.Fatalf("B's force refresh: %v, %v", t2, err)
		}
		if got, err := a.Invalidate(ctx, t1.Value); err != nil || got != t2 {
			t.Errorf("A after B stored T2: %v, %v; want T2", got, err)
		}
	})
}

// lockStore is a shared store whose refresh lock is held elsewhere or
// cannot be asked, or whose reads fail.
type lockStore struct {
	*MemoryTokenStore
	lockErr error
	loadErr error
}

func (s *lockStore) LoadToken(ctx context.Context, appID string) (Token, error) {
	if s.loadErr != nil {
		return Token{}, s.loadErr
	}
	return s.MemoryTokenStore.LoadToken(ctx, appID)
}

func (s *lockStore) LockRefresh(context.Context, string, time.Duration) (func(context.Context) error, error) {
	return nil, s.lockErr
}

// TestClassicNeverFetchesWithoutTheLock: a classic fetch invalidates every
// other holder's token five minutes later, so in classic mode with a
// shared store no fetch is made without the fleet's refresh lock. Stable
// mode fetches anyway (normal mode is harmless in parallel).
func TestClassicNeverFetchesWithoutTheLock(t *testing.T) {
	t.Parallel()
	down := errors.New("store down (test)")
	tests := []struct {
		name  string
		store *lockStore
	}{
		{"lock held, holder stored nothing", &lockStore{lockErr: ErrLockHeld}},
		{"lock service failing", &lockStore{lockErr: down}},
		{"store unreadable", &lockStore{lockErr: ErrLockHeld, loadErr: down}},
	}
	for _, tt := range tests {
		for _, classic := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/classic=%v", tt.name, classic), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					env := newMemEnv(t)
					st := *tt.store
					st.MemoryTokenStore = NewMemoryTokenStore()
					cfg := env.config()
					cfg.Token = TokenOptions{Classic: classic, Store: &st, LockWait: 300 * time.Millisecond}
					m := newManager(t, cfg)
					tok, err := m.Token(context.Background())
					calls := env.emu.Stats().Endpoints.Token.Calls
					if !classic {
						if err != nil || tok.Value == "" {
							t.Fatalf("stable mode: %v, %v; want a normal-mode fetch", tok, err)
						}
						return
					}
					var tue *TokenUnavailableError
					if !errors.As(err, &tue) || !errors.Is(err, ErrRefreshLockNotHeld) {
						t.Fatalf("classic mode: %v, %v; want a *TokenUnavailableError matching ErrRefreshLockNotHeld", tok, err)
					}
					if calls != 0 {
						t.Errorf("classic fetches = %d, want 0", calls)
					}
				})
			})
		}
	}
}

// TestInvalidateReported: a rejection reported by a third party is
// checked with WeChat (get_api_domain_ip) before anything is spent.
func TestInvalidateReported(t *testing.T) {
	t.Parallel()
	domainIP := wxmock.EndpointAPIDomainIP
	tests := []struct {
		name      string
		revoke    bool
		fault     *wxmock.Fault // on get_api_domain_ip
		stale     bool          // report a token that is no longer current
		wantErr   error
		wantNew   bool // a token other than the reported one comes back
		wantForce int64
		wantCheck int64
	}{
		{name: "WeChat still accepts it", wantErr: ErrTokenStillValid, wantCheck: 1},
		{name: "revoked", revoke: true, wantNew: true, wantCheck: 1},
		{name: "rejected, but normal mode keeps handing it out", fault: &wxmock.Fault{Endpoint: domainIP, Kind: wxmock.FaultErrcode, Errcode: 40001}, wantNew: true, wantForce: 1, wantCheck: 1},
		{name: "check fails (-1)", fault: &wxmock.Fault{Endpoint: domainIP, Kind: wxmock.FaultErrcode, Errcode: -1}, wantErr: ErrTokenCheckFailed, wantCheck: 1},
		{name: "check fails (HTTP 502)", fault: &wxmock.Fault{Endpoint: domainIP, Kind: wxmock.FaultHTTPStatus, Status: 502}, wantErr: ErrTokenCheckFailed, wantCheck: 1},
		{name: "check fails, token revoked", revoke: true, fault: &wxmock.Fault{Endpoint: domainIP, Kind: wxmock.FaultErrcode, Errcode: -1}, wantNew: true, wantCheck: 1},
		{name: "not the current token", stale: true, wantNew: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				env := newMemEnv(t)
				m := newManager(t, env.config())
				ctx := context.Background()
				t1, err := m.Token(ctx)
				if err != nil {
					t.Fatal(err)
				}
				reported := t1.Value
				if tt.stale {
					reported = "an-old-token-0123456789"
				}
				if tt.revoke {
					if _, err := env.emu.RevokeTokens(testAppID); err != nil {
						t.Fatal(err)
					}
				}
				if tt.fault != nil {
					addFault(t, env.emu, *tt.fault)
				}
				got, err := m.InvalidateReported(ctx, reported)
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("InvalidateReported: %v, %v; want %v", got, err, tt.wantErr)
				}
				if tt.wantErr == nil && (err != nil || got.Value == "" || got.Value == reported) {
					t.Fatalf("InvalidateReported: %v, %v; want a token other than the reported one", got, err)
				}
				if tt.wantNew && got.Value == t1.Value && !tt.stale {
					t.Errorf("got the reported token back")
				}
				st := env.emu.Stats().Endpoints
				if st.StableToken.Force != tt.wantForce {
					t.Errorf("force refreshes = %d, want %d", st.StableToken.Force, tt.wantForce)
				}
				if st.APIDomainIP.Calls != tt.wantCheck {
					t.Errorf("checks = %d, want %d", st.APIDomainIP.Calls, tt.wantCheck)
				}
				if errors.Is(tt.wantErr, ErrTokenStillValid) {
					// Nothing was dropped or fetched.
					if tok, err := m.Token(ctx); err != nil || tok != t1 || st.StableToken.Calls != 1 {
						t.Errorf("after a still-valid report: %v, %v, %d fetches; want T1 still held, no fetch", tok, err, st.StableToken.Calls)
					}
				}
			})
		})
	}
}

// TestConcurrentReportsShareOneCheck: many consumers reporting the same
// token at once cost one call to WeChat.
func TestConcurrentReportsShareOneCheck(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointAPIDomainIP, Kind: wxmock.FaultLatency, LatencyMS: 200})
		m := newManager(t, env.config())
		ctx := context.Background()
		t1, err := m.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if _, err := m.InvalidateReported(ctx, t1.Value); !errors.Is(err, ErrTokenStillValid) {
					t.Errorf("InvalidateReported: %v", err)
				}
			})
		}
		wg.Wait()
		if n := env.emu.Stats().Endpoints.APIDomainIP.Calls; n != 1 {
			t.Errorf("checks = %d, want 1", n)
		}
	})
}

// TestBackgroundRefresherRecoversWithoutTraffic: every token is lost
// (revoked, and fetches refused for 5 minutes). With no request arriving,
// the refresher keeps trying, respecting the cool-downs, and holds a new
// token within the cool-down plus 30 s of WeChat accepting fetches again.
func TestBackgroundRefresherRecoversWithoutTraffic(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env := newMemEnv(t)
		var fetches fetchLog
		cfg := env.config()
		cfg.Hooks.OnTokenFetch = fetches.hook
		m := newManager(t, cfg)
		ctx := context.Background()
		t1, err := m.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.emu.RevokeTokens(testAppID); err != nil {
			t.Fatal(err)
		}
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 40164})
		// The one request that learns of the revocation.
		if _, err := m.Invalidate(ctx, t1.Value); !errors.Is(err, ErrTokenFetchRefused) {
			t.Fatalf("Invalidate: %v, want the refusal", err)
		}
		time.Sleep(5 * time.Minute)
		if m.Status().Usable {
			t.Fatal("usable while every fetch is refused")
		}
		refused := fetches.count(nil) - 1
		// Cool-downs respected: at most one call per minute.
		if refused < 5 || refused > 6 {
			t.Errorf("%d refused fetches in 5 minutes, want one per 1-minute cool-down", refused)
		}
		env.emu.ClearFaults()
		fixed := time.Now()
		for !m.Status().Usable && time.Since(fixed) <= time.Minute+30*time.Second {
			time.Sleep(time.Second)
		}
		if !m.Status().Usable {
			t.Fatalf("no usable token %v after WeChat accepted fetches again", time.Since(fixed))
		}
		for _, e := range fetches.all()[1:] {
			if e.Trigger == TriggerRequest {
				t.Errorf("a request-path fetch at %v", e.At)
			}
		}
	})
}
