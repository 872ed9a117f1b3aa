package wxmock

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

// PhoneGrant describes a user's phone-number authorization, from which
// [Server.MintPhoneCode] makes a getuserphonenumber code.
type PhoneGrant struct {
	// AppID is the Mini Program that receives the code; optional when the
	// emulator knows exactly one app.
	AppID string `json:"appid"`
	// PurePhoneNumber is the number without country code: 4..20 digits.
	PurePhoneNumber string `json:"purePhoneNumber"`
	// CountryCode is 1..4 digits; default "86".
	CountryCode string `json:"countryCode"`
	// PhoneNumber is the display form; default PurePhoneNumber when
	// CountryCode is "86", else "+" + CountryCode + " " + PurePhoneNumber.
	PhoneNumber string `json:"phoneNumber"`
	// OpenID, when set, is the user the code belongs to: an exchange that
	// names another openid fails with Options.OpenIDMismatchErrcode (and
	// does not use the code). Empty: any openid is accepted.
	OpenID string `json:"openid"`
	// Realtime mints the code as getRealtimePhoneNumber
	// (bindgetrealtimephonenumber, 手机号实时验证) would: it is exchanged at the
	// same endpoint with the same answer (WeChat bills ¥0.04 per grant
	// instead of ¥0.03); the emulator counts these grants apart.
	Realtime bool `json:"realtime"`
}

// LoginGrant describes a wx.login, from which [Server.MintLoginCode] makes
// a jscode2session code.
type LoginGrant struct {
	// AppID is the Mini Program; optional when the emulator knows exactly
	// one app.
	AppID string `json:"appid"`
	// OpenID is the user; when empty a fresh openid is generated.
	OpenID string `json:"openid"`
	// UnionID is returned by jscode2session when non-empty.
	UnionID string `json:"unionid"`
	// RotateSessionKey replaces the (appid, openid) session key with a new
	// one instead of reusing it.
	RotateSessionKey bool `json:"rotate_session_key"`
}

// LoginCode is a minted jscode2session code with what jscode2session will
// answer for it.
type LoginCode struct {
	// Code is the js_code: 32 characters of [A-Za-z0-9].
	Code string `json:"code"`
	// OpenID is the user's openid.
	OpenID string `json:"openid"`
	// SessionKey is base64 of 16 bytes, stable per (appid, openid) unless
	// rotated.
	SessionKey string `json:"session_key"`
	// UnionID is set when the grant had one.
	UnionID string `json:"unionid,omitempty"`
}

// LegacyGrant describes a legacy getPhoneNumber callback payload for
// [Server.MintLegacyPayload].
type LegacyGrant struct {
	// AppID goes into the watermark; optional when the emulator knows
	// exactly one app.
	AppID string `json:"appid"`
	// SessionKey is the base64 AES key (16 bytes decoded); generated when
	// empty.
	SessionKey string `json:"session_key"`
	// PurePhoneNumber, CountryCode and PhoneNumber follow [PhoneGrant].
	PurePhoneNumber string `json:"purePhoneNumber"`
	// CountryCode is 1..4 digits; default "86".
	CountryCode string `json:"countryCode"`
	// PhoneNumber is the display form; defaulted like [PhoneGrant].
	PhoneNumber string `json:"phoneNumber"`
}

// LegacyPayload is an encrypted legacy phone payload, as the Mini Program
// client would receive it.
type LegacyPayload struct {
	// EncryptedData is base64 (standard encoding) of the AES-128-CBC,
	// PKCS#7-padded JSON.
	EncryptedData string `json:"encryptedData"`
	// IV is base64 of the random 16-byte IV.
	IV string `json:"iv"`
	// SessionKey is the base64 key used.
	SessionKey string `json:"session_key"`
}

type phoneCode struct {
	app      string
	openid   string
	realtime bool
	pure     string
	country  string
	phone    string
	granted  time.Time
}

type loginCode struct {
	app        string
	openid     string
	unionid    string
	sessionKey string
	minted     time.Time
	used       bool
}

