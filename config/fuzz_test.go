package config_test

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/config"
)

// fuzzInput is one configuration: the secret settings (each from its
// variable, or from its *_FILE variable when viaFile), the plain ones, the
// apps file and the command-line arguments (NUL-separated).
type fuzzInput struct {
	appID, secret, apiKeys, tokenKeys, dataKey, redisURL, shopSecret string
	rate, burst, timeout, level, apiBase                             string
	apps                                                             []byte
	args                                                             string
	viaFile                                                          bool
}

// secrets are the values no error and no rendering of the Config may show:
// every secret setting, every element of a key list, a Redis URL's
// password.
func (in fuzzInput) secrets() map[string]string {
	out := map[string]string{}
	add := func(what, v string) {
		v = strings.TrimSpace(v)
		if v != "" {
			out[what+" "+v] = v
		}
	}
	add("WX_SECRET", in.secret)
	add("SHOP_SECRET", in.shopSecret)
	add("WXPHONE_DATA_KEY", in.dataKey)
	add("REDIS_URL", in.redisURL)
	for _, list := range []struct{ what, v string }{{"WXPHONE_API_KEYS", in.apiKeys}, {"WXPHONE_TOKEN_API_KEYS", in.tokenKeys}, {"WXPHONE_DATA_KEY", in.dataKey}} {
		add(list.what, list.v)
		for _, k := range strings.FieldsFunc(list.v, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
			add(list.what+" element", k)
		}
	}
	for _, u := range []string{in.redisURL, in.apiBase} {
		_, rest, ok := strings.Cut(u, "://")
		if !ok {
			continue
		}
		rest, _, _ = strings.Cut(rest, "/")
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			userinfo := rest[:at]
			add("URL user info", userinfo)
			if _, pass, ok := strings.Cut(userinfo, ":"); ok {
				add("URL password", pass)
				if p, err := url.PathUnescape(pass); err == nil {
					add("URL password", p)
				}
			}
		}
	}
	return out
}

