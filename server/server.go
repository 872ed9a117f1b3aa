// Package server is wxphone's HTTP API over a Backend (a *service.Service):
//
//	POST /v1/phone-number            exchange a getPhoneNumber code (phone keys)
//	GET  /v1/access-token            the current access token (token keys)
//	POST /v1/access-token/invalidate report a rejected token, get a new one (token keys)
//	GET  /healthz                    process up
//	GET  /readyz                     every app has a usable token
//	GET  /metrics                    Prometheus metrics (on Config.AdminAddr instead, when set)
//
// Every answer is JSON. Errors have the shape
// {"error":{"code":"…","message":"…","errcode":N,"rid":"…","request_id":"…"}}
// with a stable code (see ErrorCode) and a status that says whose fault it
// is. docs/openapi.json is the full contract and docs/errors.md the error
// table.
//
// The server never writes a code, an access token (outside the token
// endpoints' bodies), an API key or a full phone number (outside the
// exchange's 200 body) into a log line, a header or an error body. Request
// bodies are decoded strictly: unknown fields are refused with 400, so that
// a misspelt "openid" cannot silently drop the binding the caller asked
// for, and so are a field given twice and a field name in another letter
// case. The edge refuses what two HTTP implementations could read
// differently: routing uses the path as sent (a percent-encoded slash or
// letter reaches no route), Run closes a connection that carries a request
// with both Transfer-Encoding and Content-Length, and an X-Request-Id
// outside [A-Za-z0-9._-]{1,64} is replaced.
package server

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/logbuf"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/service"
)

// Defaults and limits.
const (
	// DefaultAddr is ListenAndServe's default listen address.
	DefaultAddr = ":8080"
	// MaxBodyBytes bounds a request body (4 KiB).
	MaxBodyBytes = 4 << 10
	// DefaultRequestTimeout is the default per-request deadline.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultShutdownTimeout bounds a graceful shutdown: in-flight requests,
	// then detached exchanges and token refreshers.
	DefaultShutdownTimeout = 30 * time.Second
	// MinAPIKeyLen is the shortest API key accepted.
	MinAPIKeyLen = 16
	// MaxRequestIDLen bounds an incoming X-Request-Id; longer ones, and
	// ones with other characters than [A-Za-z0-9._-], are replaced by a
	// generated id.
	MaxRequestIDLen = 64
)

// Check is a named readiness check for /readyz (a shared store, say). It
// must return quickly; /readyz gives it a short deadline.
type Check struct {
	// Name is shown in the /readyz body.
	Name string
	// Check returns nil when ready; its error is logged, never shown.
	Check func(ctx context.Context) error
	// Degrades marks a check whose failure the instance survives (a
	// shared store with a local fallback): /readyz then still answers 200,
	// with status "degraded", so a load balancer keeps the replica while
	// the body and /metrics show the state.
	Degrades bool
}

// Backend is what the server serves: code exchanges and the central token
// endpoint's tokens, for the apps it names. *service.Service implements
// it; the server neither creates nor closes it.
type Backend interface {
	// Exchange exchanges a code, or replays the outcome of an earlier
	// exchange of it.
	Exchange(ctx context.Context, req service.Request) (*service.Result, error)
	// AccessToken returns appID's current access token ("" selects the
	// only app).
	AccessToken(ctx context.Context, appID string) (wxphone.Token, error)
	// InvalidateToken handles a report that WeChat rejected the token
	// rejected, and returns a usable one.
	InvalidateToken(ctx context.Context, appID, rejected string) (wxphone.Token, error)
	// Status reports every app's token state, for /readyz and /metrics.
	Status() []service.AppStatus
	// Apps returns the served appids, sorted.
	Apps() []string
}

