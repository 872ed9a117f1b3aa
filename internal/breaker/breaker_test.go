package breaker

import (
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var states []bool
		b := New(time.Second, func(open bool) { states = append(states, open) })
		if !b.Allow() || b.Open() {
			t.Fatal("new breaker not closed")
		}
		b.Failure()
		if b.Allow() || !b.Open() {
			t.Fatal("open breaker allowed a call")
		}
		time.Sleep(time.Second)
		if !b.Allow() {
			t.Fatal("no probe after cool-off")
		}
		if b.Allow() {
			t.Fatal("two probes at once")
		}
		b.Failure()
		time.Sleep(time.Second)
		if !b.Allow() {
			t.Fatal("no probe after second cool-off")
		}
		b.Success()
		if !b.Allow() || b.Open() {
			t.Fatal("not closed after success")
		}
		if len(states) != 2 || !states[0] || states[1] {
			t.Fatalf("transitions = %v", states)
		}
	})
}

// TestReportedStateFollowsTheBreaker (30-minute campaign, seed
// 1388595664866): a heartbeat's Success and a claim's Failure at the same
// moment ran their callbacks in the opposite order, so the log said "Redis
// available again" while the breaker was open and the replica claimed
// codes on its own. Whatever the interleaving, the last state reported is
// the breaker's state.
func TestReportedStateFollowsTheBreaker(t *testing.T) {
	for round := range 200 {
		var mu sync.Mutex
		var last bool
		b := New(time.Hour, func(open bool) {
			runtime.Gosched() // widen the window between a transition and its report
			mu.Lock()
			last = open
			mu.Unlock()
		})
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 50 {
					if (i+j)%2 == 0 {
						b.Failure()
					} else {
						b.Success()
					}
				}
			}()
		}
		wg.Wait()
		mu.Lock()
		got := last
		mu.Unlock()
		if got != b.Open() {
			t.Fatalf("round %d: last reported open=%v, breaker open=%v", round, got, b.Open())
		}
	}
}
