package apisec

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of the mode, as WeChat documents them.
const (
	HeaderAppID               = "Wechatmp-Appid"
	HeaderTimestamp           = "Wechatmp-TimeStamp"
	HeaderSignature           = "Wechatmp-Signature"
	HeaderSerial              = "Wechatmp-Serial"
	HeaderSerialDeprecated    = "Wechatmp-Serial-Deprecated"
	HeaderSignatureDeprecated = "Wechatmp-Signature-Deprecated"
)

const (
	ivSize    = 12
	tagSize   = 16
	nonceSize = 24 // random bytes of _n (16–32 recommended); 32 base64 characters
)

// Client seals requests and opens answers for one app. It is safe for
// concurrent use.
type Client struct {
	k   Keys
	now func() time.Time
}

// NewClient validates k and returns a Client. now is the clock (nil:
// time.Now).
func NewClient(k Keys, now func() time.Time) (*Client, error) {
	if err := k.validate(); err != nil {
		return nil, err
	}
	k.Platform = append([]*PlatformCert(nil), k.Platform...)
	if now == nil {
		now = time.Now
	}
	return &Client{k: k, now: now}, nil
}

// AppID returns the app's appid.
func (c *Client) AppID() string { return c.k.AppID }

// Certificates returns the configured platform certificates.
func (c *Client) Certificates() []*PlatformCert {
	return append([]*PlatformCert(nil), c.k.Platform...)
}

// Sealed is a sealed request: send Body with Header added to the request's
// own headers, to the URL whose path sealed it, and open the answer with
// Client.Open.
type Sealed struct {
	// URLPath is the URL without the query: scheme, host and path.
	URLPath string
	// Timestamp is the request's Unix time (Wechatmp-TimeStamp).
	Timestamp int64
	// Body is {"iv":…,"data":…,"authtag":…}.
	Body []byte
	// Header holds Wechatmp-Appid, Wechatmp-TimeStamp, Wechatmp-Signature
	// and Wechatmp-Serial (the app key's number).
	Header http.Header
}

// Seal encrypts and signs a request. urlPath is the full URL without the
// query (e.g. https://api.weixin.qq.com/wxa/business/getuserphonenumber);
// params is the original request's JSON object: every URL and body
// parameter except access_token. The IV and _n are fresh random values
// from crypto/rand; _timestamp is the current Unix time.
func (c *Client) Seal(urlPath string, params []byte) (*Sealed, error) {
	var rnd [ivSize + nonceSize]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, errors.New("apisec: no randomness for the IV and nonce")
	}
	nonce := base64.StdEncoding.EncodeToString(rnd[ivSize:])
	return c.sealWith(urlPath, params, rnd[:ivSize], nonce, c.now().Unix())
}

// sealWith is Seal with a given IV, _n and timestamp (the official vectors
// fix them).
func (c *Client) sealWith(urlPath string, params, iv []byte, nonce string, ts int64) (*Sealed, error) {
	if err := checkURLPath(urlPath); err != nil {
		return nil, err
	}
	plain, err := addSecurityFields(params, nonce, c.k.AppID, ts)
	if err != nil {
		return nil, err
	}
	tsText := strconv.FormatInt(ts, 10)
	body := encryptBody(c.k.Sym, iv, plain, aad(urlPath, c.k.AppID, tsText, c.k.Sym.sn))
	clear(plain)
	sig, err := c.k.App.signer.Sign(rand.Reader, signedString(urlPath, c.k.AppID, tsText, body))
	if err != nil {
		return nil, errors.New("apisec: cannot sign the request")
	}
	h := http.Header{
		HeaderAppID:     {c.k.AppID},
		HeaderTimestamp: {tsText},
		HeaderSignature: {base64.StdEncoding.EncodeToString(sig)},
		HeaderSerial:    {c.k.App.sn},
	}
	return &Sealed{URLPath: urlPath, Timestamp: ts, Body: body, Header: h}, nil
}

// checkURLPath accepts an absolute URL without a query or fragment.
func checkURLPath(p string) error {
	if !strings.HasPrefix(p, "https://") && !strings.HasPrefix(p, "http://") {
		return errors.New("apisec: the URL path must be an absolute URL with its scheme")
	}
	if strings.ContainsAny(p, "?#|\n") {
		return errors.New("apisec: the URL path must not carry a query, a fragment, '|' or a newline")
	}
	return nil
}

