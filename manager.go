package wxphone

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Token fetch kinds and triggers, as reported in TokenFetchEvent.
const (
	KindStable      = "stable"
	KindStableForce = "stable_force"
	KindClassic     = "classic"

	TriggerBackground = "background"
	TriggerRequest    = "request"
	TriggerInvalidate = "invalidate"
)

// TokenManager keeps one app's access token fresh. It implements
// TokenSource and TokenInvalidator.
//
// Requests read the current token from memory without locking. A timer
// refreshes the token in the background when its remaining life reaches the
// margin, so in steady state no request waits for a fetch. Concurrent
// refreshes within a process collapse into one (singleflight), which runs
// under its own deadline so that a caller giving up does not fail the
// others. With a store that implements TokenLocker, one instance of a fleet
// refreshes while the others wait for the stored result.
//
// When WeChat rejects a token (40001, 40014, 42001) Invalidate drops it only
// if it is still current, fetches in normal mode, and forces a refresh only
// if WeChat keeps handing out the rejected token: at most one force refresh
// per ForceInterval and ForceDailyBudget per day, shared through the store.
// A refused fetch (45009, wrong secret, …) pauses fetching for a cool-down.
type TokenManager struct {
	appID  string
	secret Secret
	up     *upstream
	opts   TokenOptions
	locker TokenLocker
	log    *slog.Logger
	hooks  Hooks

	cur atomic.Pointer[held]
	sf  singleflight.Group

	ctx    context.Context // cancelled by Close; parent of every refresh
	cancel context.CancelFunc

	mu            sync.Mutex
	closed        bool
	timer         *time.Timer
	failures      int // consecutive background refresh failures
	cooldownUntil time.Time
	cooldownErr   error
	wg            sync.WaitGroup
}

// held is the current token and the instant it stops being usable.
type held struct {
	tok         Token
	usableUntil time.Time
}

// NewTokenManager returns a TokenManager for cfg.AppID. It fetches nothing
// until the first Token or Warm call. Close stops its background refresh.
func NewTokenManager(cfg Config) (*TokenManager, error) {
	up, log, err := cfg.newUpstream()
	if err != nil {
		return nil, err
	}
	if cfg.Secret == "" {
		return nil, errors.New("wxphone: Secret is required to fetch tokens")
	}
	opts, err := cfg.Token.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &TokenManager{
		appID: cfg.AppID, secret: cfg.Secret, up: up, opts: opts,
		log: log, hooks: cfg.Hooks, ctx: ctx, cancel: cancel,
	}
	m.locker, _ = opts.Store.(TokenLocker)
	return m, nil
}

// AppID returns the app this manager serves.
func (m *TokenManager) AppID() string { return m.appID }

// Token returns a token with at least the margin of life left, fetching one
// only when none is held (a cold start, or after an invalidation).
func (m *TokenManager) Token(ctx context.Context) (Token, error) {
	if h := m.cur.Load(); h != nil && time.Now().Before(h.usableUntil) {
		return h.tok, nil
	}
	return m.refresh(ctx, TriggerRequest, "")
}

// Warm fetches a token now if none is held, so the first request does not
// wait; call it at startup.
func (m *TokenManager) Warm(ctx context.Context) error {
	_, err := m.Token(ctx)
	return err
}

// Invalidate implements TokenInvalidator: rejected is dropped locally and
// from the store only if it is still the current token, and a token other
// than rejected is returned.
func (m *TokenManager) Invalidate(ctx context.Context, rejected string) (Token, error) {
	if h := m.cur.Load(); h != nil && h.tok.Value == rejected {
		m.cur.CompareAndSwap(h, nil)
	}
	if _, err := m.opts.Store.DeleteToken(ctx, m.appID, rejected); err != nil {
		m.log.Warn("token store: delete-if-equal failed", "err", err)
	}
	for range 2 { // a second round when we joined a refresh that began before the invalidation
		tok, err := m.refresh(ctx, TriggerInvalidate, rejected)
		if err != nil || tok.Value != rejected {
			return tok, err
		}
	}
	return Token{}, &TokenUnavailableError{AppID: m.appID, Reason: "WeChat keeps returning the rejected token", Err: ErrTokenInvalid}
}

