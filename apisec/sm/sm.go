// Package sm adds the national algorithms of WeChat's API security mode to
// package apisec: SM4_GCM (symmetric key of 16 bytes) and SM2withSM3 (app
// key, platform certificates), through github.com/emmansun/gmsm.
//
// Pass Extension{} wherever apisec takes an apisec.Extension (apisec.Load,
// apisec.ParsePublicKey, wxmock.Options.KeyExtension): it recognises SM
// material and leaves AES and RSA material to apisec.
//
// WeChat publishes no worked example for these algorithms. Requests are
// signed with the app key's number as the SM2 signer ID, as WeChat's guide
// says. Which ID WeChat signs its answers with is not documented: a
// platform signature is accepted when it verifies with the certificate's
// number or with SM2's default ID "1234567812345678". The emulator signs
// its answers with the certificate's number.
package sm

import (
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm4"
	"github.com/emmansun/gmsm/smx509"

	"github.com/wxphone/wxphone/apisec"
)

// DefaultID is SM2's default signer ID (GB/T 35276).
const DefaultID = "1234567812345678"

const redacted = "[REDACTED]"

// Extension implements apisec.Extension and apisec.KeyGenerator for SM4_GCM
// and SM2withSM3.
type Extension struct{}

var (
	_ apisec.Extension    = Extension{}
	_ apisec.KeyGenerator = Extension{}
)

// NewSM4Key returns an SM4_GCM key: key must be 16 bytes.
func NewSM4Key(sn string, key []byte) (*apisec.SymKey, error) {
	if len(key) != 16 {
		return nil, fmt.Errorf("sm: an SM4_GCM key is 16 bytes, got %d", len(key))
	}
	b, err := sm4.NewCipher(key)
	if err != nil {
		return nil, errors.New("sm: cannot use the SM4 key")
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, errors.New("sm: cannot use the SM4 key")
	}
	return apisec.NewSymKey(sn, apisec.SM4GCM, g)
}

// SymKey implements apisec.Extension: a 16-byte key is SM4_GCM.
func (Extension) SymKey(sn string, key []byte) (*apisec.SymKey, bool, error) {
	if len(key) != 16 {
		return nil, false, nil
	}
	k, err := NewSM4Key(sn, key)
	return k, true, err
}

// AppKey implements apisec.Extension: an SM2 private key in PKCS#8
// ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY") PEM.
func (Extension) AppKey(sn string, block *pem.Block) (*apisec.AppKey, bool, error) {
	var priv *sm2.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := smx509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, false, nil // not SM2 (or not valid): apisec decides
		}
		p, ok := k.(*sm2.PrivateKey)
		if !ok {
			return nil, false, nil
		}
		priv = p
	case "EC PRIVATE KEY":
		p, err := smx509.ParseSM2PrivateKey(block.Bytes)
		if err != nil {
			return nil, true, errors.New("sm: the app private key is an EC key but not a valid SM2 key")
		}
		priv = p
	default:
		return nil, false, nil
	}
	k, err := NewAppKey(sn, priv)
	return k, true, err
}

// NewAppKey wraps an SM2 private key as the app key numbered sn; requests
// are signed with sn as the signer ID.
func NewAppKey(sn string, priv *sm2.PrivateKey) (*apisec.AppKey, error) {
	return apisec.NewAppKey(sn, apisec.SM2withSM3, &Signer{priv: priv, id: []byte(sn)})
}

// PlatformCert implements apisec.Extension: a certificate holding an SM2
// key.
func (Extension) PlatformCert(sn string, der []byte) (*apisec.PlatformCert, bool, error) {
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, false, nil
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || !sm2.IsSM2PublicKey(pub) {
		return nil, false, nil
	}
	pc, err := apisec.NewPlatformCert(sn, apisec.SM2withSM3, &Verifier{pub: pub, ids: [][]byte{[]byte(sn), []byte(DefaultID)}}, c.NotAfter)
	return pc, true, err
}

