package breaker

import (
	"testing"
	"testing/synctest"
	"time"
)

// A probe whose call was abandoned (the caller's context ended) is given
// back: the breaker stays open, and the next caller may probe.
func TestAbandonGivesBackTheProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(time.Second, nil)
		b.Abandon() // closed: no effect
		if !b.Allow() || b.Open() {
			t.Fatal("Abandon changed a closed breaker")
		}
		b.Failure()
		time.Sleep(time.Second)
		if !b.Allow() {
			t.Fatal("no probe after the cool-off")
		}
		b.Abandon()
		if !b.Open() {
			t.Fatal("Abandon closed the breaker")
		}
		if !b.Allow() {
			t.Fatal("the abandoned probe was not given back: the breaker would stay open for good")
		}
	})
}
