package redis

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone/ratelimit"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newLimiter(t *testing.T, e *env, l ratelimit.Limit, clock *fakeClock) *Limiter {
	t.Helper()
	lim, err := NewLimiter(e.c, l, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		lim.now = clock.Now
	}
	return lim
}

func TestLimiterRateBurstRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	clock := &fakeClock{now: time.Now()}
	l := newLimiter(t, e, ratelimit.Limit{Rate: 10, Burst: 5}, clock)
	allow := func(key string) (bool, time.Duration) {
		t.Helper()
		ok, after, err := l.Allow(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return ok, after
	}
	for i := range 5 {
		if ok, _ := allow("caller-1"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if ok, after := allow("caller-1"); ok || after != 100*time.Millisecond {
		t.Fatalf("over the burst: %v, %v; want refused for 100ms", ok, after)
	}
	// Another key has its own bucket.
	if ok, _ := allow("caller-2"); !ok {
		t.Fatal("another key limited")
	}
	clock.Add(40 * time.Millisecond)
	if ok, after := allow("caller-1"); ok || after != 60*time.Millisecond {
		t.Fatalf("after 40ms: %v, %v; want refused for 60ms", ok, after)
	}
	clock.Add(60 * time.Millisecond)
	if ok, _ := allow("caller-1"); !ok {
		t.Fatal("refused after the retry-after")
	}
	if ok, _ := allow("caller-1"); ok {
		t.Fatal("a second token appeared")
	}
	// A steady 10/s is allowed indefinitely.
	for range 30 {
		clock.Add(100 * time.Millisecond)
		if ok, _ := allow("caller-1"); !ok {
			t.Fatal("steady rate refused")
		}
	}
	// Idle buckets expire once full again (an empty bucket of 5 tokens at
	// 10/s: after 0.5 s).
	k := e.prefix + ":rl:caller-1"
	if d := e.pttl(k); d < 400*time.Millisecond || d > 501*time.Millisecond {
		t.Errorf("bucket TTL %v, want about 500ms", d)
	}
	clock.Add(time.Second)
	e.advance(600 * time.Millisecond)
	if n, _ := e.c.Exists(ctx, k).Result(); n != 0 {
		t.Error("idle bucket kept")
	}
	for range 5 {
		if ok, _ := allow("caller-1"); !ok {
			t.Fatal("full burst not restored after idling")
		}
	}
}

// Two replicas' Limiters on one Redis share each key's bucket.
func TestLimiterFleetWide(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	clock := &fakeClock{now: time.Now()}
	lim := ratelimit.Limit{Rate: 1, Burst: 10}
	a, b := newLimiter(t, e, lim, clock), newLimiter(t, e, lim, clock)
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			ok, _, err := l.Allow(ctx, "shared")
			if err != nil {
				t.Error(err)
			}
			if ok {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 10 {
		t.Errorf("%d of 40 allowed across two limiters, want 10 (one shared burst)", allowed.Load())
	}
}

// With Redis's own clock (production): a burst, then a refusal with a
// retry-after of at most one emission interval.
func TestLimiterRedisClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	l := newLimiter(t, e, ratelimit.Limit{Rate: 2, Burst: 3}, nil)
	for i := range 3 {
		if ok, _, err := l.Allow(ctx, "k"); !ok || err != nil {
			t.Fatalf("request %d: %v, %v", i+1, ok, err)
		}
	}
	ok, after, err := l.Allow(ctx, "k")
	if ok || err != nil || after <= 0 || after > 500*time.Millisecond {
		t.Fatalf("over the burst: %v, %v, %v", ok, after, err)
	}
}

func TestLimiterValidation(t *testing.T) {
	e := newEnv(t)
	for _, l := range []ratelimit.Limit{{Rate: 0, Burst: 1}, {Rate: -1, Burst: 1}, {Rate: 1, Burst: 0}, {Rate: 1e9, Burst: 1}} {
		if _, err := NewLimiter(e.c, l, e.opts()); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	l := newLimiter(t, e, ratelimit.Limit{Rate: 1, Burst: 1}, nil)
	if ok, _, err := l.Allow(testCtx(t), ""); ok || err == nil {
		t.Error("empty key accepted")
	}
}
