package apisec

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"time"
)

// The mode's errcodes, as WeChat answers them.
const (
	ErrcodeMissingSerial    = 40230 // missing Wechatmp-Serial
	ErrcodeMissingTimestamp = 40231 // missing Wechatmp-TimeStamp
	ErrcodeMissingSignature = 40232 // missing Wechatmp-Signature
	ErrcodeMissingAppID     = 40233 // missing Wechatmp-Appid
	ErrcodeBadSignature     = 40234 // invalid signature
	ErrcodeBadEncryption    = 40235 // cannot decrypt
	ErrcodeBadAppID         = 40236 // invalid Wechatmp-Appid
	ErrcodeAppIDNotToken    = 40237 // Wechatmp-Appid does not match the access_token
	ErrcodeNoSymKey         = 40238 // no symmetric key configured
	ErrcodeNoPublicKey      = 40239 // no public key configured
	ErrcodeExpiredTimestamp = 40240 // timestamp outside the window (clock skew)
)

// PlatformKey is a platform key pair with its certificate and number: the
// platform's (the emulator's) side of a PlatformCert. It never prints.
type PlatformKey struct {
	masked
	sn      string
	signer  Signer
	certPEM []byte
}

// NewPlatformKey wraps a signer and its certificate (PEM).
func NewPlatformKey(sn string, s Signer, certPEM []byte) (*PlatformKey, error) {
	if err := checkSN("platform key", sn); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, errors.New("apisec: nil signer")
	}
	return &PlatformKey{sn: sn, signer: s, certPEM: certPEM}, nil
}

// PlatformCertTemplate is the template of an emulator's self-signed
// platform certificate for appID: a random serial, valid for a year from
// now, for signatures. GeneratePlatformKey (RSA) and the SM2 extension's
// use it.
func PlatformCertTemplate(appID string, now time.Time) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: appID, Organization: []string{"wxphone emulator"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}, nil
}

