package wxphone

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/wxmock"
)

var (
	secKeyOnce sync.Once
	secKeyPEM  [2][]byte // two app keys (PKCS#8 PEM), generated once per test binary
)

func testAppKeyPEM(t testing.TB, i int) []byte {
	t.Helper()
	secKeyOnce.Do(func() {
		for j := range secKeyPEM {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			secKeyPEM[j] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}
	})
	return secKeyPEM[i]
}

const testSymKey = "otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9tbnzLY="

// secSetup configures the emulator's mode for the test app with app key 0
// (required: plaintext exchanges are refused) and returns the keys the
// app configures, app key number appKey selecting the key it signs with.
func secSetup(t testing.TB, emu *wxmock.Server, appKey int) *apisec.Keys {
	t.Helper()
	platform := apisec.Material{SymKey: []byte(testSymKey), SymSN: "sym-sn", PrivateKeyPEM: testAppKeyPEM(t, 0), PrivateSN: "app-sn"}
	// The emulator holds the app's public key and the symmetric key.
	pk, err := apisec.Load(testAppID, withCert(t, platform), nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := emu.SetAPISecurity(testAppID, wxmock.APISecurity{SymKey: pk.Sym, AppKeySN: "app-sn", AppKey: pk.App.Verifier(), Required: true})
	if err != nil {
		t.Fatal(err)
	}
	m := platform
	m.PrivateKeyPEM = testAppKeyPEM(t, appKey)
	m.CertsPEM, m.CertSNs = []byte(in.PEM), []string{in.SN}
	k, err := apisec.Load(testAppID, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// withCert completes m with a throwaway certificate so that Load accepts
// it (the emulator side needs only the symmetric and app keys).
func withCert(t testing.TB, m apisec.Material) apisec.Material {
	pk, err := apisec.GeneratePlatformKey("tmp", testAppID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m.CertsPEM, m.CertSNs = pk.CertificatePEM(), []string{"tmp"}
	return m
}

func secClient(t testing.TB, env *srvEnv, k *apisec.Keys, logs *logtest.Buffer) *Client {
	t.Helper()
	cfg := env.config(t)
	cfg.APISecurity = k
	if logs != nil {
		cfg.Logger = debugLogger(logs)
	}
	return newTestClient(t, cfg)
}

// The exchange goes through the mode end to end: the code never crosses
// the wire in clear, the request carries the mode's headers, the answer
// verifies and decodes.
func TestAPISecurityExchange(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := secClient(t, env, secSetup(t, env.emu, 0), nil)
	ctx := ctxTimeout(t, 20*time.Second)
	code := mintPhone(t, env.emu, testPhone)
	p, err := c.PhoneNumber(ctx, code)
	if err != nil || p.PurePhoneNumber.Reveal() != testPhone || p.Watermark.AppID != testAppID {
		t.Fatalf("PhoneNumber = %+v, %v", p, err)
	}
	for _, r := range env.rec.requests() {
		if r.Path != pathPhone {
			continue
		}
		if strings.Contains(r.Body, code) || !strings.Contains(r.Body, `"authtag"`) {
			t.Fatalf("request body %s", r.Body)
		}
		for _, h := range []string{"Wechatmp-Appid", "Wechatmp-Timestamp", "Wechatmp-Signature", "Wechatmp-Serial"} {
			if r.Header.Get(h) == "" {
				t.Errorf("request without %s", h)
			}
		}
	}
	// A second exchange of the same code: WeChat's plaintext, unsigned
	// 40029 is accepted as the error it is.
	if _, err := c.PhoneNumber(ctx, code); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("second exchange: %v", err)
	}
}

// An unsigned or badly signed success is refused: outcome unknown (the
// code was used), a log line saying why, and no number anywhere.
func TestAPISecurityUnverifiedSuccess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ kind, reason string }{
		{wxmock.FaultUnsignedSuccess, apisec.ReasonUnsigned},
		{wxmock.FaultBadSignature, apisec.ReasonBadSignature},
	} {
		env := newSrvEnv(t)
		logs := new(logtest.Buffer)
		var events []UpstreamEvent
		cfg := env.config(t)
		cfg.APISecurity = secSetup(t, env.emu, 0)
		cfg.Logger = debugLogger(logs)
		cfg.Hooks.OnUpstream = func(e UpstreamEvent) { events = append(events, e) }
		c := newTestClient(t, cfg)
		addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: tc.kind, Count: 1})
		code := mintPhone(t, env.emu, testPhone)
		p, err := c.PhoneNumber(ctxTimeout(t, 20*time.Second), code)
		var ve *VerificationError
		if p != nil || !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrAnswerUnverified) || !errors.As(err, &ve) || ve.Reason != tc.reason {
			t.Fatalf("%s: %v, %v", tc.kind, p, err)
		}
		if n := env.rec.count(pathPhone); n != 1 {
			t.Fatalf("%s: %d phone requests; the code must not be resent", tc.kind, n)
		}
		out := logs.String() + err.Error()
		if !strings.Contains(logs.String(), "failed verification") || strings.Contains(out, testPhone) || strings.Contains(out, code) {
			t.Fatalf("%s: logs %s", tc.kind, logs)
		}
		if len(events) == 0 || !errors.Is(events[len(events)-1].Err, ErrAnswerUnverified) {
			t.Fatalf("%s: no upstream event carrying the verification failure", tc.kind)
		}
	}
}

