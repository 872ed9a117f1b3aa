// Package ledger is the one owner of wxphone's exactly-once state: for each
// phone code a replica sees, who may send it to WeChat, what a retry
// receives, and what this replica must remember. It holds the in-process
// map of codes being exchanged, the outcomes this replica produced (for the
// code's life), the claims it made on its own while the shared store was
// unreachable, and the shared store itself (Redis) behind a circuit
// breaker. The service reads: validate, Begin, exchange, Finish (or
// Release).
//
// The invariants it keeps (docs/reliability.md states them for the whole
// service):
//
//   - One sender per code. Begin registers a code in this process before
//     it asks the shared store, so a second request for the same code in
//     this process waits for the first instead of claiming it again, even
//     while the shared store is slow. Across replicas the shared store's
//     claim decides; its operations name the caller's claim id, so a
//     command the Redis client resent is not mistaken for someone else's
//     claim.
//   - A replica replays what it exchanged itself without the shared store:
//     every outcome it produced stays in its memory for the code's life
//     (bounded by Options.MaxEntries). A number is served from there
//     directly. An error outcome produced here never hides the shared
//     one: the shared record is read first, and a number there wins.
//   - Degraded mode. While the shared store is unreachable a replica claims
//     codes on its own. Such a claim is tainted: the code may have been
//     sent by another replica, so a 40029 for it means "outcome unknown",
//     never "invalid code". When the store is back, the replica publishes
//     what it did meanwhile (Restore), and a number wins over an error.
//   - Data loss. When the shared store's epoch changes (Redis restarted
//     empty), every replica republishes what it holds; claims wait until
//     the new epoch is Options.Settle old so that the republished records
//     are seen, and claims in an epoch younger than a code's life are
//     tainted.
package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/wxphone/wxphone/internal/breaker"
	"github.com/wxphone/wxphone/internal/wait"
	"github.com/wxphone/wxphone/replay"
)

// Errors returned by Begin, besides the caller's context error (its
// deadline passed before the code was sent).
var (
	// ErrForeign: the code was claimed by another owner; its outcome is
	// not disclosed.
	ErrForeign = errors.New("ledger: code claimed by another caller")
	// ErrInFlight: the code is being exchanged (here or on another
	// replica) and the caller's context ended while waiting for it.
	ErrInFlight = errors.New("ledger: the code is still being exchanged")
	// ErrAbandoned: the claimant of the code stopped answering after it
	// may have sent the code (its lease passed); the outcome is unknown.
	ErrAbandoned = errors.New("ledger: an earlier exchange of this code was abandoned")
	// ErrStore: the shared store failed and Options.Fallback is off; the
	// code was not sent.
	ErrStore = errors.New("ledger: shared store unavailable")
	// ErrUnresolved: the code's outcome is not known here and the shared
	// store, where another replica may hold it, cannot be read now: an
	// exchange made without the store ended without a number, or the code
	// is claimed on another replica. Nothing was sent for this request;
	// retry with the same code once the store is back.
	ErrUnresolved = errors.New("ledger: outcome not known here and the shared store is unavailable")
	// ErrClosed: the ledger was closed.
	ErrClosed = errors.New("ledger: closed")
)

// Options configure a Ledger. Zero values take the defaults.
type Options struct {
	// Shared is the store every replica shares (Redis); nil keeps the
	// state in this process only.
	Shared replay.Store
	// Fallback lets this replica claim codes on its own while Shared is
	// unreachable (degraded mode) instead of refusing them with ErrStore.
	Fallback bool
	// TTL is a code's life, how long records and outcomes are kept;
	// default 5 min.
	TTL time.Duration
	// Lease is how long a claim lives without an outcome before others
	// consider its claimant dead; default 20 s. It must exceed the
	// exchange timeout.
	Lease time.Duration
	// Settle is how old a new epoch of the shared store must be before
	// claims are taken in it (see the package comment); default 1 s, and
	// at least 2 × Heartbeat.
	Settle time.Duration
	// Heartbeat is how often the ledger reads the shared store's epoch
	// and publishes what it could not record; default 500 ms.
	Heartbeat time.Duration
	// CoolOff is how long the shared store is skipped after a failure;
	// default 1 s.
	CoolOff time.Duration
	// MaxEntries bounds the codes remembered in this process; default
	// 100,000. The oldest finished ones are forgotten first.
	MaxEntries int
	// Logger receives warnings (never a code); default discards.
	Logger *slog.Logger
	// OnFallback is called for each operation done without the shared
	// store because it failed (err is nil while the breaker is open).
	OnFallback func(op string, err error)
	// OnState is called when the shared store goes down (true) or
	// recovers.
	OnState func(degraded bool)
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TTL, 5*time.Minute)
	def(&o.Lease, 20*time.Second)
	def(&o.Heartbeat, 500*time.Millisecond)
	def(&o.Settle, time.Second)
	def(&o.CoolOff, time.Second)
	o.Settle = max(o.Settle, 2*o.Heartbeat)
	if o.MaxEntries <= 0 {
		o.MaxEntries = 100_000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.OnFallback == nil {
		o.OnFallback = func(string, error) {}
	}
}

