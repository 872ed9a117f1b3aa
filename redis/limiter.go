package redis

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone/ratelimit"
)

// Limiter is a ratelimit.Limiter whose buckets every replica that uses the
// same Redis and prefix shares. Each key's bucket is one Redis string,
// <prefix>:rl:<key>, holding the GCRA theoretical arrival time (unix µs);
// it expires once the bucket would be full again, so idle keys cost
// nothing.
//
// The clock is Redis's own (TIME, read inside the script), not the
// replicas': replicas whose clocks disagree by a second would otherwise
// hand each other's tokens out early or late by that second. The result is
// the same as a token bucket of Limit.Rate tokens per second holding up to
// Limit.Burst tokens, as ratelimit.Memory keeps in one process.
type Limiter struct {
	c        goredis.UniversalClient
	prefix   string
	periodUS string // emission interval, µs
	burst    string
	now      func() time.Time // tests only; nil: Redis TIME
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// maxRate bounds Limit.Rate so that the emission interval (in µs, in a Lua
// double next to a unix µs time) keeps its precision.
const maxRate = 1e5

// NewLimiter returns a Limiter applying l to every key. l.Rate must be
// positive and at most 100000 per second, l.Burst at least 1.
func NewLimiter(c goredis.UniversalClient, l ratelimit.Limit, o StoreOptions) (*Limiter, error) {
	if c == nil {
		return nil, errNoClient
	}
	if math.IsNaN(l.Rate) || l.Rate <= 0 || l.Rate > maxRate {
		return nil, errors.New("redis: limiter rate must be positive and at most 100000/s")
	}
	if l.Burst < 1 {
		return nil, errors.New("redis: limiter burst must be at least 1")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Limiter{
		c: c, prefix: o.Prefix,
		periodUS: strconv.FormatFloat(1e6/l.Rate, 'f', -1, 64),
		burst:    strconv.Itoa(l.Burst),
	}, nil
}

// gcraScript: KEYS[1] bucket; ARGV emission interval µs, burst, now µs (empty:
// Redis TIME). Returns {1, 0} when allowed, else {0, µs until a token}.
var gcraScript = goredis.NewScript(`
local now
if ARGV[3] == '' then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local new = tat + period
local allow_at = new - burst * period
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, 0}
`)

// Allow implements ratelimit.Limiter. On a Redis error ok is false and
// the error is returned (ratelimit.Fallback then decides locally).
func (l *Limiter) Allow(ctx context.Context, key string) (bool, time.Duration, error) {
	if err := checkName("rate limit key", key, 256, false); err != nil {
		return false, 0, err
	}
	now := ""
	if l.now != nil {
		now = strconv.FormatInt(l.now().UnixMicro(), 10)
	}
	res, err := gcraScript.Run(ctx, l.c, []string{l.prefix + ":rl:" + key}, l.periodUS, l.burst, now).Int64Slice()
	return verdict(res, err, "rate limit", time.Microsecond)
}