// TokenStatus describes a manager's current token for readiness checks and
// metrics. It carries no token value.
type TokenStatus struct {
	Usable        bool          // a token with at least the margin left is held
	Fingerprint   string        // Fingerprint of the current token
	ExpiresAt     time.Time     // zero when none is held
	Remaining     time.Duration // life left; 0 when none is held
	CooldownUntil time.Time     // fetching paused until then (refused fetch)
	LastError     error         // the error that started the cool-down
}

// Status reports the current token's state.
func (m *TokenManager) Status() TokenStatus {
	now := time.Now()
	var s TokenStatus
	if h := m.cur.Load(); h != nil {
		s.Usable = now.Before(h.usableUntil)
		s.Fingerprint = Fingerprint(h.tok.Value)
		s.ExpiresAt = h.tok.ExpiresAt
		s.Remaining = max(h.tok.Remaining(now), 0)
	}
	m.mu.Lock()
	if now.Before(m.cooldownUntil) {
		s.CooldownUntil, s.LastError = m.cooldownUntil, m.cooldownErr
	}
	m.mu.Unlock()
	return s
}

// Close stops the background refresh, cancels refreshes in flight and
// waits for them. Token calls after Close return ErrClosed.
func (m *TokenManager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	if m.timer != nil {
		m.timer.Stop()
	}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	// No refresh runs any more and none can start: drop the token so that
	// Token returns ErrClosed as documented.
	m.cur.Store(nil)
	return nil
}

