package wxphone

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
)

const redacted = "[REDACTED]"

// Secret holds a credential such as an AppSecret. It never prints its value:
// String, every fmt verb, slog and JSON all give "[REDACTED]". Call Reveal to
// obtain the value for the one place that must send it.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns "[REDACTED]".
func (s Secret) String() string { return redacted }

// GoString returns "[REDACTED]" so that %#v does not print the value.
func (s Secret) GoString() string { return redacted }

// Format writes "[REDACTED]" for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON writes "[REDACTED]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText writes "[REDACTED]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// SessionKey is a WeChat session_key from jscode2session. Like Secret it never
// prints its value; call Reveal to use it.
type SessionKey string

// Reveal returns the session key's value (base64, as WeChat sends it).
func (k SessionKey) Reveal() string { return string(k) }

// String returns "[REDACTED]".
func (k SessionKey) String() string { return redacted }

// GoString returns "[REDACTED]".
func (k SessionKey) GoString() string { return redacted }

// Format writes "[REDACTED]" for every verb.
func (k SessionKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (k SessionKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON writes "[REDACTED]".
func (k SessionKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText writes "[REDACTED]".
func (k SessionKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Fingerprint returns a short, non-reversible identifier of a high-entropy
// value such as an access token ("sha256:1a2b3c4d"), so logs can tell two
// tokens apart without printing either. Do not use it on low-entropy values
// such as phone numbers: those need a keyed HMAC.
func Fingerprint(v string) string {
	if v == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:4])
}
