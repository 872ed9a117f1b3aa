package redis

import (
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/replay"
)

func newReplayStore(t *testing.T, e *env) *ReplayStore {
	t.Helper()
	s, err := NewReplayStore(e.c, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var claimIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestReplayClaimComplete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	key := randHex(32)
	lease := time.Now().Add(10 * time.Second).Truncate(time.Millisecond)

	if _, err := s.Get(ctx, key); !errors.Is(err, replay.ErrNotFound) {
		t.Fatalf("Get on nothing: %v", err)
	}
	rec, claimed, err := s.Claim(ctx, key, "owner-1", lease, 5*time.Minute)
	if err != nil || !claimed {
		t.Fatalf("Claim = %v, %v", claimed, err)
	}
	if rec.State != replay.Pending || !claimIDPattern.MatchString(rec.ClaimID) || rec.Owner != "owner-1" || !rec.LeaseUntil.Equal(lease) || rec.Tainted || rec.Sealed != nil {
		t.Fatalf("claimed record %+v", rec)
	}
	if d := e.pttl(e.prefix + ":replay:" + key); d < 5*time.Minute-time.Minute || d > 5*time.Minute {
		t.Errorf("TTL %v, want 5m", d)
	}
	got, err := s.Get(ctx, key)
	if err != nil || got.State != replay.Pending || got.ClaimID != rec.ClaimID || got.Owner != "owner-1" || !got.LeaseUntil.Equal(lease) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	// A duplicate gets the pending record, not a claim.
	dup, claimed, err := s.Claim(ctx, key, "owner-2", lease.Add(time.Minute), time.Hour)
	if err != nil || claimed || dup.ClaimID != rec.ClaimID || dup.Owner != "owner-1" || dup.State != replay.Pending {
		t.Fatalf("duplicate Claim = %+v, %v, %v", dup, claimed, err)
	}
	// Only the claim's holder completes it.
	if err := s.Complete(ctx, key, "not-the-claim", []byte("x")); !errors.Is(err, replay.ErrNotClaimed) {
		t.Fatalf("Complete with a wrong claim id: %v", err)
	}
	e.advance(50 * time.Millisecond)
	ttlBefore := e.pttl(e.prefix + ":replay:" + key)
	sealed := []byte{0, 1, 2, 0xff, 'x'}
	if err := s.Complete(ctx, key, rec.ClaimID, sealed); err != nil {
		t.Fatal(err)
	}
	if d := e.pttl(e.prefix + ":replay:" + key); d > ttlBefore || d <= 0 {
		t.Errorf("Complete changed the TTL: %v, before %v", d, ttlBefore)
	}
	got, err = s.Get(ctx, key)
	if err != nil || got.State != replay.Done || string(got.Sealed) != string(sealed) || got.ClaimID != rec.ClaimID {
		t.Fatalf("after Complete: %+v, %v", got, err)
	}
	if err := s.Complete(ctx, key, rec.ClaimID, []byte("again")); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("second Complete: %v", err)
	}
	if err := s.Release(ctx, key, rec.ClaimID, false); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("Release of a done record: %v", err)
	}
	done, claimed, err := s.Claim(ctx, key, "owner-1", lease, time.Hour)
	if err != nil || claimed || done.State != replay.Done || string(done.Sealed) != string(sealed) {
		t.Errorf("Claim of a done record = %+v, %v, %v", done, claimed, err)
	}
}

