// Package replica wires wxphone service replicas: one wxphone.Client per
// Mini Program, the exactly-once ledger, the exchange service and the HTTP
// server, with one cleanup path. Build wires a replica from its
// configuration, with state in this process or, when REDIS_URL is set,
// shared with every replica through Redis (tokens, the force-refresh
// budget, replays, in-flight dedupe and rate limits), each with a local
// fallback so that an outage of Redis degrades the fleet instead of
// stopping it. Wire builds one from a Spec (the demo's two backends).
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/ledger"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/quota"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/seal"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
)

// Options adjust a replica beyond its configuration.
type Options struct {
	// LogOut receives the JSON log lines; default io.Discard.
	LogOut io.Writer
	// HTTPClient sends the upstream requests; default wxphone.NewHTTPClient.
	HTTPClient *http.Client
	// Redis tunes the Redis client (timeouts); the zero value takes the
	// redis package's short defaults.
	Redis redis.Options
	// RedisPrefix namespaces every Redis key; default redis.DefaultPrefix.
	RedisPrefix string
	// Token tunes each app's token manager (the Store is set here).
	Token wxphone.TokenOptions
	// NoWarm disables the token warm-up at start (tests, tools).
	NoWarm bool
	// TracerProvider, when set, traces every API request and every call
	// to WeChat (see package tracing for one built from OTEL_*).
	TracerProvider trace.TracerProvider
}

// Spec is what Wire builds a replica from, whatever its source: a
// configuration (Build) or the demo.
type Spec struct {
	// Apps are the Mini Programs, one client each; Wire sets their Logger
	// and Hooks (the replica's metrics).
	Apps []wxphone.Config
	// Server configures the HTTP API; Wire sets its Service, Metrics and
	// Logger.
	Server server.Config
	// Ledger configures the exactly-once ledger (the shared store, its
	// fallback and hooks); Wire sets its Lease from ExchangeTimeout and its
	// Logger.
	Ledger ledger.Options
	// Keyring seals stored outcomes; nil: a random per-process key.
	Keyring *seal.Keyring
	// ExchangeTimeout bounds one upstream exchange; 0: the service's
	// default.
	ExchangeTimeout time.Duration
	// Logger receives the log lines; default discards.
	Logger *slog.Logger
	// Metrics is the replica's metric set; default a fresh one.
	Metrics *metrics.Metrics
	// NoWarm disables the token warm-up at start: Wire otherwise fetches
	// every app's token once in the background, so that /readyz turns
	// ready without traffic (a failure is left to each token manager's
	// own background refresher, which keeps retrying).
	NoWarm bool
}

// Replica is one wired instance.
type Replica struct {
	// Server serves the HTTP API.
	Server *server.Server
	// Service is the exchange service behind Server.
	Service *service.Service
	// Metrics is the replica's metric set.
	Metrics *metrics.Metrics

	clients  []*wxphone.Client
	shutdown time.Duration // the server's ShutdownTimeout
	probing  bool          // the quota prober runs

	// closers are closed in reverse order by Close: everything the
	// replica opened, each added as soon as it exists, so that a failed
	// Build or Wire and a shutdown take the same path.
	closers    []io.Closer
	closeOnce  sync.Once
	closeErr   error
	shutdownAt atomic.Int64 // unix ns: the deadline of the shutdown, once it began
}

// closer adapts a function to io.Closer.
type closer func() error

func (f closer) Close() error { return f() }

