package wxphone

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wxphone/wxphone/internal/budget"
	"github.com/wxphone/wxphone/internal/wait"
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
// Each held token has two instants: "refresh from" (expiry minus
// TokenOptions.Margin, when the background refresh starts; for stable
// tokens the moment WeChat first hands out the next one) and "serve until"
// (expiry minus TokenOptions.ServeMargin, the last moment a request uses
// it). Requests read the held token from memory without locking and never
// wait for a refresh while it is servable. The background refresher
// retries a failed refresh with capped, jittered backoff until the token is
// replaced, and keeps trying after every token is lost (revoked, fetches
// refused), with no request arriving, so that a replica recovers by itself.
// Concurrent refreshes within a process collapse into one (singleflight),
// which runs under its own deadline so that a caller giving up does not
// fail the others. With a store that implements TokenLocker, one instance
// of a fleet refreshes while the others wait for the stored result.
//
// When WeChat rejects a token (40001, 40014, 42001) Invalidate drops it only
// if it is still current, fetches in normal mode, and forces a refresh only
// if WeChat keeps handing out the rejected token: at most one force refresh
// per ForceInterval and ForceDailyBudget per day, shared through the store.
// A refused fetch (45009, wrong secret, IP not whitelisted, …) pauses calls
// to WeChat for a cool-down; during it the manager still serves the token
// it holds and adopts a newer one another instance stored.
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

	mu                sync.Mutex
	closed            bool
	timer             *time.Timer // the background refresher
	due               time.Time   // when timer fires; zero while not armed
	failures          int         // consecutive failed refreshes
	cooldownUntil     time.Time   // no call to WeChat until then (refused fetch)
	cooldownErr       error
	forceBlockedUntil time.Time // no force refresh until then (WeChat answered 45009 to one)
	forceBlockedErr   error
	wg                sync.WaitGroup
}

// held is the current token with its refresh and serve points.
type held struct {
	tok        Token
	refreshAt  time.Time // "refresh from": the background refresh starts
	serveUntil time.Time // requests use the token before this instant
}

// Background retry pacing: the n-th consecutive failure waits
// retryBase·2^(n-1), capped at retryCap, jittered to [d/2, d].
const (
	retryBase = time.Second
	retryCap  = 20 * time.Second
	// minArm is the shortest delay of the background refresher (a token
	// whose refresh point has passed is looked at again this soon).
	minArm = time.Second / 2
	// checkTimeout bounds the check of a reported token with WeChat.
	checkTimeout = 5 * time.Second
)

// NewTokenManager returns a TokenManager for cfg.AppID, on an HTTP stack of
// its own. It fetches nothing until the first Token or Warm call. Close
// stops its background refresh.
func NewTokenManager(cfg TokenConfig) (*TokenManager, error) {
	up, _, err := cfg.newUpstream()
	if err != nil {
		return nil, err
	}
	return newTokenManager(up, cfg)
}

// newTokenManager returns a TokenManager that calls WeChat through up.
func newTokenManager(up *upstream, cfg TokenConfig) (*TokenManager, error) {
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
		log: up.log, hooks: cfg.Hooks, ctx: ctx, cancel: cancel,
	}
	m.locker, _ = opts.Store.(TokenLocker)
	return m, nil
}

// AppID returns the app this manager serves.
func (m *TokenManager) AppID() string { return m.appID }

// Token returns the held token while it has more than ServeMargin of life
// left, without waiting, even while a refresh runs or retries. It fetches
// (and the caller waits) only when no such token is held: a cold start, an
// invalidation, or a refresh that kept failing until ServeMargin.
func (m *TokenManager) Token(ctx context.Context) (Token, error) {
	if h := m.cur.Load(); h != nil && time.Now().Before(h.serveUntil) {
		return h.tok, nil
	}
	return m.refresh(ctx, TriggerRequest, "", nil)
}

// Warm fetches a token now if none is held, so the first request does not
// wait; call it at startup. If the fetch fails, the background refresher
// keeps trying.
func (m *TokenManager) Warm(ctx context.Context) error {
	_, err := m.Token(ctx)
	return err
}

