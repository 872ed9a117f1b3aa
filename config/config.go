// Package config loads the configuration of `wxphone serve` from
// environment variables and command-line flags.
//
// Every setting is an environment variable and a flag of serve; a flag wins
// over its variable. Secrets and keys (the AppSecret, API keys, data keys,
// the Redis URL, which may carry a password) are accepted only from the
// environment or from files, never as command-line values, which any user
// of the machine can read with ps: their flags take a file path
// (--secret-file, --api-keys-file, …) and each variable has a *_FILE
// variant naming a file. Setting both a variable and its *_FILE variant is
// an error. Errors name the variable, flag or file at fault and never quote
// a secret or a key.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/internal/valid"
	"github.com/wxphone/wxphone/seal"
)

// Defaults.
const (
	DefaultAddr = ":8080"
	// DefaultRateLimit is 0: no per-key limit. A backend calls with one
	// key for all its users, so any fixed default would answer a launch
	// peak 429; WeChat's own limits (45011) are the ceiling that matters.
	DefaultRateLimit = 0.0
	// DefaultTokenServeMargin is the least life a token may have left
	// when a request uses it (see wxphone.TokenOptions.ServeMargin).
	DefaultTokenServeMargin = 60 * time.Second
	DefaultRequestTimeout   = 10 * time.Second
	DefaultExchangeTimeout  = 15 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultQuotaInterval    = 10 * time.Minute
	// MinAPIKeyLen is the shortest API key accepted.
	MinAPIKeyLen = 16
	// MaxFileBytes bounds a secret, key or apps file.
	MaxFileBytes = 1 << 20
)

// ErrHelp is returned by Load when -h or --help was given.
var ErrHelp = flag.ErrHelp

// App is one Mini Program to serve.
type App struct {
	// AppID is the Mini Program's appid.
	AppID string
	// Secret is its AppSecret.
	Secret wxphone.Secret
	// APISecurity, when set, sends the app's calls through WeChat's API
	// security mode (WX_API_* or the apps file's "api_security").
	APISecurity *apisec.Keys
	// NoOpenIDBinding stops a request's openid from being sent to WeChat
	// (WX_OPENID_BINDING=false or the apps file's "openid_binding": false).
	NoOpenIDBinding bool
}

// Config is the loaded configuration. Secrets are wxphone.Secret values,
// which never print.
type Config struct {
	// Addr is the listen address (WXPHONE_ADDR, --addr).
	Addr string
	// Apps are the Mini Programs (WX_APPID with WX_SECRET, and/or
	// WXPHONE_APPS_FILE), in configuration order.
	Apps []App
	// APIBase is WeChat's base URL (WX_API_BASE, --api-base).
	APIBase string
	// APIKeys may exchange phone codes (WXPHONE_API_KEYS). At least one.
	APIKeys []wxphone.Secret
	// TokenAPIKeys may use the central token endpoints
	// (WXPHONE_TOKEN_API_KEYS). Optional.
	TokenAPIKeys []wxphone.Secret
	// LogLevel is the log level (WXPHONE_LOG_LEVEL).
	LogLevel slog.Level
	// DataKeySet reports whether WXPHONE_DATA_KEY was configured; when not,
	// Keyring is a random per-process key.
	DataKeySet bool
	// RedisURL is REDIS_URL: set, it switches on fleet mode (see package replica); empty when unset.
	RedisURL wxphone.Secret
	// RateLimit is each API key's request rate per second
	// (WXPHONE_RATE_LIMIT); 0, the default, disables the limit.
	RateLimit float64
	// RateBurst is the bucket size (WXPHONE_RATE_BURST).
	RateBurst int
	// TokenServeMargin is the least life a token may have left when a
	// request uses it (WXPHONE_TOKEN_SERVE_MARGIN): between the refresh
	// point (300 s before expiry) and this margin, requests keep using the
	// held token while the refresh retries in the background.
	TokenServeMargin time.Duration
	// RequestTimeout is the per-request deadline (WXPHONE_REQUEST_TIMEOUT).
	RequestTimeout time.Duration
	// ExchangeTimeout bounds one upstream exchange
	// (WXPHONE_EXCHANGE_TIMEOUT).
	ExchangeTimeout time.Duration
	// ShutdownTimeout bounds a graceful shutdown
	// (WXPHONE_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// H2C makes the listener accept unencrypted HTTP/2 with prior
	// knowledge besides HTTP/1.1 (WXPHONE_H2C), for a load balancer or
	// sidecar that speaks h2c to its backends.
	H2C bool
	// UpstreamH2C makes the WeChat client speak unencrypted HTTP/2 with
	// prior knowledge (WXPHONE_UPSTREAM_H2C); allowed only with a plain
	// http:// APIBase, which ParseBaseURL restricts to loopback (an
	// emulator). Over https, HTTP/2 is negotiated by ALPN anyway.
	UpstreamH2C bool
	// PprofAddr, when set, serves net/http/pprof on this loopback address
	// (WXPHONE_PPROF_ADDR); empty disables it.
	PprofAddr string
	// AdminAddr, when set, serves /metrics (and pprof with AdminPprof) on
	// this address instead of the API's (WXPHONE_ADMIN_ADDR).
	AdminAddr string
	// AdminPprof serves net/http/pprof on AdminAddr (WXPHONE_ADMIN_PPROF).
	AdminPprof bool
	// QuotaInterval is the time between two probes of WeChat's daily
	// quotas (WXPHONE_QUOTA_INTERVAL); 0 disables them.
	QuotaInterval time.Duration

	keyring *seal.Keyring
}

