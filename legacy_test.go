package wxphone

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wxphone/wxphone/wxmock"
)

// WeChat's official legacy test vector (reference §6.3). It decrypts to
// userInfo, not to a phone payload.
const (
	officialAppID      = "wx4f4bc4dec97d474b"
	officialSessionKey = "tiihtNczf5v6AKRyjwEUhQ=="
	officialIV         = "r7BXXKkLb8qrSNn05n0qiA=="
	officialData       = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
	officialPlainSHA   = "3237d8a5dbd413523c194882c7156544d8a06e2afcc97383cc300c17bd09391b"
	officialPlain      = `{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}`

	// Synthetic phone vector (reference §6.4; generated with openssl, not
	// from WeChat): same key and iv.
	syntheticPhoneData  = "xT8p8W6jIVdEWQ+ccHuD2bmG5RSiwg14VWRFw/UGVh6Aj+jDIadafJ4xdCIBQ/uxDiyw/MZWvpFyRn3pP3xxVfNQxFtzghvK+Pj5JQI7x41EpnirOxeUcm4HWRdmzGJla5bZSoGnOCbsXv5pRwGUkKrjqXN+ahUvXsHu7s3UO17Wm7voWb/tLcxrZfVTyk0rxntL3Fq2vaQdw+WIdarjGw=="
	syntheticPhonePlain = `{"phoneNumber":"13580006666","purePhoneNumber":"13580006666","countryCode":"86","watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":1477314187}}`
)

func TestDecryptOfficialVector(t *testing.T) {
	t.Parallel()
	pt, err := Decrypt(officialSessionKey, officialData, officialIV)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	sum := sha256.Sum256(pt)
	if got := hex.EncodeToString(sum[:]); got != officialPlainSHA {
		t.Errorf("SHA-256 of plaintext = %s, want %s", got, officialPlainSHA)
	}
	if string(pt) != officialPlain || len(pt) != 393 {
		t.Errorf("plaintext (%d bytes) = %s", len(pt), pt)
	}
	if err := CheckWatermark(officialAppID, pt); err != nil {
		t.Errorf("CheckWatermark: %v", err)
	}
	if err := CheckWatermark("wx0000000000000000", pt); !errors.Is(err, ErrWatermarkMismatch) {
		t.Errorf("CheckWatermark(other) = %v; want ErrWatermarkMismatch", err)
	}
	// It is userInfo, not a phone payload.
	if p, err := DecryptPhoneNumber(officialAppID, officialSessionKey, officialData, officialIV); p != nil || !errors.Is(err, ErrDecrypt) {
		t.Errorf("DecryptPhoneNumber(userInfo) = %v, %v; want ErrDecrypt", p, err)
	}
}

func TestDecryptTolerantBase64(t *testing.T) {
	t.Parallel()
	// A form encoding turns '+' into ' '; fixtures wrap lines.
	spaced := strings.ReplaceAll(officialData, "+", " ")
	wrapped := officialData[:76] + "\r\n" + officialData[76:152] + "\n" + officialData[152:]
	for name, data := range map[string]string{"plus as space": spaced, "line breaks": wrapped} {
		pt, err := Decrypt(officialSessionKey, data, officialIV)
		if err != nil || string(pt) != officialPlain {
			t.Errorf("%s: Decrypt = %q, %v", name, pt, err)
		}
	}
}

func TestDecryptPhoneNumberSyntheticVector(t *testing.T) {
	t.Parallel()
	pt, err := Decrypt(officialSessionKey, syntheticPhoneData, officialIV)
	if err != nil || string(pt) != syntheticPhonePlain {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	p, err := DecryptPhoneNumber(officialAppID, officialSessionKey, syntheticPhoneData, officialIV)
	if err != nil {
		t.Fatalf("DecryptPhoneNumber: %v", err)
	}
	want := PhoneInfo{PhoneNumber: "13580006666", PurePhoneNumber: "13580006666", CountryCode: "86", Watermark: Watermark{AppID: officialAppID, Timestamp: 1477314187}}
	if diff := cmp.Diff(want, *p); diff != "" {
		t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
	}
	c := newTestClient(t, Config{AppID: officialAppID, TokenSource: StaticTokenSource(Token{Value: "x"})})
	if p, err := c.DecryptPhoneNumber(officialSessionKey, syntheticPhoneData, officialIV); err != nil || p.PhoneNumber != "13580006666" {
		t.Errorf("Client.DecryptPhoneNumber = %v, %v", p, err)
	}
	other := newTestClient(t, Config{AppID: "wx0000000000000000", TokenSource: StaticTokenSource(Token{Value: "x"})})
	p, err = other.DecryptPhoneNumber(officialSessionKey, syntheticPhoneData, officialIV)
	var we *WatermarkError
	if p != nil || !errors.As(err, &we) || we.Got != officialAppID {
		t.Errorf("other app: DecryptPhoneNumber = %v, %v; want *WatermarkError", p, err)
	}
}

func TestDecryptEmulatorPayloads(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t)
	for _, g := range []wxmock.LegacyGrant{
		{PurePhoneNumber: testPhone},
		{PurePhoneNumber: "51234567", CountryCode: "852"},
		{PurePhoneNumber: testPhone, SessionKey: officialSessionKey},
	} {
		pl, err := emu.MintLegacyPayload(g)
		if err != nil {
			t.Fatal(err)
		}
		p, err := DecryptPhoneNumber(testAppID, SessionKey(pl.SessionKey), pl.EncryptedData, pl.IV)
		if err != nil {
			t.Fatalf("DecryptPhoneNumber(%+v): %v", g, err)
		}
		if p.PurePhoneNumber.Reveal() != g.PurePhoneNumber || p.Watermark.AppID != testAppID {
			t.Errorf("DecryptPhoneNumber(%+v) = %+v", g, p)
		}
	}
}

