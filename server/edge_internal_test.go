package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
		{"many blanks before the colon", "POST / HTTP/1.1\r\nTransfer-Encoding" + strings.Repeat(" ", 100) + ": chunked\r\nContent-Length: 5\r\n\r\n", true},
		{"blank inside the name", "POST / HTTP/1.1\r\nTransfer -Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false},
		{"leading blank (a folded line)", "POST / HTTP/1.1\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false},
		{"CR-only line ends the block", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\r\nContent-Length: 5\r\n\r\n", false},
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

// referenceAmbiguous is framingScanner's rule over a whole buffer, written
// plainly: a block of lines (between empty lines, CRs aside) with a line
// named Transfer-Encoding and one named Content-Length (blanks before the
// colon allowed, none inside the name).
func referenceAmbiguous(stream []byte) bool {
	te, cl := false, false
	for _, line := range bytes.Split(stream, []byte("\n")) {
		if len(bytes.ReplaceAll(line, []byte("\r"), nil)) == 0 {
			te, cl = false, false
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimRight(name, " \t")
		if bytes.ContainsAny(name, " \t\r") {
			continue
		}
		te = te || bytes.EqualFold(name, []byte("Transfer-Encoding"))
		cl = cl || bytes.EqualFold(name, []byte("Content-Length"))
		if te && cl {
			return true
		}
	}
	return false
}

// FuzzFramingScanner: the streaming scanner agrees with the plain rule,
// whatever the read boundaries.
func FuzzFramingScanner(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), uint8(3))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\ncontent-length : 1\r\ntransfer-encoding\t: x\r\n\r\n"), uint8(1))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), uint8(200))
	f.Fuzz(func(t *testing.T, stream []byte, size uint8) {
		want := referenceAmbiguous(stream)
		var whole framingScanner
		if got := whole.scan(stream); got != want {
			t.Fatalf("one read: %v, reference %v: %q", got, want, stream)
		}
		n := int(size%64) + 1
		var s framingScanner
		got := false
		for p := stream; len(p) > 0 && !got; p = p[min(n, len(p)):] {
			got = s.scan(p[:min(n, len(p))])
		}
		if got != want {
			t.Fatalf("reads of %d: %v, reference %v: %q", n, got, want, stream)
		}
	})
}

// topLevelKeys lists the members of a JSON object in order, duplicates
// included (encoding/json keeps the last), or false when b is not one.
func topLevelKeys(b []byte) ([]string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		keys = append(keys, t.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
	}
	return keys, true
}

// FuzzDecodeFields: decodeFields accepts exactly the bodies that are one
// JSON object (encoding/json agrees) of distinct members named exactly
// code, appid or openid, each a string, within MaxBodyBytes, and then
// yields encoding/json's values; anything else is a 400 invalid_request
// (or 413).
func FuzzDecodeFields(f *testing.F) {
	for _, b := range []string{
		`{"code":"abc"}`, `{"code":"a","appid":"wx1","openid":"o1"}`, `{"code":"a","code":"b"}`, `{"CODE":"a"}`,
		`{"code":1}`, `{"code":null}`, `{"code":"a"} {}`, `{"co\u0064e":"a"}`, `[]`, ``, `{"code":"\ud800"}`,
		`{"code":"a","x":{"code":"b"}}`, " \t{\"openid\":\"o\"}\n",
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var code, appid, openid string
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Body = http.MaxBytesReader(nil, r.Body, MaxBodyBytes)
		e := decodeFields(r, field{name: "code", dst: &code}, field{name: "appid", dst: &appid}, field{name: "openid", dst: &openid})

		var m map[string]json.RawMessage
		keys, isObject := topLevelKeys(body)
		wantOK := len(body) <= MaxBodyBytes && isObject && json.Unmarshal(body, &m) == nil && len(m) == len(keys)
		for k, v := range m {
			wantOK = wantOK && (k == "code" || k == "appid" || k == "openid") && len(v) > 0 && v[0] == '"'
		}
		if (e == nil) != wantOK {
			t.Fatalf("decodeFields: %v, want accepted %v: %q", e, wantOK, body)
		}
		if e != nil {
			if !(e.status == 400 && e.code == CodeInvalidRequest) && !(e.status == 413 && e.code == CodeBodyTooLarge) {
				t.Fatalf("refusal %d %s: %q", e.status, e.code, body)
			}
			return
		}
		for k, dst := range map[string]string{"code": code, "appid": appid, "openid": openid} {
			var want string
			if raw, ok := m[k]; ok {
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatal(err)
				}
			}
			if dst != want {
				t.Fatalf("%s = %q, encoding/json says %q: %q", k, dst, want, body)
			}
		}
	})
}

