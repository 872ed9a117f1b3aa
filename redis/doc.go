// Package redis shares wxphone's state between the replicas of a fleet
// through one Redis: access tokens and their refresh lock and force-refresh
// budget (TokenStore, a wxphone.TokenStore and wxphone.TokenLocker), the
// outcomes of phone-code exchanges (ReplayStore, a replay.Store) and
// per-caller rate limits (Limiter, a ratelimit.Limiter). It is the only
// package of the module that imports go-redis.
//
// # Connecting
//
// Open builds a client from a URL. Standalone, Sentinel and Cluster
// deployments are told apart by the URL's scheme:
//
//	redis://[[user]:password@]host[:6379][/db][?option=value&...]
//	rediss://...                                   (TLS)
//	redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/master[/db][?...]
//	rediss+sentinel://...                          (TLS to sentinels and servers)
//	redis+cluster://[[user]:password@]host1[:6379][,host2[:6379]...][?...]
//	rediss+cluster://...                           (TLS)
//
// The user info is the Redis servers' credentials (for Sentinel: the
// monitored servers', not the sentinels'). Sentinels that require their own
// credentials take them from the query parameters sentinel_username and
// sentinel_password (or Options). IPv6 hosts are written in brackets. The
// query accepts go-redis's own option names (dial_timeout, read_timeout,
// write_timeout, pool_timeout, pool_size, max_retries, protocol, …; see
// go-redis's ParseURL, ParseFailoverURL and ParseClusterURL, which Open uses
// to read them), except skip_verify: TLS certificates are always verified.
//
// Defaults are short, so that a Redis outage costs a request little time
// and callers can fail open: dial 250 ms (one attempt per try), read and
// write 100 ms, pool wait 200 ms, at most one retry; the caller's context
// deadline, when earlier, bounds every call. Options change them, and URL
// query parameters override Options. Maintenance notifications (go-redis's
// CLIENT MAINT_NOTIFICATIONS hand-off support) are disabled in every mode.
// Errors never contain the password: they show the URL as RedactURL does.
//
// # Key layout
//
// With the default prefix "wxphone":
//
//	wxphone:{<appid>}:token   hash v (sealed token), exp (unix ms), fp (keyed fingerprint); expires with the token
//	wxphone:{<appid>}:lock    refresh lock (bsm/redislock); expires after the lock's TTL
//	wxphone:{<appid>}:force   hash last (unix ms), day (UTC+8 date), count; expires after two days
//	wxphone:replay:<key>      hash st, cid, own, lease (unix ms), sealed, t; expires after the claim's TTL
//	wxphone:rl:<key>          GCRA theoretical arrival time (unix µs); expires when the bucket is full again
//
// The braces are a Redis Cluster hash tag: an app's keys live in one slot.
// An access token is stored only sealed (seal.Keyring, with the key's name
// as additional data), next to its expiry in clear and a keyed fingerprint,
// so that the Lua scripts can compare expiries (write-if-newer) and
// fingerprints (delete-if-equal) without seeing the token.
package redis
