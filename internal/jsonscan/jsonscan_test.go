package jsonscan

import (
	"encoding/json"
	"testing"
)

func TestScalars(t *testing.T) {
	for _, c := range []struct {
		in   string
		ok   bool
		text string // Str's or Integer's text
	}{
		{`"abc"`, true, "abc"},
		{` "中文" `, true, "中文"},
		{`""`, true, ""},
		{`"a\"b"`, false, ""},
		{`"a\u0062"`, false, ""},
		{"\"a\tb\"", false, ""},
		{"\"\xff\"", false, ""},
		{`"abc`, false, ""},
		{`0`, true, "0"},
		{`-12`, true, "-12"},
		{`012`, false, ""},
		{`-`, false, ""},
		{`1.5`, false, ""},
		{`1e3`, false, ""},
		{`123456789012345678`, true, "123456789012345678"},
		{`1234567890123456789`, false, ""},
		{`true`, true, ""},
		{`false`, true, ""},
		{`null`, false, ""},
		{`tru`, false, ""},
	} {
		var s Scanner
		s.Reset([]byte(c.in))
		var ok bool
		var text string
		switch s.Peek() {
		case '"':
			text, ok = s.Str()
		case 't', 'f', 'n':
			ok = s.SkipScalar()
		default:
			_, text, ok = s.Integer()
		}
		ok = ok && s.End()
		if ok != c.ok || text != c.text {
			t.Errorf("%q: ok %v text %q, want %v %q", c.in, ok, text, c.ok, c.text)
		}
		if ok && !json.Valid([]byte(c.in)) {
			t.Errorf("%q accepted but not JSON", c.in)
		}
	}
}

func TestObject(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{` { "a" : "b" , "c" : 1 } `, true},
		{`{"a":"b",}`, false},
		{`{"a":"b" "c":1}`, false},
		{`{,}`, false},
		{`{"a"}`, false},
		{`{"a":"b"} x`, false},
		{`{"a":"b"`, false},
		{`{"a" "b"}`, false},
		{`{"a":{}}`, false},
	} {
		var s Scanner
		s.Reset([]byte(c.in))
		ok := s.Members(func([]byte) (uint64, bool) { return 0, s.SkipScalar() })
		if got := ok && s.End(); got != c.ok {
			t.Errorf("%q: %v, want %v", c.in, got, c.ok)
		}
	}
}

func TestMembersRefusesARepeatedField(t *testing.T) {
	var s Scanner
	s.Reset([]byte(`{"a":"1","b":"2","a":"3"}`))
	if s.Members(func(k []byte) (uint64, bool) {
		_, ok := s.Str()
		if string(k) == "a" {
			return 1, ok
		}
		return 0, ok
	}) {
		t.Fatal("a repeated field was accepted")
	}
}

func TestFoldsTo(t *testing.T) {
	if !FoldsTo([]byte("WATERMARK"), "appid", "watermark") || !FoldsTo([]byte("watermar\u212a"), "watermark") || FoldsTo([]byte("water"), "watermark") {
		t.Fatal("FoldsTo does not fold as bytes.EqualFold")
	}
}

// TestPlain checks Plain against encoding/json for every byte and rune
// below 256 and a few strings: a plain string is one encoding/json copies
// as is, and an ASCII string encoding/json copies as is is plain (Plain
// leaves all non-ASCII to encoding/json).
func TestPlain(t *testing.T) {
	cases := []string{"", "+86 13800138000", "wx0123456789abcdef", "a\u2028b", "é", "\xff", "~", "a<b"}
	for c := range 256 {
		cases = append(cases, "x"+string(rune(c))+"y", "x"+string([]byte{byte(c)})+"y")
	}
	for _, s := range cases {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		asIs := string(b) == `"`+s+`"`
		if Plain(s) && !asIs || !Plain(s) && asIs && isASCII(s) {
			t.Errorf("Plain(%q) = %v, encoding/json writes %s", s, Plain(s), b)
		}
	}
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
