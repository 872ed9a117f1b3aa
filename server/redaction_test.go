package server_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/server"
)

// TestConfigPrintsNoAPIKey: a server.Config, which holds the API keys,
// prints them nowhere.
func TestConfigPrintsNoAPIKey(t *testing.T) {
	t.Parallel()
	cfg := server.Config{APIKeys: []wxphone.Secret{keyPhone, keyBoth}, TokenAPIKeys: []wxphone.Secret{keyToken}, Addr: "127.0.0.1:0", RequestTimeout: time.Second}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		out = append(out, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, &cfg), fmt.Sprintf(verb, []any{cfg, &cfg}), fmt.Sprintf(verb, struct{ C *server.Config }{&cfg}))
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).Debug("cfg", "cfg", cfg, "ptr", &cfg)
	slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).Debug("cfg", "cfg", cfg, "ptr", &cfg)
	out = append(out, buf.String())
	for _, v := range []any{cfg, &cfg, []any{cfg}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		x, err := xml.Marshal(struct {
			XMLName xml.Name `xml:"w"`
			V       any
		}{V: v})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b), string(x))
	}
	for _, r := range out {
		for _, k := range []string{keyPhone, keyBoth, keyToken} {
			if strings.Contains(r, k) {
				t.Errorf("a rendering shows an API key: %s", r)
			}
		}
	}
	if n := strings.Count(fmt.Sprintf("%+v", cfg), "[REDACTED]"); n != 3 {
		t.Errorf("the rendering shows %d redacted keys, want 3 (one per key): %+v", n, cfg)
	}
}
