package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/internal/replaytest"
	"github.com/wxphone/wxphone/replay"
)

func newLedger(t *testing.T, o Options) *Ledger {
	t.Helper()
	l := New(o)
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func begin(t *testing.T, l *Ledger, key, owner string) Begun {
	t.Helper()
	b, err := l.Begin(context.Background(), key, owner)
	if err != nil {
		t.Fatalf("Begin(%s): %v", key, err)
	}
	return b
}

// TestBeginThenFinishThenReplay is the plain path, with and without a shared
// store: one claim, then every retry gets the outcome.
func TestBeginThenFinishThenReplay(t *testing.T) {
	for _, shared := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			o := Options{}
			if shared {
				o.Shared = replaytest.NewSwitch()
			}
			l := newLedger(t, o)
			b := begin(t, l, "k", "o")
			if b.Claim == nil || b.Claim.Tainted() {
				t.Fatalf("first Begin = %+v, want an untainted claim", b)
			}
			b.Claim.Finish(context.Background(), []byte("number"), Number)
			for range 2 {
				if r := begin(t, l, "k", "o"); r.Claim != nil || string(r.Sealed) != "number" {
					t.Fatalf("retry = %+v, want the replay", r)
				}
			}
			if _, err := l.Begin(context.Background(), "k", "someone else"); !errors.Is(err, ErrForeign) {
				t.Fatalf("another owner: %v, want ErrForeign", err)
			}
		})
	}
}

// TestOneSenderPerProcessWhileTheStoreIsSlow (issue 10, violation 4): the
// in-process entry exists before the shared claim is made, so a duplicate
// in this process waits for the first request, even when the shared store
// is slow and then fails, instead of claiming the code itself.
func TestOneSenderPerProcessWhileTheStoreIsSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l := newLedger(t, Options{Shared: sw, Fallback: true})
		release := sw.Hold()
		sw.SetDown(true)
		var claims atomic.Int32
		var wg sync.WaitGroup
		replays := make(chan string, 4)
		for range 4 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				b, err := l.Begin(ctx, "k", "o")
				switch {
				case err != nil:
					t.Errorf("Begin: %v", err)
				case b.Claim != nil:
					claims.Add(1)
					time.Sleep(100 * time.Millisecond) // the exchange
					b.Claim.Finish(ctx, []byte("number"), Number)
				default:
					replays <- string(b.Sealed)
				}
			})
		}
		time.Sleep(500 * time.Millisecond) // the store answers nothing for a while
		release()
		wg.Wait()
		close(replays)
		if n := claims.Load(); n != 1 {
			t.Fatalf("%d claims for one code in one process, want 1", n)
		}
		for r := range replays {
			if r != "number" {
				t.Fatalf("a duplicate got %q", r)
			}
		}
		if n := sw.Calls("claim"); n != 1 {
			t.Errorf("the shared store was asked %d times, want once (duplicates wait in-process)", n)
		}
	})
}

// TestOwnOutcomesReplayWithoutTheStore (issue 10, violation 6): a replica
// replays what it exchanged itself while the shared store is paused or
// down, instead of claiming the code on its own and sending it again.
func TestOwnOutcomesReplayWithoutTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l := newLedger(t, Options{Shared: sw, Fallback: true})
		b := begin(t, l, "k", "o")
		b.Claim.Finish(context.Background(), []byte("number"), Number)
		release := sw.Hold() // paused: SIGSTOP
		defer release()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := l.Begin(ctx, "k", "o")
		if err != nil || r.Claim != nil || string(r.Sealed) != "number" {
			t.Fatalf("retry while the store is paused = %+v, %v; want the replay", r, err)
		}
		release()
		sw.SetDown(true)
		if r := begin(t, l, "k", "o"); r.Claim != nil || string(r.Sealed) != "number" {
			t.Fatalf("retry while the store is down = %+v; want the replay", r)
		}
	})
}

// TestLocalErrorNeverHidesTheSharedNumber (issue 10, violation 6): an error
// outcome this replica recorded on its own during an outage does not hide a
// number another replica recorded in the shared store.
func TestLocalErrorNeverHidesTheSharedNumber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		a := newLedger(t, Options{Shared: sw, Fallback: true})
		b := newLedger(t, Options{Shared: sw, Fallback: true})
		// Replica a exchanges the code and records the number.
		ca := begin(t, a, "k", "o")
		ca.Claim.Finish(context.Background(), []byte("number"), Number)
		// The store goes down; replica b claims on its own (tainted),
		// sends the code again and records outcome_unknown.
		sw.SetDown(true)
		cb := begin(t, b, "k", "o")
		if cb.Claim == nil || !cb.Claim.Tainted() {
			t.Fatalf("claim during the outage = %+v, want a tainted claim", cb)
		}
		cb.Claim.Finish(context.Background(), []byte("outcome unknown"), Unknown)
		// Not final while b cannot read the store: another replica may
		// hold the number.
		if r, err := b.Begin(context.Background(), "k", "o"); !errors.Is(err, ErrUnresolved) {
			t.Fatalf("retry on b during the outage = %+v, %v; want ErrUnresolved", r, err)
		}
		// The store is back: b's retry gets the number, and keeps it.
		sw.SetDown(false)
		time.Sleep(2 * time.Second) // past the breaker's cool-off
		if r := begin(t, b, "k", "o"); string(r.Sealed) != "number" {
			t.Fatalf("retry on b after the outage = %q, want the number", r.Sealed)
		}
		sw.SetDown(true)
		time.Sleep(2 * time.Second)
		if r := begin(t, b, "k", "o"); string(r.Sealed) != "number" {
			t.Fatalf("retry on b in the next outage = %q, want the number it adopted", r.Sealed)
		}
	})
}