func BenchmarkFramingScanner(b *testing.B) {
	req := []byte("POST /v1/phone-number HTTP/1.1\r\nHost: wxphone.internal\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 82\r\n" +
		"Authorization: Bearer phone-key-0123456789abcdef\r\nContent-Type: application/json\r\nX-Request-Id: 5f2c0a9e1b7d4c3a8e6f0b12\r\n" +
		"Accept-Encoding: gzip\r\n\r\n{\"code\":\"0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9\",\"openid\":\"o1\"}")
	b.SetBytes(int64(len(req)))
	var s framingScanner
	for b.Loop() {
		if s.scan(req) {
			b.Fatal("ambiguous")
		}
	}
}

// FuzzDecodeFieldsFast: a body the fast path accepts is accepted by the
// encoding/json path with the same values; one it refuses is left
// untouched. TestDecodeFieldsFastPath pins that the usual bodies take it.
func FuzzDecodeFieldsFast(f *testing.F) {
	for _, b := range append(fastBodies, slowBodies...) {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast, slow [4]string
		mk := func(v *[4]string) []field {
			return []field{{name: "code", dst: &v[0]}, {name: "appid", dst: &v[1]}, {name: "openid", dst: &v[2]}, {name: "kind", dst: &v[3]}}
		}
		if !decodeFieldsFast(body, mk(&fast)) {
			if fast != [4]string{} {
				t.Fatalf("refused %q but set %q", body, fast)
			}
			return
		}
		if e := decodeFieldsJSON(bytes.NewReader(body), mk(&slow)); e != nil {
			t.Fatalf("fast path accepted %q, encoding/json path refuses it: %s", body, e.msg)
		}
		if fast != slow {
			t.Fatalf("%q: fast %q, encoding/json path %q", body, fast, slow)
		}
	})
}

var fastBodies = []string{
	`{"code":"0a1b2c3d4e5f60718293a4b5c6d7e8f9"}`,
	`{"code":"0a1b2c3d4e5f60718293a4b5c6d7e8f9","openid":"oAbc-123_x","appid":"wx0123456789abcdef","kind":"realtime"}`,
	" {\n \"appid\" : \"wx1\" ,\n \"code\" : \"c\" } \n",
	`{}`,
}

var slowBodies = []string{
	`{"code":"a\u0062"}`,       // an escape
	`{"CODE":"x"}`,             // another case
	`{"code":"x","code":"y"}`,  // twice
	`{"code":1}`,               // not a string
	`{"code":null}`,            // null
	`{"other":"x"}`,            // unknown
	`{"code":"x"}{"code":"y"}`, // two objects
	`{"code":"x"`,              // truncated
	"{\"code\":\"\xff\"}",      // invalid UTF-8
	`["code"]`,                 // not an object
}

func TestDecodeFieldsFastPath(t *testing.T) {
	for _, b := range fastBodies {
		var code, appid, openid, kind string
		if !decodeFieldsFast([]byte(b), []field{{name: "code", dst: &code}, {name: "appid", dst: &appid}, {name: "openid", dst: &openid}, {name: "kind", dst: &kind}}) {
			t.Errorf("fast path refused %q", b)
		}
	}
	for _, b := range slowBodies {
		var code string
		if decodeFieldsFast([]byte(b), []field{{name: "code", dst: &code}}) {
			t.Errorf("fast path took %q", b)
		}
	}
	var code, openid string
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(fastBodies[1]))
	if n := testing.AllocsPerRun(100, func() {
		r.Body = io.NopCloser(strings.NewReader(fastBodies[1]))
		if e := decodeFields(r, field{name: "code", dst: &code}, field{name: "openid", dst: &openid}, field{name: "appid", dst: new(string)}, field{name: "kind", dst: new(string)}); e != nil {
			t.Fatal(e.msg)
		}
	}); n > 6 && !raceEnabled {
		t.Errorf("%v allocations to decode a usual body, want at most 6", n)
	}
}