// GeneratePlatformKey makes an RSA-2048 key pair and a self-signed
// certificate, valid for a year from now, naming appID, as the emulator's
// platform key.
func GeneratePlatformKey(sn, appID string, now time.Time) (*PlatformKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl, err := PlatformCertTemplate(appID, now)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, err
	}
	s, err := NewRSASigner(k)
	if err != nil {
		return nil, err
	}
	return NewPlatformKey(sn, s, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// SN returns the key's number.
func (k *PlatformKey) SN() string { return k.sn }

// CertificatePEM returns the certificate, which the app configures.
func (k *PlatformKey) CertificatePEM() []byte { return append([]byte(nil), k.certPEM...) }

// Certificate returns the PlatformCert that verifies this key's signatures.
func (k *PlatformKey) Certificate(alg string) (*PlatformCert, error) {
	return NewPlatformCert(k.sn, alg, k.signer.Verifier(), time.Time{})
}

// Platform is WeChat's side of the mode for one app: it opens sealed
// requests and seals answers. The emulator uses it.
type Platform struct {
	// AppID is the app.
	AppID string
	// Sym is the app's symmetric key; nil answers 40238.
	Sym *SymKey
	// AppKeySN and AppKey are the number and verifier of the app's public
	// key; nil AppKey answers 40239.
	AppKeySN string
	AppKey   Verifier
	// Key signs answers; Deprecated, when set (during a rotation), signs
	// them too, in the -Deprecated headers.
	Key, Deprecated *PlatformKey
	// MaxSkew is how far a request's timestamp may be from the clock;
	// default DefaultMaxSkew.
	MaxSkew time.Duration
}

// RequestError is a refused sealed request, with the errcode WeChat
// answers.
type RequestError struct {
	Errcode int
	Reason  string
}

func (e *RequestError) Error() string {
	return "apisec: request refused (" + strconv.Itoa(e.Errcode) + "): " + e.Reason
}

// Request is an opened request.
type Request struct {
	// Params is the decrypted JSON, _n, _appid and _timestamp included.
	Params []byte
	// Timestamp is the request's Wechatmp-TimeStamp.
	Timestamp int64
}

// OpenRequest checks and decrypts a sealed request for urlPath. tokenApp is
// the app the request's access_token belongs to.
func (p *Platform) OpenRequest(urlPath, tokenApp string, h http.Header, body []byte, now time.Time) (*Request, *RequestError) {
	appID, tsText := header(h, HeaderAppID), header(h, HeaderTimestamp)
	sig, serial := header(h, HeaderSignature), header(h, HeaderSerial)
	switch {
	case appID == "":
		return nil, &RequestError{ErrcodeMissingAppID, "missing Wechatmp-Appid"}
	case tsText == "":
		return nil, &RequestError{ErrcodeMissingTimestamp, "missing Wechatmp-TimeStamp"}
	case sig == "":
		return nil, &RequestError{ErrcodeMissingSignature, "missing Wechatmp-Signature"}
	case serial == "":
		return nil, &RequestError{ErrcodeMissingSerial, "missing Wechatmp-Serial"}
	case appID != p.AppID:
		return nil, &RequestError{ErrcodeBadAppID, "invalid Wechatmp-Appid"}
	case appID != tokenApp:
		return nil, &RequestError{ErrcodeAppIDNotToken, "Wechatmp-Appid does not match the access_token"}
	case p.Sym == nil:
		return nil, &RequestError{ErrcodeNoSymKey, "no symmetric key configured"}
	case p.AppKey == nil:
		return nil, &RequestError{ErrcodeNoPublicKey, "no public key configured"}
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return nil, &RequestError{ErrcodeMissingTimestamp, "malformed Wechatmp-TimeStamp"}
	}
	skew := p.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	}
	if d := now.Sub(time.Unix(ts, 0)); d > skew || d < -skew {
		return nil, &RequestError{ErrcodeExpiredTimestamp, "timestamp expired"}
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || serial != p.AppKeySN || p.AppKey.Verify(signedString(urlPath, appID, tsText, body), raw) != nil {
		return nil, &RequestError{ErrcodeBadSignature, "invalid signature"}
	}
	var e envelope
	if json.Unmarshal(bytes.TrimSpace(body), &e) != nil {
		return nil, &RequestError{ErrcodeBadEncryption, "invalid encryption"}
	}
	plain, ok := decryptEnvelope(p.Sym, &e, aad(urlPath, appID, tsText, p.Sym.sn))
	if !ok {
		return nil, &RequestError{ErrcodeBadEncryption, "invalid encryption"}
	}
	var sec struct {
		AppID     string          `json:"_appid"`
		Timestamp json.RawMessage `json:"_timestamp"`
		Nonce     string          `json:"_n"`
	}
	if json.Unmarshal(plain, &sec) != nil || sec.AppID != appID || string(bytes.TrimSpace(sec.Timestamp)) != tsText || sec.Nonce == "" {
		// A string _timestamp fails here too (WeChat answers -1 to it).
		return nil, &RequestError{ErrcodeBadEncryption, "invalid encrypted fields"}
	}
	return &Request{Params: plain, Timestamp: ts}, nil
}

// SealResponse encrypts and signs an answer (a JSON object) to a request
// for urlPath, at time now.
func (p *Platform) SealResponse(urlPath string, answer []byte, now time.Time) ([]byte, http.Header, error) {
	var rnd [ivSize + nonceSize]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, nil, errors.New("apisec: no randomness")
	}
	return p.sealResponseWith(urlPath, answer, rnd[:ivSize], base64.RawStdEncoding.EncodeToString(rnd[ivSize:ivSize+16]), now.Unix())
}

func (p *Platform) sealResponseWith(urlPath string, answer, iv []byte, nonce string, ts int64) ([]byte, http.Header, error) {
	if p.Sym == nil || p.Key == nil {
		return nil, nil, errors.New("apisec: the platform has no symmetric key or no platform key")
	}
	plain, err := addSecurityFields(answer, nonce, p.AppID, ts)
	if err != nil {
		return nil, nil, err
	}
	tsText := strconv.FormatInt(ts, 10)
	body := encryptBody(p.Sym, iv, plain, aad(urlPath, p.AppID, tsText, p.Sym.sn))
	msg := signedString(urlPath, p.AppID, tsText, body)
	sig, err := p.Key.signer.Sign(rand.Reader, msg)
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	h[HeaderAppID] = []string{p.AppID}
	h[HeaderTimestamp] = []string{tsText}
	h[HeaderSerial] = []string{p.Key.sn}
	h[HeaderSignature] = []string{base64.StdEncoding.EncodeToString(sig)}
	if p.Deprecated != nil {
		old, err := p.Deprecated.signer.Sign(rand.Reader, msg)
		if err != nil {
			return nil, nil, err
		}
		h[HeaderSerialDeprecated] = []string{p.Deprecated.sn}
		h[HeaderSignatureDeprecated] = []string{base64.StdEncoding.EncodeToString(old)}
	}
	return body, h, nil
}
