// Package apisec implements the cryptography of WeChat's API security mode
// (服务端 API 签名加密): sealing a request (AES-256-GCM encryption of the
// parameters and an RSA-PSS SHA-256 signature over
// "urlpath\nappid\ntimestamp\nbody") and opening an answer (verifying the
// platform certificate's signature, decrypting, and checking the answer's
// appid and timestamp), plus the platform's side of both, which the
// emulator (package wxmock) uses.
//
// The national algorithms (SM4_GCM and SM2withSM3) plug in through
// NewSymKey, NewAppKey and NewPlatformCert with an implementation from
// another package (see package apisec/sm); this package imports only the
// standard library.
//
// Key material lives in types that never print it: SymKey, AppKey and
// PlatformKey give "[REDACTED]" for String, every fmt verb, slog and JSON.
// No error of this package carries a key, an IV, a nonce, a signature or
// any plaintext.
package apisec

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/wxphone/wxphone/internal/valid"
)

// Algorithm names, as the MP console shows them.
const (
	AES256GCM     = "AES256_GCM"
	SM4GCM        = "SM4_GCM"
	RSAwithSHA256 = "RSAwithSHA256"
	SM2withSM3    = "SM2withSM3"
)

// DefaultMaxSkew is how far an answer's timestamp may be from the local
// clock.
const DefaultMaxSkew = 5 * time.Minute

const redacted = "[REDACTED]"

// pssOptions returns the RSA-PSS parameters of the mode: SHA-256, salt 32.
func pssOptions() *rsa.PSSOptions { return &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256} }

// masked gives a key type the printing behaviour of wxphone.Secret.
type masked struct{}

// String returns "[REDACTED]".
func (masked) String() string { return redacted }

// GoString returns "[REDACTED]".
func (masked) GoString() string { return redacted }

// Format writes "[REDACTED]" for every verb.
func (masked) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (masked) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON writes "[REDACTED]".
func (masked) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText writes "[REDACTED]".
func (masked) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// SymKey is the symmetric key (API对称密钥) with its number. It never
// prints its value.
type SymKey struct {
	masked
	sn   string
	alg  string
	aead cipher.AEAD
}

// NewAESKey returns an AES256_GCM key: key must be 32 bytes.
func NewAESKey(sn string, key []byte) (*SymKey, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("apisec: an AES256_GCM key is 32 bytes, got %d", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("apisec: cannot use the AES key")
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, errors.New("apisec: cannot use the AES key")
	}
	return NewSymKey(sn, AES256GCM, g)
}

// NewSymKey wraps an AEAD of another algorithm (SM4_GCM): it must take
// 12-byte nonces and add a 16-byte tag.
func NewSymKey(sn, alg string, aead cipher.AEAD) (*SymKey, error) {
	if err := checkSN("symmetric key", sn); err != nil {
		return nil, err
	}
	if aead == nil || aead.NonceSize() != ivSize || aead.Overhead() != tagSize {
		return nil, errors.New("apisec: the symmetric cipher must be a GCM with 12-byte nonces and 16-byte tags")
	}
	return &SymKey{sn: sn, alg: alg, aead: aead}, nil
}

// SN returns the key's number.
func (k *SymKey) SN() string { return k.sn }

// Algorithm returns AES256_GCM or SM4_GCM.
func (k *SymKey) Algorithm() string { return k.alg }

// Signer signs the mode's signed string with a private key.
type Signer interface {
	// Sign returns the signature of msg (the whole signed string, not a
	// digest), drawing randomness from rand (nil: crypto/rand).
	Sign(rand io.Reader, msg []byte) ([]byte, error)
	// Verifier returns the matching public key's verifier.
	Verifier() Verifier
}

// Verifier checks a signature of the mode's signed string.
type Verifier interface {
	// Verify returns nil when sig is a valid signature of msg.
	Verify(msg, sig []byte) error
}

// RSASigner signs with RSA-PSS, SHA-256, salt length 32 (RSAwithSHA256).
type RSASigner struct {
	masked
	key *rsa.PrivateKey
}

