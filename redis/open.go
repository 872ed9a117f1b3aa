package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/wxphone/wxphone"
)

// Client is the go-redis client Open returns, named here so that other
// packages can hold one without importing go-redis.
type Client = goredis.UniversalClient

// Client defaults (see Options).
const (
	DefaultDialTimeout  = 250 * time.Millisecond
	DefaultReadTimeout  = 100 * time.Millisecond
	DefaultWriteTimeout = 100 * time.Millisecond
	DefaultPoolTimeout  = 200 * time.Millisecond
	DefaultMaxRetries   = 1
)

// Retry back-off defaults, shorter than go-redis's (8 ms to 512 ms) so that
// one retry stays within a request's budget.
const (
	defaultMinRetryBackoff = 10 * time.Millisecond
	defaultMaxRetryBackoff = 100 * time.Millisecond
)

// Options tune the client Open builds. Zero values take the defaults; an
// option given in the URL's query overrides the Options field.
type Options struct {
	// DialTimeout bounds one connection attempt; default 250 ms.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound each socket read and write;
	// default 100 ms each. A caller's earlier context deadline applies too.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolTimeout bounds the wait for a free connection when the pool is
	// busy; default 200 ms.
	PoolTimeout time.Duration
	// MaxRetries is how often a failed command is retried; default 1, -1
	// for none.
	MaxRetries int
	// PoolSize is the number of connections per server; default go-redis's
	// (10 per CPU).
	PoolSize int
	// TLSConfig customises TLS for rediss URLs (root CAs, client
	// certificates, ServerName). It is refused with a plain redis URL and
	// when it sets InsecureSkipVerify. Without a ServerName each server's
	// certificate is checked against the host it was dialled at.
	TLSConfig *tls.Config
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// themselves (Sentinel URLs only), when they require it; the URL's
	// sentinel_username and sentinel_password parameters override them.
	SentinelUsername string
	SentinelPassword wxphone.Secret
	// Lazy skips the PING with which Open checks the connection and the
	// credentials: Open then succeeds while Redis is down, and the first
	// commands fail instead.
	Lazy bool
}

// Format prints the Options as fmt would, for every verb, the sentinels'
// password redacted: without it, a *Options inside another value printed
// with %s or %q would go through fmt's error path, which calls no method
// of the fields and so shows the password.
func (o Options) Format(f fmt.State, verb rune) {
	type plain Options
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(o))
}

type mode int

const (
	standalone mode = iota
	sentinel
	cluster
)

// target is a URL in one of Open's forms, taken apart.
type target struct {
	mode     mode
	tls      bool
	hasUser  bool
	user     string
	pass     string
	hosts    []string // host:port
	segments []string // path segments
	query    url.Values
}

// Open connects to the Redis that rawURL names (see the package
// documentation for the URL forms) and, unless opts.Lazy, checks the
// connection with a PING within ctx. The client returned is a go-redis
// *Client for standalone and Sentinel URLs and a *ClusterClient for Cluster
// URLs; close it when done. Errors show the URL redacted.
func Open(ctx context.Context, rawURL string, opts Options) (goredis.UniversalClient, error) {
	c, err := newClient(rawURL, opts)
	if err != nil {
		return nil, fmt.Errorf("redis: %s: %w", RedactURL(rawURL), err)
	}
	if !opts.Lazy {
		if err := Ping(ctx, c); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("redis: %s: %w", RedactURL(rawURL), err)
		}
	}
	return c, nil
}

// CheckURL reports whether Open accepts rawURL (with opts' TLS settings
// left unset), without connecting: the rules Open applies, so that a
// configuration is refused when it is loaded. Its errors quote no part of
// rawURL.
func CheckURL(rawURL string) error {
	_, err := buildOptions(rawURL, Options{})
	return err
}

func newClient(rawURL string, o Options) (goredis.UniversalClient, error) {
	opts, err := buildOptions(rawURL, o)
	if err != nil {
		return nil, err
	}
	switch x := opts.(type) {
	case *goredis.Options:
		return goredis.NewClient(x), nil
	case *goredis.ClusterOptions:
		return goredis.NewClusterClient(x), nil
	default:
		return goredis.NewFailoverClient(x.(*goredis.FailoverOptions)), nil
	}
}

