package apisec

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/logtest"
)

const testURL = "https://api.weixin.qq.com/wxa/business/getuserphonenumber"

// pair is a client and the platform it talks to, with the official
// example's app keys and fresh platform keys.
type pair struct {
	c        *Client
	p        *Platform
	old      *PlatformKey
	now      time.Time
	clientAt time.Time
	// afterOpen runs between the platform opening the request and sealing
	// its answer.
	afterOpen func(*pair)
	tokenApp  string
}

var (
	platformOnce sync.Once
	platformKeys [2]*PlatformKey
)

// testPlatformKeys generates two platform keys once per test binary.
func testPlatformKeys(t testing.TB) [2]*PlatformKey {
	platformOnce.Do(func() {
		for i := range platformKeys {
			k, err := GeneratePlatformKey(fmt.Sprintf("platform-sn-%d", i), "wxba6223c06417af7b", time.Now())
			if err != nil {
				panic(err)
			}
			platformKeys[i] = k
		}
	})
	return platformKeys
}

func newPair(t testing.TB) *pair {
	t.Helper()
	v := loadVectors(t)
	pk := testPlatformKeys(t)
	k := vectorKeys(t, v)
	cur, _ := pk[0].Certificate(RSAwithSHA256)
	old, _ := pk[1].Certificate(RSAwithSHA256)
	k.Platform = []*PlatformCert{cur, old}
	pr := &pair{now: time.Unix(1_800_000_000, 0)}
	pr.clientAt = pr.now
	c, err := NewClient(*k, func() time.Time { return pr.clientAt })
	if err != nil {
		t.Fatal(err)
	}
	pr.c, pr.old = c, pk[1]
	pr.p = &Platform{AppID: k.AppID, Sym: k.Sym, AppKeySN: k.App.SN(), AppKey: k.App.Verifier(), Key: pk[0]}
	return pr
}

// roundTrip seals params, has the platform open them and seal answer, and
// returns what the client makes of it.
func (pr *pair) roundTrip(t testing.TB, answer string, mutate func(h http.Header, body []byte) []byte) (*Answer, error) {
	t.Helper()
	s, err := pr.c.Seal(testURL, []byte(`{"code":"0123456789abcdef"}`))
	if err != nil {
		t.Fatal(err)
	}
	req, rerr := pr.p.OpenRequest(testURL, pr.p.AppID, s.Header, s.Body, pr.now)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !strings.Contains(string(req.Params), `"code":"0123456789abcdef"`) {
		t.Fatalf("params %s", req.Params)
	}
	if pr.afterOpen != nil {
		pr.afterOpen(pr)
	}
	body, h, err := pr.p.SealResponse(testURL, []byte(answer), pr.now)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		body = mutate(h, body)
	}
	return pr.c.Open(s, h, body)
}

const successAnswer = `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000"}}`

