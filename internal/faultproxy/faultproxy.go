// Package faultproxy is a TCP proxy for tests that breaks the connection
// between a client and a server on command: it delays every chunk, holds
// all bytes (as if the server were stopped with SIGSTOP), cuts the
// connections and refuses new ones, or resets them with a TCP RST.
//
// The fault campaign puts one between the wxphone replicas and Redis.
// Every mode applies to both directions and to every connection; a
// [Proxy] changes mode only when told to, so a test's schedule of modes is
// its schedule of faults.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with the bytes it relays.
type Mode int

const (
	// Pass relays bytes as they come.
	Pass Mode = iota
	// Delay relays each chunk read from either side after a fixed delay
	// (in order: a chunk waits for the one before it).
	Delay
	// Pause holds every byte in both directions; connections stay open and
	// new ones are accepted (and dialled), like a server stopped with
	// SIGSTOP whose kernel still completes handshakes.
	Pause
	// Cut closes every connection (FIN) and refuses new ones: the
	// listener is closed until the mode changes again.
	Cut
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Delay:
		return "delay"
	case Pause:
		return "pause"
	case Cut:
		return "cut"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// chunkSize bounds one read; Delay delays each chunk read.
const chunkSize = 32 << 10

// Proxy relays TCP connections from its address to a target address.
// Create it with [New]; its methods are safe for concurrent use.
type Proxy struct {
	target string
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	ln      net.Listener // nil while cut or closed
	mode    Mode
	delay   time.Duration
	changed chan struct{} // closed and replaced on every mode change
	links   map[*link]struct{}
	closed  bool

	accepted, resets atomic.Int64
}

// link is one relayed connection: the client's side and the target's.
type link struct {
	client, server net.Conn
	done           chan struct{} // closed when the link is closed
	once           sync.Once
}

func (l *link) close(rst bool) {
	l.once.Do(func() {
		close(l.done)
		if rst {
			for _, c := range []net.Conn{l.client, l.server} {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			}
		}
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

// New starts a proxy listening on addr (e.g. "127.0.0.1:0") that relays to
// target, in Pass mode. It stops when ctx is done or Close is called.
func New(ctx context.Context, addr, target string) (*Proxy, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &Proxy{
		target: target, addr: ln.Addr().String(), ctx: pctx, cancel: cancel,
		ln: ln, changed: make(chan struct{}), links: map[*link]struct{}{},
	}
	p.wg.Add(2)
	go p.acceptLoop(ln)
	go func() {
		defer p.wg.Done()
		<-pctx.Done()
		p.shutdown()
	}()
	return p, nil
}

// Addr is the proxy's listening address ("127.0.0.1:port"); it stays the
// same across Cut.
func (p *Proxy) Addr() string { return p.addr }

// Mode returns the current mode and, for Delay, the delay.
func (p *Proxy) Mode() (Mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// Conns returns the number of open relayed connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Resets returns the number of connections reset by [Proxy.Reset].
func (p *Proxy) Resets() int64 { return p.resets.Load() }

// Pass relays bytes as they come again. After Cut it listens again on the
// same address, and fails if that address was taken meanwhile.
func (p *Proxy) Pass() error { return p.set(Pass, 0) }

// Delay relays each chunk after d (d > 0).
func (p *Proxy) Delay(d time.Duration) error {
	if d <= 0 {
		return errors.New("faultproxy: the delay must be positive")
	}
	return p.set(Delay, d)
}

// Pause holds every byte in both directions until the mode changes.
func (p *Proxy) Pause() error { return p.set(Pause, 0) }

// Cut closes every connection and refuses new ones until the mode changes.
func (p *Proxy) Cut() error { return p.set(Cut, 0) }

// Reset resets every open connection with a TCP RST (SO_LINGER 0, then
// close) on both sides. The mode does not change: new connections are
// relayed as before.
func (p *Proxy) Reset() {
	p.mu.Lock()
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
	p.resets.Add(int64(len(links)))
}

// Close stops the proxy: it closes the listener and every connection and
// waits for its goroutines to end.
func (p *Proxy) Close() error {
	p.cancel()
	p.wg.Wait()
	return nil
}

func (p *Proxy) shutdown() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	close(p.changed)
	p.changed = make(chan struct{})
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close(false)
	}
}

func (p *Proxy) takeLinksLocked() []*link {
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	clear(p.links)
	return links
}

func (p *Proxy) set(m Mode, d time.Duration) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("faultproxy: closed")
	}
	var links []*link
	if m == Cut {
		if p.ln != nil {
			_ = p.ln.Close()
			p.ln = nil
		}
		links = p.takeLinksLocked()
	} else if p.ln == nil {
		ln, err := p.relisten()
		if err != nil {
			p.mu.Unlock()
			return err
		}
		p.ln = ln
		p.wg.Add(1)
		go p.acceptLoop(ln)
	}
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	for _, l := range links {
		l.close(false)
	}
	return nil
}

// relisten opens the listener again on the proxy's address; the old
// socket may take a moment to be released.
func (p *Proxy) relisten() (net.Listener, error) {
	var lc net.ListenConfig
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = lc.Listen(p.ctx, "tcp", p.addr); err == nil {
			return ln, nil
		}
		select {
		case <-p.ctx.Done():
			return nil, p.ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("faultproxy: cannot listen again on %s: %w", p.addr, err)
}

func (p *Proxy) acceptLoop(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed (Cut, Close)
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.open(c)
	}
}

// open dials the target for an accepted connection and starts relaying.
func (p *Proxy) open(c net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: time.Second}
	s, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.mode == Cut {
		p.mu.Unlock()
		l.close(false)
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(2)
	p.mu.Unlock()
	go p.relay(l, c, s)
	go p.relay(l, s, c)
}

// relay copies from src to dst, chunk by chunk, applying the mode in force
// when each chunk is forwarded.
func (p *Proxy) relay(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.hold(l) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold waits until the chunk just read on l may be forwarded: at once in
// Pass, after the delay in Delay, not while paused. It reports false when
// the proxy closed or the link was cut or reset meanwhile.
func (p *Proxy) hold(l *link) bool {
	var delayed bool
	for {
		p.mu.Lock()
		mode, d, changed, closed := p.mode, p.delay, p.changed, p.closed
		p.mu.Unlock()
		switch {
		case closed || mode == Cut:
			return false
		case mode == Pass, mode == Delay && delayed:
			return true
		case mode == Delay:
			t := time.NewTimer(d)
			select {
			case <-t.C:
				delayed = true
			case <-l.done:
				t.Stop()
				return false
			case <-p.ctx.Done():
				t.Stop()
				return false
			}
		default: // Pause
			select {
			case <-changed:
			case <-l.done:
				return false
			case <-p.ctx.Done():
				return false
			}
		}
	}
}
