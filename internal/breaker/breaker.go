// Package breaker is a minimal time-based circuit breaker: after a failure
// of the shared store, callers skip it for a cool-off period and use their
// local fallback, then try it again; one success closes the breaker.
package breaker

import (
	"sync"
	"time"
)

// Breaker is safe for concurrent use. The zero value is not usable; use New.
type Breaker struct {
	coolOff time.Duration
	onState func(open bool)
	// nmu serializes onState calls; reported is the last state given to
	// it (see notify).
	nmu      sync.Mutex
	reported bool

	mu      sync.Mutex
	open    bool
	retryAt time.Time
	probing bool
}

// New returns a closed breaker that stays open for coolOff after a failure.
// onState, if not nil, is called on every transition.
func New(coolOff time.Duration, onState func(open bool)) *Breaker {
	return &Breaker{coolOff: coolOff, onState: onState}
}

// Allow reports whether the caller should try the primary now: always when
// closed; when open, only one caller at a time once the cool-off has passed.
func (b *Breaker) Allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || time.Now().Before(b.retryAt) {
		return false
	}
	b.probing = true
	return true
}

// Success records a primary success, closing the breaker.
func (b *Breaker) Success() {
	b.mu.Lock()
	was := b.open
	b.open, b.probing = false, false
	b.mu.Unlock()
	if was {
		b.notify()
	}
}

// Failure records a primary failure, opening the breaker for the cool-off.
func (b *Breaker) Failure() {
	b.mu.Lock()
	was := b.open
	b.open, b.probing = true, false
	b.retryAt = time.Now().Add(b.coolOff)
	b.mu.Unlock()
	if !was {
		b.notify()
	}
}

// notify reports the breaker's current state to onState if it differs from
// the last one reported. Calls are serialized and read the state afresh,
// so transitions racing each other are reported in order and the last
// report is the breaker's state (two reports racing in the opposite order
// once logged "available again" while the breaker was open).
func (b *Breaker) notify() {
	if b.onState == nil {
		return
	}
	b.nmu.Lock()
	defer b.nmu.Unlock()
	open := b.Open()
	if open != b.reported {
		b.reported = open
		b.onState(open)
	}
}

// Open reports whether the breaker is open (the primary is considered down).
func (b *Breaker) Open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}

// Abandon records a call that ended without telling anything about the
// primary (the caller's context ended): the state is kept, and a probe the
// call held is given back so that another caller may probe.
func (b *Breaker) Abandon() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}