func TestRoundTrip(t *testing.T) {
	pr := newPair(t)
	a, err := pr.roundTrip(t, successAnswer, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Signed || a.Serial != "platform-sn-0" || !strings.Contains(string(a.Body), "13800138000") {
		t.Fatalf("answer %+v", a)
	}
}

// During a rotation the answer is signed by both keys; a client that
// holds only one of the two certificates accepts it either way.
func TestRotationDeprecatedPair(t *testing.T) {
	for _, keep := range []int{0, 1} {
		pr := newPair(t)
		pr.p.Deprecated = pr.old
		pr.c.k.Platform = pr.c.k.Platform[keep : keep+1]
		a, err := pr.roundTrip(t, successAnswer, nil)
		if err != nil {
			t.Fatalf("keep %d: %v", keep, err)
		}
		if want := []string{"platform-sn-0", "platform-sn-1"}[keep]; a.Serial != want {
			t.Fatalf("keep %d: verified by %s", keep, a.Serial)
		}
	}
}

// Every way an answer can fail verification is refused with its reason.
func TestOpenRefusals(t *testing.T) {
	other := testPlatformKeys(t)[1]
	cases := []struct {
		name    string
		answer  string
		setup   func(pr *pair)
		mutate  func(h http.Header, body []byte) []byte
		reason  string
		serials string
	}{
		{name: "unsigned plaintext success", mutate: func(h http.Header, _ []byte) []byte {
			clear(h)
			return []byte(successAnswer)
		}, reason: ReasonUnsigned},
		{name: "plaintext without errcode", mutate: func(h http.Header, _ []byte) []byte {
			return []byte(`{"phone_info":{}}`)
		}, reason: ReasonUnsigned},
		{name: "plaintext errcode 0 as string", mutate: func(h http.Header, _ []byte) []byte {
			return []byte(`{"errcode":"0"}`)
		}, reason: ReasonUnsigned},
		{name: "encrypted without signature", mutate: func(h http.Header, b []byte) []byte {
			delete(h, HeaderSignature)
			return b
		}, reason: ReasonNoSignature},
		{name: "bad signature", mutate: func(h http.Header, b []byte) []byte {
			h[HeaderSignature] = []string{"AAAA" + h[HeaderSignature][0][4:]}
			return b
		}, reason: ReasonBadSignature, serials: "platform-sn-0"},
		{name: "signature not base64", mutate: func(h http.Header, b []byte) []byte {
			h[HeaderSignature] = []string{"!!"}
			return b
		}, reason: ReasonBadSignature},
		{name: "unknown certificate", setup: func(pr *pair) { pr.p.Key = unknownKey(t) },
			reason: ReasonUnknownCert, serials: "unknown-sn"},
		{name: "right serial, wrong key", setup: func(pr *pair) {
			pr.p.Key, _ = NewPlatformKey("platform-sn-0", other.signer, nil)
		}, reason: ReasonBadSignature},
		{name: "body changed after signing", mutate: func(h http.Header, b []byte) []byte {
			return append(b, ' ')
		}, reason: ReasonBadSignature},
		{name: "missing timestamp header", mutate: func(h http.Header, b []byte) []byte {
			delete(h, HeaderTimestamp)
			return b
		}, reason: ReasonBadHeaders},
		{name: "non-numeric timestamp header", mutate: func(h http.Header, b []byte) []byte {
			h[HeaderTimestamp] = []string{"+1800000000"}
			return b
		}, reason: ReasonBadHeaders},
		{name: "other appid header", mutate: func(h http.Header, b []byte) []byte {
			h[HeaderAppID] = []string{"wxother"}
			return b
		}, reason: ReasonAppIDMismatch},
		{name: "signed by platform for another app", setup: func(pr *pair) {
			pr.p.AppID = "wxother"
		}, mutate: func(h http.Header, b []byte) []byte {
			h[HeaderAppID] = []string{"wxba6223c06417af7b"}
			return b
		}, reason: ReasonBadSignature},
		{name: "clock skew (answer from the past)", setup: func(pr *pair) { pr.clientAt = pr.now.Add(5*time.Minute + time.Second) }, reason: ReasonClockSkew},
		{name: "clock skew (answer from the future)", setup: func(pr *pair) { pr.clientAt = pr.now.Add(-6 * time.Minute) }, reason: ReasonClockSkew},
		{name: "wrong symmetric key number", setup: func(pr *pair) {
			k, _ := NewSymKey("other-sn", AES256GCM, pr.p.Sym.aead)
			pr.p.Sym = k
		}, reason: ReasonCannotDecrypt},
		{name: "half an envelope", mutate: func(h http.Header, b []byte) []byte {
			return []byte(`{"iv":"AAAAAAAAAAAAAAAA","errcode":0}`)
		}, reason: ReasonMalformed},
		{name: "not JSON", mutate: func(h http.Header, b []byte) []byte { return []byte("<html>") }, reason: ReasonMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			// Fresh platform per case: setup may replace its fields.
			pr.afterOpen = tc.setup
			answer := tc.answer
			if answer == "" {
				answer = successAnswer
			}
			a, err := pr.roundTrip(t, answer, tc.mutate)
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrVerification) {
				t.Fatalf("answer %+v, err %v; want a VerifyError", a, err)
			}
			if ve.Reason != tc.reason {
				t.Fatalf("reason %q, want %q", ve.Reason, tc.reason)
			}
			if tc.serials != "" && !strings.Contains(err.Error(), tc.serials) {
				t.Fatalf("error %q does not name serial %s", err, tc.serials)
			}
			if strings.Contains(err.Error(), "13800138000") || strings.Contains(err.Error(), "0123456789abcdef") {
				t.Fatal("error leaks the plaintext")
			}
		})
	}
}

