package wxphone

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; the f.Add seeds below
// repeat the most important ones so that a plain `go test` runs them even
// if the directory is missing.

func FuzzDecrypt(f *testing.F) {
	f.Add(officialSessionKey, officialData, officialIV)
	f.Add(officialSessionKey, syntheticPhoneData, officialIV)
	f.Add(officialSessionKey, "", officialIV)
	f.Add("", "", "")
	f.Fuzz(func(t *testing.T, key, data, iv string) {
		pt, err := Decrypt(SessionKey(key), data, iv)
		if (pt == nil) == (err == nil) {
			t.Fatalf("Decrypt = %q, %v: want exactly one of a result and an error", pt, err)
		}
		if err != nil {
			var de *DecryptError
			if !errors.As(err, &de) || !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %#v; want a *DecryptError", err)
			}
			if len(key) >= 8 && strings.Contains(err.Error(), key) {
				t.Fatalf("error leaks the key: %v", err)
			}
		} else {
			// Success means canonical PKCS#7: padding and re-encrypting
			// the plaintext gives back the ciphertext.
			k, _ := decodeB64(key)
			v, _ := decodeB64(iv)
			ct, _ := decodeB64(data)
			block, err := aes.NewCipher(k)
			if err != nil {
				t.Fatal(err)
			}
			p := aes.BlockSize - len(pt)%aes.BlockSize
			padded := append(append([]byte(nil), pt...), strings.Repeat(string(rune(p)), p)...)
			if len(padded) != len(ct) {
				t.Fatalf("plaintext %d bytes from %d bytes of ciphertext", len(pt), len(ct))
			}
			out := make([]byte, len(padded))
			cipher.NewCBCEncrypter(block, v).CryptBlocks(out, padded)
			if string(out) != string(ct) {
				t.Fatal("re-encryption does not give the ciphertext back")
			}
		}
		info, err := DecryptPhoneNumber(officialAppID, SessionKey(key), data, iv)
		if (info == nil) == (err == nil) {
			t.Fatalf("DecryptPhoneNumber = %v, %v", info, err)
		}
		if info != nil && (info.Watermark.AppID != officialAppID || info.PhoneNumber == "" && info.PurePhoneNumber == "") {
			t.Fatalf("DecryptPhoneNumber accepted %+v", info)
		}
	})
}

// decodePhoneAnswer is the exchange's decoding of an HTTP 200 answer: the
// same decodeAnswer and checkPhone that Client.PhoneNumber runs.
func decodePhoneAnswer(body []byte, sensitive ...string) (*PhoneInfo, error) {
	var r phoneResp
	if err := decodeAnswer(OpPhoneNumber, body, &r, sensitive); err != nil {
		return nil, err
	}
	return (&Client{appID: testAppID}).checkPhone(r.PhoneInfo.info())
}

var longDigits = regexp.MustCompile(`[0-9]{8,}`)

func FuzzDecodePhoneResponse(f *testing.F) {
	for _, s := range []string{
		phoneStubBody,
		`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`,
		`{"errcode":40029,"errmsg":"invalid code rid: 6566d6c1-0e5c6c4b-3a6c0f3f"}`,
		`<html><body>502</body></html>`,
		`{"errcode":0`,
		``,
	} {
		f.Add([]byte(s))
	}
	const code = "FUZZ-CODE-0123456789"
	f.Fuzz(func(t *testing.T, body []byte) {
		info, err := decodePhoneAnswer(body, code)
		if (info == nil) == (err == nil) {
			t.Fatalf("decode = %v, %v: want exactly one of a result and an error", info, err)
		}
		if info != nil {
			if info.Watermark.AppID != testAppID {
				t.Fatalf("accepted a foreign watermark %q", info.Watermark.AppID)
			}
			if info.PhoneNumber == "" && info.PurePhoneNumber == "" {
				t.Fatal("accepted a result without a number")
			}
			return
		}
		var ae *APIError
		var de *DecodeError
		var we *WatermarkError
		switch {
		case errors.As(err, &ae):
			if ae.ErrCode == 0 || strings.Contains(ae.ErrMsg, code) || len(ae.ErrMsg) > maxErrMsg+8 {
				t.Fatalf("bad APIError %+v", ae)
			}
			return // errmsg is WeChat's text, quoted on purpose
		case errors.As(err, &de):
			if !errors.Is(err, ErrMalformedResponse) {
				t.Fatalf("DecodeError without ErrMalformedResponse: %v", err)
			}
			if de.Reason == "errcode 0 without phone_info" || strings.HasPrefix(de.Reason, "phone_info") {
				if !errors.Is(err, ErrOutcomeUnknown) {
					t.Fatalf("a success without data is not outcome-unknown: %v", err)
				}
			}
		case errors.As(err, &we):
			if !errors.Is(err, ErrWatermarkMismatch) {
				t.Fatalf("WatermarkError without its sentinel: %v", err)
			}
			return // appids are not secret
		default:
			t.Fatalf("untyped error %#v", err)
		}
		// A decode error never quotes the body.
		for _, d := range longDigits.FindAll(body, -1) {
			if strings.Contains(err.Error(), string(d)) {
				t.Fatalf("error %q quotes %s from the body", err, d)
			}
		}
	})
}

// TestFuzzSeedsDecode makes sure the official vector seeds are what they
// claim (a seed that silently fails to decrypt proves little).
func TestFuzzSeedsDecode(t *testing.T) {
	t.Parallel()
	for _, data := range []string{officialData, syntheticPhoneData} {
		if _, err := Decrypt(officialSessionKey, data, officialIV); err != nil {
			t.Errorf("seed does not decrypt: %v", err)
		}
	}
	if info, err := decodePhoneAnswer([]byte(phoneStubBody)); err != nil || info.PhoneNumber.Reveal() != testPhone {
		t.Errorf("seed does not decode: %v, %v", info, err)
	}
	if _, err := base64.StdEncoding.DecodeString(officialData); err != nil {
		t.Error(err)
	}
}