// Ledger is safe for concurrent use. Create it with New and Close it.
type Ledger struct {
	o      Options
	shared replay.Store
	br     *breaker.Breaker
	log    *slog.Logger

	id string // this replica's member id in the shared store

	mu        sync.Mutex
	entries   map[string]*entry
	order     []orderItem // insertion order, for expiry and eviction
	head      int
	closed    bool
	knownBorn time.Time // the youngest epoch seen; zero before the first
	fullSync  bool      // publish every entry, not only the unsynced ones
	// suspect: until then every claim is tainted, because a replica
	// (this one or another) was cut off from the shared store and may
	// have sent codes that no record shows.
	suspect time.Time
	// report: a taint to tell the other replicas at the next heartbeat
	// (this replica was cut off until recently).
	report time.Time
	// orphans: claims the shared store may hold for claimants that gave
	// up before sending; released by the background loop.
	orphans []orphanClaim
	// forgotten counts the finished entries (outcomes, releases) evict
	// dropped that the shared store does not hold, since the last warning (warned): one warning a
	// minute, since a ledger that stays full forgets one per new code.
	forgotten int
	warned    time.Time

	wake   chan struct{} // asks the background loop to sync now
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type state uint8

const (
	starting  state = iota // this process is claiming the code in Shared
	running                // this process is exchanging the code
	done                   // the outcome is known here
	released               // given back; kept while tainted or not yet released in Shared
	elsewhere              // seen claimed by another replica (same owner), until lease
)

// entry is what this process knows of one code.
type entry struct {
	state   state
	owner   string
	claimID string
	done    chan struct{} // closed when starting or running ends
	sealed  []byte
	number  bool
	tainted bool      // the code may have been used before or by this claim
	lease   time.Time // of the claim
	shared  bool      // the claim was made in (or published to) Shared, or may have been
	synced  bool      // Shared holds this entry's current state
	// unresolved: an outcome other than a number, obtained by a claim
	// made without the shared store. Another replica may have obtained
	// the number meanwhile: it is served only once the store was read.
	unresolved bool
	expires    time.Time
}

type orderItem struct {
	key     string
	expires time.Time
}

// New returns a Ledger and starts its background loop (with a shared
// store): heartbeats, and publishing what could not be recorded.
func New(o Options) *Ledger {
	o.defaults()
	l := &Ledger{o: o, shared: o.Shared, log: o.Logger, entries: make(map[string]*entry), wake: make(chan struct{}, 1), id: newID()[:16]}
	l.br = breaker.New(o.CoolOff, func(down bool) {
		if !down {
			// Codes claimed here during the outage may be retried on
			// other replicas within their life, and other replicas may
			// have claimed codes on their own too: taint claims until
			// then, here and, through the store, everywhere.
			until := time.Now().Add(l.o.TTL + l.o.Lease)
			l.mu.Lock()
			l.suspect, l.report = later(l.suspect, until), later(l.report, until)
			l.mu.Unlock()
			l.requestSync()
		}
		if o.OnState != nil {
			o.OnState(down)
		}
	})
	if l.shared != nil {
		ctx, cancel := context.WithCancel(context.Background())
		l.cancel = cancel
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.loop(ctx) }()
	}
	return l
}

// SettleTime returns how long a new epoch settles (Options.Settle), which is
// also how long replicas take to publish what they hold after an outage.
func (l *Ledger) SettleTime() time.Duration { return l.o.Settle }

// Lease returns how long a claim lives without an outcome.
func (l *Ledger) Lease() time.Duration { return l.o.Lease }

// Degraded reports whether the shared store is considered down.
func (l *Ledger) Degraded() bool { return l.shared != nil && l.br.Open() }

// Len returns the number of codes remembered in this process.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Close stops the background loop after one last attempt to publish what
// this replica could not record, bounded by ctx.
func (l *Ledger) Close(ctx context.Context) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
		l.wg.Wait()
		l.sync(ctx)
		_, _ = l.heartbeat(ctx, true) // leave: a replica that shut down is not cut off
	}
}

// Begun is the answer of Begin: an outcome to replay, or a claim.
type Begun struct {
	// Sealed is the outcome of an earlier exchange of the code; nil when
	// Claim is set.
	Sealed []byte
	// Claim is set when the caller must exchange the code now and then
	// Finish or Release the claim.
	Claim *Claim
}

// Claim is the right to send one code to WeChat once.
type Claim struct {
	l       *Ledger
	key     string
	e       *entry
	tainted bool
	local   bool // made without the shared store (degraded mode)
	// unread: NumberElsewhere could not read the shared store, so it
	// cannot know whether a rival still exchanges the code.
	unread bool
}

