package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone/internal/replaytest"
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

// recKey is the Redis key of a record.
func (e *env) recKey(key string) string { return e.prefix + ":replay:{" + key[:1] + "}:" + key }

func claimOf(key, id, owner string, lease time.Time, ttl time.Duration) replay.Claim {
	return replay.Claim{Key: key, ID: id, Owner: owner, Lease: lease, TTL: ttl}
}

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
	res, err := s.Claim(ctx, claimOf(key, "claim-1", "owner-1", lease, 5*time.Minute))
	rec := res.Record
	if err != nil || !res.Claimed || res.Settling || res.Epoch.ID == "" {
		t.Fatalf("Claim = %+v, %v", res, err)
	}
	if rec.State != replay.Pending || rec.ClaimID != "claim-1" || rec.Owner != "owner-1" || !rec.LeaseUntil.Equal(lease) || rec.Tainted || rec.Sealed != nil {
		t.Fatalf("claimed record %+v", rec)
	}
	if d := e.pttl(e.recKey(key)); d < 5*time.Minute-time.Minute || d > 5*time.Minute {
		t.Errorf("TTL %v, want 5m", d)
	}
	got, err := s.Get(ctx, key)
	if err != nil || got.State != replay.Pending || got.ClaimID != "claim-1" || got.Owner != "owner-1" || !got.LeaseUntil.Equal(lease) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	// A duplicate gets the pending record, not a claim.
	dup, err := s.Claim(ctx, claimOf(key, "claim-2", "owner-2", lease.Add(time.Minute), time.Hour))
	if err != nil || dup.Claimed || dup.Record.ClaimID != "claim-1" || dup.Record.Owner != "owner-1" || dup.Record.State != replay.Pending {
		t.Fatalf("duplicate Claim = %+v, %v", dup, err)
	}
	// Only the claim's holder completes it.
	if err := s.Complete(ctx, key, "not-the-claim", []byte("x"), true); !errors.Is(err, replay.ErrNotClaimed) {
		t.Fatalf("Complete with a wrong claim id: %v", err)
	}
	e.advance(50 * time.Millisecond)
	ttlBefore := e.pttl(e.recKey(key))
	sealed := []byte{0, 1, 2, 0xff, 'x'}
	if err := s.Complete(ctx, key, "claim-1", sealed, true); err != nil {
		t.Fatal(err)
	}
	if d := e.pttl(e.recKey(key)); d > ttlBefore || d <= 0 {
		t.Errorf("Complete changed the TTL: %v, before %v", d, ttlBefore)
	}
	got, err = s.Get(ctx, key)
	if err != nil || got.State != replay.Done || string(got.Sealed) != string(sealed) || got.ClaimID != "claim-1" || !got.Number {
		t.Fatalf("after Complete: %+v, %v", got, err)
	}
	if err := s.Release(ctx, key, "claim-1", false); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("Release of a done record: %v", err)
	}
	done, err := s.Claim(ctx, claimOf(key, "claim-3", "owner-1", lease, time.Hour))
	if err != nil || done.Claimed || done.Record.State != replay.Done || string(done.Record.Sealed) != string(sealed) {
		t.Errorf("Claim of a done record = %+v, %v", done, err)
	}
}

// TestReplayRepeatedCallsAreIdempotent: go-redis resends a script whose
// reply was slow (its read timeout, MaxRetries): Redis then runs it twice.
// A hook runs every script twice here. Each operation must have the effect
// of one: before claim ids were the caller's, the second run of a claim
// found its own pending record and reported someone else's exchange in
// flight, for a code that never left wxphone.
func TestReplayRepeatedCallsAreIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	twice, err := Open(ctx, e.url(), envOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = twice.Close() })
	var runs sync.Map
	twice.AddHook(runTwice{&runs})
	s, err := NewReplayStore(twice, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	lease := time.Now().Add(time.Minute)
	key := randHex(32)
	res, err := s.Claim(ctx, claimOf(key, "c1", "o", lease, time.Minute))
	if err != nil || !res.Claimed || res.Record.ClaimID != "c1" {
		t.Fatalf("claim run twice = %+v, %v; want the caller's claim", res, err)
	}
	if err := s.Complete(ctx, key, "c1", []byte("x"), true); err != nil {
		t.Fatalf("complete run twice: %v", err)
	}
	k2 := randHex(32)
	if res, err := s.Claim(ctx, claimOf(k2, "c2", "o", lease, time.Minute)); err != nil || !res.Claimed {
		t.Fatal(res, err)
	}
	if err := s.Release(ctx, k2, "c2", true); err != nil {
		t.Fatalf("release run twice: %v", err)
	}
	if got, _ := s.Get(ctx, k2); got.State != replay.Released || !got.Tainted {
		t.Fatalf("after a release run twice: %+v", got)
	}
	n := 0
	runs.Range(func(_, _ any) bool { n++; return true })
	if n == 0 {
		t.Fatal("the hook ran no script twice: the test proves nothing")
	}
}

