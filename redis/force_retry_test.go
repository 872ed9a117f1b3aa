package redis

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowReplyProxy forwards TCP to a Redis server and, once armed, delays
// the reply to the next command that carries marker (a script's SHA) by
// delay: the command runs in Redis, its answer arrives after the client's
// read timeout, and go-redis sends it again.
type slowReplyProxy struct {
	ln     net.Listener
	target string
	marker []byte
	delay  time.Duration
	armed  atomic.Bool
	seen   atomic.Int64 // commands carrying marker that were forwarded
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newSlowReplyProxy(t *testing.T, target, marker string, delay time.Duration) *slowReplyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowReplyProxy{ln: ln, target: target, marker: []byte(marker), delay: delay}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *slowReplyProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		var delayNext atomic.Bool
		p.wg.Go(func() { // client -> server
			defer server.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					if bytes.Contains(buf[:n], p.marker) {
						p.seen.Add(1)
						if p.armed.CompareAndSwap(true, false) {
							delayNext.Store(true)
						}
					}
					if _, werr := server.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
		p.wg.Go(func() { // server -> client
			defer client.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					if delayNext.CompareAndSwap(true, false) {
						time.Sleep(p.delay)
					}
					if _, werr := client.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
}

// redisTarget returns the test Redis's address, and its URL with the
// address replaced by another (a proxy's).
func (e *env) redisTarget(t *testing.T) (target string, urlVia func(addr string) string) {
	t.Helper()
	if e.mr != nil {
		return e.mr.Addr(), func(addr string) string { return "redis://" + addr }
	}
	u, err := url.Parse(os.Getenv("REDIS_URL"))
	if err != nil || u.Scheme != "redis" || strings.Contains(u.Host, ",") {
		t.Skip("REDIS_URL is not a plain redis:// URL; the proxy test needs one")
	}
	return u.Host, func(addr string) string {
		v := *u
		v.Host = addr
		return v.String()
	}
}

// TestForceReservationIdempotentUnderRetry: go-redis re-runs an EVALSHA
// whose reply was slower than ReadTimeout (100 ms, MaxRetries 1). The
// reservation the first run made must come back ok to the caller, and only
// one unit of the budget is spent. Without the reservation id, the second
// run found the first one's reservation and refused: a unit spent, no
// refresh, and 30 s of refusals.
func TestForceReservationIdempotentUnderRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := testCtx(t)
	target, urlVia := e.redisTarget(t)
	proxy := newSlowReplyProxy(t, target, forceScript.Hash(), 400*time.Millisecond)
	u := urlVia(proxy.ln.Addr().String())
	c, err := Open(ctx, u, Options{ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s, err := NewTokenStore(c, newKeyring(t), e.opts())
	if err != nil {
		t.Fatal(err)
	}
	if err := forceScript.Load(ctx, c).Err(); err != nil { // so that EVALSHA runs it
		t.Fatal(err)
	}
	now := time.Now()
	proxy.armed.Store(true)
	ok, after, err := s.ReserveForceRefresh(ctx, appA, "reservation-1", now, 30*time.Second, 10)
	if n := proxy.seen.Load(); n != 2 {
		t.Fatalf("the script was sent %d times, want 2 (go-redis retried after the slow reply): the test did not simulate the retry", n)
	}
	if err != nil || !ok {
		t.Fatalf("ReserveForceRefresh = %v, %v, %v; want the reservation the first run made", ok, after, err)
	}
	count, err := e.c.HGet(context.Background(), e.prefix+":{"+appA+"}:force", "count").Result()
	if err != nil || count != "1" {
		t.Errorf("force count = %q, %v; want 1", count, err)
	}
	// Another reservation (another id) within the interval is refused, as
	// always.
	ok, after, err = s.ReserveForceRefresh(ctx, appA, "reservation-2", now.Add(time.Second), 30*time.Second, 10)
	if err != nil || ok || after != 29*time.Second {
		t.Errorf("a second reservation 1 s later = %v, %v, %v; want refused for 29s", ok, after, err)
	}
}
