package apisec

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

// The platform side answers each broken part of a sealed request with its
// errcode (the emulator relies on this).
func TestOpenRequestErrcodes(t *testing.T) {
	cases := []struct {
		name    string
		edit    func(pr *pair, h http.Header, body []byte) []byte
		errcode int
	}{
		{"no appid", func(_ *pair, h http.Header, b []byte) []byte { delete(h, HeaderAppID); return b }, 40233},
		{"no timestamp", func(_ *pair, h http.Header, b []byte) []byte { delete(h, HeaderTimestamp); return b }, 40231},
		{"no signature", func(_ *pair, h http.Header, b []byte) []byte { delete(h, HeaderSignature); return b }, 40232},
		{"no serial", func(_ *pair, h http.Header, b []byte) []byte { delete(h, HeaderSerial); return b }, 40230},
		{"other appid", func(_ *pair, h http.Header, b []byte) []byte { h[HeaderAppID] = []string{"wxother"}; return b }, 40236},
		{"token of another app", func(pr *pair, h http.Header, b []byte) []byte { pr.tokenApp = "wxother"; return b }, 40237},
		{"no symmetric key", func(pr *pair, h http.Header, b []byte) []byte { pr.p.Sym = nil; return b }, 40238},
		{"no public key", func(pr *pair, h http.Header, b []byte) []byte { pr.p.AppKey = nil; return b }, 40239},
		{"stale timestamp", func(pr *pair, h http.Header, b []byte) []byte { pr.now = pr.now.Add(6 * time.Minute); return b }, 40240},
		{"bad signature", func(_ *pair, h http.Header, b []byte) []byte { return append(b, ' ') }, 40234},
		{"wrong key serial", func(_ *pair, h http.Header, b []byte) []byte { h[HeaderSerial] = []string{"x"}; return b }, 40234},
		{"wrong symmetric key number", func(pr *pair, h http.Header, b []byte) []byte {
			k, _ := NewSymKey("other", AES256GCM, pr.p.Sym.aead)
			pr.p.Sym = k
			return b
		}, 40235},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			pr.tokenApp = pr.p.AppID
			s, err := pr.c.Seal(testURL, []byte(`{"code":"abc"}`))
			if err != nil {
				t.Fatal(err)
			}
			h := s.Header.Clone()
			body := tc.edit(pr, h, s.Body)
			_, rerr := pr.p.OpenRequest(testURL, pr.tokenApp, h, body, pr.now)
			if rerr == nil || rerr.Errcode != tc.errcode {
				t.Fatalf("got %v, want errcode %d", rerr, tc.errcode)
			}
		})
	}
}

// A _timestamp sent as a string is refused (WeChat answers -1; the
// emulator answers 40235), and sealing always sends a number.
func TestStringTimestampRefused(t *testing.T) {
	pr := newPair(t)
	plain := []byte(`{"_n":"abc","_appid":"wxba6223c06417af7b","_timestamp":"1800000000","code":"x"}`)
	body := encryptBody(pr.p.Sym, make([]byte, 12), plain, aad(testURL, pr.p.AppID, "1800000000", pr.p.Sym.sn))
	sig, _ := pr.c.k.App.signer.Sign(nil, signedString(testURL, pr.p.AppID, "1800000000", body))
	h := http.Header{HeaderAppID: {pr.p.AppID}, HeaderTimestamp: {"1800000000"}, HeaderSignature: {b64enc(sig)}, HeaderSerial: {pr.c.k.App.sn}}
	_, rerr := pr.p.OpenRequest(testURL, pr.p.AppID, h, body, pr.now)
	if rerr == nil || rerr.Errcode != ErrcodeBadEncryption {
		t.Fatalf("got %v", rerr)
	}
}

func TestSealRefusesNonObject(t *testing.T) {
	pr := newPair(t)
	for _, p := range []string{``, `[]`, `"x"`, `{"a":}`, `{"a":1}x`} {
		if _, err := pr.c.Seal(testURL, []byte(p)); err == nil {
			t.Errorf("%q sealed", p)
		}
	}
	if _, err := pr.c.Seal("https://api.weixin.qq.com/x?access_token=t", []byte(`{}`)); err == nil {
		t.Error("URL with a query sealed")
	}
	s, err := pr.c.Seal(testURL, []byte(` {} `))
	if err != nil {
		t.Fatal(err)
	}
	req, rerr := pr.p.OpenRequest(testURL, pr.p.AppID, s.Header, s.Body, pr.now)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if errors.Is(nil, ErrVerification) || len(req.Params) == 0 {
		t.Fatal("empty params")
	}
}