type rateWindow struct {
	minute int64
	n      int64
}

// normalizePhone validates and defaults the phone fields of a grant.
func normalizePhone(pure, country, phone string) (string, string, string, error) {
	if country == "" {
		country = "86"
	}
	if !validDigits(pure, 4, 20) {
		return "", "", "", errors.New("purePhoneNumber must be 4..20 digits")
	}
	if !validDigits(country, 1, 4) {
		return "", "", "", errors.New("countryCode must be 1..4 digits")
	}
	if phone == "" {
		if country == "86" {
			phone = pure
		} else {
			phone = "+" + country + " " + pure
		}
	} else if !validFreeText(phone, 40) {
		return "", "", "", errors.New("phoneNumber must be 1..40 printable characters")
	}
	return pure, country, phone, nil
}

// MintPhoneCode returns a fresh getuserphonenumber code (64 lowercase hex
// characters) valid for [CodeTTL] and a single successful use. The
// watermark timestamp is the emulated time of this call.
func (s *Server) MintPhoneCode(g PhoneGrant) (string, error) {
	appid, err := s.resolveApp(g.AppID)
	if err != nil {
		return "", err
	}
	pure, country, phone, err := normalizePhone(g.PurePhoneNumber, g.CountryCode, g.PhoneNumber)
	if err != nil {
		return "", err
	}
	if g.OpenID != "" && !validIdent(g.OpenID, 128) {
		return "", errors.New("openid must be 1..128 characters of [A-Za-z0-9_-]")
	}
	now := s.Now()
	var code string
	s.codeMu.Lock()
	for {
		code = s.newPhoneCode()
		if _, dup := s.phoneCodes[code]; !dup {
			break
		}
	}
	s.phoneCodes[code] = &phoneCode{app: appid, openid: g.OpenID, realtime: g.Realtime, pure: pure, country: country, phone: phone, granted: now}
	if len(s.phoneCodes) >= s.codeSweep {
		for k, c := range s.phoneCodes {
			if now.Sub(c.granted) > CodeTTL {
				delete(s.phoneCodes, k)
			}
		}
		s.codeSweep = max(1024, 2*len(s.phoneCodes))
	}
	s.codeMu.Unlock()
	s.stats.track(code)
	s.log.Debug("wxmock: phone code minted", "appid", appid, "phone", maskPhone(pure))
	return code, nil
}

// phoneMinted reports whether code is currently in the minted-code table.
func (s *Server) phoneMinted(code string) bool {
	s.codeMu.Lock()
	_, ok := s.phoneCodes[code]
	s.codeMu.Unlock()
	return ok
}

func (s *Server) isLoadCode(code string) bool {
	return s.loadPrefix != "" && len(code) <= MaxLoadCodeLen && strings.HasPrefix(code, s.loadPrefix)
}

// loadPhone derives a mainland mobile number from a load-mode code.
func loadPhone(code string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(code))
	n := h.Sum64() % 1_000_000_000
	b := make([]byte, 11)
	b[0], b[1] = '1', '3'
	for i := 10; i >= 2; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b)
}

// phoneInfo is the success payload of getuserphonenumber.
type phoneInfo struct {
	PhoneNumber     string    `json:"phoneNumber"`
	PurePhoneNumber string    `json:"purePhoneNumber"`
	CountryCode     any       `json:"countryCode"`
	Watermark       watermark `json:"watermark"`
}

type watermark struct {
	Timestamp int64  `json:"timestamp"`
	AppID     string `json:"appid"`
}

type phoneResponse struct {
	Errcode   int       `json:"errcode"`
	Errmsg    string    `json:"errmsg"`
	PhoneInfo phoneInfo `json:"phone_info"`
}

