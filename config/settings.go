package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/valid"
	"github.com/wxphone/wxphone/quota"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/seal"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
)

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

// setting is one row of the configuration table: the setting as Settings
// lists it, and what its value does. set parses a value that is set, or
// else the Default (unless derived), into the Config; its error names no
// source (Load adds it). A row without set belongs to the apps group,
// which apps reads whole.
type setting struct {
	Setting
	set func(c *Config, v string) error
	// derived marks a Default that describes a value computed from other
	// settings (Load computes it; the text is not parsed).
	derived bool
}

// apiSecHelp is the help of the six WX_API_* settings of the single app's
// API security mode, in apiSecEnvNames order.
var apiSecHelp = [6]string{
	"API security mode: file holding the base64 symmetric key (single app; all six WX_API_* switch the mode on)",
	"API security mode: the symmetric key's number",
	"API security mode: the app private key (PKCS#1 or PKCS#8 PEM)",
	"API security mode: the app private key's number",
	"API security mode: PEM file with one or more platform certificates",
	"API security mode: the platform certificates' numbers, comma-separated, in file order",
}

// settings is the table of every setting, in documentation order: each
// declares its variable, flag, default and parser once. Defaults are the
// constructors' own (server, service, quota, wxphone).
var settings = func() []setting {
	t := []setting{
		{Setting: Setting{Env: "WXPHONE_ADDR", Flag: "addr", Default: server.DefaultAddr, Help: "listen address"},
			set: func(c *Config, v string) error { c.Addr = v; return nil }},
		{Setting: Setting{Env: "WX_APPID", Flag: "appid", Help: "appid of the Mini Program (single-app setup)"}},
		{Setting: Setting{Env: "WX_SECRET", FileEnv: "WX_SECRET_FILE", Flag: "secret-file", Secret: true, Help: "AppSecret of WX_APPID"}},
		{Setting: Setting{Env: "WXPHONE_APPS_FILE", Flag: "apps-file", Help: "JSON file listing several Mini Programs, each with secret_env or secret_file"}},
	}
	for i, env := range apiSecEnvNames {
		t = append(t, setting{Setting: Setting{Env: env, Flag: apiSecFlag(env), Help: apiSecHelp[i]}})
	}
	return append(t,
		setting{Setting: Setting{Env: "WX_OPENID_BINDING", Flag: "openid-binding", Default: "true", Help: "send a request's openid to WeChat, which checks that the code belongs to that user (single app)"}},
		setting{Setting: Setting{Env: "WX_API_BASE", Flag: "api-base", Default: wxphone.DefaultBaseURL, Help: "WeChat API base URL (https; http only for loopback)"},
			set: func(c *Config, v string) error {
				_, err := wxphone.ParseBaseURL(v)
				c.APIBase = v
				return err
			}},
		setting{Setting: Setting{Env: "WXPHONE_API_KEYS", FileEnv: "WXPHONE_API_KEYS_FILE", Flag: "api-keys-file", Secret: true,
			Help: "comma-separated bearer keys allowed to exchange phone codes (required; each at least 16 characters)"},
			set: keys(func(c *Config) *[]wxphone.Secret { return &c.APIKeys })},
		setting{Setting: Setting{Env: "WXPHONE_TOKEN_API_KEYS", FileEnv: "WXPHONE_TOKEN_API_KEYS_FILE", Flag: "token-api-keys-file", Secret: true,
			Help: "comma-separated bearer keys allowed on the central access-token endpoints"},
			set: keys(func(c *Config) *[]wxphone.Secret { return &c.TokenAPIKeys })},
		setting{Setting: Setting{Env: "WXPHONE_DATA_KEY", FileEnv: "WXPHONE_DATA_KEY_FILE", Flag: "data-key-file", Secret: true,
			Help: "comma-separated base64 32-byte data keys, first seals (default: a random per-process key)"},
			set: func(c *Config, v string) (err error) {
				c.keyring, err = seal.ParseKeys(v)
				c.DataKeySet = err == nil
				return err
			}},
		setting{Setting: Setting{Env: "REDIS_URL", FileEnv: "REDIS_URL_FILE", Flag: "redis-url-file", Secret: true,
			Help: "Redis URL switching on fleet mode (redis://, rediss://, redis+sentinel://, redis+cluster://); needs WXPHONE_DATA_KEY"},
			set: func(c *Config, v string) error {
				c.RedisURL = wxphone.Secret(v)
				return redis.CheckURL(v)
			}},
		setting{Setting: Setting{Env: "WXPHONE_LOG_LEVEL", Flag: "log-level", Default: "info", Help: "log level: debug, info, warn or error"},
			set: func(c *Config, v string) (err error) { c.LogLevel, err = parseLevel(v); return err }},
		setting{Setting: Setting{Env: "WXPHONE_RATE_LIMIT", Flag: "rate-limit", Default: "0", Help: "requests per second per API key (one bucket per key, fleet-wide with Redis); 0 disables"},
			set: func(c *Config, v string) (err error) {
				c.RateLimit, err = strconv.ParseFloat(v, 64)
				if err != nil || c.RateLimit < 0 || c.RateLimit > 1e6 {
					return errors.New("want a number of requests per second between 0 (no limit) and 1000000")
				}
				return nil
			}},
		setting{Setting: Setting{Env: "WXPHONE_RATE_BURST", Flag: "rate-burst", Default: "2 × rate", Help: "burst per API key"}, derived: true,
			set: func(c *Config, v string) (err error) {
				c.RateBurst, err = strconv.Atoi(v)
				if err != nil || c.RateBurst < 1 || c.RateBurst > 1e6 {
					return errors.New("want a whole number between 1 and 1000000")
				}
				return nil
			}},
		setting{Setting: Setting{Env: "WXPHONE_TOKEN_SERVE_MARGIN", Flag: "token-serve-margin", Default: wxphone.DefaultServeMargin.String(),
			Help: "least life a token may have left when a request uses it (10s..300s); the refresh starts at 300s"},
			set: duration(func(c *Config) *time.Duration { return &c.TokenServeMargin }, 10*time.Second, 300*time.Second, "10s and 300s (tokens are refreshed from 300s before expiry)")},
		setting{Setting: Setting{Env: "WXPHONE_REQUEST_TIMEOUT", Flag: "request-timeout", Default: server.DefaultRequestTimeout.String(), Help: "per-request deadline (Go duration, or seconds)"},
			set: timeout(func(c *Config) *time.Duration { return &c.RequestTimeout })},
		setting{Setting: Setting{Env: "WXPHONE_EXCHANGE_TIMEOUT", Flag: "exchange-timeout", Default: service.DefaultExchangeTimeout.String(), Help: "bound of one upstream exchange, detached from the request"},
			set: timeout(func(c *Config) *time.Duration { return &c.ExchangeTimeout })},
		setting{Setting: Setting{Env: "WXPHONE_SHUTDOWN_TIMEOUT", Flag: "shutdown-timeout", Default: server.DefaultShutdownTimeout.String(), Help: "bound of a graceful shutdown"},
			set: timeout(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
		setting{Setting: Setting{Env: "WXPHONE_H2C", Flag: "h2c", Default: "false", Help: "also accept unencrypted HTTP/2 (h2c, prior knowledge) on the listen address"},
			set: boolean(func(c *Config) *bool { return &c.H2C })},
		setting{Setting: Setting{Env: "WXPHONE_UPSTREAM_H2C", Flag: "upstream-h2c", Default: "false", Help: "speak h2c to an http:// (loopback, emulator) WX_API_BASE"},
			set: boolean(func(c *Config) *bool { return &c.UpstreamH2C })},
		setting{Setting: Setting{Env: "WXPHONE_PPROF_ADDR", Flag: "pprof-addr", Help: "loopback address serving net/http/pprof (debugging; off when empty)"},
			set: func(c *Config, v string) error { c.PprofAddr = v; return checkLoopbackAddr(v) }},
		setting{Setting: Setting{Env: "WXPHONE_ADMIN_ADDR", Flag: "admin-addr",
			Help: "address serving /metrics (and pprof with WXPHONE_ADMIN_PPROF) instead of the API address, e.g. :9090 (default: /metrics on the API address)"},
			set: func(c *Config, v string) error {
				c.AdminAddr = v
				if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
					return errors.New("want host:port or :port, e.g. :9090")
				}
				if v == c.Addr {
					return errors.New("the admin address must differ from the listen address")
				}
				return nil
			}},
		setting{Setting: Setting{Env: "WXPHONE_ADMIN_PPROF", Flag: "admin-pprof", Default: "false", Help: "also serve net/http/pprof under /debug/pprof/ on WXPHONE_ADMIN_ADDR"},
			set: boolean(func(c *Config) *bool { return &c.AdminPprof })},
		setting{Setting: Setting{Env: "WXPHONE_QUOTA_INTERVAL", Flag: "quota-interval", Default: quota.DefaultInterval.String(),
			Help: "time between two probes of WeChat's daily quotas per app (1m..24h; 0 or off disables)"},
			set: func(c *Config, v string) (err error) {
				if v == "0" || strings.EqualFold(v, "off") {
					c.QuotaInterval = 0
					return nil
				}
				c.QuotaInterval, err = parseDuration(v, time.Minute, 24*time.Hour, "1m and 24h, or 0 (or off) to disable (quota/get has a daily quota of its own)")
				return err
			}},
	)
}()

// Settings lists every setting, in documentation order.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = s.Setting
	}
	return out
}

