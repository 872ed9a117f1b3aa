package server_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/wxmock"
)

const testSymKey = "otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9tbnzLY="

var (
	keyOnce sync.Once
	keyPEMs [2][]byte
)

func appKeyPEM(i int) []byte {
	keyOnce.Do(func() {
		for j := range keyPEMs {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			keyPEMs[j] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}
	})
	return keyPEMs[i]
}

// secMode configures the emulator's mode for appid with app key 0
// (plaintext exchanges refused) and returns the app's keys, signing with
// app key signWith.
func secMode(t *testing.T, signWith int) func(*wxmock.Server, string) *apisec.Keys {
	return func(emu *wxmock.Server, appid string) *apisec.Keys {
		tmp, err := apisec.GeneratePlatformKey("tmp", appid, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		m := apisec.Material{SymKey: []byte(testSymKey), SymSN: "sym-sn", PrivateKeyPEM: appKeyPEM(0), PrivateSN: "app-sn",
			CertsPEM: tmp.CertificatePEM(), CertSNs: []string{"tmp"}}
		pk, err := apisec.Load(appid, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		in, err := emu.SetAPISecurity(appid, wxmock.APISecurity{SymKey: pk.Sym, AppKeySN: "app-sn", AppKey: pk.App.Verifier(), Required: true})
		if err != nil {
			t.Fatal(err)
		}
		m.PrivateKeyPEM, m.CertsPEM, m.CertSNs = appKeyPEM(signWith), []byte(in.PEM), []string{in.SN}
		k, err := apisec.Load(appid, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
}

// The service exchanges codes end to end in the API security mode, and
// counts grants by the declared kind.
func TestAPISecurityEndToEnd(t *testing.T) {
	e := newEnv(t, envOpts{apiSecurity: secMode(t, 0)})
	// Key material never appears in a log line, header or body.
	e.secrets = append(e.secrets, testSymKey, string(appKeyPEM(0)[40:90]))
	code := e.mint(appA, "13800138000")
	st, _, b := e.phone(keyPhone, map[string]string{"code": code, "kind": "realtime"})
	if st != http.StatusOK || decodeOK(t, b).PurePhoneNumber != "13800138000" {
		t.Fatalf("%d %s", st, b)
	}
	// A replay is served from the store, not sealed again.
	st, _, b = e.phone(keyPhone, map[string]string{"code": code, "kind": "realtime"})
	if st != http.StatusOK || !decodeOK(t, b).Replayed {
		t.Fatalf("replay: %d %s", st, b)
	}
	st, _, b = e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13900139000")})
	if st != http.StatusOK {
		t.Fatalf("%d %s", st, b)
	}
	if n := testutil.ToFloat64(e.m.Grants.WithLabelValues(appA, "realtime")); n != 1 {
		t.Fatalf("realtime grants %v", n)
	}
	if n := testutil.ToFloat64(e.m.Grants.WithLabelValues(appA, "unspecified")); n != 1 {
		t.Fatalf("unspecified grants %v", n)
	}
	if st, _, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13900139000"), "kind": "fast"}); st != http.StatusBadRequest {
		t.Fatalf("bad kind: %d %s", st, b)
	}
	e.checkNoLeaks()
}

// An unsigned or badly signed success is an outcome_unknown that says the
// answer failed verification, is replayed as such, and is counted and
// logged.
func TestAPISecurityUnverifiedAnswer(t *testing.T) {
	for _, kind := range []string{wxmock.FaultUnsignedSuccess, wxmock.FaultBadSignature} {
		e := newEnv(t, envOpts{apiSecurity: secMode(t, 0)})
		e.fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: kind, Count: 1})
		code := e.mint(appA, "13800138000")
		for i := range 2 {
			st, _, b := e.phone(keyPhone, map[string]string{"code": code})
			eb := decodeErr(t, b)
			if st != http.StatusBadGateway || eb.Error.Code != "outcome_unknown" || !strings.Contains(eb.Error.Message, "failed verification") {
				t.Fatalf("%s #%d: %d %s", kind, i, st, b)
			}
		}
		if n := e.emu.Stats().Endpoints.Phone.Calls; n != 1 {
			t.Fatalf("%s: %d upstream calls; the code must reach WeChat once", kind, n)
		}
		if !strings.Contains(e.logs.String(), "failed verification") {
			t.Fatalf("%s: no log line", kind)
		}
		var total float64
		for _, r := range []string{apisec.ReasonUnsigned, apisec.ReasonBadSignature} {
			total += testutil.ToFloat64(e.m.Unverified.WithLabelValues(appA, r))
		}
		if total != 1 {
			t.Fatalf("%s: unverified metric %v", kind, total)
		}
		e.checkNoLeaks()
	}
}

// Configuration errors of the mode are 503s naming the setting; the code
// is not used.
func TestAPISecurityMisconfigured(t *testing.T) {
	e := newEnv(t, envOpts{apiSecurity: secMode(t, 1)})
	st, _, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13800138000")})
	eb := decodeErr(t, b)
	if st != http.StatusServiceUnavailable || eb.Error.Code != "api_security_misconfigured" || eb.Error.Errcode != 40234 ||
		!strings.Contains(eb.Error.Message, "WX_API_PRIVATE_KEY_FILE") || eb.Error.RID == "" {
		t.Fatalf("%d %s", st, b)
	}
	e.checkNoLeaks()

	e = newEnv(t, envOpts{apiSecurity: secMode(t, 0)})
	code := e.mint(appA, "13800138000")
	e.emu.Advance(10 * time.Minute)
	st, _, b = e.phone(keyPhone, map[string]string{"code": code})
	if eb := decodeErr(t, b); st != http.StatusServiceUnavailable || eb.Error.Code != "clock_skew" || !strings.Contains(eb.Error.Message, "clock skew") {
		t.Fatalf("%d %s", st, b)
	}
}

// The request's openid reaches WeChat; a mismatch is an upstream_error
// carrying WeChat's errcode and rid, and the claim is released.
func TestOpenIDMismatch(t *testing.T) {
	e := newEnv(t, envOpts{})
	code, err := e.emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", OpenID: "o-user-1"})
	if err != nil {
		t.Fatal(err)
	}
	e.codes = append(e.codes, code)
	e.phones = append(e.phones, "13800138000")
	st, _, b := e.phone(keyPhone, map[string]string{"code": code, "openid": "o-user-2"})
	eb := decodeErr(t, b)
	if st != http.StatusBadGateway || eb.Error.Code != "upstream_error" || eb.Error.Errcode != wxmock.DefaultOpenIDMismatchErrcode || eb.Error.RID == "" {
		t.Fatalf("%d %s", st, b)
	}
	st, _, b = e.phone(keyPhone, map[string]string{"code": code, "openid": "o-user-1"})
	if st != http.StatusOK {
		t.Fatalf("right openid: %d %s", st, b)
	}
	e.checkNoLeaks()
}