// NewRSASigner wraps an RSA private key of at least 2048 bits.
func NewRSASigner(k *rsa.PrivateKey) (*RSASigner, error) {
	if k == nil || k.N.BitLen() < 2048 {
		return nil, errors.New("apisec: the RSA key must have at least 2048 bits")
	}
	return &RSASigner{key: k}, nil
}

// Sign implements Signer; a nil r means crypto/rand.
func (s *RSASigner) Sign(r io.Reader, msg []byte) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	d := sha256.Sum256(msg)
	return rsa.SignPSS(r, s.key, crypto.SHA256, d[:], pssOptions())
}

// Verifier implements Signer.
func (s *RSASigner) Verifier() Verifier { return RSAVerifier{Key: &s.key.PublicKey} }

// RSAVerifier verifies RSA-PSS SHA-256 signatures with salt length 32.
type RSAVerifier struct{ Key *rsa.PublicKey }

// Algorithm returns RSAwithSHA256.
func (RSAVerifier) Algorithm() string { return RSAwithSHA256 }

// Verify implements Verifier.
func (v RSAVerifier) Verify(msg, sig []byte) error {
	d := sha256.Sum256(msg)
	if err := rsa.VerifyPSS(v.Key, crypto.SHA256, d[:], sig, pssOptions()); err != nil {
		return errBadSignature
	}
	return nil
}

var errBadSignature = errors.New("signature does not verify")

// AppKey is the app's private key (应用私钥) with its number. It never
// prints.
type AppKey struct {
	masked
	sn     string
	alg    string
	signer Signer
}

// NewAppKey wraps a signer of the named algorithm.
func NewAppKey(sn, alg string, s Signer) (*AppKey, error) {
	if err := checkSN("app key", sn); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, errors.New("apisec: nil signer")
	}
	return &AppKey{sn: sn, alg: alg, signer: s}, nil
}

// SN returns the key's number.
func (k *AppKey) SN() string { return k.sn }

// Algorithm returns RSAwithSHA256 or SM2withSM3.
func (k *AppKey) Algorithm() string { return k.alg }

// Verifier returns the verifier of the app's public key, which the
// platform (the emulator) uses.
func (k *AppKey) Verifier() Verifier { return k.signer.Verifier() }

// PlatformCert is a platform certificate (平台证书): the public key that
// verifies WeChat's answers, with the number the MP console shows (not the
// X.509 serial).
type PlatformCert struct {
	sn       string
	alg      string
	verifier Verifier
	notAfter time.Time
}

// NewPlatformCert wraps a verifier of the named algorithm. notAfter may be
// zero.
func NewPlatformCert(sn, alg string, v Verifier, notAfter time.Time) (*PlatformCert, error) {
	if err := checkSN("platform certificate", sn); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errors.New("apisec: nil verifier")
	}
	return &PlatformCert{sn: sn, alg: alg, verifier: v, notAfter: notAfter}, nil
}

// NewRSAPlatformCert wraps an X.509 certificate holding an RSA key.
func NewRSAPlatformCert(sn string, c *x509.Certificate) (*PlatformCert, error) {
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("apisec: platform certificate %s does not hold an RSA key", sn)
	}
	return NewPlatformCert(sn, RSAwithSHA256, RSAVerifier{Key: pub}, c.NotAfter)
}

// SN returns the certificate's number.
func (c *PlatformCert) SN() string { return c.sn }

// Algorithm returns RSAwithSHA256 or SM2withSM3.
func (c *PlatformCert) Algorithm() string { return c.alg }

// NotAfter returns the end of the certificate's validity (zero if unknown).
func (c *PlatformCert) NotAfter() time.Time { return c.notAfter }

// maxSNLen bounds a key number (real ones are 32 hex digits).
const maxSNLen = 128

func checkSN(what, sn string) error {
	if sn == "" {
		return fmt.Errorf("apisec: the %s number is required", what)
	}
	if len(sn) > maxSNLen {
		return fmt.Errorf("apisec: the %s number is longer than %d bytes", what, maxSNLen)
	}
	if !valid.Printable(sn) || strings.ContainsAny(sn, "|,") {
		return fmt.Errorf("apisec: the %s number must be printable ASCII without spaces, '|' or ','", what)
	}
	return nil
}

