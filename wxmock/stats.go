package wxmock

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats is a snapshot of the emulator's counters, as served by
// GET /admin/stats.
type Stats struct {
	// Endpoints holds per-endpoint request counters.
	Endpoints EndpointsStats `json:"endpoints"`
	// Codes holds per-code counters for minted phone and login codes and
	// load-mode codes, keyed by code.
	Codes map[string]CodeStats `json:"codes"`
	// Apps holds per-app token counters, keyed by appid.
	Apps map[string]AppStats `json:"apps"`
	// RealtimeGrants counts exchanged codes minted with
	// PhoneGrant.Realtime (billed ¥0.04 by WeChat; the others ¥0.03).
	RealtimeGrants int64 `json:"realtime_grants"`
}

// EndpointsStats groups the counters of the WeChat endpoints.
type EndpointsStats struct {
	// Token is GET /cgi-bin/token.
	Token EndpointStats `json:"token"`
	// StableToken is POST /cgi-bin/stable_token.
	StableToken StableTokenStats `json:"stable_token"`
	// Phone is POST /wxa/business/getuserphonenumber.
	Phone EndpointStats `json:"phone"`
	// JSCode2Session is GET /sns/jscode2session.
	JSCode2Session EndpointStats `json:"jscode2session"`
	// APIDomainIP is GET /cgi-bin/get_api_domain_ip.
	APIDomainIP EndpointStats `json:"get_api_domain_ip"`
}

// EndpointStats counts the requests of one endpoint.
type EndpointStats struct {
	// Calls counts requests that reached the endpoint, faulted ones
	// included.
	Calls int64 `json:"calls"`
	// ByErrcode counts produced answers by errcode (0 = success). Errcode
	// faults count under their errcode; drop_after_consume counts the
	// answer that was produced and then not delivered.
	ByErrcode map[int]int64 `json:"by_errcode"`
	// ByHTTPStatus counts http_status fault answers by status.
	ByHTTPStatus map[int]int64 `json:"by_http_status"`
	// Dropped counts drop_after_consume faults applied.
	Dropped int64 `json:"dropped"`
	// Reset counts reset_before_read faults applied.
	Reset int64 `json:"reset"`
	// ResetAfterConsume counts reset_after_consume faults applied.
	ResetAfterConsume int64 `json:"reset_after_consume"`
	// Canceled counts requests whose client left during an injected
	// latency. They were processed all the same (WeChat processes what it
	// has received; reset_before_read excepted) and got no answer.
	Canceled int64 `json:"canceled"`
}

// StableTokenStats adds the mode split to [EndpointStats].
type StableTokenStats struct {
	EndpointStats
	// Normal counts requests whose body decoded with force_refresh false.
	Normal int64 `json:"normal"`
	// Force counts requests whose body decoded with force_refresh true.
	Force int64 `json:"force"`
}

// CodeStats counts the requests that carried one code.
type CodeStats struct {
	// Calls counts requests naming the code, faulted ones included
	// (reset_before_read excepted: the body is never read).
	Calls int64 `json:"calls"`
	// Answered counts successful answers produced for the code, including
	// answers that were never delivered (drop_after_consume,
	// reset_after_consume, a client gone during a latency).
	Answered int64 `json:"answered"`
	// Delivered counts successful answers written to a client that was
	// still connected.
	Delivered int64 `json:"delivered"`
}

// AppStats counts one app's token traffic. A fetch counts when the
// emulator processed it successfully, even if a fault then replaced the
// answer.
type AppStats struct {
	// TokenFetches counts successful /cgi-bin/token fetches.
	TokenFetches int64 `json:"token_fetches"`
	// StableNormal counts successful normal-mode stable_token calls.
	StableNormal int64 `json:"stable_normal"`
	// StableForce counts successful force-mode stable_token calls,
	// including those that were too soon to refresh.
	StableForce int64 `json:"stable_force"`
	// TokensMinted counts new tokens of both kinds.
	TokensMinted int64 `json:"tokens_minted"`
}

type endpointIdx uint8

const (
	epToken endpointIdx = iota
	epStable
	epPhone
	epSession
	epDomainIP
	numEndpoints
)

func (e endpointIdx) name() string {
	switch e {
	case epToken:
		return EndpointToken
	case epStable:
		return EndpointStableToken
	case epPhone:
		return EndpointPhone
	case epDomainIP:
		return EndpointAPIDomainIP
	default:
		return EndpointJSCode2Session
	}
}

type endpointCounters struct {
	calls, dropped, reset, resetAfter, canceled, normal, force int64
	byErrcode                                                  map[int]int64
	byStatus                                                   map[int]int64
}

// codeCounters is kept small: load tests may create one per request.
type codeCounters struct {
	calls, answered, delivered uint32
}

