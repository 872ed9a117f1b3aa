package redis

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/seal"
)

// stubWeChat serves POST /cgi-bin/stable_token slowly and counts fetches.
type stubWeChat struct {
	*httptest.Server
	fetches, classic atomic.Int32
	value            atomic.Pointer[string] // the token WeChat hands out
}

func (s *stubWeChat) token() string { return *s.value.Load() }

// rotate makes WeChat hand out a new token, as after a rotation elsewhere.
func (s *stubWeChat) rotate() string {
	v := "STABLE_TOKEN_" + randHex(24)
	s.value.Store(&v)
	return v
}

func newStubWeChat(t *testing.T, appID, secret string, delay time.Duration) *stubWeChat {
	s := &stubWeChat{}
	s.rotate()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cgi-bin/stable_token", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			AppID        string `json:"appid"`
			Secret       string `json:"secret"`
			ForceRefresh bool   `json:"force_refresh"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req); err != nil || req.AppID != appID || req.Secret != secret {
			_, _ = fmt.Fprint(w, `{"errcode":40013,"errmsg":"invalid appid"}`)
			return
		}
		s.fetches.Add(1)
		time.Sleep(delay)
		_, _ = fmt.Fprintf(w, `{"access_token":%q,"expires_in":7200}`, s.token())
	})
	mux.HandleFunc("/cgi-bin/token", func(w http.ResponseWriter, r *http.Request) {
		s.classic.Add(1)
		http.Error(w, "classic token endpoint must not be used", http.StatusTeapot)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// Property 2 with this store: three replicas sharing Redis, cold, 300
// concurrent Token calls spread over them: exactly one upstream fetch, and
// everyone gets the same token. Afterwards Redis holds neither the token
// nor the AppSecret in clear.
func TestManagersShareOneFetch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	const appID = "wx00000000000000aa"
	secret := "APPSECRET_" + randHex(16)
	wx := newStubWeChat(t, appID, secret, 200*time.Millisecond)
	kr := newKeyring(t)

	managers := newManagers(t, e, kr, appID, secret, wx.URL, 3)

	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make(chan error, 300)
	for i := range 300 {
		wg.Go(func() {
			<-start
			tok, err := managers[i%3].Token(ctx)
			switch {
			case err != nil:
				results <- err
			case tok.Value != wx.token():
				results <- fmt.Errorf("got %v, want the fetched token", tok)
			}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	for err := range results {
		t.Error(err)
	}
	if n := wx.fetches.Load(); n != 1 {
		t.Errorf("%d upstream fetches for a cold burst over 3 replicas, want 1", n)
	}
	if n := wx.classic.Load(); n != 0 {
		t.Errorf("%d calls to /cgi-bin/token", n)
	}
	checkAtRest(t, e, []string{wx.token()}, secret)
}

// newManagers returns n TokenManagers ("replicas"), each with its own
// TokenStore over the test's Redis.
func newManagers(t *testing.T, e *env, kr *seal.Keyring, appID, secret, baseURL string, n int) []*wxphone.TokenManager {
	t.Helper()
	var managers []*wxphone.TokenManager
	for range n {
		store, err := NewTokenStore(e.c, kr, e.opts())
		if err != nil {
			t.Fatal(err)
		}
		m, err := wxphone.NewTokenManager(wxphone.TokenConfig{
			AppID: appID, Secret: wxphone.Secret(secret), BaseURL: baseURL,
			Token:  wxphone.TokenOptions{Store: store},
			Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		managers = append(managers, m)
	}
	return managers
}

// Property 6 with this store: WeChat has moved on from T1; 30 requests on
// three replicas report T1 rejected at once. T1 is replaced with one
// fetch, everyone ends up with T2, and T2 stays stored.
func TestManagersInvalidateOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	const appID = "wx00000000000000bb"
	secret := "APPSECRET_" + randHex(16)
	wx := newStubWeChat(t, appID, secret, 100*time.Millisecond)
	kr := newKeyring(t)
	managers := newManagers(t, e, kr, appID, secret, wx.URL, 3)
	t1, err := managers[0].Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range managers[1:] {
		if got, err := m.Token(ctx); err != nil || got.Value != t1.Value {
			t.Fatalf("replica got %v, %v", got, err)
		}
	}
	t2 := wx.rotate()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 30 {
		wg.Go(func() {
			<-start
			got, err := managers[i%3].Invalidate(ctx, t1.Value)
			if err != nil || got.Value != t2 {
				t.Errorf("Invalidate = %v, %v; want T2", got, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := wx.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (the first token and its one replacement)", n)
	}
	// Late reports against T1 never evict T2.
	for _, m := range managers {
		if got, err := m.Invalidate(ctx, t1.Value); err != nil || got.Value != t2 {
			t.Errorf("late Invalidate = %v, %v", got, err)
		}
	}
	store, _ := NewTokenStore(e.c, kr, e.opts())
	if got, err := store.LoadToken(ctx, appID); err != nil || got.Value != t2 {
		t.Errorf("stored %v, %v; want T2", got, err)
	}
	if n := wx.fetches.Load(); n != 2 {
		t.Errorf("late reports caused fetches: %d", n)
	}
}

// tWriter sends log lines to the test's log, so that a failure shows why
// a replica fetched.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
