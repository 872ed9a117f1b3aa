package wxmock

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/wxphone/wxphone/apisec"
)

// APISecurity configures an app's API security mode (服务端 API 签名加密)
// in the emulator, as a developer configures it in the MP console.
type APISecurity struct {
	// SymKey is the app's symmetric key; nil makes sealed requests fail
	// with 40238.
	SymKey *apisec.SymKey
	// AppKeySN and AppKey are the number and verifier of the app's public
	// key; a nil AppKey makes sealed requests fail with 40239.
	AppKeySN string
	AppKey   apisec.Verifier
	// Required refuses plaintext getuserphonenumber calls with 40232
	// (missing signature). WeChat itself appears to answer plaintext
	// requests in plaintext even when the mode is configured (an
	// inference, not documented); Required lets a test prove that every
	// request really was sealed.
	Required bool
	// PlatformKey is the platform key pair that signs answers; default a
	// fresh RSA-2048 key with a self-signed certificate.
	PlatformKey *apisec.PlatformKey
	// PlatformSN is the number of a generated platform key; default
	// "wxmock-platform-1".
	PlatformSN string
}

// PlatformCertInfo is what an app configures to verify the emulator's
// answers: the certificate and its number, and during a rotation the
// previous one.
type PlatformCertInfo struct {
	SN            string `json:"sn"`
	PEM           string `json:"pem"`
	DeprecatedSN  string `json:"deprecated_sn,omitempty"`
	DeprecatedPEM string `json:"deprecated_pem,omitempty"`
}

// secState is an app's mode configuration. It is replaced, never
// modified, under appMu.
type secState struct {
	platform apisec.Platform
	required bool
	rotation int    // platform keys generated so far
	alg      string // the platform keys' algorithm: the app key's
}

// generatePlatformKey makes a platform key of alg: RSA here, another
// algorithm through Options.KeyExtension when it generates keys.
func (s *Server) generatePlatformKey(alg, sn, appid string) (*apisec.PlatformKey, error) {
	if alg != apisec.RSAwithSHA256 {
		if g, ok := s.keyExt.(apisec.KeyGenerator); ok {
			k, handled, err := g.GeneratePlatformKey(alg, sn, appid, s.Now())
			if handled || err != nil {
				return k, err
			}
		}
		return nil, fmt.Errorf("cannot generate a %s platform key: no key extension for it", alg)
	}
	return apisec.GeneratePlatformKey(sn, appid, s.Now())
}

func (st *secState) info() PlatformCertInfo {
	in := PlatformCertInfo{SN: st.platform.Key.SN(), PEM: string(st.platform.Key.CertificatePEM())}
	if d := st.platform.Deprecated; d != nil {
		in.DeprecatedSN, in.DeprecatedPEM = d.SN(), string(d.CertificatePEM())
	}
	return in
}

// SetAPISecurity configures appid's API security mode and returns the
// platform certificate the app must configure.
func (s *Server) SetAPISecurity(appid string, cfg APISecurity) (PlatformCertInfo, error) {
	appid, err := s.resolveApp(appid)
	if err != nil {
		return PlatformCertInfo{}, err
	}
	alg := apisec.RSAwithSHA256
	if cfg.AppKey != nil {
		alg = apisec.AlgorithmOf(cfg.AppKey)
	}
	pk := cfg.PlatformKey
	if pk == nil {
		sn := cfg.PlatformSN
		if sn == "" {
			sn = "wxmock-platform-1"
		}
		if pk, err = s.generatePlatformKey(alg, sn, appid); err != nil {
			return PlatformCertInfo{}, err
		}
	}
	if cfg.AppKey != nil && cfg.AppKeySN == "" {
		return PlatformCertInfo{}, errors.New("app_key_sn is required with the app public key")
	}
	if v, ok := cfg.AppKey.(interface{ WithID(string) apisec.Verifier }); ok {
		// SM2 signatures carry the signer's ID: the app key's number.
		cfg.AppKey = v.WithID(cfg.AppKeySN)
	}
	st := &secState{
		platform: apisec.Platform{AppID: appid, Sym: cfg.SymKey, AppKeySN: cfg.AppKeySN, AppKey: cfg.AppKey, Key: pk},
		required: cfg.Required, rotation: 1, alg: alg,
	}
	s.appMu.Lock()
	s.apps[appid].sec = st
	s.appMu.Unlock()
	s.log.Info("wxmock: API security mode configured", "appid", appid, "platform_sn", pk.SN(), "required", cfg.Required)
	return st.info(), nil
}

