package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer echoes every line it reads and remembers how each of its
// connections ended.
type echoServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	ends []error // the read error that ended each connection
}

func newEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Go(func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						e.mu.Lock()
						e.ends = append(e.ends, err)
						e.mu.Unlock()
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		e.wg.Wait()
	})
	return e
}

func (e *echoServer) endings() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.ends...)
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(context.Background(), "127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip writes a line and reads the echo, within d.
func roundTrip(c net.Conn, r *bufio.Reader, line string, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	if len(got) > 0 {
		got = got[:len(got)-1]
	}
	return got, err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPass(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c, r := dial(t, p.Addr())
	for _, line := range []string{"PING", "SET k v", string(make([]byte, 100_000))} {
		if got, err := roundTrip(c, r, line, 10*time.Second); err != nil || got != line {
			t.Fatalf("round trip: %d bytes, %v", len(got), err)
		}
	}
	if p.Conns() != 1 || p.Accepted() != 1 {
		t.Fatalf("conns %d, accepted %d", p.Conns(), p.Accepted())
	}
	if m, _ := p.Mode(); m != Pass {
		t.Fatalf("mode %v", m)
	}
}

// Delay holds each chunk for at least the delay, in each direction.
func TestDelay(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c, r := dial(t, p.Addr())
	if _, err := roundTrip(c, r, "warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Delay(0); err == nil {
		t.Fatal("a zero delay was accepted")
	}
	const d = 150 * time.Millisecond
	if err := p.Delay(d); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got, err := roundTrip(c, r, "slow", 10*time.Second); err != nil || got != "slow" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if el := time.Since(start); el < 2*d {
		t.Fatalf("round trip took %v, want at least %v (one delay each way)", el, 2*d)
	}
	if m, got := p.Mode(); m != Delay || got != d {
		t.Fatalf("mode %v %v", m, got)
	}
	// Order is kept: several chunks in flight arrive in order.
	for _, l := range []string{"a", "b", "c"} {
		if _, err := c.Write([]byte(l + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"a", "b", "c"} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, err := r.ReadString('\n'); err != nil || got != want+"\n" {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
}

// Pause holds every byte, however long, until the mode changes; new
// connections are accepted meanwhile, and held too.
func TestPause(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c, r := dial(t, p.Addr())
	if _, err := roundTrip(c, r, "warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(c, r, "held", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("an answer got through a pause: %v", err)
	}
	c2, r2 := dial(t, p.Addr())
	if _, err := c2.Write([]byte("second\n")); err != nil {
		t.Fatal(err)
	}
	if err := p.Pass(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		c    net.Conn
		r    *bufio.Reader
		want string
	}{{c, r, "held"}, {c2, r2, "second"}} {
		_ = x.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, err := x.r.ReadString('\n'); err != nil || got != x.want+"\n" {
			t.Fatalf("after the pause: %q, %v; want %q", got, err, x.want)
		}
	}
}

// Cut closes every connection on both sides and refuses new ones; Pass
// listens again on the same address.
func TestCut(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c, r := dial(t, p.Addr())
	if _, err := roundTrip(c, r, "warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	if err := p.Cut(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("client side after a cut: %v, want EOF", err)
	}
	waitFor(t, "the server side to end", func() bool { return len(e.endings()) == 1 })
	if err := e.endings()[0]; !errors.Is(err, io.EOF) {
		t.Fatalf("server side after a cut: %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial during a cut: %v, want connection refused", err)
	}
	if p.Conns() != 0 {
		t.Fatalf("%d connections left", p.Conns())
	}
	if err := p.Pass(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("address changed: %s -> %s", addr, p.Addr())
	}
	c2, r2 := dial(t, addr)
	if got, err := roundTrip(c2, r2, "again", 10*time.Second); err != nil || got != "again" {
		t.Fatalf("after the cut: %q, %v", got, err)
	}
}

// Reset sends a TCP RST to both sides and keeps relaying new connections.
func TestReset(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c, r := dial(t, p.Addr())
	if _, err := roundTrip(c, r, "warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client side after a reset: %v, want connection reset", err)
	}
	waitFor(t, "the server side to end", func() bool { return len(e.endings()) == 1 })
	if err := e.endings()[0]; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server side after a reset: %v, want connection reset", err)
	}
	if p.Resets() != 1 {
		t.Fatalf("resets = %d", p.Resets())
	}
	c2, r2 := dial(t, p.Addr())
	if got, err := roundTrip(c2, r2, "again", 10*time.Second); err != nil || got != "again" {
		t.Fatalf("after the reset: %q, %v", got, err)
	}
}

// A reset while paused ends the held connections at once.
func TestResetWhilePaused(t *testing.T) {
	e := newEcho(t)
	p := newProxy(t, e.ln.Addr().String())
	c, r := dial(t, p.Addr())
	if _, err := roundTrip(c, r, "warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the chunk to be held", func() bool { return p.Conns() == 1 })
	p.Reset()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after a reset: %v, want connection reset", err)
	}
}

// A target that refuses connections: the client's connection is accepted
// and closed at once.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newProxy(t, dead)
	c, r := dial(t, p.Addr())
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want EOF", err)
	}
}

// Close and the context's end stop everything (goleak checks the
// goroutines in TestMain).
func TestCloseAndContext(t *testing.T) {
	e := newEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(ctx, "127.0.0.1:0", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, r := dial(t, p.Addr())
	if _, err := roundTrip(c, r, "warm", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	cancel()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a held chunk was delivered after the context ended")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Pass(); err == nil {
		t.Fatal("a closed proxy changed mode")
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Fatal("a closed proxy accepts connections")
	}
	_ = p.Close() // idempotent
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Pass: "pass", Delay: "delay", Pause: "pause", Cut: "cut", Mode(9): "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("%d: %q", int(m), got)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
