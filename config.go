package wxphone

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/internal/valid"
)

// Config configures a Client or a TokenManager for one Mini Program.
type Config struct {
	// AppID is the Mini Program's appid. Required.
	AppID string
	// Secret is the AppSecret. Required unless TokenSource is set;
	// Code2Session always needs it.
	Secret Secret
	// BaseURL is WeChat's API base URL; default DefaultBaseURL. Plain
	// http is accepted only for loopback hosts (see ParseBaseURL).
	BaseURL string
	// HTTPClient sends every upstream request; default NewHTTPClient().
	HTTPClient *http.Client
	// H2C makes the default client (HTTPClient unset) speak HTTP/2 with
	// prior knowledge to a plain http:// BaseURL, i.e. a loopback
	// emulator serving h2c: every request in flight is then a stream on a
	// shared connection instead of a connection of its own. https is not
	// affected (HTTP/2 is negotiated there by ALPN). Ignored when
	// HTTPClient is set.
	H2C bool
	// Logger receives diagnostic lines (never a secret, token, code or full
	// phone number); default discards.
	Logger *slog.Logger
	// Hooks receive metrics events.
	Hooks Hooks
	// TracerProvider, when set, makes every call to WeChat (exchanges,
	// token fetches, management calls) an OpenTelemetry client span named
	// "WeChat <op>", a child of the span in the caller's context, with
	// the op, appid, HTTP status, errcode and rid as attributes (never a
	// code, token, secret, query or body), and sends the span's W3C
	// traceparent (and tracestate) header to WeChat. Nil: no tracing, no
	// cost.
	TracerProvider trace.TracerProvider
	// TokenSource supplies access tokens. Default: a TokenManager built
	// from this Config, owned and closed by the Client.
	TokenSource TokenSource
	// Token tunes the default TokenManager.
	Token TokenOptions
	// APISecurity, when set, sends every call that WeChat marks as
	// supporting it (getuserphonenumber) through WeChat's API security
	// mode: the request is encrypted and signed, and the answer must be
	// signed by one of the configured platform certificates and decrypt
	// (see package apisec). Load it with apisec.Load.
	APISecurity *apisec.Keys
	// NoOpenIDBinding stops PhoneRequest.OpenID from being sent to
	// WeChat (it is sent by default, so that WeChat checks that the code
	// belongs to that user).
	NoOpenIDBinding bool
}

// TokenOptions tune a TokenManager. Zero values take the defaults.
type TokenOptions struct {
	// Classic fetches tokens with GET /cgi-bin/token instead of POST
	// /cgi-bin/stable_token. Dangerous with more than one instance or more
	// than one program per appid: every classic fetch invalidates the
	// previous classic token five minutes later, so instances that refresh
	// independently kill each other's tokens (40001 storms). Use it only
	// when this process is the app's only token fetcher.
	Classic bool
	// Store shares tokens, and the force-refresh budget, between
	// instances. Default: a MemoryTokenStore (this process only). A store
	// that also implements TokenLocker coordinates refreshes fleet-wide.
	Store TokenStore
	// Margin is the "refresh from" point: the background refresh starts
	// when the held token has this much life left. Default and maximum for
	// stable tokens 300 s: WeChat hands out the next stable token only in
	// the last 300 s of the current one, so an earlier refresh would get
	// the same token back. Classic mode allows up to 1 h.
	Margin time.Duration
	// ServeMargin is the "serve until" point: the least life a token may
	// have left when a request uses it; default DefaultServeMargin (60 s), at least 10 s and
	// at most Margin. Between Margin and ServeMargin requests keep using
	// the held token without waiting, while the background refresh runs
	// and retries (capped, jittered backoff) until the token is replaced.
	// Only when no token with more than ServeMargin left is held does a
	// request wait for a fetch (a cold start, an invalidation, or a
	// refresh that failed all the way to ServeMargin).
	ServeMargin time.Duration
	// RefreshLead makes classic-mode refreshes start this much before the
	// margin is reached; default 60 s. Stable mode refreshes exactly at
	// the margin, when WeChat first hands out the next token.
	RefreshLead time.Duration
	// RefreshTimeout bounds one refresh, retries included, independently
	// of the callers waiting for it; default 15 s.
	RefreshTimeout time.Duration
	// ForceInterval is the least time between two force refreshes
	// (fleet-wide with a shared store); default and minimum 30 s.
	ForceInterval time.Duration
	// ForceDailyBudget is the number of force refreshes allowed per WeChat
	// day (UTC+8); default 10, at most 19 (WeChat allows 20).
	ForceDailyBudget int
	// RefusedCooldown is how long calls to WeChat pause after WeChat
	// refuses a token fetch (wrong secret, IP not whitelisted, …); default
	// 1 min. Only calls to WeChat pause: the held token is still served
	// and the store still read (a token another instance stored is
	// adopted), and the background refresher fetches again after it.
	RefusedCooldown time.Duration
	// QuotaCooldown is the same pause after 45009 to a normal fetch
	// (daily quota); default 10 min. A 45009 answered to a force refresh
	// stops only force refreshes, until midnight UTC+8.
	QuotaCooldown time.Duration
	// LockWait bounds how long an instance waits for another instance's
	// refresh (a TokenLocker store) before fetching itself (stable mode) or
	// failing with ErrRefreshLockNotHeld (classic mode); default 3 s.
	LockWait time.Duration
}