// APISecurityCert returns appid's current platform certificate(s).
func (s *Server) APISecurityCert(appid string) (PlatformCertInfo, error) {
	appid, err := s.resolveApp(appid)
	if err != nil {
		return PlatformCertInfo{}, err
	}
	s.appMu.RLock()
	st := s.apps[appid].sec
	s.appMu.RUnlock()
	if st == nil {
		return PlatformCertInfo{}, fmt.Errorf("app %s has no API security mode configured", appid)
	}
	return st.info(), nil
}

// RotatePlatformCert starts a certificate rotation for appid: a new
// platform key signs answers in Wechatmp-Serial/Wechatmp-Signature, and
// the previous one keeps signing them in the -Deprecated pair. With finish
// set, it ends the rotation instead: the deprecated key is dropped.
func (s *Server) RotatePlatformCert(appid string, finish bool) (PlatformCertInfo, error) {
	appid, err := s.resolveApp(appid)
	if err != nil {
		return PlatformCertInfo{}, err
	}
	s.appMu.RLock()
	old := s.apps[appid].sec
	s.appMu.RUnlock()
	if old == nil {
		return PlatformCertInfo{}, fmt.Errorf("app %s has no API security mode configured", appid)
	}
	st := *old
	if finish {
		st.platform.Deprecated = nil
	} else {
		st.rotation++
		pk, err := s.generatePlatformKey(st.alg, fmt.Sprintf("wxmock-platform-%d", st.rotation), appid)
		if err != nil {
			return PlatformCertInfo{}, err
		}
		st.platform.Deprecated, st.platform.Key = st.platform.Key, pk
	}
	s.appMu.Lock()
	s.apps[appid].sec = &st
	s.appMu.Unlock()
	s.log.Info("wxmock: platform certificate rotated", "appid", appid, "platform_sn", st.platform.Key.SN(), "finish", finish)
	return st.info(), nil
}

func (s *Server) secOf(appid string) *secState {
	s.appMu.RLock()
	defer s.appMu.RUnlock()
	if a := s.apps[appid]; a != nil {
		return a.sec
	}
	return nil
}

// isSealed reports whether a request carries any header of the mode.
func isSealed(h http.Header) bool {
	for _, name := range []string{apisec.HeaderAppID, apisec.HeaderSignature, apisec.HeaderTimestamp, apisec.HeaderSerial} {
		if h.Get(name) != "" {
			return true
		}
	}
	return false
}

// requestURLPath rebuilds the URL the client signed: scheme, host and path.
func requestURLPath(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.Path
}

// sealedAnswer is how a success to a sealed request is answered.
type sealedAnswer struct {
	platform *apisec.Platform
	urlPath  string
	corrupt  bool // FaultBadSignature
}

// apiSecurityRequest is the admin input of SetAPISecurity.
type apiSecurityRequest struct {
	AppID        string `json:"appid"`
	SymKey       string `json:"sym_key"` // base64, as the console shows it
	SymSN        string `json:"sym_sn"`
	AppPublicKey string `json:"app_public_key"` // PEM
	AppKeySN     string `json:"app_key_sn"`
	Required     bool   `json:"required"`
}

func (s *Server) parseAPISecurity(req apiSecurityRequest) (APISecurity, error) {
	cfg := APISecurity{AppKeySN: req.AppKeySN, Required: req.Required}
	if req.SymKey != "" {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(req.SymKey))
		if err != nil {
			return cfg, errors.New("sym_key must be base64")
		}
		k, ok := (*apisec.SymKey)(nil), false
		if s.keyExt != nil {
			k, ok, err = s.keyExt.SymKey(req.SymSN, raw)
		}
		if !ok && err == nil {
			k, err = apisec.NewAESKey(req.SymSN, raw)
		}
		clear(raw)
		if err != nil {
			return cfg, err
		}
		cfg.SymKey = k
	}
	if req.AppPublicKey != "" {
		v, err := apisec.ParsePublicKey([]byte(req.AppPublicKey), s.keyExt)
		if err != nil {
			return cfg, err
		}
		cfg.AppKey = v
	}
	return cfg, nil
}