// runTwice is a go-redis hook that sends every script call twice and
// returns the second reply, as a client retry after a slow reply does.
type runTwice struct{ runs *sync.Map }

func (runTwice) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h runTwice) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if name := strings.ToLower(cmd.Name()); name == "evalsha" || name == "eval" {
			if err := next(ctx, cmd); err == nil || !strings.Contains(err.Error(), "NOSCRIPT") {
				h.runs.Store(cmd, true)
			}
		}
		return next(ctx, cmd)
	}
}
func (runTwice) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func TestReplayReleaseAndTaint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	key := randHex(32)
	rk := e.recKey(key)
	lease := time.Now().Add(10 * time.Second)

	if _, err := s.Claim(ctx, claimOf(key, "first", "owner-1", lease, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, key, "someone-else", true); !errors.Is(err, replay.ErrNotClaimed) {
		t.Fatalf("Release with a wrong claim id: %v", err)
	}
	if err := s.Release(ctx, key, "first", true); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, key)
	if got.State != replay.Released || !got.Tainted {
		t.Fatalf("after Release: %+v", got)
	}
	e.advance(100 * time.Millisecond)
	ttlBefore := e.pttl(rk)
	// A released record is taken over, keeping its expiry and taint.
	second, err := s.Claim(ctx, claimOf(key, "second", "owner-2", lease, time.Hour))
	if err != nil || !second.Claimed || second.Record.State != replay.Pending || second.Record.ClaimID != "second" || second.Record.Owner != "owner-2" || !second.Record.Tainted {
		t.Fatalf("takeover = %+v, %v", second, err)
	}
	if d := e.pttl(rk); d > ttlBefore || d > time.Minute {
		t.Errorf("takeover changed the expiry: %v (before %v)", d, ttlBefore)
	}
	// The first claim is dead.
	if err := s.Complete(ctx, key, "first", []byte("late"), true); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("Complete by the former claimant: %v", err)
	}
	// A taint is never cleared.
	if err := s.Release(ctx, key, "second", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, key); got.State != replay.Released || !got.Tainted {
		t.Errorf("taint cleared: %+v", got)
	}
	// An untainted release stays untainted; a tainted claim taints.
	k2 := randHex(32)
	_, _ = s.Claim(ctx, claimOf(k2, "a", "o", lease, time.Minute))
	_ = s.Release(ctx, k2, "a", false)
	if r2, _ := s.Claim(ctx, claimOf(k2, "b", "o", lease, time.Minute)); !r2.Claimed || r2.Record.Tainted {
		t.Errorf("untainted takeover = %+v", r2)
	}
	k3 := randHex(32)
	c := claimOf(k3, "c", "o", lease, time.Minute)
	c.Tainted = true
	if r3, _ := s.Claim(ctx, c); !r3.Claimed || !r3.Record.Tainted {
		t.Errorf("tainted claim = %+v", r3)
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
	_, _ = s.Claim(ctx, claimOf(key, "old", "o", past, time.Minute))
	got, err := s.Claim(ctx, claimOf(key, "new", "o", time.Now().Add(time.Minute), time.Minute))
	if err != nil || got.Claimed || got.Record.ClaimID != "old" || !got.Record.LeaseUntil.Equal(past) {
		t.Fatalf("Claim of a stale pending record = %+v, %v", got, err)
	}
	// The record expires after the TTL given at claim time; the claim is
	// then gone.
	k2 := randHex(32)
	_, _ = s.Claim(ctx, claimOf(k2, "c2", "o", time.Now().Add(time.Minute), 300*time.Millisecond))
	e.advance(400 * time.Millisecond)
	if _, err := s.Get(ctx, k2); !errors.Is(err, replay.ErrNotFound) {
		t.Errorf("expired record: %v", err)
	}
	if err := s.Complete(ctx, k2, "c2", []byte("x"), true); !errors.Is(err, replay.ErrNotClaimed) {
		t.Errorf("Complete after expiry: %v", err)
	}
	if _, err := s.Get(ctx, k2); !errors.Is(err, replay.ErrNotFound) {
		t.Errorf("Complete after expiry created a record: %v", err)
	}
	if _, err := s.Claim(ctx, claimOf(key, "z", "o", time.Now(), 0)); err == nil {
		t.Error("zero TTL accepted")
	}
	if _, err := s.Get(ctx, "bad key"); err == nil || errors.Is(err, replay.ErrNotFound) {
		t.Errorf("key with a space: %v", err)
	}
}

