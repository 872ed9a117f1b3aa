package service

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

func TestOutcomeEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    outcome
	}{
		{"number", outcome{Phone: &phoneData{"+86 13800138000", "13800138000", "86", "wx0123456789abcdef", 1700000000}}},
		{"empty strings", outcome{Phone: &phoneData{}}},
		{"escaped", outcome{Phone: &phoneData{PhoneNumber: "<1>", AppID: "\xff", CountryCode: "\u2028"}}},
		{"error", outcome{Err: &errData{Kind: kindAPI, ErrCode: 40029, ErrMsg: "invalid code"}}},
		{"empty", outcome{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.o.encode()
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := json.Marshal(tc.o); !bytes.Equal(got, want) {
				t.Fatalf("encode wrote\n%s\njson.Marshal writes\n%s", got, want)
			}
		})
	}
}

// TestOutcomeEncodeAllocs pins the hand-written path at one allocation
// (the result), even with the longest timestamp.
func TestOutcomeEncodeAllocs(t *testing.T) {
	o := outcome{Phone: &phoneData{"+86 13800138000", "13800138000", "86", "wx0123456789abcdef", math.MinInt64}}
	if n := testing.AllocsPerRun(100, func() { _, _ = o.encode() }); n > 1 {
		t.Errorf("%.0f allocations, want 1", n)
	}
}

// FuzzOutcomeEncode checks that the hand-written encoding of a stored
// outcome is json.Marshal's, byte for byte.
func FuzzOutcomeEncode(f *testing.F) {
	f.Add("+86 13800138000", "13800138000", "86", "wx0123456789abcdef", int64(1700000000))
	f.Add(`"`, `\`, "&", "\x00", int64(-1))
	f.Fuzz(func(t *testing.T, n, pn, cc, a string, ts int64) {
		o := outcome{Phone: &phoneData{n, pn, cc, a, ts}}
		got, err := o.encode()
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := json.Marshal(o); !bytes.Equal(got, want) {
			t.Fatalf("encode wrote\n%q\njson.Marshal writes\n%q", got, want)
		}
	})
}

// BenchmarkOutcomeEncode: the stored outcome of a number, written by hand
// and by json.Marshal.
func BenchmarkOutcomeEncode(b *testing.B) {
	o := outcome{Phone: &phoneData{"+86 13800138000", "13800138000", "86", "wx0123456789abcdef", 1700000000}}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = o.encode()
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(o)
		}
	})
}