// TestOutageClaimsArePublished: what a replica did on its own during an
// outage reaches the shared store once it is back, without traffic: a
// running claim (so others wait for it), an outcome (so others replay it),
// and a taint.
func TestOutageClaimsArePublished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l := newLedger(t, Options{Shared: sw, Fallback: true})
		sw.SetDown(true)
		done := begin(t, l, "done", "o")
		done.Claim.Finish(context.Background(), []byte("number"), Number)
		busy := begin(t, l, "busy", "o")
		busy.Claim.Release(context.Background(), true)
		running := begin(t, l, "running", "o")
		sw.SetDown(false)
		time.Sleep(3 * time.Second) // cool-off, then heartbeats
		m := sw.Memory()
		ctx := context.Background()
		if r, err := m.Get(ctx, "done"); err != nil || r.State != replay.Done || string(r.Sealed) != "number" || !r.Number {
			t.Errorf("published outcome = %+v, %v", r, err)
		}
		if r, err := m.Get(ctx, "busy"); err != nil || r.State != replay.Released || !r.Tainted {
			t.Errorf("published taint = %+v, %v", r, err)
		}
		if r, err := m.Get(ctx, "running"); err != nil || r.State != replay.Pending {
			t.Errorf("published running claim = %+v, %v", r, err)
		}
		// Another replica now waits for the running exchange and gets its
		// outcome.
		other := newLedger(t, Options{Shared: sw, Fallback: true})
		got := make(chan Begun, 1)
		go func() { got <- begin(t, other, "running", "o") }()
		time.Sleep(100 * time.Millisecond)
		running.Claim.Finish(ctx, []byte("late number"), Number)
		if r := <-got; r.Claim != nil || string(r.Sealed) != "late number" {
			t.Fatalf("the other replica got %+v, want the replay", r)
		}
	})
}

// TestDataLossIsDetectedAndRepaired (issue 10, violation 7): a shared store
// that restarts empty starts a new epoch. Replicas republish what they
// hold before anyone may claim in it, so a retry on another replica gets
// the number instead of sending the code again; a claim in a young epoch
// is tainted, so a 40029 is never read as "invalid code".
func TestDataLossIsDetectedAndRepaired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		a := newLedger(t, Options{Shared: sw, Fallback: true})
		b := newLedger(t, Options{Shared: sw, Fallback: true})
		ca := begin(t, a, "k", "o")
		ca.Claim.Finish(context.Background(), []byte("number"), Number)
		running := begin(t, a, "r", "o")
		sw.Wipe()
		// b's retry of the answered code: it waits for the new epoch to
		// settle, by which time a has republished.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := b.Begin(ctx, "k", "o")
		if err != nil || r.Claim != nil || string(r.Sealed) != "number" {
			t.Fatalf("retry on another replica after the data loss = %+v, %v; want the number", r, err)
		}
		// The code a is still exchanging is republished as pending: b waits.
		got := make(chan Begun, 1)
		go func() { got <- begin(t, b, "r", "o") }()
		time.Sleep(100 * time.Millisecond)
		running.Claim.Finish(context.Background(), []byte("second number"), Number)
		if r := <-got; r.Claim != nil || string(r.Sealed) != "second number" {
			t.Fatalf("b got %+v for a code a was exchanging, want the replay", r)
		}
		// A code nobody held is claimed, tainted while the epoch is young.
		if c := begin(t, b, "new", "o"); c.Claim == nil || !c.Claim.Tainted() {
			t.Fatalf("claim in a young epoch = %+v, want tainted", c)
		}
		time.Sleep(6 * time.Minute)
		if c := begin(t, b, "newer", "o"); c.Claim == nil || c.Claim.Tainted() {
			t.Fatalf("claim in an old epoch = %+v, want untainted", c)
		}
	})
}

// TestFinishAfterTheClaimWasLost: an exchange that ends after its shared
// claim vanished (a data loss) publishes its outcome anyway.
func TestFinishAfterTheClaimWasLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l := newLedger(t, Options{Shared: sw, Fallback: true})
		c := begin(t, l, "k", "o")
		sw.Wipe()
		c.Claim.Finish(context.Background(), []byte("number"), Number)
		if r, err := sw.Memory().Get(context.Background(), "k"); err != nil || r.State != replay.Done || string(r.Sealed) != "number" {
			t.Fatalf("after Finish: %+v, %v", r, err)
		}
	})
}

