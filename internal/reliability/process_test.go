package reliability

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

// procFleet is real `wxphone serve` processes sharing a private Redis and an
// in-process emulator.
type procFleet struct {
	t      *testing.T
	emu    *wxmock.Server
	wire   *wire
	redis  *redisProc
	env    map[string]string
	ledger *ledger
	hc     *http.Client
	emuURL string
}

func newProcFleet(t *testing.T, env map[string]string) *procFleet {
	t.Helper()
	wxphoneBinary(t) // build first: a failed build should not look like a fault
	pf := &procFleet{t: t, ledger: newLedger(), redis: startRedis(t, false),
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	t.Cleanup(pf.hc.CloseIdleConnections)
	var ts *httptest.Server
	pf.emu, pf.wire, ts = newEmulator(t, wxmock.Options{})
	pf.emuURL = ts.URL
	pf.env = map[string]string{
		"WX_APPID": appID, "WX_SECRET": secret, "WXPHONE_API_KEYS": apiKey, "WXPHONE_DATA_KEY": dataKey,
		// Redis timeouts above the 100 ms defaults: on a loaded CI machine
		// a slow answer would open the breaker, and a replica on its
		// local store cannot see the other replicas' claims (row "Redis
		// slow"), which is not what these tests are about.
		"WXPHONE_RATE_LIMIT": "0", "REDIS_URL": pf.redis.url() + "?read_timeout=1s&write_timeout=1s", "WXPHONE_LOG_LEVEL": "warn",
	}
	for k, v := range env {
		pf.env[k] = v
	}
	return pf
}

// start runs one replica and waits until it is ready (token warm).
func (pf *procFleet) start() *proc {
	pf.t.Helper()
	env := map[string]string{"WX_API_BASE": pf.emuURL}
	for k, v := range pf.env {
		env[k] = v
	}
	p := startProc(pf.t, env)
	for i := 0; ; i++ {
		resp, err := pf.hc.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if i > 500 {
			pf.t.Fatalf("replica never ready\n%s", p.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (pf *procFleet) post(p *proc, idx int, code string) result {
	return postCode(pf.hc, p.url, idx, code, pf.ledger)
}

// Row "replica killed mid-exchange": a `wxphone serve` replica is killed
// with SIGKILL while it exchanges a code, and the client retries the same
// code on another replica. The retry never makes a second upstream call:
// it waits (504 upstream_timeout, "retry with the same code") while the
// dead replica's claim is leased (exchange timeout + 5 s), then answers
// 502 outcome_unknown; or it gets the number if the dead replica had
// recorded it.
func TestReplicaKilledMidExchange(t *testing.T) {
	t.Parallel()
	needRedis(t)
	env := map[string]string{"WXPHONE_REQUEST_TIMEOUT": "1s", "WXPHONE_EXCHANGE_TIMEOUT": "2s"}
	const lease = 7 * time.Second // exchange timeout + 5 s

	// retryUntilFinal retries code on b until an answer other than 504
	// upstream_timeout, and checks the claim was honoured until its lease.
	retryUntilFinal := func(t *testing.T, pf *procFleet, b *proc, code string, claimed time.Time) result {
		t.Helper()
		for {
			r := pf.post(b, 1, code)
			if r.errCode != "upstream_timeout" {
				return r
			}
			if time.Since(claimed) > lease+5*time.Second {
				t.Fatalf("still in flight %v after the claim", time.Since(claimed))
			}
		}
	}

	t.Run("before WeChat answered", func(t *testing.T) {
		t.Parallel()
		pf := newProcFleet(t, env)
		a, b := pf.start(), pf.start()
		pf.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 1500, Count: 1})
		code := mintCode(t, pf.emu, pf.ledger)
		arrived := make(chan struct{})
		var once sync.Once
		hook := func(c string) {
			if c == code {
				once.Do(func() { close(arrived) })
			}
		}
		pf.wire.arrived.Store(&hook)
		claimed := time.Now()
		first := make(chan result, 1)
		go func() { first <- pf.post(a, 0, code) }()
		<-arrived
		a.signal(syscall.SIGKILL)
		a.wait(5 * time.Second)
		if r := <-first; r.err == nil {
			t.Fatalf("the killed replica answered: %v", r)
		}
		r := retryUntilFinal(t, pf, b, code, claimed)
		expectError(t, r, http.StatusBadGateway, "outcome_unknown")
		if d := time.Since(claimed); d < lease-time.Second {
			t.Fatalf("outcome_unknown after %v: the dead claim's lease (%v) was not honoured", d, lease)
		}
		pf.wire.waitIdle(3 * time.Second)
		if calls := pf.wire.callsOf(code); len(calls) != 1 {
			t.Fatalf("WeChat saw the code %d times: %v", len(calls), calls)
		}
		pf.ledger.check(pf.emu, pf.wire, nil, nil).mustHold(t, pf.ledger, pf.wire)
	})

	t.Run("after WeChat answered, before the replica recorded it", func(t *testing.T) {
		t.Parallel()
		pf := newProcFleet(t, env)
		a, b := pf.start(), pf.start()
		pf.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 1500, Count: 1})
		code := mintCode(t, pf.emu, pf.ledger)
		hold := func(c string) {
			if c == code {
				// WeChat has used the code; the replica dies before
				// the answer reaches it.
				a.signal(syscall.SIGKILL)
				a.wait(5 * time.Second)
			}
		}
		pf.wire.hold.Store(&hold)
		claimed := time.Now()
		// The client gives up first (request deadline 1 s) and retries
		// on replica b.
		expectError(t, pf.post(a, 0, code), http.StatusGatewayTimeout, "upstream_timeout")
		r := retryUntilFinal(t, pf, b, code, claimed)
		expectError(t, r, http.StatusBadGateway, "outcome_unknown")
		if calls := pf.wire.callsOf(code); len(calls) != 1 || calls[0].outcome != "ok" {
			t.Fatalf("wire: %v", calls)
		}
		rep := pf.ledger.check(pf.emu, pf.wire, func(c string, rs []result) string {
			if c == code && rs[len(rs)-1].errCode == "outcome_unknown" {
				return "the answer died with the replica"
			}
			return ""
		}, nil)
		rep.mustHold(t, pf.ledger, pf.wire)
		if rep.excused != 1 {
			t.Fatalf("report %s: want the one documented loss", rep)
		}
	})

	t.Run("after the replica recorded the answer", func(t *testing.T) {
		t.Parallel()
		pf := newProcFleet(t, env)
		a, b := pf.start(), pf.start()
		pf.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 1500, Count: 1})
		code := mintCode(t, pf.emu, pf.ledger)
		expectError(t, pf.post(a, 0, code), http.StatusGatewayTimeout, "upstream_timeout")
		for len(pf.wire.callsOf(code)) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // the detached exchange records the answer
		a.signal(syscall.SIGKILL)
		a.wait(5 * time.Second)
		r := pf.post(b, 1, code)
		if r.status != http.StatusOK || !r.replayed {
			t.Fatalf("retry on another replica: %v", r)
		}
		if calls := pf.wire.callsOf(code); len(calls) != 1 {
			t.Fatalf("WeChat saw the code %d times", len(calls))
		}
		pf.ledger.check(pf.emu, pf.wire, nil, nil).mustHold(t, pf.ledger, pf.wire)
	})
}