// TestReplayRestore: Restore follows replay.Adds in Redis too.
func TestReplayRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	lease := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	key := randHex(32)
	// Nothing there: a pending claim is written with the given TTL.
	got, err := s.Restore(ctx, key, replay.Record{State: replay.Pending, ClaimID: "a", Owner: "o", LeaseUntil: lease, Tainted: true}, time.Minute)
	if err != nil || got.State != replay.Pending || got.ClaimID != "a" || !got.Tainted || !got.LeaseUntil.Equal(lease) {
		t.Fatalf("Restore over nothing = %+v, %v", got, err)
	}
	if d := e.pttl(e.recKey(key)); d <= 0 || d > time.Minute {
		t.Errorf("TTL %v", d)
	}
	// The same claim's outcome replaces it, keeping TTL and taint.
	got, err = s.Restore(ctx, key, replay.Record{State: replay.Done, ClaimID: "a", Owner: "o", Sealed: []byte("err")}, time.Hour)
	if err != nil || got.State != replay.Done || string(got.Sealed) != "err" || !got.Tainted || got.Number {
		t.Fatalf("Restore of the outcome = %+v, %v", got, err)
	}
	if d := e.pttl(e.recKey(key)); d > time.Minute {
		t.Errorf("TTL changed to %v", d)
	}
	// An error does not replace an error; a number does.
	if got, _ = s.Restore(ctx, key, replay.Record{State: replay.Done, ClaimID: "b", Owner: "o", Sealed: []byte("err2")}, time.Minute); got.ClaimID != "a" {
		t.Fatalf("an error replaced an error: %+v", got)
	}
	if got, _ = s.Restore(ctx, key, replay.Record{State: replay.Done, ClaimID: "c", Owner: "o", Sealed: []byte("num"), Number: true}, time.Minute); got.ClaimID != "c" || !got.Number || string(got.Sealed) != "num" {
		t.Fatalf("a number did not replace an error: %+v", got)
	}
	if got, _ = s.Restore(ctx, key, replay.Record{State: replay.Done, ClaimID: "d", Owner: "o", Sealed: []byte("num2"), Number: true}, time.Minute); got.ClaimID != "c" {
		t.Fatalf("a number replaced a number: %+v", got)
	}
	// Another claim's pending record is kept against an error.
	k2 := randHex(32)
	_, _ = s.Claim(ctx, claimOf(k2, "p", "o", lease, time.Minute))
	if got, _ = s.Restore(ctx, k2, replay.Record{State: replay.Done, ClaimID: "q", Owner: "o", Sealed: []byte("err")}, time.Minute); got.ClaimID != "p" || got.State != replay.Pending {
		t.Fatalf("an error replaced another's pending claim: %+v", got)
	}
	// A taint is added to the record kept.
	if got, _ = s.Restore(ctx, k2, replay.Record{State: replay.Released, ClaimID: "r", Tainted: true}, time.Minute); got.ClaimID != "p" || !got.Tainted {
		t.Fatalf("a taint was not added to the kept record: %+v", got)
	}
}