// TestReleaseAndTaint: an untainted release lets the code be claimed again
// clean; a tainted one taints the next claim, here and on other replicas,
// also when the shared store is down.
func TestReleaseAndTaint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		a := newLedger(t, Options{Shared: sw, Fallback: true})
		b := newLedger(t, Options{Shared: sw, Fallback: true})
		c := begin(t, a, "k", "o")
		c.Claim.Release(context.Background(), false)
		c = begin(t, b, "k", "o")
		if c.Claim == nil || c.Claim.Tainted() {
			t.Fatalf("after a clean release: %+v", c)
		}
		c.Claim.Release(context.Background(), true)
		if c := begin(t, a, "k", "o"); c.Claim == nil || !c.Claim.Tainted() {
			t.Fatalf("after a tainted release on another replica: %+v", c)
		} else {
			c.Claim.Release(context.Background(), false) // a taint is never cleared
		}
		sw.SetDown(true)
		if c := begin(t, a, "k", "o"); c.Claim == nil || !c.Claim.Tainted() {
			t.Fatalf("during an outage: %+v", c)
		}
	})
}

// TestAbandonedAndInFlight: a claim whose lease passed without an outcome
// is abandoned; a caller whose context ends while the code is exchanged
// elsewhere gets ErrInFlight, and one whose deadline passes during the
// shared claim gets its context's error, without a local claim.
func TestAbandonedAndInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		a := newLedger(t, Options{Shared: sw, Fallback: true, Lease: 5 * time.Second})
		b := newLedger(t, Options{Shared: sw, Fallback: true, Lease: 5 * time.Second})
		_ = begin(t, a, "k", "o") // a's exchange never ends
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := b.Begin(ctx, "k", "o"); !errors.Is(err, ErrInFlight) {
			t.Fatalf("while a exchanges: %v, want ErrInFlight", err)
		}
		cancel()
		if _, err := b.Begin(context.Background(), "k", "o"); !errors.Is(err, ErrAbandoned) {
			t.Fatalf("after a's lease: %v, want ErrAbandoned", err)
		}
		release := sw.Hold()
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		_, err := b.Begin(ctx, "other", "o")
		cancel()
		release()
		if !errors.Is(err, context.DeadlineExceeded) || b.Degraded() {
			t.Fatalf("deadline during the claim: %v (degraded %v), want the deadline and no fallback", err, b.Degraded())
		}
		if c := begin(t, b, "other", "o"); c.Claim == nil || c.Claim.Tainted() {
			t.Fatalf("after the deadline: %+v, want a clean claim", c)
		}
	})
}

// TestNoFallbackRefuses: without Fallback a failing shared store refuses
// the code (ErrStore); nothing is claimed.
func TestNoFallbackRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLedger(t, Options{Shared: replaytest.Down{}})
		if _, err := l.Begin(context.Background(), "k", "o"); !errors.Is(err, ErrStore) {
			t.Fatalf("Begin = %v, want ErrStore", err)
		}
		if l.Len() != 0 {
			t.Fatal("a refused code is remembered")
		}
	})
}

// TestMemoryIsBounded: entries expire with the TTL and never exceed
// MaxEntries.
func TestMemoryIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLedger(t, Options{MaxEntries: 10})
		for i := range 50 {
			b := begin(t, l, string(rune('a'+i)), "o")
			b.Claim.Finish(context.Background(), []byte("x"), Number)
		}
		if n := l.Len(); n > 10 {
			t.Fatalf("%d entries, want at most 10", n)
		}
		time.Sleep(6 * time.Minute)
		_ = begin(t, l, "fresh", "o")
		if n := l.Len(); n != 1 {
			t.Fatalf("%d entries after the TTL, want 1", n)
		}
	})
}

// TestForgettingWarnsOnceAMinute: a ledger full of outcomes the shared
// store does not hold forgets one per new code, and says so in one warning
// a minute with the count, not one line per code (a flood of 75,000
// immediate log lines in 30 s of load on one replica, each written while
// the ledger's lock was held).
func TestForgettingWarnsOnceAMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logtest.Buffer
		l := newLedger(t, Options{MaxEntries: 10, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		fill := func(prefix string, n int) {
			for i := range n {
				b := begin(t, l, fmt.Sprintf("%s%d", prefix, i), "o")
				b.Claim.Finish(context.Background(), []byte("x"), Number)
			}
		}
		fill("a", 50)
		if got := strings.Count(logs.String(), "ledger full"); got != 1 {
			t.Fatalf("%d warnings for 40 forgotten outcomes, want 1:\n%s", got, logs.String())
		}
		time.Sleep(30 * time.Second)
		fill("b", 20)
		if got := strings.Count(logs.String(), "ledger full"); got != 1 {
			t.Fatalf("%d warnings within a minute, want 1", got)
		}
		time.Sleep(31 * time.Second)
		fill("c", 1)
		if got := strings.Count(logs.String(), "ledger full"); got != 2 {
			t.Fatalf("%d warnings after a minute, want 2", got)
		}
		if !strings.Contains(logs.String(), `"forgotten":1,`) || !strings.Contains(logs.String(), `"forgotten":60,`) {
			t.Errorf("the warnings do not count the outcomes forgotten (the first at once, then the 39 + 20 + 1 after it):\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "can reach WeChat again") {
			t.Errorf("the warning does not say what forgetting costs:\n%s", logs.String())
		}
	})
}