// Build wires a replica from cfg. With cfg.RedisURL set it connects lazily
// (a replica starts while Redis is down and recovers when it returns).
func Build(ctx context.Context, cfg *config.Config, o Options) (*Replica, error) {
	out := o.LogOut
	if out == nil {
		out = io.Discard
	}
	r := &Replica{Metrics: metrics.New()}
	if err := r.build(ctx, cfg, o, server.NewLogger(out, cfg.LogLevel)); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// build is Build's work; what it opened is in r's closers, whether it
// succeeds or not.
func (r *Replica) build(ctx context.Context, cfg *config.Config, o Options, logger *slog.Logger) error {
	limit := ratelimit.Limit{Rate: cfg.RateLimit, Burst: cfg.RateBurst}
	s := Spec{
		Server: server.Config{
			APIKeys: cfg.APIKeys, TokenAPIKeys: cfg.TokenAPIKeys, RateLimit: limit,
			RequestTimeout: cfg.RequestTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
			Addr: cfg.Addr, H2C: cfg.H2C, AdminAddr: cfg.AdminAddr, AdminPprof: cfg.AdminPprof, TracerProvider: o.TracerProvider,
		},
		Keyring: cfg.Keyring(), ExchangeTimeout: cfg.ExchangeTimeout,
		Logger: logger, Metrics: r.Metrics, NoWarm: o.NoWarm,
	}
	tokOpts := o.Token
	if tokOpts.ServeMargin == 0 {
		tokOpts.ServeMargin = cfg.TokenServeMargin
	}
	if cfg.RedisURL != "" {
		if err := r.shareThroughRedis(ctx, cfg, o, &s, &tokOpts, limit); err != nil {
			return err
		}
	} else if !cfg.DataKeySet {
		logger.Info("WXPHONE_DATA_KEY is not set: using a random per-process data key (replays survive only within this process)")
	}
	for _, a := range cfg.Apps {
		s.Apps = append(s.Apps, wxphone.Config{
			AppID: a.AppID, Secret: a.Secret, BaseURL: cfg.APIBase, HTTPClient: o.HTTPClient, H2C: cfg.UpstreamH2C,
			Token: tokOpts, TracerProvider: o.TracerProvider, APISecurity: a.APISecurity, NoOpenIDBinding: a.NoOpenIDBinding,
		})
	}
	if err := r.wire(ctx, s); err != nil {
		return err
	}
	return r.watchQuotas(cfg, logger)
}

// shareThroughRedis opens cfg.RedisURL and puts the fleet's shared state
// there: the token store (in tokOpts), the ledger's shared store, the rate
// limiter and a readiness check (in s).
func (r *Replica) shareThroughRedis(ctx context.Context, cfg *config.Config, o Options, s *Spec, tokOpts *wxphone.TokenOptions, limit ratelimit.Limit) error {
	ro := o.Redis
	ro.Lazy = true
	rc, err := redis.Open(ctx, cfg.RedisURL.Reveal(), ro)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	r.closers = append(r.closers, rc)
	log, m := s.Logger, r.Metrics
	so := redis.StoreOptions{Prefix: o.RedisPrefix, Logger: log}
	ts, err := redis.NewTokenStore(rc, cfg.Keyring(), so)
	if err != nil {
		return err
	}
	tokOpts.Store = &observedTokenStore{TokenStore: ts, m: m, log: log}
	rs, err := redis.NewReplayStore(rc, so)
	if err != nil {
		return err
	}
	s.Ledger = ledger.Options{
		Shared: rs, Fallback: true,
		OnFallback: func(string, error) { m.Fallbacks.WithLabelValues("replay").Inc() },
		OnState:    stateLogger(log, m, "replay"),
	}
	if limit.Rate > 0 {
		rl, err := redis.NewLimiter(rc, limit, so)
		if err != nil {
			return err
		}
		s.Server.Limiter = ratelimit.NewFallback(rl, ratelimit.NewMemory(limit), 0,
			func(error) { m.Fallbacks.WithLabelValues("ratelimit").Inc() },
			stateLogger(log, m, "ratelimit"))
	}
	s.Server.ReadyChecks = append(s.Server.ReadyChecks, server.Check{Name: "redis", Degrades: true, Check: func(ctx context.Context) error { return redis.Ping(ctx, rc) }})
	log.Info("fleet mode: tokens, replays and rate limits shared through Redis", "redis", redis.RedactURL(cfg.RedisURL.Reveal()))
	return nil
}

// Wire builds a replica from s. When it fails, what it built is closed.
func Wire(ctx context.Context, s Spec) (*Replica, error) {
	r := &Replica{Metrics: s.Metrics}
	if r.Metrics == nil {
		r.Metrics = metrics.New()
	}
	if err := r.wire(ctx, s); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// wire builds the clients, the ledger, the service and the server of s,
// adding each to the closers as soon as it exists.
func (r *Replica) wire(ctx context.Context, s Spec) error {
	log, m := s.Logger, r.Metrics
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.shutdown = s.Server.ShutdownTimeout; r.shutdown <= 0 {
		r.shutdown = server.DefaultShutdownTimeout
	}
	for _, a := range s.Apps {
		a.Logger, a.Hooks = log, m.Hooks()
		c, err := wxphone.New(a)
		if err != nil {
			return fmt.Errorf("app %s: %w", a.AppID, err)
		}
		r.closers = append(r.closers, c)
		r.clients = append(r.clients, c)
		if k := a.APISecurity; k != nil {
			log.Info("API security mode: exchanges are encrypted and signed, answers verified", "appid", a.AppID,
				"sym_sn", k.Sym.SN(), "app_key_sn", k.App.SN(), "platform_certs", len(k.Platform))
		}
	}
	lo := s.Ledger
	lo.Lease, lo.Logger = service.Lease(s.ExchangeTimeout), log
	led := ledger.New(lo)
	r.closers = append(r.closers, closer(func() error {
		lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		led.Close(lctx)
		return nil
	}))
	if lo.Shared != nil {
		// A new Redis (or one that lost its data) starts an epoch in
		// which claims wait a moment (see ledger.Options.Settle): wait
		// here, before serving. A Redis that is down does not delay
		// the start.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := led.Settle(sctx); err != nil {
			log.Warn("Redis unavailable at start: replays are shared once it is back", "err", err)
		}
		cancel()
	}
	svc, err := service.New(service.Config{
		Clients: r.clients, Keyring: s.Keyring, Ledger: led,
		ExchangeTimeout: s.ExchangeTimeout, Metrics: m, Logger: log,
	})
	if err != nil {
		return err
	}
	r.Service = svc
	r.closers = append(r.closers, closer(r.closeService))
	sc := s.Server
	sc.Service, sc.Metrics, sc.Logger = svc, m, log
	if r.Server, err = server.New(sc); err != nil {
		return err
	}
	if !s.NoWarm {
		r.background(func(ctx context.Context) {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := svc.Warm(wctx); err != nil && ctx.Err() == nil {
				log.Warn("token warm-up failed; each app's token manager keeps retrying in the background", "err", err)
			}
		})
	}
	return nil
}

// background runs fn in a goroutine until Close cancels its context and
// waits for it.
func (r *Replica) background(fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	r.closers = append(r.closers, closer(func() error { cancel(); <-done; return nil }))
}

// ListenAndServe serves the API on its address (and the admin address,
// when configured) until ctx ends, then shuts the replica down within the
// server's ShutdownTimeout: the server drains its requests, then Close
// lets the detached exchanges finish and stops the rest.
func (r *Replica) ListenAndServe(ctx context.Context) error {
	return r.serve(ctx, r.Server.ListenAndServe)
}

// Run is ListenAndServe on ln.
func (r *Replica) Run(ctx context.Context, ln net.Listener) error {
	return r.serve(ctx, func(ctx context.Context) error { return r.Server.Run(ctx, ln) })
}

func (r *Replica) serve(ctx context.Context, run func(context.Context) error) error {
	stop := context.AfterFunc(ctx, r.beginShutdown)
	err := run(ctx)
	stop()
	r.beginShutdown()
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return err
}

// beginShutdown starts the shutdown's budget (ShutdownTimeout from now)
// unless it started already.
func (r *Replica) beginShutdown() {
	r.shutdownAt.CompareAndSwap(0, time.Now().Add(r.shutdown).UnixNano())
}

// closeService closes the service (its detached exchanges finish, its
// clients and ledger close) within what is left of the shutdown's budget.
func (r *Replica) closeService() error {
	r.beginShutdown()
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, r.shutdownAt.Load()))
	defer cancel()
	return r.Service.Close(ctx)
}