// Config configures a Server.
type Config struct {
	// Service answers the requests. Required. Its owner closes it, after
	// Run returned.
	Service Backend
	// APIKeys may call POST /v1/phone-number. At least one of APIKeys and
	// TokenAPIKeys is required; every key is at least MinAPIKeyLen bytes.
	// New keeps only their digests and caller ids.
	APIKeys []wxphone.Secret
	// TokenAPIKeys may call the central token endpoints. A key may be in
	// both lists.
	TokenAPIKeys []wxphone.Secret
	// Limiter limits requests per API key. Default: an in-memory token
	// bucket of RateLimit, or no limit when RateLimit.Rate is 0.
	Limiter ratelimit.Limiter
	// RateLimit is the per-key limit of the default Limiter.
	RateLimit ratelimit.Limit
	// Metrics receives request metrics and is served at /metrics; default
	// a fresh set. Pass the one the Service and the clients' hooks use.
	Metrics *metrics.Metrics
	// Logger receives one line per request and operational messages;
	// default discards. See NewLogger.
	Logger *slog.Logger
	// RequestTimeout is the per-request deadline; default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds Run's graceful shutdown; default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// ReadyChecks are extra /readyz checks.
	ReadyChecks []Check
	// Fallback serves requests that match no API route (the demo page);
	// default a JSON 404. It calls WriteNotFound for the paths it does not
	// serve. A request whose path holds percent-encoding that is not
	// needed (URL.RawPath set, as in /%64emo) never reaches it: 404.
	Fallback http.Handler
	// Addr is the listen address of ListenAndServe; default DefaultAddr.
	Addr string
	// H2C makes Run accept unencrypted HTTP/2 with prior knowledge next
	// to HTTP/1.1 on the same listener, for a load balancer that speaks
	// h2c to its backends. Requests then share connections, so a request
	// in flight costs a stream instead of a connection.
	H2C bool
	// AdminAddr, when set, moves GET /metrics off the API: the API
	// answers it 404 like any unknown route, and ListenAndServe also
	// listens on AdminAddr for AdminHandler (see RunAdmin).
	AdminAddr string
	// AdminPprof serves net/http/pprof under /debug/pprof/ on the admin
	// address.
	AdminPprof bool
	// TracerProvider, when set, makes every API request but /healthz,
	// /readyz and /metrics an OpenTelemetry server span named
	// "<METHOD> <route>" that continues the caller's W3C traceparent and
	// carries the outcome (route, appid, error code, errcode, rid,
	// replayed), never a secret; nil: no tracing.
	TracerProvider trace.TracerProvider
}

// Format prints the Config as fmt would, for every verb, its API keys
// redacted: without it, a *Config inside another value printed with %s or
// %q would go through fmt's error path, which calls no method of the
// fields and so shows the keys.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c))
}

// Server is the HTTP API. Create it with New.
type Server struct {
	svc      Backend
	keys     []keyEntry
	limiter  ratelimit.Limiter
	metrics  *metrics.Metrics
	log      *slog.Logger
	timeout  time.Duration
	shutdown time.Duration
	checks   []Check
	fallback http.Handler
	addr     string
	h2c      bool
	routes   map[string][]*route

	adminAddr  string
	adminPprof bool
	adminH     http.Handler
	promH      http.Handler
	handler    http.Handler

	closing  atomic.Bool
	runOnce  sync.Once
	inFlight atomic.Int64 // requests being served, for wxphone_http_requests_in_flight
}

type keyEntry struct {
	digest [sha256.Size]byte
	caller string // CallerID of the key
	phone  bool
	token  bool
}

// Caller ids: see CallerID.
const (
	callerIDSalt       = "wxphone/caller-id/v1"
	callerIDIterations = 4096
)

