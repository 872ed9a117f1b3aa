// Package valid holds the input rules that more than one wxphone package
// applies, so that each rule is written once: printable ASCII without
// spaces (codes, keys, secrets, names), identifiers of [A-Za-z0-9_-]
// (appids, WeChat's rids) and the appid rule itself.
package valid

// Unprintable returns the offset of the first byte of s that is not
// printable ASCII without spaces (a space, a control character or a
// non-ASCII byte), or -1 when there is none.
func Unprintable(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return i
		}
	}
	return -1
}

// Printable reports whether s is printable ASCII without spaces; "" is.
func Printable(s string) bool { return Unprintable(s) < 0 }

// IDChar reports whether c is one of [A-Za-z0-9_-].
func IDChar(c byte) bool {
	return c == '-' || c == '_' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// ID reports whether s is 1..maxLen characters of [A-Za-z0-9_-].
func ID(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IDChar(s[i]) {
			return false
		}
	}
	return true
}

// MaxAppIDLen bounds an appid. WeChat's are "wx" and 16 hexadecimal
// digits; the rule leaves room for other platforms' ids.
const MaxAppIDLen = 64

// AppIDRule describes what AppID accepts, for error messages.
const AppIDRule = "1..64 characters of [A-Za-z0-9_-]"

// AppID reports whether id is an appid: 1..64 characters of [A-Za-z0-9_-].
// The rule keeps out everything that would change a Redis Cluster hash
// tag ('{', '}'), a signed string of the API security mode ('|', a
// newline), a log line or a URL.
func AppID(id string) bool { return ID(id, MaxAppIDLen) }