// slowFirstClaim answers its first claim slowly but successfully, and fails
// every later one at once: a Redis whose reply to the first request came
// just in time, and whose next reply a client gave up on.
type slowFirstClaim struct {
	replay.Store
	release chan struct{}
	calls   atomic.Int32
}

func (s *slowFirstClaim) Claim(ctx context.Context, c replay.Claim) (replay.ClaimResult, error) {
	if s.calls.Add(1) > 1 {
		return replay.ClaimResult{}, replaytest.ErrDown
	}
	<-s.release
	return s.Store.Claim(ctx, c)
}

// TestDuplicateNeverClaimsLocallyBehindASlowClaim (issue 10, violation 4,
// the exact interleaving): the first request's shared claim is slow and
// succeeds; a duplicate in the same process must not make a claim of its
// own (which would time out, open the breaker, and claim the code locally:
// two sends). It waits for the first.
func TestDuplicateNeverClaimsLocallyBehindASlowClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &slowFirstClaim{Store: replay.NewMemory(), release: make(chan struct{})}
		l := newLedger(t, Options{Shared: st, Fallback: true})
		first := make(chan Begun, 1)
		go func() { first <- begin(t, l, "k", "o") }()
		synctest.Wait()
		second := make(chan Begun, 1)
		go func() { second <- begin(t, l, "k", "o") }()
		synctest.Wait()
		close(st.release)
		b := <-first
		if b.Claim == nil {
			t.Fatalf("first = %+v, want the claim", b)
		}
		b.Claim.Finish(context.Background(), []byte("number"), Number)
		if d := <-second; d.Claim != nil || string(d.Sealed) != "number" {
			t.Fatalf("duplicate = %+v, want the first's outcome", d)
		}
		if n := st.calls.Load(); n != 1 {
			t.Fatalf("%d shared claims, want 1", n)
		}
	})
}

// TestCutOffReplicaTaintsTheFleet: a replica that cannot reach the shared
// store (others can) claims codes on its own. Once its heartbeats stop, the
// others taint their claims for the life of the codes it may hold; when it
// is back it reports the outage, so a replica that never saw it taints too.
// Without this, a retry on another replica of a code the cut-off replica
// sent would read WeChat's 40029 as "invalid code".
func TestCutOffReplicaTaintsTheFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		la, lb := sw.Link(), sw.Link()
		a := newLedger(t, Options{Shared: la, Fallback: true})
		b := newLedger(t, Options{Shared: lb, Fallback: true})
		time.Sleep(time.Second) // both registered
		if c := begin(t, b, "before", "o"); c.Claim.Tainted() {
			t.Fatal("a claim before any outage is tainted")
		}
		la.SetDown(true)
		ca := begin(t, a, "k", "o") // a sends the code on its own
		if !ca.Claim.Tainted() {
			t.Fatal("a claim made on its own is not tainted")
		}
		time.Sleep(3 * time.Second) // b's heartbeats see a silent
		if c := begin(t, b, "k", "o"); c.Claim == nil || !c.Claim.Tainted() {
			t.Fatalf("b's claim while a is cut off = %+v, want tainted", c)
		}
		la.SetDown(false)
		time.Sleep(2 * time.Second) // a is back and reports
		c := newLedger(t, Options{Shared: sw.Link(), Fallback: true})
		time.Sleep(time.Second)
		if cl := begin(t, c, "fresh", "o"); cl.Claim == nil || !cl.Claim.Tainted() {
			t.Fatalf("a new replica's claim after the outage = %+v, want tainted", cl)
		}
		time.Sleep(6 * time.Minute)
		if cl := begin(t, c, "later", "o"); cl.Claim == nil || cl.Claim.Tainted() {
			t.Fatalf("a claim after the codes' life = %+v, want clean", cl)
		}
	})
}

// TestRecoveredReplicaTaintsItsClaims: after its own outage a replica taints
// its claims for the codes' life: other replicas, cut off at the same time,
// may not have published their own claims yet.
func TestRecoveredReplicaTaintsItsClaims(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l := newLedger(t, Options{Shared: sw, Fallback: true})
		sw.SetDown(true)
		time.Sleep(time.Second)
		sw.SetDown(false)
		time.Sleep(time.Second)
		if l.Degraded() {
			t.Fatal("still degraded")
		}
		if c := begin(t, l, "k", "o"); c.Claim == nil || !c.Claim.Tainted() {
			t.Fatalf("claim right after the outage = %+v, want tainted", c)
		}
	})
}

