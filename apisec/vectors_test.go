package apisec

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"
)

// vectors is the official worked example of WeChat's guide
// (testdata/official-vectors.json).
type vectors struct {
	URLPath string `json:"url_path"`
	AppID   string `json:"appid"`
	AES     struct {
		SN  string `json:"key_sn"`
		Key string `json:"key_base64"`
	} `json:"aes256_gcm"`
	RSA struct {
		SN  string `json:"key_sn"`
		PEM string `json:"app_private_key_pkcs1_pem"`
	} `json:"rsa"`
	Cert struct {
		SN  string `json:"serial_in_mp_console"`
		PEM string `json:"pem"`
	} `json:"platform_certificate"`
	Request  message `json:"request"`
	Response message `json:"response"`
}

type message struct {
	Timestamp int64             `json:"timestamp"`
	AAD       string            `json:"aad"`
	Plaintext string            `json:"plaintext"`
	IV        string            `json:"iv"`
	Data      string            `json:"data"`
	AuthTag   string            `json:"authtag"`
	Body      string            `json:"body"`
	Signed    string            `json:"signed_string"`
	Signature string            `json:"signature"`
	Headers   map[string]string `json:"headers"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/official-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// vectorKeys loads the example's keys through Load, as a deployment would.
func vectorKeys(t testing.TB, v *vectors) *Keys {
	t.Helper()
	k, err := Load(v.AppID, Material{
		SymKey: []byte(v.AES.Key), SymSN: v.AES.SN,
		PrivateKeyPEM: []byte(v.RSA.PEM), PrivateSN: v.RSA.SN,
		CertsPEM: []byte(v.Cert.PEM), CertSNs: []string{v.Cert.SN},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func vectorClient(t testing.TB, v *vectors, now int64) *Client {
	t.Helper()
	c, err := NewClient(*vectorKeys(t, v), func() time.Time { return time.Unix(now, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func headerOf(m map[string]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		h.Set(k, v)
	}
	return h
}

// The example request decrypts with the documented AAD.
func TestOfficialRequestDecrypts(t *testing.T) {
	v := loadVectors(t)
	k := vectorKeys(t, v)
	if got := string(aad(v.URLPath, v.AppID, "1635927954", v.AES.SN)); got != v.Request.AAD {
		t.Fatalf("aad = %q, want %q", got, v.Request.AAD)
	}
	plain, ok := decryptEnvelope(k.Sym, &envelope{IV: v.Request.IV, Data: v.Request.Data, AuthTag: v.Request.AuthTag}, []byte(v.Request.AAD))
	if !ok || string(plain) != v.Request.Plaintext {
		t.Fatalf("request does not decrypt to the example plaintext (ok=%v)", ok)
	}
}

// The example request's signature verifies with the app key over the
// 4-line string, and not with the key number inserted (WxJava 4.8.0's bug).
func TestOfficialRequestSignatureVerifies(t *testing.T) {
	v := loadVectors(t)
	k := vectorKeys(t, v)
	msg := signedString(v.URLPath, v.AppID, "1635927954", []byte(v.Request.Body))
	if string(msg) != v.Request.Signed {
		t.Fatal("signed string differs from the example")
	}
	if err := k.App.Verifier().Verify(msg, b64(t, v.Request.Signature)); err != nil {
		t.Fatalf("example request signature: %v", err)
	}
	five := []byte(v.URLPath + "\n" + v.AppID + "\n" + v.RSA.SN + "\n1635927954\n" + v.Request.Body)
	if k.App.Verifier().Verify(five, b64(t, v.Request.Signature)) == nil {
		t.Fatal("the signature verified with the key number in the signed string")
	}
}

// Sealing the example's parameters with its IV, _n and timestamp gives
// its ciphertext, tag and body bit for bit, its headers, and a (randomized)
// PSS signature that verifies.
func TestOfficialRequestSealsBitForBit(t *testing.T) {
	v := loadVectors(t)
	c := vectorClient(t, v, v.Request.Timestamp)
	params := []byte(`{"appid":"wxba6223c06417af7b","openid":"oEWzBfmdLqhFS2mTXCo2E4Y9gJAM","scene":0,"client_ip":"127.0.0.1"}`)
	s, err := c.sealWith(v.URLPath, params, b64(t, v.Request.IV), "o89QaPVsRu1yppIZzvSZc4", v.Request.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Body) != v.Request.Body {
		t.Fatalf("body:\n got %s\nwant %s", s.Body, v.Request.Body)
	}
	for _, name := range []string{HeaderAppID, HeaderTimestamp} {
		if got := header(s.Header, name); got != v.Request.Headers[name] {
			t.Errorf("%s = %q, want %q", name, got, v.Request.Headers[name])
		}
	}
	if got := header(s.Header, HeaderSerial); got != v.RSA.SN {
		t.Errorf("Wechatmp-Serial = %q, want the app key number", got)
	}
	sig := b64(t, header(s.Header, HeaderSignature))
	if err := c.k.App.Verifier().Verify([]byte(v.Request.Signed), sig); err != nil {
		t.Fatalf("our signature does not verify: %v", err)
	}
	// The platform side (the emulator) accepts it.
	p := &Platform{AppID: v.AppID, Sym: c.k.Sym, AppKeySN: v.RSA.SN, AppKey: c.k.App.Verifier()}
	req, rerr := p.OpenRequest(v.URLPath, v.AppID, s.Header, s.Body, time.Unix(v.Request.Timestamp+1, 0))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if string(req.Params) != v.Request.Plaintext {
		t.Fatalf("platform opened %q", req.Params)
	}
}

// The example response verifies with the platform certificate, decrypts,
// and opens through Client.Open.
func TestOfficialResponseOpens(t *testing.T) {
	v := loadVectors(t)
	c := vectorClient(t, v, v.Response.Timestamp+30)
	blk, _ := pem.Decode([]byte(v.Cert.PEM))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := NewRSAPlatformCert(v.Cert.SN, cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.verifier.Verify([]byte(v.Response.Signed), b64(t, v.Response.Signature)); err != nil {
		t.Fatalf("example response signature: %v", err)
	}
	s := &Sealed{URLPath: v.URLPath, Timestamp: v.Request.Timestamp}
	a, err := c.Open(s, headerOf(v.Response.Headers), []byte(v.Response.Body))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Signed || a.Serial != v.Cert.SN || string(a.Body) != v.Response.Plaintext {
		t.Fatalf("opened %+v", a)
	}
	// Sealing the example answer with its IV, _n and timestamp on the
	// platform side reproduces the example body.
	p := &Platform{AppID: v.AppID, Sym: c.k.Sym}
	p.Key, _ = NewPlatformKey("x", mustRSASigner(t, c), nil)
	answer := []byte(`{"errcode":0,"errmsg":"getuserriskrank succ","risk_rank":0,"unoin_id":2258658297}`)
	body, _, err := p.sealResponseWith(v.URLPath, answer, b64(t, v.Response.IV), "ShYZpqdVgY+yQVAxNSWhYg", v.Response.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, []byte(v.Response.Body)) {
		t.Fatalf("response body:\n got %s\nwant %s", body, v.Response.Body)
	}
}

func mustRSASigner(t testing.TB, c *Client) Signer {
	t.Helper()
	return c.k.App.signer
}

// A tampered example response is refused.
func TestOfficialResponseTampered(t *testing.T) {
	v := loadVectors(t)
	c := vectorClient(t, v, v.Response.Timestamp)
	s := &Sealed{URLPath: v.URLPath}
	body := []byte(v.Response.Body)
	body[10] ^= 1
	_, err := c.Open(s, headerOf(v.Response.Headers), body)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Reason != ReasonBadSignature {
		t.Fatalf("err = %v", err)
	}
}