func unknownKey(t testing.TB) *PlatformKey {
	k, err := NewPlatformKey("unknown-sn", testPlatformKeys(t)[1].signer, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Decrypted plaintext whose security fields lie is refused even though
// the signature verifies (a platform bug or a replayed answer).
func TestOpenSecurityFieldMismatch(t *testing.T) {
	for _, tc := range []struct{ name, answer, reason string }{
		{"no _appid", `{"errcode":0}`, ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			s, _ := pr.c.Seal(testURL, []byte(`{"code":"x"}`))
			ts := pr.now.Unix()
			body := encryptBody(pr.p.Sym, make([]byte, 12), []byte(tc.answer), aad(testURL, pr.p.AppID, fmt.Sprint(ts), pr.p.Sym.sn))
			h := signedHeader(t, pr, ts, body)
			_, err := pr.c.Open(s, h, body)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Reason != tc.reason {
				t.Fatalf("err %v", err)
			}
		})
	}
	for _, tc := range []struct{ name, plain, reason string }{
		{"_appid of another app", `{"_n":"x","_appid":"wxother","_timestamp":%d,"errcode":0}`, ReasonAppIDMismatch},
		{"_timestamp not the header's", `{"_n":"x","_appid":"wxba6223c06417af7b","_timestamp":%d1,"errcode":0}`, ReasonTimestampHeader},
		{"_timestamp a string", `{"_n":"x","_appid":"wxba6223c06417af7b","_timestamp":"%d","errcode":0}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			s, _ := pr.c.Seal(testURL, []byte(`{"code":"x"}`))
			ts := pr.now.Unix()
			plain := fmt.Sprintf(tc.plain, ts)
			body := encryptBody(pr.p.Sym, make([]byte, 12), []byte(plain), aad(testURL, pr.p.AppID, fmt.Sprint(ts), pr.p.Sym.sn))
			_, err := pr.c.Open(s, signedHeader(t, pr, ts, body), body)
			var ve *VerifyError
			if tc.reason == "" {
				// A string holding the same number is tolerated.
				if err != nil {
					t.Fatalf("err %v", err)
				}
				return
			}
			if !errors.As(err, &ve) || ve.Reason != tc.reason {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func signedHeader(t testing.TB, pr *pair, ts int64, body []byte) http.Header {
	t.Helper()
	tsText := fmt.Sprint(ts)
	sig, err := pr.p.Key.signer.Sign(nil, signedString(testURL, pr.p.AppID, tsText, body))
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{
		HeaderAppID: {pr.p.AppID}, HeaderTimestamp: {tsText}, HeaderSerial: {pr.p.Key.sn},
		HeaderSignature: {b64enc(sig)},
	}
}

// An unsigned plaintext error is accepted as an error, whether or not it
// carries headers, and so is a signed encrypted error.
func TestOpenPlaintextError(t *testing.T) {
	pr := newPair(t)
	s, _ := pr.c.Seal(testURL, []byte(`{"code":"x"}`))
	for _, body := range []string{
		`{"errcode":40234,"errmsg":"invalid signature rid: 1-2-3"}`,
		`{"errcode":"40029","errmsg":"invalid code"}`,
		` {"errcode":-1,"errmsg":"system error"}`,
	} {
		a, err := pr.c.Open(s, http.Header{}, []byte(body))
		if err != nil || a.Signed || string(a.Body) != body {
			t.Fatalf("%s: %+v %v", body, a, err)
		}
	}
	a, err := pr.roundTrip(t, `{"errcode":40029,"errmsg":"invalid code"}`, nil)
	if err != nil || !a.Signed {
		t.Fatalf("signed error: %+v %v", a, err)
	}
}

// Key types never print their material.
func TestKeysNeverPrint(t *testing.T) {
	v := loadVectors(t)
	k := vectorKeys(t, v)
	pk := testPlatformKeys(t)[0]
	logs := new(logtest.Buffer)
	log := slog.New(slog.NewJSONHandler(logs, nil))
	for _, x := range []any{k.Sym, k.App, pk, k.App.signer} {
		log.Info("key", "k", x)
		js, _ := json.Marshal(x)
		for _, s := range []string{fmt.Sprint(x), fmt.Sprintf("%v %+v %#v %s %q %x", x, x, x, x, x, x), string(js), logs.String()} {
			if strings.Contains(s, "otUpngOjU") || strings.Contains(s, "MIIE") || strings.Contains(s, "PrivateKey") ||
				strings.Contains(s, "aead") || strings.Contains(s, "key:") {
				t.Fatalf("%T prints its material: %s", x, s)
			}
			if !strings.Contains(s, redacted) {
				t.Fatalf("%T prints %q", x, s)
			}
		}
	}
}

// Load refuses bad material with a message that names the part and
// never quotes it.
func TestLoadRefusals(t *testing.T) {
	v := loadVectors(t)
	good := Material{
		SymKey: []byte(v.AES.Key), SymSN: v.AES.SN, PrivateKeyPEM: []byte(v.RSA.PEM), PrivateSN: v.RSA.SN,
		CertsPEM: []byte(v.Cert.PEM), CertSNs: []string{v.Cert.SN},
	}
	for _, tc := range []struct {
		name string
		edit func(m *Material)
		want string
	}{
		{"sym not base64", func(m *Material) { m.SymKey = []byte("otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9tbnzLY=!") }, "not valid base64"},
		{"sym 16 bytes", func(m *Material) { m.SymKey = []byte("AAAAAAAAAAAAAAAAAAAAAA==") }, "SM4_GCM is not enabled"},
		{"sym 24 bytes", func(m *Material) { m.SymKey = []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") }, "32 bytes"},
		{"no sym sn", func(m *Material) { m.SymSN = "" }, "symmetric key number is required"},
		{"key not PEM", func(m *Material) { m.PrivateKeyPEM = []byte("otUpngOjU") }, "not PEM"},
		{"key is a cert", func(m *Material) { m.PrivateKeyPEM = []byte(v.Cert.PEM) }, `"CERTIFICATE" block`},
		{"two keys", func(m *Material) { m.PrivateKeyPEM = []byte(v.RSA.PEM + "\n" + v.RSA.PEM) }, "more than one"},
		{"bad PKCS#1", func(m *Material) {
			m.PrivateKeyPEM = []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
		}, "PKCS#1"},
		{"no cert", func(m *Material) { m.CertsPEM = nil }, "no PEM certificate"},
		{"more certs than numbers", func(m *Material) { m.CertsPEM = []byte(v.Cert.PEM + "\n" + v.Cert.PEM) }, "more certificates than numbers"},
		{"more numbers than certs", func(m *Material) { m.CertSNs = []string{"a", "b"} }, "2 platform certificate numbers but 1"},
		{"duplicate numbers", func(m *Material) {
			m.CertsPEM = []byte(v.Cert.PEM + "\n" + v.Cert.PEM)
			m.CertSNs = []string{"a", "a"}
		}, "configured twice"},
		{"sn with comma", func(m *Material) { m.PrivateSN = "a,b" }, "without spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.edit(&m)
			_, err := Load(v.AppID, m, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "otUpngOjU") || strings.Contains(err.Error(), "MII") {
				t.Fatal("error quotes key material")
			}
		})
	}
	// PKCS#8 is accepted too.
	k := vectorKeys(t, v)
	der, err := x509MarshalPKCS8(k)
	if err != nil {
		t.Fatal(err)
	}
	m := good
	m.PrivateKeyPEM = der
	if _, err := Load(v.AppID, m, nil); err != nil {
		t.Fatalf("PKCS#8: %v", err)
	}
}
