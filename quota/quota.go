// Package quota watches the limits that stop wxphone when they run out and
// exports them as Prometheus metrics: WeChat's daily quotas of the APIs
// wxphone calls, read with a periodic POST /cgi-bin/openapi/quota/get per
// app (Prober), and the force-refresh budget of each app's token manager,
// read at scrape time from the token store the fleet shares
// (RegisterForceBudget).
//
// Metrics (appid and api are bounded: configured apps, the APIs below):
//
//	wxphone_quota_daily_limit{appid,api}               calls WeChat allows today
//	wxphone_quota_used{appid,api}                      calls made today (by every caller of the appid)
//	wxphone_quota_remaining{appid,api}                 calls left today
//	wxphone_quota_last_success_timestamp_seconds{appid,api}
//	wxphone_quota_probe_errors_total{appid,api}        failed probes
//	wxphone_force_refresh_remaining{appid}             force refreshes left today
//	wxphone_force_refresh_budget{appid}                force refreshes allowed per day
package quota

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/budget"
	"github.com/wxphone/wxphone/internal/wait"
)

// API is one WeChat API whose quota is probed.
type API struct {
	// Name is the metrics label, e.g. "getuserphonenumber".
	Name string
	// CGIPath is the path quota/get names, e.g. wxphone.CGIPathPhoneNumber.
	CGIPath string
}

// APIs are the APIs wxphone calls and probes: the exchange and the stable
// token fetch.
var APIs = []API{
	{Name: wxphone.OpPhoneNumber, CGIPath: wxphone.CGIPathPhoneNumber},
	{Name: wxphone.OpStableToken, CGIPath: wxphone.CGIPathStableToken},
}

// DefaultInterval is the default time between two probes of every app.
// Each probe costs one quota/get call per API, and quota/get has a daily
// quota of its own: 10 minutes is 288 calls a day per app and replica.
const DefaultInterval = 10 * time.Minute

// Client asks WeChat for an app's quota; *wxphone.Client implements it.
type Client interface {
	AppID() string
	APIQuota(ctx context.Context, cgiPath string) (wxphone.APIQuota, error)
}

// Config configures a Prober.
type Config struct {
	// Clients are the apps to probe. Required.
	Clients []Client
	// Registry receives the metrics. Required.
	Registry prometheus.Registerer
	// Interval is the time between two probes; default DefaultInterval,
	// at least one minute.
	Interval time.Duration
	// Timeout bounds one app's probe; default 15 s.
	Timeout time.Duration
	// Logger receives a warning per failed probe (never a token); default
	// discards.
	Logger *slog.Logger
}

// Result is one API's quota for one app, or why it could not be read.
type Result struct {
	AppID string
	API   API
	Quota wxphone.APIQuota
	Err   error
}

// ErrNoToken is the Result.Err of an app that was not probed because it
// holds no usable access token: a probe never causes a token fetch.
var ErrNoToken = errors.New("quota: the app holds no usable access token yet; not probed")

// retryNoToken is how soon Run probes again when an app had no token.
const retryNoToken = time.Minute

// hasToken reports whether c holds a usable token (a Client whose token
// source cannot tell is assumed to).
func hasToken(c Client) bool {
	h, ok := c.(interface{ TokenSource() wxphone.TokenSource })
	if !ok {
		return true
	}
	st, ok := h.TokenSource().(interface{ Status() wxphone.TokenStatus })
	return !ok || st.Status().Usable
}

// Prober probes every app's quotas periodically and exports them.
type Prober struct {
	clients  []Client
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger

	limit, used, remaining, lastOK *prometheus.GaugeVec
	errs                           *prometheus.CounterVec

	mu     sync.Mutex
	lastAt map[[2]string]time.Time // (appid, api) → last success
}

// NewProber validates cfg and registers the metrics.
func NewProber(cfg Config) (*Prober, error) {
	if len(cfg.Clients) == 0 {
		return nil, errors.New("quota: at least one client is required")
	}
	if cfg.Registry == nil {
		return nil, errors.New("quota: a Registry is required")
	}
	p := &Prober{clients: cfg.Clients, interval: cfg.Interval, timeout: cfg.Timeout, log: cfg.Logger, lastAt: map[[2]string]time.Time{}}
	switch {
	case p.interval == 0:
		p.interval = DefaultInterval
	case p.interval < time.Minute:
		return nil, errors.New("quota: Interval must be at least 1m (quota/get has a daily quota of its own)")
	}
	if p.timeout <= 0 {
		p.timeout = 15 * time.Second
	}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	labels := []string{"appid", "api"}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	p.limit = gauge("wxphone_quota_daily_limit", "Calls of the API WeChat allows the app today (UTC+8), from /cgi-bin/openapi/quota/get.")
	p.used = gauge("wxphone_quota_used", "Calls of the API the app made today (UTC+8), by every caller of the appid, from /cgi-bin/openapi/quota/get.")
	p.remaining = gauge("wxphone_quota_remaining", "Calls of the API the app has left today (UTC+8), from /cgi-bin/openapi/quota/get.")
	p.lastOK = gauge("wxphone_quota_last_success_timestamp_seconds", "Unix time of the last successful quota probe.")
	p.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxphone_quota_probe_errors_total", Help: "Quota probes (/cgi-bin/openapi/quota/get) that failed.",
	}, labels)
	for _, c := range []prometheus.Collector{p.limit, p.used, p.remaining, p.lastOK, p.errs} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, err
		}
	}
	for _, c := range p.clients {
		for _, a := range APIs {
			p.errs.WithLabelValues(c.AppID(), a.Name) // export zeros from the start
		}
	}
	return p, nil
}