type statsStore struct {
	mu       sync.Mutex
	eps      [numEndpoints]endpointCounters
	codes    map[string]codeCounters
	realtime atomic.Int64 // realtime-verification codes exchanged
}

func (st *statsStore) init() {
	for i := range st.eps {
		st.eps[i] = endpointCounters{byErrcode: map[int]int64{}, byStatus: map[int]int64{}}
	}
	st.codes = map[string]codeCounters{}
}

// outcome describes how one request ended, for the statistics.
type outcome struct {
	produced   bool // the request was processed or a fault produced an answer
	errcode    int  // produced errcode (when produced and status == 0)
	status     int  // http_status fault status, 0 otherwise
	dropped    bool // drop_after_consume
	reset      bool // reset_before_read
	resetAfter bool // reset_after_consume
	canceled   bool // the client left during a latency
	delivered  bool // the answer was written to a connected client
	mode       int  // stable_token: 1 normal, 2 force, 0 undecoded
	code       string
	codeNew    bool // create the per-code record if missing
	answered   bool // a successful answer was produced for code
}

// track creates an empty per-code record for a freshly minted code.
func (st *statsStore) track(code string) {
	st.mu.Lock()
	if _, ok := st.codes[code]; !ok {
		st.codes[code] = codeCounters{}
	}
	st.mu.Unlock()
}

func (st *statsStore) record(ep endpointIdx, o *outcome) {
	st.mu.Lock()
	c := &st.eps[ep]
	c.calls++
	switch {
	case !o.produced:
	case o.status != 0:
		c.byStatus[o.status]++
	default:
		c.byErrcode[o.errcode]++
	}
	if o.reset {
		c.reset++
	}
	if o.resetAfter {
		c.resetAfter++
	}
	if o.dropped {
		c.dropped++
	}
	if o.canceled {
		c.canceled++
	}
	switch o.mode {
	case 1:
		c.normal++
	case 2:
		c.force++
	}
	if o.code != "" {
		cc, ok := st.codes[o.code]
		if ok || o.codeNew {
			cc.calls++
			if o.answered {
				cc.answered++
				if o.delivered {
					cc.delivered++
				}
			}
			st.codes[o.code] = cc
		}
	}
	st.mu.Unlock()
}

// undeliver takes back the delivery of an answer recorded as delivered
// whose write then failed.
func (st *statsStore) undeliver(o *outcome) {
	if o.code == "" || !o.answered {
		return
	}
	st.mu.Lock()
	if cc, ok := st.codes[o.code]; ok && cc.delivered > 0 {
		cc.delivered--
		st.codes[o.code] = cc
	}
	st.mu.Unlock()
}

// Stats returns a snapshot of all counters.
func (s *Server) Stats() Stats {
	out := Stats{Codes: map[string]CodeStats{}, Apps: map[string]AppStats{}, RealtimeGrants: s.stats.realtime.Load()}
	s.appMu.RLock()
	for id, a := range s.apps {
		out.Apps[id] = AppStats{
			TokenFetches: a.tokenFetches,
			StableNormal: a.stableNormal,
			StableForce:  a.stableForce,
			TokensMinted: a.tokensMinted,
		}
	}
	s.appMu.RUnlock()

	st := &s.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	snap := func(c *endpointCounters) EndpointStats {
		return EndpointStats{
			Calls:             c.calls,
			ByErrcode:         maps.Clone(c.byErrcode),
			ByHTTPStatus:      maps.Clone(c.byStatus),
			Dropped:           c.dropped,
			Reset:             c.reset,
			ResetAfterConsume: c.resetAfter,
			Canceled:          c.canceled,
		}
	}
	out.Endpoints.Token = snap(&st.eps[epToken])
	out.Endpoints.StableToken = StableTokenStats{
		EndpointStats: snap(&st.eps[epStable]),
		Normal:        st.eps[epStable].normal,
		Force:         st.eps[epStable].force,
	}
	out.Endpoints.Phone = snap(&st.eps[epPhone])
	out.Endpoints.JSCode2Session = snap(&st.eps[epSession])
	out.Endpoints.APIDomainIP = snap(&st.eps[epDomainIP])
	for k, v := range st.codes {
		out.Codes[k] = CodeStats{Calls: int64(v.calls), Answered: int64(v.answered), Delivered: int64(v.delivered)}
	}
	return out
}

// ResetStats zeroes every counter, forgets the per-code records and the
// call log, and zeroes the per-app token counters.
func (s *Server) ResetStats() {
	s.appMu.Lock()
	for _, a := range s.apps {
		a.tokenFetches, a.stableNormal, a.stableForce, a.tokensMinted = 0, 0, 0, 0
	}
	s.appMu.Unlock()
	s.stats.mu.Lock()
	s.stats.init()
	s.stats.mu.Unlock()
	s.calls.reset()
	s.stats.realtime.Store(0)
}
