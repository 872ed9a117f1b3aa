package ratelimit

import (
	"context"
	"time"

	"github.com/wxphone/wxphone/internal/breaker"
)

// Fallback limits with a shared primary (Redis, fleet-wide) and falls back
// to a local limiter while the primary fails, so an outage neither stops
// traffic nor removes the limit (each replica then limits on its own).
type Fallback struct {
	primary, local Limiter
	br             *breaker.Breaker
	onFallback     func(err error)
}

// NewFallback returns a Limiter over primary with local as fallback. After a
// primary failure the primary is skipped for coolOff (default 1 s).
// onFallback (optional) is called for each decision made locally; onState
// (optional) when the primary goes down or recovers.
func NewFallback(primary, local Limiter, coolOff time.Duration, onFallback func(err error), onState func(degraded bool)) *Fallback {
	if coolOff == 0 {
		coolOff = time.Second
	}
	if onFallback == nil {
		onFallback = func(error) {}
	}
	return &Fallback{primary: primary, local: local, br: breaker.New(coolOff, onState), onFallback: onFallback}
}

// Allow implements Limiter.
func (f *Fallback) Allow(ctx context.Context, key string) (bool, time.Duration, error) {
	if f.br.Allow() {
		ok, after, err := f.primary.Allow(ctx, key)
		if err == nil {
			f.br.Success()
			return ok, after, nil
		}
		f.br.Failure()
		f.onFallback(err)
	} else {
		f.onFallback(nil)
	}
	return f.local.Allow(ctx, key)
}

// Degraded reports whether the primary is currently considered down.
func (f *Fallback) Degraded() bool { return f.br.Open() }
