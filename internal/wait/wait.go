// Package wait is how wxphone's packages pause: for a while, unless the
// caller's context ends first.
package wait

import (
	"context"
	"time"
)

// Sleep waits d unless ctx ends first, and then returns ctx's error; it
// returns nil at once when d is not positive.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