// Invalidate implements TokenInvalidator for a rejection WeChat itself
// answered (errcode 40001, 40014 or 42001 to a call made with rejected):
// rejected is dropped locally and from the store only if it is still the
// current token, and a token other than rejected is returned, forcing a
// refresh within the budget if WeChat keeps handing out rejected. When a
// servable token other than rejected is held, it is returned at once.
func (m *TokenManager) Invalidate(ctx context.Context, rejected string) (Token, error) {
	return m.invalidate(ctx, rejected, nil)
}

// InvalidateReported handles a rejection reported by a third party, such
// as a consumer of the central token endpoint, which must not be able to
// spend the force-refresh budget on a token WeChat still accepts. If
// rejected is not the current token, the current one is returned and
// nothing is asked. Otherwise WeChat is asked first (GET
// /cgi-bin/get_api_domain_ip with rejected, one call shared by concurrent
// reports):
//
//   - WeChat accepts the token: ErrTokenStillValid; nothing is dropped,
//     fetched or spent.
//   - WeChat rejects it (40001, 40014, 42001, 41001): as Invalidate.
//   - The check fails (timeout, -1, an unexpected answer): the token is
//     dropped and fetched again in normal mode, which replaces a token
//     WeChat superseded at no cost, but no force refresh is made; if
//     normal mode hands out the same token, the error is a
//     *TokenUnavailableError matching ErrTokenCheckFailed.
func (m *TokenManager) InvalidateReported(ctx context.Context, rejected string) (Token, error) {
	if h := m.cur.Load(); h != nil && h.tok.Value != rejected && time.Now().Before(h.serveUntil) {
		return h.tok, nil
	}
	err := m.check(ctx, rejected)
	switch {
	case err == nil:
		return Token{}, ErrTokenStillValid
	case errors.Is(err, ErrTokenInvalid):
		return m.invalidate(ctx, rejected, nil)
	case errors.Is(err, ErrClosed), ctx.Err() != nil:
		return Token{}, err
	}
	m.log.Warn("token check with WeChat inconclusive; invalidating without a force refresh", "err", err)
	return m.invalidate(ctx, rejected, err)
}