// Row "SIGTERM during a burst": every request the replica accepted before
// SIGTERM completes with its real answer, new connections are refused at
// once, the process exits 0, and no code is lost: a code whose connection
// was refused was never sent and succeeds on another replica.
func TestSIGTERMDuringBurst(t *testing.T) {
	t.Parallel()
	needRedis(t)
	pf := newProcFleet(t, map[string]string{"WXPHONE_REQUEST_TIMEOUT": "10s", "WXPHONE_EXCHANGE_TIMEOUT": "10s", "WXPHONE_SHUTDOWN_TIMEOUT": "20s"})
	a, b := pf.start(), pf.start()
	pf.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 1000})
	const n = 24
	codes := make([]string, n)
	for i := range codes {
		codes[i] = mintCode(t, pf.emu, pf.ledger)
	}
	var arrived atomic.Int64
	hook := func(string) { arrived.Add(1) }
	pf.wire.arrived.Store(&hook)
	res := make([]result, n)
	var wg sync.WaitGroup
	for i, code := range codes {
		wg.Go(func() { res[i] = pf.post(a, 0, code) })
	}
	for arrived.Load() < n {
		time.Sleep(5 * time.Millisecond)
	}
	a.signal(syscall.SIGTERM)
	sent := time.Now()
	// New connections are refused.
	refused := false
	for time.Since(sent) < 2*time.Second {
		c, err := net.DialTimeout("tcp", a.addr, 200*time.Millisecond)
		if err != nil {
			refused = true
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	if !refused {
		t.Fatal("still accepting connections 2 s after SIGTERM")
	}
	// A second wave meets the closed listener; its codes were not sent.
	late := make([]string, 6)
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range late {
		late[i] = mintCode(t, pf.emu, pf.ledger)
		r := postCode(fresh, a.url, 0, late[i], pf.ledger)
		if r.err == nil || !errRefused(r.err) {
			t.Fatalf("a request after SIGTERM: %v, want a refused connection", r)
		}
	}
	wg.Wait()
	for i, r := range res {
		if r.status != http.StatusOK || r.phone != pf.ledger.want[codes[i]] {
			t.Fatalf("in-flight request %d: %v", i, r)
		}
	}
	if code := a.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM\n%s", code, a.logs.String())
	}
	if d := time.Since(sent); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	// The refused codes were never sent; another replica exchanges them.
	pf.emu.ClearFaults()
	for _, code := range late {
		if n := len(pf.wire.callsOf(code)); n != 0 {
			t.Fatalf("a refused request's code reached WeChat %d times", n)
		}
		r := pf.post(b, 1, code)
		if r.status != http.StatusOK || r.phone != pf.ledger.want[code] {
			t.Fatalf("retry on another replica: %v", r)
		}
	}
	rep := pf.ledger.check(pf.emu, pf.wire, nil, nil)
	rep.mustHold(t, pf.ledger, pf.wire)
	t.Logf("%s; shutdown in %v", rep, time.Since(sent).Round(time.Millisecond))
}

func (pf *procFleet) fault(fl wxmock.Fault) {
	pf.t.Helper()
	if _, err := pf.emu.AddFault(fl); err != nil {
		pf.t.Fatal(err)
	}
}