// Keyring returns the data keyring (WXPHONE_DATA_KEY, or a random key).
func (c *Config) Keyring() *seal.Keyring { return c.keyring }

// Reveal returns the values of keys, for the one place that needs them
// (the server's key table).
func Reveal(keys []wxphone.Secret) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Reveal()
	}
	return out
}

// Setting describes one configuration setting.
type Setting struct {
	// Env is the environment variable.
	Env string
	// FileEnv is the *_FILE variant of a secret setting ("" otherwise).
	FileEnv string
	// Flag is the flag of serve, without dashes. For a secret setting it
	// takes a file path.
	Flag string
	// Secret marks settings accepted only from the environment or files.
	Secret bool
	// Default is the default, as text ("" when none).
	Default string
	// Help describes the setting.
	Help string
}

// Settings lists every setting, in documentation order.
func Settings() []Setting {
	return []Setting{
		{Env: "WXPHONE_ADDR", Flag: "addr", Default: DefaultAddr, Help: "listen address"},
		{Env: "WX_APPID", Flag: "appid", Help: "appid of the Mini Program (single-app setup)"},
		{Env: "WX_SECRET", FileEnv: "WX_SECRET_FILE", Flag: "secret-file", Secret: true, Help: "AppSecret of WX_APPID"},
		{Env: "WXPHONE_APPS_FILE", Flag: "apps-file", Help: "JSON file listing several Mini Programs, each with secret_env or secret_file"},
		{Env: "WX_API_SYM_KEY_FILE", Flag: "api-sym-key-file", Help: "API security mode: file holding the base64 symmetric key (single app; all six WX_API_* switch the mode on)"},
		{Env: "WX_API_SYM_SN", Flag: "api-sym-sn", Help: "API security mode: the symmetric key's number"},
		{Env: "WX_API_PRIVATE_KEY_FILE", Flag: "api-private-key-file", Help: "API security mode: the app private key (PKCS#1 or PKCS#8 PEM)"},
		{Env: "WX_API_PRIVATE_KEY_SN", Flag: "api-private-key-sn", Help: "API security mode: the app private key's number"},
		{Env: "WX_API_PLATFORM_CERT_FILE", Flag: "api-platform-cert-file", Help: "API security mode: PEM file with one or more platform certificates"},
		{Env: "WX_API_PLATFORM_CERT_SN", Flag: "api-platform-cert-sn", Help: "API security mode: the platform certificates' numbers, comma-separated, in file order"},
		{Env: "WX_OPENID_BINDING", Flag: "openid-binding", Default: "true", Help: "send a request's openid to WeChat, which checks that the code belongs to that user (single app)"},
		{Env: "WX_API_BASE", Flag: "api-base", Default: wxphone.DefaultBaseURL, Help: "WeChat API base URL (https; http only for loopback)"},
		{Env: "WXPHONE_API_KEYS", FileEnv: "WXPHONE_API_KEYS_FILE", Flag: "api-keys-file", Secret: true, Help: "comma-separated bearer keys allowed to exchange phone codes (required; each at least 16 characters)"},
		{Env: "WXPHONE_TOKEN_API_KEYS", FileEnv: "WXPHONE_TOKEN_API_KEYS_FILE", Flag: "token-api-keys-file", Secret: true, Help: "comma-separated bearer keys allowed on the central access-token endpoints"},
		{Env: "WXPHONE_DATA_KEY", FileEnv: "WXPHONE_DATA_KEY_FILE", Flag: "data-key-file", Secret: true, Help: "comma-separated base64 32-byte data keys, first seals (default: a random per-process key)"},
		{Env: "REDIS_URL", FileEnv: "REDIS_URL_FILE", Flag: "redis-url-file", Secret: true, Help: "Redis URL switching on fleet mode (redis://, rediss://, redis+sentinel://, redis+cluster://); needs WXPHONE_DATA_KEY"},
		{Env: "WXPHONE_LOG_LEVEL", Flag: "log-level", Default: "info", Help: "log level: debug, info, warn or error"},
		{Env: "WXPHONE_RATE_LIMIT", Flag: "rate-limit", Default: "0", Help: "requests per second per API key (one bucket per key, fleet-wide with Redis); 0 disables"},
		{Env: "WXPHONE_RATE_BURST", Flag: "rate-burst", Default: "2 × rate", Help: "burst per API key"},
		{Env: "WXPHONE_TOKEN_SERVE_MARGIN", Flag: "token-serve-margin", Default: DefaultTokenServeMargin.String(), Help: "least life a token may have left when a request uses it (10s..300s); the refresh starts at 300s"},
		{Env: "WXPHONE_REQUEST_TIMEOUT", Flag: "request-timeout", Default: DefaultRequestTimeout.String(), Help: "per-request deadline (Go duration, or seconds)"},
		{Env: "WXPHONE_EXCHANGE_TIMEOUT", Flag: "exchange-timeout", Default: DefaultExchangeTimeout.String(), Help: "bound of one upstream exchange, detached from the request"},
		{Env: "WXPHONE_SHUTDOWN_TIMEOUT", Flag: "shutdown-timeout", Default: DefaultShutdownTimeout.String(), Help: "bound of a graceful shutdown"},
		{Env: "WXPHONE_H2C", Flag: "h2c", Default: "false", Help: "also accept unencrypted HTTP/2 (h2c, prior knowledge) on the listen address"},
		{Env: "WXPHONE_UPSTREAM_H2C", Flag: "upstream-h2c", Default: "false", Help: "speak h2c to an http:// (loopback, emulator) WX_API_BASE"},
		{Env: "WXPHONE_PPROF_ADDR", Flag: "pprof-addr", Help: "loopback address serving net/http/pprof (debugging; off when empty)"},
		{Env: "WXPHONE_ADMIN_ADDR", Flag: "admin-addr", Help: "address serving /metrics (and pprof with WXPHONE_ADMIN_PPROF) instead of the API address, e.g. :9090 (default: /metrics on the API address)"},
		{Env: "WXPHONE_ADMIN_PPROF", Flag: "admin-pprof", Default: "false", Help: "also serve net/http/pprof under /debug/pprof/ on WXPHONE_ADMIN_ADDR"},
		{Env: "WXPHONE_QUOTA_INTERVAL", Flag: "quota-interval", Default: DefaultQuotaInterval.String(), Help: "time between two probes of WeChat's daily quotas per app (1m..24h; 0 or off disables)"},
	}
}

