package wxmock

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"testing"
	"time"
)

func TestJSCode2Session(t *testing.T) {
	type fixture struct {
		s     *Server
		lc    LoginCode
		other LoginCode // minted for app B
	}
	setup := func(t *testing.T) fixture {
		s := newTestServer(t, nil)
		lc, err := s.MintLoginCode(LoginGrant{AppID: appA, UnionID: "oUnion123"})
		if err != nil {
			t.Fatal(err)
		}
		other, err := s.MintLoginCode(LoginGrant{AppID: appB})
		if err != nil {
			t.Fatal(err)
		}
		return fixture{s, lc, other}
	}
	tests := []struct {
		name     string
		method   string
		target   func(f fixture) string
		want     int
		consumed bool
	}{
		{"ok", http.MethodGet, func(f fixture) string { return sessionURL(appA, secretA, f.lc.Code) }, 0, true},
		{"POST accepted", http.MethodPost, func(f fixture) string { return sessionURL(appA, secretA, f.lc.Code) }, 0, true},
		{"DELETE", http.MethodDelete, func(f fixture) string { return sessionURL(appA, secretA, f.lc.Code) }, 43001, false},
		{"bad grant_type", http.MethodGet, func(f fixture) string {
			return "/sns/jscode2session?appid=" + appA + "&secret=" + secretA + "&js_code=" + f.lc.Code + "&grant_type=client_credential"
		}, 40002, false},
		{"missing appid", http.MethodGet, func(f fixture) string { return sessionURL("", secretA, f.lc.Code) }, 41002, false},
		{"unknown appid", http.MethodGet, func(f fixture) string { return sessionURL("wxnope", secretA, f.lc.Code) }, 40013, false},
		{"missing secret", http.MethodGet, func(f fixture) string { return sessionURL(appA, "", f.lc.Code) }, 41004, false},
		{"wrong secret", http.MethodGet, func(f fixture) string { return sessionURL(appA, secretB, f.lc.Code) }, 40125, false},
		{"missing js_code", http.MethodGet, func(f fixture) string { return sessionURL(appA, secretA, "") }, 41008, false},
		{"unknown js_code", http.MethodGet, func(f fixture) string { return sessionURL(appA, secretA, "nope") }, 40029, false},
		{"phone code", http.MethodGet, func(f fixture) string {
			code, _ := f.s.MintPhoneCode(PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
			return sessionURL(appA, secretA, code)
		}, 40029, false},
		{"other app's code", http.MethodGet, func(f fixture) string { return sessionURL(appA, secretA, f.other.Code) }, 40029, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			r := wx(t, f.s, tt.method, tt.target(f), "")
			if r.Errcode != tt.want {
				t.Fatalf("errcode = %d, want %d (%s)", r.Errcode, tt.want, r.body)
			}
			if tt.want == 0 {
				if _, has := r.raw["errcode"]; has {
					t.Errorf("success has errcode: %s", r.body)
				}
				if r.OpenID != f.lc.OpenID || r.SessionKey != f.lc.SessionKey || r.UnionID != "oUnion123" {
					t.Errorf("answer %s does not match %+v", r.body, f.lc)
				}
			}
			again := wx(t, f.s, http.MethodGet, sessionURL(appA, secretA, f.lc.Code), "")
			if consumed := again.Errcode == 40163; consumed != tt.consumed {
				t.Fatalf("consumed = %v, want %v (%s)", consumed, tt.consumed, again.body)
			}
		})
	}
}

