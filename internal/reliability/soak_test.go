package reliability

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

// TestSoak runs mixed traffic against 3 replicas on a private Redis while
// seeded random faults hit the emulator, the tokens and Redis, and checks
// at every checkpoint (traffic paused, the fleet quiescent) that
//
//   - every number WeChat delivered reached a client as a 200 (answers it
//     produced and never delivered, e.g. drop_after_consume, are counted);
//   - no 200 carried another code's number;
//   - no code went to WeChat again after it may have been used, except
//     while Redis was down (replicas cannot see each other's claims);
//   - no request failed without an answer, none was a 500;
//   - the goroutine count is back at its baseline (with a settle loop);
//   - the heap after GC stays within a bound of its baseline.
//
// By default it runs for about 5 s. WXPHONE_SOAK=10m runs it longer, with a
// checkpoint every WXPHONE_SOAK_EPOCH (default 1m); WXPHONE_SOAK_SEED picks
// the seed (default: the time, logged).
func TestSoak(t *testing.T) {
	total := 5 * time.Second
	epoch := time.Duration(0)
	if v := os.Getenv("WXPHONE_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("WXPHONE_SOAK: %v", err)
		}
		total, epoch = d, time.Minute
	}
	if v := os.Getenv("WXPHONE_SOAK_EPOCH"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("WXPHONE_SOAK_EPOCH: %v", err)
		}
		epoch = d
	}
	if epoch <= 0 || epoch > total {
		epoch = total
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("WXPHONE_SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("WXPHONE_SOAK_SEED: %v", err)
		}
		seed = n
	}
	t.Logf("soak: %v in epochs of %v, seed %d (WXPHONE_SOAK_SEED=%d reproduces the fault schedule)", total, epoch, seed, seed)

	var upstreams []*http.Client
	var upMu sync.Mutex
	f := newFleet(t, fleetOpts{
		requestTimeout: 1500 * time.Millisecond, exchangeTimeout: 2 * time.Second, aof: true,
		httpClient: func() *http.Client {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			upMu.Lock()
			upstreams = append(upstreams, c)
			upMu.Unlock()
			return c
		},
	})
	f.warm()
	s := &soak{f: f, t: t, seed: seed}
	settle := func() {
		f.hc.CloseIdleConnections()
		for _, c := range upstreams {
			c.CloseIdleConnections()
		}
	}

	// Baseline: the fleet up, tokens warm, nothing in flight.
	settle()
	baseG, baseHeap := goroutinesAndHeap(settle, -1)
	t.Logf("baseline: %d goroutines, heap %.1f MiB", baseG, mib(baseHeap))

	var totals soakTotals
	start := time.Now()
	for n := 1; time.Since(start) < total; n++ {
		d := min(epoch, total-time.Since(start))
		s.run(d)
		// Checkpoint: traffic has stopped; faults off, Redis up, the
		// breakers closed, every exchange finished.
		f.emu.ClearFaults()
		s.healRedis()
		f.wire.waitIdle(10 * time.Second)
		time.Sleep(1200 * time.Millisecond) // the breakers' cool-off; detached work ends
		rep := s.check()
		totals.add(rep, s)
		for _, m := range f.members {
			totals.degradations += m.log.degradations()
		}
		g, heap := goroutinesAndHeap(settle, baseG)
		t.Logf("checkpoint %d at %v: %s; requests %d (%s); faults %d, revocations %d, Redis restarts %d, pauses %d; goroutines %d (baseline %d), heap %.1f MiB (baseline %.1f)",
			n, time.Since(start).Round(time.Second), rep, s.requests.Load(), s.statusLine(), s.faults.Load(), s.revocations.Load(), s.restarts.Load(), s.pauses.Load(),
			g, baseG, mib(heap), mib(baseHeap))
		rep.mustHold(t, f.ledger, f.wire)
		s.checkAnswers()
		if g > baseG+goroutineSlack {
			t.Errorf("goroutines: %d after settling, baseline %d\n%s", g, baseG, goroutineDump())
		}
		if heap > baseHeap+heapBound {
			t.Errorf("heap after GC: %.1f MiB, baseline %.1f MiB: grew more than %.0f MiB", mib(heap), mib(baseHeap), mib(heapBound))
		}
		if t.Failed() {
			break
		}
		s.reset()
	}
	t.Logf("soak result: %v, seed %d: %s", time.Since(start).Round(time.Second), seed, totals)
}

