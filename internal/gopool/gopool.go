// Package gopool runs functions on goroutines that wait for the next
// function once they finish, instead of exiting.
//
// Each exchange of wxphone serve runs on a goroutine of its own, detached
// from its caller, and a fresh goroutine's stack is too small for the HTTP
// call: the runtime grows and copies it on every exchange, about 5 % of
// the service's CPU (docs/benchmarks.md). A goroutine kept for the next
// exchange keeps its grown stack (until a garbage collection finds it idle
// and halves it). Pool.Go behaves as a go statement otherwise: the
// function starts at once, on a goroutine of its own.
package gopool

import (
	"sync"
	"sync/atomic"
)

// Pool keeps at most MaxIdle goroutines waiting for work. The zero value
// is not usable; use New.
type Pool struct {
	tasks   chan func() // unbuffered: a send succeeds when a worker waits
	maxIdle int64
	idle    atomic.Int64
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// New returns a Pool that keeps up to maxIdle goroutines waiting (at least
// one).
func New(maxIdle int) *Pool {
	return &Pool{tasks: make(chan func()), maxIdle: int64(max(maxIdle, 1)), done: make(chan struct{})}
}

// Go runs f on a waiting goroutine, or on a new one if none waits. After
// Stop, f still runs, on a goroutine that exits after it.
func (p *Pool) Go(f func()) {
	select {
	case p.tasks <- f:
		return
	default:
	}
	p.wg.Add(1)
	go p.work(f)
}

func (p *Pool) work(f func()) {
	defer p.wg.Done()
	for {
		f()
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		select {
		case f = <-p.tasks:
			p.idle.Add(-1)
		case <-p.done:
			p.idle.Add(-1)
			return
		}
	}
}

// Stop makes the waiting goroutines exit, and those still running a
// function exit after it. Go may still be called; see Go.
func (p *Pool) Stop() { p.once.Do(func() { close(p.done) }) }

// Close is Stop, then waits until every goroutine of p has exited.
func (p *Pool) Close() {
	p.Stop()
	p.wg.Wait()
}

// Idle returns the number of goroutines waiting for work.
func (p *Pool) Idle() int { return int(p.idle.Load()) }
