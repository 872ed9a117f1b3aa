package config_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/config"
)

const (
	secret   = "app-secret-0123456789abcdef"
	key1     = "api-key-one-0123456789"
	key2     = "api-key-two-0123456789"
	tokKey   = "token-key-0123456789ab"
	dataKey  = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // 32 bytes
	redisURL = "redis://user:redis-password-xyz@127.0.0.1:6379/0"
)

// secretsOf are the values no error message may contain.
var secretsOf = []string{secret, key1, key2, tokKey, dataKey, "redis-password-xyz", "short-key", "not-base64!!", "inline-secret-value", "positional-secret-value"}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func base() map[string]string {
	return map[string]string{"WX_APPID": "wx1111111111111111", "WX_SECRET": secret, "WXPHONE_API_KEYS": key1}
}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "<unset>" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func TestLoad(t *testing.T) {
	secretFile := write(t, "secret", secret+"\n")
	keysFile := write(t, "keys", key1+"\n"+key2+"\n")
	dataKeyFile := write(t, "datakey", dataKey+"\n")
	redisFile := write(t, "redis", redisURL)
	emptyFile := write(t, "empty", "\n")
	appsOK := write(t, "apps.json", `{"apps":[{"appid":"wx2222222222222222","secret_env":"SHOP_SECRET"},{"appid":"wx3333333333333333","secret_file":"`+secretFile+`"}]}`)
	appsUnknown := write(t, "apps-unknown.json", `{"apps":[{"appid":"wx2222222222222222","secret_env":"SHOP_SECRET","secert_file":"x"}]}`)
	appsInline := write(t, "apps-inline.json", `{"apps":[{"appid":"wx2222222222222222","secret":"inline-secret-value"}]}`)
	appsDup := write(t, "apps-dup.json", `{"apps":[{"appid":"wx1111111111111111","secret_env":"SHOP_SECRET"}]}`)
	appsBoth := write(t, "apps-both.json", `{"apps":[{"appid":"wx2222222222222222","secret_env":"SHOP_SECRET","secret_file":"`+secretFile+`"}]}`)
	appsNoSource := write(t, "apps-none.json", `{"apps":[{"appid":"wx2222222222222222"}]}`)
	appsBadJSON := write(t, "apps-bad.json", `{"apps":[`)
	appsEmpty := write(t, "apps-empty.json", `{"apps":[]}`)
	missing := filepath.Join(t.TempDir(), "missing")

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // substring of the error; "" for success
		check   func(t *testing.T, c *config.Config)
	}{
		{name: "minimal", env: base(), check: func(t *testing.T, c *config.Config) {
			if c.Addr != ":8080" || len(c.Apps) != 1 || c.Apps[0].AppID != "wx1111111111111111" || c.Apps[0].Secret.Reveal() != secret {
				t.Errorf("%+v", c)
			}
			if c.APIBase != "https://api.weixin.qq.com" || c.LogLevel != slog.LevelInfo || c.RateLimit != 0 || c.TokenServeMargin != time.Minute {
				t.Errorf("defaults: %+v", c)
			}
			if c.RequestTimeout != 10*time.Second || c.ExchangeTimeout != 15*time.Second || c.ShutdownTimeout != 30*time.Second {
				t.Errorf("timeouts: %+v", c)
			}
			if c.DataKeySet || c.Keyring() == nil || c.RedisURL != "" || len(c.TokenAPIKeys) != 0 {
				t.Errorf("optional: %+v", c)
			}
			if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, secret) || strings.Contains(s, key1) {
				t.Errorf("printing the config reveals a secret: %s", s)
			}
		}},
		{name: "everything from the environment", env: with(base(),
			"WXPHONE_ADDR", "127.0.0.1:9000", "WX_API_BASE", "http://127.0.0.1:8081", "WXPHONE_API_KEYS", key1+", "+key2+",",
			"WXPHONE_TOKEN_API_KEYS", tokKey, "WXPHONE_LOG_LEVEL", "DEBUG", "WXPHONE_DATA_KEY", dataKey, "REDIS_URL", redisURL,
			"WXPHONE_RATE_LIMIT", "5.5", "WXPHONE_RATE_BURST", "7", "WXPHONE_REQUEST_TIMEOUT", "3s", "WXPHONE_EXCHANGE_TIMEOUT", "20",
			"WXPHONE_SHUTDOWN_TIMEOUT", "1m"),
			check: func(t *testing.T, c *config.Config) {
				if c.Addr != "127.0.0.1:9000" || c.APIBase != "http://127.0.0.1:8081" || len(c.APIKeys) != 2 || len(c.TokenAPIKeys) != 1 {
					t.Errorf("%+v", c)
				}
				if c.LogLevel != slog.LevelDebug || !c.DataKeySet || c.Keyring().Len() != 1 || c.RedisURL.Reveal() != redisURL {
					t.Errorf("%+v", c)
				}
				if c.RateLimit != 5.5 || c.RateBurst != 7 || c.RequestTimeout != 3*time.Second || c.ExchangeTimeout != 20*time.Second || c.ShutdownTimeout != time.Minute {
					t.Errorf("%+v", c)
				}
			}},
		{name: "flags win over the environment", args: []string{"--addr", ":7000", "-log-level=warn", "--rate-limit", "0", "--request-timeout=2s"},
			env: with(base(), "WXPHONE_ADDR", ":9000", "WXPHONE_LOG_LEVEL", "debug"), check: func(t *testing.T, c *config.Config) {
				if c.Addr != ":7000" || c.LogLevel != slog.LevelWarn || c.RateLimit != 0 || c.RateBurst != 1 || c.RequestTimeout != 2*time.Second {
					t.Errorf("%+v", c)
				}
			}},
		{name: "secrets from *_FILE variables", env: map[string]string{"WX_APPID": "wx1111111111111111", "WX_SECRET_FILE": secretFile,
			"WXPHONE_API_KEYS_FILE": keysFile, "WXPHONE_DATA_KEY_FILE": dataKeyFile, "REDIS_URL_FILE": redisFile},
			check: func(t *testing.T, c *config.Config) {
				if c.Apps[0].Secret.Reveal() != secret || len(c.APIKeys) != 2 || !c.DataKeySet || c.RedisURL.Reveal() != redisURL {
					t.Errorf("%+v", c)
				}
			}},
		{name: "secrets from file flags", args: []string{"--appid", "wx1111111111111111", "--secret-file", secretFile, "--api-keys-file", keysFile,
			"--token-api-keys-file", keysFile, "--data-key-file", dataKeyFile, "--redis-url-file", redisFile},
			env: map[string]string{}, check: func(t *testing.T, c *config.Config) {
				if c.Apps[0].Secret.Reveal() != secret || len(c.APIKeys) != 2 || len(c.TokenAPIKeys) != 2 || !c.DataKeySet {
					t.Errorf("%+v", c)
				}
			}},
		{name: "apps file", env: with(base(), "WXPHONE_APPS_FILE", appsOK, "SHOP_SECRET", "shop-secret-0123456789"), check: func(t *testing.T, c *config.Config) {
			if len(c.Apps) != 3 || c.Apps[1].AppID != "wx2222222222222222" || c.Apps[1].Secret.Reveal() != "shop-secret-0123456789" || c.Apps[2].Secret.Reveal() != secret {
				t.Errorf("%+v", c.Apps)
			}
		}},
		{name: "apps file alone", env: map[string]string{"WXPHONE_APPS_FILE": appsOK, "SHOP_SECRET": "shop-secret-0123456789", "WXPHONE_API_KEYS": key1}, check: func(t *testing.T, c *config.Config) {
			if len(c.Apps) != 2 {
				t.Errorf("%+v", c.Apps)
			}
		}},

		{name: "help", args: []string{"-h"}, env: base(), wantErr: "flag: help requested"},
		{name: "secret as a flag", args: []string{"--secret=" + secret}, env: base(), wantErr: "--secret: secrets are not accepted on the command line"},
		{name: "api keys as a flag", args: []string{"-api-keys", key2}, env: base(), wantErr: "WXPHONE_API_KEYS_FILE or --api-keys-file"},
		{name: "data key as a flag", args: []string{"--data-key", dataKey}, env: base(), wantErr: "--data-key: secrets are not accepted"},
		{name: "redis url as a flag", args: []string{"--redis-url=" + redisURL}, env: base(), wantErr: "--redis-url: secrets are not accepted"},
		{name: "positional argument", args: []string{"positional-secret-value"}, env: base(), wantErr: "unexpected positional argument"},
		{name: "unknown flag", args: []string{"--nope"}, env: base(), wantErr: "flag provided but not defined"},
		{name: "no app", env: map[string]string{"WXPHONE_API_KEYS": key1}, wantErr: "no Mini Program configured"},
		{name: "appid without secret", env: with(base(), "WX_SECRET", "<unset>"), wantErr: "WX_APPID is set but its AppSecret is missing"},
		{name: "secret without appid", env: with(base(), "WX_APPID", "<unset>"), wantErr: "WX_SECRET is set but WX_APPID"},
		{name: "bad appid", env: with(base(), "WX_APPID", "wx 1"), wantErr: "WX_APPID: the appid must be"},
		{name: "secret with a space", env: with(base(), "WX_SECRET", "two words"), wantErr: "WX_SECRET: the AppSecret must be"},
		{name: "secret and secret file", env: with(base(), "WX_SECRET_FILE", secretFile), wantErr: "both WX_SECRET and WX_SECRET_FILE are set"},
		{name: "unreadable secret file", env: with(base(), "WX_SECRET", "<unset>", "WX_SECRET_FILE", missing), wantErr: "WX_SECRET_FILE: cannot read file"},
		{name: "empty secret file", args: []string{"--secret-file", emptyFile}, env: with(base(), "WX_SECRET", "<unset>"), wantErr: "--secret-file: file " + emptyFile + " is empty"},
		{name: "no API key", env: with(base(), "WXPHONE_API_KEYS", "<unset>"), wantErr: "no API key"},
		{name: "rate limit set", env: with(base(), "WXPHONE_RATE_LIMIT", "200"), check: func(t *testing.T, c *config.Config) {
			if c.RateLimit != 200 || c.RateBurst != 400 {
				t.Errorf("rate %v burst %d, want 200 and 400", c.RateLimit, c.RateBurst)
			}
		}},
		{name: "token serve margin", args: []string{"--token-serve-margin", "90s"}, env: base(), check: func(t *testing.T, c *config.Config) {
			if c.TokenServeMargin != 90*time.Second {
				t.Errorf("serve margin %v, want 90s", c.TokenServeMargin)
			}
		}},
		{name: "token serve margin too small", env: with(base(), "WXPHONE_TOKEN_SERVE_MARGIN", "5s"), wantErr: "WXPHONE_TOKEN_SERVE_MARGIN: want a duration between 10s and 300s"},
		{name: "token serve margin too large", args: []string{"--token-serve-margin", "301"}, env: base(), wantErr: "--token-serve-margin: want a duration between 10s and 300s"},
		{name: "short API key", env: with(base(), "WXPHONE_API_KEYS", key1+",short-key"), wantErr: "WXPHONE_API_KEYS: key 2 is shorter than 16"},
		{name: "duplicate API key", env: with(base(), "WXPHONE_API_KEYS", key1+","+key1), wantErr: "key 2 repeats"},
		{name: "API key with a space", env: with(base(), "WXPHONE_API_KEYS", "api key with spaces 0123"), wantErr: "key 1 must be printable"},
		{name: "short token key", env: with(base(), "WXPHONE_TOKEN_API_KEYS", "short-key"), wantErr: "WXPHONE_TOKEN_API_KEYS: key 1 is shorter"},
		{name: "unreadable keys file", args: []string{"--api-keys-file", missing}, env: base(), wantErr: "--api-keys-file: cannot read file"},
		{name: "plain http base URL", env: with(base(), "WX_API_BASE", "http://api.weixin.qq.com"), wantErr: "WX_API_BASE: wxphone: plain http base URL allowed only for loopback"},
		{name: "relative base URL", args: []string{"--api-base", "api.weixin.qq.com"}, env: base(), wantErr: "--api-base: wxphone: base URL must be absolute"},
		{name: "bad data key", env: with(base(), "WXPHONE_DATA_KEY", "not-base64!!"), wantErr: "WXPHONE_DATA_KEY: seal: key 1 is not base64"},
		{name: "short data key", env: with(base(), "WXPHONE_DATA_KEY", dataKey+",AAEC"), wantErr: "key 2 decodes to 3 bytes"},
		{name: "bad redis scheme", env: with(base(), "REDIS_URL", "http://user:redis-password-xyz@host"), wantErr: "REDIS_URL: the scheme must be redis"},
		{name: "redis URL without a host", env: with(base(), "REDIS_URL", "redis://user:redis-password-xyz@/0"), wantErr: "REDIS_URL: the URL has no host"},
		{name: "redis URL without a scheme", env: with(base(), "REDIS_URL", "user:redis-password-xyz@host:6379"), wantErr: "REDIS_URL: not a valid URL"},
		{name: "redis without a data key", env: with(base(), "REDIS_URL", "redis://user:redis-password-xyz@127.0.0.1:6379/0"), wantErr: "REDIS_URL is set, so WXPHONE_DATA_KEY"},
		{name: "bad log level", env: with(base(), "WXPHONE_LOG_LEVEL", "loud"), wantErr: "WXPHONE_LOG_LEVEL: want debug"},
		{name: "bad rate", env: with(base(), "WXPHONE_RATE_LIMIT", "-1"), wantErr: "WXPHONE_RATE_LIMIT"},
		{name: "bad burst", args: []string{"--rate-burst", "0"}, env: base(), wantErr: "--rate-burst: want a whole number"},
		{name: "bad duration", env: with(base(), "WXPHONE_REQUEST_TIMEOUT", "soon"), wantErr: "WXPHONE_REQUEST_TIMEOUT: want a duration"},
		{name: "zero duration", args: []string{"--shutdown-timeout", "0s"}, env: base(), wantErr: "--shutdown-timeout: want a duration between"},
		{name: "apps file missing", env: with(base(), "WXPHONE_APPS_FILE", missing), wantErr: "WXPHONE_APPS_FILE: cannot read file"},
		{name: "apps file unknown field", env: with(base(), "WXPHONE_APPS_FILE", appsUnknown, "SHOP_SECRET", "x-secret"), wantErr: `unknown field "secert_file"`},
		{name: "apps file inline secret", env: with(base(), "WXPHONE_APPS_FILE", appsInline), wantErr: `inline "secret" is not allowed`},
		{name: "apps file duplicate appid", env: with(base(), "WXPHONE_APPS_FILE", appsDup, "SHOP_SECRET", "shop-secret-0123456789"), wantErr: "appid wx1111111111111111 is configured twice"},
		{name: "apps file unset secret_env", env: with(base(), "WXPHONE_APPS_FILE", appsOK), wantErr: "environment variable SHOP_SECRET (secret_env) is unset or empty"},
		{name: "apps file two sources", env: with(base(), "WXPHONE_APPS_FILE", appsBoth, "SHOP_SECRET", "x"), wantErr: "not both"},
		{name: "apps file no source", env: with(base(), "WXPHONE_APPS_FILE", appsNoSource), wantErr: `"secret_env" or "secret_file" is required`},
		{name: "apps file bad JSON", env: with(base(), "WXPHONE_APPS_FILE", appsBadJSON), wantErr: "invalid JSON"},
		{name: "apps file empty list", env: with(base(), "WXPHONE_APPS_FILE", appsEmpty), wantErr: "lists no app"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			c, err := config.Load(tc.args, func(k string) string { return env[k] })
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
			}
			for _, s := range secretsOf {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error echoes a secret: %q", err)
				}
			}
			if tc.name == "help" && !errors.Is(err, config.ErrHelp) {
				t.Errorf("help: %v is not ErrHelp", err)
			}
		})
	}
}

// TestDocsCoverSettings: docs/configuration.md and the usage text describe
// every variable and flag.
func TestDocsCoverSettings(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var usage strings.Builder
	config.PrintUsage(&usage)
	for _, s := range config.Settings() {
		for _, name := range []string{"`" + s.Env + "`", "`--" + s.Flag} {
			if !strings.Contains(string(b), name) {
				t.Errorf("docs/configuration.md does not mention %s", name)
			}
		}
		if s.FileEnv != "" && !strings.Contains(string(b), "`"+s.FileEnv+"`") {
			t.Errorf("docs/configuration.md does not mention %s", s.FileEnv)
		}
		if !strings.Contains(usage.String(), s.Env) || !strings.Contains(usage.String(), "--"+s.Flag) {
			t.Errorf("usage lacks %s", s.Env)
		}
		if s.Secret && !strings.HasSuffix(s.Flag, "-file") {
			t.Errorf("secret setting %s has a flag that does not take a file", s.Env)
		}
	}
}
