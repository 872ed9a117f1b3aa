package wxphone

import (
	"bytes"
	"unicode/utf8"
)

// The phone answer's common shapes are decoded here without reflection:
// encoding/json's reflective decoder was the largest single cost of an
// exchange in wxphone serve's CPU profile, most of it the stack growth its
// depth forces on every exchange goroutine (docs/benchmarks.md, "the phone
// answer's decoder"). decodeFast handles only what it can decode exactly as
// encoding/json would and reports anything else (an escape, a null, a
// repeated key, a key that differs from a field name only in case, a nested
// unknown value, any syntax error) as not handled; decodeBody then uses
// encoding/json, which stays the reference. FuzzPhoneAnswerFast checks
// that every input this path accepts decodes to exactly what encoding/json
// gives, and TestPhoneAnswerFastPath that WeChat's usual answers take it.

// decodeFast decodes b, a whole answer, into r and reports whether it
// could; when it cannot, r is left as it was.
func (r *phoneResp) decodeFast(b []byte) bool {
	d := answerScanner{b: b}
	var out phoneResp
	var info wirePhoneInfo
	var seen uint8
	const (
		sawErrCode = 1 << iota
		sawErrMsg
		sawInfo
	)
	var hasInfo bool
	if !d.objectStart() {
		return false
	}
	for more := d.firstKey(); more; more = d.nextKey() {
		key, ok := d.key()
		if !ok {
			return false
		}
		switch string(key) {
		case "errcode":
			n, _, ok := d.integer()
			if !ok || seen&sawErrCode != 0 {
				return false
			}
			seen |= sawErrCode
			out.ErrCode = flexInt(n)
		case "errmsg":
			s, ok := d.str()
			if !ok || seen&sawErrMsg != 0 {
				return false
			}
			seen |= sawErrMsg
			out.ErrMsg = s
		case "phone_info":
			if seen&sawInfo != 0 || !d.phoneInfo(&info) {
				return false
			}
			seen |= sawInfo
			hasInfo = true
		default:
			if foldsTo(key, "errcode", "errmsg", "phone_info") || !d.skipScalar() {
				return false
			}
		}
	}
	if !d.end() {
		return false
	}
	if hasInfo {
		out.PhoneInfo = &info
	}
	*r = out
	return true
}

