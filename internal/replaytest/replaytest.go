// Package replaytest provides replay.Store doubles for tests: a store that
// is down, one that stalls, and one that can be switched between those and
// a working store while a test runs.
package replaytest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxphone/wxphone/replay"
)

// ErrDown is the error of a store that is down.
var ErrDown = errors.New("replaytest: store down")

// Down is a replay.Store whose every call fails. With QuoteKey its errors
// quote the key they were given, as a careless client's errors might (for
// redaction tests).
type Down struct{ QuoteKey bool }

func (d Down) err(key string) error {
	if d.QuoteKey {
		return errors.New("store down while handling " + key)
	}
	return ErrDown
}

// Claim implements replay.Store.
func (d Down) Claim(_ context.Context, c replay.Claim) (replay.ClaimResult, error) {
	return replay.ClaimResult{}, d.err(c.Key)
}

// Complete implements replay.Store.
func (d Down) Complete(_ context.Context, key, _ string, _ []byte, _ bool) error { return d.err(key) }

// Release implements replay.Store.
func (d Down) Release(_ context.Context, key, _ string, _ bool) error { return d.err(key) }

// Get implements replay.Store.
func (d Down) Get(_ context.Context, key string) (replay.Record, error) {
	return replay.Record{}, d.err(key)
}

// Restore implements replay.Store.
func (d Down) Restore(_ context.Context, key string, _ replay.Record, _ time.Duration) (replay.Record, error) {
	return replay.Record{}, d.err(key)
}

// Heartbeat implements replay.Store.
func (d Down) Heartbeat(context.Context, replay.Beat) (replay.Fleet, error) {
	return replay.Fleet{}, d.err("")
}

// Stalled is a replay.Store whose every call blocks until its caller's
// context ends (a Redis that stopped answering, seen from a caller whose
// deadline passes first).
type Stalled struct{}

// Claim implements replay.Store.
func (Stalled) Claim(ctx context.Context, _ replay.Claim) (replay.ClaimResult, error) {
	<-ctx.Done()
	return replay.ClaimResult{}, ctx.Err()
}

// Complete implements replay.Store.
func (Stalled) Complete(ctx context.Context, _, _ string, _ []byte, _ bool) error {
	<-ctx.Done()
	return ctx.Err()
}

// Release implements replay.Store.
func (Stalled) Release(ctx context.Context, _, _ string, _ bool) error {
	<-ctx.Done()
	return ctx.Err()
}

// Get implements replay.Store.
func (Stalled) Get(ctx context.Context, _ string) (replay.Record, error) {
	<-ctx.Done()
	return replay.Record{}, ctx.Err()
}

// Restore implements replay.Store.
func (Stalled) Restore(ctx context.Context, _ string, _ replay.Record, _ time.Duration) (replay.Record, error) {
	<-ctx.Done()
	return replay.Record{}, ctx.Err()
}

// Heartbeat implements replay.Store.
func (Stalled) Heartbeat(ctx context.Context, _ replay.Beat) (replay.Fleet, error) {
	<-ctx.Done()
	return replay.Fleet{}, ctx.Err()
}

// Switch is a replay.Store over a replay.Memory that a test can take down,
// slow down, hold (every call waits until released) or wipe (a Redis that
// restarted empty: a new epoch begins), while it runs. Link gives another
// view of the same records with switches of its own: one replica's
// connection to a store that others still reach. It counts calls per
// operation.
type Switch struct {
	down  atomic.Bool
	delay atomic.Int64 // nanoseconds added to every call
	mu    sync.Mutex
	hold  chan struct{} // non-nil: calls wait for it to close
	sh    *switchData
}

type switchData struct {
	mu    sync.Mutex
	mem   *replay.Memory
	epoch replay.Epoch
	gen   int
	calls map[string]int
}

