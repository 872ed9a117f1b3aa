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
	// the same code is safe and will receive its outcome.
	ErrInFlight = errors.New("service: the same code is still being exchanged; retry with the same code")
	// ErrStore: the replay store failed, so the code was not sent.
	ErrStore = errors.New("service: replay store unavailable")
)

// MaxOpenIDLen bounds the optional openid of a request (WeChat's openids are
// 28 characters).
const MaxOpenIDLen = 128

// MaxReplayTTL is the longest a replay record lives: a code's own life.
const MaxReplayTTL = 5 * time.Minute

// Config configures a Service.
type Config struct {
	// Clients are the Mini Programs served, one per appid. The Service
	// closes them in Close.
	Clients []*wxphone.Client
	// Keyring seals stored outcomes and derives store keys; default a
	// random per-process key (replays then work within this process only).
	Keyring *seal.Keyring
	// Replay stores outcomes; default replay.NewMemory().
	Replay replay.Store
	// ExchangeTimeout bounds one upstream exchange, detached from the
	// caller; default 15 s.
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
	store    replay.Store
	timeout  time.Duration
	ttl      time.Duration
	metrics  *metrics.Metrics
	log      *slog.Logger
	inflight sync.WaitGroup

	// kept holds outcomes this process obtained but could not record in
	// the shared store, so that a retry reaching this replica still gets
	// them.
	kept *replay.Memory

	owners  sync.Map     // ownerKey → owner index (no openid), see owner
	ownersN atomic.Int64 // entries stored in owners, bounded by maxOwnerCache

	mu      sync.Mutex
	closing bool
	local   map[string]chan struct{} // codes exchanged by this process now, closed when done
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if len(cfg.Clients) == 0 {
		return nil, errors.New("service: at least one app is required")
	}
	s := &Service{
		apps: make(map[string]*wxphone.Client), keyring: cfg.Keyring, store: cfg.Replay,
		timeout: cfg.ExchangeTimeout, ttl: cfg.ReplayTTL, metrics: cfg.Metrics, log: cfg.Logger,
		local: make(map[string]chan struct{}), kept: replay.NewMemory(),
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
	if s.store == nil {
		s.store = replay.NewMemory()
	}
	if s.timeout == 0 {
		s.timeout = 15 * time.Second
	}
	if s.timeout < 0 {
		return nil, errors.New("service: ExchangeTimeout must be positive")
	}
	switch {
	case s.ttl == 0:
		s.ttl = MaxReplayTTL
	case s.ttl < 0 || s.ttl > MaxReplayTTL:
		return nil, errors.New("service: ReplayTTL must be between 0 and 5m")
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
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
	// Code is the getPhoneNumber code.
	Code string
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

// Exchange exchanges req.Code, or replays the outcome of an earlier exchange
// of the same code by the same caller. Errors are the wxphone package's
// typed errors (replayed outcomes included) or this package's.
func (s *Service) Exchange(ctx context.Context, req Request) (*Result, error) {
	// Everything up to the upstream call happens in claim, whose frame is
	// gone by the time the call waits for WeChat: an exchange in flight
	// then holds a shallower stack (see run).
	c, key, rec, res, err := s.claim(ctx, &req)
	if c == nil {
		return res, err
	}
	return s.run(ctx, c, key, rec, req)
}

// claim validates req and claims its code in the replay store. It returns
// the app's client, the code's key and the claimed record when this caller
// is to perform the exchange; otherwise a nil client and the answer
// (a replay, or an error).
func (s *Service) claim(ctx context.Context, req *Request) (*wxphone.Client, string, replay.Record, *Result, error) {
	c, err := s.Client(req.AppID)
	if err != nil {
		return nil, "", replay.Record{}, nil, err
	}
	if err := validate(req); err != nil {
		return nil, "", replay.Record{}, nil, err
	}
	appID := c.AppID()
	key, owner := s.keys(ctx, appID, req)
	for {
		if err := ctx.Err(); err != nil {
			return nil, "", replay.Record{}, nil, err
		}
		if rec, err := s.kept.Get(ctx, key); err == nil && rec.State == replay.Done {
			if rec.Owner != owner {
				s.count(appID, "foreign_replay")
				return nil, "", replay.Record{}, nil, ErrForeignReplay
			}
			res, err := s.replayed(appID, key, rec)
			return nil, "", replay.Record{}, res, err
		}
		// This process is exchanging the code right now: wait for that
		// exchange rather than claim, even when the shared store cannot
		// show its claim (Redis down: the claim would be made locally and
		// the code sent a second time).
		s.mu.Lock()
		running := s.local[key]
		s.mu.Unlock()
		if running != nil {
			select {
			case <-running:
				continue
			case <-ctx.Done():
				s.count(appID, "in_flight")
				return nil, "", replay.Record{}, nil, ErrInFlight
			}
		}
		lease := time.Now().Add(s.timeout + 5*time.Second)
		rec, claimed, err := s.store.Claim(ctx, key, owner, lease, s.ttl)
		if err != nil && ctx.Err() != nil {
			// The caller's deadline, not a store failure; nothing was sent.
			return nil, "", replay.Record{}, nil, ctx.Err()
		}
		if err != nil {
			s.log.Warn("replay store: claim failed", "err", err)
			return nil, "", replay.Record{}, nil, fmt.Errorf("%w: %w", ErrStore, err)
		}
		if claimed {
			return c, key, rec, nil, nil
		}
		if rec.Owner != owner {
			s.count(appID, "foreign_replay")
			return nil, "", replay.Record{}, nil, ErrForeignReplay
		}
		switch rec.State {
		case replay.Done:
			res, err := s.replayed(appID, key, rec)
			return nil, "", replay.Record{}, res, err
		case replay.Pending:
			if time.Now().After(rec.LeaseUntil) {
				// The claimant died or stalled after it may have sent the code.
				s.count(appID, "outcome_unknown")
				s.metrics.OutcomeUnknown.WithLabelValues(appID).Inc()
				return nil, "", replay.Record{}, nil, &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: errors.New("an earlier exchange of this code was abandoned")}
			}
			if err := s.wait(ctx, key, rec.LeaseUntil); err != nil {
				s.count(appID, "in_flight")
				return nil, "", replay.Record{}, nil, ErrInFlight
			}
		}
	}
}

// validate checks a request's code and openid.
func validate(req *Request) error {
	if err := wxphone.ValidateCode(req.Code); err != nil {
		return err
	}
	if len(req.OpenID) > MaxOpenIDLen {
		return &wxphone.InputError{Field: "openid", Reason: fmt.Sprintf("longer than %d bytes", MaxOpenIDLen)}
	}
	for i := 0; i < len(req.OpenID); i++ {
		if ch := req.OpenID[i]; ch <= ' ' || ch > '~' {
			return &wxphone.InputError{Field: "openid", Reason: "must be printable ASCII without spaces"}
		}
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
		return s.keyring.Index("phone", appID, req.Code), s.owner(req.Caller, appID, req.OpenID)
	}
	keys := s.keyring.Indexes("phone", appID, req.Code)
	owners := s.keyring.Indexes("owner", req.Caller, appID, req.OpenID)
	key, owner = keys[0], owners[0]
	for i := 1; i < len(keys); i++ {
		if rec, err := s.store.Get(ctx, keys[i]); err == nil && rec.State != replay.Released {
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

// wait blocks until key's record may have changed, ctx ends (error) or the
// lease passes.
func (s *Service) wait(ctx context.Context, key string, lease time.Time) error {
	s.mu.Lock()
	ch := s.local[key]
	s.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	wctx, cancel := context.WithDeadline(ctx, lease.Add(time.Millisecond))
	defer cancel()
	err := replay.WaitFor(wctx, s.store, key, 20*time.Millisecond)
	if err != nil && ctx.Err() == nil {
		return nil // the lease passed: re-read the record
	}
	return err
}

// run performs the upstream exchange for a claimed code, detached from the
// caller's cancellation, and records its outcome. When the caller's
// deadline is far enough away that the exchange's own timeout ends first
// (see inline), the exchange runs on the caller's goroutine; otherwise on a
// goroutine of its own, and the caller waits for it or for its own
// context, whichever ends first. Either way a caller that gives up or
// disconnects does not cancel the upstream call.
func (s *Service) run(ctx context.Context, c *wxphone.Client, key string, rec replay.Record, req Request) (*Result, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.release(key, rec.ClaimID, false)
		return nil, wxphone.ErrClosed
	}
	done := make(chan struct{})
	s.local[key] = done
	s.inflight.Add(1)
	s.mu.Unlock()
	finish := func() {
		s.mu.Lock()
		delete(s.local, key)
		s.mu.Unlock()
		close(done)
		s.inflight.Done()
	}

	if s.inline(ctx) {
		// Nothing is gained by a second goroutine: the caller would wait
		// for the whole exchange anyway. This saves a goroutine, its
		// stack and its closure per exchange in flight.
		defer finish()
		return s.exchange(context.WithoutCancel(ctx), c, key, rec, req)
	}
	var res *Result
	var rerr error
	go func() {
		defer finish()
		res, rerr = s.exchange(context.WithoutCancel(ctx), c, key, rec, req)
	}()
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

func (s *Service) exchange(parent context.Context, c *wxphone.Client, key string, rec replay.Record, req Request) (res *Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("exchange panicked", "panic", fmt.Sprint(p))
			s.release(key, rec.ClaimID, true)
			res, err = nil, &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: errors.New("internal error")}
		}
	}()
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	defer cancel()
	// The openid goes to WeChat too (unless the app's binding is off),
	// which then checks that the code belongs to that user.
	info, err := c.Exchange(ctx, wxphone.PhoneRequest{Code: req.Code, OpenID: req.OpenID})
	return s.record(parent, c.AppID(), req.Kind, key, &rec, info, err)
}

// record counts an exchange's outcome, keeps a final one in the replay
// store (or this process) and releases the claim otherwise. It is a
// function of its own so that its frame is not on the stack while the
// upstream call waits.
func (s *Service) record(parent context.Context, appID, kind, key string, rec *replay.Record, info *wxphone.PhoneInfo, err error) (*Result, error) {
	if rec.Tainted && errors.Is(err, wxphone.ErrInvalidCode) {
		err = &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: err}
	}
	out, final := toOutcome(info, err)
	s.count(appID, resultClass(err))
	if errors.Is(err, wxphone.ErrOutcomeUnknown) {
		s.metrics.OutcomeUnknown.WithLabelValues(appID).Inc()
	}
	if final {
		b, merr := json.Marshal(out)
		if merr != nil {
			s.log.Error("cannot encode an outcome", "err", merr)
		} else if sealed := s.keyring.Seal(b, []byte(key)); s.store.Complete(parent, key, rec.ClaimID, sealed) != nil {
			s.log.Warn("replay store: cannot record the outcome; keeping it in this process only")
			if kr, ok, _ := s.kept.Claim(parent, key, rec.Owner, time.Now(), s.ttl); ok {
				_ = s.kept.Complete(parent, key, kr.ClaimID, sealed)
			}
		}
	} else {
		s.release(key, rec.ClaimID, errors.Is(err, wxphone.ErrSystemBusy))
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

func (s *Service) release(key, claimID string, tainted bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.store.Release(ctx, key, claimID, tainted); err != nil && !errors.Is(err, replay.ErrNotClaimed) {
		s.log.Warn("replay store: cannot release a claim; the code stays blocked until the claim's lease ends", "err", err)
	}
}

// replayed opens a Done record.
func (s *Service) replayed(appID, key string, rec replay.Record) (*Result, error) {
	b, err := s.keyring.Open(rec.Sealed, []byte(key))
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

// InvalidateToken reports that WeChat rejected token for appid: it is
// dropped if still current and a replacement returned, within the token
// manager's force-refresh budget.
func (s *Service) InvalidateToken(ctx context.Context, appID, rejected string) (wxphone.Token, error) {
	c, err := s.Client(appID)
	if err != nil {
		return wxphone.Token{}, err
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
	for _, id := range s.appIDs {
		_ = s.apps[id].Close()
	}
	return err
}
