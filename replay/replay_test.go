package replay

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func claim(key, id, owner string, ttl time.Duration) Claim {
	return Claim{Key: key, ID: id, Owner: owner, Lease: time.Now().Add(time.Minute), TTL: ttl}
}

func TestMemoryClaimCompleteRelease(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	res, err := m.Claim(ctx, claim("k", "c1", "o1", time.Minute))
	rec := res.Record
	if err != nil || !res.Claimed || rec.State != Pending || rec.ClaimID != "c1" || rec.Owner != "o1" {
		t.Fatalf("claim = %+v %v", res, err)
	}
	if r2, _ := m.Claim(ctx, claim("k", "c2", "o2", time.Minute)); r2.Claimed || r2.Record.Owner != "o1" || r2.Record.State != Pending {
		t.Fatalf("second claim = %+v, want the existing pending record", r2)
	}
	if err := m.Complete(ctx, "k", "wrong", []byte("x"), true); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("Complete with another claim id: %v", err)
	}
	if err := m.Release(ctx, "k", "c1", true); err != nil {
		t.Fatal(err)
	}
	r3, _ := m.Claim(ctx, claim("k", "c3", "o3", time.Hour))
	if !r3.Claimed || !r3.Record.Tainted || r3.Record.Owner != "o3" || r3.Record.ClaimID != "c3" {
		t.Fatalf("claim after release = %+v, want a tainted new claim", r3)
	}
	if err := m.Release(ctx, "k", "c1", false); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("stale release: %v", err)
	}
	if err := m.Complete(ctx, "k", "c3", []byte("sealed"), true); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get(ctx, "k")
	if err != nil || got.State != Done || string(got.Sealed) != "sealed" || !got.Tainted || !got.Number {
		t.Fatalf("Get = %+v %v", got, err)
	}
	if r, _ := m.Claim(ctx, claim("k", "c4", "o3", time.Minute)); r.Claimed {
		t.Fatal("a done record was claimed again")
	}
	if err := m.Release(ctx, "k", "c3", false); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("release after complete: %v", err)
	}
	if _, err := m.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v", err)
	}
}

// TestMemoryRepeatedCallsAreIdempotent: a call repeated with the same claim
// id (a client that resent a command whose reply was slow) has the effect
// of one call. Before claim ids were the caller's, a repeated claim found
// its own pending record and took it for someone else's.
func TestMemoryRepeatedCallsAreIdempotent(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	c := claim("k", "c1", "o", time.Minute)
	for i := range 2 {
		if res, err := m.Claim(ctx, c); err != nil || !res.Claimed || res.Record.ClaimID != "c1" {
			t.Fatalf("claim #%d = %+v %v; want the caller's own claim", i+1, res, err)
		}
	}
	for i := range 2 {
		if err := m.Complete(ctx, "k", "c1", []byte("x"), true); err != nil {
			t.Fatalf("complete #%d: %v", i+1, err)
		}
	}
	if _, err := m.Claim(ctx, claim("r", "c2", "o", time.Minute)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := m.Release(ctx, "r", "c2", false); err != nil {
			t.Fatalf("release #%d: %v", i+1, err)
		}
	}
}

func TestMemoryTTLKeptAcrossRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory()
		_, _ = m.Claim(ctx, claim("k", "c1", "o", 5*time.Minute))
		time.Sleep(4 * time.Minute)
		_ = m.Release(ctx, "k", "c1", false)
		// A new claim of a released record keeps the original expiry.
		if r, _ := m.Claim(ctx, claim("k", "c2", "o", 5*time.Minute)); !r.Claimed {
			t.Fatal("released record not claimable")
		}
		time.Sleep(time.Minute)
		if _, err := m.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record outlived its 5-minute TTL: %v", err)
		}
		if m.Len() != 0 {
			t.Fatalf("Len = %d after expiry", m.Len())
		}
	})
}

func TestMemoryExactlyOneClaimWins(t *testing.T) {
	m := NewMemory()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if r, _ := m.Claim(context.Background(), claim("k", string(rune('a'+i)), "o", time.Minute)); r.Claimed {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claims won", wins.Load())
	}
}

func TestMemoryWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory()
		_, _ = m.Claim(ctx, claim("k", "c1", "o", time.Minute))
		woke := make(chan struct{})
		go func() {
			_ = m.Wait(ctx, "k")
			close(woke)
		}()
		synctest.Wait()
		select {
		case <-woke:
			t.Fatal("Wait returned while the record was pending")
		default:
		}
		_ = m.Complete(ctx, "k", "c1", []byte("x"), false)
		<-woke
		// Waiting on a done or missing record returns at once.
		if err := m.Wait(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		_, _ = m.Claim(ctx, claim("p", "c2", "o", time.Minute))
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := m.Wait(cctx, "p"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want deadline", err)
		}
	})
}

// TestRestoreAddsKnowledgeOnly pins replay.Adds through Memory.Restore: what
// a replica republishes after an outage or a data loss is written only
// where it adds knowledge, and a number always wins over an error.
func TestRestoreAddsKnowledgeOnly(t *testing.T) {
	pending := func(id string) Record { return Record{State: Pending, ClaimID: id, Owner: "o"} }
	doneErr := func(id string) Record { return Record{State: Done, ClaimID: id, Owner: "o", Sealed: []byte("err")} }
	doneNum := func(id string) Record {
		return Record{State: Done, ClaimID: id, Owner: "o", Sealed: []byte("num"), Number: true}
	}
	releasedTainted := func(id string) Record { return Record{State: Released, ClaimID: id, Tainted: true} }
	for _, tc := range []struct {
		name      string
		cur       *Record
		rec       Record
		written   bool
		wantState State
	}{
		{"pending over nothing", nil, pending("a"), true, Pending},
		{"done over nothing", nil, doneErr("a"), true, Done},
		{"tainted release over nothing", nil, releasedTainted("a"), true, Released},
		{"done over its own pending", &[]Record{pending("a")}[0], doneErr("a"), true, Done},
		{"pending over another's pending", &[]Record{pending("b")}[0], pending("a"), false, Pending},
		{"error over another's pending", &[]Record{pending("b")}[0], doneErr("a"), false, Pending},
		{"number over another's pending", &[]Record{pending("b")}[0], doneNum("a"), true, Done},
		{"number over an error", &[]Record{doneErr("b")}[0], doneNum("a"), true, Done},
		{"error over a number", &[]Record{doneNum("b")}[0], doneErr("a"), false, Done},
		{"number over a number", &[]Record{doneNum("b")}[0], doneNum("a"), false, Done},
		{"pending over a release", &[]Record{{State: Released, ClaimID: "b"}}[0], pending("a"), true, Pending},
		{"taint onto another's pending", &[]Record{pending("b")}[0], releasedTainted("a"), false, Pending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			m := NewMemory()
			if tc.cur != nil {
				m.recs["k"] = &memRec{Record: *tc.cur, expires: time.Now().Add(time.Minute)}
			}
			got, err := m.Restore(ctx, "k", tc.rec, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if (got.ClaimID == tc.rec.ClaimID) != tc.written || got.State != tc.wantState || tc.rec.Tainted && !got.Tainted {
				t.Fatalf("Restore(%+v over %+v) = %+v; want written=%v, state %v", tc.rec, tc.cur, got, tc.written, tc.wantState)
			}
		})
	}
}