// Tainted reports that the code may already have been used (an earlier
// attempt may have sent it, on this or another replica): a 40029 for it
// then means "outcome unknown", never "invalid code".
func (c *Claim) Tainted() bool { return c.tainted }

// Local reports that the claim was made without the shared store (degraded
// mode): another replica may be exchanging the same code. An outcome other
// than a number is then not final: Finish keeps it, and a retry is answered
// ErrUnresolved until the shared store was consulted.
func (c *Claim) Local() bool { return c.local }

// Unresolved reports that Finish kept an outcome without a number that is
// not final: the claim was Local, or NumberElsewhere could not read the
// shared store, so another replica may still obtain the number. Retries
// are answered ErrUnresolved until the store was read, and the caller
// should be too.
func (c *Claim) Unresolved() bool {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.e.state == done && c.e.unresolved
}

// Begin decides what happens to key for owner: a replay of a known outcome,
// a claim to exchange it, or an error (see the Err* variables; the caller's
// context error means its deadline passed before anything was sent).
func (l *Ledger) Begin(ctx context.Context, key, owner string) (Begun, error) {
	waited := false // for an exchange of the code on another replica
	for {
		if err := ctx.Err(); err != nil {
			if waited {
				return Begun{}, ErrInFlight
			}
			return Begun{}, err
		}
		now := time.Now()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return Begun{}, ErrClosed
		}
		l.sweep(now)
		e := l.entries[key]
		if e != nil && e.state != released && e.owner != owner {
			l.mu.Unlock()
			return Begun{}, ErrForeign
		}
		var prior *entry // a released entry this claim replaces
		switch {
		case e == nil:
			e = &entry{expires: now.Add(l.o.TTL)}
			l.entries[key] = e
			l.order = append(l.order, orderItem{key, e.expires})
			l.evict(now)
		case e.state == starting || e.state == running:
			ch := e.done
			l.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Begun{}, ErrInFlight
			}
		case e.state == done:
			sealed, number := e.sealed, e.number
			l.mu.Unlock()
			if number || l.shared == nil {
				return Begun{Sealed: sealed}, nil
			}
			b, retry, err := l.betterShared(ctx, key, owner, e, sealed)
			if retry {
				waited = waited || err == nil
				continue
			}
			return b, err
		default: // released or elsewhere: claim it again, keeping what is known
			cp := *e
			prior = &cp
		}
		claimID := newID()
		e.state, e.owner, e.claimID, e.done = starting, owner, claimID, make(chan struct{})
		e.lease, e.shared, e.synced = now.Add(l.o.Lease), false, false
		taint := e.tainted
		l.mu.Unlock()

		b, retry, err := l.claim(ctx, key, owner, e, prior, taint)
		if retry {
			// nil: the code was being exchanged elsewhere; errSettled:
			// the store's new epoch settled.
			waited = waited || err == nil
			continue
		}
		return b, err
	}
}

// claim takes key in the shared store for the starting entry e (this
// process's placeholder, which makes duplicates here wait). retry asks
// Begin to look again (the record changed, or the store was settling).
func (l *Ledger) claim(ctx context.Context, key, owner string, e, prior *entry, taint bool) (b Begun, retry bool, err error) {
	if l.shared == nil {
		return Begun{Claim: l.run(key, e, false, false, taint)}, false, nil
	}
	if !l.br.Allow() {
		l.o.OnFallback("claim", nil)
		return l.local(key, e, prior, false)
	}
	res, err := l.shared.Claim(ctx, replay.Claim{Key: key, ID: e.claimID, Owner: owner, Lease: e.lease, TTL: l.o.TTL, Tainted: taint, Settle: l.o.Settle})
	switch {
	case err != nil && ctx.Err() != nil:
		// The caller's deadline, not a store failure: nothing was sent,
		// and a local claim could send a code another replica holds. The
		// store may have taken the claim before the deadline: it is
		// released in the background, so that nobody waits for it.
		l.br.Abandon()
		l.orphan(key, e.claimID)
		l.abort(key, e, prior)
		return Begun{}, false, ctx.Err()
	case err != nil:
		l.br.Failure()
		l.o.OnFallback("claim", err)
		l.log.Warn("shared replay store: claim failed", "err", err)
		// The store may have taken the claim before the failure (a reply
		// lost): the claim id is used there too when the exchange ends.
		return l.local(key, e, prior, true)
	}
	l.br.Success()
	l.observe(res.Epoch)
	switch {
	case res.Settling:
		l.abort(key, e, prior)
		pause := min(time.Until(res.Epoch.Born.Add(l.o.Settle)), l.o.Settle) + 10*time.Millisecond
		if err := wait.Sleep(ctx, pause); err != nil {
			return Begun{}, false, err
		}
		return Begun{}, true, errSettled
	case res.Claimed:
		return Begun{Claim: l.run(key, e, true, true, taint || res.Record.Tainted || l.suspicious(res))}, false, nil
	}
	rec := res.Record
	if rec.Owner != owner {
		l.abort(key, e, prior)
		return Begun{}, false, ErrForeign
	}
	if now := time.Now(); rec.State == replay.Pending || rec.RivalOpen(now) {
		// Remember that another replica holds the code: should the store
		// fail before its outcome is known, this replica must not claim
		// the code on its own (a second send, and an outcome_unknown that
		// would hide the number the other replica is about to get).
		l.elsewhere(e, prior, later(rec.LeaseUntil, rec.Rival))
	} else {
		l.abort(key, e, prior)
	}
	return l.follow(ctx, key, rec)
}