// DefaultServeMargin is TokenOptions.ServeMargin's default.
const DefaultServeMargin = 60 * time.Second

const (
	stableMargin   = 300 * time.Second
	minServeMargin = 10 * time.Second
	minForceGap    = 30 * time.Second
)

func (o TokenOptions) withDefaults() (TokenOptions, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.Margin, stableMargin)
	def(&o.ServeMargin, min(DefaultServeMargin, o.Margin))
	def(&o.RefreshLead, time.Minute)
	def(&o.RefreshTimeout, 15*time.Second)
	def(&o.ForceInterval, minForceGap)
	def(&o.RefusedCooldown, time.Minute)
	def(&o.QuotaCooldown, 10*time.Minute)
	def(&o.LockWait, 3*time.Second)
	if o.ForceDailyBudget == 0 {
		o.ForceDailyBudget = 10
	}
	switch {
	case o.Margin < 30*time.Second:
		return o, errors.New("wxphone: Token.Margin must be at least 30s")
	case !o.Classic && o.Margin > stableMargin:
		return o, errors.New("wxphone: Token.Margin cannot exceed 300s with stable tokens (WeChat rotates them only in their last 300s)")
	case o.Classic && o.Margin > time.Hour:
		return o, errors.New("wxphone: Token.Margin must be at most 1h")
	case o.ServeMargin < minServeMargin || o.ServeMargin > o.Margin:
		return o, errors.New("wxphone: Token.ServeMargin must be at least 10s and at most Token.Margin")
	case o.ForceInterval < minForceGap:
		return o, errors.New("wxphone: Token.ForceInterval must be at least 30s (WeChat's spacing)")
	case o.ForceDailyBudget < 1 || o.ForceDailyBudget > 19:
		return o, errors.New("wxphone: Token.ForceDailyBudget must be between 1 and 19 (WeChat allows 20 a day)")
	case o.RefreshTimeout < 0 || o.RefreshLead < 0 || o.RefusedCooldown < 0 || o.QuotaCooldown < 0 || o.LockWait < 0:
		return o, errors.New("wxphone: Token durations must not be negative")
	}
	if o.Store == nil {
		o.Store = NewMemoryTokenStore()
	}
	return o, nil
}

func validateAppID(id string) error {
	switch {
	case id == "":
		return errors.New("wxphone: AppID is required")
	case !valid.AppID(id):
		return errors.New("wxphone: AppID must be " + valid.AppIDRule)
	}
	return nil
}

// TokenConfig configures a TokenManager made on its own with
// NewTokenManager: what fetching tokens needs, and nothing else. Each field
// means what the Config field of the same name does; a Client builds its
// manager from its Config, on its own HTTP stack.
type TokenConfig struct {
	AppID          string
	Secret         Secret
	BaseURL        string
	HTTPClient     *http.Client
	H2C            bool
	Logger         *slog.Logger
	Hooks          Hooks
	TracerProvider trace.TracerProvider
	Token          TokenOptions
}

// tokenConfig is the part of c that its TokenManager uses.
func (c Config) tokenConfig() TokenConfig {
	return TokenConfig{
		AppID: c.AppID, Secret: c.Secret, BaseURL: c.BaseURL, HTTPClient: c.HTTPClient, H2C: c.H2C,
		Logger: c.Logger, Hooks: c.Hooks, TracerProvider: c.TracerProvider, Token: c.Token,
	}
}

// newUpstream validates the connection settings and builds the HTTP stack
// the calls to WeChat go through: one per Client, shared by its
// TokenManager.
func (c TokenConfig) newUpstream() (*upstream, *slog.Logger, error) {
	if err := validateAppID(c.AppID); err != nil {
		return nil, nil, err
	}
	base, err := ParseBaseURL(c.BaseURL)
	if err != nil {
		return nil, nil, err
	}
	hc := c.HTTPClient
	var direct *http.Transport
	if hc == nil {
		hc = NewHTTPClient()
		direct = hc.Transport.(*http.Transport)
		if c.H2C {
			direct.Protocols = new(http.Protocols)
			direct.Protocols.SetHTTP2(true)
			direct.Protocols.SetUnencryptedHTTP2(true)
		}
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	u := &upstream{hc: hc, base: *base, appID: c.AppID, hooks: c.Hooks, direct: direct, h2c: direct != nil && c.H2C}
	if direct != nil {
		u.postHeader, u.getHeader = newHeader(true), newHeader(false)
	}
	if c.TracerProvider != nil {
		u.tracer = c.TracerProvider.Tracer(tracerName)
	}
	log = log.With("appid", c.AppID)
	u.log = log
	return u, log, nil
}
