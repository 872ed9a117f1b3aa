// Package replay defines the shared store behind wxphone's exactly-once
// exchanges: one record per code, for the code's life, shared by every
// replica. The ledger package owns the rules (who may send a code, what a
// retry receives); a Store only makes each step atomic.
//
// Records are stored under a keyed hash of (appid, code) (see seal.Keyring
// Index), never the code; their payload is sealed by the caller. A record
// lives at most as long as the TTL given when it was claimed.
//
// Every operation that changes a record names the caller's claim id, chosen
// by the caller before the first attempt. Repeating an operation with the
// same id (a client library that resends a command whose reply was slow)
// has the effect of one call: a claim finds its own pending record and
// reports it claimed, a completion or release finds its own result and
// reports success.
package replay

import (
	"context"
	"errors"
	"time"

	"github.com/wxphone/wxphone/internal/wait"
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
	// Released: the claimant gave the code back; anyone may claim it
	// again. Tainted says whether the code may have been used.
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
	return "none"
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
	// Number reports that a Done record's outcome is a phone number, the
	// one outcome no later attempt can improve on: when two outcomes meet
	// (see Restore), a number wins over an error.
	Number bool
	// Tainted reports that an earlier attempt may have used the code, so
	// a later 40029 means "outcome unknown", not "invalid code".
	Tainted bool
	// Rival is the lease of another claim of the code, made by a replica
	// that could not see this record (it claimed on its own during an
	// outage) and published by Restore when it could: until then that
	// exchange may still bring a number, so an outcome other than a
	// number is not final (see RivalOpen). RivalID is that claim's id: its
	// own outcome other than a number ends the wait.
	Rival   time.Time
	RivalID string
}

// RivalOpen reports whether r is a Pending record or an outcome other than
// a number while a rival claim (see Record.Rival) may still bring a
// number at now.
func (r Record) RivalOpen(now time.Time) bool {
	return r.State != Released && !r.Number && r.RivalID != "" && now.Before(r.Rival)
}

// Epoch describes the life of a store's data. A store that can lose its
// data (Redis restarted without persistence) starts a new epoch when it
// notices; records written before it are gone.
type Epoch struct {
	// ID changes whenever the store's data was lost; "" for a store that
	// cannot lose its data while its users live (Memory).
	ID string
	// Born is when the current epoch began.
	Born time.Time
}

// Claim is one attempt to take a code.
type Claim struct {
	// Key is the record's key (a keyed hash).
	Key string
	// ID is the caller's claim id, the same for every attempt of one
	// claim (see the package comment).
	ID string
	// Owner is the keyed hash of the claimant.
	Owner string
	// Lease is when the claim is considered dead unless completed or
	// released.
	Lease time.Time
	// TTL is the record's life, counted from its creation.
	TTL time.Duration
	// Tainted marks a new record as possibly used (its claimant knows
	// the code may have been sent before, e.g. during an outage).
	Tainted bool
	// Settle is how old the store's epoch must be before it takes a
	// claim: after a data loss, replicas republish what they hold first
	// (see Restore). Zero disables the wait.
	Settle time.Duration
}

// Beat is what a replica tells the shared store at each heartbeat.
type Beat struct {
	// Member is the replica's id, unique per process.
	Member string
	// Leave removes the member (a graceful shutdown) instead of
	// recording it.
	Leave bool
	// TaintUntil, when set, marks every claim made before it as possibly
	// used: the replica was cut off from the store and may have sent
	// codes no record shows. The store keeps the latest such time.
	TaintUntil time.Time
}

// Fleet is what the shared store knows of the replicas sharing it.
type Fleet struct {
	// Epoch is the store's epoch (see Store.Heartbeat).
	Epoch Epoch
	// Members maps each replica id to its last heartbeat, on the store's
	// clock.
	Members map[string]time.Time
	// Now is the store's clock at the heartbeat.
	Now time.Time
	// TaintUntil is the latest Beat.TaintUntil any replica reported.
	TaintUntil time.Time
}

// ClaimResult is the answer to a Claim.
type ClaimResult struct {
	// Record is the record after the call: the caller's new Pending
	// claim, or the existing Pending or Done record that prevented it.
	Record Record
	// Claimed reports that the caller holds the claim now.
	Claimed bool
	// Epoch is the store's epoch at the time of the call.
	Epoch Epoch
	// Settling reports that nothing was claimed because the store's epoch
	// is younger than Claim.Settle; retry once it is old enough.
	Settling bool
	// TaintUntil is the store's Fleet.TaintUntil at the time of the call.
	TaintUntil time.Time
}

// ErrNotFound is returned by Get for a key with no record.
var ErrNotFound = errors.New("replay: no record")

// ErrNotClaimed is returned by Complete and Release when the record is no
// longer the caller's claim (it expired, was lost, or was taken over).
var ErrNotClaimed = errors.New("replay: not the current claim")

// Store holds records. Implementations must be safe for concurrent use
// (across processes, for shared stores) and make each method atomic.
type Store interface {
	// Claim creates a Pending record for c.Key with c's id, owner and
	// lease, to expire after c.TTL, unless a Pending or Done record
	// exists: then it returns that record and Claimed=false, except that
	// a Pending record with c.ID is the caller's own (a repeated call) and
	// is returned Claimed. A Released record is taken over (Claimed),
	// keeping its expiry and its taint.
	Claim(ctx context.Context, c Claim) (ClaimResult, error)
	// Complete turns the caller's Pending claim into a Done record holding
	// sealed (number: it is a phone number), keeping the claim's expiry.
	// A Done record of the same claim id is success (a repeated call).
	// ErrNotClaimed otherwise.
	Complete(ctx context.Context, key, claimID string, sealed []byte, number bool) error
	// Release turns the caller's Pending claim into a Released record,
	// keeping its expiry; tainted marks that the code may have been used
	// (a taint is never cleared). A Released record of the same claim id
	// is success. ErrNotClaimed otherwise.
	Release(ctx context.Context, key, claimID string, tainted bool) error
	// Get returns the record for key, or ErrNotFound.
	Get(ctx context.Context, key string) (Record, error)
	// Restore writes rec under key, to expire after ttl, where it adds
	// knowledge: when no record exists (or a Released one), over a
	// Pending record of the same claim id, and as a Done record holding a
	// number over any record that does not hold one; a taint in rec is
	// added to the record kept in any case. A Pending rec of another
	// claim id that is not written becomes the kept record's rival (see
	// Record.Rival and Rivalry); the rival's own outcome other than a
	// number clears it. It returns the record stored afterwards. Replicas
	// use it to republish what they hold after an outage or a data loss.
	Restore(ctx context.Context, key string, rec Record, ttl time.Duration) (Record, error)
	// Heartbeat records b and returns what the store knows of the fleet,
	// including its current epoch, which it starts anew if it finds that
	// it lost its data.
	Heartbeat(ctx context.Context, b Beat) (Fleet, error)
}

// Waiter is implemented by stores that can signal a change of a record, so
// that duplicates waiting for a pending exchange need not poll.
type Waiter interface {
	// Wait returns when the record for key may have changed, or when ctx
	// ends (then with ctx's error). Spurious wake-ups are allowed.
	Wait(ctx context.Context, key string) error
}

// WaitFor waits until key's record may have changed: through the store's
// Waiter when it has one, else by sleeping poll. It returns ctx's error when
// ctx ends first.
func WaitFor(ctx context.Context, s Store, key string, poll time.Duration) error {
	if w, ok := s.(Waiter); ok {
		return w.Wait(ctx, key)
	}
	return wait.Sleep(ctx, poll)
}