// buildOptions returns the *goredis.Options, *goredis.ClusterOptions or
// *goredis.FailoverOptions that rawURL and o describe. go-redis reads a
// URL's query options only into these three types, one per topology, each
// with options of its own; its UniversalOptions has no URL parser and
// lacks some of them (use_disconnected_replicas), and NewUniversalClient
// would make a sentinel URL with route_by_latency or route_randomly a
// FailoverClusterClient. So Open keeps the three, and sets what they share
// through one view of their fields (settings).
func buildOptions(rawURL string, o Options) (any, error) {
	t, err := parseTarget(rawURL)
	if err != nil {
		return nil, err
	}
	if o.TLSConfig != nil && o.TLSConfig.InsecureSkipVerify {
		return nil, errors.New("Options.TLSConfig must not disable certificate verification")
	}
	if o.TLSConfig != nil && !t.tls {
		return nil, errors.New("Options.TLSConfig is set but the URL does not use TLS (use a rediss scheme)")
	}
	scheme := "redis"
	if t.tls {
		scheme = "rediss"
	}
	var opts any
	var s settings
	switch t.mode {
	case standalone:
		opts, s, err = standaloneOptions(t, scheme)
	case cluster:
		opts, s, err = clusterOptions(t, scheme)
	default:
		opts, s, err = sentinelOptions(t, scheme, o)
	}
	if err != nil {
		return nil, err
	}
	*s.user, *s.pass, *s.ctxTimeout = t.user, t.pass, true
	if s.maint != nil {
		*s.maint = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
	return opts, apply(o, t, s)
}

func standaloneOptions(t *target, scheme string) (any, settings, error) {
	if len(t.hosts) != 1 {
		return nil, settings{}, errors.New("a redis URL names one host; use redis+cluster or redis+sentinel for several")
	}
	if len(t.segments) > 1 {
		return nil, settings{}, errors.New("the path is at most a database number")
	}
	x, err := goredis.ParseURL(scheme + "://" + t.hosts[0] + "/" + strings.Join(t.segments, "") + encodeQuery(t.query))
	if err != nil {
		return nil, settings{}, reason(err)
	}
	return x, settings{
		user: &x.Username, pass: &x.Password, ctxTimeout: &x.ContextTimeoutEnabled, maint: &x.MaintNotificationsConfig,
		dial: &x.DialTimeout, read: &x.ReadTimeout, write: &x.WriteTimeout, pool: &x.PoolTimeout, retries: &x.MaxRetries,
		dialerRetries: &x.DialerRetries, poolSize: &x.PoolSize, minBackoff: &x.MinRetryBackoff, maxBackoff: &x.MaxRetryBackoff, tls: &x.TLSConfig,
	}, nil
}

func clusterOptions(t *target, scheme string) (any, settings, error) {
	if len(t.segments) > 0 {
		return nil, settings{}, errors.New("a cluster URL has no path (Redis Cluster has only database 0)")
	}
	q := t.query
	for _, h := range t.hosts[1:] {
		q.Add("addr", h)
	}
	x, err := goredis.ParseClusterURL(scheme + "://" + t.hosts[0] + encodeQuery(q))
	if err != nil {
		return nil, settings{}, reason(err)
	}
	return x, settings{
		user: &x.Username, pass: &x.Password, ctxTimeout: &x.ContextTimeoutEnabled, maint: &x.MaintNotificationsConfig,
		dial: &x.DialTimeout, read: &x.ReadTimeout, write: &x.WriteTimeout, pool: &x.PoolTimeout, retries: &x.MaxRetries,
		dialerRetries: &x.DialerRetries, poolSize: &x.PoolSize, minBackoff: &x.MinRetryBackoff, maxBackoff: &x.MaxRetryBackoff, tls: &x.TLSConfig,
	}, nil
}

// sentinelOptions also sets the sentinels' own credentials: the URL's
// sentinel_username and sentinel_password, else o's. FailoverOptions has
// no MaintNotificationsConfig: go-redis builds its sentinel and server
// clients with the mode disabled.
func sentinelOptions(t *target, scheme string, o Options) (any, settings, error) {
	if len(t.segments) < 1 || len(t.segments) > 2 || t.segments[0] == "" {
		return nil, settings{}, errors.New("a sentinel URL's path is /<master name>[/<db>]")
	}
	q := t.query
	sentUser, sentPass := o.SentinelUsername, o.SentinelPassword.Reveal()
	if q.Has("sentinel_username") {
		sentUser = q.Get("sentinel_username")
		q.Del("sentinel_username")
	}
	if q.Has("sentinel_password") {
		sentPass = q.Get("sentinel_password")
		q.Del("sentinel_password")
	}
	if q.Has("master_name") || q.Has("addr") {
		return nil, settings{}, errors.New("name the master in the path and the sentinels in the host list, not in master_name or addr parameters")
	}
	q.Set("master_name", t.segments[0])
	for _, h := range t.hosts[1:] {
		q.Add("addr", h)
	}
	db := ""
	if len(t.segments) == 2 {
		db = t.segments[1]
	}
	x, err := goredis.ParseFailoverURL(scheme + "://" + t.hosts[0] + "/" + db + encodeQuery(q))
	if err != nil {
		return nil, settings{}, reason(err)
	}
	x.SentinelUsername, x.SentinelPassword = sentUser, sentPass
	return x, settings{
		user: &x.Username, pass: &x.Password, ctxTimeout: &x.ContextTimeoutEnabled,
		dial: &x.DialTimeout, read: &x.ReadTimeout, write: &x.WriteTimeout, pool: &x.PoolTimeout, retries: &x.MaxRetries,
		dialerRetries: &x.DialerRetries, poolSize: &x.PoolSize, minBackoff: &x.MinRetryBackoff, maxBackoff: &x.MaxRetryBackoff, tls: &x.TLSConfig,
	}, nil
}

// settings points into one of go-redis's option structs: the fields Open
// sets whatever the topology (maint is nil where the type has none).
type settings struct {
	user, pass              *string
	ctxTimeout              *bool
	maint                   **maintnotifications.Config
	dial, read, write, pool *time.Duration
	retries, dialerRetries  *int
	poolSize                *int
	minBackoff, maxBackoff  *time.Duration
	tls                     **tls.Config
}

// apply fills what the URL left unset from o, then from the defaults.
func apply(o Options, t *target, s settings) error {
	dur := func(p *time.Duration, v, def time.Duration) {
		if *p == 0 {
			*p = v
		}
		if *p == 0 {
			*p = def
		}
	}
	dur(s.dial, o.DialTimeout, DefaultDialTimeout)
	dur(s.read, o.ReadTimeout, DefaultReadTimeout)
	dur(s.write, o.WriteTimeout, DefaultWriteTimeout)
	dur(s.pool, o.PoolTimeout, DefaultPoolTimeout)
	dur(s.minBackoff, 0, defaultMinRetryBackoff)
	dur(s.maxBackoff, 0, defaultMaxRetryBackoff)
	if *s.retries == 0 {
		*s.retries = o.MaxRetries
	}
	if *s.retries == 0 {
		*s.retries = DefaultMaxRetries
	}
	if *s.dialerRetries == 0 {
		*s.dialerRetries = 1 // one dial attempt per try: the command retry covers the rest
	}
	if *s.poolSize == 0 {
		*s.poolSize = o.PoolSize
	}
	if !t.tls {
		*s.tls = nil
		return nil
	}
	cfg := &tls.Config{}
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	}
	// An empty ServerName makes crypto/tls check each server's certificate
	// against the host it dials, which is right for every server of a
	// cluster or a sentinel deployment, not only the first one named.
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.InsecureSkipVerify {
		return errors.New("TLS certificate verification cannot be disabled")
	}
	*s.tls = cfg
	return nil
}