// TestGracefulLeaveTaintsNothing: a replica that shuts down leaves the
// fleet; the others do not take its silence for a cut-off.
func TestGracefulLeaveTaintsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		a := New(Options{Shared: sw.Link(), Fallback: true})
		b := newLedger(t, Options{Shared: sw.Link(), Fallback: true})
		time.Sleep(time.Second)
		a.Close(context.Background())
		time.Sleep(3 * time.Second)
		if c := begin(t, b, "k", "o"); c.Claim == nil || c.Claim.Tainted() {
			t.Fatalf("claim after a graceful leave = %+v, want clean", c)
		}
	})
}

// TestRetryBehindAnotherReplicasClaimNeverSendsLocally (found by the fault
// campaign): a retry waits behind another replica's pending claim, then the
// shared store fails. The retry must not claim the code on its own (a second
// send, whose 40029 would become a final outcome_unknown while the other
// replica is about to receive the number): it is answered ErrInFlight, and
// after the claim's lease ErrUnresolved, until the store can be read.
func TestRetryBehindAnotherReplicasClaimNeverSendsLocally(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		lb := sw.Link()
		a := newLedger(t, Options{Shared: sw.Link(), Fallback: true, Lease: 10 * time.Second})
		b := newLedger(t, Options{Shared: lb, Fallback: true, Lease: 10 * time.Second})
		ca := begin(t, a, "k", "o") // a exchanges, slowly
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := b.Begin(ctx, "k", "o")
		cancel()
		if !errors.Is(err, ErrInFlight) {
			t.Fatalf("b while a exchanges: %v, want ErrInFlight", err)
		}
		lb.SetDown(true)
		if _, err := b.Begin(context.Background(), "k", "o"); !errors.Is(err, ErrInFlight) {
			t.Fatalf("b with the store down, within a's lease: %v, want ErrInFlight", err)
		}
		time.Sleep(10 * time.Second)
		if _, err := b.Begin(context.Background(), "k", "o"); !errors.Is(err, ErrUnresolved) {
			t.Fatalf("b with the store down, after a's lease: %v, want ErrUnresolved", err)
		}
		ca.Claim.Finish(context.Background(), []byte("number"), Number)
		lb.SetDown(false)
		time.Sleep(time.Second)
		if r := begin(t, b, "k", "o"); r.Claim != nil || string(r.Sealed) != "number" {
			t.Fatalf("b once the store is back = %+v, want a's number", r)
		}
	})
}

// TestUnresolvedLocalOutcomeWaitsForTheOtherReplica: b, cut off, sent a code
// another replica was exchanging and recorded outcome unknown; once the
// store is back, b's retry follows a's exchange and gets its number.
func TestUnresolvedLocalOutcomeWaitsForTheOtherReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		lb := sw.Link()
		a := newLedger(t, Options{Shared: sw.Link(), Fallback: true})
		b := newLedger(t, Options{Shared: lb, Fallback: true})
		ca := begin(t, a, "k", "o")
		lb.SetDown(true)
		cb := begin(t, b, "k", "o") // b never saw a's claim
		if cb.Claim == nil || !cb.Claim.Local() {
			t.Fatalf("b's claim during its outage = %+v, want a local claim", cb)
		}
		cb.Claim.Finish(context.Background(), []byte("outcome unknown"), Unknown)
		lb.SetDown(false)
		time.Sleep(2 * time.Second)
		got := make(chan Begun, 1)
		go func() { got <- begin(t, b, "k", "o") }()
		time.Sleep(100 * time.Millisecond)
		ca.Claim.Finish(context.Background(), []byte("number"), Number)
		if r := <-got; r.Claim != nil || string(r.Sealed) != "number" {
			t.Fatalf("b's retry = %+v, want a's number", r)
		}
	})
}

// orphanStore executes claims but loses the reply of the first one (the
// caller's deadline passes while the reply is on its way).
type orphanStore struct {
	replay.Store
	lost atomic.Bool
}

func (s *orphanStore) Claim(ctx context.Context, c replay.Claim) (replay.ClaimResult, error) {
	res, err := s.Store.Claim(ctx, c)
	if s.lost.CompareAndSwap(false, true) {
		<-ctx.Done()
		return replay.ClaimResult{}, ctx.Err()
	}
	return res, err
}

// TestOrphanClaimIsReleased (found by the fault campaign): the store took a
// claim whose reply the claimant never saw (its deadline passed). Nothing
// was sent, so the claim is released in the background: another replica
// claims the code at once instead of waiting out the lease and answering
// outcome_unknown for a code that never left wxphone.
func TestOrphanClaimIsReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &orphanStore{Store: replay.NewMemory()}
		a := newLedger(t, Options{Shared: st, Fallback: true, Lease: 20 * time.Second})
		b := newLedger(t, Options{Shared: st, Fallback: true, Lease: 20 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Begin(ctx, "k", "o")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a: %v, want its deadline", err)
		}
		time.Sleep(100 * time.Millisecond)
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := b.Begin(ctx, "k", "o")
		if err != nil || c.Claim == nil || c.Claim.Tainted() {
			t.Fatalf("b after a's orphan claim: %+v, %v; want a clean claim", c, err)
		}
	})
}

