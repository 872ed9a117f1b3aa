package sm_test

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/sm4"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/apisec/sm"
	"github.com/wxphone/wxphone/wxmock"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Known answers of the standards pin the library: SM3 (GB/T 32905,
// "abc"), SM4 (GB/T 32907, example 1) and SM4-GCM (RFC 8998, A.1).
func TestKnownAnswers(t *testing.T) {
	if got := sm3.Sum([]byte("abc")); !bytes.Equal(got[:], unhex(t, "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")) {
		t.Errorf("SM3(abc) = %x", got)
	}
	key := unhex(t, "0123456789abcdeffedcba9876543210")
	b, err := sm4.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 16)
	b.Encrypt(out, key)
	if !bytes.Equal(out, unhex(t, "681edf34d206965e86b3e94f536e4246")) {
		t.Errorf("SM4 = %x", out)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	iv := unhex(t, "00001234567800000000abcd")
	aad := unhex(t, "feedfacedeadbeeffeedfacedeadbeefabaddad2")
	pt := unhex(t, "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccddddddddddddddddeeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa")
	want := unhex(t, "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d"+
		"83de3541e4c2b58177e065a9bf7b62ec")
	if got := g.Seal(nil, iv, pt, aad); !bytes.Equal(got, want) {
		t.Errorf("SM4-GCM = %x", got)
	}
}

// SM2 signatures verify only with the signer's ID and key.
func TestSM2SignVerify(t *testing.T) {
	k, _, err := sm.GenerateAppKey("app-sn")
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := sm.GenerateAppKey("app-sn")
	msg := []byte("https://api.weixin.qq.com/wxa/business/getuserphonenumber\nwxapp\n1800000000\n{}")
	// The app key signs through apisec (Seal); check the verifier here.
	sealer := sealerFor(t, k)
	s, err := sealer.Seal("https://api.weixin.qq.com/wxa/business/getuserphonenumber", []byte(`{"code":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(s.Header.Get(apisec.HeaderSignature))
	signed := []byte("https://api.weixin.qq.com/wxa/business/getuserphonenumber\nwxapp\n" + strconv.FormatInt(s.Timestamp, 10) + "\n" + string(s.Body))
	if err := k.Verifier().Verify(signed, sig); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if other.Verifier().Verify(signed, sig) == nil {
		t.Fatal("verified with another key")
	}
	v := k.Verifier().(*sm.Verifier)
	if v.WithID("another-id").Verify(signed, sig) == nil {
		t.Fatal("verified with another ID")
	}
	if k.Verifier().Verify(msg, sig) == nil {
		t.Fatal("verified another message")
	}
}

func sealerFor(t *testing.T, k *apisec.AppKey) *apisec.Client {
	t.Helper()
	sym, err := sm.NewSM4Key("sym-sn", make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := sm.GeneratePlatformKey("p", "wxapp", time.Now())
	cert, _ := pk.Certificate(apisec.SM2withSM3)
	c, err := apisec.NewClient(apisec.Keys{AppID: "wxapp", Sym: sym, App: k, Platform: []*apisec.PlatformCert{cert}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const appID = "wxsmtest00000001"

// smEnv configures the emulator's mode for the app with SM keys through
// its admin API, and loads the app's keys from PEM and base64 as a
// deployment would.
func smEnv(t *testing.T) (*wxmock.Server, *httptest.Server, *apisec.Keys) {
	t.Helper()
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appID, Secret: "sm-secret-0123456789"}}, KeyExtension: sm.Extension{}, LoadPrefix: "load-"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	app, keyPEM, err := sm.GenerateAppKey("sm-app-sn")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := app.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	symRaw := make([]byte, 16)
	_, _ = rand.Read(symRaw)
	symB64 := base64.StdEncoding.EncodeToString(symRaw)
	req, _ := json.Marshal(map[string]any{"appid": appID, "sym_key": symB64, "sym_sn": "sm-sym-sn",
		"app_public_key": string(pub), "app_key_sn": "sm-app-sn", "required": true})
	resp, err := http.Post(srv.URL+"/admin/api-security", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var in wxmock.PlatformCertInfo
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil || resp.StatusCode != 200 || in.SN == "" {
		t.Fatalf("admin: %d %v %+v", resp.StatusCode, err, in)
	}
	keys, err := apisec.Load(appID, apisec.Material{
		SymKey: []byte(symB64), SymSN: "sm-sym-sn", PrivateKeyPEM: keyPEM, PrivateSN: "sm-app-sn",
		CertsPEM: []byte(in.PEM), CertSNs: []string{in.SN},
	}, sm.Extension{})
	if err != nil {
		t.Fatal(err)
	}
	if keys.Sym.Algorithm() != apisec.SM4GCM || keys.App.Algorithm() != apisec.SM2withSM3 || keys.Platform[0].Algorithm() != apisec.SM2withSM3 {
		t.Fatalf("algorithms %s %s %s", keys.Sym.Algorithm(), keys.App.Algorithm(), keys.Platform[0].Algorithm())
	}
	return emu, srv, keys
}

// The whole exchange in SM4_GCM and SM2withSM3 against the emulator:
// success, a refused bad signature, and a certificate rotation.
func TestSMRoundTripThroughEmulator(t *testing.T) {
	emu, srv, keys := smEnv(t)
	c, err := wxphone.New(wxphone.Config{AppID: appID, Secret: "sm-secret-0123456789", BaseURL: srv.URL, APISecurity: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.PhoneNumber(ctx, code)
	if err != nil || p.PurePhoneNumber.Reveal() != "13800138000" {
		t.Fatalf("SM exchange: %v, %v", p, err)
	}
	if _, err := emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultBadSignature, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PhoneNumber(ctx, "load-1")
	if !errors.Is(err, wxphone.ErrAnswerUnverified) || !errors.Is(err, wxphone.ErrOutcomeUnknown) {
		t.Fatalf("bad SM2 signature: %v", err)
	}
	in, err := emu.RotatePlatformCert(appID, false)
	if err != nil || !strings.Contains(in.PEM, "CERTIFICATE") || in.DeprecatedSN == "" {
		t.Fatalf("rotate: %+v %v", in, err)
	}
	if _, err := c.PhoneNumber(ctx, "load-2"); err != nil {
		t.Fatalf("during SM rotation: %v", err)
	}
}

// A request signed with another SM2 key is refused by the emulator with
// 40234, a configuration error.
func TestSMWrongKey(t *testing.T) {
	_, srv, keys := smEnv(t)
	other, _, _ := sm.GenerateAppKey("sm-app-sn")
	keys.App = other
	c, err := wxphone.New(wxphone.Config{AppID: appID, Secret: "sm-secret-0123456789", BaseURL: srv.URL, APISecurity: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.PhoneNumber(ctx, "load-1")
	var ae *wxphone.APIError
	if !errors.As(err, &ae) || ae.ErrCode != 40234 || !errors.Is(err, wxphone.ErrAPISecurityConfig) {
		t.Fatalf("wrong SM2 key: %v", err)
	}
}

// The extension leaves AES and RSA material to apisec, and refuses a
// malformed SM2 key with a message that does not quote it.
func TestExtensionBoundaries(t *testing.T) {
	var e sm.Extension
	if _, ok, _ := e.SymKey("sn", make([]byte, 32)); ok {
		t.Fatal("a 32-byte key taken as SM4")
	}
	if _, ok, err := e.SymKey("sn", make([]byte, 16)); !ok || err != nil {
		t.Fatal("a 16-byte key not taken as SM4")
	}
	_, err := apisec.Load(appID, apisec.Material{SymKey: []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), SymSN: "s",
		PrivateKeyPEM: []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), PrivateSN: "p",
		CertsPEM: []byte("x"), CertSNs: []string{"c"}}, e)
	if err == nil || !strings.Contains(err.Error(), "SM2") || strings.Contains(err.Error(), "AAAA") {
		t.Fatalf("bad SM2 key: %v", err)
	}
	k, _, _ := sm.GenerateAppKey("p")
	if got := k.String(); got != "[REDACTED]" {
		t.Fatalf("app key prints %q", got)
	}
}