func TestReplayReleaseAndTaint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	key := randHex(32)
	rk := e.prefix + ":replay:" + key
	lease := time.Now().Add(10 * time.Second)

	first, _, err := s.Claim(ctx, key, "owner-1", lease, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, key, "someone-else", true); !errors.Is(err, replay.ErrNotClaimed) {
		t.Fatalf("Release with a wrong claim id: %v", err)
	}
	if err := s.Release(ctx, key, first.ClaimID, true); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, key)
	if got.State != replay.Released || !got.Tainted {
		t.Fatalf("after Release: %+v", got)
	}
	e.advance(100 * time.Millisecond)
	ttlBefore := e.pttl(rk)
	// A released record is taken over, keeping its expiry and taint.
	second, claimed, err := s.Claim(ctx, key, "owner-2", lease, time.Hour)
	if err != nil || !claimed || second.State != replay.Pending || second.ClaimID == first.ClaimID || second.Owner != "owner-2" || !second.Tainted {
		t.Fatalf("takeover = %+v, %v, %v", second, claimed, err)
	}
	if d := e.pttl(rk); d > ttlBefore || d > time.Minute {
		t.Errorf("takeover changed the expiry: %v (before %v)", d, ttlBefore)
	}
	// The first claim is dead.
	if err := s.Complete(ctx, key, first.ClaimID, []byte("late")); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("Complete by the former claimant: %v", err)
	}
	// A taint is never cleared.
	if err := s.Release(ctx, key, second.ClaimID, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, key); got.State != replay.Released || !got.Tainted {
		t.Errorf("taint cleared: %+v", got)
	}
	// An untainted release stays untainted.
	k2 := randHex(32)
	r, _, _ := s.Claim(ctx, k2, "o", lease, time.Minute)
	_ = s.Release(ctx, k2, r.ClaimID, false)
	if r2, claimed, _ := s.Claim(ctx, k2, "o", lease, time.Minute); !claimed || r2.Tainted {
		t.Errorf("untainted takeover = %+v, %v", r2, claimed)
	}
}

func TestReplayLeaseAndTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	key := randHex(32)
	// A pending record past its lease is still returned, not taken over:
	// the caller decides (the code may have been used).
	past := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	rec, _, _ := s.Claim(ctx, key, "o", past, time.Minute)
	got, claimed, err := s.Claim(ctx, key, "o", time.Now().Add(time.Minute), time.Minute)
	if err != nil || claimed || got.ClaimID != rec.ClaimID || !got.LeaseUntil.Equal(past) {
		t.Fatalf("Claim of a stale pending record = %+v, %v, %v", got, claimed, err)
	}
	// The record expires after the TTL given at claim time; the claim is
	// then gone.
	k2 := randHex(32)
	r2, _, _ := s.Claim(ctx, k2, "o", time.Now().Add(time.Minute), 300*time.Millisecond)
	e.advance(400 * time.Millisecond)
	if _, err := s.Get(ctx, k2); !errors.Is(err, replay.ErrNotFound) {
		t.Errorf("expired record: %v", err)
	}
	if err := s.Complete(ctx, k2, r2.ClaimID, []byte("x")); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("Complete after expiry: %v", err)
	}
	if _, err := s.Get(ctx, k2); !errors.Is(err, replay.ErrNotFound) {
		t.Errorf("Complete after expiry created a record: %v", err)
	}
	if _, _, err := s.Claim(ctx, key, "o", time.Now(), 0); err == nil {
		t.Error("zero TTL accepted")
	}
	if _, err := s.Get(ctx, "bad key"); err == nil || errors.Is(err, replay.ErrNotFound) {
		t.Errorf("key with a space: %v", err)
	}
}

// Property 13's core: of 50 simultaneous claims (over several replicas'
// stores), exactly one wins and everybody sees the winner's claim.
func TestReplayConcurrentClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	stores := []*ReplayStore{newReplayStore(t, e), newReplayStore(t, e), newReplayStore(t, e)}
	for round := range 3 {
		key := randHex(32)
		var mu sync.Mutex
		winners := 0
		ids := map[string]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 50 {
			wg.Go(func() {
				<-start
				rec, claimed, err := stores[i%3].Claim(ctx, key, "o", time.Now().Add(time.Minute), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if claimed {
					winners++
				}
				ids[rec.ClaimID]++
			})
		}
		close(start)
		wg.Wait()
		if winners != 1 || len(ids) != 1 {
			t.Errorf("round %d: %d winners, %d distinct claim ids", round, winners, len(ids))
		}
	}
}
