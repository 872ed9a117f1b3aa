package reliability

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/wxmock"
)

// Rows "upstream slower than the deadline": WeChat answers after the
// client's request deadline but within the exchange timeout (the detached
// exchange finishes and a retry with the same code, on any replica, gets
// the answer), and after the exchange timeout too (the answer is lost:
// outcome_unknown, and the code is not sent again).
func TestUpstreamSlowerThanTheDeadline(t *testing.T) {
	t.Parallel()
	t.Run("within the exchange timeout", func(t *testing.T) {
		t.Parallel()
		f := newFleet(t, fleetOpts{requestTimeout: time.Second, exchangeTimeout: 5 * time.Second})
		f.warm()
		f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 2500, Count: 1})
		code := f.mint()
		expectError(t, f.exchange(0, code), http.StatusGatewayTimeout, "upstream_timeout")
		// The retry goes to another replica; it waits for the running
		// exchange (through Redis) and gets its answer.
		r := f.until(10*time.Second, code, 1, 2)
		f.expectAnswer(r, code)
		if !r.replayed {
			t.Errorf("the retry's answer is not marked replayed")
		}
		if got := len(f.wire.callsOf(code)); got != 1 {
			t.Fatalf("WeChat saw the code %d times, want 1", got)
		}
		f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
	})
	t.Run("beyond the exchange timeout", func(t *testing.T) {
		t.Parallel()
		f := newFleet(t, fleetOpts{requestTimeout: 3 * time.Second, exchangeTimeout: time.Second})
		f.warm()
		f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 2000, Count: 1})
		code := f.mint()
		// The request was written, so WeChat may have used the code.
		expectError(t, f.exchange(0, code), http.StatusGatewayTimeout, "outcome_unknown")
		// Replays say outcome_unknown too; a replay has lost the
		// timeout detail and answers 502.
		for i := range 3 {
			r := f.exchange(i, code)
			if r.errCode != "outcome_unknown" || (r.status != http.StatusBadGateway && r.status != http.StatusGatewayTimeout) {
				t.Fatalf("retry: %v", r)
			}
		}
		if got := len(f.wire.callsOf(code)); got != 1 {
			t.Fatalf("WeChat saw the code %d times, want 1", got)
		}
		// WeChat had the request and used the code at once; its answer
		// came after the replica had hung up and was never delivered.
		f.wire.waitIdle(3 * time.Second)
		if st := f.emu.Stats(); st.Codes[code].Answered != 1 || st.Codes[code].Delivered != 0 || st.Endpoints.Phone.Canceled != 1 {
			t.Fatalf("emulator: %+v canceled=%d", st.Codes[code], st.Endpoints.Phone.Canceled)
		}
		f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
	})
}

// gate is a dialer that refuses connections while closed: it dials a port
// where nothing listens, so the refusal is the kernel's.
type gate struct {
	closed atomic.Bool
	dead   string
	dials  atomic.Int64
}

func (g *gate) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	g.dials.Add(1)
	var d net.Dialer
	if g.closed.Load() {
		return d.DialContext(ctx, network, g.dead)
	}
	return d.DialContext(ctx, network, addr)
}