const (
	goroutineSlack = 8
	heapBound      = 64 << 20
)

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// goroutinesAndHeap settles (closing idle connections) until the goroutine
// count is at most want (or 10 s passed; want < 0: until it stops
// falling), then returns it and the heap in use after a GC.
func goroutinesAndHeap(settle func(), want int) (int, uint64) {
	g := runtime.NumGoroutine()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		settle()
		time.Sleep(100 * time.Millisecond)
		n := runtime.NumGoroutine()
		if (want >= 0 && n <= want) || (want < 0 && n >= g) {
			g = n
			break
		}
		g = n
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return g, ms.HeapAlloc
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

type soak struct {
	f    *fleet
	t    *testing.T
	seed uint64
	ep   uint64

	requests, faults, revocations, restarts, pauses atomic.Int64

	lostInOutage int // excused losses, counted by check

	mu        sync.Mutex
	statuses  map[string]int
	delivered []string // codes some client received, for replays
	malformed []string
	kinds     map[string]string // code -> traffic kind
}

type soakTotals struct {
	requests, codes, answered, delivered, lost, undelivered, lostInOutage, resentDuringOutage, degradations int
	faults, revocations, restarts, pauses                                                                   int64
}

func (tt *soakTotals) add(rep ledgerReport, s *soak) {
	tt.codes += rep.codes
	tt.answered += rep.answered
	tt.delivered += rep.delivered
	tt.lost += len(rep.lost)
	tt.undelivered += rep.undelivered
	tt.lostInOutage = s.lostInOutage
	tt.resentDuringOutage += rep.resentExcused
	tt.requests = int(s.requests.Load())
	tt.faults, tt.revocations, tt.restarts, tt.pauses = s.faults.Load(), s.revocations.Load(), s.restarts.Load(), s.pauses.Load()
}

func (tt soakTotals) String() string {
	return fmt.Sprintf("requests=%d codes=%d answered_by_wechat=%d delivered=%d lost=%d undelivered_by_wechat=%d lost_in_redis_outage=%d resent_during_redis_outage=%d replica_fallbacks_to_local=%d faults=%d token_revocations=%d redis_restarts=%d redis_pauses=%d",
		tt.requests, tt.codes, tt.answered, tt.delivered, tt.lost, tt.undelivered, tt.lostInOutage, tt.resentDuringOutage, tt.degradations, tt.faults, tt.revocations, tt.restarts, tt.pauses)
}

// run sends traffic and injects faults for d.
func (s *soak) run(d time.Duration) {
	s.ep++
	s.mu.Lock()
	if s.statuses == nil {
		s.statuses, s.kinds = map[string]int{}, map[string]string{}
	}
	s.mu.Unlock()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 8 {
		rng := rand.New(rand.NewPCG(s.seed, s.ep<<8|uint64(w)))
		wg.Go(func() { s.worker(rng, w, end) })
	}
	stop := make(chan struct{})
	var inj sync.WaitGroup
	inj.Go(func() { s.injector(rand.New(rand.NewPCG(s.seed, s.ep<<8|0xff)), stop) })
	wg.Wait()
	close(stop)
	inj.Wait()
}

func (s *soak) record(code, kind string, r result) {
	s.requests.Add(1)
	k := strconv.Itoa(r.status)
	if r.err != nil {
		k = "no_answer"
	} else if r.errCode != "" {
		k += " " + r.errCode
	}
	s.mu.Lock()
	s.statuses[k]++
	if kind != "" {
		if _, ok := s.kinds[code]; !ok {
			s.kinds[code] = kind
		}
	}
	s.mu.Unlock()
}

// send posts code to replica i until the answer is final: a retry with the
// same code follows "retry" answers (504 upstream_timeout on the same
// replica, whose exchange is still running; transient refusals after a
// pause), at most 8 times.
func (s *soak) send(rng *rand.Rand, i int, code, kind string) result {
	var r result
	for try := 0; try < 8; try++ {
		r = s.f.exchange(i, code)
		s.record(code, kind, r)
		switch r.errCode {
		case "upstream_timeout":
			continue // same replica: it holds the running exchange
		case "wechat_busy", "token_unavailable", "store_unavailable", "upstream_error", "wechat_rate_limited":
			time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
			continue
		}
		return r
	}
	return r
}

func (s *soak) worker(rng *rand.Rand, w int, end time.Time) {
	f := s.f
	for time.Now().Before(end) {
		i := rng.IntN(len(f.members))
		switch p := rng.IntN(100); {
		case p < 50: // a new code
			code := f.mint()
			if r := s.send(rng, i, code, "new"); r.status == http.StatusOK {
				s.mu.Lock()
				s.delivered = append(s.delivered, code)
				s.mu.Unlock()
			}
		case p < 65: // the same code again, on another replica: a replay
			s.mu.Lock()
			var code string
			if len(s.delivered) > 0 {
				code = s.delivered[rng.IntN(len(s.delivered))]
			}
			s.mu.Unlock()
			if code != "" {
				s.send(rng, i+1+rng.IntN(len(f.members)-1), code, "")
			}
		case p < 75: // concurrent duplicates on two or three replicas
			code := f.mint()
			n := 2 + rng.IntN(2)
			var dup sync.WaitGroup
			for k := range n {
				r := rand.New(rand.NewPCG(rng.Uint64(), uint64(k)))
				dup.Go(func() { s.send(r, i+k, code, "dup") })
			}
			dup.Wait()
		case p < 88: // a well-formed code WeChat never issued
			code := fmt.Sprintf("bogus%016x", rng.Uint64())
			s.send(rng, i, code, "bogus")
		default: // a malformed code: refused before WeChat
			code := "bad code " + strconv.Itoa(rng.IntN(1000))
			if rng.IntN(2) == 0 {
				code = strings.Repeat("x", 129+rng.IntN(20))
			}
			r := f.exchange(i, code)
			s.record(code, "malformed", r)
			s.mu.Lock()
			s.malformed = append(s.malformed, code)
			s.mu.Unlock()
		}
	}
}

func (s *soak) injector(rng *rand.Rand, stop <-chan struct{}) {
	f := s.f
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(150+rng.IntN(500)) * time.Millisecond):
		}
		s.faults.Add(1)
		count := 1 + rng.IntN(4)
		var fl wxmock.Fault
		switch k := rng.IntN(14); k {
		case 0, 1:
			fl = wxmock.Fault{Kind: wxmock.FaultLatency, LatencyMS: 50 + rng.IntN(2500), Count: count}
		case 2:
			fl = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: -1, Consume: rng.IntN(3) == 0, Count: count}
		case 3:
			fl = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: 45011, Count: count}
		case 4:
			fl = wxmock.Fault{Kind: wxmock.FaultHTTPStatus, Status: 500 + rng.IntN(4), Consume: rng.IntN(2) == 0, Count: 1}
		case 5:
			fl = wxmock.Fault{Kind: wxmock.FaultDropAfterConsume, Count: 1}
		case 6:
			fl = wxmock.Fault{Kind: wxmock.FaultResetBeforeRead, Count: 1}
		case 7:
			fl = wxmock.Fault{Kind: wxmock.FaultErrcode, Errcode: 40001, Count: count}
		case 8:
			fl = wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: -1, Count: count}
		case 9:
			if _, err := f.emu.RevokeTokens(appID); err != nil {
				s.t.Error(err)
			}
			s.revocations.Add(1)
			continue
		case 10, 11:
			f.redis.stop()
			s.sleep(stop, time.Duration(50+rng.IntN(500))*time.Millisecond)
			f.redis.start()
			s.restarts.Add(1)
			continue
		default:
			f.redis.pause()
			s.sleep(stop, time.Duration(50+rng.IntN(600))*time.Millisecond)
			f.redis.resume()
			s.pauses.Add(1)
			continue
		}
		if fl.Endpoint == "" {
			fl.Endpoint = wxmock.EndpointPhone
		}
		if _, err := f.emu.AddFault(fl); err != nil {
			s.t.Error(err)
		}
	}
}

