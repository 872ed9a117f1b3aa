// Package service is wxphone's exchange service without its transport: it
// holds one wxphone.Client per Mini Program and answers exchange requests
// with replay protection. The first request for a code claims it in the
// replay store and calls WeChat; duplicates (concurrent or later, within the
// code's five-minute life, from any replica sharing the store) wait for and
// receive the same sealed outcome, and WeChat sees the code once.
//
// The upstream call runs detached from the caller, bounded by
// ExchangeTimeout: a caller that gives up (or whose connection drops) does
// not lose the answer, which its retry then receives.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/gopool"
	"github.com/wxphone/wxphone/ledger"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/replay"
	"github.com/wxphone/wxphone/seal"
)

// Service errors, in addition to the wxphone package's.
var (
	// ErrAppRequired: several apps are configured and the request named
	// none.
	ErrAppRequired = errors.New("service: appid is required when several apps are configured")
	// ErrUnknownApp: the request named an appid that is not configured.
	ErrUnknownApp = errors.New("service: unknown appid")
	// ErrForeignReplay: the code was already claimed by another caller
	// (another API key, appid or openid); its outcome is not disclosed.
	ErrForeignReplay = errors.New("service: code already used by another caller")
	// ErrInFlight: the same code is being exchanged by an earlier request
	// that has not finished within this request's deadline; retrying with
	// the same code receives that exchange's outcome.
	ErrInFlight = errors.New("service: the same code is still being exchanged; retry with the same code")
	// ErrUnresolved: this replica does not know the code's outcome and
	// cannot read the shared store, where another replica may hold it
	// (an exchange made during an outage ended without a number, or the
	// code is claimed on a replica whose outcome it cannot see). This
	// request sent nothing more; retrying with the same code once the
	// store is back receives the outcome. Matches ErrStore.
	ErrUnresolved = fmt.Errorf("%w: the code's outcome may be held by another replica; retry with the same code", ErrStore)
	// ErrStore: the replay store failed, so the code was not sent.
	ErrStore = errors.New("service: replay store unavailable")
)

// MaxReplayTTL is the longest a replay record lives: a code's own life.
const MaxReplayTTL = 5 * time.Minute

// DefaultExchangeTimeout bounds one upstream exchange unless
// Config.ExchangeTimeout says otherwise.
const DefaultExchangeTimeout = 15 * time.Second

// LeaseMargin is how much longer than the exchange timeout a claim lives
// before other replicas consider its claimant dead.
const LeaseMargin = 5 * time.Second

// Lease is the claim lease of a ledger serving a Service whose
// ExchangeTimeout is exchangeTimeout (0: DefaultExchangeTimeout): the
// timeout plus LeaseMargin. A Service builds its default ledger with it.
func Lease(exchangeTimeout time.Duration) time.Duration {
	if exchangeTimeout <= 0 {
		exchangeTimeout = DefaultExchangeTimeout
	}
	return exchangeTimeout + LeaseMargin
}

// Config configures a Service.
type Config struct {
	// Clients are the Mini Programs served, one per appid. The Service
	// closes them in Close.
	Clients []*wxphone.Client
	// Keyring seals stored outcomes and derives store keys; default a
	// random per-process key (replays then work within this process only).
	Keyring *seal.Keyring
	// Ledger owns the exactly-once state (see package ledger); the
	// Service closes it in Close. Default: a ledger over Replay (nil:
	// this process only) that refuses codes while Replay fails. Its lease
	// must exceed ExchangeTimeout.
	Ledger *ledger.Ledger
	// Replay is the shared store of the default Ledger; ignored when
	// Ledger is set.
	Replay replay.Store
	// ExchangeTimeout bounds one upstream exchange, detached from the
	// caller; default DefaultExchangeTimeout.
	ExchangeTimeout time.Duration
	// ReplayTTL is how long outcomes are kept; default and maximum 5 min.
	ReplayTTL time.Duration
	// Metrics receives exchange metrics; default a fresh set.
	Metrics *metrics.Metrics
	// Logger receives warnings (never a code, token or full number);
	// default discards.
	Logger *slog.Logger
}