// follow answers Begin from a shared record of another claim: its outcome,
// or a wait for it (retry).
func (l *Ledger) follow(ctx context.Context, key string, rec replay.Record) (Begun, bool, error) {
	now := time.Now()
	var until time.Time // when the record may have changed at the latest
	switch {
	case rec.State == replay.Done && !rec.RivalOpen(now):
		return Begun{Sealed: rec.Sealed}, false, nil
	case rec.State == replay.Pending:
		until = rec.LeaseUntil
	case rec.State != replay.Done:
		return Begun{}, true, nil
	}
	if rec.RivalOpen(now) {
		// A rival exchange of the code (see replay.Record.Rival) may
		// still bring a number: an outcome without one is not final, and
		// a claim abandoned meanwhile is not the end.
		until = later(until, rec.Rival)
	}
	if now.After(until) {
		return Begun{}, false, ErrAbandoned
	}
	if err := l.waitShared(ctx, key, until); err != nil {
		return Begun{}, false, ErrInFlight
	}
	return Begun{}, true, nil
}

// elsewhere turns the starting entry e into a note that another replica
// holds the code until lease; its waiters look again.
func (l *Ledger) elsewhere(e, prior *entry, lease time.Time) {
	l.mu.Lock()
	ch := e.done
	e.state, e.lease, e.shared, e.synced = elsewhere, lease, false, true
	if prior != nil {
		e.tainted = prior.tainted
	}
	l.mu.Unlock()
	close(ch)
}

// orphan notes a claim the shared store may hold although its claimant
// gave up before sending anything: the background loop releases it.
func (l *Ledger) orphan(key, id string) {
	l.mu.Lock()
	l.orphans = append(l.orphans, orphanClaim{key: key, id: id, until: time.Now().Add(l.o.Lease)})
	l.mu.Unlock()
	l.requestSync()
}

type orphanClaim struct {
	key, id string
	until   time.Time // after its lease nobody waits for it any more
}

