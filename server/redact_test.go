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

	"github.com/wxphone/wxphone/server"
)

// TestConfigPrintsNoAPIKey: a server.Config, which holds the API keys in
// clear, prints them nowhere.
func TestConfigPrintsNoAPIKey(t *testing.T) {
	t.Parallel()
	cfg := server.Config{APIKeys: []string{keyPhone, keyBoth}, TokenAPIKeys: []string{keyToken}, Addr: "127.0.0.1:0", RequestTimeout: time.Second}
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
	if !strings.Contains(fmt.Sprint(cfg), "APIKeys:2") {
		t.Errorf("the rendering does not say how many keys: %v", cfg)
	}
}
