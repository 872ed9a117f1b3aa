package reliability

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/wxmock"
)

// Row "Redis down": every replica keeps serving from its local fallback
// (200 for new codes, local replays on the same replica). Replicas cannot
// see each other's claims: a retry on another replica re-sends the code
// (the degraded-mode exception of I1) and WeChat answers 40029. Since that
// replica cannot know whether another one holds the number, it answers
// 503 store_unavailable ("retry with the same code"), never invalid_code
// and never a final outcome_unknown. After Redis returns the replicas
// publish what they did, and that retry gets the number (I2); what a
// replica recorded locally during the outage it still replays.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.warm()
	f.redis.stop()
	var same, other []string
	for i := range 6 {
		code := f.mint()
		f.expectAnswer(f.exchange(i, code), code)
		// The same replica replays its own answer.
		r := f.exchange(i, code)
		f.expectAnswer(r, code)
		if !r.replayed {
			t.Fatalf("no local replay: %v", r)
		}
		same = append(same, code)
		// Another replica cannot know: it re-sends, documented, and
		// does not give a final answer.
		expectError(t, f.exchange(i+1, code), http.StatusServiceUnavailable, "store_unavailable")
		if calls := f.wire.callsOf(code); len(calls) != 2 || calls[1].outcome != "errcode:40029" {
			t.Fatalf("wire: %v", calls)
		}
		other = append(other, code)
	}
	f.redis.start()
	time.Sleep(1200 * time.Millisecond) // the breaker's cool-off
	// Local outcomes survive the recovery on the replica that made them,
	// and reach the replica that could not see them.
	for i, code := range same {
		f.expectAnswer(f.exchange(i, code), code)
		f.expectAnswer(f.exchange(i+1, code), code)
	}
	// Shared dedupe is back.
	code := f.mint()
	calls := f.phoneCalls()
	for i := range 3 {
		f.expectAnswer(f.exchange(i, code), code)
	}
	if got := f.phoneCalls() - calls; got != 1 {
		t.Fatalf("after recovery one code on 3 replicas made %d calls", got)
	}
	outage := map[string]bool{}
	for _, c := range other {
		outage[c] = true
	}
	rep := f.ledger.check(f.emu, f.wire, nil, func(c string, _ []result) string {
		if outage[c] {
			return "Redis down: another replica cannot see the claim"
		}
		return ""
	})
	rep.mustHold(t, f.ledger, f.wire)
	if rep.resentExcused != len(other) {
		t.Fatalf("resent codes = %d, want %d", rep.resentExcused, len(other))
	}
}