// suspicious reports whether a claim answered res must be tainted: the
// store's data is younger than a code's life (it lost it), or a replica was
// recently cut off from it (see Ledger.suspect and replay.Beat).
func (l *Ledger) suspicious(res replay.ClaimResult) bool {
	now := time.Now()
	if res.Epoch.ID != "" && now.Sub(res.Epoch.Born) < l.o.TTL {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.suspect) || now.Before(res.TaintUntil)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// local claims key in this process only (the shared store is down).
// maybe says the store may hold the claim anyway (its reply was lost).
func (l *Ledger) local(key string, e, prior *entry, maybe bool) (Begun, bool, error) {
	switch {
	case !l.o.Fallback:
		l.abort(key, e, prior)
		return Begun{}, false, ErrStore
	case prior != nil && prior.state == elsewhere:
		// Another replica holds the code: wait for the store to say
		// what became of it, never send it from here.
		l.abort(key, e, prior)
		if time.Now().Before(prior.lease) {
			return Begun{}, false, ErrInFlight
		}
		return Begun{}, false, ErrUnresolved
	}
	// Another replica, or this one before the outage, may have sent the
	// code already.
	c := l.run(key, e, maybe, false, true)
	c.local = true
	return Begun{Claim: c}, false, nil
}

// run turns the starting entry e into this process's running exchange.
// inShared says the shared store holds, or may hold, the claim; confirmed
// that it surely does (a claim whose reply was lost is published by the
// background loop like any local claim).
func (l *Ledger) run(key string, e *entry, inShared, confirmed, tainted bool) *Claim {
	l.mu.Lock()
	e.state, e.shared, e.synced, e.tainted = running, inShared, confirmed, e.tainted || tainted
	e.unresolved = false
	l.mu.Unlock()
	return &Claim{l: l, key: key, e: e, tainted: tainted}
}

// abort undoes the placeholder e: back to the released entry it replaced,
// or gone; either way its waiters look again.
func (l *Ledger) abort(key string, e, prior *entry) {
	l.mu.Lock()
	ch := e.done
	if prior != nil {
		*e = *prior
	} else if l.entries[key] == e {
		delete(l.entries, key)
	}
	l.mu.Unlock()
	close(ch)
}

// betterShared returns the outcome to replay for a code this process holds
// an error outcome for: the shared store's number if it has one (which
// then replaces the local outcome); a wait (retry) while another replica
// still exchanges the code; else the local outcome, which is published if
// the shared store has not seen it. An unresolved outcome (see Claim.Local)
// is not served before the store was read: ErrUnresolved meanwhile.
func (l *Ledger) betterShared(ctx context.Context, key, owner string, e *entry, local []byte) (Begun, bool, error) {
	var rec replay.Record
	err := l.sharedOp(ctx, "get", func(ctx context.Context) (err error) { rec, err = l.shared.Get(ctx, key); return err })
	l.mu.Lock()
	unresolved, unsynced := e.unresolved, !e.synced
	l.mu.Unlock()
	switch {
	case err != nil && !errors.Is(err, replay.ErrNotFound):
		if unresolved {
			return Begun{}, false, ErrUnresolved
		}
		return Begun{Sealed: local}, false, nil
	case err == nil && rec.State == replay.Done && rec.Number && rec.Owner == owner:
		l.adopt(e, rec)
		return Begun{Sealed: rec.Sealed}, false, nil
	case err == nil && rec.State == replay.Done && rec.Owner == owner && rec.RivalOpen(time.Now()):
		// This outcome, or the one the store holds, has no number, and a
		// replica that claimed the code on its own during an outage still
		// exchanges it: its outcome decides, until its lease.
		return l.follow(ctx, key, rec)
	case err == nil && rec.State == replay.Pending && rec.Owner == owner && unresolved && time.Now().Before(rec.LeaseUntil):
		// Another replica still exchanges the code (it claimed it while
		// this one could not see the store), or this replica's own
		// provisional record still waits for one (see restore): that
		// exchange's outcome decides, until the lease.
		return l.follow(ctx, key, rec)
	}
	l.mu.Lock()
	if e.unresolved {
		// The store was read and holds nothing better: the local outcome
		// stands, and is published as final now.
		e.unresolved, e.synced, unsynced = false, false, true
	}
	l.mu.Unlock()
	if unsynced {
		l.requestSync()
	}
	return Begun{Sealed: local}, false, nil
}

// adopt replaces e's outcome with the shared record rec, a number.
func (l *Ledger) adopt(e *entry, rec replay.Record) {
	l.mu.Lock()
	if e.state == done && !e.number {
		e.sealed, e.number, e.shared, e.synced = rec.Sealed, true, true, true
		e.unresolved = false
	}
	l.mu.Unlock()
}

// Outcome says what a finished exchange obtained.
type Outcome uint8

// Outcomes.
const (
	// Number: WeChat's answer with the phone number, the one outcome no
	// later attempt can improve on.
	Number Outcome = iota + 1
	// Refusal: a definite answer other than a number (40029 for a code
	// nobody sent before, 40013, a watermark of another app).
	Refusal
	// Unknown: WeChat may have used the code and its answer was lost.
	// After a claim made without the shared store (Claim.Local) it is not
	// final: another replica may hold the number (see ErrUnresolved).
	Unknown
)

// Finish records the claim's final outcome: sealed, of kind out. The outcome is kept in this process for the code's
// life whatever happens to the shared store, and published there now or,
// if the store is unreachable, when it is back.
func (c *Claim) Finish(ctx context.Context, sealed []byte, out Outcome) {
	l, e := c.l, c.e
	number := out == Number
	l.mu.Lock()
	e.state, e.sealed, e.number, e.synced = done, sealed, number, false
	e.unresolved = (c.local || c.unread) && out == Unknown
	if e.unresolved {
		// How long other replicas' exchanges of the code, made while
		// this one could not see them, may still bring a number.
		e.lease = time.Now().Add(l.o.Lease)
	}
	inShared, id, ch, unresolved := e.shared, e.claimID, e.done, e.unresolved
	l.mu.Unlock()
	close(ch)
	if l.shared == nil {
		return
	}
	if !inShared || unresolved {
		// An unresolved outcome is not final: the store gets only its
		// taint (see restore), from the background loop.
		l.requestSync()
		return
	}
	// When the shared record is not this claim's any more (its lease
	// passed, or the store lost its data), the outcome is published where
	// it adds knowledge, and a number found there taken.
	err := l.sharedOp(ctx, "complete", func(ctx context.Context) error { return l.shared.Complete(ctx, c.key, id, sealed, number) })
	l.published(ctx, c.key, e, id, err, "shared replay store: cannot record an outcome; keeping it in this process and publishing it when the store is back")
}

// NumberElsewhere waits up to d for a phone number that another replica
// recorded for the claim's code, and takes it as the claim's outcome if one
// appears (the claim is then finished: the caller neither Finishes nor
// Releases it). Call it when WeChat refused a tainted claim's code (40029):
// the code may have been used by a replica that was cut off from the shared
// store and publishes its number within a heartbeat of its return. Call it
// with d = 0 for any other outcome without a number: while the store shows
// a rival exchange of the code (see replay.Record.Rival), it waits for that
// exchange's outcome, up to its lease and within ctx, whatever d is. When
// it could not read the store at all, the outcome Finish then records
// without a number is Unresolved.
func (c *Claim) NumberElsewhere(ctx context.Context, d time.Duration) ([]byte, bool) {
	l, e := c.l, c.e
	if l.shared == nil {
		return nil, false
	}
	deadline := time.Now().Add(d)
	read := false
	for {
		var rec replay.Record
		err := l.sharedOp(ctx, "get", func(ctx context.Context) (err error) { rec, err = l.shared.Get(ctx, c.key); return err })
		read = read || err == nil || errors.Is(err, replay.ErrNotFound)
		if err == nil && rec.State == replay.Done && rec.Number && rec.Owner == e.owner {
			l.mu.Lock()
			e.state, e.sealed, e.number, e.shared, e.synced, e.unresolved = done, rec.Sealed, true, true, true, false
			ch := e.done
			l.mu.Unlock()
			close(ch)
			return rec.Sealed, true
		}
		if err == nil && rec.RivalOpen(time.Now()) && rec.RivalID != e.claimID && rec.Rival.After(deadline) {
			// A replica that claimed the code on its own during an outage
			// still exchanges it: wait for its outcome, within ctx.
			deadline = rec.Rival
		}
		if !time.Now().Before(deadline) || wait.Sleep(ctx, min(100*time.Millisecond, time.Until(deadline))) != nil {
			// Without one read of the store, a rival is unknown: see
			// Unresolved.
			c.unread = !read
			return nil, false
		}
	}
}

// Release gives the code back: its exchange ended without a final outcome.
// tainted says the code may have been used (WeChat answered -1 or the
// attempt may otherwise have reached it): a later 40029 then means "outcome
// unknown". An untainted release lets any caller claim the code again.
func (c *Claim) Release(ctx context.Context, tainted bool) {
	l, e := c.l, c.e
	l.mu.Lock()
	e.state, e.tainted, e.synced = released, e.tainted || tainted, false
	inShared, id, ch := e.shared, e.claimID, e.done
	if !e.tainted && !inShared && l.entries[c.key] == e {
		delete(l.entries, c.key) // nobody needs to know
	}
	l.mu.Unlock()
	close(ch)
	if l.shared == nil {
		return
	}
	if !inShared {
		if e.tainted {
			l.requestSync() // publish the taint
		}
		return
	}
	// When the claim is gone from the store (its data was lost), the
	// taint, if any, is published as a released record. When the store
	// fails, other replicas see the claim until it is released (the
	// background loop retries) or its lease passes.
	err := l.sharedOp(ctx, "release", func(ctx context.Context) error { return l.shared.Release(ctx, c.key, id, tainted) })
	l.published(ctx, c.key, e, id, err, "shared replay store: cannot release a claim; retrying in the background")
}

// published follows up the shared store's answer err to publishing e's
// state under claim id: e is in sync when the store took it; when the
// store no longer holds the claim, e is restored there (restore); when
// the store failed, the background loop retries, and warn is logged.
func (l *Ledger) published(ctx context.Context, key string, e *entry, id string, err error, warn string) {
	switch {
	case err == nil:
		l.markSynced(key, e, id)
	case errors.Is(err, replay.ErrNotClaimed):
		l.restore(ctx, key, e)
	default:
		l.log.Warn(warn, "err", err)
		l.requestSync()
	}
}

// markSynced notes that Shared holds e's current state (claim id): a
// released entry nobody needs any more is forgotten.
func (l *Ledger) markSynced(key string, e *entry, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.claimID != id || e.state == starting {
		return
	}
	e.shared, e.synced = true, true
	if e.state == released && !e.tainted && l.entries[key] == e {
		delete(l.entries, key)
	}
}

// Has reports whether a live record exists for key, here or in the shared
// store (a code exchanged under an older data key during a rotation).
func (l *Ledger) Has(ctx context.Context, key string) bool {
	l.mu.Lock()
	e := l.entries[key]
	here := e != nil && e.state != released && time.Now().Before(e.expires)
	l.mu.Unlock()
	if here || l.shared == nil {
		return here
	}
	var rec replay.Record
	err := l.sharedOp(ctx, "get", func(ctx context.Context) (err error) { rec, err = l.shared.Get(ctx, key); return err })
	return err == nil && rec.State != replay.Released
}

// sharedOp runs op on the shared store through the breaker, with a bounded
// context detached from the caller's cancellation.
func (l *Ledger) sharedOp(ctx context.Context, name string, op func(context.Context) error) error {
	if !l.br.Allow() {
		l.o.OnFallback(name, nil)
		return errBreakerOpen
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := op(octx)
	switch {
	case err == nil, errors.Is(err, replay.ErrNotFound), errors.Is(err, replay.ErrNotClaimed):
		l.br.Success()
	default:
		l.br.Failure()
		l.o.OnFallback(name, err)
	}
	return err
}

var errBreakerOpen = errors.New("ledger: shared store skipped (unavailable)")

// errSettled asks Begin to claim again once a new epoch settled.
var errSettled = errors.New("ledger: epoch settled")

// waitShared waits until key's shared record may have changed, the lease
// passes (nil) or ctx ends (its error).
func (l *Ledger) waitShared(ctx context.Context, key string, lease time.Time) error {
	wctx, cancel := context.WithDeadline(ctx, lease.Add(time.Millisecond))
	defer cancel()
	err := replay.WaitFor(wctx, l.shared, key, 25*time.Millisecond)
	if err != nil && ctx.Err() == nil {
		return nil // the lease passed: look again
	}
	return err
}

// observe notes the shared store's epoch: a younger one than any seen
// means its data may have been lost, so everything is published again.
func (l *Ledger) observe(ep replay.Epoch) {
	if ep.ID == "" {
		return
	}
	l.mu.Lock()
	newer := ep.Born.After(l.knownBorn)
	if newer {
		if !l.knownBorn.IsZero() {
			l.log.Warn("shared replay store lost its data (a new epoch); republishing what this replica holds")
		}
		l.knownBorn, l.fullSync = ep.Born, true
	}
	l.mu.Unlock()
	if newer {
		l.requestSync()
	}
}

func (l *Ledger) requestSync() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// loop heartbeats the shared store and publishes what could not be
// recorded, until ctx ends.
func (l *Ledger) loop(ctx context.Context) {
	t := time.NewTicker(l.o.Heartbeat)
	defer t.Stop()
	first := make(chan struct{}, 1)
	first <- struct{}{} // a heartbeat at once: a fresh store's epoch starts settling now
	for {
		select {
		case <-ctx.Done():
			return
		case <-first:
			_, _ = l.heartbeat(ctx, false)
		case <-t.C:
			_, _ = l.heartbeat(ctx, false)
		case <-l.wake:
		}
		l.sync(ctx)
	}
}

// heartbeat registers this replica with the shared store and reads what
// the store knows: its epoch (a new one means lost data), the latest taint
// a replica reported, and the other replicas' last heartbeats (one that
// went silent may be cut off and sending codes on its own: claims are
// tainted for the life of the codes it may hold). It is also the
// breaker's probe, at every beat even during the cool-off: a store that
// is back is used again within a beat, one still down keeps it open.
func (l *Ledger) heartbeat(ctx context.Context, leave bool) (replay.Epoch, error) {
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	l.mu.Lock()
	report := l.report
	l.mu.Unlock()
	f, err := l.shared.Heartbeat(hctx, replay.Beat{Member: l.id, Leave: leave, TaintUntil: report})
	switch {
	case err == nil:
		l.br.Success()
	case ctx.Err() == nil:
		l.br.Failure()
		l.o.OnFallback("heartbeat", err)
		return replay.Epoch{}, err
	default:
		return replay.Epoch{}, err
	}
	now := f.Now // the store's clock, which wrote the members' times
	if now.IsZero() {
		now = time.Now()
	}
	stale := 3 * l.o.Heartbeat
	l.mu.Lock()
	if l.report.Equal(report) {
		l.report = time.Time{}
	}
	l.suspect = later(l.suspect, f.TaintUntil)
	for id, seen := range f.Members {
		if id != l.id && now.Sub(seen) > stale {
			l.suspect = later(l.suspect, seen.Add(l.o.TTL+l.o.Lease))
		}
	}
	l.mu.Unlock()
	l.observe(f.Epoch)
	return f.Epoch, nil
}

// Settle waits, within ctx, until the shared store's epoch is old enough
// for claims (Options.Settle): a replica that starts on a store that just
// began an epoch (a new Redis, or one that lost its data) calls it before
// serving, so that its first requests do not wait. It returns at once
// when there is no shared store, and with the store's error when it
// cannot be read.
func (l *Ledger) Settle(ctx context.Context) error {
	if l.shared == nil {
		return nil
	}
	ep, err := l.heartbeat(ctx, false)
	if err != nil || ep.ID == "" {
		return err
	}
	return wait.Sleep(ctx, min(time.Until(ep.Born.Add(l.o.Settle)), l.o.Settle))
}

// sync publishes to the shared store what it lacks: the entries not yet
// recorded there (all of them after a data loss), and pending releases. It
// stops at the first failure of the store.
func (l *Ledger) sync(ctx context.Context) {
	if l.shared == nil {
		return
	}
	type item struct {
		key string
		e   *entry
	}
	l.mu.Lock()
	orphans := l.orphans
	l.orphans = nil
	l.mu.Unlock()
	for i, o := range orphans {
		if time.Now().After(o.until) {
			continue
		}
		err := l.sharedOp(ctx, "release", func(ctx context.Context) error { return l.shared.Release(ctx, o.key, o.id, false) })
		if err != nil && !errors.Is(err, replay.ErrNotClaimed) {
			l.mu.Lock()
			l.orphans = append(l.orphans, orphans[i:]...)
			l.mu.Unlock()
			return
		}
	}
	l.mu.Lock()
	full := l.fullSync
	l.fullSync = false
	var todo []item
	now := time.Now()
	for k, e := range l.entries {
		if now.Before(e.expires) && e.state != starting && e.state != elsewhere && (full || !e.synced) {
			todo = append(todo, item{k, e})
		}
	}
	l.mu.Unlock()
	for _, it := range todo {
		if ctx.Err() != nil || !l.restore(ctx, it.key, it.e) {
			l.mu.Lock()
			l.fullSync = l.fullSync || full
			l.mu.Unlock()
			return
		}
	}
}

// restore publishes e to the shared store and takes a number found there;
// it reports false when the store failed.
func (l *Ledger) restore(ctx context.Context, key string, e *entry) bool {
	l.mu.Lock()
	rec := replay.Record{ClaimID: e.claimID, Owner: e.owner, LeaseUntil: e.lease, Sealed: e.sealed, Number: e.number, Tainted: e.tainted}
	st, id, inShared, unresolved, ttl := e.state, e.claimID, e.shared, e.unresolved, time.Until(e.expires)
	l.mu.Unlock()
	if ttl <= 0 {
		return true
	}
	if st == done && unresolved {
		// Not final (see Claim.Local): published as a pending claim of
		// this replica until e.lease, tainted. Others do not send the
		// code meanwhile (WeChat may have used it), they wait for what
		// an exchange another replica made during the outage brings (its
		// number replaces this record; its own pending claim, if first,
		// is kept), and after the lease they answer outcome_unknown.
		st, rec.Tainted = running, true
	}
	switch st {
	case running:
		rec.State = replay.Pending
	case done:
		rec.State = replay.Done
	case released:
		if inShared {
			err := l.sharedOp(ctx, "release", func(ctx context.Context) error { return l.shared.Release(ctx, key, id, rec.Tainted) })
			if err == nil || !rec.Tainted {
				if err != nil && !errors.Is(err, replay.ErrNotClaimed) {
					return false
				}
				l.markSynced(key, e, id)
				return true
			}
			if !errors.Is(err, replay.ErrNotClaimed) {
				return false
			}
			// The claim is gone from the store (lost with its data):
			// publish the taint as a released record.
		}
		rec.State = replay.Released
	default:
		return true
	}
	var got replay.Record
	err := l.sharedOp(ctx, "restore", func(ctx context.Context) (err error) { got, err = l.shared.Restore(ctx, key, rec, ttl); return err })
	if err != nil {
		return false
	}
	if got.State == replay.Done && got.Number && !rec.Number && got.Owner == rec.Owner {
		l.adopt(e, got)
		return true
	}
	// Either the store now holds this entry, or it keeps another record
	// that this one does not improve on (another replica's claim or
	// outcome): nothing more to publish.
	l.markSynced(key, e, id)
	return true
}

// sweep forgets expired entries, oldest first.
func (l *Ledger) sweep(now time.Time) {
	for l.head < len(l.order) && !now.Before(l.order[l.head].expires) {
		it := l.order[l.head]
		l.order[l.head] = orderItem{}
		l.head++
		if e := l.entries[it.key]; e != nil && !now.Before(e.expires) && (e.state == done || e.state == released || e.state == elsewhere) {
			delete(l.entries, it.key)
		}
	}
	l.compact()
}

// forgetWarnEvery spaces the warnings about forgotten outcomes.
const forgetWarnEvery = time.Minute

// evict forgets the oldest finished entries beyond MaxEntries.
func (l *Ledger) evict(now time.Time) {
	for scanned := 0; len(l.entries) > l.o.MaxEntries && l.head < len(l.order) && scanned < 8; scanned++ {
		it := l.order[l.head]
		l.order[l.head] = orderItem{}
		l.head++
		e := l.entries[it.key]
		switch {
		case e == nil || !e.expires.Equal(it.expires):
			// Gone, or a later entry of the same code: not the oldest.
		case e.state == done || e.state == released || e.state == elsewhere:
			if !e.synced {
				l.forgotten++
			}
			delete(l.entries, it.key)
		default: // still being exchanged: keep it, look again later
			l.order = append(l.order, it)
		}
	}
	l.compact()
	if l.forgotten > 0 && now.Sub(l.warned) >= forgetWarnEvery {
		msg := "ledger full: forgot codes still within their life that the shared store has not recorded; a retry of one can reach WeChat again"
		if l.shared == nil {
			msg = "ledger full: forgot codes still within their life; a retry of one can reach WeChat again (a shared store keeps every outcome for the code's life)"
		}
		l.log.Warn(msg, "forgotten", l.forgotten, "max_entries", l.o.MaxEntries) // forgotten: since the last warning
		l.forgotten, l.warned = 0, now
	}
}

func (l *Ledger) compact() {
	if l.head > 1024 && l.head*2 > len(l.order) {
		l.order = append(l.order[:0], l.order[l.head:]...)
		l.head = 0
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