// PublicKey implements apisec.Extension: an SM2 public key in PKIX PEM, as
// the platform (the emulator) holds the app's key. Signatures verify with
// the app key's number as the ID, which the caller does not know here, so
// the verifier takes the ID from the request: see Verifier.WithID.
func (Extension) PublicKey(block *pem.Block) (apisec.Verifier, bool, error) {
	if block.Type != "PUBLIC KEY" {
		return nil, false, nil
	}
	k, err := smx509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, false, nil
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || !sm2.IsSM2PublicKey(pub) {
		return nil, false, nil
	}
	return &Verifier{pub: pub}, true, nil
}

// GeneratePlatformKey implements apisec.KeyGenerator for SM2withSM3: an
// SM2 key pair with a self-signed SM2 certificate, valid for a year,
// signing with sn as the ID.
func (Extension) GeneratePlatformKey(alg, sn, appID string, now time.Time) (*apisec.PlatformKey, bool, error) {
	if alg != apisec.SM2withSM3 {
		return nil, false, nil
	}
	k, err := GeneratePlatformKey(sn, appID, now)
	return k, true, err
}

// GeneratePlatformKey makes an SM2 platform key pair and its self-signed
// certificate (the emulator's).
func GeneratePlatformKey(sn, appID string, now time.Time) (*apisec.PlatformKey, error) {
	priv, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := apisec.PlatformCertTemplate(appID, now)
	if err != nil {
		return nil, err
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, err
	}
	return apisec.NewPlatformKey(sn, &Signer{priv: priv, id: []byte(sn)}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// GenerateAppKey makes an SM2 app key pair numbered sn and returns it with
// its PKCS#8 PEM (as a developer would store it).
func GenerateAppKey(sn string) (*apisec.AppKey, []byte, error) {
	priv, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := smx509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	k, err := NewAppKey(sn, priv)
	if err != nil {
		return nil, nil, err
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Signer signs with SM2withSM3 under a signer ID. It never prints.
type Signer struct {
	priv *sm2.PrivateKey
	id   []byte
}

// Sign implements apisec.Signer: an ASN.1 SM2 signature of msg (SM3 over
// Z(ID) || msg); nil r means crypto/rand.
func (s *Signer) Sign(r io.Reader, msg []byte) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	return s.priv.SignWithSM2(r, s.id, msg)
}

// Verifier implements apisec.Signer.
func (s *Signer) Verifier() apisec.Verifier {
	return &Verifier{pub: &s.priv.PublicKey, ids: [][]byte{s.id}}
}

// PublicKeyPEM returns the public key in PKIX PEM.
func (s *Signer) PublicKeyPEM() ([]byte, error) {
	der, err := smx509.MarshalPKIXPublicKey(&s.priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// String returns "[REDACTED]".
func (s *Signer) String() string { return redacted }

// GoString returns "[REDACTED]".
func (s *Signer) GoString() string { return redacted }

// Format writes "[REDACTED]" for every verb.
func (s *Signer) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (s *Signer) LogValue() slog.Value { return slog.StringValue(redacted) }

// Verifier verifies SM2withSM3 signatures, accepting any of its IDs.
type Verifier struct {
	pub *ecdsa.PublicKey
	ids [][]byte
}

// Algorithm returns SM2withSM3.
func (*Verifier) Algorithm() string { return apisec.SM2withSM3 }

// WithID returns a verifier of the same key for the given signer ID (the
// platform side knows the app key's number only from its configuration).
func (v *Verifier) WithID(id string) apisec.Verifier {
	return &Verifier{pub: v.pub, ids: [][]byte{[]byte(id)}}
}

// Verify implements apisec.Verifier.
func (v *Verifier) Verify(msg, sig []byte) error {
	for _, id := range v.ids {
		if sm2.VerifyASN1WithSM2(v.pub, id, msg, sig) {
			return nil
		}
	}
	return errors.New("sm: signature does not verify")
}