// reason is a go-redis parse error without the URL a *url.Error quotes.
func reason(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func encodeQuery(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// parseTarget takes rawURL apart by hand, because url.Parse rejects host
// lists and echoes the whole URL, password included, in its errors. No
// error returned here quotes any part of rawURL.
func parseTarget(rawURL string) (*target, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, errors.New("not a valid URL: want redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://")
	}
	t := &target{}
	switch strings.ToLower(scheme) {
	case "redis":
	case "rediss":
		t.tls = true
	case "redis+sentinel":
		t.mode = sentinel
	case "rediss+sentinel":
		t.mode, t.tls = sentinel, true
	case "redis+cluster":
		t.mode = cluster
	case "rediss+cluster":
		t.mode, t.tls = cluster, true
	default:
		return nil, errors.New("the scheme must be redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster")
	}
	if strings.Contains(rest, "#") {
		return nil, errors.New("a URL fragment is not allowed (percent-encode '#' in a password as %23)")
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo := authority[:at]
		authority = authority[at+1:]
		user, pass, _ := strings.Cut(userinfo, ":")
		var err1, err2 error
		t.user, err1 = url.PathUnescape(user)
		t.pass, err2 = url.PathUnescape(pass)
		if err1 != nil || err2 != nil {
			return nil, errors.New("invalid percent-encoding in the user info")
		}
		t.hasUser = true
	}
	defPort := "6379"
	if t.mode == sentinel {
		defPort = "26379"
	}
	for h := range strings.SplitSeq(authority, ",") {
		hp, err := hostPort(h, defPort)
		if err != nil {
			return nil, err
		}
		t.hosts = append(t.hosts, hp)
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" {
			continue
		}
		s, err := url.PathUnescape(seg)
		if err != nil {
			return nil, errors.New("invalid percent-encoding in the path")
		}
		t.segments = append(t.segments, s)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, errors.New("invalid query")
	}
	for name := range q {
		switch name {
		case "skip_verify":
			return nil, errors.New("skip_verify is not supported: TLS certificates are always verified")
		case "username", "password":
			return nil, errors.New("put the credentials in the URL's user info, not in the query")
		case "sentinel_username", "sentinel_password":
			if t.mode != sentinel {
				return nil, errors.New("sentinel_username and sentinel_password apply to redis+sentinel URLs only")
			}
		}
	}
	t.query = q
	return t, nil
}

