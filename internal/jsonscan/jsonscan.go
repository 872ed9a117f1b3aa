// Package jsonscan reads a small, unambiguous subset of JSON without
// reflection: objects, strings without escapes, integers, true and false.
// It is the fast path of two decoders that see the same few shapes on
// every request (WeChat's phone answer, the body of a request to wxphone
// serve): each reads what it expects with a Scanner and, at the first thing
// outside the subset, falls back to encoding/json, which stays the
// reference. A Scanner never accepts invalid JSON; what it reads is
// exactly what encoding/json would decode (each user checks that with a
// differential fuzz target). Its writing half is Plain: the strings an
// encoder may copy between quotes as they are.
package jsonscan

import (
	"bytes"
	"unicode/utf8"
)

// Scanner reads b from the start. Strings it returns share one copy of b,
// made on first use (b may be a reused buffer).
type Scanner struct {
	b []byte
	i int
	s string // string(b), once a value needs it
}

// Reset makes s read b from the start.
func (s *Scanner) Reset(b []byte) { *s = Scanner{b: b} }

func (s *Scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// Peek returns the next byte after white space, or 0 at the end.
func (s *Scanner) Peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *Scanner) consume(c byte) bool {
	if s.Peek() == c {
		s.i++
		return true
	}
	return false
}

// Members reads an object, giving each member's name to member, which
// reads the value and returns the field it filled (a distinct bit; 0 for a
// member it skipped) and whether it could. It reports whether the whole
// object was read, with no field twice. The name aliases the scanned bytes.
func (s *Scanner) Members(member func(name []byte) (field uint64, ok bool)) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	var seen uint64
	for {
		start, end, ok := s.raw()
		if !ok || !s.consume(':') {
			return false
		}
		f, ok := member(s.b[start:end])
		if !ok || seen&f != 0 {
			return false
		}
		seen |= f
		switch {
		case s.consume(','):
		case s.consume('}'):
			return true
		default:
			return false
		}
	}
}

// raw reads a string without escapes or control characters whose content
// is valid UTF-8 (encoding/json would replace invalid bytes).
func (s *Scanner) raw() (start, end int, ok bool) {
	if s.Peek() != '"' {
		return 0, 0, false
	}
	start = s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return start, j, utf8.Valid(s.b[start:j])
		case c == '\\' || c < 0x20:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// Str reads a string without escapes, control characters or invalid
// UTF-8.
func (s *Scanner) Str() (string, bool) {
	start, end, ok := s.raw()
	if !ok {
		return "", false
	}
	return s.text(start, end), true
}

func (s *Scanner) text(start, end int) string {
	if start == end {
		return ""
	}
	if s.s == "" {
		s.s = string(s.b)
	}
	return s.s[start:end]
}

// Integer reads -?(0|[1-9][0-9]*) of at most 18 digits, not followed by a
// fraction or an exponent: its value and its text.
func (s *Scanner) Integer() (int64, string, bool) {
	start := s.i
	v, ok := s.integer()
	if !ok {
		return 0, "", false
	}
	return v, s.text(start, s.i), true
}

// integer is Integer without the text.
func (s *Scanner) integer() (int64, bool) {
	s.ws()
	j := s.i
	neg := j < len(s.b) && s.b[j] == '-'
	if neg {
		j++
	}
	digits := j
	var v int64
	for j < len(s.b) && '0' <= s.b[j] && s.b[j] <= '9' {
		v = v*10 + int64(s.b[j]-'0')
		j++
	}
	n := j - digits
	switch {
	case n == 0 || n > 18, n > 1 && s.b[digits] == '0':
		return 0, false
	case j < len(s.b) && (s.b[j] == '.' || s.b[j] == 'e' || s.b[j] == 'E'):
		return 0, false
	}
	s.i = j
	if neg {
		v = -v
	}
	return v, true
}

// SkipScalar skips a value that is a string (see Str), an integer
// (see Integer), true or false.
func (s *Scanner) SkipScalar() bool {
	switch s.Peek() {
	case '"':
		_, _, ok := s.raw()
		return ok
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	}
	_, ok := s.integer()
	return ok
}

func (s *Scanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

// End reports whether only white space is left.
func (s *Scanner) End() bool {
	s.ws()
	return s.i == len(s.b)
}

// FoldsTo reports whether key equals one of names under Unicode case
// folding, as encoding/json matches a key that is not an exact field name.
func FoldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// Plain reports whether encoding/json writes s between quotes unchanged:
// ASCII without control characters (DEL is copied) and without the
// characters it escapes (", \ and the HTML-sensitive <, >, &). A
// hand-written encoder copies a plain string and leaves any other to
// encoding/json (which also copies most non-ASCII; Plain does not try).
func Plain(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