// Close releases everything the replica opened, in reverse order: the
// background work, the service (its detached exchanges finish first, its
// clients and ledger close), the clients, the Redis client. Call it after
// the server's Run returned, or instead of running it; it is idempotent.
func (r *Replica) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		for i := len(r.closers) - 1; i >= 0; i-- {
			if err := r.closers[i].Close(); err != nil {
				errs = append(errs, err)
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// stateLogger logs and exports a component's switch to and from its local
// fallback.
func stateLogger(log *slog.Logger, m *metrics.Metrics, component string) func(bool) {
	return func(degraded bool) {
		if degraded {
			m.Degraded.WithLabelValues(component).Set(1)
			log.Warn("Redis unavailable: serving from the local fallback", "component", component)
			return
		}
		m.Degraded.WithLabelValues(component).Set(0)
		log.Info("Redis available again", "component", component)
	}
}

// observedTokenStore counts failures of the shared token store (the token
// manager itself fails open onto its local copy and normal-mode fetches).
type observedTokenStore struct {
	*redis.TokenStore
	m   *metrics.Metrics
	log *slog.Logger
}

func (s *observedTokenStore) observe(err error) {
	switch {
	case err == nil, errors.Is(err, wxphone.ErrTokenNotFound), errors.Is(err, wxphone.ErrLockHeld):
		s.m.Degraded.WithLabelValues("token").Set(0)
	default:
		s.m.Fallbacks.WithLabelValues("token").Inc()
		s.m.Degraded.WithLabelValues("token").Set(1)
	}
}

// LoadToken implements wxphone.TokenStore.
func (s *observedTokenStore) LoadToken(ctx context.Context, appID string) (wxphone.Token, error) {
	t, err := s.TokenStore.LoadToken(ctx, appID)
	s.observe(err)
	return t, err
}

// StoreToken implements wxphone.TokenStore.
func (s *observedTokenStore) StoreToken(ctx context.Context, appID string, tok wxphone.Token) (wxphone.Token, error) {
	t, err := s.TokenStore.StoreToken(ctx, appID, tok)
	s.observe(err)
	return t, err
}

// LockRefresh implements wxphone.TokenLocker.
func (s *observedTokenStore) LockRefresh(ctx context.Context, appID string, ttl time.Duration) (func(context.Context) error, error) {
	u, err := s.TokenStore.LockRefresh(ctx, appID, ttl)
	s.observe(err)
	return u, err
}

// watchQuotas exports each app's force-refresh budget and, unless
// cfg.QuotaInterval is 0, starts the quota prober (stopped by Close).
func (r *Replica) watchQuotas(cfg *config.Config, logger *slog.Logger) error {
	var sources []quota.ForceSource
	for _, c := range r.clients {
		if m, ok := c.TokenSource().(*wxphone.TokenManager); ok {
			sources = append(sources, m)
		}
	}
	if err := quota.RegisterForceBudget(r.Metrics.Registry, sources, time.Second); err != nil {
		return err
	}
	if cfg.QuotaInterval <= 0 {
		return nil
	}
	qc := make([]quota.Client, len(r.clients))
	for i, c := range r.clients {
		qc[i] = c
	}
	p, err := quota.NewProber(quota.Config{Clients: qc, Registry: r.Metrics.Registry, Interval: cfg.QuotaInterval, Logger: logger})
	if err != nil {
		return err
	}
	r.background(func(ctx context.Context) { p.Run(ctx) })
	r.probing = true
	return nil
}
