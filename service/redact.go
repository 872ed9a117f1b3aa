package service

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// A Request holds the code in clear (the one place the exchange needs it).
// These methods make every printing of a Request, by value or pointer, with
// fmt (all verbs), slog, encoding/json or encoding/xml, show "[REDACTED]"
// instead, so a caller that logs a Request leaks no code.

// String describes the request without its code.
func (r Request) String() string {
	return "service.Request{AppID:" + strconv.Quote(r.AppID) + " Code:[REDACTED] OpenID:" + strconv.Quote(r.OpenID) + " Caller:" + strconv.Quote(r.Caller) + "}"
}

// GoString describes the request without its code.
func (r Request) GoString() string { return r.String() }

// Format writes String for every verb.
func (r Request) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, r.String()) }

// LogValue implements slog.LogValuer without the code.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("appid", r.AppID), slog.String("code", "[REDACTED]"), slog.String("openid", r.OpenID), slog.String("caller", r.Caller))
}

// MarshalJSON encodes the request without its code.
func (r Request) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		AppID  string `json:"appid,omitempty"`
		Code   string `json:"code"`
		OpenID string `json:"openid,omitempty"`
		Caller string `json:"caller,omitempty"`
	}{r.AppID, "[REDACTED]", r.OpenID, r.Caller})
}

// MarshalText encodes the request without its code (encoding/xml and
// other text encoders).
func (r Request) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Format prints the Result as fmt would, with the phone numbers masked,
// for every verb: without it, a *Result inside another value printed with
// %s or %q would go through fmt's error path, which calls no method of the
// fields and so shows the full number.
func (r Result) Format(f fmt.State, verb rune) {
	type plain Result
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(r))
}