// refresh runs doRefresh once per process at a time; callers wait for the
// shared result or their own context.
func (m *TokenManager) refresh(ctx context.Context, trigger, rejected string) (Token, error) {
	ch := m.sf.DoChan("refresh", func() (any, error) {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return Token{}, ErrClosed
		}
		m.wg.Add(1)
		m.mu.Unlock()
		defer m.wg.Done()
		rctx, cancel := context.WithTimeout(m.ctx, m.opts.RefreshTimeout)
		defer cancel()
		return m.doRefresh(rctx, trigger, rejected)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

func (m *TokenManager) doRefresh(ctx context.Context, trigger, rejected string) (Token, error) {
	if err := m.inCooldown(); err != nil {
		return Token{}, err
	}
	// A background refresh replaces the token held now, which the store
	// most likely holds too and which is still usable (classic mode
	// refreshes ahead of the margin): only a different token counts as
	// someone else's refresh.
	var stale string
	if h := m.cur.Load(); h != nil && trigger == TriggerBackground {
		stale = h.tok.Value
	}
	// Someone (another instance, or a refresh we just missed) may already
	// have stored a usable token.
	tok, ok, storeDown := m.loadUsable(ctx, rejected, stale)
	if ok {
		m.adopt(tok, false)
		return tok, nil
	}
	if m.locker != nil && !storeDown {
		unlock, err := m.locker.LockRefresh(ctx, m.appID, m.opts.RefreshTimeout)
		switch {
		case err == nil:
			defer func() {
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				defer cancel()
				if err := unlock(uctx); err != nil {
					m.log.Warn("token lock: release failed", "err", err)
				}
			}()
			if tok, ok, storeDown = m.loadUsable(ctx, rejected, stale); ok {
				m.adopt(tok, false)
				return tok, nil
			}
		case errors.Is(err, ErrLockHeld):
			if tok, ok := m.waitForStore(ctx, rejected, stale); ok {
				m.adopt(tok, false)
				return tok, nil
			}
			m.log.Warn("token lock: holder did not store a token in time; fetching anyway (normal mode)")
		default:
			storeDown = true
			m.log.Warn("token lock unavailable; fetching without it (normal mode)", "err", err)
		}
	}

	if m.opts.Classic && rejected != "" {
		// A classic fetch invalidates every other holder's token: budget it.
		if err := m.reserveForce(ctx, storeDown); err != nil {
			return Token{}, err
		}
	}
	kind := KindStable
	if m.opts.Classic {
		kind = KindClassic
	}
	tok, err := m.fetch(ctx, kind, trigger)
	if err != nil {
		return Token{}, err
	}
	if rejected != "" && tok.Value == rejected && !m.opts.Classic {
		// Normal mode keeps handing out the token WeChat rejected: only a
		// force refresh replaces it.
		if err := m.reserveForce(ctx, storeDown); err != nil {
			return Token{}, err
		}
		if tok, err = m.fetch(ctx, KindStableForce, trigger); err != nil {
			return Token{}, err
		}
	}
	if !storeDown {
		stored, err := m.opts.Store.StoreToken(ctx, m.appID, tok)
		switch {
		case err != nil:
			m.log.Warn("token store: write failed; keeping the token locally", "err", err)
		case stored.Value != tok.Value && stored.Value != rejected && m.usable(stored, time.Now()):
			tok = stored // someone stored a newer one meanwhile
		}
	}
	m.adopt(tok, true)
	return tok, nil
}

// usable reports whether t has more than the margin left, the same
// boundary as a held token's usableUntil (now before ExpiresAt - Margin).
func (m *TokenManager) usable(t Token, now time.Time) bool {
	return t.Value != "" && t.Remaining(now) > m.opts.Margin
}

// loadUsable reads the shared store; a token equal to rejected or stale
// does not count. storeDown reports a store failure (then the caller must
// neither lock nor force).
func (m *TokenManager) loadUsable(ctx context.Context, rejected, stale string) (tok Token, ok, storeDown bool) {
	t, err := m.opts.Store.LoadToken(ctx, m.appID)
	switch {
	case err == nil:
		return t, t.Value != rejected && t.Value != stale && m.usable(t, time.Now()), false
	case errors.Is(err, ErrTokenNotFound):
		return Token{}, false, false
	default:
		m.log.Warn("token store: read failed; using the local copy and normal-mode fetches", "err", err)
		return Token{}, false, true
	}
}

// waitForStore polls the store while another instance refreshes, up to
// LockWait.
func (m *TokenManager) waitForStore(ctx context.Context, rejected, stale string) (Token, bool) {
	deadline := time.NewTimer(m.opts.LockWait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return Token{}, false
		case <-deadline.C:
			return Token{}, false
		case <-tick.C:
			tok, ok, down := m.loadUsable(ctx, rejected, stale)
			if ok {
				return tok, true
			}
			if down {
				return Token{}, false
			}
		}
	}
}

// reserveForce takes one unit of the force-refresh budget.
func (m *TokenManager) reserveForce(ctx context.Context, storeDown bool) error {
	if storeDown {
		return &TokenUnavailableError{AppID: m.appID, Reason: "token store unavailable; force refresh not attempted", Err: ErrForceRefreshLimited}
	}
	now := time.Now()
	ok, after, err := m.opts.Store.ReserveForceRefresh(ctx, m.appID, now, m.opts.ForceInterval, m.opts.ForceDailyBudget)
	if err != nil {
		return &TokenUnavailableError{AppID: m.appID, Reason: "cannot reserve a force refresh", Err: err}
	}
	if !ok {
		return &TokenUnavailableError{AppID: m.appID, Reason: "force-refresh budget exhausted", Until: now.Add(after), Err: ErrForceRefreshLimited}
	}
	return nil
}

// fetch asks WeChat, retrying what is safe to retry (errcode -1 and 45011,
// failures before anything was sent, and for idempotent normal-mode stable
// fetches any transport or HTTP failure) with capped, jittered backoff
// inside ctx's deadline.
func (m *TokenManager) fetch(ctx context.Context, kind, trigger string) (Token, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		var tok Token
		var err error
		switch kind {
		case KindClassic:
			tok, err = m.up.fetchClassic(ctx, m.secret)
		default:
			tok, err = m.up.fetchStable(ctx, m.secret, kind == KindStableForce)
		}
		if m.hooks.OnTokenFetch != nil {
			m.hooks.OnTokenFetch(TokenFetchEvent{AppID: m.appID, Kind: kind, Trigger: trigger, Duration: time.Since(start), Err: err})
		}
		if err == nil {
			m.log.Debug("token fetched", "kind", kind, "trigger", trigger, "token", tok)
			return tok, nil
		}
		if errors.Is(err, ErrTokenFetchRefused) {
			// The callers sharing this fetch learn the cool-down as the
			// later ones do (a Retry-After), with WeChat's error inside.
			until := m.startCooldown(err)
			return Token{}, &TokenUnavailableError{AppID: m.appID, Reason: "WeChat refused the token fetch; cooling down", Until: until, Err: err}
		}
		if !retryableFetch(kind, err) || attempt >= 6 {
			return Token{}, err
		}
		wait := backoff/2 + rand.N(backoff/2+1) // #nosec G404 -- jitter, not a secret
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return Token{}, err
		}
		m.log.Debug("token fetch failed; retrying", "kind", kind, "attempt", attempt, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Token{}, err
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func retryableFetch(kind string, err error) bool {
	if errors.Is(err, ErrSystemBusy) || errors.Is(err, ErrRateLimited) {
		return true
	}
	var te *TransportError
	if errors.As(err, &te) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		return !te.Sent || kind == KindStable
	}
	// A lost or garbled answer to an idempotent normal-mode fetch.
	return kind == KindStable && (errors.Is(err, ErrUpstream) || errors.Is(err, ErrMalformedResponse))
}

// startCooldown pauses fetching after a refused fetch and returns when
// the pause ends.
func (m *TokenManager) startCooldown(err error) time.Time {
	d := m.opts.RefusedCooldown
	if errors.Is(err, ErrQuotaExhausted) {
		d = m.opts.QuotaCooldown
	}
	until := time.Now().Add(d)
	m.mu.Lock()
	m.cooldownUntil, m.cooldownErr = until, err
	m.mu.Unlock()
	m.log.Error("WeChat refused the token fetch; pausing fetches", "cooldown", d, "err", err)
	return until
}

func (m *TokenManager) inCooldown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if time.Now().Before(m.cooldownUntil) {
		return &TokenUnavailableError{AppID: m.appID, Reason: "token fetch refused; cooling down", Until: m.cooldownUntil, Err: m.cooldownErr}
	}
	return nil
}

