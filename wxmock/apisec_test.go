package wxmock

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/apisec"
)

var (
	appKeyOnce sync.Once
	appKey     *apisec.AppKey
	appKeyPEM  []byte
)

// testAppKey is one RSA app key per test binary (generation is slow).
func testAppKey(t testing.TB) *apisec.AppKey {
	t.Helper()
	appKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		s, err := apisec.NewRSASigner(k)
		if err != nil {
			panic(err)
		}
		appKey, _ = apisec.NewAppKey("app-key-sn", apisec.RSAwithSHA256, s)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		appKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	})
	return appKey
}

// secApp configures app A's mode through the admin API and returns a
// client holding the matching keys.
func secApp(t testing.TB, s *Server, required bool) *apisec.Client {
	t.Helper()
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	sym, err := apisec.NewAESKey("sym-sn", raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := testAppKey(t).PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(apiSecurityRequest{AppID: appA, SymKey: base64.StdEncoding.EncodeToString(raw), SymSN: "sym-sn",
		AppPublicKey: string(pub), AppKeySN: "app-key-sn", Required: required})
	rec := serve(s, http.MethodPost, "/admin/api-security", string(body))
	if rec.Code != 200 {
		t.Fatalf("admin: %d %s", rec.Code, rec.Body)
	}
	var in PlatformCertInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &in); err != nil {
		t.Fatal(err)
	}
	return secClient(t, s, sym, in)
}

