package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Secrets (the AppSecret, API keys, data keys, the Redis URL) are accepted
// only from the environment or files. These tests run the command as an
// operator would and search everything it prints for them.

const (
	cmdAppSecret = "cmd-app-secret-0123456789abcdef"
	cmdAPIKey    = "cmd-api-key-0123456789abcdef"
	cmdTokenKey  = "cmd-token-key-0123456789abcdef"
	cmdDataKey   = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	cmdRedisPass = "cmd-redis-password-0123"
	cmdShopSec   = "cmd-shop-secret-0123456789"
)

var cmdSecrets = []string{cmdAppSecret, cmdAPIKey, cmdTokenKey, cmdDataKey, cmdRedisPass, cmdShopSec}

func runCmd(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String() + errb.String()
}

func checkNoSecret(t *testing.T, output string, extra ...string) {
	t.Helper()
	for _, s := range append(extra, cmdSecrets...) {
		if strings.Contains(output, s) {
			t.Errorf("the output shows a secret (%.8s…):\n%s", s, output)
		}
	}
}

func fullEnv() map[string]string {
	return map[string]string{
		"WX_APPID": "wxcmdsecrets0001", "WX_SECRET": cmdAppSecret, "WXPHONE_API_KEYS": cmdAPIKey,
		"WXPHONE_TOKEN_API_KEYS": cmdTokenKey, "WXPHONE_DATA_KEY": cmdDataKey,
		"REDIS_URL": "redis://default:" + cmdRedisPass + "@127.0.0.1:1/0", "SHOP_SECRET": cmdShopSec,
	}
}

// TestServeHelpShowsNoSecret: `wxphone serve -h` lists every secret
// setting with a FILE flag and prints none of the values in the
// environment.
func TestServeHelpShowsNoSecret(t *testing.T) {
	for _, args := range [][]string{{"serve", "-h"}, {"serve", "--help"}, {"help"}, {"serve", "-h", "--secret-file", "/dev/null"}} {
		code, out := runCmd(t, fullEnv(), args...)
		if code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		checkNoSecret(t, out)
		if args[0] == "serve" {
			for _, want := range []string{"--secret-file FILE", "--api-keys-file FILE", "--token-api-keys-file FILE", "--data-key-file FILE", "--redis-url-file FILE", "WX_SECRET_FILE"} {
				if !strings.Contains(out, want) {
					t.Errorf("%v: usage lacks %q", args, want)
				}
			}
		}
	}
}

// TestSecretFlagsRefused: every secret setting refuses a value on the
// command line, in every flag spelling, without echoing it.
func TestSecretFlagsRefused(t *testing.T) {
	const v = "cmd-line-secret-value-0123456789"
	for _, name := range []string{"secret", "api-keys", "token-api-keys", "data-key", "redis-url"} {
		for _, args := range [][]string{
			{"--" + name, v}, {"--" + name + "=" + v}, {"-" + name, v}, {"-" + name + "=" + v},
			{"--addr", "127.0.0.1:0", "--" + name + "=" + v},
		} {
			code, out := runCmd(t, fullEnv(), append([]string{"serve"}, args...)...)
			if code == 0 || !strings.Contains(out, "not accepted on the command line") {
				t.Errorf("serve %v: exit %d, %q", args, code, out)
			}
			checkNoSecret(t, out, v)
		}
	}
	// Flags that do not exist, or a stray value, do not echo it either.
	for _, args := range [][]string{{"--wx-secret=" + v}, {"--apikey", v}, {v}, {"--addr", ":0", v}, {"--log-level=debug", "--", v}} {
		code, out := runCmd(t, fullEnv(), append([]string{"serve"}, args...)...)
		if code == 0 {
			t.Errorf("serve %v: exit 0", args)
		}
		checkNoSecret(t, out, v)
	}
}

// TestStartupErrorsShowNoSecret: a configuration that fails to load or to
// start says what is wrong without quoting any secret it holds.
func TestStartupErrorsShowNoSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inline := write("inline.json", `{"apps":[{"appid":"wxcmdsecrets0002","secret":"`+cmdShopSec+`"}]}`)
	unknown := write("unknown.json", `{"apps":[{"appid":"wxcmdsecrets0002","secret_env":"SHOP_SECRET","secret_value":"`+cmdShopSec+`"}]}`)
	badJSON := write("bad.json", `{"apps":[{"appid":"wxcmdsecrets0002","secret_env":"`+cmdShopSec)
	keysFile := write("keys", "short\n"+cmdAPIKey+"\n")
	with := func(kv ...string) map[string]string {
		env := fullEnv()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		return env
	}
	for name, env := range map[string]map[string]string{
		"bad rate limit":            with("WXPHONE_RATE_LIMIT", "fast"),
		"bad log level":             with("WXPHONE_LOG_LEVEL", cmdAPIKey),
		"short key in a list":       with("WXPHONE_API_KEYS", cmdAPIKey+",short"),
		"repeated key":              with("WXPHONE_API_KEYS", cmdAPIKey+","+cmdAPIKey),
		"short key in a file":       with("WXPHONE_API_KEYS", "", "WXPHONE_API_KEYS_FILE", keysFile),
		"key and key file":          with("WXPHONE_API_KEYS_FILE", keysFile),
		"bad data key":              with("WXPHONE_DATA_KEY", cmdDataKey+","+cmdAppSecret),
		"Redis without a data key":  with("WXPHONE_DATA_KEY", ""),
		"Redis with a bad scheme":   with("REDIS_URL", "http://default:"+cmdRedisPass+"@127.0.0.1:1"),
		"Redis without a host":      with("REDIS_URL", "redis://default:"+cmdRedisPass+"@/0"),
		"secret with a space":       with("WX_SECRET", "with space "+cmdAppSecret),
		"secret without an appid":   with("WX_APPID", ""),
		"inline secret in apps":     with("WXPHONE_APPS_FILE", inline),
		"unknown field in apps":     with("WXPHONE_APPS_FILE", unknown),
		"bad JSON in apps":          with("WXPHONE_APPS_FILE", badJSON),
		"API base with a password":  with("WX_API_BASE", "https://proxy:"+cmdRedisPass+"@exa mple.com"),
		"API base with a password2": with("WX_API_BASE", "https://proxy:"+cmdRedisPass+"@api.weixin.qq.com"),
		"no API key":                with("WXPHONE_API_KEYS", "", "WXPHONE_TOKEN_API_KEYS", cmdTokenKey),
	} {
		code, out := runCmd(t, env, "serve")
		if code != 1 || !strings.HasPrefix(out, "wxphone: ") {
			t.Errorf("%s: exit %d, %q", name, code, out)
		}
		checkNoSecret(t, out)
	}
}