// Service answers exchange requests. It is safe for concurrent use.
type Service struct {
	apps     map[string]*wxphone.Client
	appIDs   []string
	keyring  *seal.Keyring
	ledger   *ledger.Ledger
	timeout  time.Duration
	metrics  *metrics.Metrics
	log      *slog.Logger
	inflight sync.WaitGroup
	workers  *gopool.Pool // runs detached exchanges (see run)

	owners  sync.Map     // ownerKey → owner index (no openid), see owner
	ownersN atomic.Int64 // entries stored in owners, bounded by maxOwnerCache

	mu      sync.Mutex
	closing bool
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if len(cfg.Clients) == 0 {
		return nil, errors.New("service: at least one app is required")
	}
	s := &Service{
		apps: make(map[string]*wxphone.Client), keyring: cfg.Keyring, ledger: cfg.Ledger,
		timeout: cfg.ExchangeTimeout, metrics: cfg.Metrics, log: cfg.Logger,
		workers: gopool.New(maxIdleWorkers, time.Second),
	}
	for _, c := range cfg.Clients {
		if c == nil {
			return nil, errors.New("service: nil client")
		}
		if _, dup := s.apps[c.AppID()]; dup {
			return nil, fmt.Errorf("service: appid %s configured twice", c.AppID())
		}
		s.apps[c.AppID()] = c
		s.appIDs = append(s.appIDs, c.AppID())
	}
	sort.Strings(s.appIDs)
	if s.keyring == nil {
		s.keyring = seal.NewRandomKeyring()
	}
	if s.timeout == 0 {
		s.timeout = DefaultExchangeTimeout
	}
	if s.timeout < 0 {
		return nil, errors.New("service: ExchangeTimeout must be positive")
	}
	ttl := cfg.ReplayTTL
	switch {
	case ttl == 0:
		ttl = MaxReplayTTL
	case ttl < 0 || ttl > MaxReplayTTL:
		return nil, errors.New("service: ReplayTTL must be between 0 and 5m")
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.ledger == nil {
		s.ledger = ledger.New(ledger.Options{Shared: cfg.Replay, TTL: ttl, Lease: Lease(s.timeout), Logger: s.log})
	} else if s.ledger.Lease() <= s.timeout {
		return nil, errors.New("service: the ledger's lease must exceed ExchangeTimeout")
	}
	return s, nil
}

// Apps returns the configured appids, sorted.
func (s *Service) Apps() []string { return append([]string(nil), s.appIDs...) }

// Client returns the client of appid ("" selects the only app).
func (s *Service) Client(appID string) (*wxphone.Client, error) {
	if appID == "" {
		if len(s.appIDs) != 1 {
			return nil, ErrAppRequired
		}
		appID = s.appIDs[0]
	}
	c, ok := s.apps[appID]
	if !ok {
		return nil, ErrUnknownApp
	}
	return c, nil
}

// Request is one exchange request.
type Request struct {
	// AppID selects the Mini Program; optional when only one is served.
	AppID string
	// Code is the getPhoneNumber code; it never prints.
	Code wxphone.Secret
	// OpenID optionally binds the exchange to the caller's user: a replay
	// must carry the same one.
	OpenID string
	// Caller identifies the API key that made the request (a stable
	// name or keyed hash, never the key itself); replays are served only
	// to the same caller.
	Caller string
	// Kind optionally says which button produced the code: KindQuick
	// (getPhoneNumber, ¥0.03 per grant) or KindRealtime
	// (getRealtimePhoneNumber, ¥0.04). Both are exchanged the same way;
	// the kind only labels the grants metric. "" counts as unspecified.
	Kind string
}

// Format prints the Request with its code redacted, for every verb, as fmt
// would print it (see Result.Format).
func (r Request) Format(f fmt.State, verb rune) {
	type plain Request
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(r))
}

// Code kinds of Request.Kind.
const (
	KindQuick    = "quick"
	KindRealtime = "realtime"
)

// Result is a successful exchange.
type Result struct {
	// AppID is the app that served it.
	AppID string
	// Phone is WeChat's answer.
	Phone wxphone.PhoneInfo
	// Replayed reports that the answer came from the replay store, with no
	// upstream call made for this request.
	Replayed bool
}

// Format prints the Result as fmt would, with the phone numbers masked,
// for every verb: without it, a *Result inside another value printed with
// %s or %q would go through fmt's error path, which calls no method of the
// fields and so shows the full number.
func (r Result) Format(f fmt.State, verb rune) {
	type plain Result
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(r))
}