// redeemPhone applies the code checks of getuserphonenumber for a request
// authenticated as appid: 40029, 40013, 45011, then consumption. known
// reports whether the code was a minted or load-mode code (for stats).
func (s *Server) redeemPhone(appid, code, openid string, now time.Time) (body []byte, errcode int, known bool) {
	var pc phoneCode
	s.codeMu.Lock()
	c, ok := s.phoneCodes[code]
	switch {
	case ok:
		known = true
		if now.Sub(c.granted) > CodeTTL {
			delete(s.phoneCodes, code)
			s.codeMu.Unlock()
			return nil, 40029, known
		}
		if c.app != appid {
			s.codeMu.Unlock()
			return nil, 40013, known
		}
		if openid != "" && c.openid != "" && openid != c.openid {
			s.codeMu.Unlock()
			return nil, int(s.openidErr.Load()), known
		}
		if !s.allowPhoneLocked(appid, now) {
			s.codeMu.Unlock()
			return nil, 45011, known
		}
		pc = *c
		delete(s.phoneCodes, code)
		if pc.realtime {
			s.stats.realtime.Add(1)
		}
	case s.isLoadCode(code):
		known = true
		if _, used := s.loadUsed[code]; used {
			s.codeMu.Unlock()
			return nil, 40029, known
		}
		if !s.allowPhoneLocked(appid, now) {
			s.codeMu.Unlock()
			return nil, 45011, known
		}
		s.loadUsed[code] = struct{}{}
		pc = phoneCode{app: appid, country: "86", granted: now}
	default:
		s.codeMu.Unlock()
		return nil, 40029, false
	}
	s.codeMu.Unlock()

	if pc.pure == "" { // load-mode code
		pc.pure = loadPhone(code)
		pc.phone = pc.pure
	}
	var cc any = pc.country
	if s.ccNumber.Load() {
		n, _ := strconv.Atoi(pc.country) // validated digits, at most 4
		cc = n
	}
	body, _ = json.Marshal(phoneResponse{
		Errmsg: "ok",
		PhoneInfo: phoneInfo{
			PhoneNumber:     pc.phone,
			PurePhoneNumber: pc.pure,
			CountryCode:     cc,
			Watermark:       watermark{Timestamp: pc.granted.Unix(), AppID: pc.app},
		},
	})
	return body, 0, known
}

// allowPhoneLocked counts a call against the per-app, per-minute limit and
// reports whether it is allowed. codeMu must be held.
func (s *Server) allowPhoneLocked(appid string, now time.Time) bool {
	limit := s.phoneRate.Load()
	if limit <= 0 {
		return true
	}
	minute := now.Unix() / 60
	w := s.rate[appid]
	if w.minute != minute {
		w = rateWindow{minute: minute}
	}
	if w.n >= limit {
		s.rate[appid] = w
		return false
	}
	w.n++
	s.rate[appid] = w
	return true
}

// MintLoginCode returns a fresh jscode2session code valid for [CodeTTL] and
// a single use, with the openid and session key jscode2session will return.
func (s *Server) MintLoginCode(g LoginGrant) (LoginCode, error) {
	appid, err := s.resolveApp(g.AppID)
	if err != nil {
		return LoginCode{}, err
	}
	if g.OpenID != "" && !validIdent(g.OpenID, 128) {
		return LoginCode{}, errors.New("openid must be 1..128 characters of [A-Za-z0-9_-]")
	}
	if g.UnionID != "" && !validIdent(g.UnionID, 128) {
		return LoginCode{}, errors.New("unionid must be 1..128 characters of [A-Za-z0-9_-]")
	}
	openid := g.OpenID
	if openid == "" {
		openid = s.newOpenID()
	}
	now := s.Now()
	key := appid + "\x00" + openid
	s.loginMu.Lock()
	sk, ok := s.sessions[key]
	if !ok || g.RotateSessionKey {
		sk = s.newSessionKey()
		s.sessions[key] = sk
	}
	var code string
	for {
		code = s.newLoginCode()
		if _, dup := s.loginCodes[code]; !dup {
			break
		}
	}
	s.loginCodes[code] = &loginCode{app: appid, openid: openid, unionid: g.UnionID, sessionKey: sk, minted: now}
	if len(s.loginCodes) >= s.loginSweep {
		for k, c := range s.loginCodes {
			if now.Sub(c.minted) > CodeTTL {
				delete(s.loginCodes, k)
			}
		}
		s.loginSweep = max(1024, 2*len(s.loginCodes))
	}
	s.loginMu.Unlock()
	s.stats.track(code)
	s.log.Debug("wxmock: login code minted", "appid", appid)
	return LoginCode{Code: code, OpenID: openid, SessionKey: sk, UnionID: g.UnionID}, nil
}

