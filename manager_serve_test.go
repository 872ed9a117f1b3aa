package wxphone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxphone/wxphone/internal/budget"
	"github.com/wxphone/wxphone/wxmock"
)

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