// Interval returns the time between two probes.
func (p *Prober) Interval() time.Duration { return p.interval }

// Probe reads every app's quotas once, in parallel across apps, updates the
// metrics and returns the results in configuration order. An app without
// a usable token is skipped (ErrNoToken). A failed probe is counted and
// logged; the last values stay exported until WeChat's day ends, then
// they are withdrawn.
func (p *Prober) Probe(ctx context.Context) []Result {
	out := make([]Result, len(p.clients)*len(APIs))
	var wg sync.WaitGroup
	for i, c := range p.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, p.timeout)
			defer cancel()
			ready := hasToken(c)
			for j, a := range APIs {
				r := Result{AppID: c.AppID(), API: a, Err: ErrNoToken}
				if ready {
					r.Quota, r.Err = c.APIQuota(cctx, a.CGIPath)
				}
				out[i*len(APIs)+j] = r
			}
		}()
	}
	wg.Wait()
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range out {
		key := [2]string{r.AppID, r.API.Name}
		if errors.Is(r.Err, ErrNoToken) {
			continue
		}
		if r.Err != nil {
			p.errs.WithLabelValues(r.AppID, r.API.Name).Inc()
			p.log.Warn("quota probe failed", "appid", r.AppID, "api", r.API.Name, "err", r.Err)
			if last, ok := p.lastAt[key]; ok && budget.Day(last) != budget.Day(now) {
				// Yesterday's numbers would claim today's quota.
				for _, g := range []*prometheus.GaugeVec{p.limit, p.used, p.remaining} {
					g.DeleteLabelValues(r.AppID, r.API.Name)
				}
				delete(p.lastAt, key)
			}
			continue
		}
		p.lastAt[key] = now
		p.limit.WithLabelValues(r.AppID, r.API.Name).Set(float64(r.Quota.DailyLimit))
		p.used.WithLabelValues(r.AppID, r.API.Name).Set(float64(r.Quota.Used))
		p.remaining.WithLabelValues(r.AppID, r.API.Name).Set(float64(r.Quota.Remain))
		p.lastOK.WithLabelValues(r.AppID, r.API.Name).Set(float64(now.UnixMilli()) / 1000)
	}
	return out
}

// Run probes at once, then every Interval (jittered by up to a tenth, so
// that replicas started together spread their calls) until ctx ends; while
// an app holds no token yet (ErrNoToken), it probes again after a minute.
func (p *Prober) Run(ctx context.Context) {
	for {
		next := p.interval
		for _, r := range p.Probe(ctx) {
			if errors.Is(r.Err, ErrNoToken) {
				next = min(next, retryNoToken)
			}
		}
		d := next - next/20 + rand.N(next/10+1) // #nosec G404 -- jitter, not a secret
		if wait.Sleep(ctx, d) != nil {
			return
		}
	}
}

// ForceSource reports one app's force-refresh budget; *wxphone.TokenManager
// implements it.
type ForceSource interface {
	AppID() string
	ForceDailyBudget() int
	ForceRefreshRemaining(ctx context.Context) (int, error)
}

// forceCollector reads the force-refresh budget at scrape time.
type forceCollector struct {
	sources          []ForceSource
	timeout          time.Duration
	remaining, total *prometheus.Desc
}

// RegisterForceBudget exports wxphone_force_refresh_remaining and
// wxphone_force_refresh_budget for each source, read from its token store
// at scrape time (all sources within timeout together; default 1 s). A
// source whose store cannot answer is left out of that scrape.
func RegisterForceBudget(reg prometheus.Registerer, sources []ForceSource, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = time.Second
	}
	return reg.Register(&forceCollector{
		sources: sources, timeout: timeout,
		remaining: prometheus.NewDesc("wxphone_force_refresh_remaining",
			"Force refreshes of the access token the app may still make today (UTC+8), from the budget the fleet shares.", []string{"appid"}, nil),
		total: prometheus.NewDesc("wxphone_force_refresh_budget",
			"Force refreshes of the access token the app may make per day (UTC+8).", []string{"appid"}, nil),
	})
}

// Describe implements prometheus.Collector.
func (c *forceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.remaining
	ch <- c.total
}

// Collect implements prometheus.Collector.
func (c *forceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, s := range c.sources {
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(s.ForceDailyBudget()), s.AppID())
		if n, err := s.ForceRefreshRemaining(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, float64(n), s.AppID())
		}
	}
}