// loginMinted reports whether code is in the login-code table.
func (s *Server) loginMinted(code string) bool {
	s.loginMu.Lock()
	_, ok := s.loginCodes[code]
	s.loginMu.Unlock()
	return ok
}

type sessionResponse struct {
	OpenID     string `json:"openid"`
	SessionKey string `json:"session_key"`
	UnionID    string `json:"unionid,omitempty"`
}

// redeemLogin applies the js_code checks of jscode2session for appid.
func (s *Server) redeemLogin(appid, code string, now time.Time) (body []byte, errcode int, known bool) {
	s.loginMu.Lock()
	c, ok := s.loginCodes[code]
	if !ok {
		s.loginMu.Unlock()
		return nil, 40029, false
	}
	if now.Sub(c.minted) > CodeTTL {
		delete(s.loginCodes, code)
		s.loginMu.Unlock()
		return nil, 40029, true
	}
	if c.app != appid {
		s.loginMu.Unlock()
		return nil, 40029, true
	}
	if c.used {
		s.loginMu.Unlock()
		return nil, 40163, true
	}
	c.used = true
	resp := sessionResponse{OpenID: c.openid, SessionKey: c.sessionKey, UnionID: c.unionid}
	s.loginMu.Unlock()
	body, _ = json.Marshal(resp) // #nosec G117 -- the emulator's jscode2session answer must carry its (fake) session_key
	return body, 0, true
}

type legacyPlain struct {
	PhoneNumber     string          `json:"phoneNumber"`
	PurePhoneNumber string          `json:"purePhoneNumber"`
	CountryCode     string          `json:"countryCode"`
	Watermark       legacyWatermark `json:"watermark"`
}

type legacyWatermark struct {
	AppID     string `json:"appid"`
	Timestamp int64  `json:"timestamp"`
}

// MintLegacyPayload encrypts the legacy phone JSON
// {"phoneNumber","purePhoneNumber","countryCode","watermark":{"appid","timestamp"}}
// with AES-128-CBC and PKCS#7 under the session key and a random IV.
func (s *Server) MintLegacyPayload(g LegacyGrant) (LegacyPayload, error) {
	appid, err := s.resolveApp(g.AppID)
	if err != nil {
		return LegacyPayload{}, err
	}
	pure, country, phone, err := normalizePhone(g.PurePhoneNumber, g.CountryCode, g.PhoneNumber)
	if err != nil {
		return LegacyPayload{}, err
	}
	sk := g.SessionKey
	if sk == "" {
		sk = s.newSessionKey()
	}
	key, err := base64.StdEncoding.DecodeString(sk)
	if err != nil || len(key) != 16 {
		return LegacyPayload{}, errors.New("session_key must be base64 (standard encoding) of 16 bytes")
	}
	plain, err := json.Marshal(legacyPlain{
		PhoneNumber:     phone,
		PurePhoneNumber: pure,
		CountryCode:     country,
		Watermark:       legacyWatermark{AppID: appid, Timestamp: s.Now().Unix()},
	})
	if err != nil {
		return LegacyPayload{}, err
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	for range pad {
		plain = append(plain, byte(pad))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return LegacyPayload{}, err
	}
	iv := make([]byte, aes.BlockSize)
	s.ent.read(iv)
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, plain)
	s.log.Debug("wxmock: legacy payload minted", "appid", appid, "phone", maskPhone(pure))
	return LegacyPayload{
		EncryptedData: base64.StdEncoding.EncodeToString(out),
		IV:            base64.StdEncoding.EncodeToString(iv),
		SessionKey:    sk,
	}, nil
}