// A signing key that does not match the console's public key is a
// configuration error (40234): typed, not an outcome unknown, and the code
// is still good once the key is fixed.
func TestAPISecurityConfigErrors(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	bad := secClient(t, env, secSetup(t, env.emu, 1), nil)
	ctx := ctxTimeout(t, 20*time.Second)
	code := mintPhone(t, env.emu, testPhone)
	_, err := bad.PhoneNumber(ctx, code)
	var ae *APIError
	if !errors.Is(err, ErrAPISecurityConfig) || !errors.Is(err, ErrAPISecurity) || errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &ae) || ae.ErrCode != 40234 {
		t.Fatalf("wrong key: %v", err)
	}
	if s := APISecuritySettings(ae.ErrCode); !strings.Contains(s, "WX_API_PRIVATE_KEY_FILE") {
		t.Fatalf("settings hint %q", s)
	}
	good := secClient(t, env, secSetup(t, env.emu, 0), nil)
	if p, err := good.PhoneNumber(ctx, code); err != nil || p.PurePhoneNumber.Reveal() != testPhone {
		t.Fatalf("after fixing the key: %v, %v", p, err)
	}
	// Clock skew: WeChat's clock is ten minutes ahead.
	code = mintPhone(t, env.emu, testPhone)
	env.emu.Advance(10 * time.Minute)
	if _, err := good.PhoneNumber(ctx, code); !errors.Is(err, ErrClockSkew) || !strings.Contains(err.Error(), "40240") {
		t.Fatalf("skew: %v", err)
	}
	for ec := 40230; ec <= 40240; ec++ {
		e := &APIError{Op: OpPhoneNumber, ErrCode: ec}
		if !errors.Is(e, ErrAPISecurity) || errors.Is(e, ErrAPISecurityConfig) != (ec >= 40234 && ec <= 40239) || errors.Is(e, ErrClockSkew) != (ec == 40240) {
			t.Errorf("errcode %d: sentinels wrong", ec)
		}
	}
}

// During a rotation a client holding only the old certificate keeps
// working (the -Deprecated pair); after it, the old certificate no longer
// verifies and the answer is refused.
func TestAPISecurityRotation(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := secClient(t, env, secSetup(t, env.emu, 0), nil)
	ctx := ctxTimeout(t, 20*time.Second)
	if _, err := env.emu.RotatePlatformCert(testAppID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil {
		t.Fatalf("during rotation: %v", err)
	}
	if _, err := env.emu.RotatePlatformCert(testAppID, true); err != nil {
		t.Fatal(err)
	}
	_, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone))
	if !errors.Is(err, ErrAnswerUnverified) || !errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "WX_API_PLATFORM_CERT") {
		t.Fatalf("after rotation: %v", err)
	}
}

// A sealed request the transport never read is proven unsent and resent
// (freshly sealed); the code is used once.
func TestAPISecurityNothingSent(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	fd := &flakyDialer{}
	hc := NewHTTPClient()
	tr := hc.Transport.(*http.Transport)
	tr.DialContext = fd.DialContext
	tr.DisableKeepAlives = true
	t.Cleanup(hc.CloseIdleConnections)
	cfg := env.config(t)
	cfg.HTTPClient = hc
	cfg.APISecurity = secSetup(t, env.emu, 0)
	c := newTestClient(t, cfg)
	ctx := ctxTimeout(t, 20*time.Second)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	fd.failNext.Store(1)
	if p, err := c.PhoneNumber(ctx, mintPhone(t, env.emu, testPhone)); err != nil || p.PurePhoneNumber.Reveal() != testPhone {
		t.Fatalf("%v, %v", p, err)
	}
	if n := env.rec.count(pathPhone); n != 1 {
		t.Fatalf("%d phone requests reached the emulator", n)
	}
}

