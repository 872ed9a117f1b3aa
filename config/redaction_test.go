package config_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/wxphone/wxphone/config"
)

// everyRendering prints v (and a pointer to a copy of it, inside
// containers) with every fmt verb, slog's text and JSON handlers,
// encoding/json and encoding/xml.
//
// One case is left out, as no type can prevent it: a pointer to a slice or
// map (*[]wxphone.Secret) nested in another value and printed with %s or
// %q goes through fmt's error path, which calls no method of the elements.
func everyRendering(v any) []string {
	var ptr any = v
	if k := reflect.TypeOf(v).Kind(); k != reflect.Slice && k != reflect.Map {
		p := reflect.New(reflect.TypeOf(v))
		p.Elem().Set(reflect.ValueOf(v))
		ptr = p.Interface()
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out = append(out, fmt.Sprintf(verb, v), fmt.Sprintf(verb, ptr), fmt.Sprintf(verb, []any{v, ptr}), fmt.Sprintf(verb, struct{ V, P any }{v, ptr}))
	}
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})} {
		slog.New(h).Debug("v", "v", v, "p", ptr, slog.Group("g", "v", v))
	}
	out = append(out, buf.String())
	for _, x := range []any{v, ptr, []any{v}} {
		if b, err := json.Marshal(x); err == nil {
			out = append(out, string(b))
		}
		if b, err := xml.Marshal(struct {
			XMLName xml.Name `xml:"w"`
			V       any
		}{V: x}); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

// TestConfigPrintsNoSecret loads a configuration holding every kind of
// secret and prints it, its apps and its keyring every way.
func TestConfigPrintsNoSecret(t *testing.T) {
	const shop = "shop-secret-0123456789"
	secretFile := write(t, "secret", shop+"\n")
	apps := write(t, "apps.json", `{"apps":[{"appid":"wx2222222222222222","secret_env":"SHOP_SECRET"},{"appid":"wx3333333333333333","secret_file":"`+secretFile+`"}]}`)
	env := with(base(), "WXPHONE_API_KEYS", key1+","+key2, "WXPHONE_TOKEN_API_KEYS", tokKey, "WXPHONE_DATA_KEY", dataKey,
		"REDIS_URL", redisURL, "WXPHONE_APPS_FILE", apps, "SHOP_SECRET", shop)
	c, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) != 3 || len(c.APIKeys) != 2 || c.RedisURL == "" {
		t.Fatalf("config %v", c)
	}
	values := []any{*c, c.Apps[0], c.Apps, c.APIKeys, c.RedisURL, *c.Keyring()}
	for _, v := range values {
		for _, r := range everyRendering(v) {
			for _, s := range append(secretsOf, shop, redisURL) {
				if strings.Contains(r, s) {
					t.Errorf("a rendering of a %T shows %.8s…: %s", v, s, r)
				}
			}
		}
	}
}