// check asks WeChat whether it accepts value; concurrent checks of one
// value share one call.
func (m *TokenManager) check(ctx context.Context, value string) error {
	ch := m.sf.DoChan("check\x00"+value, func() (any, error) {
		if !m.begin() {
			return nil, ErrClosed
		}
		defer m.wg.Done()
		cctx, cancel := context.WithTimeout(m.ctx, min(checkTimeout, m.opts.RefreshTimeout))
		defer cancel()
		return nil, m.up.checkToken(cctx, Secret(value))
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// invalidate drops rejected if it is current and returns another token.
// noForce, when set, forbids a force refresh (and a classic fetch) and is
// the reason reported.
func (m *TokenManager) invalidate(ctx context.Context, rejected string, noForce error) (Token, error) {
	h := m.cur.Load()
	if h != nil && h.tok.Value != rejected && time.Now().Before(h.serveUntil) {
		return h.tok, nil // already replaced
	}
	if h != nil && h.tok.Value == rejected {
		m.cur.CompareAndSwap(h, nil)
	}
	if _, err := m.opts.Store.DeleteToken(ctx, m.appID, rejected); err != nil {
		m.log.Warn("token store: delete-if-equal failed", "err", err)
	}
	for range 2 { // a second round when we joined a refresh that began before the invalidation
		tok, err := m.refresh(ctx, TriggerInvalidate, rejected, noForce)
		if err != nil || tok.Value != rejected {
			return tok, err
		}
	}
	return Token{}, &TokenUnavailableError{AppID: m.appID, Reason: "WeChat keeps returning the rejected token", Err: ErrTokenInvalid}
}

// TokenStatus describes a manager's current token for readiness checks and
// metrics. It carries no token value.
type TokenStatus struct {
	Usable        bool          // a token with more than ServeMargin left is held
	Fingerprint   string        // Fingerprint of the current token
	ExpiresAt     time.Time     // zero when none is held
	ServeUntil    time.Time     // when requests stop using it; zero when none is held
	Remaining     time.Duration // life left; 0 when none is held
	CooldownUntil time.Time     // calls to WeChat paused until then (refused fetch)
	LastError     error         // the error that started the cool-down
}

// Status reports the current token's state.
func (m *TokenManager) Status() TokenStatus {
	now := time.Now()
	var s TokenStatus
	if h := m.cur.Load(); h != nil {
		s.Usable = now.Before(h.serveUntil)
		s.Fingerprint = Fingerprint(h.tok.Value)
		s.ExpiresAt = h.tok.ExpiresAt
		s.ServeUntil = h.serveUntil
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

// begin registers work that Close waits for; false once closed.
func (m *TokenManager) begin() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// refresh runs doRefresh once per process at a time; callers wait for the
// shared result or their own context. A failed refresh arms the background
// refresher's retry, whatever triggered it.
func (m *TokenManager) refresh(ctx context.Context, trigger, rejected string, noForce error) (Token, error) {
	ch := m.sf.DoChan("refresh", func() (any, error) {
		if !m.begin() {
			return Token{}, ErrClosed
		}
		defer m.wg.Done()
		rctx, cancel := context.WithTimeout(m.ctx, m.opts.RefreshTimeout)
		defer cancel()
		tok, err := m.doRefresh(rctx, trigger, rejected, noForce)
		if err != nil && m.ctx.Err() == nil {
			m.retryLater(trigger, err)
		}
		return tok, err
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

func (m *TokenManager) doRefresh(ctx context.Context, trigger, rejected string, noForce error) (Token, error) {
	// A background refresh replaces the token held now, which the store
	// most likely holds too and which is still servable: only a token
	// that expires later counts as someone else's refresh.
	var stale *held
	if trigger == TriggerBackground {
		stale = m.cur.Load()
	}
	// Someone (another instance, or a refresh we just missed) may already
	// have stored a usable token. This read happens during a cool-down
	// too: a cool-down stops calls to WeChat, nothing else.
	tok, ok, storeDown := m.loadUsable(ctx, rejected, stale)
	if ok {
		m.adopt(tok, false)
		return tok, nil
	}
	if err := m.inCooldown(); err != nil {
		return Token{}, err
	}
	if m.locker != nil {
		switch {
		case storeDown && m.opts.Classic:
			return Token{}, m.noLock("the token store is unavailable", nil)
		case !storeDown:
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
				if m.opts.Classic {
					return Token{}, m.noLock("another instance holds it and stored no token in time", ErrLockHeld)
				}
				m.log.Warn("token lock: holder did not store a token in time; fetching in normal mode (harmless in parallel)")
			default:
				if m.opts.Classic {
					return Token{}, m.noLock("it cannot be taken", err)
				}
				storeDown = true
				m.log.Warn("token lock unavailable; fetching without it (normal mode)", "err", err)
			}
		}
	}

	if m.opts.Classic && rejected != "" {
		// A classic fetch invalidates every other holder's token: budget it.
		if noForce != nil {
			return Token{}, m.unconfirmed(noForce)
		}
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
		if noForce != nil {
			return Token{}, m.unconfirmed(noForce)
		}
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
		case stored.Value != tok.Value && stored.Value != rejected && m.servable(stored, time.Now()):
			tok = stored // someone stored a newer one meanwhile
		}
	}
	m.adopt(tok, true)
	return tok, nil
}

// noLock is the error of a classic-mode refresh that could not take the
// fleet's refresh lock.
func (m *TokenManager) noLock(why string, cause error) error {
	err := ErrRefreshLockNotHeld
	if cause != nil {
		err = fmt.Errorf("%w: %w", ErrRefreshLockNotHeld, cause)
	}
	m.log.Warn("classic mode: not fetching without the refresh lock", "why", why)
	return &TokenUnavailableError{AppID: m.appID, Reason: "classic mode fetches only under the fleet's refresh lock, and " + why, Until: time.Now().Add(m.opts.LockWait), Err: err}
}

// unconfirmed is the error of an invalidation that would need a force
// refresh while the token's rejection could not be checked with WeChat.
func (m *TokenManager) unconfirmed(checkErr error) error {
	return &TokenUnavailableError{AppID: m.appID, Reason: "WeChat still hands out the reported token and its rejection could not be confirmed; no force refresh attempted",
		Err: fmt.Errorf("%w: %w", ErrTokenCheckFailed, checkErr)}
}

// servable reports whether t has more than ServeMargin left at now, the
// same boundary as a held token's serveUntil.
func (m *TokenManager) servable(t Token, now time.Time) bool {
	return t.Value != "" && t.Remaining(now) > m.opts.ServeMargin
}

// loadUsable reads the shared store. A token equal to rejected does not
// count, nor, when stale is set (a background refresh of that held
// token), one that does not expire later than it. storeDown reports a store
// failure (then the caller must neither lock nor force).
func (m *TokenManager) loadUsable(ctx context.Context, rejected string, stale *held) (tok Token, ok, storeDown bool) {
	t, err := m.opts.Store.LoadToken(ctx, m.appID)
	switch {
	case err == nil:
		ok = t.Value != rejected && m.servable(t, time.Now())
		if stale != nil && (t.Value == stale.tok.Value || !t.ExpiresAt.After(stale.tok.ExpiresAt)) {
			ok = false
		}
		return t, ok, false
	case errors.Is(err, ErrTokenNotFound):
		return Token{}, false, false
	default:
		m.log.Warn("token store: read failed; using the local copy and normal-mode fetches", "err", err)
		return Token{}, false, true
	}
}

// waitForStore polls the store while another instance refreshes, up to
// LockWait.
func (m *TokenManager) waitForStore(ctx context.Context, rejected string, stale *held) (Token, bool) {
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

// reserveForce takes one unit of the force-refresh budget, under a fresh
// reservation id so that a store that retries the call internally spends
// it once.
func (m *TokenManager) reserveForce(ctx context.Context, storeDown bool) error {
	now := time.Now()
	m.mu.Lock()
	blocked, cause := m.forceBlockedUntil, m.forceBlockedErr
	m.mu.Unlock()
	if now.Before(blocked) {
		return &TokenUnavailableError{AppID: m.appID, Reason: "WeChat refused a force refresh today", Until: blocked, Err: fmt.Errorf("%w: %w", ErrForceRefreshLimited, cause)}
	}
	if storeDown {
		return &TokenUnavailableError{AppID: m.appID, Reason: "token store unavailable; force refresh not attempted", Err: ErrForceRefreshLimited}
	}
	ok, after, err := m.opts.Store.ReserveForceRefresh(ctx, m.appID, newReservationID(), now, m.opts.ForceInterval, m.opts.ForceDailyBudget)
	if err != nil {
		return &TokenUnavailableError{AppID: m.appID, Reason: "cannot reserve a force refresh", Err: err}
	}
	if !ok {
		return &TokenUnavailableError{AppID: m.appID, Reason: "force-refresh budget exhausted", Until: now.Add(after), Err: ErrForceRefreshLimited}
	}
	return nil
}

// newReservationID returns a random id for one force-refresh reservation.
func newReservationID() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
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
			if kind == KindStableForce && errors.Is(err, ErrQuotaExhausted) {
				// The day's force refreshes are spent; normal fetches are
				// not affected.
				until := m.blockForce(err)
				return Token{}, &TokenUnavailableError{AppID: m.appID, Reason: "WeChat refused the force refresh; no force refresh until midnight UTC+8", Until: until, Err: err}
			}
			// The callers sharing this fetch learn the cool-down as the
			// later ones do (a Retry-After), with WeChat's error inside.
			until := m.startCooldown(err)
			return Token{}, &TokenUnavailableError{AppID: m.appID, Reason: "WeChat refused the token fetch; cooling down", Until: until, Err: err}
		}
		if !retryableFetch(kind, err) || attempt >= 6 {
			return Token{}, err
		}
		pause := backoff/2 + rand.N(backoff/2+1) // #nosec G404 -- jitter, not a secret
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < pause {
			return Token{}, err
		}
		m.log.Debug("token fetch failed; retrying", "kind", kind, "attempt", attempt, "err", err)
		if wait.Sleep(ctx, pause) != nil {
			return Token{}, err
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
	m.log.Error("WeChat refused the token fetch; pausing calls to WeChat (the held token is still served, the shared store still read)", "cooldown", d, "err", err)
	return until
}

// blockForce stops force refreshes until WeChat's next midnight, after
// WeChat refused one with 45009, and returns that time.
func (m *TokenManager) blockForce(err error) time.Time {
	until := budget.NextMidnight(time.Now())
	m.mu.Lock()
	m.forceBlockedUntil, m.forceBlockedErr = until, err
	m.mu.Unlock()
	m.log.Error("WeChat refused a force refresh (45009); no force refresh until midnight UTC+8, normal fetches continue", "until", until, "err", err)
	return until
}

func (m *TokenManager) inCooldown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Now().Before(m.cooldownUntil) {
		return &TokenUnavailableError{AppID: m.appID, Reason: "token fetch refused; cooling down", Until: m.cooldownUntil, Err: m.cooldownErr}
	}
	return nil
}

// adopt makes tok current unless a later token is already held, and arms
// the background refresh for the token held afterwards.
func (m *TokenManager) adopt(tok Token, fresh bool) {
	now := time.Now()
	h := &held{tok: tok, refreshAt: tok.ExpiresAt.Add(-m.opts.Margin - m.lead()), serveUntil: tok.ExpiresAt.Add(-m.opts.ServeMargin)}
	if fresh && !h.serveUntil.After(now) {
		// WeChat handed out this token just now as its current one (a
		// short expires_in): it is the freshest there is. Use it briefly
		// and ask again soon.
		h.serveUntil = now.Add(time.Second)
		if last := tok.ExpiresAt.Add(-time.Second); last.Before(h.serveUntil) {
			h.serveUntil = last
		}
	}
	for {
		old := m.cur.Load()
		if old != nil && old.tok.Value != tok.Value && now.Before(old.serveUntil) && !tok.ExpiresAt.After(old.tok.ExpiresAt) {
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
	m.arm(h.refreshAt.Sub(now), false)
}

// lead is how long before the margin a background refresh starts.
func (m *TokenManager) lead() time.Duration {
	if !m.opts.Classic {
		return 0 // WeChat rotates a stable token only at the margin
	}
	return m.opts.RefreshLead/2 + rand.N(m.opts.RefreshLead/2+1) // #nosec G404 -- jitter, not a secret
}

// retryLater arms the background refresher after a failed refresh:
// capped, jittered backoff, and at the end of a cool-down if that comes
// sooner (the retries before it read the store only).
func (m *TokenManager) retryLater(trigger string, err error) {
	now := time.Now()
	m.mu.Lock()
	m.failures++
	n := m.failures
	d := min(retryBase<<min(n-1, 8), retryCap)
	d = d/2 + rand.N(d/2+1) // #nosec G404 -- jitter, not a secret
	if left := m.cooldownUntil.Sub(now); left > 0 && left < d {
		d = left + rand.N(time.Second) // #nosec G404 -- jitter, not a secret
	}
	m.mu.Unlock()
	servable := false
	if h := m.cur.Load(); h != nil && now.Before(h.serveUntil) {
		servable = true
	}
	m.log.Warn("token refresh failed; the background refresher retries", "trigger", trigger, "failures", n, "retry_in", d, "token_servable", servable, "err", err)
	m.arm(d, true)
}

// arm makes the background refresher run in d (at least minArm). With
// sooner it only ever brings the next run forward.
func (m *TokenManager) arm(d time.Duration, sooner bool) {
	d = max(d, minArm)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	at := time.Now().Add(d)
	if sooner && !m.due.IsZero() && !at.Before(m.due) {
		return
	}
	if m.timer != nil {
		m.timer.Stop()
	}
	m.due = at
	m.timer = time.AfterFunc(d, m.background)
}

// background is the refresher: it refreshes the held token once its
// refresh point has passed, or fetches one when none is held. A success
// arms the next run at the new token's refresh point, a failure the
// retry (see refresh); no request is needed for either.
func (m *TokenManager) background() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.due = time.Time{}
	m.mu.Unlock()
	if h := m.cur.Load(); h != nil {
		if d := time.Until(h.refreshAt); d > 0 {
			m.arm(d, true) // a newer token was adopted since this run was armed
			return
		}
	}
	_, _ = m.refresh(m.ctx, TriggerBackground, "", nil)
}