// adopt makes tok current unless a later token is already held, and
// schedules the next background refresh.
func (m *TokenManager) adopt(tok Token, fresh bool) {
	now := time.Now()
	h := &held{tok: tok, usableUntil: tok.ExpiresAt.Add(-m.opts.Margin)}
	if fresh && !h.usableUntil.After(now) {
		// WeChat handed out this token just now as its current one (its
		// one-second rounding, or a short expires_in): it is the freshest
		// there is. Use it briefly and ask again soon.
		h.usableUntil = now.Add(time.Second)
		if last := tok.ExpiresAt.Add(-time.Second); last.Before(h.usableUntil) {
			h.usableUntil = last
		}
	}
	for {
		old := m.cur.Load()
		if old != nil && old.tok.Value != tok.Value && now.Before(old.usableUntil) && !tok.ExpiresAt.After(old.tok.ExpiresAt) {
			h = old // keep the later token we already hold
			break
		}
		if m.cur.CompareAndSwap(old, h) {
			break
		}
	}
	m.mu.Lock()
	m.failures = 0
	m.mu.Unlock()
	m.schedule(h, h.usableUntil.Sub(now)-m.lead())
}

// lead is how long before the margin a background refresh starts.
func (m *TokenManager) lead() time.Duration {
	if !m.opts.Classic {
		return 0 // WeChat rotates a stable token only at the margin
	}
	return m.opts.RefreshLead/2 + rand.N(m.opts.RefreshLead/2+1) // #nosec G404 -- jitter, not a secret
}

// schedule arms the background refresh timer for the held token h.
func (m *TokenManager) schedule(h *held, d time.Duration) {
	d = max(d, time.Second/2)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if m.timer != nil {
		m.timer.Stop()
	}
	m.timer = time.AfterFunc(d, func() { m.background(h) })
}

// background is the refresh timer's callback, armed for the held token h.
func (m *TokenManager) background(h *held) {
	if cur := m.cur.Load(); cur != nil && cur != h && time.Now().Before(cur.usableUntil) {
		return // another token was adopted since this timer was armed
	}
	_, err := m.refresh(m.ctx, TriggerBackground, "")
	if err == nil || errors.Is(err, ErrClosed) || m.ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	m.failures++
	n := m.failures
	m.mu.Unlock()
	retry := min(time.Second<<min(n, 6), time.Minute)
	var tue *TokenUnavailableError
	if errors.As(err, &tue) && !tue.Until.IsZero() {
		retry = max(retry, time.Until(tue.Until))
	}
	m.log.Warn("background token refresh failed", "attempt", n, "retry_in", retry, "err", err)
	m.schedule(h, retry)
}
