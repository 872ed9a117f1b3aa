package replay

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// switchable is a primary that can be taken down and brought back.
type switchable struct {
	Store
	down bool
}

func (s *switchable) Claim(ctx context.Context, key, owner string, lease time.Time, ttl time.Duration) (Record, bool, error) {
	if s.down {
		return Record{}, false, errDown
	}
	return s.Store.Claim(ctx, key, owner, lease, ttl)
}

func (s *switchable) Complete(ctx context.Context, key, claimID string, sealed []byte) error {
	if s.down {
		return errDown
	}
	return s.Store.Complete(ctx, key, claimID, sealed)
}

func (s *switchable) Release(ctx context.Context, key, claimID string, tainted bool) error {
	if s.down {
		return errDown
	}
	return s.Store.Release(ctx, key, claimID, tainted)
}

func (s *switchable) Get(ctx context.Context, key string) (Record, error) {
	if s.down {
		return Record{}, errDown
	}
	return s.Store.Get(ctx, key)
}

// A claim made in the primary whose exchange ends while the breaker is open
// must not be reported as completed: the caller keeps the outcome itself
// only when Complete fails. (Complete used to return nil without touching
// any store, and the answer was lost.)
func TestFallbackCompleteWhileBreakerOpenFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p := &switchable{Store: NewMemory()}
		f := NewFallback(p, NewMemory(), FallbackOptions{CoolOff: time.Second})
		rec, ok, err := f.Claim(ctx, "k", "o", time.Now().Add(time.Minute), time.Minute)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		p.down = true
		// Another request trips the breaker while the exchange runs.
		if _, _, err := f.Claim(ctx, "other", "o", time.Now().Add(time.Minute), time.Minute); err != nil {
			t.Fatal(err)
		}
		if !f.Degraded() {
			t.Fatal("breaker not open")
		}
		if err := f.Complete(ctx, "k", rec.ClaimID, []byte("answer")); !errors.Is(err, ErrPrimaryUnavailable) {
			t.Fatalf("Complete with the breaker open = %v, want ErrPrimaryUnavailable", err)
		}
		if err := f.Release(ctx, "k", rec.ClaimID, false); !errors.Is(err, ErrPrimaryUnavailable) {
			t.Fatalf("Release with the breaker open = %v, want ErrPrimaryUnavailable", err)
		}
	})
}

// Outcomes recorded locally during an outage stay visible to this replica
// after the primary recovered (the primary never saw them), and a local
// taint carries over to a new primary claim.
func TestFallbackLocalRecordsOutliveTheOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p := &switchable{Store: NewMemory(), down: true}
		f := NewFallback(p, NewMemory(), FallbackOptions{CoolOff: time.Second})
		lease := time.Now().Add(time.Minute)
		done, ok, err := f.Claim(ctx, "done", "o", lease, time.Minute)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if err := f.Complete(ctx, "done", done.ClaimID, []byte("answer")); err != nil {
			t.Fatal(err)
		}
		busy, ok, err := f.Claim(ctx, "busy", "o", lease, time.Minute)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if err := f.Release(ctx, "busy", busy.ClaimID, true); err != nil {
			t.Fatal(err)
		}
		pending, ok, err := f.Claim(ctx, "pending", "o", lease, time.Minute)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}

		p.down = false
		time.Sleep(2 * time.Second) // past the cool-off

		rec, claimed, err := f.Claim(ctx, "done", "o", lease, time.Minute)
		if err != nil || claimed || rec.State != Done || string(rec.Sealed) != "answer" {
			t.Fatalf("after recovery, Claim of a locally completed code = %+v claimed=%v %v; want the local Done record", rec, claimed, err)
		}
		if _, err := p.Get(ctx, "done"); !errors.Is(err, ErrNotFound) {
			t.Fatal("a locally completed code was claimed in the primary (it would be sent again)")
		}
		rec, claimed, err = f.Claim(ctx, "pending", "o", lease, time.Minute)
		if err != nil || claimed || rec.State != Pending || rec.ClaimID != pending.ClaimID {
			t.Fatalf("after recovery, Claim of a code still exchanged locally = %+v claimed=%v %v", rec, claimed, err)
		}
		rec, claimed, err = f.Claim(ctx, "busy", "o", lease, time.Minute)
		if err != nil || !claimed || !rec.Tainted {
			t.Fatalf("after recovery, Claim of a locally released tainted code = %+v claimed=%v %v; want a tainted primary claim", rec, claimed, err)
		}
		if f.Degraded() {
			t.Fatal("still degraded")
		}
	})
}

// A caller whose deadline passes during a primary call gets its context's
// error: the breaker stays closed and nothing is claimed locally (a local
// claim would let this replica send a code that another replica holds).
func TestFallbackCallerDeadlineIsNotAnOutage(t *testing.T) {
	ctx := context.Background()
	p := &slowPrimary{Store: NewMemory()}
	f := NewFallback(p, NewMemory(), FallbackOptions{CoolOff: time.Minute})
	if _, ok, err := f.Claim(ctx, "k", "o", time.Now().Add(time.Minute), time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	p.slow = true
	_, claimed, err := f.Claim(cctx, "k", "o", time.Now().Add(time.Minute), time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) || claimed {
		t.Fatalf("Claim past the caller's deadline = claimed %v, %v; want the deadline error", claimed, err)
	}
	if f.Degraded() {
		t.Fatal("the caller's deadline opened the breaker")
	}
	p.slow = false
	if rec, claimed, err := f.Claim(ctx, "k", "o", time.Now().Add(time.Minute), time.Minute); err != nil || claimed || rec.State != Pending {
		t.Fatalf("the pending claim is not seen afterwards: %+v %v %v", rec, claimed, err)
	}
}

// slowPrimary blocks until the caller's context ends while slow is set.
type slowPrimary struct {
	Store
	slow bool
}

func (s *slowPrimary) Claim(ctx context.Context, key, owner string, lease time.Time, ttl time.Duration) (Record, bool, error) {
	if s.slow {
		<-ctx.Done()
		return Record{}, false, ctx.Err()
	}
	return s.Store.Claim(ctx, key, owner, lease, ttl)
}