// Exchange exchanges req.Code, or replays the outcome of an earlier exchange
// of the same code by the same caller: validate, Begin, exchange, Finish.
// Errors are the wxphone package's typed errors (replayed outcomes
// included) or this package's.
func (s *Service) Exchange(ctx context.Context, req Request) (*Result, error) {
	c, err := s.Client(req.AppID)
	if err != nil {
		return nil, err
	}
	if err := validate(&req); err != nil {
		return nil, err
	}
	appID := c.AppID()
	key, owner := s.keys(ctx, appID, &req)
	b, err := s.ledger.Begin(ctx, key, owner)
	if err != nil {
		return nil, s.beginError(appID, err)
	}
	if b.Claim == nil {
		return s.replayed(appID, key, b.Sealed)
	}
	return s.run(ctx, c, key, b.Claim, req)
}

// beginError maps a ledger refusal to this package's errors.
func (s *Service) beginError(appID string, err error) error {
	switch {
	case errors.Is(err, ledger.ErrForeign):
		s.count(appID, "foreign_replay")
		return ErrForeignReplay
	case errors.Is(err, ledger.ErrInFlight):
		s.count(appID, "in_flight")
		return ErrInFlight
	case errors.Is(err, ledger.ErrAbandoned):
		// The claimant died or stalled after it may have sent the code.
		s.count(appID, "outcome_unknown")
		s.metrics.OutcomeUnknown.WithLabelValues(appID).Inc()
		return &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: errors.New("an earlier exchange of this code was abandoned")}
	case errors.Is(err, ledger.ErrStore):
		s.log.Warn("replay store unavailable: refusing the code without sending it")
		return fmt.Errorf("%w: %w", ErrStore, err)
	case errors.Is(err, ledger.ErrUnresolved):
		s.count(appID, "unresolved")
		return ErrUnresolved
	case errors.Is(err, ledger.ErrClosed):
		return wxphone.ErrClosed
	}
	return err // the caller's deadline: nothing was sent
}

// validate checks a request's code and openid (as the exchange will) and
// its kind, before the code is claimed.
func validate(req *Request) error {
	if err := (wxphone.PhoneRequest{Code: req.Code, OpenID: req.OpenID}).Validate(); err != nil {
		return err
	}
	switch req.Kind {
	case "", KindQuick, KindRealtime:
	default:
		return &wxphone.InputError{Field: "kind", Reason: `must be "quick" or "realtime"`}
	}
	return nil
}

// keys returns the replay key of req's code and the owner index of its
// caller. While keys rotate, a replica still sealing with an older first
// key may hold this code's record under that key's index.
func (s *Service) keys(ctx context.Context, appID string, req *Request) (key, owner string) {
	if s.keyring.Len() == 1 {
		return s.keyring.Index("phone", appID, req.Code.Reveal()), s.owner(req.Caller, appID, req.OpenID)
	}
	keys := s.keyring.Indexes("phone", appID, req.Code.Reveal())
	owners := s.keyring.Indexes("owner", req.Caller, appID, req.OpenID)
	key, owner = keys[0], owners[0]
	for i := 1; i < len(keys); i++ {
		if s.ledger.Has(ctx, keys[i]) {
			return keys[i], owners[i]
		}
	}
	return key, owner
}

// maxOwnerCache bounds the owner indexes kept (requests without an openid
// have one per API key and app).
const maxOwnerCache = 1024

// owner returns the keyed owner index of (caller, appID, openID) under the
// first key, from a small cache when there is no openid: those requests
// repeat the same few values, and each index is an HMAC.
func (s *Service) owner(caller, appID, openID string) string {
	if openID != "" {
		return s.keyring.Index("owner", caller, appID, openID)
	}
	ck := ownerKey{caller, appID}
	if v, ok := s.owners.Load(ck); ok {
		return v.(string)
	}
	v := s.keyring.Index("owner", caller, appID, openID)
	if s.ownersN.Add(1) <= maxOwnerCache {
		s.owners.Store(ck, v)
	}
	return v
}

type ownerKey struct{ caller, appID string }

// maxIdleWorkers bounds the goroutines kept waiting for the next detached
// exchange (each for up to a second): enough for the exchanges in flight
// at a few thousand a second, each holding a small stack while it waits.
const maxIdleWorkers = 256