// Row "Redis down mid-exchange": the client gave up (504 upstream_timeout,
// retry with the same code), Redis went down while WeChat was still
// answering, and the breaker was already open, so the claim in Redis could
// not be completed. The replica keeps the answer: its retries, on the same
// replica, get it, during the outage and after Redis returned, and a retry
// that arrives while the exchange still runs waits for it instead of
// claiming the code locally. (Regression test for three fixes:
// Fallback.Complete reported success with the breaker open; Fallback.Claim
// ignored local outcomes after the recovery; the service claimed a code
// locally while it was exchanging it itself.)
func TestRedisDownMidExchange(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{requestTimeout: time.Second, exchangeTimeout: 5 * time.Second})
	f.warm()
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 1800, Count: 1})
	code := f.mint()
	expectError(t, f.exchange(0, code), http.StatusGatewayTimeout, "upstream_timeout")
	f.redis.stop()
	// Another request opens replica 0's breaker before the answer arrives.
	other := f.mint()
	f.expectAnswer(f.exchange(0, other), other)
	// A retry while the exchange still runs: it must not send the code.
	if r := f.exchange(0, code); r.status != http.StatusOK && r.errCode != "upstream_timeout" {
		t.Fatalf("retry during the exchange: %v", r)
	}
	f.expectAnswer(f.until(5*time.Second, code, 0), code)
	if got := len(f.wire.callsOf(code)); got != 1 {
		t.Fatalf("calls = %d: %v", got, f.wire.callsOf(code))
	}
	f.redis.start()
	time.Sleep(1200 * time.Millisecond)
	f.expectAnswer(f.exchange(0, code), code)
	f.expectAnswer(f.exchange(0, other), other)
	if got := len(f.wire.callsOf(code)); got != 1 {
		t.Fatalf("the code went to WeChat %d times", got)
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "Redis slow": the private redis-server is frozen with SIGSTOP
// (connections open, no answer). With the redis package's default client
// timeouts (100 ms reads, one retry) and the breaker, every request still
// completes well within its deadline, with its number; duplicates on the
// same replica are still deduplicated.
func TestRedisSlow(t *testing.T) {
	t.Parallel()
	const deadline = 2 * time.Second
	f := newFleet(t, fleetOpts{requestTimeout: deadline, defaultRedis: true})
	f.warm()
	// Warm the pools so the frozen server holds established connections.
	for i := range 3 {
		code := f.mint()
		f.expectAnswer(f.exchange(i, code), code)
	}
	f.redis.pause()
	defer f.redis.resume()
	codes := make([]string, 30)
	for i := range codes {
		codes[i] = f.mint()
	}
	res := make([]result, 2*len(codes))
	var wg sync.WaitGroup
	for i, code := range codes {
		wg.Go(func() { res[2*i] = f.exchange(i, code) })
		wg.Go(func() { res[2*i+1] = f.exchange(i, code) }) // a concurrent duplicate, same replica
	}
	wg.Wait()
	var worst time.Duration
	for i, r := range res {
		f.expectAnswerT(t, r, codes[i/2])
		worst = max(worst, r.end.Sub(r.start))
	}
	if worst > deadline-500*time.Millisecond {
		t.Errorf("slowest request took %v with Redis frozen; deadline %v", worst, deadline)
	}
	for _, code := range codes {
		if n := len(f.wire.callsOf(code)); n != 1 {
			t.Errorf("a concurrent duplicate on the same replica made %d calls", n)
		}
	}
	t.Logf("Redis frozen: %d requests, slowest %v (Redis timeouts: read %v, dial %v, one retry)", len(res), worst, redis.DefaultReadTimeout, redis.DefaultDialTimeout)
	f.redis.resume()
	time.Sleep(1200 * time.Millisecond)
	code := f.mint()
	for i := range 3 {
		f.expectAnswer(f.exchange(i, code), code)
	}
	if n := len(f.wire.callsOf(code)); n != 1 {
		t.Errorf("after Redis recovered, one code on 3 replicas made %d calls", n)
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "Redis flapping": Redis is killed and restarted every few hundred
// milliseconds (with persistence, as in production) while clients send new
// codes, retry codes on the same replica and send concurrent duplicates to
// two replicas. Every code WeChat answered reaches a client. Resends happen
// only for codes served by a replica while it was on its local store (its
// log says when), and they are answered outcome_unknown.
func TestRedisFlapping(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{aof: true})
	f.warm()
	var (
		mu      sync.Mutex
		outages [][2]time.Time
	)
	stop := make(chan struct{})
	flapDone := make(chan struct{})
	go func() {
		defer close(flapDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			down := time.Now()
			f.redis.stop()
			time.Sleep(200 * time.Millisecond)
			f.redis.start()
			mu.Lock()
			// The breaker's cool-off keeps replicas local for up to 1 s
			// after Redis is back.
			outages = append(outages, [2]time.Time{down, time.Now().Add(1500 * time.Millisecond)})
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	end := time.Now().Add(3 * time.Second)
	for w := range 6 {
		wg.Go(func() {
			for i := 0; time.Now().Before(end); i++ {
				code := f.mint()
				switch i % 3 {
				case 0: // new code, then a retry on the same replica
					f.exchange(w, code)
					f.exchange(w, code)
				case 1: // concurrent duplicates on two replicas
					var dup sync.WaitGroup
					dup.Go(func() { f.exchange(w, code) })
					dup.Go(func() { f.exchange(w+1, code) })
					dup.Wait()
				default:
					f.exchange(w, code)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-flapDone
	rep := f.ledger.check(f.emu, f.wire, nil, func(c string, rs []result) string {
		if f.degraded(rs) {
			return "Redis outage: replicas could not see each other's claims"
		}
		return ""
	})
	t.Logf("%s; %d outages", rep, len(outages))
	rep.mustHold(t, f.ledger, f.wire)
	// A resend by a replica whose claim was local gets 503
	// store_unavailable ("retry with the same code"): it cannot know
	// whether another replica holds the number. Never invalid_code.
	f.ledger.mu.Lock()
	counts := map[string]int{}
	var retry []string
	for code, rs := range f.ledger.got {
		for _, r := range rs {
			counts[r.errCode]++
			switch {
			case r.status == http.StatusOK, r.errCode == "outcome_unknown", r.errCode == "upstream_timeout":
			case r.errCode == "store_unavailable":
				retry = append(retry, code)
			default:
				t.Errorf("code %s…: unexpected %v (all: %v)", code[:8], r, rs)
			}
		}
	}
	f.ledger.mu.Unlock()
	t.Logf("answers by error code: %v", counts)
	// Redis is steady again: every "retry with the same code" is
	// answered, with the number when WeChat gave one.
	time.Sleep(1500 * time.Millisecond)
	for i, code := range retry {
		r := f.until(5*time.Second, code, i)
		if r.status != http.StatusOK && r.errCode != "outcome_unknown" {
			t.Errorf("code %s…: the retry after the flapping got %v", code[:8], r)
		}
	}
	f.ledger.check(f.emu, f.wire, nil, func(c string, rs []result) string {
		if f.degraded(rs) {
			return "Redis outage: replicas could not see each other's claims"
		}
		return ""
	}).mustHold(t, f.ledger, f.wire)
}
