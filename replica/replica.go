// Package replica wires one wxphone service replica from its configuration:
// one wxphone.Client per Mini Program, the exchange service, and the HTTP
// server, with state in this process or, when REDIS_URL is set, shared with
// every replica through Redis (tokens, the force-refresh budget, replays,
// in-flight dedupe and rate limits), each with a local fallback so that an
// outage of Redis degrades the fleet instead of stopping it.
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/ledger"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/quota"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/replay"
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
	// NoWarm disables the server's background token warm-up (tests).
	NoWarm bool
	// TracerProvider, when set, traces every API request and every call
	// to WeChat (see package tracing for one built from OTEL_*).
	TracerProvider trace.TracerProvider
}

// Replica is one wired instance.
type Replica struct {
	// Server serves the HTTP API; its Run closes the service.
	Server *server.Server
	// Service is the exchange service behind Server.
	Service *service.Service
	// Metrics is the replica's metric set.
	Metrics *metrics.Metrics

	redis redis.Client

	stopProbe func() // stops the quota prober and waits for it; nil when off
}

// Build wires a replica. With cfg.RedisURL set it connects lazily (a replica
// starts while Redis is down and recovers when it returns).
func Build(ctx context.Context, cfg *config.Config, o Options) (*Replica, error) {
	out := o.LogOut
	if out == nil {
		out = io.Discard
	}
	logger := server.NewLogger(out, cfg.LogLevel)
	m := metrics.New()
	r := &Replica{Metrics: m}

	tokOpts := o.Token
	if tokOpts.ServeMargin == 0 {
		tokOpts.ServeMargin = cfg.TokenServeMargin
	}
	var replayStore replay.Store
	var onFallback func(string, error)
	var onState func(bool)
	var limiter ratelimit.Limiter
	limit := ratelimit.Limit{Rate: cfg.RateLimit, Burst: cfg.RateBurst}
	var checks []server.Check
	if cfg.RedisURL != "" {
		ro := o.Redis
		ro.Lazy = true
		rc, err := redis.Open(ctx, cfg.RedisURL.Reveal(), ro)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		r.redis = rc
		so := redis.StoreOptions{Prefix: o.RedisPrefix, Logger: logger}
		ts, err := redis.NewTokenStore(rc, cfg.Keyring(), so)
		if err != nil {
			_ = r.close()
			return nil, err
		}
		tokOpts.Store = &observedTokenStore{TokenStore: ts, m: m, log: logger}
		rs, err := redis.NewReplayStore(rc, so)
		if err != nil {
			_ = r.close()
			return nil, err
		}
		replayStore = rs
		onFallback = func(string, error) { m.Fallbacks.WithLabelValues("replay").Inc() }
		onState = stateLogger(logger, m, "replay")
		if limit.Rate > 0 {
			rl, err := redis.NewLimiter(rc, limit, so)
			if err != nil {
				_ = r.close()
				return nil, err
			}
			limiter = ratelimit.NewFallback(rl, ratelimit.NewMemory(limit), 0,
				func(error) { m.Fallbacks.WithLabelValues("ratelimit").Inc() },
				stateLogger(logger, m, "ratelimit"))
		}
		checks = append(checks, server.Check{Name: "redis", Degrades: true, Check: func(ctx context.Context) error { return redis.Ping(ctx, rc) }})
		logger.Info("fleet mode: tokens, replays and rate limits shared through Redis", "redis", redis.RedactURL(cfg.RedisURL.Reveal()))
	} else if !cfg.DataKeySet {
		logger.Info("WXPHONE_DATA_KEY is not set: using a random per-process data key (replays survive only within this process)")
	}

	var clients []*wxphone.Client
	for _, a := range cfg.Apps {
		c, err := wxphone.New(wxphone.Config{
			AppID: a.AppID, Secret: a.Secret, BaseURL: cfg.APIBase, HTTPClient: o.HTTPClient, H2C: cfg.UpstreamH2C,
			Logger: logger, Hooks: m.Hooks(), Token: tokOpts, TracerProvider: o.TracerProvider,
			APISecurity: a.APISecurity, NoOpenIDBinding: a.NoOpenIDBinding,
		})
		if err != nil {
			for _, c := range clients {
				_ = c.Close()
			}
			_ = r.close()
			return nil, fmt.Errorf("app %s: %w", a.AppID, err)
		}
		clients = append(clients, c)
		if a.APISecurity != nil {
			logger.Info("API security mode: exchanges are encrypted and signed, answers verified", "appid", a.AppID,
				"sym_sn", a.APISecurity.Sym.SN(), "app_key_sn", a.APISecurity.App.SN(), "platform_certs", len(a.APISecurity.Platform))
		}
	}
	timeout := cfg.ExchangeTimeout
	if timeout <= 0 {
		timeout = service.DefaultExchangeTimeout
	}
	led := ledger.New(ledger.Options{
		Shared: replayStore, Fallback: true, Lease: timeout + service.LeaseMargin,
		Logger: logger, OnFallback: onFallback, OnState: onState,
	})
	if replayStore != nil {
		// A new Redis (or one that lost its data) starts an epoch in
		// which claims wait a moment (see ledger.Options.Settle): wait
		// here, before serving. A Redis that is down does not delay
		// the start.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := led.Settle(sctx); err != nil {
			logger.Warn("Redis unavailable at start: replays are shared once it is back", "err", err)
		}
		cancel()
	}
	svc, err := service.New(service.Config{
		Clients: clients, Keyring: cfg.Keyring(), Ledger: led,
		ExchangeTimeout: timeout, Metrics: m, Logger: logger,
	})
	if err != nil {
		for _, c := range clients {
			_ = c.Close()
		}
		led.Close(ctx)
		_ = r.close()
		return nil, err
	}
	srv, err := server.New(server.Config{
		Service: svc, APIKeys: cfg.APIKeys, TokenAPIKeys: cfg.TokenAPIKeys,
		Limiter: limiter, RateLimit: limit,
		Metrics: m, Logger: logger, RequestTimeout: cfg.RequestTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		Addr: cfg.Addr, ReadyChecks: checks, NoWarm: o.NoWarm, H2C: cfg.H2C,
		AdminAddr: cfg.AdminAddr, AdminPprof: cfg.AdminPprof, TracerProvider: o.TracerProvider,
	})
	if err != nil {
		_ = svc.Close(context.Background())
		_ = r.close()
		return nil, err
	}
	r.Server, r.Service = srv, svc
	if err := r.watchQuotas(cfg, clients, logger); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// Close releases what Build opened beyond the server (the Redis client).
// Call it after the server's Run returned, or instead of running it.
func (r *Replica) Close() error {
	if r.stopProbe != nil {
		r.stopProbe()
		r.stopProbe = nil
	}
	if r.Service != nil && r.Server != nil {
		// Idempotent: Run already closed it when the server ran.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.Service.Close(ctx)
		cancel()
	}
	return r.close()
}

func (r *Replica) close() error {
	if r.redis != nil {
		return r.redis.Close()
	}
	return nil
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
func (r *Replica) watchQuotas(cfg *config.Config, clients []*wxphone.Client, logger *slog.Logger) error {
	var sources []quota.ForceSource
	for _, c := range clients {
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
	qc := make([]quota.Client, len(clients))
	for i, c := range clients {
		qc[i] = c
	}
	p, err := quota.NewProber(quota.Config{Clients: qc, Registry: r.Metrics.Registry, Interval: cfg.QuotaInterval, Logger: logger})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	r.stopProbe = func() { cancel(); <-done }
	return nil
}