// TestNumberElsewhereAfterACutOff (found by the fault campaign): a replica
// cut off from the store obtained a number; another replica, which claimed
// the same code in the store meanwhile (tainted), meets WeChat's 40029. It
// waits a moment for the number the first publishes on its return, instead
// of answering a final outcome_unknown.
func TestNumberElsewhereAfterACutOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		la := sw.Link()
		a := newLedger(t, Options{Shared: la, Fallback: true})
		b := newLedger(t, Options{Shared: sw.Link(), Fallback: true})
		time.Sleep(time.Second)
		la.SetDown(true)
		ca := begin(t, a, "k", "o")
		ca.Claim.Finish(context.Background(), []byte("number"), Number)
		time.Sleep(3 * time.Second) // b sees a silent
		cb := begin(t, b, "k", "o")
		if cb.Claim == nil || !cb.Claim.Tainted() || cb.Claim.Local() {
			t.Fatalf("b's claim = %+v, want a tainted claim in the store", cb)
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			la.SetDown(false) // a returns and publishes
		}()
		sealed, ok := cb.Claim.NumberElsewhere(context.Background(), 2*time.Second)
		if !ok || string(sealed) != "number" {
			t.Fatalf("NumberElsewhere = %q, %v; want a's number", sealed, ok)
		}
		if r := begin(t, b, "k", "o"); string(r.Sealed) != "number" {
			t.Fatalf("b's retry = %+v", r)
		}
		// Without a number anywhere it gives up after the wait.
		cn := begin(t, b, "nobody", "o")
		if _, ok := cn.Claim.NumberElsewhere(context.Background(), time.Second); ok {
			t.Fatal("a number out of nowhere")
		}
	})
}

// TestUnresolvedOutcomeIsNotPublishedAsFinal (found by the fault campaign):
// after a data loss, a replica publishes an outcome it obtained without the
// store and without a number only as a taint. Published as a final
// outcome_unknown, it shadowed the claim another replica was still
// exchanging, and a third replica replayed it: the number was lost.
func TestUnresolvedOutcomeIsNotPublishedAsFinal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l1 := sw.Link()
		r1 := newLedger(t, Options{Shared: l1, Fallback: true})
		r2 := newLedger(t, Options{Shared: sw.Link(), Fallback: true})
		r0 := newLedger(t, Options{Shared: sw.Link(), Fallback: true})
		c2 := begin(t, r2, "k", "o") // r2 exchanges, slowly
		l1.SetDown(true)
		c1 := begin(t, r1, "k", "o") // r1, cut off, sends it again
		c1.Claim.Finish(context.Background(), []byte("outcome unknown"), Unknown)
		sw.Wipe()
		l1.SetDown(false)
		time.Sleep(2 * time.Second) // both republish
		if r, err := sw.Memory().Get(context.Background(), "k"); err != nil || r.State != replay.Pending || !r.Tainted {
			t.Fatalf("the store after republishing: %+v, %v; want r2's pending claim, tainted", r, err)
		}
		got := make(chan Begun, 1)
		go func() { got <- begin(t, r0, "k", "o") }()
		time.Sleep(100 * time.Millisecond)
		c2.Claim.Finish(context.Background(), []byte("number"), Number)
		if r := <-got; r.Claim != nil || string(r.Sealed) != "number" {
			t.Fatalf("r0 = %+v, want r2's number", r)
		}
		if r := begin(t, r1, "k", "o"); string(r.Sealed) != "number" {
			t.Fatalf("r1's retry = %+v, want the number", r)
		}
	})
}

// lostReply reports the first claim as failed (its reply timed out): the
// claimant then claims on its own. With dropped the store never got that
// claim; without, it took it and only the reply was lost.
type lostReply struct {
	replay.Store
	dropped bool
	lost    atomic.Bool
}

func (s *lostReply) Claim(ctx context.Context, c replay.Claim) (replay.ClaimResult, error) {
	if s.lost.CompareAndSwap(false, true) {
		if !s.dropped {
			_, _ = s.Store.Claim(ctx, c)
		}
		return replay.ClaimResult{}, replaytest.ErrDown
	}
	return s.Store.Claim(ctx, c)
}