func TestJSCode2SessionReuseAndExpiry(t *testing.T) {
	tests := []struct {
		name  string
		waits []time.Duration // before each call
		want  []int
	}{
		{"reuse gives 40163", []time.Duration{0, time.Second}, []int{0, 40163}},
		{"reuse at 5 min gives 40163", []time.Duration{0, 5 * time.Minute}, []int{0, 40163}},
		{"reuse after expiry gives 40029", []time.Duration{0, 5*time.Minute + time.Second}, []int{0, 40029}},
		{"expired unused", []time.Duration{5*time.Minute + time.Second}, []int{40029}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			lc, err := s.MintLoginCode(LoginGrant{AppID: appA})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.want {
				s.Advance(tt.waits[i])
				r := wx(t, s, http.MethodGet, sessionURL(appA, secretA, lc.Code), "")
				if r.Errcode != want {
					t.Fatalf("call %d: errcode %d, want %d", i, r.Errcode, want)
				}
				if want == 40163 && !regexp.MustCompile(`^code been used, rid: `).MatchString(r.Errmsg) {
					t.Errorf("errmsg %q", r.Errmsg)
				}
			}
		})
	}
}

func TestLoginCodeShapeAndSessionKeys(t *testing.T) {
	s := newTestServer(t, nil)
	a1, err := s.MintLoginCode(LoginGrant{AppID: appA})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9]{32}$`).MatchString(a1.Code) {
		t.Errorf("code %q", a1.Code)
	}
	if !regexp.MustCompile(`^o[A-Za-z0-9_-]{27}$`).MatchString(a1.OpenID) {
		t.Errorf("openid %q", a1.OpenID)
	}
	if k, err := base64.StdEncoding.DecodeString(a1.SessionKey); err != nil || len(k) != 16 {
		t.Errorf("session key %q", a1.SessionKey)
	}
	if a1.UnionID != "" {
		t.Error("unexpected unionid")
	}
	tests := []struct {
		name     string
		g        LoginGrant
		sameKey  bool
		sameOpen bool
	}{
		{"same user keeps key", LoginGrant{AppID: appA, OpenID: a1.OpenID}, true, true},
		{"rotate", LoginGrant{AppID: appA, OpenID: a1.OpenID, RotateSessionKey: true}, false, true},
		{"new user", LoginGrant{AppID: appA}, false, false},
		{"same openid other app", LoginGrant{AppID: appB, OpenID: a1.OpenID}, false, true},
	}
	prevKey := a1.SessionKey
	for _, tt := range tests {
		lc, err := s.MintLoginCode(tt.g)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if (lc.SessionKey == prevKey) != tt.sameKey || (lc.OpenID == a1.OpenID) != tt.sameOpen {
			t.Errorf("%s: key same=%v open same=%v", tt.name, lc.SessionKey == prevKey, lc.OpenID == a1.OpenID)
		}
		if tt.g.AppID == appA && tt.g.OpenID == a1.OpenID {
			prevKey = lc.SessionKey
		}
	}
	// After a rotation the key stays stable again.
	lc, _ := s.MintLoginCode(LoginGrant{AppID: appA, OpenID: a1.OpenID})
	if lc.SessionKey != prevKey {
		t.Error("rotated key not kept")
	}
	for _, g := range []LoginGrant{
		{AppID: "wxnope"},
		{},
		{AppID: appA, OpenID: "bad openid"},
		{AppID: appA, UnionID: "bad/union"},
	} {
		if _, err := s.MintLoginCode(g); err == nil {
			t.Errorf("MintLoginCode(%+v) accepted", g)
		}
	}
}

// decryptLegacy is the client-side algorithm: AES-128-CBC, PKCS#7.
func decryptLegacy(sessionKey, iv, data string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil {
		return nil, err
	}
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil {
		return nil, err
	}
	ct, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(ivb) != aes.BlockSize || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("bad sizes")
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, ivb).CryptBlocks(pt, ct)
	n := int(pt[len(pt)-1])
	if n == 0 || n > aes.BlockSize || !bytes.Equal(pt[len(pt)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, errors.New("bad padding")
	}
	return pt[:len(pt)-n], nil
}

func TestDecryptLegacyOfficialVector(t *testing.T) {
	// WeChat's official sample vector (reference §6.3) validates the test
	// helper itself.
	const data = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
	pt, err := decryptLegacy("tiihtNczf5v6AKRyjwEUhQ==", "r7BXXKkLb8qrSNn05n0qiA==", data)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pt)
	if got := hex.EncodeToString(sum[:]); got != "3237d8a5dbd413523c194882c7156544d8a06e2afcc97383cc300c17bd09391b" {
		t.Fatalf("plaintext SHA-256 %s", got)
	}
}

func TestMintLegacyPayload(t *testing.T) {
	tests := []struct {
		name      string
		g         LegacyGrant
		wantPhone string
		wantCC    string
		ok        bool
	}{
		{"official key", LegacyGrant{AppID: appA, SessionKey: "tiihtNczf5v6AKRyjwEUhQ==", PurePhoneNumber: "13580006666"}, "13580006666", "86", true},
		{"generated key", LegacyGrant{AppID: appB, PurePhoneNumber: "13580006666"}, "13580006666", "86", true},
		{"foreign", LegacyGrant{AppID: appA, PurePhoneNumber: "2025550123", CountryCode: "1"}, "+1 2025550123", "1", true},
		{"explicit phone", LegacyGrant{AppID: appA, PurePhoneNumber: "2025550123", CountryCode: "1", PhoneNumber: "+12025550123"}, "+12025550123", "1", true},
		{"bad key base64", LegacyGrant{AppID: appA, SessionKey: "!!!", PurePhoneNumber: "13580006666"}, "", "", false},
		{"short key", LegacyGrant{AppID: appA, SessionKey: base64.StdEncoding.EncodeToString(make([]byte, 15)), PurePhoneNumber: "13580006666"}, "", "", false},
		{"32-byte key", LegacyGrant{AppID: appA, SessionKey: base64.StdEncoding.EncodeToString(make([]byte, 32)), PurePhoneNumber: "13580006666"}, "", "", false},
		{"bad number", LegacyGrant{AppID: appA, PurePhoneNumber: "abc"}, "", "", false},
		{"unknown app", LegacyGrant{AppID: "wxnope", PurePhoneNumber: "13580006666"}, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			p, err := s.MintLegacyPayload(tt.g)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if tt.g.SessionKey != "" && p.SessionKey != tt.g.SessionKey {
				t.Errorf("session key changed")
			}
			pt, err := decryptLegacy(p.SessionKey, p.IV, p.EncryptedData)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				PhoneNumber     string `json:"phoneNumber"`
				PurePhoneNumber string `json:"purePhoneNumber"`
				CountryCode     string `json:"countryCode"`
				Watermark       struct {
					AppID     string `json:"appid"`
					Timestamp int64  `json:"timestamp"`
				} `json:"watermark"`
			}
			if err := json.Unmarshal(pt, &got); err != nil {
				t.Fatalf("plaintext %q: %v", pt, err)
			}
			if got.PhoneNumber != tt.wantPhone || got.PurePhoneNumber != tt.g.PurePhoneNumber || got.CountryCode != tt.wantCC ||
				got.Watermark.AppID != tt.g.AppID || got.Watermark.Timestamp != baseTime.Unix() {
				t.Errorf("plaintext %s", pt)
			}
			// Field order matches the real payload.
			if !bytes.HasPrefix(pt, []byte(`{"phoneNumber":`)) || !bytes.Contains(pt, []byte(`"watermark":{"appid":`)) {
				t.Errorf("field order: %s", pt)
			}
		})
	}
}

func TestLegacyPayloadUsesRandomIV(t *testing.T) {
	s := newTestServer(t, nil)
	g := LegacyGrant{AppID: appA, SessionKey: "tiihtNczf5v6AKRyjwEUhQ==", PurePhoneNumber: "13580006666"}
	p1, _ := s.MintLegacyPayload(g)
	p2, _ := s.MintLegacyPayload(g)
	if p1.IV == p2.IV || p1.EncryptedData == p2.EncryptedData {
		t.Fatal("IV reused")
	}
}