func secClient(t testing.TB, s *Server, sym *apisec.SymKey, in PlatformCertInfo) *apisec.Client {
	t.Helper()
	pemText, sns := in.PEM, []string{in.SN}
	if in.DeprecatedSN != "" {
		pemText += in.DeprecatedPEM
		sns = append(sns, in.DeprecatedSN)
	}
	// The client loads the certificates as a deployment would.
	k, err := apisec.Load(appA, apisec.Material{
		SymKey: []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), SymSN: "x",
		PrivateKeyPEM: testPrivatePEM(t), PrivateSN: "app-key-sn",
		CertsPEM: []byte(pemText), CertSNs: sns,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.Sym = sym
	c, err := apisec.NewClient(*k, s.Now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testPrivatePEM(t testing.TB) []byte {
	testAppKey(t)
	return appKeyPEM
}

func tokA(t *testing.T, s *Server, appid string) string {
	t.Helper()
	secret := map[string]string{appA: secretA, appB: secretB}[appid]
	return stableToken(t, s, appid, secret, false).AccessToken
}

func mint(t *testing.T, s *Server, g PhoneGrant) string {
	t.Helper()
	code, err := s.MintPhoneCode(g)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func decodeWx(t *testing.T, rec *httptest.ResponseRecorder) wxResp {
	t.Helper()
	return parseWX(t, rec.Code, rec.Header(), rec.Body.Bytes())
}

// sealedExchange seals {"code":…} (with openid if set), sends it through
// the emulator's handler and returns the recorder and the sealed request.
func sealedExchange(t *testing.T, s *Server, c *apisec.Client, code, openid string) (*httptest.ResponseRecorder, *apisec.Sealed) {
	t.Helper()
	tok := tokA(t, s, appA)
	params := map[string]string{"code": code}
	if openid != "" {
		params["openid"] = openid
	}
	pb, _ := json.Marshal(params)
	url := "http://example.com/wxa/business/getuserphonenumber"
	sealed, err := c.Seal(url, pb)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, url+"?access_token="+tok, strings.NewReader(string(sealed.Body)))
	for k, v := range sealed.Header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec, sealed
}

func TestAPISecurityExchange(t *testing.T) {
	s := newTestServer(t, nil)
	c := secApp(t, s, true)
	code := mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
	rec, sealed := sealedExchange(t, s, c, code, "")
	if strings.Contains(rec.Body.String(), "13800138000") {
		t.Fatal("the answer carries the number in clear")
	}
	a, err := c.Open(sealed, rec.Header(), rec.Body.Bytes())
	if err != nil {
		t.Fatalf("open: %v (body %s)", err, rec.Body)
	}
	if !a.Signed || a.Serial != "wxmock-platform-1" || !strings.Contains(string(a.Body), `"purePhoneNumber":"13800138000"`) {
		t.Fatalf("answer %+v", a)
	}
	// The code is used: a second sealed exchange gets a plaintext 40029.
	rec, sealed = sealedExchange(t, s, c, code, "")
	a, err = c.Open(sealed, rec.Header(), rec.Body.Bytes())
	if err != nil || a.Signed || !strings.Contains(string(a.Body), `"errcode":40029`) {
		t.Fatalf("replay: %+v %v", a, err)
	}
	// Required: a plaintext request is refused with 40232.
	tok := tokA(t, s, appA)
	code = mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
	r := decodeWx(t, serve(s, http.MethodPost, "/wxa/business/getuserphonenumber?access_token="+tok, `{"code":"`+code+`"}`))
	if r.Errcode != 40232 {
		t.Fatalf("plaintext request: %d", r.Errcode)
	}
}

// Each broken part of a sealed request gets its errcode over HTTP.
func TestAPISecurityErrcodes(t *testing.T) {
	s := newTestServer(t, nil)
	c := secApp(t, s, false)
	tok := tokA(t, s, appA)
	tokB := tokA(t, s, appB)
	url := "http://example.com/wxa/business/getuserphonenumber"
	for _, tc := range []struct {
		name    string
		edit    func(h http.Header) string // returns the token to use
		errcode int
	}{
		{"no serial", func(h http.Header) string { delete(h, apisec.HeaderSerial); return tok }, 40230},
		{"no timestamp", func(h http.Header) string { delete(h, apisec.HeaderTimestamp); return tok }, 40231},
		{"no signature", func(h http.Header) string { delete(h, apisec.HeaderSignature); return tok }, 40232},
		{"no appid", func(h http.Header) string { delete(h, apisec.HeaderAppID); return tok }, 40233},
		{"bad signature", func(h http.Header) string { h[apisec.HeaderSignature] = []string{"AAAA"}; return tok }, 40234},
		{"other appid", func(h http.Header) string { h[apisec.HeaderAppID] = []string{appB}; return tok }, 40236},
		{"token of app B", func(h http.Header) string { return tokB }, 40238},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed, err := c.Seal(url, []byte(`{"code":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			h := sealed.Header.Clone()
			use := tc.edit(h)
			req := httptest.NewRequest(http.MethodPost, url+"?access_token="+use, strings.NewReader(string(sealed.Body)))
			for k, v := range h {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if r := decodeWx(t, rec); r.Errcode != tc.errcode {
				t.Fatalf("errcode %d, want %d", r.Errcode, tc.errcode)
			}
			if rec.Header().Get(apisec.HeaderSignature) != "" {
				t.Fatal("an error was signed")
			}
		})
	}
	// Clock skew: the emulator's clock moves 6 minutes past the request.
	sealed, _ := c.Seal(url, []byte(`{"code":"x"}`))
	s.Advance(6 * time.Minute)
	tok = tokA(t, s, appA)
	req := httptest.NewRequest(http.MethodPost, url+"?access_token="+tok, strings.NewReader(string(sealed.Body)))
	for k, v := range sealed.Header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if r := decodeWx(t, rec); r.Errcode != 40240 {
		t.Fatalf("skew: %d", r.Errcode)
	}
}

// unsigned_success and bad_signature consume the code and answer a
// success the client must refuse.
func TestAPISecurityAnswerFaults(t *testing.T) {
	for _, tc := range []struct{ kind, reason string }{
		{FaultUnsignedSuccess, apisec.ReasonUnsigned},
		{FaultBadSignature, apisec.ReasonBadSignature},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			s := newTestServer(t, nil)
			c := secApp(t, s, false)
			if _, err := s.AddFault(Fault{Endpoint: EndpointPhone, Kind: tc.kind, Count: 1}); err != nil {
				t.Fatal(err)
			}
			code := mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
			rec, sealed := sealedExchange(t, s, c, code, "")
			_, err := c.Open(sealed, rec.Header(), rec.Body.Bytes())
			var ve *apisec.VerifyError
			if !errors.As(err, &ve) || ve.Reason != tc.reason {
				t.Fatalf("err %v", err)
			}
			if st := s.Stats().Codes[code]; st.Answered != 1 {
				t.Fatalf("code stats %+v: the code was not consumed", st)
			}
		})
	}
	if _, err := newTestServer(t, nil).AddFault(Fault{Endpoint: EndpointToken, Kind: FaultBadSignature}); err == nil {
		t.Fatal("bad_signature on the token endpoint accepted")
	}
}

// A rotation signs with the new key and, in the -Deprecated pair, the old
// one: a client holding only the old certificate keeps working; finishing
// the rotation drops the old signature.
func TestAPISecurityRotation(t *testing.T) {
	s := newTestServer(t, nil)
	c := secApp(t, s, false)
	rec := serve(s, http.MethodPost, "/admin/api-security/rotate", `{"appid":"`+appA+`"}`)
	var in PlatformCertInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &in); err != nil || in.SN != "wxmock-platform-2" || in.DeprecatedSN != "wxmock-platform-1" {
		t.Fatalf("rotate: %s", rec.Body)
	}
	code := mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
	r, sealed := sealedExchange(t, s, c, code, "")
	if r.Header().Get(apisec.HeaderSerialDeprecated) != "wxmock-platform-1" {
		t.Fatalf("headers %v", r.Header())
	}
	a, err := c.Open(sealed, r.Header(), r.Body.Bytes())
	if err != nil || a.Serial != "wxmock-platform-1" {
		t.Fatalf("old client during rotation: %+v %v", a, err)
	}
	serve(s, http.MethodPost, "/admin/api-security/rotate", `{"appid":"`+appA+`","finish":true}`)
	code = mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
	r, sealed = sealedExchange(t, s, c, code, "")
	_, err = c.Open(sealed, r.Header(), r.Body.Bytes())
	var ve *apisec.VerifyError
	if !errors.As(err, &ve) || ve.Reason != apisec.ReasonUnknownCert {
		t.Fatalf("old client after rotation: %v", err)
	}
	got := serve(s, http.MethodGet, "/admin/api-security?appid="+appA, "")
	if !strings.Contains(got.Body.String(), "wxmock-platform-2") || strings.Contains(got.Body.String(), "deprecated") {
		t.Fatalf("get: %s", got.Body)
	}
}

func TestOpenIDBindingAndRealtime(t *testing.T) {
	s := newTestServer(t, nil)
	tok := tokA(t, s, appA)
	code := mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", OpenID: "openid-user-1", Realtime: true})
	path := "/wxa/business/getuserphonenumber?access_token=" + tok
	if r := decodeWx(t, serve(s, http.MethodPost, path, `{"code":"`+code+`","openid":"openid-user-2"}`)); r.Errcode != DefaultOpenIDMismatchErrcode {
		t.Fatalf("mismatch: %d", r.Errcode)
	}
	serve(s, http.MethodPost, "/admin/config", `{"openid_mismatch_errcode":40999}`)
	if r := decodeWx(t, serve(s, http.MethodPost, path, `{"code":"`+code+`","openid":"openid-user-2"}`)); r.Errcode != 40999 {
		t.Fatalf("configured mismatch: %d", r.Errcode)
	}
	if r := decodeWx(t, serve(s, http.MethodPost, path, `{"code":"`+code+`","openid":"openid-user-1"}`)); r.Errcode != 0 || r.PhoneInfo == nil {
		t.Fatalf("match: %+v", r)
	}
	if n := s.Stats().RealtimeGrants; n != 1 {
		t.Fatalf("realtime grants %d", n)
	}
	// Without openid in the request, or a grant without openid, no check.
	code = mint(t, s, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", OpenID: "openid-user-1"})
	if r := decodeWx(t, serve(s, http.MethodPost, path, `{"code":"`+code+`"}`)); r.Errcode != 0 {
		t.Fatalf("no openid: %d", r.Errcode)
	}
	if _, err := s.MintPhoneCode(PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", OpenID: "bad openid"}); err == nil {
		t.Fatal("bad openid minted")
	}
}
