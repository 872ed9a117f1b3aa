package redis

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wxphone/wxphone/replay"
)

// ReplayStore is a replay.Store shared by every replica that uses the same
// Redis and prefix.
//
// A record is a hash under <prefix>:replay:{g}:<key>, where g is the key's
// first character (its group), with the fields st (state 1, 2 or 3),
// cid (claim id), own (owner), lease (unix ms), sealed, t (tainted, 0 or 1),
// n (the outcome is a number, 0 or 1), and rv and rvid (a rival claim's
// lease in unix ms and its id, see replay.Record.Rival); it expires after the TTL given
// when it was first claimed. The key given is expected to be a keyed hash
// already; this store adds no hashing of its own.
//
// Each group has an epoch key, <prefix>:epoch:{g}, holding "<id>:<unix
// ms>", written once per life of the data that holds it and never expiring,
// and a taint key, <prefix>:taint:{g}, holding the unix ms until which
// claims are tainted (see replay.Beat). Replicas register in
// <prefix>:members.
// A Redis that restarts without persistence loses it with the records:
// the next claim or Epoch call writes a new one, which is how replicas learn
// that records were lost (see replay.Epoch). The hash tag keeps a record
// and its epoch key in one Redis Cluster slot, so a script sees both.
type ReplayStore struct {
	c      goredis.UniversalClient
	prefix string
}

var _ replay.Store = (*ReplayStore)(nil)

// replayGroups is the number of groups: one hex digit of a key. Records of
// one group share a Redis Cluster slot, so 16 groups spread them over at
// most 16 masters, and a heartbeat reads 16 epoch keys.
const replayGroups = 16

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

// keys returns the record key and its group's epoch key.
func (s *ReplayStore) keys(k string) (rec, epoch string, err error) {
	if err := checkName("replay key", k, 256, true); err != nil {
		return "", "", err
	}
	g := strings.ToLower(k[:1])
	return s.prefix + ":replay:{" + g + "}:" + k, s.epochKey(g), nil
}

func (s *ReplayStore) epochKey(group string) string { return s.prefix + ":epoch:{" + group + "}" }

// nowMS is the Lua prelude that reads Redis's clock in unix milliseconds.
const nowMS = `
local tm = redis.call('TIME')
local nowms = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
`

// claimScript: KEYS record, epoch, taint; ARGV claim id, owner, lease ms, ttl ms,
// tainted, settle ms, a new epoch id. A missing epoch key is written (a new
// epoch, born now). While the epoch is younger than settle nothing is
// claimed. A Pending record of the same claim id is the caller's own (a
// retried call). A Pending or Done record is returned untouched; a Released
// one is taken over keeping its TTL and taint; anything else is replaced by
// a new Pending record that expires after ttl. Returns {claimed, settling,
// epoch, taint-until, st, cid, own, lease, sealed, t, n, rv, rvid}.
var claimScript = goredis.NewScript(nowMS + `
local tu = redis.call('GET', KEYS[3]) or '0'
local ep = redis.call('GET', KEYS[2])
if not ep then
  ep = ARGV[7] .. ':' .. nowms
  redis.call('SET', KEYS[2], ep)
end
local born = tonumber(string.match(ep, ':(%d+)$')) or 0
if nowms - born < tonumber(ARGV[6]) then
  return {0, 1, ep, tu}
end
local r = redis.call('HMGET', KEYS[1], 'st', 'cid', 'own', 'lease', 'sealed', 't', 'n', 'rv', 'rvid')
if r[1] == '1' and r[2] == ARGV[1] then
  return {1, 0, ep, tu, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]}
end
if r[1] == '1' or r[1] == '2' then
  return {0, 0, ep, tu, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]}
end
local t = ARGV[5]
if r[1] == '3' then
  if r[6] == '1' then t = '1' end
  redis.call('HSET', KEYS[1], 'st', '1', 'cid', ARGV[1], 'own', ARGV[2], 'lease', ARGV[3], 't', t, 'n', '0')
  redis.call('HDEL', KEYS[1], 'sealed', 'rv', 'rvid')
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
  return {1, 0, ep, tu, '1', ARGV[1], ARGV[2], ARGV[3], false, t, '0', false, false}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', '1', 'cid', ARGV[1], 'own', ARGV[2], 'lease', ARGV[3], 't', t, 'n', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, 0, ep, tu, '1', ARGV[1], ARGV[2], ARGV[3], false, t, '0', false, false}
`)

