package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bsm/redislock"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/budget"
	"github.com/wxphone/wxphone/internal/valid"
	"github.com/wxphone/wxphone/seal"
)

// TokenStore is a wxphone.TokenStore and wxphone.TokenLocker shared by
// every replica that uses the same Redis and prefix. Tokens are stored
// sealed with a seal.Keyring, which every replica must share.
//
// Store errors are returned as they are (wrapped), never as
// wxphone.ErrTokenNotFound or wxphone.ErrLockHeld, so that the
// TokenManager fails open on them.
type TokenStore struct {
	c      goredis.UniversalClient
	kr     *seal.Keyring
	prefix string
	log    *slog.Logger
	locks  *redislock.Client
}

var (
	_ wxphone.TokenStore  = (*TokenStore)(nil)
	_ wxphone.TokenLocker = (*TokenStore)(nil)
)

// NewTokenStore returns a TokenStore over c that seals tokens with kr.
func NewTokenStore(c goredis.UniversalClient, kr *seal.Keyring, o StoreOptions) (*TokenStore, error) {
	if c == nil {
		return nil, errNoClient
	}
	if kr == nil {
		return nil, errors.New("redis: a TokenStore needs a keyring")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &TokenStore{c: c, kr: kr, prefix: o.Prefix, log: o.Logger, locks: redislock.New(c)}, nil
}

// key returns the app's key of the given kind: <prefix>:{<appid>}:<kind>.
func (s *TokenStore) key(appID, kind string) (string, error) {
	if !valid.AppID(appID) {
		return "", errors.New("redis: the appid must be " + valid.AppIDRule)
	}
	return s.prefix + ":{" + appID + "}:" + kind, nil
}

// Token hash fields: v is the sealed token, exp its expiry in unix ms, fp
// its keyed fingerprint seal.Keyring.Index("token", appid, value).

// storeScript writes a token unless the stored one expires at the same time
// or later (write-if-newer). KEYS[1] token hash; ARGV exp ms, sealed, fp.
// Returns {1} when it wrote, else {0, v, exp, fp} of the stored token.
var storeScript = goredis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'exp', 'v', 'fp')
local exp = tonumber(cur[1])
if exp and exp >= tonumber(ARGV[1]) then
  return {0, cur[2], cur[1], cur[3]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'exp', ARGV[1], 'fp', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return {1}
`)

// replaceScript replaces a stored token that could not be opened, only if
// it is still that one (same exp and fp fields). KEYS[1] token hash; ARGV
// old exp, old fp (empty for missing), new exp ms, sealed, fp. Returns 1 if
// it replaced.
var replaceScript = goredis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'exp', 'fp')
if (cur[1] or '') ~= ARGV[1] or (cur[2] or '') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'exp', ARGV[3], 'fp', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
`)

// deleteScript deletes the token if its fingerprint is one of ARGV
// (delete-if-equal; one fingerprint per key of the keyring). Returns 1 if
// it deleted.
var deleteScript = goredis.NewScript(`
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then return 0 end
for i = 1, #ARGV do
  if fp == ARGV[i] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
`)

// forceScript is budget.Force plus its bookkeeping, atomically.
// KEYS[1] force hash (last ms, day, count, rid); ARGV now ms,
// budget.Day(now), min interval ms, daily limit, ms until the next UTC+8
// midnight, key TTL ms, reservation id. Returns {1, 0} when it reserved,
// else {0, retry-after ms}. A call whose id is the last reservation's
// answers {1, 0} and changes nothing: go-redis re-runs a script whose
// reply timed out (MaxRetries), and that second run must not refuse the
// reservation the first one made (or spend a second unit).
var forceScript = goredis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'last', 'day', 'count', 'rid')
if ARGV[7] ~= '' and st[4] == ARGV[7] then
  return {1, 0}
end
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[3])
local last = tonumber(st[1])
local count = tonumber(st[3]) or 0
if st[2] ~= ARGV[2] then
  count = 0
