package redis

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestOptionsPrintNoPassword: Options, which may hold the sentinels'
// password (a wxphone.Secret), print it nowhere.
func TestOptionsPrintNoPassword(t *testing.T) {
	const pw = "sentinel-password-0123456789"
	o := Options{SentinelUsername: "sentinel-user", SentinelPassword: pw, TLSConfig: &tls.Config{ServerName: "cache"}}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		out = append(out, fmt.Sprintf(verb, o), fmt.Sprintf(verb, &o), fmt.Sprintf(verb, []any{o, &o}), fmt.Sprintf(verb, struct{ O *Options }{&o}))
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).Debug("o", "o", o, "ptr", &o)
	slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).Debug("o", "o", o, "ptr", &o)
	out = append(out, buf.String())
	for _, v := range []any{o, &o} {
		b, _ := json.Marshal(v)
		x, _ := xml.Marshal(struct {
			XMLName xml.Name `xml:"w"`
			V       any
		}{V: v})
		out = append(out, string(b), string(x))
	}
	for _, r := range out {
		if strings.Contains(r, pw) {
			t.Errorf("a rendering shows the password: %s", r)
		}
	}
	if s := fmt.Sprintf("%+v", o); !strings.Contains(s, "SentinelPassword:[REDACTED]") {
		t.Errorf("%%+v = %s", s)
	}
}