// TestClaimWithALostReplyIsPublished (found by the fault campaign): a claim
// whose reply was lost is made locally, and the store may or may not hold
// it: it is published like any local claim, so another replica waits for
// it instead of sending the code again.
func TestClaimWithALostReplyIsPublished(t *testing.T) {
	for _, dropped := range []bool{false, true} {
		t.Run(fmt.Sprintf("dropped=%v", dropped), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := replay.NewMemory()
				a := newLedger(t, Options{Shared: &lostReply{Store: mem, dropped: dropped}, Fallback: true})
				b := newLedger(t, Options{Shared: mem, Fallback: true})
				ca := begin(t, a, "k", "o")
				if !ca.Claim.Local() {
					t.Fatal("the claim is not local")
				}
				time.Sleep(2 * time.Second) // a's breaker closes, a publishes
				got := make(chan Begun, 1)
				go func() { got <- begin(t, b, "k", "o") }()
				time.Sleep(100 * time.Millisecond)
				ca.Claim.Finish(context.Background(), []byte("number"), Number)
				if r := <-got; r.Claim != nil || string(r.Sealed) != "number" {
					t.Fatalf("b = %+v, want a's number", r)
				}
			})
		})
	}
}

// TestUnresolvedOutcomesNeverLetAHealthyReplicaResend (30-minute campaign,
// seed 26035106601560): two replicas cut off from the store sent the same
// code and ended without a number. Published as mere taints (released
// records), they let a healthy replica claim the code and send it a third
// time after the outage. Published as provisional claims, they make it wait
// and then answer outcome_unknown (ErrAbandoned), sending nothing.
func TestUnresolvedOutcomesNeverLetAHealthyReplicaResend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l1, l2 := sw.Link(), sw.Link()
		o := Options{Fallback: true, Lease: 17 * time.Second}
		o.Shared = l1
		r1 := newLedger(t, o)
		o.Shared = l2
		r2 := newLedger(t, o)
		o.Shared = sw.Link()
		r0 := newLedger(t, o)
		l1.SetDown(true)
		l2.SetDown(true)
		c1 := begin(t, r1, "k", "o")
		c1.Claim.Finish(context.Background(), []byte("outcome unknown (40029)"), Unknown)
		c2 := begin(t, r2, "k", "o")
		l1.SetDown(false)
		l2.SetDown(false)
		time.Sleep(2 * time.Second) // both publish
		c2.Claim.Finish(context.Background(), []byte("outcome unknown (timeout)"), Unknown)
		time.Sleep(time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b, err := r0.Begin(ctx, "k", "o")
		if b.Claim != nil {
			t.Fatal("a healthy replica claimed a code two replicas may have used")
		}
		if !errors.Is(err, ErrAbandoned) && b.Sealed == nil {
			t.Fatalf("r0 = %+v, %v; want outcome unknown", b, err)
		}
	})
}

// rivalFleet is three ledgers on one store: r[2] claimed "k" through the
// store (c2), then r[0], cut off, claimed it on its own (c0), its link
// still down.
type rivalFleet struct {
	r      [3]*Ledger
	links  [3]*replaytest.Switch
	c0, c2 Begun
}

func newRivalFleet(t *testing.T) *rivalFleet {
	t.Helper()
	f := &rivalFleet{}
	sw := replaytest.NewSwitch()
	for i := range f.r {
		f.links[i] = sw.Link()
		f.r[i] = newLedger(t, Options{Fallback: true, Lease: 17 * time.Second, Shared: f.links[i]})
	}
	time.Sleep(2 * time.Second) // every epoch settled
	f.c2 = begin(t, f.r[2], "k", "o")
	if f.c2.Claim == nil || f.c2.Claim.Local() {
		t.Fatal("r2 did not claim through the store")
	}
	f.links[0].SetDown(true)
	f.c0 = begin(t, f.r[0], "k", "o")
	if f.c0.Claim == nil || !f.c0.Claim.Local() {
		t.Fatal("r0 did not claim on its own")
	}
	return f
}

// retry is a client's retry of "k" on r, within 30 s: what it got. With
// again, an ErrUnresolved is retried a second later, as after Retry-After.
func retry(r *Ledger, again bool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := r.Begin(ctx, "k", "o")
	for again && errors.Is(err, ErrUnresolved) {
		time.Sleep(time.Second)
		b, err = r.Begin(ctx, "k", "o")
	}
	switch {
	case err != nil:
		return "retry: " + err.Error()
	case b.Claim != nil:
		return "retry: claimed the code again"
	}
	return "retry: " + string(b.Sealed)
}

