package redis

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Options may hold the sentinels' password in clear. These methods make
// every printing of an Options, by value or pointer, with fmt (all verbs),
// slog, encoding/json or encoding/xml, show whether a password is set,
// never the password.

// String describes the options without the sentinel password.
func (o Options) String() string {
	pw := "unset"
	if o.SentinelPassword != "" {
		pw = "[REDACTED]"
	}
	return "redis.Options{DialTimeout:" + o.DialTimeout.String() + " ReadTimeout:" + o.ReadTimeout.String() +
		" WriteTimeout:" + o.WriteTimeout.String() + " PoolTimeout:" + o.PoolTimeout.String() +
		" MaxRetries:" + strconv.Itoa(o.MaxRetries) + " PoolSize:" + strconv.Itoa(o.PoolSize) +
		" TLS:" + strconv.FormatBool(o.TLSConfig != nil) + " SentinelUsername:" + strconv.Quote(o.SentinelUsername) +
		" SentinelPassword:" + pw + " Lazy:" + strconv.FormatBool(o.Lazy) + "}"
}

// GoString describes the options without the sentinel password.
func (o Options) GoString() string { return o.String() }

// Format writes String for every verb.
func (o Options) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, o.String()) }

// LogValue implements slog.LogValuer without the sentinel password.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }

// MarshalJSON encodes the options as their description, without the
// sentinel password.
func (o Options) MarshalJSON() ([]byte, error) { return json.Marshal(o.String()) }

// MarshalText encodes the options without the sentinel password
// (encoding/xml and other text encoders).
func (o Options) MarshalText() ([]byte, error) { return []byte(o.String()), nil }
