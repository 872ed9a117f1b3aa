package redis

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9/logging"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/seal"
)

func TestMain(m *testing.M) {
	logging.Disable() // go-redis logs every failed dial; the down tests cause many
	os.Exit(m.Run())
}

const appA = "wx0123456789abcdef"

func newTokenStore(t *testing.T, e *env, kr *seal.Keyring) *TokenStore {
	t.Helper()
	s, err := NewTokenStore(e.c, kr, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tok(v string, exp time.Time) wxphone.Token {
	return wxphone.Token{Value: v, ExpiresAt: exp.Truncate(time.Millisecond)}
}

func TestTokenRoundTripAndTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newTokenStore(t, e, newKeyring(t))

	if _, err := s.LoadToken(ctx, appA); !errors.Is(err, wxphone.ErrTokenNotFound) {
		t.Fatalf("empty store: %v", err)
	}
	t1 := tok("ACCESS-TOKEN-one", time.Now().Add(2*time.Hour))
	got, err := s.StoreToken(ctx, appA, t1)
	if err != nil || got != t1 {
		t.Fatalf("StoreToken = %v, %v", got, err)
	}
	got, err = s.LoadToken(ctx, appA)
	if err != nil || got.Value != t1.Value || !got.ExpiresAt.Equal(t1.ExpiresAt) {
		t.Fatalf("LoadToken = %v, %v", got, err)
	}
	k, _ := s.key(appA, "token")
	if d := e.pttl(k); d < 2*time.Hour-time.Minute || d > 2*time.Hour {
		t.Errorf("key TTL %v, want about 2h (the token's life)", d)
	}
	// Another app sees nothing.
	if _, err := s.LoadToken(ctx, "wxother"); !errors.Is(err, wxphone.ErrTokenNotFound) {
		t.Errorf("other app: %v", err)
	}
	// The key expires with the token.
	if _, err := s.StoreToken(ctx, "wxshort", tok("x", time.Now().Add(300*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	e.advance(400 * time.Millisecond)
	if _, err := s.LoadToken(ctx, "wxshort"); !errors.Is(err, wxphone.ErrTokenNotFound) {
		t.Errorf("expired token still loads: %v", err)
	}
}

func TestAppIDValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newTokenStore(t, e, newKeyring(t))
	for _, id := range []string{"", "wx{1}", "wx}", "wx 1", "wx\n", strings.Repeat("a", 65), "wx\x00"} {
		if _, err := s.LoadToken(ctx, id); err == nil || errors.Is(err, wxphone.ErrTokenNotFound) {
			t.Errorf("appid %q: LoadToken %v", id, err)
		}
		if _, err := s.LockRefresh(ctx, id, time.Second); err == nil {
			t.Errorf("appid %q: lock taken", id)
		}
	}
	if _, err := NewTokenStore(e.c, newKeyring(t), StoreOptions{Prefix: "a{b"}); err == nil {
		t.Error("prefix with a brace accepted")
	}
	if _, err := NewTokenStore(e.c, nil, StoreOptions{}); err == nil {
		t.Error("nil keyring accepted")
	}
}

// Property 5: a write never replaces a token that expires later.
func TestWriteIfNewer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newTokenStore(t, e, newKeyring(t))
	base := time.Now()
	older := tok("TOKEN-older", base.Add(time.Hour))
	newer := tok("TOKEN-newer", base.Add(2*time.Hour))
	same := tok("TOKEN-same-expiry", base.Add(2*time.Hour))

	if got, _ := s.StoreToken(ctx, appA, older); got != older {
		t.Fatalf("first write returned %v", got)
	}
	if got, _ := s.StoreToken(ctx, appA, newer); got != newer {
		t.Fatalf("newer write returned %v", got)
	}
	// A stalled writer finishing late with the older token gets the newer
	// one back and changes nothing.
	for _, stale := range []wxphone.Token{older, same} {
		got, err := s.StoreToken(ctx, appA, stale)
		if err != nil || got.Value != newer.Value || !got.ExpiresAt.Equal(newer.ExpiresAt) {
			t.Errorf("StoreToken(%v) = %v, %v; want the newer token", stale, got, err)
		}
	}
	if got, _ := s.LoadToken(ctx, appA); got.Value != newer.Value {
		t.Errorf("stored %v, want the newer token", got)
	}
}

// Property 5 under contention: writers on several "replicas" store tokens
// with random expiries at once; the survivor is the latest, and nobody is
// told that an older token than its own is stored.
func TestWriteIfNewerConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	kr := newKeyring(t)
	stores := []*TokenStore{newTokenStore(t, e, kr), newTokenStore(t, e, kr), newTokenStore(t, e, kr)}
	base := time.Now().Add(time.Hour)
	var latest atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			exp := base.Add(time.Duration(rand.IntN(100000)) * time.Millisecond)
			mine := tok(fmt.Sprintf("TOKEN-%d", i), exp)
			for {
				l := latest.Load()
				if exp.UnixMilli() <= l || latest.CompareAndSwap(l, exp.UnixMilli()) {
					break
				}
			}
			got, err := stores[i%3].StoreToken(ctx, appA, mine)
			switch {
			case err != nil:
				errs <- err
			case got.ExpiresAt.Before(mine.ExpiresAt):
				errs <- fmt.Errorf("stored %v is older than mine %v", got, mine)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := stores[0].LoadToken(ctx, appA)
	if err != nil || got.ExpiresAt.UnixMilli() != latest.Load() {
		t.Errorf("final %v, %v; want expiry %v", got, err, time.UnixMilli(latest.Load()))
	}
}

// Property 6: only the token that failed is deleted.
func TestDeleteIfEqual(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newTokenStore(t, e, newKeyring(t))
	t1 := tok("TOKEN-T1", time.Now().Add(time.Hour))
	t2 := tok("TOKEN-T2", time.Now().Add(2*time.Hour))

	if ok, err := s.DeleteToken(ctx, appA, t1.Value); ok || err != nil {
		t.Fatalf("delete on an empty store: %v, %v", ok, err)
	}
	_, _ = s.StoreToken(ctx, appA, t1)
	if ok, err := s.DeleteToken(ctx, appA, t2.Value); ok || err != nil {
		t.Fatalf("delete of another token: %v, %v", ok, err)
	}
	if ok, _ := s.DeleteToken(ctx, appA, ""); ok {
		t.Fatal("delete of the empty token")
	}
	// K concurrent failures against T1 evict it once.
	var deleted atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			ok, err := s.DeleteToken(ctx, appA, t1.Value)
			if err != nil {
				t.Error(err)
			}
			if ok {
				deleted.Add(1)
			}
		})
	}
	wg.Wait()
	if deleted.Load() != 1 {
		t.Errorf("T1 deleted %d times, want 1", deleted.Load())
	}
	// T2 stored meanwhile is never evicted by late errors against T1.
	_, _ = s.StoreToken(ctx, appA, t1)
	for i := range 40 {
		wg.Go(func() {
			if i == 10 {
				if _, err := s.StoreToken(ctx, appA, t2); err != nil {
					t.Error(err)
				}
				return
			}
			if _, err := s.DeleteToken(ctx, appA, t1.Value); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for range 5 {
		if ok, _ := s.DeleteToken(ctx, appA, t1.Value); ok {
			t.Fatal("a late delete of T1 evicted T2")
		}
	}
	if got, err := s.LoadToken(ctx, appA); err != nil || got.Value != t2.Value {
		t.Errorf("after the storm: %v, %v; want T2", got, err)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	ka, kb := make([]byte, seal.KeySize), make([]byte, seal.KeySize)
	ka[0], kb[0] = 1, 2
	krA, _ := seal.NewKeyring(ka)
	krBA, _ := seal.NewKeyring(kb, ka) // new key first, old still held
	krB, _ := seal.NewKeyring(kb)
	old := newTokenStore(t, e, krA)
	rotated := newTokenStore(t, e, krBA)
	t1 := tok("TOKEN-rot", time.Now().Add(time.Hour))
	_, _ = old.StoreToken(ctx, appA, t1)
	if got, err := rotated.LoadToken(ctx, appA); err != nil || got.Value != t1.Value {
		t.Fatalf("rotated replica cannot read the old replica's token: %v, %v", got, err)
	}
	if ok, err := rotated.DeleteToken(ctx, appA, t1.Value); !ok || err != nil {
		t.Fatalf("rotated replica cannot delete the old replica's token: %v, %v", ok, err)
	}
	// Once the old key is dropped, its tokens are not found (nothing is
	// logged but the appid) and are replaced.
	_, _ = old.StoreToken(ctx, appA, t1)
	var logs bytes.Buffer
	newOnly, _ := NewTokenStore(e.c, krB, StoreOptions{Prefix: e.prefix, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := newOnly.LoadToken(ctx, appA); !errors.Is(err, wxphone.ErrTokenNotFound) {
		t.Fatalf("unreadable token: %v", err)
	}
	t0 := tok("TOKEN-earlier", time.Now().Add(30*time.Minute)) // expires before the unreadable one
	if got, err := newOnly.StoreToken(ctx, appA, t0); err != nil || got != t0 {
		t.Fatalf("StoreToken over an unreadable token = %v, %v", got, err)
	}
	if got, err := newOnly.LoadToken(ctx, appA); err != nil || got.Value != t0.Value {
		t.Fatalf("after replacement: %v, %v", got, err)
	}
	if strings.Contains(logs.String(), "TOKEN") || !strings.Contains(logs.String(), appA) {
		t.Errorf("logs: %s", logs.String())
	}
}

func TestTamperedValues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	kr := newKeyring(t)
	s := newTokenStore(t, e, kr)
	k, _ := s.key(appA, "token")
	t1 := tok("TOKEN-tamper", time.Now().Add(time.Hour))

	tamper := []struct {
		name string
		do   func()
	}{
		{"flipped ciphertext byte", func() {
			v := []byte(e.c.HGet(ctx, k, "v").Val())
			v[len(v)-1] ^= 1
			e.c.HSet(ctx, k, "v", v)
		}},
		{"expiry changed in clear", func() {
			e.c.HSet(ctx, k, "exp", t1.ExpiresAt.Add(time.Hour).UnixMilli())
		}},
		{"expiry field removed", func() { e.c.HDel(ctx, k, "exp") }},
		{"value field removed", func() { e.c.HDel(ctx, k, "v") }},
		{"garbage value", func() { e.c.HSet(ctx, k, "v", "not sealed at all") }},
		{"value moved from another app", func() {
			_, _ = s.StoreToken(ctx, "wxother", tok("TOKEN-other", time.Now().Add(5*time.Hour)))
			ko, _ := s.key("wxother", "token")
			e.c.HSet(ctx, k, "v", e.c.HGet(ctx, ko, "v").Val(), "exp", e.c.HGet(ctx, ko, "exp").Val())
		}},
		{"sealed with a foreign key", func() {
			foreign := newTokenStore(t, e, newKeyring(t))
			e.c.Del(ctx, k)
			_, _ = foreign.StoreToken(ctx, appA, tok("TOKEN-foreign", time.Now().Add(5*time.Hour)))
		}},
	}
	for _, tc := range tamper {
		e.c.Del(ctx, k)
		if _, err := s.StoreToken(ctx, appA, t1); err != nil {
			t.Fatal(err)
		}
		tc.do()
		if got, err := s.LoadToken(ctx, appA); !errors.Is(err, wxphone.ErrTokenNotFound) {
			t.Errorf("%s: LoadToken = %v, %v; want not found", tc.name, got, err)
		}
		// A fresh token replaces the unreadable value, whatever its expiry.
		fresh := tok("TOKEN-fresh", time.Now().Add(40*time.Minute))
		if got, err := s.StoreToken(ctx, appA, fresh); err != nil || got != fresh {
			t.Errorf("%s: StoreToken = %v, %v", tc.name, got, err)
		}
		if got, err := s.LoadToken(ctx, appA); err != nil || got.Value != fresh.Value {
			t.Errorf("%s: after replacement LoadToken = %v, %v", tc.name, got, err)
		}
	}
}

// Property 26 style: nothing in Redis but ciphertext, expiries and keyed
// fingerprints; no token, no plain hash of it, no AppSecret.
func TestTokenSealedAtRest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	kr := newKeyring(t)
	s := newTokenStore(t, e, kr)
	value := "ACCESS_TOKEN_" + randHex(24)
	_, _ = s.StoreToken(ctx, appA, tok(value, time.Now().Add(time.Hour)))
	if ok, _, err := s.ReserveForceRefresh(ctx, appA, randHex(8), time.Now(), 30*time.Second, 10); !ok || err != nil {
		t.Fatal(ok, err)
	}
	unlock, err := s.LockRefresh(ctx, appA, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock(ctx)
	checkAtRest(t, e, []string{value}, "")
}

var (
	digits = regexp.MustCompile(`^[0-9]+$`)
	hex64  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// checkAtRest scans every key of the test: no key or value may contain a
// secret, or its plain SHA-256, and token hashes hold only v (sealed), exp
// (digits) and fp (a keyed hash).
func checkAtRest(t *testing.T, e *env, secrets []string, appSecret string) {
	t.Helper()
	ctx := context.Background()
	var forbidden []string
	for _, s := range append(secrets, appSecret) {
		if s == "" {
			continue
		}
		sum := sha256.Sum256([]byte(s))
		forbidden = append(forbidden, s, hex.EncodeToString(sum[:]), string(sum[:]))
	}
	check := func(where, v string) {
		for _, f := range forbidden {
			if strings.Contains(v, f) {
				t.Errorf("%s holds a secret in clear (or its plain hash)", where)
			}
		}
	}
	keys := e.keys()
	if len(keys) == 0 {
		t.Fatal("no keys written")
	}
	for _, k := range keys {
		check("key name "+k, k)
		switch typ := e.c.Type(ctx, k).Val(); typ {
		case "hash":
			h := e.c.HGetAll(ctx, k).Val()
			for f, v := range h {
				check(k+" field "+f, f)
				check(k+" value of "+f, v)
			}
			if strings.HasSuffix(k, ":token") {
				if len(h) != 3 || !digits.MatchString(h["exp"]) || !hex64.MatchString(h["fp"]) || len(h["v"]) < 4+12+16 {
					t.Errorf("token hash %s has unexpected fields %q", k, keysOf(h))
				}
			}
		case "string":
			check(k, e.c.Get(ctx, k).Val())
		default:
			t.Errorf("%s: unexpected type %s", k, typ)
		}
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// budget.Force, mirrored: the script's answers equal MemoryTokenStore's for
// the same sequence of reservations, across UTC+8 midnights.
func TestForceBudgetMatchesMemory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newTokenStore(t, e, newKeyring(t))
	mem := wxphone.NewMemoryTokenStore()
	zone := time.FixedZone("UTC+8", 8*3600)
	now := time.Date(2026, 3, 1, 23, 50, 0, 0, zone) // ten minutes before WeChat's midnight
	r := rand.New(rand.NewPCG(1, 2))
	steps := []time.Duration{0, 10 * time.Second, 29*time.Second + 999*time.Millisecond, 30 * time.Second, 45 * time.Second, 5 * time.Minute, 3 * time.Hour}
	for i := range 400 {
		now = now.Add(steps[r.IntN(len(steps))])
		interval := 30 * time.Second
		limit := 3 + r.IntN(2)
		ok1, after1, err1 := mem.ReserveForceRefresh(ctx, appA, randHex(8), now, interval, limit)
		ok2, after2, err2 := s.ReserveForceRefresh(ctx, appA, randHex(8), now, interval, limit)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if ok1 != ok2 || after1 != after2 {
			t.Fatalf("step %d at %v: memory (%v, %v), redis (%v, %v)", i, now, ok1, after1, ok2, after2)
		}
	}
}

func TestForceBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	kr := newKeyring(t)
	s1, s2 := newTokenStore(t, e, kr), newTokenStore(t, e, kr) // two replicas
	zone := time.FixedZone("UTC+8", 8*3600)
	t0 := time.Date(2026, 3, 1, 23, 58, 0, 0, zone)
	reserve := func(s *TokenStore, at time.Time, limit int) (bool, time.Duration) {
		t.Helper()
		ok, after, err := s.ReserveForceRefresh(ctx, appA, randHex(8), at, 30*time.Second, limit)
		if err != nil {
			t.Fatal(err)
		}
		return ok, after
	}
	if ok, _ := reserve(s1, t0, 2); !ok {
		t.Fatal("first force refused")
	}
	// Spacing is fleet-wide.
	if ok, after := reserve(s2, t0.Add(10*time.Second), 2); ok || after != 20*time.Second {
		t.Fatalf("second replica within 30s: %v, %v", ok, after)
	}
	if ok, _ := reserve(s2, t0.Add(30*time.Second), 2); !ok {
		t.Fatal("force after 30s refused")
	}
	// Daily limit: 2 used; the next is refused until WeChat's midnight.
	ok, after := reserve(s1, t0.Add(time.Minute), 2)
	if ok || after != time.Minute {
		t.Fatalf("over the daily limit: %v, %v; want refused for 1m (until 00:00 UTC+8)", ok, after)
	}
	// Day rollover resets the count.
	if ok, _ := reserve(s1, t0.Add(2*time.Minute), 2); !ok {
		t.Fatal("force after midnight refused")
	}
	k, _ := s1.key(appA, "force")
	if d := e.pttl(k); d < 24*time.Hour || d > 48*time.Hour {
		t.Errorf("force key TTL %v", d)
	}
	// Separate apps have separate budgets.
	if ok, _, _ := s1.ReserveForceRefresh(ctx, "wxother", randHex(8), t0.Add(2*time.Minute), 30*time.Second, 2); !ok {
		t.Error("another app's budget is shared")
	}
}

func TestLockRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	kr := newKeyring(t)
	s1, s2 := newTokenStore(t, e, kr), newTokenStore(t, e, kr)

	unlock, err := s1.LockRefresh(ctx, appA, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.LockRefresh(ctx, appA, time.Second); !errors.Is(err, wxphone.ErrLockHeld) {
		t.Fatalf("second holder: %v, want ErrLockHeld", err)
	}
	if _, err := s2.LockRefresh(ctx, "wxother", time.Second); err != nil {
		t.Fatalf("another app's lock: %v", err)
	}
	if err := unlock(ctx); err != nil {
		t.Fatal(err)
	}
	unlock2, err := s2.LockRefresh(ctx, appA, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	// The lock expires; a late unlock by its former holder does not
	// release the next holder's lock.
	e.advance(400 * time.Millisecond)
	unlock3, err := s1.LockRefresh(ctx, appA, time.Minute)
	if err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if err := unlock2(ctx); err == nil {
		t.Error("late unlock reported success")
	}
	if _, err := s2.LockRefresh(ctx, appA, time.Second); !errors.Is(err, wxphone.ErrLockHeld) {
		t.Fatalf("late unlock released someone else's lock: %v", err)
	}
	if err := unlock3(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.LockRefresh(ctx, appA, 0); err == nil {
		t.Error("zero TTL accepted")
	}
}