// PrintUsage writes the flags and variables of serve to w.
func PrintUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: wxphone serve [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag has an environment variable; the flag wins. Secrets are read only from")
	fmt.Fprintln(w, "the environment or from files: their flags take a FILE path, never the value.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, s := range Settings() {
		fl := "--" + s.Flag
		if s.Secret {
			fl += " FILE"
		}
		env := s.Env
		if s.FileEnv != "" {
			env += ", " + s.FileEnv
		}
		def := ""
		if s.Default != "" {
			def = " (default " + s.Default + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s%s\n", fl, env, s.Help, def)
	}
	_ = tw.Flush()
}

// secretFlags are flag names someone might try to pass a secret with.
var secretFlags = map[string]string{ // #nosec G101 -- flag names and variable names, no credential
	"secret": "WX_SECRET, WX_SECRET_FILE or --secret-file", "api-keys": "WXPHONE_API_KEYS, WXPHONE_API_KEYS_FILE or --api-keys-file",
	"token-api-keys": "WXPHONE_TOKEN_API_KEYS, WXPHONE_TOKEN_API_KEYS_FILE or --token-api-keys-file",
	"data-key":       "WXPHONE_DATA_KEY, WXPHONE_DATA_KEY_FILE or --data-key-file", "redis-url": "REDIS_URL, REDIS_URL_FILE or --redis-url-file",
}

// loader resolves settings from flags and the environment.
type loader struct {
	getenv func(string) string
	flags  map[string]string // flags given
	vals   map[string]*string
}

// Load parses args (the arguments after "serve") and the environment read
// through getenv. It returns ErrHelp for -h/--help.
func Load(args []string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") {
			if alt, bad := secretFlags[name]; bad {
				return nil, fmt.Errorf("config: --%s: secrets are not accepted on the command line (they would show in ps); use %s", name, alt)
			}
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := &loader{getenv: getenv, flags: map[string]string{}, vals: map[string]*string{}}
	for _, s := range Settings() {
		l.vals[s.Flag] = fs.String(s.Flag, "", s.Help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, errors.New("config: unexpected positional argument; serve takes only flags (and secrets only from the environment or files)")
	}
	fs.Visit(func(f *flag.Flag) { l.flags[f.Name] = f.Value.String() })
	return l.load()
}

func (l *loader) load() (*Config, error) {
	c := &Config{}
	var err error
	if c.Addr, _ = l.plain("addr", "WXPHONE_ADDR"); c.Addr == "" {
		c.Addr = DefaultAddr
	}
	base, src := l.plain("api-base", "WX_API_BASE")
	if _, err := wxphone.ParseBaseURL(base); err != nil {
		return nil, fmt.Errorf("config: %s: %w", src, err)
	}
	c.APIBase = base
	if c.APIBase == "" {
		c.APIBase = wxphone.DefaultBaseURL
	}
	if c.Apps, err = l.apps(); err != nil {
		return nil, err
	}
	keys, src, err := l.secret("api-keys-file", "WXPHONE_API_KEYS", "WXPHONE_API_KEYS_FILE")
	if err != nil {
		return nil, err
	}
	if keys == "" {
		return nil, errors.New("config: no API key: set WXPHONE_API_KEYS (comma-separated), WXPHONE_API_KEYS_FILE or --api-keys-file; serve refuses to start without one")
	}
	if c.APIKeys, err = parseKeys(keys, src); err != nil {
		return nil, err
	}
	tkeys, src, err := l.secret("token-api-keys-file", "WXPHONE_TOKEN_API_KEYS", "WXPHONE_TOKEN_API_KEYS_FILE")
	if err != nil {
		return nil, err
	}
	if tkeys != "" {
		if c.TokenAPIKeys, err = parseKeys(tkeys, src); err != nil {
			return nil, err
		}
	}
	lvl, src := l.plain("log-level", "WXPHONE_LOG_LEVEL")
	if c.LogLevel, err = parseLevel(lvl); err != nil {
		return nil, fmt.Errorf("config: %s: %w", src, err)
	}
	dk, src, err := l.secret("data-key-file", "WXPHONE_DATA_KEY", "WXPHONE_DATA_KEY_FILE")
	if err != nil {
		return nil, err
	}
	if dk != "" {
		if c.keyring, err = seal.ParseKeys(dk); err != nil {
			return nil, fmt.Errorf("config: %s: %w", src, err)
		}
		c.DataKeySet = true
	} else {
		c.keyring = seal.NewRandomKeyring()
	}
	ru, src, err := l.secret("redis-url-file", "REDIS_URL", "REDIS_URL_FILE")
	if err != nil {
		return nil, err
	}
	if ru != "" {
		if err := checkRedisURL(ru); err != nil {
			return nil, fmt.Errorf("config: %s: %w", src, err)
		}
		c.RedisURL = wxphone.Secret(ru)
		if !c.DataKeySet {
			return nil, fmt.Errorf("config: %s is set, so WXPHONE_DATA_KEY (or WXPHONE_DATA_KEY_FILE, --data-key-file) is required: every replica must seal and find shared data with the same key", src)
		}
	}
	rate, src := l.plain("rate-limit", "WXPHONE_RATE_LIMIT")
	c.RateLimit = DefaultRateLimit
	if rate != "" {
		c.RateLimit, err = strconv.ParseFloat(rate, 64)
		if err != nil || c.RateLimit < 0 || c.RateLimit > 1e6 {
			return nil, fmt.Errorf("config: %s: want a number of requests per second between 0 (no limit) and 1000000", src)
		}
	}
	burst, src := l.plain("rate-burst", "WXPHONE_RATE_BURST")
	c.RateBurst = max(1, int(2*c.RateLimit))
	if burst != "" {
		c.RateBurst, err = strconv.Atoi(burst)
		if err != nil || c.RateBurst < 1 || c.RateBurst > 1e6 {
			return nil, fmt.Errorf("config: %s: want a whole number between 1 and 1000000", src)
		}
	}
	for _, d := range []struct {
		flag, env string
		def       time.Duration
		dst       *time.Duration
	}{
		{"token-serve-margin", "WXPHONE_TOKEN_SERVE_MARGIN", DefaultTokenServeMargin, &c.TokenServeMargin},
		{"request-timeout", "WXPHONE_REQUEST_TIMEOUT", DefaultRequestTimeout, &c.RequestTimeout},
		{"exchange-timeout", "WXPHONE_EXCHANGE_TIMEOUT", DefaultExchangeTimeout, &c.ExchangeTimeout},
		{"shutdown-timeout", "WXPHONE_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout, &c.ShutdownTimeout},
	} {
		v, src := l.plain(d.flag, d.env)
		*d.dst = d.def
		if v != "" {
			if *d.dst, err = parseDuration(v); err != nil {
				return nil, fmt.Errorf("config: %s: %w", src, err)
			}
		}
	}
	for _, b := range []struct {
		flag, env string
		dst       *bool
	}{
		{"h2c", "WXPHONE_H2C", &c.H2C},
		{"upstream-h2c", "WXPHONE_UPSTREAM_H2C", &c.UpstreamH2C},
	} {
		v, src := l.plain(b.flag, b.env)
		if v != "" {
			if *b.dst, err = strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("config: %s: want true or false", src)
			}
		}
	}
	if c.TokenServeMargin < 10*time.Second || c.TokenServeMargin > 300*time.Second {
		src := "WXPHONE_TOKEN_SERVE_MARGIN"
		if _, ok := l.flags["token-serve-margin"]; ok {
			src = "--token-serve-margin"
		}
		return nil, fmt.Errorf("config: %s: want a duration between 10s and 300s (tokens are refreshed from 300s before expiry)", src)
	}
	if c.UpstreamH2C && !strings.HasPrefix(strings.ToLower(c.APIBase), "http://") {
		return nil, errors.New("config: WXPHONE_UPSTREAM_H2C needs a plain http:// WX_API_BASE (a loopback emulator); over https HTTP/2 is negotiated by ALPN")
	}
	pa, src := l.plain("pprof-addr", "WXPHONE_PPROF_ADDR")
	if pa != "" {
		if err := checkLoopbackAddr(pa); err != nil {
			return nil, fmt.Errorf("config: %s: %w", src, err)
		}
		c.PprofAddr = pa
	}
	if err := l.observability(c); err != nil {
		return nil, err
	}
	return c, nil
}

// checkLoopbackAddr accepts host:port with a loopback host (the profiling
// listener must never be reachable from the network).
func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("must be a loopback address such as 127.0.0.1:6060")
	}
	return nil
}

