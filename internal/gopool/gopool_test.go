package gopool

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestGoRunsOnAWaitingGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(4, time.Minute)
		defer p.Close()
		var ran atomic.Int32
		p.Go(func() { ran.Add(1) })
		synctest.Wait() // the worker ran f and waits
		if got := p.Idle(); got != 1 {
			t.Fatalf("%d idle after one function, want 1", got)
		}
		for range 10 {
			p.Go(func() { ran.Add(1) })
			synctest.Wait()
		}
		if ran.Load() != 11 {
			t.Fatalf("ran %d functions, want 11", ran.Load())
		}
		if got := p.Idle(); got != 1 {
			t.Fatalf("%d idle after functions one at a time, want the same 1", got)
		}
	})
}

func TestAtMostMaxIdleWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(3, time.Minute)
		defer p.Close()
		release := make(chan struct{})
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			p.Go(func() { defer wg.Done(); <-release })
		}
		synctest.Wait()
		if got := p.Idle(); got != 0 {
			t.Fatalf("%d idle while all run, want 0", got)
		}
		close(release)
		wg.Wait()
		synctest.Wait()
		if got := p.Idle(); got != 3 {
			t.Fatalf("%d idle after 10 functions, want at most 3 (exactly 3 here)", got)
		}
	})
}

func TestCloseEndsEveryGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(8, time.Minute)
		for range 5 {
			p.Go(func() {})
		}
		synctest.Wait()
		running := make(chan struct{})
		p.Go(func() { <-running })
		p.Stop()
		synctest.Wait()
		if got := p.Idle(); got != 0 {
			t.Fatalf("%d idle after Stop, want 0", got)
		}
		ran := make(chan struct{})
		p.Go(func() { close(ran) }) // after Stop: still runs
		<-ran
		close(running)
		p.Close() // returns once the running function's goroutine exits too
		// synctest.Test fails if any goroutine of the bubble is left.
	})
}

func TestAnIdleGoroutineExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(4, time.Second)
		defer p.Close()
		p.Go(func() {})
		synctest.Wait()
		time.Sleep(999 * time.Millisecond)
		synctest.Wait()
		if got := p.Idle(); got != 1 {
			t.Fatalf("%d idle before the idle time, want 1", got)
		}
		p.Go(func() {}) // reuses it: its idle time starts again
		synctest.Wait()
		time.Sleep(999 * time.Millisecond)
		synctest.Wait()
		if got := p.Idle(); got != 1 {
			t.Fatalf("%d idle, want 1: the second wait restarted", got)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if got := p.Idle(); got != 0 {
			t.Fatalf("%d idle after the idle time, want 0", got)
		}
		p.wg.Wait() // it has exited
	})
}

// deep uses about n KiB of stack, as an HTTP exchange does.
//
//go:noinline
func deep(n int) byte {
	var buf [1024]byte
	if n == 0 {
		return buf[0]
	}
	buf[n%1024] = byte(n)
	return deep(n-1) + buf[0]
}

// BenchmarkStackGrowth compares a go statement with Pool.Go for a function
// that needs 16 KiB of stack: a new goroutine grows its stack every time.
func BenchmarkStackGrowth(b *testing.B) {
	run := func(b *testing.B, spawn func(func())) {
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			spawn(func() { defer wg.Done(); deep(16) })
			wg.Wait()
		}
	}
	b.Run("go", func(b *testing.B) { run(b, func(f func()) { go f() }) })
	b.Run("pool", func(b *testing.B) {
		p := New(16, time.Minute)
		defer p.Close()
		run(b, p.Go)
	})
}