// run performs the upstream exchange for a claimed code, detached from the
// caller's cancellation, and records its outcome. When the caller's
// deadline is far enough away that the exchange's own timeout ends first
// (see inline), the exchange runs on the caller's goroutine; otherwise on a
// goroutine of its own, and the caller waits for it or for its own
// context, whichever ends first. Either way a caller that gives up or
// disconnects does not cancel the upstream call.
func (s *Service) run(ctx context.Context, c *wxphone.Client, key string, claim *ledger.Claim, req Request) (*Result, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		claim.Release(context.WithoutCancel(ctx), false)
		return nil, wxphone.ErrClosed
	}
	s.inflight.Add(1)
	s.mu.Unlock()

	if s.inline(ctx) {
		// Nothing is gained by a second goroutine: the caller would wait
		// for the whole exchange anyway. This saves a goroutine, its
		// stack and its closure per exchange in flight.
		defer s.inflight.Done()
		return s.exchange(context.WithoutCancel(ctx), c, key, claim, req)
	}
	var res *Result
	var rerr error
	done := make(chan struct{})
	s.workers.Go(func() {
		defer s.inflight.Done()
		defer close(done)
		res, rerr = s.exchange(context.WithoutCancel(ctx), c, key, claim, req)
	})
	select {
	case <-done:
		return res, rerr
	case <-ctx.Done():
		return nil, ErrInFlight
	}
}

// inline reports whether an exchange starting now may run on the caller's
// goroutine: ctx has a deadline that cannot pass before the exchange's own
// timeout does, so the caller could not be answered ErrInFlight by its
// deadline in any case. (A cancellation before the deadline, a disconnect,
// does not stop the exchange either way: it runs under
// context.WithoutCancel; the caller just learns nothing more.)
func (s *Service) inline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) >= s.timeout
}

func (s *Service) exchange(parent context.Context, c *wxphone.Client, key string, claim *ledger.Claim, req Request) (res *Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("exchange panicked", "panic", fmt.Sprint(p))
			claim.Release(parent, true)
			res, err = nil, &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: errors.New("internal error")}
		}
	}()
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	defer cancel()
	// The openid goes to WeChat too (unless the app's binding is off),
	// which then checks that the code belongs to that user.
	info, err := c.Exchange(ctx, wxphone.PhoneRequest{Code: req.Code, OpenID: req.OpenID})
	return s.record(parent, c.AppID(), req.Kind, key, claim, info, err)
}

// record counts an exchange's outcome and gives it to the ledger: a final
// one is kept for the code's life, anything else releases the claim.
func (s *Service) record(parent context.Context, appID, kind, key string, claim *ledger.Claim, info *wxphone.PhoneInfo, err error) (*Result, error) {
	tainted40029 := claim.Tainted() && errors.Is(err, wxphone.ErrInvalidCode)
	if tainted40029 {
		// A 40029 says nothing about this caller's exchange.
		err = &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: err}
	}
	if errors.Is(err, wxphone.ErrOutcomeUnknown) && !claim.Local() {
		// Another replica may hold the number: one that was cut off from
		// the shared store and publishes it within a heartbeat of its
		// return (after a tainted 40029, give it a moment), or one whose
		// exchange the store shows as still running (always wait for it,
		// up to its lease): outcome_unknown is final for the caller.
		var d time.Duration
		if tainted40029 {
			d = s.ledger.SettleTime()
		}
		if sealed, ok := claim.NumberElsewhere(parent, d); ok {
			s.count(appID, "number_elsewhere")
			return s.replayed(appID, key, sealed)
		}
	}
	out, final := toOutcome(info, err)
	s.count(appID, resultClass(err))
	if errors.Is(err, wxphone.ErrOutcomeUnknown) {
		s.metrics.OutcomeUnknown.WithLabelValues(appID).Inc()
	}
	switch {
	case final:
		b, merr := out.encode()
		if merr != nil {
			s.log.Error("cannot encode an outcome", "err", merr)
			claim.Release(parent, true)
		} else {
			claim.Finish(parent, s.keyring.Seal(b, []byte(key)), outcomeKind(err))
		}
		if claim.Unresolved() {
			// Made while the shared store was unreachable, or ended
			// while it could not be read: another replica may hold or
			// still obtain the number (a 40029 here often means just
			// that). Not final until the store can be read.
			s.count(appID, "unresolved")
			s.log.Warn("exchange ended without a number while the replay store could not be read; answered as unresolved until it can be", "err", err)
			return nil, ErrUnresolved
		}
	default:
		claim.Release(parent, mayHaveUsed(err))
	}
	if err != nil {
		return nil, err
	}
	if kind == "" {
		kind = "unspecified"
	}
	s.metrics.Grants.WithLabelValues(appID, kind).Inc()
	return &Result{AppID: appID, Phone: *info}, nil
}

// outcomeKind is the ledger's kind of a final outcome.
func outcomeKind(err error) ledger.Outcome {
	switch {
	case err == nil:
		return ledger.Number
	case errors.Is(err, wxphone.ErrOutcomeUnknown):
		return ledger.Unknown
	}
	return ledger.Refusal
}

