package server

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// A Config holds the API keys in clear (New reduces them to digests at
// once). These methods make every printing of a Config, by value or
// pointer, with fmt (all verbs), slog, encoding/json or encoding/xml, show
// how many keys there are, never a key.

// String describes the configuration without its API keys.
func (c Config) String() string {
	return "server.Config{Addr:" + strconv.Quote(c.Addr) +
		" APIKeys:" + strconv.Itoa(len(c.APIKeys)) + " [REDACTED]" +
		" TokenAPIKeys:" + strconv.Itoa(len(c.TokenAPIKeys)) + " [REDACTED]" +
		" RequestTimeout:" + c.RequestTimeout.String() + " ShutdownTimeout:" + c.ShutdownTimeout.String() + "}"
}

// GoString describes the configuration without its API keys.
func (c Config) GoString() string { return c.String() }

// Format writes String for every verb.
func (c Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue implements slog.LogValuer without the API keys.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("addr", c.Addr), slog.Int("api_keys", len(c.APIKeys)), slog.Int("token_api_keys", len(c.TokenAPIKeys)),
		slog.Duration("request_timeout", c.RequestTimeout), slog.Duration("shutdown_timeout", c.ShutdownTimeout))
}

// MarshalJSON encodes the configuration's settings without the API keys.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Addr         string `json:"addr,omitempty"`
		APIKeys      int    `json:"api_keys"`
		TokenAPIKeys int    `json:"token_api_keys"`
	}{c.Addr, len(c.APIKeys), len(c.TokenAPIKeys)})
}

// MarshalText encodes the configuration without the API keys (encoding/xml
// and other text encoders).
func (c Config) MarshalText() ([]byte, error) { return []byte(c.String()), nil }