// CallerID returns the caller id of an API key: the id under which the
// key's requests own their replays, share their rate-limit bucket and
// appear in logs (as key_id, its first 12 characters). It is
// PBKDF2-HMAC-SHA256 of the key itself (the key is the HMAC key) with a
// fixed wxphone salt, 4096 iterations, 16 bytes in hex.
//
// It depends on the API key alone, not on the data keyring, so that every
// replica computes the same id for a key whatever its keyring, before,
// during and after a data-key rotation (an id keyed by the first data key
// would differ between replicas mid-rotation, splitting the key's
// rate-limit bucket and answering a cross-replica retry 409
// code_already_used). A one-way function of a random key reveals nothing
// about it; the iterations make guessing a weak, human-chosen key
// expensive. Generate keys at random (openssl rand -hex 32).
func CallerID(apiKey string) (string, error) {
	b, err := pbkdf2.Key(sha256.New, apiKey, []byte(callerIDSalt), callerIDIterations, 16)
	if err != nil {
		return "", fmt.Errorf("caller id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil {
		return nil, errors.New("server: Config.Service is required")
	}
	if len(cfg.APIKeys) == 0 && len(cfg.TokenAPIKeys) == 0 {
		return nil, errors.New("server: at least one API key is required")
	}
	s := &Server{
		svc: cfg.Service, limiter: cfg.Limiter, metrics: cfg.Metrics, log: cfg.Logger,
		timeout: cfg.RequestTimeout, shutdown: cfg.ShutdownTimeout, checks: cfg.ReadyChecks,
		fallback: cfg.Fallback, addr: cfg.Addr, h2c: cfg.H2C,
		adminAddr: cfg.AdminAddr, adminPprof: cfg.AdminPprof,
	}
	add := func(list []wxphone.Secret, which string, phone bool) error {
		for i, k := range list {
			if len(k) < MinAPIKeyLen {
				return fmt.Errorf("server: %s key %d is shorter than %d bytes", which, i+1, MinAPIKeyLen)
			}
			d := sha256.Sum256([]byte(k))
			found := false
			for j := range s.keys {
				if s.keys[j].digest == d {
					found = true
					if phone {
						s.keys[j].phone = true
					} else {
						s.keys[j].token = true
					}
				}
			}
			if !found {
				caller, err := CallerID(k.Reveal())
				if err != nil {
					return fmt.Errorf("server: %s key %d: %w", which, i+1, err)
				}
				s.keys = append(s.keys, keyEntry{digest: d, caller: caller, phone: phone, token: !phone})
			}
		}
		return nil
	}
	if err := add(cfg.APIKeys, "API", true); err != nil {
		return nil, err
	}
	if err := add(cfg.TokenAPIKeys, "token API", false); err != nil {
		return nil, err
	}
	if s.limiter == nil && cfg.RateLimit.Rate > 0 {
		if cfg.RateLimit.Burst < 1 {
			return nil, errors.New("server: RateLimit.Burst must be at least 1")
		}
		s.limiter = ratelimit.NewMemory(cfg.RateLimit)
	}
	if cfg.RateLimit.Rate < 0 {
		return nil, errors.New("server: RateLimit.Rate must not be negative")
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case s.timeout == 0:
		s.timeout = DefaultRequestTimeout
	case s.timeout < 0:
		return nil, errors.New("server: RequestTimeout must be positive")
	}
	switch {
	case s.shutdown == 0:
		s.shutdown = DefaultShutdownTimeout
	case s.shutdown < 0:
		return nil, errors.New("server: ShutdownTimeout must be positive")
	}
	if s.addr == "" {
		s.addr = DefaultAddr
	}
	for _, c := range s.checks {
		if c.Name == "" || c.Check == nil {
			return nil, errors.New("server: a ReadyCheck needs a Name and a Check")
		}
	}
	if err := registerTokenCollector(s.metrics, s.svc); err != nil {
		return nil, err
	}
	if err := registerInFlight(s.metrics, &s.inFlight); err != nil {
		return nil, err
	}
	s.promH = promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})
	s.routes = s.routeTable()
	if s.adminAddr != "" {
		delete(s.routes, PathMetrics) // served by AdminHandler only
	}
	s.handler = s.middleware()
	if cfg.TracerProvider != nil {
		s.handler = s.traced(s.handler, cfg.TracerProvider)
	}
	s.adminH = s.newAdminHandler()
	return s, nil
}

// NewLogger returns the JSON logger the server expects: one object per line
// on w, at level. When w is a *logbuf.Writer (serve and the demo), lines
// below Warn are buffered in it and warnings and errors written at once.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	newHandler := func(w io.Writer) slog.Handler {
		return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	}
	if lw, ok := w.(*logbuf.Writer); ok {
		return slog.New(lw.Handler(newHandler))
	}
	return slog.New(newHandler(w))
}

// Handler returns the server's http.Handler (all routes and middleware).
func (s *Server) Handler() http.Handler { return s.handler }

// Metrics returns the metrics the server records into.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// ListenAndServe listens on Config.Addr and calls Run; with
// Config.AdminAddr it also serves AdminHandler there until Run returns.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if s.adminAddr != "" {
		return s.listenAndServeWithAdmin(ctx)
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("server: listen: %w", err)
	}
	return s.Run(ctx, ln)
}

// Run serves on ln until ctx is cancelled, then shuts down gracefully: it
// stops accepting connections and lets requests in flight finish (bounded
// by ShutdownTimeout). The Service is its owner's to close afterwards (its
// detached exchanges may still be running). Run may be called once.
//
// Run also refuses, and closes, an HTTP/1 connection that carries a request
// with both Transfer-Encoding and Content-Length; Handler served by another
// http.Server cannot see those headers (net/http drops Content-Length).
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	first := false
	s.runOnce.Do(func() { first = true })
	if !first {
		_ = ln.Close()
		return errors.New("server: Run called twice")
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      s.timeout + 5*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       connContext,
	}
	if s.h2c {
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(edgeListener{ln}) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "apps", s.svc.Apps())

	var err error
	select {
	case err = <-serveErr:
		// the listener failed
	case <-ctx.Done():
	}
	s.closing.Store(true)
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdown)
	defer cancel()
	if serr := hs.Shutdown(sctx); serr != nil {
		s.log.Warn("requests still in flight at the shutdown deadline; closing their connections", "err", serr)
		_ = hs.Close()
	}
	if err == nil {
		err = <-serveErr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.log.Info("stopped")
	return err
}