// mayHaveUsed reports whether a non-final exchange error leaves the code
// possibly used, so that a later 40029 for it reads as outcome unknown: an
// attempt may have used it (wxphone.ErrCodeMayBeUsed), the exchange's
// errcode says WeChat may have (wxphone's errcode table, see
// APIError.MayHaveUsedCode), or WeChat answered -1 anywhere, even to the
// token fetch before the code was sent (cautious).
func mayHaveUsed(err error) bool {
	if errors.Is(err, wxphone.ErrCodeMayBeUsed) || errors.Is(err, wxphone.ErrSystemBusy) {
		return true
	}
	var ae *wxphone.APIError
	return errors.As(err, &ae) && ae.Op == wxphone.OpPhoneNumber && ae.MayHaveUsedCode()
}

// replayed opens a stored outcome.
func (s *Service) replayed(appID, key string, sealed []byte) (*Result, error) {
	b, err := s.keyring.Open(sealed, []byte(key))
	var out outcome
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		s.log.Warn("replay store: cannot open a stored outcome (data key rotated away?)", "err", err)
		return nil, &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: errors.New("stored outcome unreadable")}
	}
	s.metrics.Replays.WithLabelValues(appID).Inc()
	info, rerr := out.result()
	s.count(appID, "replay_"+resultClass(rerr))
	if rerr != nil {
		return nil, rerr
	}
	return &Result{AppID: appID, Phone: *info, Replayed: true}, nil
}

func (s *Service) count(appID, result string) {
	s.metrics.Exchanges.WithLabelValues(appID, result).Inc()
}

// AccessToken returns appid's current access token (for the central token
// endpoint).
func (s *Service) AccessToken(ctx context.Context, appID string) (wxphone.Token, error) {
	c, err := s.Client(appID)
	if err != nil {
		return wxphone.Token{}, err
	}
	return c.TokenSource().Token(ctx)
}

// InvalidateToken handles a caller's report that WeChat rejected token for
// appid (the central token endpoint). A source that can check reports
// (wxphone.TokenManager.InvalidateReported) first asks WeChat whether the
// token really is rejected: wxphone.ErrTokenStillValid when WeChat still
// accepts it, and never a force refresh on an unconfirmed report.
// Otherwise the token is dropped if still current and a replacement
// returned, within the token manager's force-refresh budget.
func (s *Service) InvalidateToken(ctx context.Context, appID, rejected string) (wxphone.Token, error) {
	c, err := s.Client(appID)
	if err != nil {
		return wxphone.Token{}, err
	}
	if rep, ok := c.TokenSource().(interface {
		InvalidateReported(context.Context, string) (wxphone.Token, error)
	}); ok {
		return rep.InvalidateReported(ctx, rejected)
	}
	inv, ok := c.TokenSource().(wxphone.TokenInvalidator)
	if !ok {
		return wxphone.Token{}, errors.New("service: this app's token source cannot invalidate")
	}
	return inv.Invalidate(ctx, rejected)
}

// AppStatus is one app's token state.
type AppStatus struct {
	AppID string
	Token wxphone.TokenStatus
}

// Status reports every app's token state, sorted by appid.
func (s *Service) Status() []AppStatus {
	out := make([]AppStatus, 0, len(s.appIDs))
	for _, id := range s.appIDs {
		st := AppStatus{AppID: id}
		if m, ok := s.apps[id].TokenSource().(interface{ Status() wxphone.TokenStatus }); ok {
			st.Token = m.Status()
		} else {
			st.Token.Usable = true // a caller-supplied source: trust it
		}
		out = append(out, st)
	}
	return out
}

// Warm fetches a token for every app, in parallel, and returns the first
// error.
func (s *Service) Warm(ctx context.Context) error {
	errs := make(chan error, len(s.appIDs))
	for _, id := range s.appIDs {
		go func() { errs <- s.apps[id].Warm(ctx) }()
	}
	var first error
	for range s.appIDs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close stops taking exchanges, waits for those in flight (or ctx), then
// closes every client.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("service: exchanges still in flight at shutdown: %w", ctx.Err())
	}
	if err == nil {
		s.workers.Close() // every exchange has ended: only waiting goroutines are left
	} else {
		s.workers.Stop() // the rest exit as their exchanges end
	}
	for _, id := range s.appIDs {
		_ = s.apps[id].Close()
	}
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	s.ledger.Close(lctx)
	lcancel()
	return err
}
