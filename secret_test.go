package wxphone

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// renderings prints v in every way a program might.
func renderings(t *testing.T, v any) map[string]string {
	t.Helper()
	out := map[string]string{}
	if s, ok := v.(fmt.Stringer); ok {
		out["String"] = s.String()
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3s"} {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	out["struct %+v"] = fmt.Sprintf("%+v", struct{ V any }{v})
	out["ptr %v"] = fmt.Sprintf("%v", []any{&v, v})
	if b, err := json.Marshal(v); err == nil { // Config holds funcs: no JSON
		out["json"] = string(b)
		b, _ = json.Marshal(map[string]any{"nested": []any{v}})
		out["json nested"] = string(b)
	}
	if b, err := xml.Marshal(xmlWrap{V: v}); err == nil { // Config: no XML either
		out["xml"] = string(b)
	}
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		l := slog.New(h(&buf))
		l.Info("msg", "v", v, slog.Any("any", v), slog.Group("g", "v", v))
		l.With("with", v).Info("msg")
		out[name] = buf.String()
	}
	return out
}

func TestSecretTypesNeverPrintTheirValue(t *testing.T) {
	t.Parallel()
	const phone = "13800138000"
	const secret = "s3cr3t-AppSecret-value"
	const skey = "tiihtNczf5v6AKRyjwEUhQ=="
	const token = "ACCESS_TOKEN_abcdefghijklmnop"
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		v      any
		hidden []string
		shown  string // a rendering must contain this
	}{
		{"PhoneNumber", PhoneNumber(phone), []string{phone, "38001380"}, "138****8000"},
		{"PhoneNumber with country code", PhoneNumber("+86 " + phone), []string{phone}, "+86 138****8000"},
		{"PhoneInfo", PhoneInfo{PhoneNumber: phone, PurePhoneNumber: phone, CountryCode: "86", Watermark: Watermark{AppID: testAppID}}, []string{phone}, "138****8000"},
		{"*PhoneInfo", &PhoneInfo{PhoneNumber: phone, PurePhoneNumber: phone}, []string{phone}, "138****8000"},
		{"Secret", Secret(secret), []string{secret, "s3cr3t"}, redacted},
		{"SessionKey", SessionKey(skey), []string{skey, "tiihtNcz"}, redacted},
		{"Session", Session{OpenID: "o1", SessionKey: skey}, []string{skey, "tiihtNcz"}, redacted},
		{"Token", Token{Value: token, ExpiresAt: exp}, []string{token, "ACCESS_TOKEN"}, Fingerprint(token)},
		{"*Token", &Token{Value: token, ExpiresAt: exp}, []string{token, "ACCESS_TOKEN"}, ""},
		{"Config", Config{AppID: testAppID, Secret: secret}, []string{secret}, redacted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			found := tt.shown == ""
			for how, s := range renderings(t, tt.v) {
				for _, h := range tt.hidden {
					if strings.Contains(s, h) {
						t.Errorf("%s reveals %q: %s", how, h, s)
					}
				}
				found = found || strings.Contains(s, tt.shown)
			}
			if !found {
				t.Errorf("no rendering shows %q", tt.shown)
			}
		})
	}
}

func TestSecretRenderingsExact(t *testing.T) {
	t.Parallel()
	p := PhoneNumber("13800138000")
	tests := []struct{ got, want string }{
		{p.String(), "138****8000"},
		{fmt.Sprintf("%v", p), "138****8000"},
		{fmt.Sprintf("%s", p), "138****8000"},
		{fmt.Sprintf("%q", p), `"138****8000"`},
		{fmt.Sprintf("%#v", p), `"138****8000"`},
		{fmt.Sprintf("%+v", p), "138****8000"},
		{mustJSON(t, p), `"138****8000"`},
		{p.Reveal(), "13800138000"},
		{Secret("x").String(), redacted},
		{fmt.Sprintf("%#v", Secret("x")), redacted},
		{fmt.Sprintf("%q", Secret("x")), redacted},
		{mustJSON(t, Secret("x")), `"[REDACTED]"`},
		{Secret("x").Reveal(), "x"},
		{mustJSON(t, SessionKey("k")), `"[REDACTED]"`},
		{SessionKey("k").Reveal(), "k"},
		{Fingerprint(""), "none"},
		{Fingerprint("abc"), "sha256:ba7816bf"},
		{mustJSON(t, Token{Value: "v", ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}), `{"expires_at":"2030-01-01T00:00:00Z"}`},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

type xmlWrap struct {
	XMLName xml.Name `xml:"w"`
	V       any
}
