package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// Memory is a Store for one process. It also implements Waiter. Expired
// records are dropped lazily and by periodic sweeps on write, so memory is
// bounded by the traffic of one TTL.
type Memory struct {
	mu        sync.Mutex
	recs      map[string]*memRec
	waiters   map[string]chan struct{}
	lastSweep time.Time
}

type memRec struct {
	Record
	expires time.Time
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{recs: make(map[string]*memRec), waiters: make(map[string]chan struct{})}
}

// Len returns the number of live records (for tests and metrics).
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(time.Now(), true)
	return len(m.recs)
}

func (m *Memory) get(key string, now time.Time) *memRec {
	r := m.recs[key]
	if r != nil && !now.Before(r.expires) {
		delete(m.recs, key)
		return nil
	}
	return r
}

// sweep drops expired records, at most every few seconds unless forced.
func (m *Memory) sweep(now time.Time, force bool) {
	if !force && now.Sub(m.lastSweep) < 5*time.Second {
		return
	}
	m.lastSweep = now
	for k, r := range m.recs {
		if !now.Before(r.expires) {
			delete(m.recs, k)
		}
	}
}

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, key, owner string, lease time.Time, ttl time.Duration) (Record, bool, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now, false)
	r := m.get(key, now)
	if r != nil && r.State != Released {
		return r.copy(), false, nil
	}
	nr := &memRec{Record: Record{State: Pending, ClaimID: newClaimID(), Owner: owner, LeaseUntil: lease}, expires: now.Add(ttl)}
	if r != nil { // a released record: keep its expiry and taint
		nr.expires, nr.Tainted = r.expires, r.Tainted
	}
	m.recs[key] = nr
	return nr.copy(), true, nil
}

// Complete implements Store.
func (m *Memory) Complete(_ context.Context, key, claimID string, sealed []byte) error {
	return m.finish(key, claimID, func(r *memRec) {
		r.State, r.Sealed = Done, append([]byte(nil), sealed...)
	})
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, key, claimID string, tainted bool) error {
	return m.finish(key, claimID, func(r *memRec) {
		r.State = Released
		r.Tainted = r.Tainted || tainted
	})
}

func (m *Memory) finish(key, claimID string, f func(*memRec)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.get(key, time.Now())
	if r == nil || r.State != Pending || r.ClaimID != claimID {
		return ErrNotClaimed
	}
	f(r)
	if ch := m.waiters[key]; ch != nil {
		close(ch)
		delete(m.waiters, key)
	}
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.get(key, time.Now()); r != nil {
		return r.copy(), nil
	}
	return Record{}, ErrNotFound
}

// Wait implements Waiter: it returns when key's pending record is completed
// or released, or when ctx ends.
func (m *Memory) Wait(ctx context.Context, key string) error {
	m.mu.Lock()
	r := m.get(key, time.Now())
	if r == nil || r.State != Pending {
		m.mu.Unlock()
		return nil
	}
	ch := m.waiters[key]
	if ch == nil {
		ch = make(chan struct{})
		m.waiters[key] = ch
	}
	m.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *memRec) copy() Record {
	c := r.Record
	c.Sealed = append([]byte(nil), r.Sealed...)
	return c
}

func newClaimID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
