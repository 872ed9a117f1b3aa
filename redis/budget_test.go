package redis

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
)

// TestForceRefreshesOnMatchesMemory: the read-only count of the Redis store
// follows the in-memory store's through the same reservations, across
// UTC+8 midnights, and reading spends nothing.
func TestForceRefreshesOnMatchesMemory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	s := newTokenStore(t, e, newKeyring(t))
	mem := wxphone.NewMemoryTokenStore()
	if n, err := s.ForceRefreshesOn(ctx, appA, time.Now()); n != 0 || err != nil {
		t.Fatalf("empty store: %d, %v", n, err)
	}
	zone := time.FixedZone("UTC+8", 8*3600)
	now := time.Date(2026, 3, 1, 23, 50, 0, 0, zone)
	r := rand.New(rand.NewPCG(3, 4))
	steps := []time.Duration{0, 20 * time.Second, 30 * time.Second, 5 * time.Minute, 3 * time.Hour}
	for i := range 120 {
		now = now.Add(steps[r.IntN(len(steps))])
		id := strconv.Itoa(i)
		ok1, _, err1 := mem.ReserveForceRefresh(ctx, appA, id, now, 30*time.Second, 4)
		ok2, _, err2 := s.ReserveForceRefresh(ctx, appA, id, now, 30*time.Second, 4)
		if err1 != nil || err2 != nil || ok1 != ok2 {
			t.Fatalf("step %d: reserve %v/%v %v/%v", i, ok1, ok2, err1, err2)
		}
		for _, at := range []time.Time{now, now.Add(time.Hour)} {
			n1, err1 := mem.ForceRefreshesOn(ctx, appA, at)
			n2, err2 := s.ForceRefreshesOn(ctx, appA, at)
			if err1 != nil || err2 != nil || n1 != n2 || n1 > 4 {
				t.Fatalf("step %d at %v: memory %d (%v), redis %d (%v)", i, at, n1, err1, n2, err2)
			}
		}
	}
	if _, err := s.ForceRefreshesOn(ctx, "bad appid with spaces", now); err == nil {
		t.Error("a bad appid was accepted")
	}
}
