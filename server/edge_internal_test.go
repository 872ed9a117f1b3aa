package server

import (
	"strings"
	"testing"
)

// TestFramingScanner: a header block with both Transfer-Encoding and
// Content-Length is found whatever the letter case, spacing and read
// boundaries; the two in different blocks are not.
func TestFramingScanner(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   bool
	}{
		{"both", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"both, TE first", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", true},
		{"letter case", "POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\ncontent-length: 5\r\n\r\n", true},
		{"space before the colon", "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nContent-Length\t: 5\r\n\r\n", true},
		{"bare LF", "POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 5\n\n", true},
		{"in the second request", "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"Content-Length only", "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", false},
		{"chunked only", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
		{"in two requests", "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"names inside values", "GET / HTTP/1.1\r\nX-A: Content-Length: 1\r\nX-B: Transfer-Encoding: chunked\r\n\r\n", false},
		{"longer names", "GET / HTTP/1.1\r\nContent-Length-X: 1\r\nTransfer-Encodings: chunked\r\n\r\n", false},
		{"long lines", "GET /" + strings.Repeat("a", 5000) + " HTTP/1.1\r\nX: " + strings.Repeat("b", 5000) + "\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", true},
	}
	for _, tt := range tests {
		for _, size := range []int{1, 2, 3, 7, 64, 1 << 20} {
			var s framingScanner
			got := false
			for p := tt.stream; len(p) > 0 && !got; {
				n := min(size, len(p))
				got = s.scan([]byte(p[:n]))
				p = p[n:]
			}
			if got != tt.want {
				t.Errorf("%s, reads of %d bytes: %v, want %v", tt.name, size, got, tt.want)
			}
		}
	}
}

func TestValidRequestID(t *testing.T) {
	for id, want := range map[string]bool{
		"req-1":                    true,
		"A.b_c-9":                  true,
		strings.Repeat("a", 64):    true,
		"":                         false,
		strings.Repeat("a", 65):    false,
		"a b":                      false,
		"a/b":                      false,
		"a\"b":                     false,
		"<script>":                 false,
		"%41":                      false,
		"caf\u00e9":                false,
		"a\x00b":                   false,
		"a\nb":                     false,
		"5f2c0a9e1b7d4c3a8e6f0b12": true,
	} {
		if got := validRequestID(id); got != want {
			t.Errorf("validRequestID(%q) = %v, want %v", id, got, want)
		}
	}
}
