package replay

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestMemoryClaimCompleteRelease(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	lease := time.Now().Add(time.Minute)
	rec, ok, err := m.Claim(ctx, "k", "o1", lease, time.Minute)
	if err != nil || !ok || rec.State != Pending || rec.ClaimID == "" || rec.Owner != "o1" {
		t.Fatalf("claim = %+v %v %v", rec, ok, err)
	}
	if r2, ok, _ := m.Claim(ctx, "k", "o2", lease, time.Minute); ok || r2.Owner != "o1" || r2.State != Pending {
		t.Fatalf("second claim = %+v %v, want the existing pending record", r2, ok)
	}
	if err := m.Complete(ctx, "k", "wrong", []byte("x")); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("Complete with another claim id: %v", err)
	}
	if err := m.Release(ctx, "k", rec.ClaimID, true); err != nil {
		t.Fatal(err)
	}
	r3, ok, _ := m.Claim(ctx, "k", "o3", lease, time.Hour)
	if !ok || !r3.Tainted || r3.Owner != "o3" || r3.ClaimID == rec.ClaimID {
		t.Fatalf("claim after release = %+v %v, want a tainted new claim", r3, ok)
	}
	if err := m.Release(ctx, "k", rec.ClaimID, false); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("stale release: %v", err)
	}
	if err := m.Complete(ctx, "k", r3.ClaimID, []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get(ctx, "k")
	if err != nil || got.State != Done || string(got.Sealed) != "sealed" || !got.Tainted {
		t.Fatalf("Get = %+v %v", got, err)
	}
	if _, ok, _ := m.Claim(ctx, "k", "o3", lease, time.Minute); ok {
		t.Fatal("a done record was claimed again")
	}
	if err := m.Complete(ctx, "k", r3.ClaimID, []byte("again")); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("double complete: %v", err)
	}
	if _, err := m.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v", err)
	}
}

func TestMemoryTTLKeptAcrossRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory()
		rec, _, _ := m.Claim(ctx, "k", "o", time.Now().Add(time.Minute), 5*time.Minute)
		time.Sleep(4 * time.Minute)
		_ = m.Release(ctx, "k", rec.ClaimID, false)
		// A new claim of a released record keeps the original expiry.
		if _, ok, _ := m.Claim(ctx, "k", "o", time.Now().Add(time.Minute), 5*time.Minute); !ok {
			t.Fatal("released record not claimable")
		}
		time.Sleep(time.Minute)
		if _, err := m.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record outlived its 5-minute TTL: %v", err)
		}
		if m.Len() != 0 {
			t.Fatalf("Len = %d after expiry", m.Len())
		}
	})
}

func TestMemoryExactlyOneClaimWins(t *testing.T) {
	m := NewMemory()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, ok, _ := m.Claim(context.Background(), "k", "o", time.Now().Add(time.Minute), time.Minute); ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claims won", wins.Load())
	}
}

func TestMemoryWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory()
		rec, _, _ := m.Claim(ctx, "k", "o", time.Now().Add(time.Minute), time.Minute)
		woke := make(chan struct{})
		go func() {
			_ = m.Wait(ctx, "k")
			close(woke)
		}()
		synctest.Wait()
		select {
		case <-woke:
			t.Fatal("Wait returned while the record was pending")
		default:
		}
		_ = m.Complete(ctx, "k", rec.ClaimID, []byte("x"))
		<-woke
		// Waiting on a done or missing record returns at once.
		if err := m.Wait(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		_, _, _ = m.Claim(ctx, "p", "o", time.Now().Add(time.Minute), time.Minute)
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := m.Wait(cctx, "p"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want deadline", err)
		}
	})
}

// broken fails every call, as a Redis that is down.
type broken struct{ calls atomic.Int32 }

var errDown = errors.New("down")

func (b *broken) Claim(context.Context, string, string, time.Time, time.Duration) (Record, bool, error) {
	b.calls.Add(1)
	return Record{}, false, errDown
}
func (b *broken) Complete(context.Context, string, string, []byte) error {
	b.calls.Add(1)
	return errDown
}
func (b *broken) Release(context.Context, string, string, bool) error {
	b.calls.Add(1)
	return errDown
}
func (b *broken) Get(context.Context, string) (Record, error) {
	b.calls.Add(1)
	return Record{}, errDown
}

func TestFallbackServesLocallyAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		bad := &broken{}
		var fallbacks atomic.Int32
		var states []bool
		f := NewFallback(bad, NewMemory(), FallbackOptions{
			CoolOff:    time.Second,
			OnFallback: func(string, error) { fallbacks.Add(1) },
			OnState:    func(d bool) { states = append(states, d) },
		})
		rec, ok, err := f.Claim(ctx, "k", "o", time.Now().Add(time.Minute), time.Minute)
		if err != nil || !ok {
			t.Fatalf("claim during outage = %v %v", ok, err)
		}
		if !rec.Tainted {
			t.Fatal("a claim made during an outage is not tainted: a 40029 would read as invalid code")
		}
		if !f.Degraded() {
			t.Fatal("not degraded after a primary failure")
		}
		if err := f.Complete(ctx, "k", rec.ClaimID, []byte("x")); err != nil {
			t.Fatalf("complete of a local claim: %v", err)
		}
		got, err := f.Get(ctx, "k")
		if err != nil || got.State != Done {
			t.Fatalf("Get = %+v %v", got, err)
		}
		if n := bad.calls.Load(); n != 1 {
			t.Fatalf("primary called %d times during cool-off, want 1", n)
		}
		// After the cool-off the primary is tried again; a healthy primary closes the breaker.
		time.Sleep(2 * time.Second)
		good := NewMemory()
		f.primary = good
		if _, ok, err := f.Claim(ctx, "k2", "o", time.Now().Add(time.Minute), time.Minute); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if f.Degraded() {
			t.Fatal("still degraded after the primary recovered")
		}
		if _, err := good.Get(ctx, "k2"); err != nil {
			t.Fatal("claim did not go to the recovered primary")
		}
		if len(states) != 2 || !states[0] || states[1] {
			t.Fatalf("state transitions = %v, want [true false]", states)
		}
		if fallbacks.Load() != 2 { // the failed claim, and the get while open
			t.Fatalf("fallbacks counted = %d", fallbacks.Load())
		}
	})
}
