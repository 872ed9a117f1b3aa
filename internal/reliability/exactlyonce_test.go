package reliability

import (
	"net/http"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

// The violations of the exactly-once promise reported in issue 10, each
// reproduced against a fleet of real replicas on a real redis-server. Each
// test failed before its fix.

// TestSlowWeChatAnswerReachesTheRetry (violation 1): WeChat answers after
// 12 s; the request's deadline is 3 s and the exchange's 30 s. The client
// gets 504 upstream_timeout ("retry with the same code"), and its retry,
// on another replica, gets the number. Before the fix the default HTTP
// client's 10 s ResponseHeaderTimeout dropped the answer and the retry got
// 502 outcome_unknown.
func TestSlowWeChatAnswerReachesTheRetry(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{requestTimeout: 3 * time.Second, exchangeTimeout: 30 * time.Second})
	f.warm()
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 12_000, Count: 1})
	code := f.mint()
	expectError(t, f.exchange(0, code), http.StatusGatewayTimeout, "upstream_timeout")
	r := f.until(20*time.Second, code, 1, 2)
	f.expectAnswer(r, code)
	if !r.replayed {
		t.Errorf("the retry was not a replay: %v", r)
	}
	if n := len(f.wire.callsOf(code)); n != 1 {
		t.Fatalf("the code reached WeChat %d times", n)
	}
}

// TestRedisPauseOwnOutcomeReplayed (violation 6): Redis freezes (SIGSTOP)
// for a moment right after a replica recorded an answer there. A retry on
// that replica during the freeze gets the number from the replica's own
// memory; before the fix the replica claimed the code on its own, sent it
// again and answered outcome_unknown, and that local record then hid the
// stored number after Redis was back.
func TestRedisPauseOwnOutcomeReplayed(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{defaultRedis: true})
	f.warm()
	code := f.mint()
	f.expectAnswer(f.exchange(0, code), code)
	f.redis.pause()
	r := f.exchange(0, code)
	f.redis.resume()
	f.expectAnswer(r, code)
	time.Sleep(1200 * time.Millisecond) // past the breaker's cool-off
	for i := range 3 {
		f.expectAnswer(f.exchange(i, code), code)
	}
	if n := len(f.wire.callsOf(code)); n != 1 {
		t.Fatalf("the code reached WeChat %d times", n)
	}
}

// TestRedisRestartedEmpty (violation 7): Redis restarts without its data
// (no persistence) after a replica answered a code. The replicas notice the
// new epoch and republish what they hold before anyone claims in it, so a
// retry on another replica gets the number; before the fix it sent the
// code again and answered 422 invalid_code.
func TestRedisRestartedEmpty(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.warm()
	answered := f.mint()
	f.expectAnswer(f.exchange(0, answered), answered)
	f.redis.stop()
	f.redis.start() // empty
	f.expectAnswer(f.until(10*time.Second, answered, 1, 2), answered)
	if n := len(f.wire.callsOf(answered)); n != 1 {
		t.Fatalf("the answered code reached WeChat %d times", n)
	}
	// A code nobody holds is exchanged normally in the new epoch.
	fresh := f.mint()
	f.expectAnswer(f.until(10*time.Second, fresh, 2), fresh)
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}