// finishScript: KEYS record; ARGV claim id, target state ('2' or '3'),
// sealed, number, tainted. Only the matching Pending claim changes: to Done
// holding sealed, or to Released (a taint is never cleared); the TTL is
// kept. A record of the same claim id already in the target state is a
// retried call. Returns 1 on success.
var finishScript = goredis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'st', 'cid', 't')
if r[2] ~= ARGV[1] then return 0 end
if r[1] == ARGV[2] then return 1 end
if r[1] ~= '1' then return 0 end
if ARGV[2] == '2' then
  redis.call('HSET', KEYS[1], 'st', '2', 'sealed', ARGV[3], 'n', ARGV[4])
else
  local t = '0'
  if ARGV[5] == '1' or r[3] == '1' then t = '1' end
  redis.call('HSET', KEYS[1], 'st', '3', 't', t)
end
return 1
`)

// restoreScript: KEYS record; ARGV st, cid, own, lease, sealed, t, n, ttl
// ms. Writes the record where it adds knowledge (replay.Adds): no record
// or a Released one; over a Pending record of the same claim id; a Done
// number over anything but a Done number. An existing record's TTL and
// taint are kept, and a taint in the arguments is added to a record kept;
// so is its rival, unless the record written is a number or the rival's
// own. A record kept gains or loses its rival as replay.Rivalry says.
// Returns {written, st, cid, own, lease, sealed, t, n, rv, rvid}.
var restoreScript = goredis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'st', 'cid', 'own', 'lease', 'sealed', 't', 'n', 'rv', 'rvid')
local add = false
if r[1] == false or r[1] == '3' then
  add = ARGV[1] == '1' or ARGV[1] == '2' or (ARGV[1] == '3' and ARGV[6] == '1' and r[6] ~= '1')
elseif r[1] == '1' and r[2] == ARGV[2] then
  add = ARGV[1] == '2'
elseif ARGV[1] == '2' and ARGV[7] == '1' then
  add = not (r[1] == '2' and r[7] == '1')
end
if not add then
  if r[1] and ARGV[6] == '1' and r[6] ~= '1' then
    redis.call('HSET', KEYS[1], 't', '1')
    r[6] = '1'
  end
  if r[1] and ARGV[1] == '1' and r[2] ~= ARGV[2] and r[1] ~= '3' and r[7] ~= '1' and tonumber(ARGV[4]) > (tonumber(r[8] or '0') or 0) then
    redis.call('HSET', KEYS[1], 'rv', ARGV[4], 'rvid', ARGV[2])
    r[8], r[9] = ARGV[4], ARGV[2]
  elseif r[1] and ARGV[1] ~= '1' and r[9] and r[9] == ARGV[2] and ARGV[7] ~= '1' then
    redis.call('HDEL', KEYS[1], 'rv', 'rvid')
    r[8], r[9] = false, false
  end
  return {0, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]}
end
local t = ARGV[6]
if r[6] == '1' then t = '1' end
local rv, rvid = false, false
if ARGV[7] ~= '1' and r[9] and r[9] ~= ARGV[2] then
  rv, rvid = r[8], r[9]
end
local pttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'cid', ARGV[2], 'own', ARGV[3], 'lease', ARGV[4], 't', t, 'n', ARGV[7])
if rv then
  redis.call('HSET', KEYS[1], 'rv', rv, 'rvid', rvid)
end
local sealed = false
if ARGV[1] == '2' then
  redis.call('HSET', KEYS[1], 'sealed', ARGV[5])
  sealed = ARGV[5]
end
if pttl > 0 then
  redis.call('PEXPIRE', KEYS[1], pttl)
else
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
return {1, ARGV[1], ARGV[2], ARGV[3], ARGV[4], sealed, t, ARGV[7], rv, rvid}
`)

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Claim implements replay.Store atomically, with one script.
func (s *ReplayStore) Claim(ctx context.Context, c replay.Claim) (replay.ClaimResult, error) {
	k, ek, err := s.keys(c.Key)
	if err != nil {
		return replay.ClaimResult{}, err
	}
	tk := s.taintKey(strings.ToLower(c.Key[:1]))
	if err := checkName("claim id", c.ID, 64, true); err != nil {
		return replay.ClaimResult{}, err
	}
	if c.TTL < time.Millisecond {
		return replay.ClaimResult{}, errors.New("redis: replay TTL must be at least 1ms")
	}
	res, err := claimScript.Run(ctx, s.c, []string{k, ek, tk}, c.ID, c.Owner, c.Lease.UnixMilli(), durMS(c.TTL),
		flag(c.Tainted), durMS(c.Settle), newEpochID()).Slice()
	if err != nil {
		return replay.ClaimResult{}, fmt.Errorf("redis: replay claim: %w", err)
	}
	if len(res) != 4 && len(res) != 13 {
		return replay.ClaimResult{}, errReply("claim")
	}
	var out replay.ClaimResult
	if ms, ok := toInt64(res[3]); ok && ms > 0 {
		out.TaintUntil = time.UnixMilli(ms)
	}
	if out.Epoch, err = parseEpoch(res[2]); err != nil {
		return replay.ClaimResult{}, err
	}
	claimed, _ := toInt64(res[0])
	settling, _ := toInt64(res[1])
	out.Claimed, out.Settling = claimed == 1, settling == 1
	if out.Settling {
		return out, nil
	}
	if len(res) != 13 {
		return replay.ClaimResult{}, errReply("claim")
	}
	if out.Record, err = record(res[4:]); err != nil {
		return replay.ClaimResult{}, err
	}
	return out, nil
}