// plain returns a non-secret setting and the name of its source.
func (l *loader) plain(flagName, env string) (string, string) {
	if v, ok := l.flags[flagName]; ok {
		return strings.TrimSpace(v), "--" + flagName
	}
	return strings.TrimSpace(l.getenv(env)), env
}

// secret returns a secret setting from its file flag, its variable or its
// *_FILE variable, and the name of its source.
func (l *loader) secret(flagName, env, fileEnv string) (string, string, error) {
	if path, ok := l.flags[flagName]; ok {
		v, err := readSecretFile("--"+flagName, path)
		return v, "--" + flagName, err
	}
	v, path := l.getenv(env), l.getenv(fileEnv)
	switch {
	case v != "" && path != "":
		return "", "", fmt.Errorf("config: both %s and %s are set; set one", env, fileEnv)
	case path != "":
		v, err := readSecretFile(fileEnv, path)
		return v, fileEnv + " (" + path + ")", err
	}
	return strings.TrimSpace(v), env, nil
}

// readSecretFile reads a secret file, trimming surrounding white space.
func readSecretFile(src, path string) (string, error) {
	b, err := readFile(src, path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("config: %s: file %s is empty", src, path)
	}
	return v, nil
}

func readFile(src, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("config: %s: empty file path", src)
	}
	f, err := os.Open(path) // #nosec G304 -- the operator names the file (a *_FILE variable or flag): reading it is the point
	if err != nil {
		return nil, fmt.Errorf("config: %s: cannot read file: %w", src, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: %s: cannot read file %s: %w", src, path, err)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("config: %s: file %s is larger than %d bytes", src, path, MaxFileBytes)
	}
	return b, nil
}

