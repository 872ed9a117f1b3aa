package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// encodeJSON is what writeJSON writes for v.
func encodeJSON(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestPhoneResponseJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp phoneResponse
		fast bool
	}{
		{"usual", phoneResponse{"+86 13800138000", "13800138000", "86", watermarkJSON{"wx0123456789abcdef", 1700000000}, false}, true},
		{"replayed", phoneResponse{"13800138000", "13800138000", "86", watermarkJSON{"wx0123456789abcdef", 0}, true}, true},
		{"negative timestamp", phoneResponse{"1", "1", "1", watermarkJSON{"wx", -5}, false}, true},
		{"empty strings", phoneResponse{}, true},
		{"quote", phoneResponse{PhoneNumber: `1"2`}, false},
		{"backslash", phoneResponse{CountryCode: `8\6`}, false},
		{"html", phoneResponse{Watermark: watermarkJSON{AppID: "<wx>&"}}, false},
		{"control", phoneResponse{PurePhoneNumber: "1\n2"}, false},
		{"non-ASCII", phoneResponse{PhoneNumber: "１３８"}, false},
		{"invalid UTF-8", phoneResponse{PhoneNumber: "\xff"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.resp.appendJSON(nil)
			if ok != tc.fast {
				t.Fatalf("fast path taken %v, want %v", ok, tc.fast)
			}
			if want := encodeJSON(t, tc.resp); ok && !bytes.Equal(got, want) {
				t.Fatalf("appendJSON wrote\n%s\nencoding/json writes\n%s", got, want)
			}
		})
	}
}

// FuzzPhoneResponseJSON checks that appendJSON writes what encoding/json
// writes whenever it takes the fast path, and that it takes it when every
// string is ASCII that encoding/json copies as is.
func FuzzPhoneResponseJSON(f *testing.F) {
	f.Add("+86 13800138000", "13800138000", "86", "wx0123456789abcdef", int64(1700000000), false)
	f.Add(`1"2`, "<", "\u2028", "\xff", int64(-1), true)
	f.Fuzz(func(t *testing.T, phone, pure, cc, appid string, ts int64, replayed bool) {
		resp := phoneResponse{phone, pure, cc, watermarkJSON{appid, ts}, replayed}
		got, ok := resp.appendJSON([]byte("prefix"))
		if !ok {
			for _, s := range []string{phone, pure, cc, appid} {
				if b, _ := json.Marshal(s); len(b) != len(s)+2 || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 }) {
					return // escaped, or not ASCII: left to encoding/json
				}
			}
			t.Fatalf("fast path refused %+v, which encoding/json writes as is", resp)
		}
		if want := append([]byte("prefix"), encodeJSON(t, resp)...); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON wrote\n%q\nencoding/json writes\n%q", got, want)
		}
	})
}

// RaceEnabled is raceEnabled for the package's external tests (allocation
// pins do not hold under the race detector).
const RaceEnabled = raceEnabled

// BenchmarkPhoneResponseJSON: the answer written by hand and by
// encoding/json's Encoder (as writeJSON does), into a reused buffer.
func BenchmarkPhoneResponseJSON(b *testing.B) {
	resp := phoneResponse{"+86 13800138000", "13800138000", "86", watermarkJSON{"wx0123456789abcdef", 1700000000}, false}
	buf := bytes.NewBuffer(make([]byte, 0, 512)) // as bodyPool's
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			_, _ = resp.appendJSON(buf.AvailableBuffer())
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			_ = json.NewEncoder(buf).Encode(resp)
		}
	})
}
