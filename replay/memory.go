package replay

import (
	"context"
	"sync"
	"time"
)

// Memory is a Store for one process (and for tests standing in for a
// shared store). It also implements Waiter. Expired records are dropped
// lazily and by periodic sweeps on write, so memory is bounded by the
// traffic of one TTL. It never loses its data while its users live, so its
// epoch is the zero Epoch.
type Memory struct {
	mu        sync.Mutex
	recs      map[string]*memRec
	waiters   map[string]chan struct{}
	lastSweep time.Time
	members   map[string]time.Time
	taint     time.Time
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
func (m *Memory) Claim(_ context.Context, c Claim) (ClaimResult, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now, false)
	res := ClaimResult{TaintUntil: m.taint}
	r := m.get(c.Key, now)
	if r != nil && r.State == Pending && r.ClaimID == c.ID {
		res.Record, res.Claimed = r.copy(), true // a repeated call
		return res, nil
	}
	if r != nil && r.State != Released {
		res.Record = r.copy()
		return res, nil
	}
	nr := &memRec{Record: Record{State: Pending, ClaimID: c.ID, Owner: c.Owner, LeaseUntil: c.Lease, Tainted: c.Tainted}, expires: now.Add(c.TTL)}
	if r != nil { // a released record: keep its expiry and taint
		nr.expires, nr.Tainted = r.expires, r.Tainted || c.Tainted
	}
	m.recs[c.Key] = nr
	res.Record, res.Claimed = nr.copy(), true
	return res, nil
}

// Complete implements Store.
func (m *Memory) Complete(_ context.Context, key, claimID string, sealed []byte, number bool) error {
	return m.finish(key, claimID, Done, func(r *memRec) {
		r.State, r.Sealed, r.Number = Done, append([]byte(nil), sealed...), number
	})
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, key, claimID string, tainted bool) error {
	return m.finish(key, claimID, Released, func(r *memRec) {
		r.State = Released
		r.Tainted = r.Tainted || tainted
	})
}

func (m *Memory) finish(key, claimID string, to State, f func(*memRec)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.get(key, time.Now())
	if r == nil || r.ClaimID != claimID {
		return ErrNotClaimed
	}
	if r.State == to {
		return nil // a repeated call
	}
	if r.State != Pending {
		return ErrNotClaimed
	}
	f(r)
	m.wake(key)
	return nil
}

func (m *Memory) wake(key string) {
	if ch := m.waiters[key]; ch != nil {
		close(ch)
		delete(m.waiters, key)
	}
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

// Restore implements Store.
func (m *Memory) Restore(_ context.Context, key string, rec Record, ttl time.Duration) (Record, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.get(key, now)
	if !Adds(r.record(), rec) {
		if r != nil && rec.Tainted {
			r.Tainted = true // a taint is knowledge too
		}
		if r != nil {
			switch Rivalry(r.Record, rec) {
			case RivalRaised:
				r.Rival, r.RivalID = rec.LeaseUntil, rec.ClaimID
			case RivalEnded:
				r.Rival, r.RivalID = time.Time{}, ""
				m.wake(key)
			}
		}
		return r.copy(), nil
	}
	nr := &memRec{Record: rec, expires: now.Add(ttl)}
	nr.Sealed = append([]byte(nil), rec.Sealed...)
	nr.Rival, nr.RivalID = time.Time{}, ""
	if r != nil {
		nr.expires = r.expires
		nr.Tainted = nr.Tainted || r.Tainted
		if !rec.Number && r.RivalID != rec.ClaimID {
			nr.Rival, nr.RivalID = r.Rival, r.RivalID // still running elsewhere
		}
	}
	m.recs[key] = nr
	m.wake(key)
	return nr.copy(), nil
}

// Rivalry says what Restore does to the rival of the record cur it keeps
// (it does not write rec over cur: see Adds): a Pending rec of another
// claim, with a later lease than cur's rival, becomes the rival of a
// record that holds no number; the rival's own outcome or release
// without a number ends it. Stores share it so the rule is written once.
func Rivalry(cur Record, rec Record) RivalChange {
	switch {
	case rec.State == Pending && rec.ClaimID != cur.ClaimID && cur.State != Released && !cur.Number &&
		rec.LeaseUntil.After(cur.Rival):
		return RivalRaised
	case rec.State != Pending && cur.RivalID != "" && rec.ClaimID == cur.RivalID && !rec.Number:
		return RivalEnded
	}
	return RivalKept
}

// RivalChange is Rivalry's verdict.
type RivalChange int

// Rivalry's verdicts.
const (
	RivalKept   RivalChange = iota // the rival, if any, stays
	RivalRaised                    // rec becomes the rival
	RivalEnded                     // the rival ended without a number
)

// Adds reports whether Restore writes rec over cur (nil: no record): see
// Store.Restore. Stores share it so the rule is written once.
func Adds(cur *Record, rec Record) bool {
	switch {
	case cur == nil || cur.State == Released:
		return rec.State == Pending || rec.State == Done || rec.State == Released && rec.Tainted && (cur == nil || !cur.Tainted)
	case cur.State == Pending && cur.ClaimID == rec.ClaimID:
		return rec.State == Done
	case rec.State == Done && rec.Number:
		return !(cur.State == Done && cur.Number)
	}
	return false
}

// Heartbeat implements Store, with the zero Epoch (no data loss to
// detect).
func (m *Memory) Heartbeat(_ context.Context, b Beat) (Fleet, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.members == nil {
		m.members = map[string]time.Time{}
	}
	if b.Leave {
		delete(m.members, b.Member)
	} else if b.Member != "" {
		m.members[b.Member] = time.Now()
	}
	if b.TaintUntil.After(m.taint) {
		m.taint = b.TaintUntil
	}
	f := Fleet{Members: make(map[string]time.Time, len(m.members)), TaintUntil: m.taint, Now: time.Now()}
	for k, v := range m.members {
		f.Members[k] = v
	}
	return f, nil
}

// Wait implements Waiter: it returns when key's pending record is completed
// or released, or its rival ends (see Record.Rival), or when ctx ends.
func (m *Memory) Wait(ctx context.Context, key string) error {
	m.mu.Lock()
	now := time.Now()
	r := m.get(key, now)
	if r == nil || r.State != Pending && !r.RivalOpen(now) {
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

func (r *memRec) record() *Record {
	if r == nil {
		return nil
	}
	return &r.Record
}

func (r *memRec) copy() Record {
	if r == nil {
		return Record{}
	}
	c := r.Record
	c.Sealed = append([]byte(nil), r.Sealed...)
	return c
}