// parseKeys splits a comma- or newline-separated key list and checks each
// key; errors name the key's position, never its text.
func parseKeys(s, src string) ([]wxphone.Secret, error) {
	var out []wxphone.Secret
	seen := map[string]bool{}
	n := 0
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		k := strings.TrimSpace(part)
		if k == "" {
			continue
		}
		n++
		switch {
		case len(k) < MinAPIKeyLen:
			return nil, fmt.Errorf("config: %s: key %d is shorter than %d characters", src, n, MinAPIKeyLen)
		case len(k) > 256:
			return nil, fmt.Errorf("config: %s: key %d is longer than 256 characters", src, n)
		case !valid.Printable(k):
			return nil, fmt.Errorf("config: %s: key %d must be printable ASCII without spaces", src, n)
		case seen[k]:
			return nil, fmt.Errorf("config: %s: key %d repeats an earlier key", src, n)
		}
		seen[k] = true
		out = append(out, wxphone.Secret(k))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("config: %s: no key in the list", src)
	}
	return out, nil
}

func checkSecret(src, secret string) error {
	if len(secret) > 256 || !valid.Printable(secret) {
		return fmt.Errorf("config: %s: the AppSecret must be at most 256 printable ASCII characters without spaces", src)
	}
	return nil
}

// appsFile is the format of WXPHONE_APPS_FILE.
type appsFile struct {
	Apps []appEntry `json:"apps"`
}