// Keys is one app's configuration of the mode.
type Keys struct {
	// AppID is the Mini Program's appid.
	AppID string
	// Sym is the symmetric key.
	Sym *SymKey
	// App is the app's private key.
	App *AppKey
	// Platform are the platform certificates that verify answers; during
	// a rotation, configure the new one besides the old one.
	Platform []*PlatformCert
	// MaxSkew is how far an answer's timestamp may be from the local
	// clock; default DefaultMaxSkew.
	MaxSkew time.Duration
}

// validate checks k and fills defaults.
func (k *Keys) validate() error {
	switch {
	case k.AppID == "":
		return errors.New("apisec: AppID is required")
	case strings.ContainsAny(k.AppID, "|\n"):
		return errors.New("apisec: AppID must not contain '|' or a newline")
	case k.Sym == nil:
		return errors.New("apisec: the symmetric key is required")
	case k.App == nil:
		return errors.New("apisec: the app private key is required")
	case len(k.Platform) == 0:
		return errors.New("apisec: at least one platform certificate is required")
	case k.MaxSkew < 0:
		return errors.New("apisec: MaxSkew must not be negative")
	}
	seen := map[string]bool{}
	for _, c := range k.Platform {
		if c == nil {
			return errors.New("apisec: nil platform certificate")
		}
		if seen[c.sn] {
			return fmt.Errorf("apisec: platform certificate number %s is configured twice", c.sn)
		}
		seen[c.sn] = true
	}
	if k.MaxSkew == 0 {
		k.MaxSkew = DefaultMaxSkew
	}
	return nil
}

// Extension parses key material of algorithms beyond the standard
// library's (SM4_GCM, SM2withSM3). Each method reports whether it
// recognised the material; when it did not, the standard algorithms are
// tried.
type Extension interface {
	SymKey(sn string, key []byte) (*SymKey, bool, error)
	AppKey(sn string, block *pem.Block) (*AppKey, bool, error)
	PlatformCert(sn string, der []byte) (*PlatformCert, bool, error)
	PublicKey(block *pem.Block) (Verifier, bool, error)
}

// Material is one app's key material as the MP console gives it.
type Material struct {
	// SymKey is the symmetric key in base64, as the console shows it.
	SymKey []byte
	// SymSN is its number.
	SymSN string
	// PrivateKeyPEM is the app private key: PKCS#1 or PKCS#8 PEM.
	PrivateKeyPEM []byte
	// PrivateSN is its number.
	PrivateSN string
	// CertsPEM holds one or more platform certificates.
	CertsPEM []byte
	// CertSNs are their numbers, in the same order.
	CertSNs []string
}

// Load parses m into Keys for appID. ext may be nil (AES256_GCM and
// RSAwithSHA256 only). Errors name the part at fault, never its content.
func Load(appID string, m Material, ext Extension) (*Keys, error) {
	k := &Keys{AppID: appID}
	var err error
	if k.Sym, err = parseSym(m.SymSN, m.SymKey, ext); err != nil {
		return nil, err
	}
	if k.App, err = parseAppKey(m.PrivateSN, m.PrivateKeyPEM, ext); err != nil {
		return nil, err
	}
	if k.Platform, err = parseCerts(m.CertSNs, m.CertsPEM, ext); err != nil {
		return nil, err
	}
	if err := k.validate(); err != nil {
		return nil, err
	}
	return k, nil
}

func parseSym(sn string, b64 []byte, ext Extension) (*SymKey, error) {
	s := strings.TrimSpace(string(b64))
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			return nil, errors.New("apisec: the symmetric key is not valid base64")
		}
	}
	if ext != nil {
		if k, ok, err := ext.SymKey(sn, key); ok || err != nil {
			return k, err
		}
	}
	if len(key) == 16 {
		return nil, errors.New("apisec: the symmetric key has 16 bytes (an SM4_GCM key), and SM4_GCM is not enabled")
	}
	return NewAESKey(sn, key)
}