// phoneInfo decodes the phone_info object.
func (d *answerScanner) phoneInfo(w *wirePhoneInfo) bool {
	var seen uint8
	const (
		sawPhone = 1 << iota
		sawPure
		sawCountry
		sawWatermark
	)
	if !d.objectStart() {
		return false
	}
	for more := d.firstKey(); more; more = d.nextKey() {
		key, ok := d.key()
		if !ok {
			return false
		}
		var bit uint8
		switch string(key) {
		case "phoneNumber":
			bit = sawPhone
			var s string
			s, ok = d.str()
			w.PhoneNumber = PhoneNumber(s)
		case "purePhoneNumber":
			bit = sawPure
			var s string
			s, ok = d.str()
			w.PurePhoneNumber = PhoneNumber(s)
		case "countryCode":
			// A string, or a number kept as its text (flexString).
			bit = sawCountry
			var s string
			if d.peek() == '"' {
				s, ok = d.str()
			} else {
				_, s, ok = d.integer()
			}
			w.CountryCode = flexString(s)
		case "watermark":
			bit = sawWatermark
			ok = d.watermark(w)
		default:
			if foldsTo(key, "phoneNumber", "purePhoneNumber", "countryCode", "watermark") || !d.skipScalar() {
				return false
			}
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return !d.err
}

// watermark decodes phone_info.watermark.
func (d *answerScanner) watermark(w *wirePhoneInfo) bool {
	var seen uint8
	if !d.objectStart() {
		return false
	}
	for more := d.firstKey(); more; more = d.nextKey() {
		key, ok := d.key()
		if !ok {
			return false
		}
		var bit uint8
		switch string(key) {
		case "appid":
			bit = 1
			w.Watermark.AppID, ok = d.str()
		case "timestamp":
			bit = 2
			var n int64
			n, _, ok = d.integer()
			w.Watermark.Timestamp = flexInt(n)
		default:
			if foldsTo(key, "appid", "timestamp") || !d.skipScalar() {
				return false
			}
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return !d.err
}

// foldsTo reports whether key matches one of names the way encoding/json
// matches a key that is not an exact field name (Unicode case folding).
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// answerScanner reads the subset of JSON decodeFast accepts. Strings are
// copied out of b (a pooled buffer) into one string, made on first use.
type answerScanner struct {
	b   []byte
	i   int
	s   string // string(b), once a value needs it
	err bool   // a key or value it does not handle
}

func (d *answerScanner) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (d *answerScanner) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *answerScanner) consume(c byte) bool {
	if d.peek() == c {
		d.i++
		return true
	}
	return false
}

func (d *answerScanner) objectStart() bool { return d.consume('{') }

// firstKey reports whether the object just opened has a member (else it
// consumes its closing brace).
func (d *answerScanner) firstKey() bool {
	if d.consume('}') {
		return false
	}
	return true
}

// nextKey consumes the comma before the next member, or the closing
// brace; anything else stops the loop with d.err set.
func (d *answerScanner) nextKey() bool {
	switch {
	case d.consume(','):
		return true
	case d.consume('}'):
		return false
	}
	d.err = true
	return false
}

// key reads a member's name and its colon.
func (d *answerScanner) key() ([]byte, bool) {
	start, end, ok := d.raw()
	if !ok || !d.consume(':') {
		d.err = true
		return nil, false
	}
	return d.b[start:end], true
}

// raw reads a string without escapes or control characters and returns
// where its content lies in b; the content must be valid UTF-8 (encoding/json
// would replace invalid bytes).
func (d *answerScanner) raw() (start, end int, ok bool) {
	if d.peek() != '"' {
		return 0, 0, false
	}
	start = d.i + 1
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			return start, j, utf8.Valid(d.b[start:j])
		case c == '\\' || c < 0x20:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// str reads a string value (see raw).
func (d *answerScanner) str() (string, bool) {
	start, end, ok := d.raw()
	if !ok {
		return "", false
	}
	return d.text(start, end), true
}

// text returns b[start:end] as a string; every value shares one copy of b.
func (d *answerScanner) text(start, end int) string {
	if start == end {
		return ""
	}
	if d.s == "" {
		d.s = string(d.b)
	}
	return d.s[start:end]
}

// integer reads -?(0|[1-9][0-9]*) of at most 18 digits: its value and
// its text.
func (d *answerScanner) integer() (int64, string, bool) {
	d.ws()
	start := d.i
	j := start
	neg := j < len(d.b) && d.b[j] == '-'
	if neg {
		j++
	}
	digits := j
	var v int64
	for j < len(d.b) && '0' <= d.b[j] && d.b[j] <= '9' {
		v = v*10 + int64(d.b[j]-'0')
		j++
	}
	n := j - digits
	switch {
	case n == 0 || n > 18, n > 1 && d.b[digits] == '0':
		return 0, "", false
	case j < len(d.b) && (d.b[j] == '.' || d.b[j] == 'e' || d.b[j] == 'E'):
		return 0, "", false // a fraction or exponent: encoding/json decides
	}
	d.i = j
	if neg {
		v = -v
	}
	return v, d.text(start, j), true
}

// skipScalar skips an unknown member's value: a string (see raw), an
// integer, true or false. Anything else is left to encoding/json.
func (d *answerScanner) skipScalar() bool {
	switch d.peek() {
	case '"':
		_, _, ok := d.raw()
		return ok
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	}
	_, _, ok := d.integer()
	return ok
}

func (d *answerScanner) literal(lit string) bool {
	if !bytes.HasPrefix(d.b[d.i:], []byte(lit)) {
		return false
	}
	d.i += len(lit)
	return true
}

// end reports whether only white space is left after the top-level object.
func (d *answerScanner) end() bool {
	if d.err {
		return false
	}
	d.ws()
	return d.i == len(d.b)
}
