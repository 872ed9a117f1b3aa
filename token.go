package wxphone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/wxphone/wxphone/internal/budget"
)

// Token is a WeChat access_token and the time it expires. Printing a Token
// (String, fmt, slog, JSON) shows only a fingerprint and the expiry, never
// the value.
type Token struct {
	Value     string    `json:"-" xml:"-"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Remaining is the token's life left at now.
func (t Token) Remaining(now time.Time) time.Duration { return t.ExpiresAt.Sub(now) }

// String describes the token without revealing it.
func (t Token) String() string {
	return "Token(" + Fingerprint(t.Value) + ", expires " + t.ExpiresAt.UTC().Format(time.RFC3339) + ")"
}

// GoString describes the token without revealing it.
func (t Token) GoString() string { return t.String() }

// Format writes String for every verb.
func (t Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

// LogValue implements slog.LogValuer without the value.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("fingerprint", Fingerprint(t.Value)), slog.Time("expires_at", t.ExpiresAt))
}

// TokenSource supplies access tokens. Implementations must be safe for
// concurrent use. Token must return a token that is usable right now.
type TokenSource interface {
	Token(ctx context.Context) (Token, error)
}

// TokenInvalidator is implemented by token sources that can replace a token
// WeChat rejected. Invalidate drops rejected only if it is still the current
// token, and returns a token that is not rejected, within the source's
// refresh budget.
type TokenInvalidator interface {
	Invalidate(ctx context.Context, rejected string) (Token, error)
}

// StaticTokenSource always returns tok. It suits tests and callers that
// manage tokens elsewhere.
func StaticTokenSource(tok Token) TokenSource { return staticSource{tok} }

type staticSource struct{ tok Token }

func (s staticSource) Token(context.Context) (Token, error) { return s.tok, nil }

// ErrTokenNotFound is returned by a TokenStore that holds no token for the
// appid.
var ErrTokenNotFound = errors.New("wxphone: no stored token")

// ErrLockHeld is returned by TokenLocker.LockRefresh when another holder has
// the lock.
var ErrLockHeld = errors.New("wxphone: refresh lock held elsewhere")

// TokenStore keeps the current token of each app where every instance that
// shares it can see it. The in-memory implementation serves one process; a
// Redis implementation serves a fleet. All methods must be safe for
// concurrent use and must honour ctx.
type TokenStore interface {
	// LoadToken returns the stored token, or ErrTokenNotFound.
	LoadToken(ctx context.Context, appID string) (Token, error)
	// StoreToken stores tok unless the stored token expires at the same
	// time or later (write-if-newer), and returns the token stored
	// afterwards, which may be a newer one written by someone else.
	StoreToken(ctx context.Context, appID string, tok Token) (Token, error)
	// DeleteToken deletes the stored token only if its value equals value
	// (delete-if-equal), atomically, and reports whether it did.
	DeleteToken(ctx context.Context, appID, value string) (bool, error)
	// ReserveForceRefresh records one force refresh if the last one was at
	// least minInterval ago and fewer than dailyLimit were made today
	// (WeChat's day, UTC+8). When it refuses, retryAfter says when one may
	// be allowed again.
	//
	// id identifies the reservation (a random value per attempt). It must
	// be idempotent: a call repeated with the id of the last reservation
	// made (a client-side retry of a call whose answer was lost, such as
	// go-redis re-running a script after a read timeout) answers ok again
	// and records nothing more.
	ReserveForceRefresh(ctx context.Context, appID, id string, now time.Time, minInterval time.Duration, dailyLimit int) (ok bool, retryAfter time.Duration, err error)
}

// TokenLocker is implemented by stores shared between processes, so that one
// instance refreshes a token while the others wait for it.
type TokenLocker interface {
	// LockRefresh takes the app's refresh lock for at most ttl. It returns
	// ErrLockHeld when another instance holds it, and any other error when
	// the lock service cannot be asked (the caller then fails open).
	LockRefresh(ctx context.Context, appID string, ttl time.Duration) (unlock func(context.Context) error, err error)
}

// MemoryTokenStore is a TokenStore for one process.
type MemoryTokenStore struct {
	mu   sync.Mutex
	apps map[string]*memApp
}

type memApp struct {
	tok        Token
	lastForce  time.Time
	forceDay   string
	forceCount int
	forceID    string // id of the last reservation
}

// NewMemoryTokenStore returns an empty in-memory store.
func NewMemoryTokenStore() *MemoryTokenStore {
	return &MemoryTokenStore{apps: make(map[string]*memApp)}
}

func (s *MemoryTokenStore) app(appID string) *memApp {
	a := s.apps[appID]
	if a == nil {
		a = &memApp{}
		s.apps[appID] = a
	}
	return a
}

// LoadToken implements TokenStore.
func (s *MemoryTokenStore) LoadToken(_ context.Context, appID string) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[appID]; a != nil && a.tok.Value != "" {
		return a.tok, nil
	}
	return Token{}, ErrTokenNotFound
}

// StoreToken implements TokenStore (write-if-newer).
func (s *MemoryTokenStore) StoreToken(_ context.Context, appID string, tok Token) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appID)
	if a.tok.Value == "" || tok.ExpiresAt.After(a.tok.ExpiresAt) {
		a.tok = tok
	}
	return a.tok, nil
}

// DeleteToken implements TokenStore (delete-if-equal).
func (s *MemoryTokenStore) DeleteToken(_ context.Context, appID, value string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[appID]; a != nil && a.tok.Value != "" && a.tok.Value == value {
		a.tok = Token{}
		return true, nil
	}
	return false, nil
}

// ReserveForceRefresh implements TokenStore.
func (s *MemoryTokenStore) ReserveForceRefresh(_ context.Context, appID, id string, now time.Time, minInterval time.Duration, dailyLimit int) (bool, time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appID)
	if id != "" && id == a.forceID {
		return true, 0, nil // a repeated call: already reserved
	}
	ok, after := budget.Force(now, a.lastForce, a.forceDay, a.forceCount, minInterval, dailyLimit)
	if !ok {
		return false, after, nil
	}
	day := budget.Day(now)
	if a.forceDay != day {
		a.forceDay, a.forceCount = day, 0
	}
	a.forceCount++
	a.lastForce = now
	a.forceID = id
	return true, 0, nil
}