func parseAppKey(sn string, pemBytes []byte, ext Extension) (*AppKey, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("apisec: the app private key is not PEM")
	}
	if b2, _ := pem.Decode(rest); b2 != nil {
		return nil, errors.New("apisec: the app private key file holds more than one PEM block")
	}
	if ext != nil {
		if k, ok, err := ext.AppKey(sn, block); ok || err != nil {
			return k, err
		}
	}
	var rk *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("apisec: the app private key is not a valid PKCS#1 RSA key")
		}
		rk = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("apisec: the app private key is not a valid PKCS#8 key (or its algorithm is not enabled)")
		}
		var ok bool
		if rk, ok = k.(*rsa.PrivateKey); !ok {
			return nil, errors.New("apisec: the app private key is not an RSA key")
		}
	default:
		return nil, fmt.Errorf("apisec: the app private key is a PEM %q block; want RSA PRIVATE KEY (PKCS#1) or PRIVATE KEY (PKCS#8)", block.Type)
	}
	s, err := NewRSASigner(rk)
	if err != nil {
		return nil, err
	}
	return NewAppKey(sn, RSAwithSHA256, s)
}

func parseCerts(sns []string, pemBytes []byte, ext Extension) ([]*PlatformCert, error) {
	var out []*PlatformCert
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("apisec: platform certificate file: PEM %q block; want CERTIFICATE", block.Type)
		}
		i := len(out)
		if i >= len(sns) {
			return nil, fmt.Errorf("apisec: the platform certificate file holds more certificates than numbers were given (%d)", len(sns))
		}
		c, err := parseCert(sns[i], block.Bytes, ext)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("apisec: the platform certificate file holds no PEM certificate")
	case len(out) < len(sns):
		return nil, fmt.Errorf("apisec: %d platform certificate numbers but %d certificates", len(sns), len(out))
	}
	return out, nil
}

func parseCert(sn string, der []byte, ext Extension) (*PlatformCert, error) {
	if ext != nil {
		if c, ok, err := ext.PlatformCert(sn, der); ok || err != nil {
			return c, err
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("apisec: platform certificate %s cannot be parsed (or its algorithm is not enabled)", sn)
	}
	return NewRSAPlatformCert(sn, c)
}

// KeyGenerator makes platform key pairs of an algorithm beyond RSA (the
// emulator's platform key for an app whose key is SM2). An Extension may
// implement it.
type KeyGenerator interface {
	// GeneratePlatformKey makes a key pair of alg with a self-signed
	// certificate naming appID; ok is false for an algorithm it does not
	// handle.
	GeneratePlatformKey(alg, sn, appID string, now time.Time) (k *PlatformKey, ok bool, err error)
}

// AlgorithmOf returns the algorithm of a Verifier that says it
// (RSAVerifier and the extensions' verifiers do), else RSAwithSHA256.
func AlgorithmOf(v Verifier) string {
	if a, ok := v.(interface{ Algorithm() string }); ok {
		return a.Algorithm()
	}
	return RSAwithSHA256
}

// ParsePublicKey parses an app public key (PKIX "PUBLIC KEY" or PKCS#1
// "RSA PUBLIC KEY" PEM) into its Verifier, as the platform (the emulator)
// holds it. ext may be nil.
func ParsePublicKey(pemBytes []byte, ext Extension) (Verifier, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("apisec: the public key is not PEM")
	}
	if ext != nil {
		if v, ok, err := ext.PublicKey(block); ok || err != nil {
			return v, err
		}
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("apisec: the public key is a PEM %q block; want PUBLIC KEY or RSA PUBLIC KEY", block.Type)
	}
	if err != nil {
		return nil, errors.New("apisec: the public key cannot be parsed (or its algorithm is not enabled)")
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok || rk.N.BitLen() < 2048 {
		return nil, errors.New("apisec: the public key is not an RSA key of at least 2048 bits")
	}
	return RSAVerifier{Key: rk}, nil
}

// PublicKeyPEM returns the PKIX PEM of the app key's public key, as the
// app uploads it to the MP console (a signer of another algorithm provides
// it through a PublicKeyPEM method of its own).
func (k *AppKey) PublicKeyPEM() ([]byte, error) {
	if p, ok := k.signer.(interface{ PublicKeyPEM() ([]byte, error) }); ok {
		return p.PublicKeyPEM()
	}
	rs, ok := k.signer.(*RSASigner)
	if !ok {
		return nil, errors.New("apisec: this key cannot export its public key")
	}
	der, err := x509.MarshalPKIXPublicKey(&rs.key.PublicKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