// Complete implements replay.Store.
func (s *ReplayStore) Complete(ctx context.Context, key, claimID string, sealed []byte, number bool) error {
	return s.finish(ctx, "complete", key, claimID, "2", sealed, flag(number), "0")
}

// Release implements replay.Store. A record once tainted stays tainted.
func (s *ReplayStore) Release(ctx context.Context, key, claimID string, tainted bool) error {
	return s.finish(ctx, "release", key, claimID, "3", "", "0", flag(tainted))
}

func (s *ReplayStore) finish(ctx context.Context, name, key, claimID string, args ...any) error {
	k, _, err := s.keys(key)
	if err != nil {
		return err
	}
	n, err := finishScript.Run(ctx, s.c, []string{k}, append([]any{claimID}, args...)...).Int()
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
	k, _, err := s.keys(key)
	if err != nil {
		return replay.Record{}, err
	}
	v, err := s.c.HMGet(ctx, k, "st", "cid", "own", "lease", "sealed", "t", "n", "rv", "rvid").Result()
	if err != nil {
		return replay.Record{}, fmt.Errorf("redis: replay get: %w", err)
	}
	if len(v) != 9 {
		return replay.Record{}, errReply("HMGET")
	}
	if v[0] == nil {
		return replay.Record{}, replay.ErrNotFound
	}
	return record(v)
}

// Restore implements replay.Store atomically, with one script.
func (s *ReplayStore) Restore(ctx context.Context, key string, rec replay.Record, ttl time.Duration) (replay.Record, error) {
	k, _, err := s.keys(key)
	if err != nil {
		return replay.Record{}, err
	}
	if ttl < time.Millisecond {
		return replay.Record{}, errors.New("redis: replay TTL must be at least 1ms")
	}
	res, err := restoreScript.Run(ctx, s.c, []string{k}, strconv.Itoa(int(rec.State)), rec.ClaimID, rec.Owner,
		rec.LeaseUntil.UnixMilli(), rec.Sealed, flag(rec.Tainted), flag(rec.Number), durMS(ttl)).Slice()
	if err != nil {
		return replay.Record{}, fmt.Errorf("redis: replay restore: %w", err)
	}
	if len(res) != 10 {
		return replay.Record{}, errReply("restore")
	}
	if res[1] == nil {
		return replay.Record{}, nil
	}
	return record(res[1:])
}

