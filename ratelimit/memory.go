package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Memory is a Limiter for one process: a token bucket per key. Buckets idle
// for longer than the time to refill completely (at least a minute) are
// evicted, so memory is bounded by the number of active keys.
type Memory struct {
	limit Limit
	idle  time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewMemory returns an in-memory limiter applying l to every key.
func NewMemory(l Limit) *Memory {
	idle := time.Minute
	if l.Rate > 0 {
		idle = max(idle, time.Duration(float64(l.Burst)/l.Rate*float64(time.Second)))
	}
	return &Memory{limit: l, idle: idle, buckets: make(map[string]*bucket)}
}

// Allow implements Limiter.
func (m *Memory) Allow(_ context.Context, key string) (bool, time.Duration, error) {
	now := time.Now()
	m.mu.Lock()
	if now.Sub(m.lastSweep) > m.idle {
		for k, b := range m.buckets {
			if now.Sub(b.seen) > m.idle {
				delete(m.buckets, k)
			}
		}
		m.lastSweep = now
	}
	b := m.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(m.limit.Rate), m.limit.Burst)}
		m.buckets[key] = b
	}
	b.seen = now
	m.mu.Unlock()
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second, nil
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d, nil
	}
	return true, 0, nil
}

// Len returns the number of buckets held (for tests).
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets)
}
