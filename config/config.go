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
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/seal"
)

// MaxFileBytes bounds a secret, key or apps file.
const MaxFileBytes = 1 << 20

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

// Format prints the App with its AppSecret redacted, for every verb, as
// fmt would print it: see Config.Format.
func (a App) Format(f fmt.State, verb rune) {
	type plain App
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(a))
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

// Format prints the Config with every secret redacted, for every verb, as
// fmt would print it. Without it, fmt would print a *Config met inside
// another value with %s or %q as "%!s(*Config=&{…})" and, in that error
// path, call no method of the fields: the wxphone.Secret values inside
// would print in full.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c))
}

// Keyring returns the data keyring (WXPHONE_DATA_KEY, or a random key).
func (c *Config) Keyring() *seal.Keyring { return c.keyring }

// loader resolves settings from flags and the environment.
type loader struct {
	getenv func(string) string
	flags  map[string]string // flags given
	vals   map[string]value  // every setting that is set, by flag name
}

// value is a setting's value and the name of its source for messages: the
// flag ("--addr"), the variable, or the *_FILE variable and its path.
type value struct{ v, src string }

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
		if !strings.HasPrefix(a, "-") {
			continue
		}
		for _, s := range settings {
			if s.Secret && name == s.valueFlag() {
				return nil, fmt.Errorf("config: --%s: secrets are not accepted on the command line (they would show in ps); use %s", name, s.alternatives())
			}
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, s := range settings {
		fs.String(s.Flag, "", s.Help)
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
	l := &loader{getenv: getenv, flags: map[string]string{}, vals: map[string]value{}}
	fs.Visit(func(f *flag.Flag) { l.flags[f.Name] = f.Value.String() })
	return l.load()
}

// load reads every setting of the table, parses each (or its default)
// into a Config, then builds the apps and checks what one setting
// requires of another.
func (l *loader) load() (*Config, error) {
	for _, s := range settings {
		v, src, err := l.read(s.Setting)
		if err != nil {
			return nil, err
		}
		if v != "" {
			l.vals[s.Flag] = value{v, src}
		}
	}
	c := &Config{}
	for _, s := range settings {
		v, ok := l.vals[s.Flag]
		switch {
		case s.set == nil:
		case ok:
			if err := s.set(c, v.v); err != nil {
				return nil, fmt.Errorf("config: %s: %w", v.src, err)
			}
		case s.Default != "" && !s.derived:
			if err := s.set(c, s.Default); err != nil {
				return nil, fmt.Errorf("config: the default of %s: %w", s.Env, err)
			}
		}
	}
	var err error
	if c.Apps, err = l.apps(); err != nil {
		return nil, err
	}
	if len(c.APIKeys) == 0 {
		return nil, errors.New("config: no API key: set WXPHONE_API_KEYS (comma-separated), WXPHONE_API_KEYS_FILE or --api-keys-file; serve refuses to start without one")
	}
	if c.keyring == nil {
		c.keyring = seal.NewRandomKeyring()
	}
	if v, ok := l.vals["redis-url-file"]; ok && !c.DataKeySet {
		return nil, fmt.Errorf("config: %s is set, so WXPHONE_DATA_KEY (or WXPHONE_DATA_KEY_FILE, --data-key-file) is required: every replica must seal and find shared data with the same key", v.src)
	}
	if _, ok := l.vals["rate-burst"]; !ok {
		c.RateBurst = max(1, int(2*c.RateLimit))
	}
	if c.UpstreamH2C && !strings.HasPrefix(strings.ToLower(c.APIBase), "http://") {
		return nil, errors.New("config: WXPHONE_UPSTREAM_H2C needs a plain http:// WX_API_BASE (a loopback emulator); over https HTTP/2 is negotiated by ALPN")
	}
	if v, ok := l.vals["admin-pprof"]; ok && c.AdminPprof && c.AdminAddr == "" {
		return nil, fmt.Errorf("config: %s needs WXPHONE_ADMIN_ADDR: the profiler is never served on the API address", v.src)
	}
	return c, nil
}

// get returns a setting that is set, by flag name, and its source; "" when
// unset.
func (l *loader) get(flagName string) (string, string) {
	v := l.vals[flagName]
	return v.v, v.src
}

// read returns a setting's value, trimmed, and the name of its source: a
// plain setting from its flag or variable, a secret one from its file
// flag, its variable or its *_FILE variable (setting both variables is an
// error).
func (l *loader) read(s Setting) (string, string, error) {
	if v, ok := l.flags[s.Flag]; ok {
		if !s.Secret {
			return strings.TrimSpace(v), "--" + s.Flag, nil
		}
		v, err := readSecretFile("--"+s.Flag, v)
		return v, "--" + s.Flag, err
	}
	v := l.getenv(s.Env)
	if !s.Secret {
		return strings.TrimSpace(v), s.Env, nil
	}
	switch path := l.getenv(s.FileEnv); {
	case v != "" && path != "":
		return "", "", fmt.Errorf("config: both %s and %s are set; set one", s.Env, s.FileEnv)
	case path != "":
		v, err := readSecretFile(s.FileEnv, path)
		return v, s.FileEnv + " (" + path + ")", err
	}
	return strings.TrimSpace(v), s.Env, nil
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
