package wxphone

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// maxEncryptedLen bounds a legacy encryptedData (base64 text); real phone
// payloads are about 200 bytes, user-info payloads about 600.
const maxEncryptedLen = 64 << 10

// DecryptError reports a legacy payload that cannot be decrypted. Its
// Reason is deliberately coarse: padding failures and garbage look alike, so
// the error is no padding oracle.
type DecryptError struct {
	Reason string
}

func (e *DecryptError) Error() string { return "wxphone: cannot decrypt payload: " + e.Reason }

// Is matches ErrDecrypt.
func (e *DecryptError) Is(target error) bool { return target == ErrDecrypt }

// Decrypt decrypts a legacy encryptedData payload (AES-128-CBC, PKCS#7,
// key = base64 session_key, iv = base64 iv) and returns the plaintext. It
// checks no watermark; see DecryptPhoneNumber and CheckWatermark. Malformed
// input of any kind gives a *DecryptError, never a panic.
func Decrypt(sessionKey SessionKey, encryptedData, iv string) ([]byte, error) {
	if len(encryptedData) > maxEncryptedLen {
		return nil, &DecryptError{Reason: "encryptedData too long"}
	}
	key, err := decodeB64(sessionKey.Reveal())
	if err != nil || len(key) != 16 {
		return nil, &DecryptError{Reason: "session_key must be base64 of 16 bytes"}
	}
	ivb, err := decodeB64(iv)
	if err != nil || len(ivb) != aes.BlockSize {
		return nil, &DecryptError{Reason: "iv must be base64 of 16 bytes"}
	}
	ct, err := decodeB64(encryptedData)
	if err != nil {
		return nil, &DecryptError{Reason: "encryptedData is not base64"}
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, &DecryptError{Reason: "encryptedData is not a whole number of AES blocks"}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, &DecryptError{Reason: "bad key"}
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, ivb).CryptBlocks(pt, ct)
	n, ok := pkcs7Len(pt)
	if !ok {
		return nil, &DecryptError{Reason: "wrong session_key, iv or data"}
	}
	return pt[:n], nil
}

// pkcs7Len checks PKCS#7 padding without branching on the pad bytes.
func pkcs7Len(b []byte) (int, bool) {
	padByte := b[len(b)-1]
	pad := int(padByte)
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, pad)
		eq := subtle.ConstantTimeByteEq(b[len(b)-i], padByte)
		good &= subtle.ConstantTimeSelect(inPad, eq, 1)
	}
	if good != 1 {
		return 0, false
	}
	return len(b) - pad, true
}

// decodeB64 decodes standard base64, tolerating line breaks and a '+' that
// a form encoding turned into a space.
func decodeB64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '\r', '\n':
			return -1
		case ' ':
			return '+'
		}
		return r
	}, s)
	return base64.StdEncoding.DecodeString(s)
}

// CheckWatermark checks that a decrypted payload's watermark.appid equals
// appID.
func CheckWatermark(appID string, plaintext []byte) error {
	var w struct {
		Watermark struct {
			AppID string `json:"appid"`
		} `json:"watermark"`
	}
	if err := json.Unmarshal(plaintext, &w); err != nil {
		return &DecryptError{Reason: "plaintext is not JSON"}
	}
	if w.Watermark.AppID != appID {
		return &WatermarkError{Want: appID, Got: w.Watermark.AppID}
	}
	return nil
}

// DecryptPhoneNumber decrypts a legacy getPhoneNumber payload and checks
// that its watermark names appID.
func DecryptPhoneNumber(appID string, sessionKey SessionKey, encryptedData, iv string) (*PhoneInfo, error) {
	pt, err := Decrypt(sessionKey, encryptedData, iv)
	if err != nil {
		return nil, err
	}
	var p PhoneInfo
	if err := json.Unmarshal(pt, &p); err != nil {
		return nil, &DecryptError{Reason: "plaintext is not a phone payload"}
	}
	if p.PhoneNumber == "" && p.PurePhoneNumber == "" {
		return nil, &DecryptError{Reason: "plaintext has no phone number"}
	}
	if p.Watermark.AppID != appID {
		return nil, &WatermarkError{Want: appID, Got: p.Watermark.AppID}
	}
	return &p, nil
}

// DecryptPhoneNumber decrypts a legacy payload for this Client's appid.
func (c *Client) DecryptPhoneNumber(sessionKey SessionKey, encryptedData, iv string) (*PhoneInfo, error) {
	return DecryptPhoneNumber(c.appID, sessionKey, encryptedData, iv)
}
