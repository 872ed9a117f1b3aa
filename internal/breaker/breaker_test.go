package breaker

import (
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
