// Package gopool runs functions on goroutines that wait for the next
// function once they finish, instead of exiting.
//
// Each exchange of wxphone serve runs on a goroutine of its own, detached
// from its caller, and a fresh goroutine's stack is too small for the HTTP
// call: the runtime grows and copies it on every exchange, about 5 % of
// the service's CPU (docs/benchmarks.md). A goroutine kept for the next
// exchange keeps its grown stack (until a garbage collection finds it idle
// and halves it). Pool.Go behaves as a go statement otherwise: the
// function starts at once, on a goroutine of its own. A goroutine that
// waits longer than the pool's idle time exits, so that a process's
// goroutines return to what they were once the traffic stops.
package gopool

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pool keeps at most MaxIdle goroutines waiting for work. The zero value
// is not usable; use New.
type Pool struct {
	tasks   chan func() // unbuffered: a send succeeds when a worker waits
	maxIdle int64
	idleFor time.Duration
	idle    atomic.Int64
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// New returns a Pool that keeps up to maxIdle goroutines (at least one)
// waiting, each for at most idleFor (at least a millisecond).
func New(maxIdle int, idleFor time.Duration) *Pool {
	return &Pool{tasks: make(chan func()), maxIdle: int64(max(maxIdle, 1)), idleFor: max(idleFor, time.Millisecond), done: make(chan struct{})}
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
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		f()
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		if timer == nil {
			timer = time.NewTimer(p.idleFor)
		} else {
			timer.Reset(p.idleFor)
		}
		select {
		case f = <-p.tasks:
			p.idle.Add(-1)
		case <-timer.C:
			p.idle.Add(-1)
			return
		case <-p.done:
			p.idle.Add(-1)
			return
		}
	}
}

// Stop makes the waiting goroutines exit, and those still running a
// function exit after it. Go may still be called; see Go.
func (p *Pool) Stop() { p.once.Do(func() { close(p.done) }) }

// Close is Stop, then waits until every goroutine of p has exited. Go
// must not be called during or after Close.
func (p *Pool) Close() {
	p.Stop()
	p.wg.Wait()
}

// Idle returns the number of goroutines waiting for work.
func (p *Pool) Idle() int { return int(p.idle.Load()) }