// Row "connection refused before the request was written": nothing was
// sent, so the library resends (twice at most), then answers 502
// upstream_error; the code is released and a later retry succeeds.
func TestConnectionRefusedBeforeTheRequestWasWritten(t *testing.T) {
	t.Parallel()
	g := &gate{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.dead = ln.Addr().String()
	ln.Close()
	f := newFleet(t, fleetOpts{httpClient: func() *http.Client {
		// No keep-alive: every request dials, as after an idle timeout
		// or a WeChat front end going away.
		return &http.Client{Transport: &http.Transport{DialContext: g.DialContext, DisableKeepAlives: true}}
	}})
	f.warm()
	code := f.mint()
	g.closed.Store(true)
	dials := g.dials.Load()
	r := f.exchange(0, code)
	expectError(t, r, http.StatusBadGateway, "upstream_error")
	if n := g.dials.Load() - dials; n != 3 {
		t.Errorf("dials for one request = %d, want 3 (the first try and two resends)", n)
	}
	// Same code on another replica: still refused, still not sent.
	expectError(t, f.exchange(1, code), http.StatusBadGateway, "upstream_error")
	if got := len(f.wire.callsOf(code)); got != 0 {
		t.Fatalf("WeChat saw the code %d times while refusing connections", got)
	}
	g.closed.Store(false)
	f.expectAnswer(f.exchange(2, code), code)
	if got := len(f.wire.callsOf(code)); got != 1 {
		t.Fatalf("WeChat saw the code %d times, want 1", got)
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Rows "connection reset after the request was written" (reset_before_read:
// WeChat never read it), "answer dropped in transit" (drop_after_consume:
// WeChat used the code and closed the connection without a byte) and
// "connection reset after the code was used" (reset_after_consume over
// HTTP/1: a TCP reset instead of the answer): all are 502 outcome_unknown,
// replayed to every retry, and the code is never sent again. The answers
// of the last two never left WeChat: no client can receive them.
func TestConnectionLostAfterTheRequestWasWritten(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{wxmock.FaultResetBeforeRead, wxmock.FaultDropAfterConsume, wxmock.FaultResetAfterConsume} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, fleetOpts{})
			f.warm()
			f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: kind, Count: 1})
			code := f.mint()
			expectError(t, f.exchange(0, code), http.StatusBadGateway, "outcome_unknown")
			for i := range 3 {
				expectError(t, f.exchange(i, code), http.StatusBadGateway, "outcome_unknown")
			}
			calls := f.wire.callsOf(code)
			if len(calls) != 1 || calls[0].outcome != "hijacked" {
				t.Fatalf("wire: %v, want one call", calls)
			}
			st := f.emu.Stats()
			wantAnswered := int64(1)
			if kind == wxmock.FaultResetBeforeRead {
				wantAnswered = 0
			}
			if st.Codes[code].Answered != wantAnswered || st.Codes[code].Delivered != 0 {
				t.Fatalf("emulator: %+v, want answered %d, delivered 0", st.Codes[code], wantAnswered)
			}
			rep := f.ledger.check(f.emu, f.wire, nil, nil)
			rep.mustHold(t, f.ledger, f.wire)
			if rep.undelivered != int(wantAnswered) {
				t.Fatalf("report %s: want %d undelivered answer", rep, wantAnswered)
			}
		})
	}
}