// NewSwitch returns a working Switch whose first epoch was born long ago.
func NewSwitch() *Switch {
	return &Switch{sh: &switchData{mem: replay.NewMemory(), epoch: replay.Epoch{ID: "epoch-0", Born: time.Now().Add(-time.Hour)}, calls: map[string]int{}}}
}

// Link returns a working view of the same store with its own switches.
func (s *Switch) Link() *Switch { return &Switch{sh: s.sh} }

// SetDown takes the store down (every call fails with ErrDown) or up.
func (s *Switch) SetDown(down bool) { s.down.Store(down) }

// SetDelay adds d to every call (a slow store).
func (s *Switch) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// Hold makes every call wait until the returned function is called (a
// paused store, SIGSTOP); a call whose context ends first fails with the
// context's error.
func (s *Switch) Hold() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(ch)
		})
	}
}

// Wipe loses every record and starts a new epoch, born now.
func (s *Switch) Wipe() {
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	s.sh.gen++
	s.sh.mem = replay.NewMemory()
	s.sh.epoch = replay.Epoch{ID: fmt.Sprintf("epoch-%d", s.sh.gen), Born: time.Now()}
}

// Memory returns the current records (for inspection).
func (s *Switch) Memory() *replay.Memory {
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	return s.sh.mem
}

// Calls returns how many calls op ("claim", "complete", …) received,
// through every view.
func (s *Switch) Calls(op string) int {
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	return s.sh.calls[op]
}

func (s *Switch) enter(ctx context.Context, op string) (*replay.Memory, replay.Epoch, error) {
	s.sh.mu.Lock()
	s.sh.calls[op]++
	s.sh.mu.Unlock()
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, replay.Epoch{}, ctx.Err()
		}
	}
	if d := time.Duration(s.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, replay.Epoch{}, ctx.Err()
		}
	}
	if s.down.Load() {
		return nil, replay.Epoch{}, ErrDown
	}
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	return s.sh.mem, s.sh.epoch, nil
}

// Claim implements replay.Store, with the epoch and Settle rules of a store
// that can lose its data.
func (s *Switch) Claim(ctx context.Context, c replay.Claim) (replay.ClaimResult, error) {
	m, ep, err := s.enter(ctx, "claim")
	if err != nil {
		return replay.ClaimResult{}, err
	}
	if time.Since(ep.Born) < c.Settle {
		return replay.ClaimResult{Epoch: ep, Settling: true}, nil
	}
	res, err := m.Claim(ctx, c)
	res.Epoch = ep
	return res, err
}

// Complete implements replay.Store.
func (s *Switch) Complete(ctx context.Context, key, claimID string, sealed []byte, number bool) error {
	m, _, err := s.enter(ctx, "complete")
	if err != nil {
		return err
	}
	return m.Complete(ctx, key, claimID, sealed, number)
}

// Release implements replay.Store.
func (s *Switch) Release(ctx context.Context, key, claimID string, tainted bool) error {
	m, _, err := s.enter(ctx, "release")
	if err != nil {
		return err
	}
	return m.Release(ctx, key, claimID, tainted)
}

// Get implements replay.Store.
func (s *Switch) Get(ctx context.Context, key string) (replay.Record, error) {
	m, _, err := s.enter(ctx, "get")
	if err != nil {
		return replay.Record{}, err
	}
	return m.Get(ctx, key)
}

// Restore implements replay.Store.
func (s *Switch) Restore(ctx context.Context, key string, rec replay.Record, ttl time.Duration) (replay.Record, error) {
	m, _, err := s.enter(ctx, "restore")
	if err != nil {
		return replay.Record{}, err
	}
	return m.Restore(ctx, key, rec, ttl)
}

// Heartbeat implements replay.Store.
func (s *Switch) Heartbeat(ctx context.Context, b replay.Beat) (replay.Fleet, error) {
	m, ep, err := s.enter(ctx, "heartbeat")
	if err != nil {
		return replay.Fleet{}, err
	}
	f, err := m.Heartbeat(ctx, b)
	f.Epoch = ep
	return f, err
}