// hostPort validates one host of a URL's host list and adds the default
// port.
func hostPort(h, defPort string) (string, error) {
	var host, port string
	switch {
	case strings.TrimSpace(h) == "":
		return "", errors.New("the URL has no host")
	case strings.HasPrefix(h, "["):
		end := strings.Index(h, "]")
		if end < 0 {
			return "", errors.New("unterminated IPv6 address in the URL")
		}
		host = h[1:end]
		switch r := h[end+1:]; {
		case r == "":
			port = defPort
		case strings.HasPrefix(r, ":"):
			port = r[1:]
		default:
			return "", errors.New("invalid host in the URL")
		}
		if net.ParseIP(host) == nil {
			return "", errors.New("invalid IPv6 address in the URL")
		}
	default:
		switch strings.Count(h, ":") {
		case 0:
			host, port = h, defPort
		case 1:
			host, port, _ = strings.Cut(h, ":")
		default:
			return "", errors.New("write IPv6 addresses in brackets, e.g. [::1]:6379")
		}
	}
	if host == "" || strings.ContainsAny(host, "@/?#%\\ \t") {
		return "", errors.New("invalid host in the URL")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", errors.New("invalid port in the URL")
	}
	return net.JoinHostPort(host, port), nil
}

// RedactURL returns rawURL with its password, and the value of every query
// parameter whose name contains "pass", replaced by "xxxxx", for logs and
// errors. Text it cannot parse is redacted whole.
func RedactURL(rawURL string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return "REDACTED"
	}
	// The last '@' ends the user info even when the password holds
	// unescaped '@', '/', '?' or '#': redact everything before it.
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo := rest[:at]
		red := "xxxxx"
		if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass && !strings.ContainsAny(user, "/?#") {
			red = user + ":xxxxx"
		}
		rest = red + "@" + rest[at+1:]
	}
	rest, _, _ = strings.Cut(rest, "#")
	if base, rawQuery, hasQuery := strings.Cut(rest, "?"); hasQuery {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return scheme + "://" + base + "?REDACTED"
		}
		for name := range q {
			if strings.Contains(strings.ToLower(name), "pass") {
				q[name] = []string{"xxxxx"}
			}
		}
		rest = base + "?" + q.Encode()
	}
	return scheme + "://" + rest
}

// Ping checks that Redis answers within ctx: every master of a cluster, or
// the one server otherwise. Use it for readiness checks.
func Ping(ctx context.Context, c goredis.UniversalClient) error {
	if cc, ok := c.(*goredis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error {
			return n.Ping(ctx).Err()
		})
	}
	return c.Ping(ctx).Err()
}

// SetLogger sends go-redis's own diagnostics (failed dials and the like,
// which it writes to stderr by default) to l at level Warn, or discards
// them when l is nil. It applies to every go-redis client of the process.
func SetLogger(l *slog.Logger) {
	if l == nil {
		goredis.SetLogger(&logging.VoidLogger{})
		return
	}
	goredis.SetLogger(slogAdapter{l})
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.l.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
