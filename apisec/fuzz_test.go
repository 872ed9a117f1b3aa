package apisec

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzOpen feeds arbitrary answers (body and headers) to Client.Open: it
// must never panic, never accept a success that is not signed by a
// configured certificate, and never put the body into an error.
func FuzzOpen(f *testing.F) {
	pr := newPair(f)
	v := loadVectors(f)
	f.Add([]byte(v.Response.Body), "platform-sn-0", v.Response.Headers["Wechatmp-Signature"], "1800000000", "wxba6223c06417af7b")
	f.Add([]byte(`{"errcode":40234,"errmsg":"invalid signature"}`), "", "", "", "")
	f.Add([]byte(`{"errcode":0,"phone_info":{"phoneNumber":"13800138000"}}`), "", "", "", "")
	f.Add([]byte(`{"iv":"AAAAAAAAAAAAAAAA","data":"","authtag":"AAAAAAAAAAAAAAAAAAAAAA=="}`), "platform-sn-0", "AAAA", "1800000000", "wxba6223c06417af7b")
	f.Add([]byte(`{"errcode":"0x1"}`), "", "", "", "")
	s := &Sealed{URLPath: testURL}
	f.Fuzz(func(t *testing.T, body []byte, serial, sig, ts, appid string) {
		h := http.Header{}
		for name, val := range map[string]string{HeaderSerial: serial, HeaderSignature: sig, HeaderTimestamp: ts, HeaderAppID: appid} {
			if val != "" {
				h.Set(name, val)
			}
		}
		a, err := pr.c.Open(s, h, body)
		if err != nil {
			if len(body) >= 8 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("error quotes the body: %v", err)
			}
			return
		}
		if !a.Signed {
			ec, ok := parseErrcode(errcodeOf(t, a.Body))
			if !ok || ec == 0 {
				t.Fatalf("unsigned answer accepted as a success: %q", body)
			}
			return
		}
		// A signed answer can only come from a real platform signature,
		// which the fuzzer cannot forge.
		t.Fatalf("fuzzed answer verified: %q", body)
	})
}

func errcodeOf(t *testing.T, b []byte) []byte {
	var pa plainAnswer
	_ = jsonUnmarshal(b, &pa)
	return pa.ErrCode
}