// encryptCBC encrypts plaintext without padding (the caller pads).
func encryptCBC(t *testing.T, key, iv, plain []byte) string {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

func TestDecryptMalformedInputs(t *testing.T) {
	t.Parallel()
	key, _ := base64.StdEncoding.DecodeString(officialSessionKey)
	iv, _ := base64.StdEncoding.DecodeString(officialIV)
	pad := func(b []byte, p byte, n int) []byte {
		out := append([]byte(nil), b...)
		for range n {
			out = append(out, p)
		}
		return out
	}
	block16 := []byte("0123456789abcdef")
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name, key, data, iv string
	}{
		{"empty everything", "", "", ""},
		{"empty data", officialSessionKey, "", officialIV},
		{"empty key", "", officialData, officialIV},
		{"empty iv", officialSessionKey, officialData, ""},
		{"bad base64 data", officialSessionKey, "!!!not base64!!!", officialIV},
		{"bad base64 key", "tiihtNczf5v6AKRyjwEU*Q==", officialData, officialIV},
		{"bad base64 iv", officialSessionKey, officialData, "r7BXXKkLb8qrSNn05n0q%A=="},
		{"URL-safe alphabet data", officialSessionKey, strings.NewReplacer("+", "-", "/", "_").Replace(officialData), officialIV},
		{"8-byte iv", officialSessionKey, officialData, b64(iv[:8])},
		{"17-byte iv", officialSessionKey, officialData, b64(append(iv, 0))},
		{"15-byte key", b64(key[:15]), officialData, officialIV},
		{"24-byte key", b64(append(key, key[:8]...)), officialData, officialIV},
		{"32-byte key", b64(append(key, key...)), officialData, officialIV},
		{"data not a multiple of 16", officialSessionKey, b64(make([]byte, 33)), officialIV},
		{"data 15 bytes", officialSessionKey, b64(make([]byte, 15)), officialIV},
		{"wrong key", b64(make([]byte, 16)), officialData, officialIV},
		{"truncated data", officialSessionKey, b64(mustB64(officialData)[:384]), officialIV},
		{"padding byte zero", officialSessionKey, encryptCBC(t, key, iv, pad(block16, 0, 16)), officialIV},
		{"padding byte 17", officialSessionKey, encryptCBC(t, key, iv, pad(block16, 17, 16)), officialIV},
		{"padding bytes inconsistent", officialSessionKey, encryptCBC(t, key, iv, append(pad(block16, 4, 12), 1, 2, 3, 4)), officialIV},
		{"huge", officialSessionKey, strings.Repeat("A", maxEncryptedLen+4), officialIV},
		{"NUL bytes", "\x00\x00", "\x00", "\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pt, err := Decrypt(SessionKey(tt.key), tt.data, tt.iv)
			var de *DecryptError
			if pt != nil || !errors.As(err, &de) || !errors.Is(err, ErrDecrypt) {
				t.Fatalf("Decrypt = %q, %v; want a *DecryptError", pt, err)
			}
			if p, err := DecryptPhoneNumber(officialAppID, SessionKey(tt.key), tt.data, tt.iv); p != nil || err == nil {
				t.Errorf("DecryptPhoneNumber = %v, %v", p, err)
			}
			if tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}
}

// TestDecryptNoPaddingOracle checks that a padding failure and decrypted
// garbage are not told apart.
func TestDecryptNoPaddingOracle(t *testing.T) {
	t.Parallel()
	key, _ := base64.StdEncoding.DecodeString(officialSessionKey)
	iv, _ := base64.StdEncoding.DecodeString(officialIV)
	badPad := encryptCBC(t, key, iv, []byte("0123456789abcde\x00"))
	_, e1 := Decrypt(officialSessionKey, badPad, officialIV)
	_, e2 := Decrypt(SessionKey(base64.StdEncoding.EncodeToString(make([]byte, 16))), officialData, officialIV)
	if e1 == nil || e2 == nil || e1.Error() != e2.Error() {
		t.Errorf("padding error %v differs from wrong-key error %v", e1, e2)
	}
}

func TestDecryptPhoneNumberRejectsNonPhone(t *testing.T) {
	t.Parallel()
	key, _ := base64.StdEncoding.DecodeString(officialSessionKey)
	iv, _ := base64.StdEncoding.DecodeString(officialIV)
	for _, plain := range []string{`not json`, `{}`, `{"phoneNumber":""}`, `{"phoneNumber":13800138000}`, `[]`} {
		b := []byte(plain)
		p := aes.BlockSize - len(b)%aes.BlockSize
		for range p {
			b = append(b, byte(p))
		}
		data := encryptCBC(t, key, iv, b)
		if _, err := Decrypt(officialSessionKey, data, officialIV); err != nil {
			t.Fatalf("Decrypt(%s): %v", plain, err)
		}
		if info, err := DecryptPhoneNumber(officialAppID, officialSessionKey, data, officialIV); info != nil || !errors.Is(err, ErrDecrypt) {
			t.Errorf("DecryptPhoneNumber(%s) = %v, %v; want ErrDecrypt", plain, info, err)
		}
	}
}

func mustB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
