package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func TestMemoryBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory(Limit{Rate: 2, Burst: 3})
		for i := range 3 {
			if ok, _, _ := m.Allow(ctx, "a"); !ok {
				t.Fatalf("burst request %d refused", i)
			}
		}
		ok, after, err := m.Allow(ctx, "a")
		if ok || err != nil || after <= 0 || after > time.Second {
			t.Fatalf("4th = %v %v %v, want refused with retry-after ≤ 0.5s", ok, after, err)
		}
		if ok, _, _ := m.Allow(ctx, "b"); !ok {
			t.Fatal("another key is limited by a's bucket")
		}
		time.Sleep(after)
		if ok, _, _ := m.Allow(ctx, "a"); !ok {
			t.Fatal("refused after retry-after passed")
		}
	})
}

func TestMemoryEvictsIdleBuckets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory(Limit{Rate: 10, Burst: 10})
		for i := range 100 {
			_, _, _ = m.Allow(ctx, fmt.Sprint(i))
		}
		time.Sleep(2 * time.Minute)
		_, _, _ = m.Allow(ctx, "fresh")
		if n := m.Len(); n != 1 {
			t.Fatalf("%d buckets after idle period, want 1", n)
		}
	})
}

type downLimiter struct{ calls int }

func (d *downLimiter) Allow(context.Context, string) (bool, time.Duration, error) {
	d.calls++
	return false, 0, errors.New("down")
}

func TestFallbackKeepsLimiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down := &downLimiter{}
		f := NewFallback(down, NewMemory(Limit{Rate: 1, Burst: 1}), time.Second, nil, nil)
		ctx := context.Background()
		if ok, _, err := f.Allow(ctx, "k"); !ok || err != nil {
			t.Fatalf("first = %v %v", ok, err)
		}
		if ok, _, _ := f.Allow(ctx, "k"); ok {
			t.Fatal("local fallback does not limit")
		}
		if down.calls != 1 || !f.Degraded() {
			t.Fatalf("primary calls = %d degraded = %v", down.calls, f.Degraded())
		}
	})
}
