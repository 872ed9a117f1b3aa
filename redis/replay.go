package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone/replay"
)

// ReplayStore is a replay.Store shared by every replica that uses the same
// Redis and prefix. A record is a hash under <prefix>:replay:<key> with the
// fields st (state 1, 2 or 3), cid (claim id), own (owner), lease (unix
// ms), sealed and t (tainted, 0 or 1); it expires after the TTL given when
// it was first claimed. The key given is expected to be a keyed hash
// already; this store adds no hashing of its own.
type ReplayStore struct {
	c      goredis.UniversalClient
	prefix string
}

var _ replay.Store = (*ReplayStore)(nil)

// NewReplayStore returns a ReplayStore over c.
func NewReplayStore(c goredis.UniversalClient, o StoreOptions) (*ReplayStore, error) {
	if c == nil {
		return nil, errNoClient
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &ReplayStore{c: c, prefix: o.Prefix}, nil
}

func (s *ReplayStore) key(k string) (string, error) {
	if err := checkName("replay key", k, 256, false); err != nil {
		return "", err
	}
	return s.prefix + ":replay:" + k, nil
}

// claimScript: KEYS[1] record; ARGV claim id, owner, lease ms, ttl ms.
// A Pending or Done record is returned untouched; a Released one is taken
// over keeping its TTL and t; anything else is replaced by a new Pending
// record that expires after ttl. Returns {claimed, st, cid,
// own, lease, sealed, t}.
var claimScript = goredis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'st', 'cid', 'own', 'lease', 'sealed', 't')
if r[1] == '1' or r[1] == '2' then
  return {0, r[1], r[2], r[3], r[4], r[5], r[6]}
end
if r[1] == '3' then
  redis.call('HSET', KEYS[1], 'st', '1', 'cid', ARGV[1], 'own', ARGV[2], 'lease', ARGV[3])
  redis.call('HDEL', KEYS[1], 'sealed')
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
  return {1, '1', ARGV[1], ARGV[2], ARGV[3], false, r[6] or '0'}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', '1', 'cid', ARGV[1], 'own', ARGV[2], 'lease', ARGV[3], 't', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, '1', ARGV[1], ARGV[2], ARGV[3], false, '0'}
`)

// completeScript: KEYS[1] record; ARGV claim id, sealed. Only the matching
// Pending claim becomes Done; the TTL is kept. Returns 1 if it did.
var completeScript = goredis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'st', 'cid')
if r[1] ~= '1' or r[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', '2', 'sealed', ARGV[2])
return 1
`)

// releaseScript: KEYS[1] record; ARGV claim id, tainted ('1' or '0'). Only
// the matching Pending claim becomes Released; a taint is never cleared;
// the TTL is kept. Returns 1 if it did.
var releaseScript = goredis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'st', 'cid', 't')
if r[1] ~= '1' or r[2] ~= ARGV[1] then return 0 end
local t = '0'
if ARGV[2] == '1' or r[3] == '1' then t = '1' end
redis.call('HSET', KEYS[1], 'st', '3', 't', t)
return 1
`)

// Claim implements replay.Store atomically, with one script.
func (s *ReplayStore) Claim(ctx context.Context, key, owner string, lease time.Time, ttl time.Duration) (replay.Record, bool, error) {
	k, err := s.key(key)
	if err != nil {
		return replay.Record{}, false, err
	}
	if ttl < time.Millisecond {
		return replay.Record{}, false, errors.New("redis: replay TTL must be at least 1ms")
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return replay.Record{}, false, err
	}
	res, err := claimScript.Run(ctx, s.c, []string{k}, hex.EncodeToString(id[:]), owner, lease.UnixMilli(), durMS(ttl)).Slice()
	if err != nil {
		return replay.Record{}, false, fmt.Errorf("redis: replay claim: %w", err)
	}
	if len(res) != 7 {
		return replay.Record{}, false, errReply("claim")
	}
	rec, err := record(res[1], res[2], res[3], res[4], res[5], res[6])
	if err != nil {
		return replay.Record{}, false, err
	}
	claimed, _ := toInt64(res[0])
	return rec, claimed == 1, nil
}

// Complete implements replay.Store.
func (s *ReplayStore) Complete(ctx context.Context, key, claimID string, sealed []byte) error {
	return s.finish(ctx, completeScript, "complete", key, claimID, sealed)
}

// Release implements replay.Store. A record once tainted stays tainted.
func (s *ReplayStore) Release(ctx context.Context, key, claimID string, tainted bool) error {
	t := "0"
	if tainted {
		t = "1"
	}
	return s.finish(ctx, releaseScript, "release", key, claimID, t)
}

func (s *ReplayStore) finish(ctx context.Context, script *goredis.Script, name, key, claimID string, arg any) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	n, err := script.Run(ctx, s.c, []string{k}, claimID, arg).Int()
	if err != nil {
		return fmt.Errorf("redis: replay %s: %w", name, err)
	}
	if n != 1 {
		return replay.ErrNotClaimed
	}
	return nil
}

// Get implements replay.Store.
func (s *ReplayStore) Get(ctx context.Context, key string) (replay.Record, error) {
	k, err := s.key(key)
	if err != nil {
		return replay.Record{}, err
	}
	v, err := s.c.HMGet(ctx, k, "st", "cid", "own", "lease", "sealed", "t").Result()
	if err != nil {
		return replay.Record{}, fmt.Errorf("redis: replay get: %w", err)
	}
	if len(v) != 6 {
		return replay.Record{}, errReply("HMGET")
	}
	if v[0] == nil {
		return replay.Record{}, replay.ErrNotFound
	}
	return record(v[0], v[1], v[2], v[3], v[4], v[5])
}

// record decodes a record's fields.
func record(st, cid, own, lease, sealed, tainted any) (replay.Record, error) {
	n, ok := toInt64(st)
	if !ok || n < int64(replay.Pending) || n > int64(replay.Released) {
		return replay.Record{}, errors.New("redis: malformed replay record")
	}
	r := replay.Record{State: replay.State(n)}
	r.ClaimID, _ = toString(cid)
	r.Owner, _ = toString(own)
	if l, ok := toInt64(lease); ok {
		r.LeaseUntil = time.UnixMilli(l)
	}
	if b, ok := toString(sealed); ok {
		r.Sealed = []byte(b)
	}
	t, _ := toString(tainted)
	r.Tainted = t == "1"
	return r, nil
}
