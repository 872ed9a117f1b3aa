package replay

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/wxphone/wxphone/internal/breaker"
)

// Fallback serves from a shared primary Store (Redis) and falls back to a
// local one when the primary fails: the fleet then loses cross-replica
// dedupe for codes claimed during the outage, but every replica keeps
// serving, and keeps its own replays. After a failure the primary is
// skipped for a cool-off, then tried again; recovery needs no action.
type Fallback struct {
	primary, local Store
	br             *breaker.Breaker
	onFallback     func(op string, err error)
}

// localPrefix marks claim ids issued by the local store.
const localPrefix = "local:"

// FallbackOptions tune a Fallback.
type FallbackOptions struct {
	// CoolOff is how long the primary is skipped after a failure; default 1 s.
	CoolOff time.Duration
	// OnFallback is called for every operation served locally because the
	// primary failed (err is nil while the breaker is open); log and count.
	OnFallback func(op string, err error)
	// OnState is called when the primary goes down (true) or recovers.
	OnState func(degraded bool)
}

// NewFallback returns a Store over primary with local as fallback.
func NewFallback(primary, local Store, o FallbackOptions) *Fallback {
	if o.CoolOff == 0 {
		o.CoolOff = time.Second
	}
	if o.OnFallback == nil {
		o.OnFallback = func(string, error) {}
	}
	return &Fallback{primary: primary, local: local, br: breaker.New(o.CoolOff, o.OnState), onFallback: o.OnFallback}
}

// Degraded reports whether the primary is currently considered down.
func (f *Fallback) Degraded() bool { return f.br.Open() }

// usePrimary runs op on the primary when the breaker allows, recording the
// outcome; it reports false when the caller must use the local store. A
// failure that comes from the caller's own context ending (its deadline
// passed during the call) says nothing about the primary: it is returned
// as it is, without opening the breaker or falling back, since a local
// claim would let this replica send a code that another replica holds.
func (f *Fallback) usePrimary(ctx context.Context, name string, op func() error) bool {
	if !f.br.Allow() {
		f.onFallback(name, nil)
		return false
	}
	err := op()
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotClaimed) {
		f.br.Success()
		return true
	}
	if ctx.Err() != nil {
		f.br.Abandon()
		return true
	}
	f.br.Failure()
	f.onFallback(name, err)
	return false
}

// Claim implements Store. A live record this replica made in the local
// store during an outage (an exchange still running, or its outcome) is
// served from there even after the primary recovered, since the primary
// never saw it; a local taint carries over to a new primary claim.
func (f *Fallback) Claim(ctx context.Context, key, owner string, lease time.Time, ttl time.Duration) (rec Record, claimed bool, err error) {
	loc, lerr := f.local.Get(ctx, key)
	if lerr == nil && loc.State != Released {
		loc.ClaimID = localPrefix + loc.ClaimID
		return loc, false, nil
	}
	localTaint := lerr == nil && loc.Tainted
	if f.usePrimary(ctx, "claim", func() error {
		rec, claimed, err = f.primary.Claim(ctx, key, owner, lease, ttl)
		return err
	}) {
		if claimed && localTaint {
			rec.Tainted = true
		}
		return rec, claimed, err
	}
	rec, claimed, err = f.local.Claim(ctx, key, owner, lease, ttl)
	rec.ClaimID = localPrefix + rec.ClaimID
	// Another replica, or this one before the outage, may have used the
	// code already: a 40029 now means "outcome unknown".
	rec.Tainted = true
	return rec, claimed, err
}

// Complete implements Store.
func (f *Fallback) Complete(ctx context.Context, key, claimID string, sealed []byte) error {
	if id, ok := strings.CutPrefix(claimID, localPrefix); ok {
		return f.local.Complete(ctx, key, id, sealed)
	}
	// The claim lives in the primary, never in the local store: whether or
	// not the primary is used, its error (or ErrPrimaryUnavailable when
	// the breaker skips it) is the answer, and the claim expires there by
	// its TTL.
	err := ErrPrimaryUnavailable
	f.usePrimary(ctx, "complete", func() error { err = f.primary.Complete(ctx, key, claimID, sealed); return err })
	return err
}

// Release implements Store.
func (f *Fallback) Release(ctx context.Context, key, claimID string, tainted bool) error {
	if id, ok := strings.CutPrefix(claimID, localPrefix); ok {
		return f.local.Release(ctx, key, id, tainted)
	}
	err := ErrPrimaryUnavailable // as in Complete
	f.usePrimary(ctx, "release", func() error { err = f.primary.Release(ctx, key, claimID, tainted); return err })
	return err
}

// ErrPrimaryUnavailable is returned by Complete and Release of a claim held
// in the primary while the primary is skipped (the breaker is open): the
// claim was not finished, and the caller must keep the outcome itself.
var ErrPrimaryUnavailable = errors.New("replay: shared store unavailable")

// Get implements Store: the primary's record, else the local one.
func (f *Fallback) Get(ctx context.Context, key string) (rec Record, err error) {
	if f.usePrimary(ctx, "get", func() error { rec, err = f.primary.Get(ctx, key); return err }) && err == nil {
		return rec, nil
	}
	rec, err = f.local.Get(ctx, key)
	if err == nil {
		rec.ClaimID = localPrefix + rec.ClaimID
	}
	return rec, err
}

// Wait implements Waiter when the local store does; records in the primary
// are polled by the caller.
func (f *Fallback) Wait(ctx context.Context, key string) error {
	if w, ok := f.local.(Waiter); ok && f.br.Open() {
		return w.Wait(ctx, key)
	}
	return errNoWait
}

// errNoWait tells the caller to poll.
var errNoWait = errors.New("replay: poll instead")

// WaitFor waits until key's record may have changed: through the store's
// Waiter when it has one, else by sleeping poll. It returns ctx's error when
// ctx ends first.
func WaitFor(ctx context.Context, s Store, key string, poll time.Duration) error {
	if w, ok := s.(Waiter); ok {
		if err := w.Wait(ctx, key); !errors.Is(err, errNoWait) {
			return err
		}
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