// addSecurityFields returns {"_n":…,"_appid":…,"_timestamp":N,<params…>}.
// params must be a JSON object.
func addSecurityFields(params []byte, nonce, appID string, ts int64) ([]byte, error) {
	p := bytes.TrimSpace(params)
	if len(p) < 2 || p[0] != '{' || p[len(p)-1] != '}' || !json.Valid(p) {
		return nil, errors.New("apisec: the request parameters must be a JSON object")
	}
	inner := bytes.TrimSpace(p[1 : len(p)-1])
	b := make([]byte, 0, len(p)+len(nonce)+len(appID)+64)
	b = append(b, `{"_n":`...)
	b = strconv.AppendQuote(b, nonce)
	b = append(b, `,"_appid":`...)
	b = strconv.AppendQuote(b, appID)
	b = append(b, `,"_timestamp":`...)
	b = strconv.AppendInt(b, ts, 10)
	if len(inner) > 0 {
		b = append(b, ',')
		b = append(b, inner...)
	}
	return append(b, '}'), nil
}

func aad(urlPath, appID, ts, sn string) []byte {
	return []byte(urlPath + "|" + appID + "|" + ts + "|" + sn)
}

func signedString(urlPath, appID, ts string, body []byte) []byte {
	b := make([]byte, 0, len(urlPath)+len(appID)+len(ts)+len(body)+3)
	b = append(b, urlPath...)
	b = append(b, '\n')
	b = append(b, appID...)
	b = append(b, '\n')
	b = append(b, ts...)
	b = append(b, '\n')
	return append(b, body...)
}

// envelope is the encrypted body of both directions.
type envelope struct {
	IV      string `json:"iv"`
	Data    string `json:"data"`
	AuthTag string `json:"authtag"`
}

func encryptBody(k *SymKey, iv, plain, ad []byte) []byte {
	ct := k.aead.Seal(nil, iv, plain, ad)
	n := len(ct) - tagSize
	enc := base64.StdEncoding
	b := make([]byte, 0, 40+enc.EncodedLen(len(iv))+enc.EncodedLen(n)+enc.EncodedLen(tagSize))
	b = append(b, `{"iv":"`...)
	b = enc.AppendEncode(b, iv)
	b = append(b, `","data":"`...)
	b = enc.AppendEncode(b, ct[:n])
	b = append(b, `","authtag":"`...)
	b = enc.AppendEncode(b, ct[n:])
	return append(b, `"}`...)
}

// decryptEnvelope decrypts an envelope already decoded from JSON.
func decryptEnvelope(k *SymKey, e *envelope, ad []byte) ([]byte, bool) {
	enc := base64.StdEncoding
	iv, err1 := enc.DecodeString(e.IV)
	data, err2 := enc.DecodeString(e.Data)
	tag, err3 := enc.DecodeString(e.AuthTag)
	if err1 != nil || err2 != nil || err3 != nil || len(iv) != ivSize || len(tag) != tagSize {
		return nil, false
	}
	plain, err := k.aead.Open(nil, iv, append(data, tag...), ad)
	return plain, err == nil
}

// Answer is an opened answer.
type Answer struct {
	// Body is the answer's JSON: the decrypted plaintext of a signed
	// answer (with its _n, _appid and _timestamp fields), or the body of an
	// unsigned plaintext error.
	Body []byte
	// Signed reports that the answer carried a valid platform signature
	// and was decrypted. False only for a plaintext error (errcode ≠ 0),
	// which WeChat sends unsigned.
	Signed bool
	// Serial is the number of the platform certificate whose signature
	// verified ("" when unsigned).
	Serial string
}

// Reasons of a VerifyError.
const (
	ReasonUnsigned        = "unsigned or unencrypted success"
	ReasonNoSignature     = "no signature"
	ReasonUnknownCert     = "signed by an unknown platform certificate"
	ReasonBadSignature    = "bad signature"
	ReasonBadHeaders      = "missing or malformed Wechatmp headers"
	ReasonAppIDMismatch   = "appid does not match"
	ReasonTimestampHeader = "timestamp does not match the header"
	ReasonClockSkew       = "clock skew: timestamp outside the allowed window"
	ReasonCannotDecrypt   = "cannot decrypt"
	ReasonMalformed       = "malformed answer"
)

// ErrVerification matches every *VerifyError.
var ErrVerification = errors.New("apisec: answer failed verification")

// VerifyError reports an answer that failed verification: it must not be
// trusted. It names what failed and never carries the answer's content.
type VerifyError struct {
	// Reason is one of the Reason constants.
	Reason string
	// Serials are the certificate numbers the answer named (not secret).
	Serials []string
}

func (e *VerifyError) Error() string {
	s := "apisec: answer failed verification: " + e.Reason
	if len(e.Serials) > 0 {
		s += " (serial " + strings.Join(e.Serials, ", ") + ")"
	}
	return s
}

// Is matches ErrVerification.
func (e *VerifyError) Is(target error) bool { return target == ErrVerification }

// plainAnswer is what an unencrypted answer is decoded as.
type plainAnswer struct {
	ErrCode json.RawMessage `json:"errcode"`
	IV      *string         `json:"iv"`
	Data    *string         `json:"data"`
	AuthTag *string         `json:"authtag"`
}