// Heartbeat implements replay.Store. It records the member in
// <prefix>:members (a hash of member id to unix ms; members silent for
// longer than memberForget are dropped), raises every group's taint key
// <prefix>:taint:{g} to b.TaintUntil, and reads every group's epoch key,
// writing the missing ones (a new epoch, born now). The epochs combine
// into one: its ID changes when any group's data was lost, and its Born
// is the youngest group's.
func (s *ReplayStore) Heartbeat(ctx context.Context, b replay.Beat) (replay.Fleet, error) {
	if err := checkName("member", b.Member, 64, true); err != nil {
		return replay.Fleet{}, err
	}
	now := time.Now()
	members := s.prefix + ":members"
	epochs := make([]string, replayGroups)
	taints := make([]string, replayGroups)
	for i := range epochs {
		g := strconv.FormatInt(int64(i), 16)
		epochs[i], taints[i] = s.epochKey(g), s.taintKey(g)
	}
	var all *goredis.MapStringStringCmd
	var beat *goredis.Cmd
	get := func(write bool) ([]*goredis.StringCmd, []*goredis.StringCmd, error) {
		ec := make([]*goredis.StringCmd, len(epochs))
		tc := make([]*goredis.StringCmd, len(taints))
		_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			if write {
				beat = beatScript.Eval(ctx, p, []string{members}, b.Member, flag(b.Leave))
				if !b.TaintUntil.IsZero() {
					for _, k := range taints {
						raiseScript.Eval(ctx, p, []string{k}, b.TaintUntil.UnixMilli(), durMS(time.Until(b.TaintUntil)+time.Minute))
					}
				}
				all = p.HGetAll(ctx, members)
			}
			for i := range epochs {
				ec[i], tc[i] = p.Get(ctx, epochs[i]), p.Get(ctx, taints[i])
			}
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, nil, fmt.Errorf("redis: replay heartbeat: %w", err)
		}
		return ec, tc, nil
	}
	ec, tc, err := get(true)
	if err != nil {
		return replay.Fleet{}, err
	}
	var missing []string
	for i, c := range ec {
		if errors.Is(c.Err(), goredis.Nil) {
			missing = append(missing, epochs[i])
		}
	}
	if len(missing) > 0 {
		ms := strconv.FormatInt(now.UnixMilli(), 10)
		if _, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, k := range missing {
				p.SetNX(ctx, k, newEpochID()+":"+ms, 0)
			}
			return nil
		}); err != nil {
			return replay.Fleet{}, fmt.Errorf("redis: replay heartbeat: %w", err)
		}
		if ec, tc, err = get(false); err != nil {
			return replay.Fleet{}, err
		}
	}
	var f replay.Fleet
	h := sha256.New()
	for i, c := range ec {
		v, err := c.Result()
		if err != nil {
			return replay.Fleet{}, fmt.Errorf("redis: replay heartbeat: %w", err)
		}
		e, err := parseEpoch(v)
		if err != nil {
			return replay.Fleet{}, err
		}
		h.Write([]byte(v))
		if e.Born.After(f.Epoch.Born) {
			f.Epoch.Born = e.Born
		}
		if ms, err := tc[i].Int64(); err == nil && time.UnixMilli(ms).After(f.TaintUntil) {
			f.TaintUntil = time.UnixMilli(ms)
		}
	}
	f.Epoch.ID = hex.EncodeToString(h.Sum(nil)[:12])
	f.Now = now
	if ms, err := beat.Int64(); err == nil {
		f.Now = time.UnixMilli(ms) // Redis's clock, which wrote the members' times
	}
	f.Members = map[string]time.Time{}
	var gone []string
	for id, v := range all.Val() {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || f.Now.Sub(time.UnixMilli(ms)) > memberForget {
			gone = append(gone, id)
			continue
		}
		f.Members[id] = time.UnixMilli(ms)
	}
	if len(gone) > 0 {
		_ = s.c.HDel(ctx, members, gone...).Err() // tidying only
	}
	return f, nil
}

// memberForget is how long a silent member stays listed: long enough for
// every replica to see that it went silent (see ledger).
const memberForget = 10 * time.Minute

// beatScript: KEYS members; ARGV member, leave. Records the member's
// heartbeat at Redis's clock (or removes it) and returns that clock in
// unix ms.
var beatScript = goredis.NewScript(nowMS + `
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], nowms)
end
return nowms
`)

// raiseScript: KEYS taint key; ARGV unix ms, ttl ms. Keeps the larger
// time.
var raiseScript = goredis.NewScript(`
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
`)

func (s *ReplayStore) taintKey(group string) string { return s.prefix + ":taint:{" + group + "}" }

func newEpochID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// parseEpoch decodes "<id>:<unix ms>".
func parseEpoch(v any) (replay.Epoch, error) {
	s, _ := toString(v)
	id, ms, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || id == "" || err != nil {
		return replay.Epoch{}, errors.New("redis: malformed replay epoch")
	}
	return replay.Epoch{ID: id, Born: time.UnixMilli(n)}, nil
}

// record decodes a record's fields: st, cid, own, lease, sealed, t, n, rv,
// rvid.
func record(f []any) (replay.Record, error) {
	if len(f) != 9 {
		return replay.Record{}, errors.New("redis: malformed replay record")
	}
	n, ok := toInt64(f[0])
	if !ok || n < int64(replay.Pending) || n > int64(replay.Released) {
		return replay.Record{}, errors.New("redis: malformed replay record")
	}
	r := replay.Record{State: replay.State(n)}
	r.ClaimID, _ = toString(f[1])
	r.Owner, _ = toString(f[2])
	if l, ok := toInt64(f[3]); ok {
		r.LeaseUntil = time.UnixMilli(l)
	}
	if b, ok := toString(f[4]); ok {
		r.Sealed = []byte(b)
	}
	t, _ := toString(f[5])
	r.Tainted = t == "1"
	num, _ := toString(f[6])
	r.Number = num == "1"
	if rv, ok := toInt64(f[7]); ok && rv > 0 {
		r.Rival = time.UnixMilli(rv)
	}
	r.RivalID, _ = toString(f[8])
	return r, nil
}
