package wxphone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

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

func TestMemoryTokenStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewMemoryTokenStore()
	base := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	tok := func(v string, h int) Token { return Token{Value: v, ExpiresAt: base.Add(time.Duration(h) * time.Hour)} }
	if _, err := s.LoadToken(ctx, "a"); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("LoadToken(empty) = %v", err)
	}
	steps := []struct {
		store Token
		want  Token // stored afterwards
	}{
		{tok("T1", 2), tok("T1", 2)},
		{tok("T0", 1), tok("T1", 2)},  // older: refused
		{tok("T1b", 2), tok("T1", 2)}, // same expiry: refused
		{tok("T2", 3), tok("T2", 3)},  // newer: stored
		{tok("T1", 2), tok("T2", 3)},  // a stalled writer of T1: refused
	}
	for i, st := range steps {
		got, err := s.StoreToken(ctx, "a", st.store)
		if err != nil || got != st.want {
			t.Errorf("step %d: StoreToken(%v) = %v, %v; want %v", i, st.store, got, err, st.want)
		}
	}
	if got, err := s.LoadToken(ctx, "a"); err != nil || got != tok("T2", 3) {
		t.Errorf("LoadToken = %v, %v", got, err)
	}
	if _, err := s.LoadToken(ctx, "b"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("app b sees app a's token: %v", err)
	}
	if ok, _ := s.DeleteToken(ctx, "a", "T1"); ok {
		t.Error("DeleteToken(T1) deleted T2")
	}
	if ok, _ := s.DeleteToken(ctx, "b", "T2"); ok {
		t.Error("DeleteToken on app b deleted app a's token")
	}
	if ok, _ := s.DeleteToken(ctx, "a", ""); ok {
		t.Error("DeleteToken(\"\") deleted")
	}
	if ok, _ := s.DeleteToken(ctx, "a", "T2"); !ok {
		t.Error("DeleteToken(T2) did not delete")
	}
	if _, err := s.LoadToken(ctx, "a"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("LoadToken after delete = %v", err)
	}
	// After a delete any token may be stored again.
	if got, _ := s.StoreToken(ctx, "a", tok("T1", 2)); got.Value != "T1" {
		t.Errorf("StoreToken after delete = %v", got)
	}
}

func TestMemoryTokenStoreForceReservations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewMemoryTokenStore()
	now := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC) // 18:00 UTC+8
	for i := range 10 {
		ok, after, err := s.ReserveForceRefresh(ctx, "a", newReservationID(), now, 30*time.Second, 10)
		if err != nil || !ok || after != 0 {
			t.Fatalf("reservation %d refused: %v %v %v", i, ok, after, err)
		}
		if ok, after, _ := s.ReserveForceRefresh(ctx, "a", newReservationID(), now.Add(29*time.Second), 30*time.Second, 10); ok || after != time.Second {
			t.Fatalf("reservation 29 s later: %v, %v; want refused for 1s", ok, after)
		}
		if ok, _, _ := s.ReserveForceRefresh(ctx, "b", newReservationID(), now, 30*time.Second, 10); !ok && i == 0 {
			t.Fatal("app b shares app a's budget")
		}
		now = now.Add(30 * time.Second)
	}
	ok, after, _ := s.ReserveForceRefresh(ctx, "a", newReservationID(), now, 30*time.Second, 10)
	midnight := time.Date(2024, 3, 1, 16, 0, 0, 0, time.UTC)
	if ok || after != midnight.Sub(now) {
		t.Fatalf("11th reservation: %v, %v; want refused until %v", ok, after, midnight)
	}
	if ok, _, _ := s.ReserveForceRefresh(ctx, "a", newReservationID(), midnight, 30*time.Second, 10); !ok {
		t.Error("refused after the UTC+8 midnight")
	}
}

func TestTokenOptionsValidation(t *testing.T) {
	t.Parallel()
	bad := []TokenOptions{
		{Margin: 10 * time.Second},
		{Margin: 301 * time.Second},
		{Classic: true, Margin: 2 * time.Hour},
		{ForceInterval: 10 * time.Second},
		{ForceDailyBudget: 20},
		{ForceDailyBudget: -1},
		{RefreshTimeout: -time.Second},
		{QuotaCooldown: -time.Second},
	}
	for _, o := range bad {
		if _, err := NewTokenManager(TokenConfig{AppID: testAppID, Secret: testSecret, Token: o}); err == nil {
			t.Errorf("NewTokenManager accepted %+v", o)
		}
	}
	good := []TokenOptions{{}, {Margin: 30 * time.Second}, {Classic: true, Margin: time.Hour}, {ForceDailyBudget: 19}, {ForceInterval: time.Minute}}
	for _, o := range good {
		m, err := NewTokenManager(TokenConfig{AppID: testAppID, Secret: testSecret, Token: o})
		if err != nil {
			t.Errorf("NewTokenManager(%+v): %v", o, err)
			continue
		}
		_ = m.Close()
	}
	for _, cfg := range []Config{
		{},
		{AppID: testAppID},                       // no secret, no token source
		{AppID: "has space", Secret: testSecret}, // bad appid
		{AppID: strings.Repeat("w", 65), Secret: testSecret},
		{AppID: testAppID, Secret: testSecret, BaseURL: "http://api.weixin.qq.com"},
	} {
		if c, err := New(cfg); err == nil {
			_ = c.Close()
			t.Errorf("New accepted %+v", cfg)
		}
	}
}