type appEntry struct {
	AppID      string          `json:"appid"`
	SecretEnv  string          `json:"secret_env"`
	SecretFile string          `json:"secret_file"`
	Secret     json.RawMessage `json:"secret"` // refused: never inline
	// APISecurity switches the app to the API security mode.
	APISecurity *apiSecEntry `json:"api_security"`
	// OpenIDBinding false stops openids from being sent to WeChat.
	OpenIDBinding *bool `json:"openid_binding"`
}

func (l *loader) apps() ([]App, error) {
	var apps []App
	seen := map[string]string{}
	add := func(a App, src string) error {
		if prev, dup := seen[a.AppID]; dup {
			return fmt.Errorf("config: %s: appid %s is configured twice (also in %s)", src, a.AppID, prev)
		}
		seen[a.AppID] = src
		apps = append(apps, a)
		return nil
	}
	id, idSrc := l.plain("appid", "WX_APPID")
	secret, secSrc, err := l.secret("secret-file", "WX_SECRET", "WX_SECRET_FILE")
	if err != nil {
		return nil, err
	}
	switch {
	case id != "" && secret == "":
		return nil, fmt.Errorf("config: %s is set but its AppSecret is missing: set WX_SECRET, WX_SECRET_FILE or --secret-file", idSrc)
	case id == "" && secret != "":
		return nil, fmt.Errorf("config: %s is set but WX_APPID (--appid) is not", secSrc)
	case id != "":
		if !valid.AppID(id) {
			return nil, fmt.Errorf("config: %s: the appid must be %s", idSrc, valid.AppIDRule)
		}
		if err := checkSecret(secSrc, secret); err != nil {
			return nil, err
		}
		a := App{AppID: id, Secret: wxphone.Secret(secret)}
		if sec, set := l.apiSecFromEnv(); set {
			if a.APISecurity, err = sec.load(id, idSrc, apiSecEnvNames); err != nil {
				return nil, err
			}
		}
		if v, src := l.plain("openid-binding", "WX_OPENID_BINDING"); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("config: %s: want true or false", src)
			}
			a.NoOpenIDBinding = !on
		}
		if err := add(a, idSrc); err != nil {
			return nil, err
		}
	}
	if _, set := l.apiSecFromEnv(); set && id == "" {
		return nil, errors.New("config: WX_API_* (API security mode) is set but WX_APPID is not; for the apps file use each app's \"api_security\"")
	}
	path, src := l.plain("apps-file", "WXPHONE_APPS_FILE")
	if path != "" {
		b, err := readFile(src, path)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		var f appsFile
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("config: %s: %s: %s", src, path, scrubJSONError(err))
		}
		if dec.More() {
			return nil, fmt.Errorf("config: %s: %s: trailing data after the JSON object", src, path)
		}
		if len(f.Apps) == 0 {
			return nil, fmt.Errorf("config: %s: %s: \"apps\" lists no app", src, path)
		}
		for i, e := range f.Apps {
			where := fmt.Sprintf("%s: %s: app %d", src, path, i+1)
			if !valid.AppID(e.AppID) {
				return nil, fmt.Errorf("config: %s: \"appid\" must be %s", where, valid.AppIDRule)
			}
			where += " (" + e.AppID + ")"
			if len(e.Secret) > 0 {
				return nil, fmt.Errorf("config: %s: inline \"secret\" is not allowed; use \"secret_env\" (a variable name) or \"secret_file\" (a path)", where)
			}
			var sec string
			switch {
			case e.SecretEnv != "" && e.SecretFile != "":
				return nil, fmt.Errorf("config: %s: set one of \"secret_env\" and \"secret_file\", not both", where)
			case e.SecretEnv != "":
				if sec = strings.TrimSpace(l.getenv(e.SecretEnv)); sec == "" {
					return nil, fmt.Errorf("config: %s: environment variable %s (secret_env) is unset or empty", where, e.SecretEnv)
				}
			case e.SecretFile != "":
				if sec, err = readSecretFile(where+" secret_file", e.SecretFile); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("config: %s: \"secret_env\" or \"secret_file\" is required", where)
			}
			if err := checkSecret(where, sec); err != nil {
				return nil, err
			}
			a := App{AppID: e.AppID, Secret: wxphone.Secret(sec)}
			if e.APISecurity != nil {
				if a.APISecurity, err = e.APISecurity.load(e.AppID, where+" api_security", apiSecJSONNames); err != nil {
					return nil, err
				}
			}
			if e.OpenIDBinding != nil {
				a.NoOpenIDBinding = !*e.OpenIDBinding
			}
			if err := add(a, where); err != nil {
				return nil, err
			}
		}
	}
	if len(apps) == 0 {
		return nil, errors.New("config: no Mini Program configured: set WX_APPID with WX_SECRET (or WX_SECRET_FILE / --secret-file), or WXPHONE_APPS_FILE")
	}
	return apps, nil
}

// scrubJSONError describes a decoding error of the apps file without
// quoting values (an unknown field's name is kept: it is a key, not a
// value).
func scrubJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ") + " (allowed: apps, appid, secret_env, secret_file, api_security, openid_binding; in api_security: sym_key_file, sym_sn, private_key_file, private_key_sn, platform_cert_file, platform_cert_sn)"
	case errors.Is(err, io.EOF):
		return "empty file"
	}
	return "invalid JSON"
}

func checkRedisURL(s string) error {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return errors.New("not a valid URL: want scheme://host…")
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
	default:
		return errors.New("the scheme must be redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster")
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	if host, _, _ := strings.Cut(rest, "/"); strings.TrimSpace(host) == "" || strings.ContainsAny(host, " \t\n") {
		return errors.New("the URL has no host")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, errors.New("want debug, info, warn or error")
}

// parseDuration accepts a Go duration ("10s", "1m30s") or whole seconds
// ("10"), between 1 ms and 10 minutes.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, errors.New("want a duration such as 10s or 1m, or whole seconds")
		}
		d = time.Duration(n) * time.Second
	}
	if d < time.Millisecond || d > 10*time.Minute {
		return 0, errors.New("want a duration between 1ms and 10m")
	}
	return d, nil
}
