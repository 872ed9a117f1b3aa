package replaytest

import (
	"context"
	"testing"
	"time"

	"github.com/wxphone/wxphone/replay"
)

// CheckRivals checks that s follows replay.Rivalry: a Pending claim
// republished over another claim's record that holds no number becomes its
// rival (kept with a later lease, across the holder's Complete, and across
// a Restore of the holder's own outcome), and the rival's own outcome
// without a number ends it; a number replaces everything; a record that
// holds a number gets no rival. newKey returns a fresh key each call.
func CheckRivals(t *testing.T, s replay.Store, newKey func() string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	lease, later, latest := now.Add(time.Minute), now.Add(2*time.Minute), now.Add(3*time.Minute)
	pending := func(id string, l time.Time) replay.Record {
		return replay.Record{State: replay.Pending, ClaimID: id, Owner: "o", LeaseUntil: l, Tainted: true}
	}
	claim := func(key, id string) {
		t.Helper()
		if res, err := s.Claim(ctx, replay.Claim{Key: key, ID: id, Owner: "o", Lease: lease, TTL: 5 * time.Minute}); err != nil || !res.Claimed {
			t.Fatalf("Claim(%s) = %+v, %v", id, res, err)
		}
	}
	restore := func(key string, rec replay.Record) replay.Record {
		t.Helper()
		got, err := s.Restore(ctx, key, rec, 5*time.Minute)
		if err != nil {
			t.Fatalf("Restore(%+v): %v", rec, err)
		}
		return got
	}
	get := func(key string) replay.Record {
		t.Helper()
		got, err := s.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		return got
	}
	rival := func(what string, got replay.Record, id string, until time.Time) {
		t.Helper()
		if got.RivalID != id || id != "" && !got.Rival.Equal(until) {
			t.Fatalf("%s: rival %q until %v, want %q until %v (record %+v)", what, got.RivalID, got.Rival, id, until, got)
		}
	}

	// A rival raised over a pending claim is kept by its Complete and
	// ended by the rival's own outcome without a number.
	k := newKey()
	claim(k, "a")
	got := restore(k, pending("b", later))
	if got.ClaimID != "a" || got.State != replay.Pending || !got.Tainted {
		t.Fatalf("the rival replaced the claim: %+v", got)
	}
	rival("raised", got, "b", later)
	rival("raised, re-read", get(k), "b", later)
	if !got.RivalOpen(now) {
		t.Fatal("RivalOpen = false for a live rival")
	}
	if err := s.Complete(ctx, k, "a", []byte("unknown"), false); err != nil {
		t.Fatal(err)
	}
	rival("after the holder's Complete", get(k), "b", later)
	rival("an earlier lease", restore(k, pending("c", lease)), "b", later)
	rival("a later lease (the rival's provisional record)", restore(k, pending("b", latest)), "b", latest)
	got = restore(k, replay.Record{State: replay.Done, ClaimID: "b", Owner: "o", Sealed: []byte("unknown too")})
	if got.ClaimID != "a" || string(got.Sealed) != "unknown" {
		t.Fatalf("the rival's error replaced the outcome: %+v", got)
	}
	rival("ended by the rival's outcome", got, "", time.Time{})
	rival("ended, re-read", get(k), "", time.Time{})
	if get(k).RivalOpen(now) {
		t.Fatal("RivalOpen = true after the rival ended")
	}

	// The rival's release ends it too.
	k = newKey()
	claim(k, "a")
	restore(k, pending("b", later))
	rival("ended by the rival's release", restore(k, replay.Record{State: replay.Released, ClaimID: "b", Tainted: true}), "", time.Time{})

	// The rival's number replaces the record and the rivalry.
	k = newKey()
	claim(k, "a")
	restore(k, pending("b", later))
	got = restore(k, replay.Record{State: replay.Done, ClaimID: "b", Owner: "o", Sealed: []byte("num"), Number: true})
	if got.ClaimID != "b" || !got.Number {
		t.Fatalf("the rival's number was not taken: %+v", got)
	}
	rival("after the rival's number", got, "", time.Time{})

	// The holder's own outcome republished over its pending claim keeps
	// the rival.
	k = newKey()
	claim(k, "a")
	restore(k, pending("b", later))
	got = restore(k, replay.Record{State: replay.Done, ClaimID: "a", Owner: "o", Sealed: []byte("unknown")})
	if got.State != replay.Done || got.ClaimID != "a" {
		t.Fatalf("the holder's outcome was not written: %+v", got)
	}
	rival("after the holder's restored outcome", got, "b", later)
	rival("after the holder's restored outcome, re-read", get(k), "b", later)

	// A record holding a number has no rival.
	k = newKey()
	claim(k, "a")
	if err := s.Complete(ctx, k, "a", []byte("num"), true); err != nil {
		t.Fatal(err)
	}
	rival("over a number", restore(k, pending("b", later)), "", time.Time{})

	// A released record is taken over, not rivalled.
	k = newKey()
	claim(k, "a")
	if err := s.Release(ctx, k, "a", true); err != nil {
		t.Fatal(err)
	}
	got = restore(k, pending("b", later))
	if got.ClaimID != "b" || got.State != replay.Pending {
		t.Fatalf("a released record was not taken over: %+v", got)
	}
	rival("over a release", got, "", time.Time{})
}
