package wxphone

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"
)

// PhoneNumber is a phone number as WeChat returns it. It prints masked
// everywhere (String, every fmt verb, slog, JSON, text encoders such as
// XML): 13800138000 prints as 138****8000 and "+852 51234567" as
// "+852 51****67". One exception: encoding/json writes a map key of a
// string kind as it is, so never key a map by PhoneNumber. Call Reveal for
// the full number, in the one place that must store or return it.
type PhoneNumber string

// Reveal returns the full phone number.
func (p PhoneNumber) Reveal() string { return string(p) }

// String returns the masked number.
func (p PhoneNumber) String() string { return MaskPhone(string(p)) }

// GoString returns the masked number, quoted, so %#v does not reveal it.
func (p PhoneNumber) GoString() string { return strconv.Quote(MaskPhone(string(p))) }

// Format writes the masked number for every verb (%q quotes it).
func (p PhoneNumber) Format(f fmt.State, verb rune) {
	m := MaskPhone(string(p))
	if verb == 'q' || (verb == 'v' && f.Flag('#')) {
		m = strconv.Quote(m)
	}
	_, _ = io.WriteString(f, m)
}

// LogValue implements slog.LogValuer with the masked number.
func (p PhoneNumber) LogValue() slog.Value { return slog.StringValue(MaskPhone(string(p))) }

// MarshalJSON writes the masked number. Serialising a PhoneInfo therefore
// never leaks the number by accident; build your own output from Reveal when
// the full number must leave the process.
func (p PhoneNumber) MarshalJSON() ([]byte, error) {
	return json.Marshal(MaskPhone(string(p)))
}

// MarshalText writes the masked number, for encoders that use
// encoding.TextMarshaler (XML, YAML, …).
func (p PhoneNumber) MarshalText() ([]byte, error) { return []byte(MaskPhone(string(p))), nil }

// MaskPhone masks a phone number for display and logs: the first three and
// last four digits of an eleven-or-more-digit national number stay
// (138****5678), two and two of a seven-to-ten-digit one, nothing of a
// shorter one. A leading "+country " prefix is kept. The middle is always
// exactly four asterisks, so the length does not leak either.
func MaskPhone(s string) string {
	if s == "" {
		return ""
	}
	prefix, rest := "", s
	if strings.HasPrefix(s, "+") {
		if i := strings.IndexAny(s, " -"); i > 0 {
			prefix, rest = s[:i+1], s[i+1:]
		} else {
			prefix, rest = "+", s[1:]
		}
	}
	n := utf8.RuneCountInString(rest)
	head, tail := 0, 0
	switch {
	case n >= 11:
		head, tail = 3, 4
	case n >= 7:
		head, tail = 2, 2
	}
	if head == 0 {
		return prefix + "****"
	}
	r := []rune(rest)
	return prefix + string(r[:head]) + "****" + string(r[n-tail:])
}

// Watermark is the provenance WeChat attaches to phone data: the appid the
// data belongs to and the Unix time of the user's grant.
type Watermark struct {
	AppID     string `json:"appid"`
	Timestamp int64  `json:"timestamp"`
}

// PhoneInfo is the result of a phone-number exchange.
type PhoneInfo struct {
	// PhoneNumber is the number as the user bound it; foreign numbers carry
	// their area code.
	PhoneNumber PhoneNumber `json:"phoneNumber"`
	// PurePhoneNumber is the number without the area code.
	PurePhoneNumber PhoneNumber `json:"purePhoneNumber"`
	// CountryCode is the area code, always as a string ("86"), whether
	// WeChat sent a string or a number.
	CountryCode string `json:"countryCode"`
	// Watermark identifies the appid and the time of the grant.
	Watermark Watermark `json:"watermark"`
}

// UnmarshalJSON decodes leniently: countryCode and watermark.timestamp may be
// strings or numbers, unknown fields are ignored.
func (p *PhoneInfo) UnmarshalJSON(b []byte) error {
	var w wirePhoneInfo
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	w.to(p)
	return nil
}

// wirePhoneInfo is phone_info as WeChat sends it. The exchange decodes it
// in the same pass as the rest of the answer (a PhoneInfo field would be
// decoded a second time by PhoneInfo.UnmarshalJSON).
type wirePhoneInfo struct {
	PhoneNumber     PhoneNumber `json:"phoneNumber"`
	PurePhoneNumber PhoneNumber `json:"purePhoneNumber"`
	CountryCode     flexString  `json:"countryCode"`
	Watermark       struct {
		AppID     string  `json:"appid"`
		Timestamp flexInt `json:"timestamp"`
	} `json:"watermark"`
}

func (w *wirePhoneInfo) to(p *PhoneInfo) {
	*p = PhoneInfo{
		PhoneNumber:     w.PhoneNumber,
		PurePhoneNumber: w.PurePhoneNumber,
		CountryCode:     string(w.CountryCode),
		Watermark:       Watermark{AppID: w.Watermark.AppID, Timestamp: int64(w.Watermark.Timestamp)},
	}
}

// info returns the PhoneInfo, or nil when phone_info was absent or null.
func (w *wirePhoneInfo) info() *PhoneInfo {
	if w == nil {
		return nil
	}
	p := new(PhoneInfo)
	w.to(p)
	return p
}

// flexString accepts a JSON string or number and keeps its text.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return fmt.Errorf("empty value")
	case b[0] == '"':
		// The decoder has validated b; without escapes and with valid
		// UTF-8 its content is the string itself.
		if in, ok := plainJSONString(b); ok {
			*s = flexString(in)
			return nil
		}
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	case string(b) == "null":
		*s = ""
	case b[0] == '-' || '0' <= b[0] && b[0] <= '9':
		// A JSON number (the decoder validated it): keep its text, as
		// json.Number would.
		*s = flexString(b)
	default:
		return fmt.Errorf("want a string or a number")
	}
	return nil
}

// plainJSONString returns the content of a quoted JSON string that needs
// no unescaping.
func plainJSONString(b []byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return nil, false
	}
	in := b[1 : len(b)-1]
	if bytes.IndexByte(in, '\\') >= 0 || bytes.IndexByte(in, '"') >= 0 || !utf8.Valid(in) {
		return nil, false
	}
	return in, true
}

// flexInt accepts a JSON integer, or a string holding one.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*n = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		if in, ok := plainJSONString(b); ok {
			b = in
		} else {
			var s string
			if err := json.Unmarshal(b, &s); err != nil {
				return err
			}
			b = []byte(s)
		}
	}
	v, ok := parseInt64(b)
	if !ok {
		return fmt.Errorf("want an integer")
	}
	*n = flexInt(v)
	return nil
}

// parseInt64 is strconv.ParseInt(string(b), 10, 64) without the string.
func parseInt64(b []byte) (int64, bool) {
	digits, neg := b, false
	if len(digits) > 0 && (digits[0] == '-' || digits[0] == '+') {
		digits, neg = digits[1:], digits[0] == '-'
	}
	if len(digits) == 0 {
		return 0, false
	}
	if len(digits) > 18 { // may overflow: let strconv check the range
		v, err := strconv.ParseInt(string(b), 10, 64)
		return v, err == nil
	}
	var v int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}