// load runs config.Load on in, with its files under dir.
func (in fuzzInput) load(t *testing.T, dir string) (*config.Config, error) {
	env := map[string]string{
		"WX_APPID": in.appID, "WXPHONE_RATE_LIMIT": in.rate, "WXPHONE_RATE_BURST": in.burst,
		"WXPHONE_REQUEST_TIMEOUT": in.timeout, "WXPHONE_LOG_LEVEL": in.level, "WX_API_BASE": in.apiBase,
		"SHOP_SECRET": in.shopSecret,
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, s := range []struct{ env, v string }{
		{"WX_SECRET", in.secret}, {"WXPHONE_API_KEYS", in.apiKeys}, {"WXPHONE_TOKEN_API_KEYS", in.tokenKeys},
		{"WXPHONE_DATA_KEY", in.dataKey}, {"REDIS_URL", in.redisURL},
	} {
		switch {
		case s.v == "":
		case in.viaFile:
			env[s.env+"_FILE"] = write(s.env, s.v)
		default:
			env[s.env] = s.v
		}
	}
	if len(in.apps) > 0 {
		secretFile := write("shop-secret", in.shopSecret)
		env["WXPHONE_APPS_FILE"] = write("apps.json", strings.ReplaceAll(string(in.apps), "{SECRET_FILE}", secretFile))
	}
	var args []string
	if in.args != "" {
		args = strings.Split(in.args, "\x00")
	}
	return config.Load(args, func(k string) string { return env[k] })
}

// with returns in with every occurrence of v in its secret settings
// replaced by a value of the same length.
func (in fuzzInput) with(v string) fuzzInput {
	alt := strings.Repeat("Q", len(v))
	r := func(s string) string { return strings.ReplaceAll(s, v, alt) }
	in.secret, in.shopSecret, in.apiKeys, in.tokenKeys, in.dataKey, in.redisURL, in.apiBase = r(in.secret), r(in.shopSecret), r(in.apiKeys), r(in.tokenKeys), r(in.dataKey), r(in.redisURL), r(in.apiBase)
	return in
}

// renderConfig prints c every way a program might.
func renderConfig(c *config.Config) []string {
	var b strings.Builder
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	slog.New(slog.NewTextHandler(&b, opts)).Debug("config", "cfg", c, "value", *c, "apps", c.Apps, "keys", c.APIKeys)
	slog.New(slog.NewJSONHandler(&b, opts)).Debug("config", "cfg", c, "value", *c, "apps", c.Apps, "keys", c.APIKeys)
	out := []string{b.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		out = append(out, fmt.Sprintf(verb, c), fmt.Sprintf(verb, *c), fmt.Sprintf(verb, c.Apps), fmt.Sprintf(verb, c.Keyring()))
	}
	if j, err := json.Marshal(c); err == nil {
		out = append(out, string(j))
	}
	if x, err := xml.Marshal(c); err == nil {
		out = append(out, string(x))
	}
	return out
}

var fuzzKeyRE = regexp.MustCompile(`^[!-~]{16,256}$`)

func FuzzLoad(f *testing.F) {
	const dk = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	apps := `{"apps":[{"appid":"wx2222222222222222","secret_env":"SHOP_SECRET"},{"appid":"wx3333333333333333","secret_file":"{SECRET_FILE}"}]}`
	seeds := []fuzzInput{
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1 + "," + key2, tokenKeys: tokKey, dataKey: dk, redisURL: redisURL, viaFile: true},
		{secret: secret, apiKeys: key1, shopSecret: "shop-secret-0123456789", apps: []byte(apps)},
		{appID: "wx1111111111111111", secret: secret, apiKeys: "short-key," + key1},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1 + "," + key1},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, dataKey: "not-base64!!," + dk},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, redisURL: "redis://:redis-password-xyz@"},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, redisURL: redisURL},
		{appID: "wx1111111111111111", secret: "secret with spaces 0123456789", apiKeys: key1},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, rate: "1e9", burst: "-1", timeout: "1h", level: "trace"},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, apiBase: "http://user:api-base-password@example.com/?x=1"},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, apiBase: "https://user:api-base-password@exa mple.com"},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, shopSecret: "inline-secret-value", apps: []byte(`{"apps":[{"appid":"wx2222222222222222","secret":"inline-secret-value"}]}`)},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, shopSecret: "shop-secret-0123456789", apps: []byte(`{"apps":[{"appid":"wx1111111111111111","secret_env":"SHOP_SECRET"}]}`)},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, apps: []byte(`{"apps":[{"appid":"wx2222222222222222","secret_env":"SHOP_SECRET","shop-secret-0123456789":1}]}`)},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, args: "--secret\x00" + secret},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, args: "-api-keys=" + key2},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, args: "--addr\x00:0\x00positional-secret-value"},
		{appID: "wx1111111111111111", secret: secret, apiKeys: key1, args: "--unknown-flag=" + key2},
	}
	for _, s := range seeds {
		f.Add(s.appID, s.secret, s.apiKeys, s.tokenKeys, s.dataKey, s.redisURL, s.shopSecret, s.rate, s.burst, s.timeout, s.level, s.apiBase, s.apps, s.args, s.viaFile)
	}
	f.Fuzz(func(t *testing.T, appID, secret, apiKeys, tokenKeys, dataKey, redisURL, shopSecret, rate, burst, timeout, level, apiBase string, apps []byte, args string, viaFile bool) {
		in := fuzzInput{appID, secret, apiKeys, tokenKeys, dataKey, redisURL, shopSecret, rate, burst, timeout, level, apiBase, apps, args, viaFile}
		dir := t.TempDir()
		c, err := in.load(t, dir)
		secrets := in.secrets()
		if errors.Is(err, config.ErrHelp) {
			return
		}
		if err != nil {
			msg := err.Error()
			if c != nil {
				t.Fatalf("a Config and an error: %v", err)
			}
			if !strings.HasPrefix(msg, "config: ") {
				t.Fatalf("error without the config: prefix: %q", msg)
			}
			for what, v := range secrets {
				if len(v) < 6 || !strings.Contains(msg, v) {
					continue
				}
				// Part of the fixed text, or of a non-secret input?
				if _, again := in.with(v).load(t, t.TempDir()); again != nil && strings.Contains(again.Error(), v) {
					continue
				}
				t.Fatalf("the error quotes the %s: %q", what, msg)
			}
			return
		}
		// A loaded configuration is complete and within its bounds.
		if len(c.Apps) == 0 || len(c.APIKeys) == 0 || c.Keyring() == nil || c.Keyring().Len() == 0 {
			t.Fatalf("incomplete config %+v", c)
		}
		for _, k := range append(c.APIKeys[:len(c.APIKeys):len(c.APIKeys)], c.TokenAPIKeys...) {
			if !fuzzKeyRE.MatchString(k.Reveal()) {
				t.Fatalf("accepted an API key of %d bytes or with a space or control character", len(k.Reveal()))
			}
		}
		for _, a := range c.Apps {
			if a.AppID == "" || a.Secret.Reveal() == "" || len(a.Secret.Reveal()) > 256 {
				t.Fatalf("bad app %q", a.AppID)
			}
		}
		if c.RedisURL != "" && !c.DataKeySet {
			t.Fatal("REDIS_URL accepted without a data key")
		}
		if c.RateLimit < 0 || c.RateBurst < 1 || c.RequestTimeout < time.Millisecond || c.RequestTimeout > 10*time.Minute {
			t.Fatalf("out-of-range settings %v %v %v", c.RateLimit, c.RateBurst, c.RequestTimeout)
		}
		// Nothing secret prints.
		for _, r := range renderConfig(c) {
			for what, v := range secrets {
				if len(v) < 6 || !strings.Contains(r, v) {
					continue
				}
				if c2, err := in.with(v).load(t, t.TempDir()); err != nil || strings.Contains(strings.Join(renderConfig(c2), "\n"), v) {
					continue // cannot tell, or part of the fixed text
				}
				t.Fatalf("a rendering of the Config shows the %s: %s", what, r)
			}
		}
	})
}