// openid is sent when given, checked by WeChat (the emulator), and a
// mismatch is an API error carrying its errcode and rid; the switch keeps
// it local.
func TestOpenIDBinding(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := newTestClient(t, env.config(t))
	ctx := ctxTimeout(t, 20*time.Second)
	code, err := env.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: testPhone, OpenID: "o-user-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Exchange(ctx, PhoneRequest{Code: Secret(code), OpenID: "o-user-2"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.ErrCode != wxmock.DefaultOpenIDMismatchErrcode || ae.RID == "" || errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrInvalidCode) {
		t.Fatalf("mismatch: %v", err)
	}
	if p, err := c.Exchange(ctx, PhoneRequest{Code: Secret(code), OpenID: "o-user-1"}); err != nil || p.PurePhoneNumber.Reveal() != testPhone {
		t.Fatalf("match: %v, %v", p, err)
	}
	reqs := env.rec.requests()
	if last := reqs[len(reqs)-1]; !strings.Contains(last.Body, `"openid":"o-user-1"`) {
		t.Fatalf("body %s", last.Body)
	}
	// Switched off: the openid is not sent, so WeChat cannot refuse it.
	cfg := env.config(t)
	cfg.NoOpenIDBinding = true
	off := newTestClient(t, cfg)
	code, _ = env.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: testPhone, OpenID: "o-user-1"})
	if _, err := off.Exchange(ctx, PhoneRequest{Code: Secret(code), OpenID: "o-user-2"}); err != nil {
		t.Fatalf("binding off: %v", err)
	}
	reqs = env.rec.requests()
	if last := reqs[len(reqs)-1]; strings.Contains(last.Body, "openid") {
		t.Fatalf("binding off sent %s", last.Body)
	}
	// Bad openids never leave.
	for _, id := range []string{"has space", strings.Repeat("x", MaxOpenIDLen+1), "tab\t"} {
		if _, err := c.Exchange(ctx, PhoneRequest{Code: Secret(code), OpenID: id}); !errors.Is(err, ErrInvalidInput) || strings.Contains(err.Error(), id) {
			t.Fatalf("openid %q: %v", id, err)
		}
	}
}

// The sealed openid travels inside the ciphertext and is checked too.
func TestOpenIDBindingSealed(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := secClient(t, env, secSetup(t, env.emu, 0), nil)
	code, _ := env.emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: testPhone, OpenID: "o-user-1"})
	_, err := c.Exchange(ctxTimeout(t, 20*time.Second), PhoneRequest{Code: Secret(code), OpenID: "o-user-2"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.ErrCode != wxmock.DefaultOpenIDMismatchErrcode {
		t.Fatalf("sealed mismatch: %v", err)
	}
}

// Nothing of the mode's secrets reaches a log line or an error: not the
// keys, not an IV or ciphertext that crossed the wire, not the code or the
// number (debug logging on, success and failure paths).
func TestAPISecurityRedaction(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	logs := new(logtest.Buffer)
	c := secClient(t, env, secSetup(t, env.emu, 0), logs)
	ctx := ctxTimeout(t, 20*time.Second)
	var errs []string
	code := mintPhone(t, env.emu, testPhone)
	if _, err := c.PhoneNumber(ctx, code); err != nil {
		t.Fatal(err)
	}
	addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultBadSignature, Count: 1})
	code2 := mintPhone(t, env.emu, testPhone)
	if _, err := c.PhoneNumber(ctx, code2); err != nil {
		errs = append(errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
	}
	if _, err := c.PhoneNumber(ctx, code); err != nil {
		errs = append(errs, err.Error())
	}
	secrets := []string{code, code2, testPhone, testSymKey, string(testAppKeyPEM(t, 0)[40:90])}
	for _, r := range env.rec.requests() {
		var env struct{ IV, Data string }
		if json.Unmarshal([]byte(r.Body), &env) == nil && env.IV != "" {
			secrets = append(secrets, env.IV, env.Data[:20])
		}
	}
	out := logs.String() + strings.Join(errs, "\n")
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%q appears in the logs or errors", s)
		}
	}
	if len(errs) == 0 {
		t.Fatal("the bad signature was not refused")
	}
}