// Row "HTTP 5xx": the request reached WeChat's side and may have been
// processed (with consume it was): 502 outcome_unknown, replayed, never
// resent.
func TestHTTP5xx(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.warm()
	for _, status := range []int{500, 502, 503, 504} {
		for _, consume := range []bool{false, true} {
			f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultHTTPStatus, Status: status, Consume: consume, Count: 1})
			code := f.mint()
			expectError(t, f.exchange(0, code), http.StatusBadGateway, "outcome_unknown")
			expectError(t, f.exchange(1, code), http.StatusBadGateway, "outcome_unknown")
			expectError(t, f.exchange(2, code), http.StatusBadGateway, "outcome_unknown")
			if got := len(f.wire.callsOf(code)); got != 1 {
				t.Fatalf("status %d consume=%v: WeChat saw the code %d times", status, consume, got)
			}
		}
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "-1 storm": every call answers -1 for a while. Each request tries
// twice (one jittered resend; -1 means the code was not used) and answers
// 502 wechat_busy; the code is released tainted. Once the storm ends a
// retry gets the number. With consume (WeChat used the code and still said
// -1) the resend meets 40029, which reads as outcome_unknown, never as
// invalid_code.
func TestSystemBusyStorm(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.warm()
	id := f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1})
	codes := make([]string, 12)
	for i := range codes {
		codes[i] = f.mint()
	}
	var wg sync.WaitGroup
	for round := range 2 {
		for i, code := range codes {
			wg.Go(func() {
				r := f.exchange(i+round, code)
				if r.status != http.StatusBadGateway || r.errCode != "wechat_busy" {
					t.Errorf("during the storm: %v", r)
				}
			})
		}
		wg.Wait()
	}
	for _, code := range codes {
		calls := f.wire.callsOf(code)
		if len(calls) != 4 {
			t.Errorf("calls during the storm = %d, want 4 (2 requests × 2 tries)", len(calls))
		}
	}
	_ = id
	f.emu.ClearFaults()
	for i, code := range codes {
		wg.Go(func() { f.expectAnswerT(t, f.exchange(i+2, code), code) })
	}
	wg.Wait()

	// -1 after WeChat used the code.
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1})
	code := f.mint()
	r := f.exchange(0, code)
	expectError(t, r, http.StatusBadGateway, "outcome_unknown")
	if calls := f.wire.callsOf(code); len(calls) != 2 || calls[1].outcome != "errcode:40029" {
		t.Fatalf("wire: %v, want -1 then 40029", calls)
	}
	expectError(t, f.exchange(1, code), http.StatusBadGateway, "outcome_unknown")
	if calls := f.wire.callsOf(code); len(calls) != 2 {
		t.Fatalf("the code was sent again after the 40029: %v", calls)
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// expectAnswerT is expectAnswer for use inside goroutines (no Fatal).
func (f *fleet) expectAnswerT(t *testing.T, r result, code string) {
	t.Helper()
	f.ledger.mu.Lock()
	want := f.ledger.want[code]
	f.ledger.mu.Unlock()
	if r.status != http.StatusOK || r.phone != want {
		t.Errorf("want 200 with the code's number, got %v", r)
	}
}

// Row "45011": WeChat's per-minute limit. The code was not used: 429
// wechat_rate_limited with Retry-After: 60, the code is released, and the
// same code succeeds in the next minute.
func TestWeChatRateLimit45011(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.warm()
	if err := f.emu.SetPhoneRateLimit(5); err != nil {
		t.Fatal(err)
	}
	// Start at the beginning of an emulated minute so the window does
	// not roll over during the burst.
	now := f.emu.Now()
	f.emu.Advance(time.Minute - time.Duration(now.Unix()%60)*time.Second - time.Duration(now.Nanosecond()) + 100*time.Millisecond)
	codes := make([]string, 12)
	for i := range codes {
		codes[i] = f.mint()
	}
	res := make([]result, len(codes))
	var wg sync.WaitGroup
	for i, code := range codes {
		wg.Go(func() { res[i] = f.exchange(i, code) })
	}
	wg.Wait()
	ok, limited := 0, 0
	for i, r := range res {
		switch {
		case r.status == http.StatusOK:
			ok++
		case r.status == http.StatusTooManyRequests && r.errCode == "wechat_rate_limited":
			limited++
			if r.retryAft != "60" {
				t.Errorf("Retry-After = %q, want 60", r.retryAft)
			}
			if n := len(f.wire.callsOf(codes[i])); n != 1 {
				t.Errorf("a 45011 was retried: %d calls", n)
			}
		default:
			t.Errorf("unexpected answer %v", r)
		}
	}
	if ok != 5 || limited != 7 {
		t.Fatalf("ok=%d limited=%d, want 5 and 7", ok, limited)
	}
	retried := 0
	for i, r := range res {
		if r.status == http.StatusTooManyRequests {
			if retried%5 == 0 {
				f.emu.Advance(time.Minute) // the next minute's 5 calls
			}
			retried++
			f.expectAnswer(f.exchange(i+1, codes[i]), codes[i])
		}
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "45009 on the token fetch": a burst on a cold fleet makes at most one
// fetch per replica (one holds the Redis lock, the others wait for it, then
// each fetches once and cools down), every request answers 503
// token_unavailable with a Retry-After, no code is sent, and later bursts
// make no fetch until the cool-down ends. Then the same codes succeed.
func TestTokenQuota45009(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{token: wxphone.TokenOptions{QuotaCooldown: 5 * time.Second, LockWait: 300 * time.Millisecond}})
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 45009})
	codes := make([]string, 30)
	for i := range codes {
		codes[i] = f.mint()
	}
	burst := func() []result {
		res := make([]result, len(codes))
		var wg sync.WaitGroup
		for i, code := range codes {
			wg.Go(func() { res[i] = f.exchange(i, code) })
		}
		wg.Wait()
		return res
	}
	start := time.Now()
	for round := range 2 {
		for _, r := range burst() {
			if r.status != http.StatusServiceUnavailable || r.errCode != "token_unavailable" {
				t.Fatalf("round %d: %v", round, r)
			}
			// The requests that shared the refused fetch get WeChat's
			// 45009 itself, without Retry-After; during the cool-down
			// every answer carries the time left.
			if s, err := strconv.Atoi(r.retryAft); round == 1 && (err != nil || s < 1 || s > 5) {
				t.Fatalf("Retry-After = %q, want the cool-down's remainder (1..5 s)", r.retryAft)
			}
		}
		if got := f.stable().Calls; got > int64(len(f.members)) {
			t.Fatalf("round %d: %d stable_token calls for %d replicas: the refused fetch is hammered", round, got, len(f.members))
		}
	}
	if time.Since(start) > 4500*time.Millisecond {
		t.Fatalf("the bursts took %v: the checks below assume they ran within the cool-down", time.Since(start))
	}
	if got := f.phoneCalls(); got != 0 {
		t.Fatalf("%d phone calls without a token", got)
	}
	f.emu.ClearFaults()
	// Each replica cools down from its own refused fetch; then the same
	// codes succeed.
	time.Sleep(time.Until(start.Add(5100 * time.Millisecond)))
	for i, code := range codes {
		r := f.exchange(i+1, code)
		for end := time.Now().Add(2 * time.Second); r.errCode == "token_unavailable" && time.Now().Before(end); {
			time.Sleep(100 * time.Millisecond)
			r = f.exchange(i+1, code)
		}
		f.expectAnswer(r, code)
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "token revoked mid-burst": RevokeTokens while a burst is in flight.
// Every request still gets its number (40001: invalidate-if-equal, one
// normal-mode refresh, one resend, which cannot double-use the code since
// WeChat refused the token); the refreshes are bounded (one per replica at
// most) and no force refresh is spent.
func TestTokenRevokedMidBurst(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.warm()
	before := f.stable()
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 300, Count: 60})
	codes := make([]string, 60)
	for i := range codes {
		codes[i] = f.mint()
	}
	res := make([]result, len(codes))
	var wg sync.WaitGroup
	var arrived atomic.Int64
	hook := func(string) { arrived.Add(1) }
	f.wire.arrived.Store(&hook)
	for i, code := range codes {
		wg.Go(func() { res[i] = f.exchange(i, code) })
	}
	for arrived.Load() < 30 {
		time.Sleep(time.Millisecond)
	}
	if n, err := f.emu.RevokeTokens(appID); err != nil || n == 0 {
		t.Fatalf("RevokeTokens = %d, %v", n, err)
	}
	wg.Wait()
	retried := 0
	for i, r := range res {
		f.expectAnswer(r, codes[i])
		if n := len(f.wire.callsOf(codes[i])); n == 2 {
			retried++
		} else if n != 1 {
			t.Fatalf("code sent %d times", n)
		}
	}
	after := f.stable()
	if retried == 0 {
		t.Fatal("no request met the revocation: the test proves nothing")
	}
	normal, force := after.Normal-before.Normal, after.Force-before.Force
	if normal < 1 || normal > int64(len(f.members)) || force != 0 {
		t.Fatalf("%d requests met a revoked token; refreshes: normal=%d force=%d, want 1..%d and 0", retried, normal, force, len(f.members))
	}
	t.Logf("%d of %d requests met the revoked token; %d normal refreshes, no force", retried, len(codes), normal)
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "40001 storm": WeChat rejects every token for a while. The first
// rejection of the current token is invalidated (if still current); since
// WeChat keeps handing out the same stable token, that needs a force
// refresh, which is spent at most once per 30 s fleet-wide. Every request
// answers 503 token_unavailable, the code is sent at most twice (40001
// leaves it unused), and after the storm the same codes succeed.
func TestTokenRejectedStorm40001(t *testing.T) {
	t.Parallel()
	// A request may wait for other replicas' refreshes up to twice
	// (LockWait each) before it is refused: the deadlines exceed that, as
	// the defaults do (LockWait 3 s, request 10 s, exchange 15 s).
	f := newFleet(t, fleetOpts{requestTimeout: 4 * time.Second, exchangeTimeout: 6 * time.Second,
		token: wxphone.TokenOptions{LockWait: time.Second}})
	f.warm()
	before := f.stable()
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001})
	codes := make([]string, 40)
	for i := range codes {
		codes[i] = f.mint()
	}
	var wg sync.WaitGroup
	for round := range 2 {
		for i, code := range codes {
			wg.Go(func() {
				r := f.exchange(i+round, code)
				if r.status != http.StatusServiceUnavailable || r.errCode != "token_unavailable" {
					t.Errorf("during the storm: %v", r)
				}
			})
		}
		wg.Wait()
	}
	after := f.stable()
	force, normal := after.Force-before.Force, after.Normal-before.Normal
	if force != 1 {
		t.Errorf("force refreshes during the storm = %d, want 1 (30 s spacing, shared)", force)
	}
	// Fetches are shared by every request waiting on a replica
	// (singleflight) and by the fleet (the Redis lock): a few per replica
	// and wave of requests, never one per request.
	if normal > 6*int64(len(f.members)) {
		t.Errorf("normal refreshes during the storm = %d for %d requests: not bounded", normal, 2*len(codes))
	}
	for _, code := range codes {
		if n := len(f.wire.callsOf(code)); n > 4 {
			t.Errorf("code sent %d times in 2 requests", n)
		}
	}
	t.Logf("storm: %d requests, %d normal and %d force refreshes", 2*len(codes), normal, force)
	f.emu.ClearFaults()
	// After the storm the same codes succeed. A request that meets a
	// refresh refused during the storm (force budget) may still get one
	// 503 token_unavailable: it retries.
	for i, code := range codes {
		wg.Go(func() {
			r := f.exchange(i, code)
			if r.errCode == "token_unavailable" {
				r = f.exchange(i, code)
			}
			f.expectAnswerT(t, r, code)
		})
	}
	wg.Wait()
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// Row "force-refresh budget exhausted": the library returns a typed error
// (ErrTokenUnavailable wrapping ErrForceRefreshLimited) at once, the API
// answers 503 token_unavailable with Retry-After, and nothing loops: no
// further force fetch, one phone call per request.
func TestForceRefreshBudgetExhausted(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{replicas: 2, token: wxphone.TokenOptions{ForceDailyBudget: 1}})
	f.warm()
	// Spend the budget: one rejection of the current token forces a refresh.
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001, Count: 1})
	code := f.mint()
	f.expectAnswer(f.exchange(0, code), code)
	if got := f.stable().Force; got != 1 {
		t.Fatalf("force refreshes = %d, want 1", got)
	}
	// Replica 1 still holds the old token: WeChat refuses it, and the
	// replica picks up the new one from Redis (no force).
	code = f.mint()
	f.expectAnswer(f.exchange(1, code), code)
	if got := f.stable().Force; got != 1 {
		t.Fatalf("force refreshes = %d, want 1", got)
	}
	// Now WeChat rejects the new token too.
	f.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001})
	for i := range 2 {
		code := f.mint()
		calls := f.phoneCalls()
		start := time.Now()
		_, err := f.members[i].r.Service.Exchange(context.Background(), serviceReq(code))
		if !errors.Is(err, wxphone.ErrTokenUnavailable) || !errors.Is(err, wxphone.ErrForceRefreshLimited) {
			t.Fatalf("replica %d: error %v, want ErrTokenUnavailable and ErrForceRefreshLimited", i, err)
		}
		var tue *wxphone.TokenUnavailableError
		if !errors.As(err, &tue) || tue.Until.IsZero() {
			t.Fatalf("no TokenUnavailableError with Until: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("the refused exchange took %v", d)
		}
		if n := f.phoneCalls() - calls; n != 1 {
			t.Fatalf("phone calls for one request = %d, want 1 (then the invalidation is refused)", n)
		}
		code2 := f.mint()
		r := f.exchange(i, code2)
		expectError(t, r, http.StatusServiceUnavailable, "token_unavailable")
		if s, err := strconv.Atoi(r.retryAft); err != nil || s < 1 {
			t.Fatalf("Retry-After = %q", r.retryAft)
		}
	}
	if got := f.stable().Force; got != 1 {
		t.Fatalf("force refreshes = %d, want still 1", got)
	}
	f.ledger.check(f.emu, f.wire, nil, nil).mustHold(t, f.ledger, f.wire)
}

// errRefused reports whether err is a refused or reset connection.
func errRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "connection refused")
}
