package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone/seal"
)

// env is one test's Redis: the server named by REDIS_URL when it is set
// (shared, so each test works under its own prefix and deletes its own
// keys), else a fresh miniredis.
type env struct {
	t      *testing.T
	c      Client
	mr     *miniredis.Miniredis // nil against a real Redis
	prefix string
}

// envOptions are generous: functional tests must not fail because a loaded
// CI machine (or -race, or miniredis's Lua interpreter) is slower than the
// production timeouts assume. The defaults are tested in open_test.go and
// down_test.go.
var envOptions = Options{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolTimeout: 5 * time.Second}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, prefix: "wxtest-" + randHex(8)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if u := os.Getenv("REDIS_URL"); u != "" {
		c, err := Open(ctx, u, envOptions)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		e.c = c
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, k := range e.keys() {
				_ = c.Del(ctx, k).Err()
			}
			_ = c.Close()
		})
		return e
	}
	e.mr = miniredis.RunT(t)
	c, err := Open(ctx, "redis://"+e.mr.Addr(), envOptions)
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	t.Cleanup(func() { _ = c.Close() })
	return e
}

func (e *env) opts() StoreOptions { return StoreOptions{Prefix: e.prefix} }

// url is the address of the test's Redis.
func (e *env) url() string {
	if e.mr != nil {
		return "redis://" + e.mr.Addr()
	}
	return os.Getenv("REDIS_URL")
}

// advance lets d pass for Redis's key expiry: miniredis's clock is moved,
// a real Redis is waited for.
func (e *env) advance(d time.Duration) {
	if e.mr != nil {
		e.mr.FastForward(d)
		return
	}
	time.Sleep(d)
}

// keys lists every key under the test's prefix.
func (e *env) keys() []string {
	e.t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c goredis.Cmdable) error {
		iter := c.Scan(ctx, 0, e.prefix+":*", 100).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := e.c.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error { return scan(ctx, n) })
	} else {
		err = scan(ctx, e.c)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) pttl(key string) time.Duration {
	e.t.Helper()
	d, err := e.c.PTTL(context.Background(), key).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newKeyring(t *testing.T) *seal.Keyring {
	t.Helper()
	k := make([]byte, seal.KeySize)
	_, _ = rand.Read(k)
	kr, err := seal.NewKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deadAddr returns an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// silentAddr returns an address that accepts connections and never
// answers, like a Redis stuck behind a broken network.
func silentAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(done)
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}
