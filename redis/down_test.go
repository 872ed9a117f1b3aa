package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/replay"
)

// Property 9's store half: with Redis down, every method fails promptly
// with an error that is neither "not found" nor "lock held", and nothing
// reports a lock taken, a claim won, a force refresh reserved or a request
// allowed.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	lazy := func(t *testing.T, addr string) Client {
		c, err := Open(context.Background(), "redis://"+addr, Options{Lazy: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := map[string]func(t *testing.T) Client{
		"nothing listening": func(t *testing.T) Client { return lazy(t, deadAddr(t)) },
		"server closed under a warm pool": func(t *testing.T) Client {
			mr := miniredis.NewMiniRedis()
			if err := mr.Start(); err != nil {
				t.Fatal(err)
			}
			c := lazy(t, mr.Addr())
			if err := c.Set(context.Background(), "warm", "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
			mr.Close()
			return c
		},
		"server never answers": func(t *testing.T) Client { return lazy(t, silentAddr(t)) },
	}
	for name, client := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := client(t)
			defer c.Close()
			kr := newKeyring(t)
			ts, _ := NewTokenStore(c, kr, StoreOptions{})
			rs, _ := NewReplayStore(c, StoreOptions{})
			lim, _ := NewLimiter(c, ratelimit.Limit{Rate: 1, Burst: 1}, StoreOptions{})
			// No deadline in ctx: the client's own timeouts must end each call.
			ctx := context.Background()
			prompt := func(op string, f func() error) {
				t.Helper()
				start := time.Now()
				err := f()
				if d := time.Since(start); d > 1500*time.Millisecond {
					t.Errorf("%s took %v", op, d)
				}
				if err == nil {
					t.Errorf("%s: no error", op)
				}
				if errors.Is(err, wxphone.ErrTokenNotFound) || errors.Is(err, wxphone.ErrLockHeld) || errors.Is(err, replay.ErrNotFound) || errors.Is(err, replay.ErrNotClaimed) {
					t.Errorf("%s: Redis failure reported as %v", op, err)
				}
			}
			for range 2 { // a second round meets whatever state the pool is in after the first
				prompt("LoadToken", func() error { _, err := ts.LoadToken(ctx, appA); return err })
				prompt("StoreToken", func() error {
					_, err := ts.StoreToken(ctx, appA, tok("TOKEN", time.Now().Add(time.Hour)))
					return err
				})
				prompt("DeleteToken", func() error {
					ok, err := ts.DeleteToken(ctx, appA, "TOKEN")
					if ok {
						t.Error("DeleteToken reported a deletion")
					}
					return err
				})
				prompt("ReserveForceRefresh", func() error {
					ok, _, err := ts.ReserveForceRefresh(ctx, appA, randHex(8), time.Now(), 30*time.Second, 10)
					if ok {
						t.Error("force refresh reserved")
					}
					return err
				})
				prompt("LockRefresh", func() error {
					unlock, err := ts.LockRefresh(ctx, appA, time.Second)
					if unlock != nil {
						t.Error("lock reported acquired")
					}
					return err
				})
				prompt("Claim", func() error {
					res, err := rs.Claim(ctx, replay.Claim{Key: "k", ID: "id", Owner: "o", Lease: time.Now().Add(time.Minute), TTL: time.Minute})
					if res.Claimed {
						t.Error("claim reported won")
					}
					return err
				})
				prompt("Complete", func() error { return rs.Complete(ctx, "k", "id", []byte("x"), true) })
				prompt("Release", func() error { return rs.Release(ctx, "k", "id", true) })
				prompt("Get", func() error { _, err := rs.Get(ctx, "k"); return err })
				prompt("Restore", func() error {
					_, err := rs.Restore(ctx, "k", replay.Record{State: replay.Done, ClaimID: "id"}, time.Minute)
					return err
				})
				prompt("Heartbeat", func() error { _, err := rs.Heartbeat(ctx, replay.Beat{Member: "m"}); return err })
				prompt("Allow", func() error {
					ok, _, err := lim.Allow(ctx, "k")
					if ok {
						t.Error("request allowed")
					}
					return err
				})
				prompt("Ping", func() error { return Ping(ctx, c) })
			}
		})
	}
}

// A caller's context deadline bounds a call even when it is shorter than
// the client's timeouts.
func TestCallerDeadline(t *testing.T) {
	t.Parallel()
	c, err := Open(context.Background(), "redis://"+silentAddr(t), Options{Lazy: true, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ts, _ := NewTokenStore(c, newKeyring(t), StoreOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := ts.LoadToken(ctx, appA); err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("LoadToken took %v with a 50ms deadline", d)
	}
}
