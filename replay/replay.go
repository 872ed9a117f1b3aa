// Package replay keeps the outcome of each phone-code exchange for the
// code's life, so that a retry with the same code gets the same answer with
// no second upstream call, and so that concurrent duplicates share one
// upstream call.
//
// Records are stored under a keyed hash of (appid, code) (see seal.Keyring
// Index), never the code; their payload is sealed by the caller. A record
// lives at most as long as the TTL given when it was claimed.
package replay

import (
	"context"
	"errors"
	"time"
)

// State is a record's state.
type State uint8

// Record states.
const (
	// Pending: a claimant is exchanging the code now, until LeaseUntil.
	// A pending record whose lease has passed belongs to a claimant that
	// died or stalled: the code may have been used.
	Pending State = 1
	// Done: the outcome is in Sealed.
	Done State = 2
	// Released: the claimant gave the code back (its failure left the code
	// unused, as far as it could tell); anyone may claim it again.
	Released State = 3
)

// String names the state.
func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Done:
		return "done"
	case Released:
		return "released"
	}
	return "unknown"
}

// Record is what a Store holds for one code.
type Record struct {
	State State
	// ClaimID identifies the claim that created or last took the record;
	// only that claim may Complete or Release it.
	ClaimID string
	// Owner is the keyed hash of who claimed it (API key, appid, openid);
	// replays are served only to the same owner.
	Owner string
	// LeaseUntil is when a Pending claim is considered dead.
	LeaseUntil time.Time
	// Sealed is the sealed outcome of a Done record.
	Sealed []byte
	// Tainted reports that an earlier attempt may have used the code (it
	// ended with WeChat busy), so a later 40029 means "outcome unknown".
	Tainted bool
}

// ErrNotFound is returned by Get for a key with no record.
var ErrNotFound = errors.New("replay: no record")

// ErrNotClaimed is returned by Complete and Release when the record is no
// longer the caller's pending claim (it expired, or was taken over).
var ErrNotClaimed = errors.New("replay: not the current claim")

// Store holds records. Implementations must be safe for concurrent use
// (across processes, for shared stores) and make Claim atomic.
type Store interface {
	// Claim creates a Pending record for key with a new ClaimID, owner and
	// lease, to expire after ttl, unless a Pending or Done record exists:
	// then it returns that record and claimed=false. A Released record is
	// taken over (claimed=true), keeping its expiry and its Tainted flag,
	// which the returned record reports.
	Claim(ctx context.Context, key, owner string, lease time.Time, ttl time.Duration) (rec Record, claimed bool, err error)
	// Complete turns the caller's Pending claim into a Done record holding
	// sealed, keeping the claim's expiry. ErrNotClaimed if it is no longer
	// the caller's pending claim.
	Complete(ctx context.Context, key, claimID string, sealed []byte) error
	// Release turns the caller's Pending claim into a Released record,
	// keeping its expiry; tainted marks that the code may have been used.
	Release(ctx context.Context, key, claimID string, tainted bool) error
	// Get returns the record for key, or ErrNotFound.
	Get(ctx context.Context, key string) (Record, error)
}

// Waiter is implemented by stores that can signal a change of a record, so
// that duplicates waiting for a pending exchange need not poll.
type Waiter interface {
	// Wait returns when the record for key may have changed, or when ctx
	// ends (then with ctx's error). Spurious wake-ups are allowed.
	Wait(ctx context.Context, key string) error
}
