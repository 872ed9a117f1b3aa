// Package ratelimit limits how fast each caller (API key) may call the
// service, with token buckets held in memory or, for a fleet, in a shared
// store.
package ratelimit

import (
	"context"
	"time"
)

// Limit is a token bucket: Rate tokens per second, up to Burst at once.
type Limit struct {
	Rate  float64
	Burst int
}

// Limiter takes tokens from per-key buckets. Implementations must be safe
// for concurrent use.
type Limiter interface {
	// Allow takes one token from key's bucket. When there is none, ok is
	// false and retryAfter says when one will be.
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}