// TestReplayEpoch: the epoch is stable while Redis keeps its data and
// changes when it is lost; claims wait while a new epoch settles.
func TestReplayEpoch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	beat := func() replay.Epoch {
		t.Helper()
		f, err := s.Heartbeat(ctx, replay.Beat{Member: "m1"})
		if err != nil {
			t.Fatal(err)
		}
		return f.Epoch
	}
	ep1 := beat()
	if ep1.ID == "" || ep1.Born.IsZero() {
		t.Fatalf("Epoch = %+v", ep1)
	}
	if ep2 := beat(); ep2 != ep1 {
		t.Fatalf("Epoch changed without a data loss: %+v then %+v", ep1, ep2)
	}
	key := randHex(32)
	res, err := s.Claim(ctx, replay.Claim{Key: key, ID: "a", Owner: "o", Lease: time.Now().Add(time.Minute), TTL: time.Minute})
	if err != nil || !res.Claimed || res.Epoch.Born.After(ep1.Born) {
		t.Fatalf("Claim = %+v, %v", res, err)
	}
	// Redis loses its data (here: every key under the test's prefix).
	for _, k := range e.keys() {
		if err := e.c.Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // a later millisecond for the new epoch
	res, err = s.Claim(ctx, replay.Claim{Key: key, ID: "b", Owner: "o", Lease: time.Now().Add(time.Minute), TTL: time.Minute, Settle: time.Hour})
	if err != nil || res.Claimed || !res.Settling || !res.Epoch.Born.After(ep1.Born) {
		t.Fatalf("Claim in a new, settling epoch = %+v, %v; want no claim", res, err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, replay.ErrNotFound) {
		t.Fatalf("a settling claim wrote a record: %v", err)
	}
	if ep3 := beat(); ep3.ID == ep1.ID || !ep3.Born.After(ep1.Born) {
		t.Fatalf("Epoch after the loss = %+v (before %+v)", ep3, ep1)
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
				res, err := stores[i%3].Claim(ctx, claimOf(key, randHex(8), "o", time.Now().Add(time.Minute), time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if res.Claimed {
					winners++
				}
				ids[res.Record.ClaimID]++
			})
		}
		close(start)
		wg.Wait()
		if winners != 1 || len(ids) != 1 {
			t.Errorf("round %d: %d winners, %d distinct claim ids", round, winners, len(ids))
		}
	}
}

// TestReplayHeartbeat: members are listed with their last beat and removed
// when they leave; a reported taint reaches every group, where claims see
// it, and only ever grows.
func TestReplayHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newReplayStore(t, e)
	if _, err := s.Heartbeat(ctx, replay.Beat{Member: "a"}); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	f, err := s.Heartbeat(ctx, replay.Beat{Member: "b", TaintUntil: until})
	if err != nil || len(f.Members) != 2 || !f.TaintUntil.Equal(until) {
		t.Fatalf("fleet = %+v, %v", f, err)
	}
	if f, _ = s.Heartbeat(ctx, replay.Beat{Member: "a", TaintUntil: until.Add(-time.Second)}); !f.TaintUntil.Equal(until) {
		t.Fatalf("an earlier taint lowered it: %+v", f)
	}
	for _, k := range []string{"0abc", "fabc"} {
		res, err := s.Claim(ctx, claimOf(k+randHex(8), "c", "o", time.Now().Add(time.Minute), time.Minute))
		if err != nil || !res.TaintUntil.Equal(until) {
			t.Fatalf("claim in group %c: %+v, %v", k[0], res, err)
		}
	}
	if f, _ = s.Heartbeat(ctx, replay.Beat{Member: "b", Leave: true}); len(f.Members) != 1 {
		t.Fatalf("after b left: %+v", f.Members)
	}
}

// TestReplayRivals: the Redis scripts follow replay.Rivalry as Memory does
// (see replaytest.CheckRivals).
func TestReplayRivals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	replaytest.CheckRivals(t, newReplayStore(t, e), func() string { return randHex(32) })
}