// PrintUsage writes the flags and variables of serve to w.
func PrintUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: wxphone serve [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag has an environment variable; the flag wins. Secrets are read only from")
	fmt.Fprintln(w, "the environment or from files: their flags take a FILE path, never the value.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, s := range settings {
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

// valueFlag is the flag someone might try to pass a secret setting's
// value with ("secret" for --secret-file), which Load refuses.
func (s Setting) valueFlag() string { return strings.TrimSuffix(s.Flag, "-file") }

// alternatives names where a secret setting may come from.
func (s Setting) alternatives() string { return s.Env + ", " + s.FileEnv + " or --" + s.Flag }

// keys parses an API key list into the field dst points to.
func keys(dst func(*Config) *[]wxphone.Secret) func(*Config, string) error {
	return func(c *Config, v string) (err error) {
		*dst(c), err = parseKeys(v)
		return err
	}
}

// boolean parses true or false into the field dst points to.
func boolean(dst func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) (err error) {
		if *dst(c), err = strconv.ParseBool(v); err != nil {
			return errors.New("want true or false")
		}
		return nil
	}
}

// duration parses a duration between lo and hi (described by between)
// into the field dst points to.
func duration(dst func(*Config) *time.Duration, lo, hi time.Duration, between string) func(*Config, string) error {
	return func(c *Config, v string) (err error) {
		*dst(c), err = parseDuration(v, lo, hi, between)
		return err
	}
}

// timeout is duration between 1 ms and 10 minutes.
func timeout(dst func(*Config) *time.Duration) func(*Config, string) error {
	return duration(dst, time.Millisecond, 10*time.Minute, "1ms and 10m")
}

// parseDuration accepts a Go duration ("10s", "1m30s") or whole seconds
// ("10") between lo and hi, described by between.
func parseDuration(s string, lo, hi time.Duration, between string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, errors.New("want a duration such as 10s or 1m, or whole seconds, between " + between)
		}
		d = time.Duration(n) * time.Second
	}
	if d < lo || d > hi {
		return 0, errors.New("want a duration between " + between)
	}
	return d, nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "info":
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

// parseKeys splits a comma- or newline-separated key list and checks each
// key; errors name the key's position, never its text.
func parseKeys(s string) ([]wxphone.Secret, error) {
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
		case len(k) < server.MinAPIKeyLen:
			return nil, fmt.Errorf("key %d is shorter than %d characters", n, server.MinAPIKeyLen)
		case len(k) > 256:
			return nil, fmt.Errorf("key %d is longer than 256 characters", n)
		case !valid.Printable(k):
			return nil, fmt.Errorf("key %d must be printable ASCII without spaces", n)
		case seen[k]:
			return nil, fmt.Errorf("key %d repeats an earlier key", n)
		}
		seen[k] = true
		out = append(out, wxphone.Secret(k))
	}
	if len(out) == 0 {
		return nil, errors.New("no key in the list")
	}
	return out, nil
}