end
if last and now - last < interval then
  return {0, interval - (now - last)}
end
if count >= tonumber(ARGV[4]) then
  return {0, tonumber(ARGV[5])}
end
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'day', ARGV[2], 'count', count + 1, 'rid', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, 0}
`)

// seal seals the token's expiry (8 bytes, big-endian unix ms) and value
// under the key's name, so a value moved to another key does not open.
func (s *TokenStore) seal(key, value string, expMS int64) string {
	pt := make([]byte, 8, 8+len(value))
	binary.BigEndian.PutUint64(pt, uint64(expMS)) // #nosec G115 -- two's-complement round trip with open's int64(...)
	pt = append(pt, value...)
	return string(s.kr.Seal(pt, []byte(key)))
}

// errUnreadable is why a stored token is ignored; it never leaves the
// package.
var errUnreadable = errors.New("stored token cannot be opened")

// open opens a stored token and checks that the expiry in clear, which
// the scripts compare, is the sealed one.
func (s *TokenStore) open(key string, sealed, exp any) (wxphone.Token, error) {
	v, ok1 := toString(sealed)
	e, ok2 := toInt64(exp)
	if !ok1 || !ok2 {
		return wxphone.Token{}, errUnreadable
	}
	pt, err := s.kr.Open([]byte(v), []byte(key))
	if err != nil || len(pt) <= 8 || int64(binary.BigEndian.Uint64(pt[:8])) != e { // #nosec G115 -- inverse of seal's uint64(expMS)
		return wxphone.Token{}, errUnreadable
	}
	return wxphone.Token{Value: string(pt[8:]), ExpiresAt: time.UnixMilli(e)}, nil
}

// LoadToken implements wxphone.TokenStore. A stored value that cannot be
// opened (sealed with a key no longer in the keyring, or tampered with) is
// reported as wxphone.ErrTokenNotFound, with a warning that names only the
// appid.
func (s *TokenStore) LoadToken(ctx context.Context, appID string) (wxphone.Token, error) {
	k, err := s.key(appID, "token")
	if err != nil {
		return wxphone.Token{}, err
	}
	vals, err := s.c.HMGet(ctx, k, "v", "exp").Result()
	if err != nil {
		return wxphone.Token{}, fmt.Errorf("redis: load token: %w", err)
	}
	if len(vals) != 2 {
		return wxphone.Token{}, errReply("HMGET")
	}
	if vals[0] == nil && vals[1] == nil {
		return wxphone.Token{}, wxphone.ErrTokenNotFound
	}
	tok, err := s.open(k, vals[0], vals[1])
	if err != nil {
		s.log.Warn("token store: ignoring a stored token that cannot be opened (data key rotated away, or tampered with)", "appid", appID)
		return wxphone.Token{}, wxphone.ErrTokenNotFound
	}
	return tok, nil
}

// StoreToken implements wxphone.TokenStore: it writes tok unless the stored
// token expires at the same time or later (expiries compare in whole
// milliseconds), and returns the token stored afterwards. The key expires
// with the token. A stored value that cannot be opened is replaced.
func (s *TokenStore) StoreToken(ctx context.Context, appID string, tok wxphone.Token) (wxphone.Token, error) {
	k, err := s.key(appID, "token")
	if err != nil {
		return wxphone.Token{}, err
	}
	if tok.Value == "" {
		return wxphone.Token{}, errors.New("redis: refusing to store an empty token")
	}
	expMS := tok.ExpiresAt.UnixMilli()
	sealed := s.seal(k, tok.Value, expMS)
	fp := s.kr.Index("token", appID, tok.Value)
	for range 3 {
		res, err := storeScript.Run(ctx, s.c, []string{k}, expMS, sealed, fp).Slice()
		if err != nil {
			return wxphone.Token{}, fmt.Errorf("redis: store token: %w", err)
		}
		if len(res) == 0 {
			return wxphone.Token{}, errReply("store")
		}
		if n, _ := toInt64(res[0]); n == 1 {
			return tok, nil
		}
		if len(res) != 4 {
			return wxphone.Token{}, errReply("store")
		}
		cur, err := s.open(k, res[1], res[2])
		if err == nil {
			return cur, nil
		}
		s.log.Warn("token store: replacing a stored token that cannot be opened (data key rotated away, or tampered with)", "appid", appID)
		oldExp, _ := toString(res[2])
		oldFP, _ := toString(res[3])
		n, err := replaceScript.Run(ctx, s.c, []string{k}, oldExp, oldFP, expMS, sealed, fp).Int()
		if err != nil {
			return wxphone.Token{}, fmt.Errorf("redis: store token: %w", err)
		}
		if n == 1 {
			return tok, nil
		}
		// Someone wrote meanwhile: compare with that.
	}
	return tok, nil
}

// DeleteToken implements wxphone.TokenStore: it deletes the stored token
// only if its value is value, compared through keyed fingerprints (one per
// key of the keyring, so that replicas sealing with different first keys
// during a rotation still match).
func (s *TokenStore) DeleteToken(ctx context.Context, appID, value string) (bool, error) {
	k, err := s.key(appID, "token")
	if err != nil {
		return false, err
	}
	if value == "" {
		return false, nil
	}
	fps := s.kr.Indexes("token", appID, value)
	args := make([]any, len(fps))
	for i, fp := range fps {
		args[i] = fp
	}
	n, err := deleteScript.Run(ctx, s.c, []string{k}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("redis: delete token: %w", err)
	}
	return n == 1, nil
}

// forceKeyTTL is how long a force-refresh record outlives its last write:
// longer than a WeChat day, so that the day's count is never forgotten.
const forceKeyTTL = 48 * time.Hour

// ReserveForceRefresh implements wxphone.TokenStore with budget.Force's
// rule, run atomically in Redis. now is taken in whole milliseconds. The
// script is idempotent for a repeated id (see forceScript).
func (s *TokenStore) ReserveForceRefresh(ctx context.Context, appID, id string, now time.Time, minInterval time.Duration, dailyLimit int) (bool, time.Duration, error) {
	k, err := s.key(appID, "force")
	if err != nil {
		return false, 0, err
	}
	if len(id) > 64 {
		return false, 0, errors.New("redis: reservation id longer than 64 bytes")
	}
	now = time.UnixMilli(now.UnixMilli())
	midnight := budget.NextMidnight(now)
	res, err := forceScript.Run(ctx, s.c, []string{k},
		now.UnixMilli(), budget.Day(now), durMS(minInterval), dailyLimit,
		midnight.Sub(now).Milliseconds(), durMS(max(forceKeyTTL, 2*minInterval)), id,
	).Int64Slice()
	return verdict(res, err, "reserve force refresh", time.Millisecond)
}

// LockRefresh implements wxphone.TokenLocker with bsm/redislock, without
// retrying: a lock held elsewhere gives wxphone.ErrLockHeld at once, and
// any other failure is returned as it is, for the caller to fail open. The
// unlock function releases the lock if this holder still has it.
func (s *TokenStore) LockRefresh(ctx context.Context, appID string, ttl time.Duration) (func(context.Context) error, error) {
	k, err := s.key(appID, "lock")
	if err != nil {
		return nil, err
	}
	if ttl < time.Millisecond {
		return nil, errors.New("redis: refresh lock TTL must be at least 1ms")
	}
	lock, err := s.locks.Obtain(ctx, k, ttl, &redislock.Options{RetryStrategy: redislock.NoRetry()})
	switch {
	case errors.Is(err, redislock.ErrNotObtained):
		return nil, wxphone.ErrLockHeld
	case err != nil:
		return nil, fmt.Errorf("redis: refresh lock: %w", err)
	}
	return func(ctx context.Context) error {
		if err := lock.Release(ctx); err != nil {
			return fmt.Errorf("redis: release refresh lock: %w", err)
		}
		return nil
	}, nil
}