// TestRivalExchangeDecidesBeforeOutcomeUnknown (30-minute campaign, seed
// 1388595664866): a replica that could not see the store claimed a code
// another replica was exchanging, and got the number after the other had
// ended with outcome unknown (WeChat answered it -1, then 40029). The
// unknown outcome was final and the caller was told outcome_unknown, so
// the number was lost. Published as the record's rival, the degraded
// claim makes the other claimant, its own replays and every other replica
// wait for its outcome.
func TestRivalExchangeDecidesBeforeOutcomeUnknown(t *testing.T) {
	for _, tc := range []struct {
		name string
		// finishFirst: the claimant ends with outcome unknown before the
		// degraded replica publishes its claim (retries find the rival);
		// otherwise it meets the rival in NumberElsewhere.
		finishFirst bool
	}{{"claimant waits", false}, {"retries wait", true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newRivalFleet(t)
				r1, r2, l0, c0, c2 := f.r[1], f.r[2], f.links[0], f.c0, f.c2
				if tc.finishFirst {
					if _, ok := c2.Claim.NumberElsewhere(context.Background(), 0); ok {
						t.Fatal("a number before anyone had one")
					}
					c2.Claim.Finish(context.Background(), []byte("outcome unknown"), Unknown)
				}
				l0.SetDown(false)
				time.Sleep(time.Second) // r0 publishes its claim
				got := make(chan string, 3)
				if !tc.finishFirst {
					go func() {
						sealed, ok := c2.Claim.NumberElsewhere(context.Background(), 0)
						if !ok {
							c2.Claim.Finish(context.Background(), []byte("outcome unknown"), Unknown)
						}
						got <- "claimant: " + string(sealed)
					}()
				} else {
					for _, r := range []*Ledger{r2, r1} {
						go func() { got <- retry(r, false) }()
					}
				}
				time.Sleep(3 * time.Second) // WeChat answers r0 late
				c0.Claim.Finish(context.Background(), []byte("number"), Number)
				n := 1
				if tc.finishFirst {
					n = 2
				}
				for range n {
					if g := <-got; !strings.HasSuffix(g, ": number") {
						t.Errorf("%s, want the rival's number", g)
					}
				}
			})
		})
	}
}

// TestOutcomeUnknownWithoutTheStoreIsUnresolved: a claimant whose exchange
// ends without a number while it cannot read the shared store cannot know
// whether a rival (a replica that claimed the code on its own during an
// outage) still exchanges it: its outcome is unresolved until the store was
// read, never a final outcome_unknown. (Campaign seed 20261207: the
// claimant answered outcome_unknown during a Redis SIGSTOP, and the rival's
// number arrived 3 s later for nobody.)
func TestOutcomeUnknownWithoutTheStoreIsUnresolved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newRivalFleet(t)
		r1, r2, l0, l2, c0, c2 := f.r[1], f.r[2], f.links[0], f.links[2], f.c0, f.c2
		l0.SetDown(false)
		time.Sleep(time.Second) // r0 publishes its claim: a rival
		l2.SetDown(true)        // r2 cannot read the store when its exchange ends
		if _, ok := c2.Claim.NumberElsewhere(context.Background(), 0); ok {
			t.Fatal("a number before anyone had one")
		}
		c2.Claim.Finish(context.Background(), []byte("outcome unknown"), Unknown)
		if !c2.Claim.Unresolved() {
			t.Error("an outcome unknown decided without reading the store is final")
		}
		if b, err := r2.Begin(context.Background(), "k", "o"); !errors.Is(err, ErrUnresolved) {
			t.Errorf("retry at r2 while its store is down: %+v, %v; want ErrUnresolved", b, err)
		}
		l2.SetDown(false)
		got := make(chan string, 2)
		for _, r := range []*Ledger{r2, r1} {
			go func() { got <- retry(r, true) }()
		}
		time.Sleep(3 * time.Second) // WeChat answers r0 late
		c0.Claim.Finish(context.Background(), []byte("number"), Number)
		for range 2 {
			if g := <-got; g != "retry: number" {
				t.Errorf("%s, want the rival's number", g)
			}
		}
	})
}

// TestRivalOutlivesAnAbandonedClaim: the claimant died (its claim stays
// pending past its lease) while a rival claim made during an outage is
// still exchanging the code: a retry waits for the rival's outcome
// instead of answering outcome_unknown (ErrAbandoned).
func TestRivalOutlivesAnAbandonedClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sw := replaytest.NewSwitch()
		l0, l2 := sw.Link(), sw.Link()
		o := Options{Fallback: true, Lease: 17 * time.Second}
		o.Shared = l0
		r0 := newLedger(t, o)
		o.Shared = l2
		r2 := newLedger(t, o)
		o.Shared = sw.Link()
		r1 := newLedger(t, o)
		time.Sleep(2 * time.Second)
		if c := begin(t, r2, "k", "o"); c.Claim == nil {
			t.Fatal("r2 did not claim")
		} // and never finishes: its replica is gone
		time.Sleep(5 * time.Second)
		l0.SetDown(true)
		c0 := begin(t, r0, "k", "o")
		l0.SetDown(false)
		time.Sleep(13 * time.Second) // r2's lease has passed, r0's has not
		got := make(chan string, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := r1.Begin(ctx, "k", "o")
			switch {
			case err != nil:
				got <- err.Error()
			case b.Claim != nil:
				got <- "claimed the code again"
			default:
				got <- string(b.Sealed)
			}
		}()
		time.Sleep(time.Second)
		c0.Claim.Finish(context.Background(), []byte("number"), Number)
		if g := <-got; g != "number" {
			t.Fatalf("r1 = %s, want the rival's number", g)
		}
	})
}