func (s *soak) sleep(stop <-chan struct{}, d time.Duration) {
	select {
	case <-stop:
	case <-time.After(d):
	}
}

func (s *soak) healRedis() {
	s.f.redis.resume()
	s.f.redis.start()
}

// check verifies this epoch's ledger against the emulator.
func (s *soak) check() ledgerReport {
	f := s.f
	return f.ledger.check(f.emu, f.wire, func(code string, rs []result) string {
		told := false
		for _, r := range rs {
			told = told || r.errCode == "outcome_unknown"
		}
		if !told {
			return "" // the client must have been told the truth
		}
		// The replica could not see the outcome it had recorded in
		// Redis (row "Redis down").
		if f.degraded(rs) {
			s.lostInOutage++
			return "Redis outage"
		}
		return ""
	}, func(code string, rs []result) string {
		if f.degraded(rs) {
			return "Redis outage"
		}
		return ""
	})
}

// checkAnswers checks every answer's class: no request without an answer,
// no 500, malformed codes never reach WeChat, and a code some client
// received is never answered invalid_code outside a Redis outage.
func (s *soak) checkAnswers() {
	f, t := s.f, s.t
	s.mu.Lock()
	statuses := s.statuses
	malformed := append([]string(nil), s.malformed...)
	s.mu.Unlock()
	for k, n := range statuses {
		switch {
		case k == "no_answer", strings.HasPrefix(k, "500"), strings.Contains(k, "internal_error"), strings.Contains(k, "code_already_used"):
			t.Errorf("%d answers %q", n, k)
		}
	}
	for _, code := range malformed {
		if n := len(f.wire.callsOf(code)); n != 0 {
			t.Errorf("a malformed code reached WeChat %d times", n)
		}
		for _, r := range f.ledger.results(code) {
			if r.errCode != "malformed_code" {
				t.Errorf("malformed code answered %v", r)
			}
		}
	}
	used := f.emu.Stats().Codes
	f.ledger.mu.Lock()
	defer f.ledger.mu.Unlock()
	for code, rs := range f.ledger.got {
		if !f.ledger.deliveredLocked(code) && used[code].Answered == 0 {
			continue
		}
		for _, r := range rs {
			if r.errCode == "invalid_code" && !f.degraded(rs) {
				t.Errorf("code %s… was answered by WeChat, then answered invalid_code outside a Redis outage: %v; wire %v", code[:8], rs, f.wire.callsOf(code))
			}
		}
	}
}

func (s *soak) statusLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.statuses))
	for k := range s.statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s:%d ", k, s.statuses[k])
	}
	return strings.TrimSpace(b.String())
}

// reset starts a new epoch's bookkeeping, so the test's own memory stays
// bounded.
func (s *soak) reset() {
	f := s.f
	f.ledger = newLedger()
	f.wire.mu.Lock()
	f.wire.calls = map[string][]wireCall{}
	f.wire.mu.Unlock()
	f.emu.ResetStats()
	for _, m := range f.members {
		m.log.reset()
	}
	s.mu.Lock()
	s.delivered, s.malformed = nil, nil
	s.statuses, s.kinds = map[string]int{}, map[string]string{}
	s.mu.Unlock()
}
