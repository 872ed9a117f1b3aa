package redis

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/wxphone/wxphone/internal/valid"
)

// DefaultPrefix starts every key this package writes.
const DefaultPrefix = "wxphone"

// StoreOptions configure TokenStore, ReplayStore and Limiter.
type StoreOptions struct {
	// Prefix starts every key; default "wxphone". Give environments or
	// tests that share one Redis different prefixes. Printable ASCII
	// without spaces or braces, at most 64 bytes.
	Prefix string
	// Logger receives warnings (never a token, code or secret); default
	// discards.
	Logger *slog.Logger
}

func (o StoreOptions) withDefaults() (StoreOptions, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if err := checkName("prefix", o.Prefix, 64, true); err != nil {
		return o, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, nil
}

// errNoClient is returned by constructors given a nil client.
var errNoClient = errors.New("redis: nil client")

// checkName requires a non-empty printable ASCII string without spaces of
// at most max bytes and, if noBraces, without '{' or '}' (which would move
// a key's Redis Cluster hash tag). Errors do not quote the value.
func checkName(what, s string, max int, noBraces bool) error {
	if s == "" {
		return fmt.Errorf("redis: empty %s", what)
	}
	if len(s) > max {
		return fmt.Errorf("redis: %s longer than %d bytes", what, max)
	}
	if !valid.Printable(s) {
		return fmt.Errorf("redis: %s must be printable ASCII without spaces", what)
	}
	if noBraces && strings.ContainsAny(s, "{}") {
		return fmt.Errorf("redis: %s must not contain braces", what)
	}
	return nil
}

// durMS is d in whole milliseconds, rounded up, in decimal.
func durMS(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
}

// toInt64 reads an integer from a script's reply element.
func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// toString reads a string from a script's reply element; ok is false for
// a nil (Lua false) element.
func toString(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// verdict reads the reply of a script that answers {1} (allowed) or {0,
// wait} (refused, wait in units of unit); what names the operation in
// errors.
func verdict(res []int64, err error, what string, unit time.Duration) (bool, time.Duration, error) {
	switch {
	case err != nil:
		return false, 0, fmt.Errorf("redis: %s: %w", what, err)
	case len(res) != 2:
		return false, 0, errReply(what)
	case res[0] == 1:
		return true, 0, nil
	}
	return false, time.Duration(res[1]) * unit, nil
}

// errReply reports a script reply of an unexpected shape.
func errReply(script string) error {
	return fmt.Errorf("redis: unexpected reply from the %s script", script)
}