// Open verifies and decrypts the answer to s. h is the answer's header,
// body its body (HTTP 200). A plaintext answer is accepted only when it is
// an error (errcode ≠ 0); any success must be signed by a configured
// platform certificate (during a rotation, the -Deprecated pair may carry
// the signature that verifies), decrypt, and carry this app's appid and the
// header's timestamp, within MaxSkew of the clock. Every refusal is a
// *VerifyError.
func (c *Client) Open(s *Sealed, h http.Header, body []byte) (*Answer, error) {
	t := bytes.TrimSpace(body)
	var pa plainAnswer
	if len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &pa) != nil {
		return nil, &VerifyError{Reason: ReasonMalformed}
	}
	if pa.IV == nil && pa.Data == nil && pa.AuthTag == nil {
		if ec, ok := parseErrcode(pa.ErrCode); ok && ec != 0 {
			return &Answer{Body: body}, nil
		}
		return nil, &VerifyError{Reason: ReasonUnsigned}
	}
	if pa.IV == nil || pa.Data == nil || pa.AuthTag == nil {
		return nil, &VerifyError{Reason: ReasonMalformed}
	}
	appID, tsText := header(h, HeaderAppID), header(h, HeaderTimestamp)
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if appID == "" || err != nil || tsText != strconv.FormatInt(ts, 10) {
		return nil, &VerifyError{Reason: ReasonBadHeaders}
	}
	if appID != c.k.AppID {
		return nil, &VerifyError{Reason: ReasonAppIDMismatch}
	}
	serial, verr := c.verify(h, signedString(s.URLPath, c.k.AppID, tsText, body))
	if verr != nil {
		return nil, verr
	}
	plain, ok := decryptEnvelope(c.k.Sym, &envelope{IV: *pa.IV, Data: *pa.Data, AuthTag: *pa.AuthTag}, aad(s.URLPath, c.k.AppID, tsText, c.k.Sym.sn))
	if !ok {
		return nil, &VerifyError{Reason: ReasonCannotDecrypt}
	}
	var sec struct {
		AppID     *string          `json:"_appid"`
		Timestamp *json.RawMessage `json:"_timestamp"`
	}
	if json.Unmarshal(plain, &sec) != nil || sec.AppID == nil || sec.Timestamp == nil {
		clear(plain)
		return nil, &VerifyError{Reason: ReasonMalformed}
	}
	if *sec.AppID != c.k.AppID {
		clear(plain)
		return nil, &VerifyError{Reason: ReasonAppIDMismatch}
	}
	if pts, ok := parseErrcode(*sec.Timestamp); !ok || pts != ts {
		clear(plain)
		return nil, &VerifyError{Reason: ReasonTimestampHeader}
	}
	if d := c.now().Sub(time.Unix(ts, 0)); d > c.k.MaxSkew || d < -c.k.MaxSkew {
		clear(plain)
		return nil, &VerifyError{Reason: ReasonClockSkew}
	}
	return &Answer{Body: plain, Signed: true, Serial: serial}, nil
}

// verify checks the signature pairs of h against the configured
// certificates and returns the serial whose signature verified.
func (c *Client) verify(h http.Header, msg []byte) (string, *VerifyError) {
	pairs := [2][2]string{
		{header(h, HeaderSerial), header(h, HeaderSignature)},
		{header(h, HeaderSerialDeprecated), header(h, HeaderSignatureDeprecated)},
	}
	var named []string
	known, signed := false, false
	for _, p := range pairs {
		serial, sig := p[0], p[1]
		if sig == "" {
			continue
		}
		signed = true
		if serial != "" {
			named = append(named, printableSerial(serial))
		}
		for _, cert := range c.k.Platform {
			if cert.sn != serial {
				continue
			}
			known = true
			raw, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && cert.verifier.Verify(msg, raw) == nil {
				return serial, nil
			}
		}
	}
	switch {
	case !signed:
		return "", &VerifyError{Reason: ReasonNoSignature}
	case !known:
		return "", &VerifyError{Reason: ReasonUnknownCert, Serials: named}
	}
	return "", &VerifyError{Reason: ReasonBadSignature, Serials: named}
}

// printableSerial bounds a serial from an answer for an error message.
func printableSerial(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && c <= '~' {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// header returns the first value of name, whether h's key is canonical
// (net/http) or spelled as documented (Wechatmp-TimeStamp).
func header(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseErrcode reads a JSON integer or a string holding one.
func parseErrcode(raw json.RawMessage) (int64, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return 0, len(t) == 0 || string(t) == "null"
	}
	if t[0] == '"' {
		var s string
		if json.Unmarshal(t, &s) != nil {
			return 0, false
		}
		t = []byte(strings.TrimSpace(s))
	}
	n, err := strconv.ParseInt(string(t), 10, 64)
	return n, err == nil
}
