// Package wxmock is an in-process emulator of the WeChat Mini Program
// server APIs used by the phone-number flow: /cgi-bin/token,
// /cgi-bin/stable_token, /wxa/business/getuserphonenumber and
// /sns/jscode2session, plus the two management APIs that observe them:
// /cgi-bin/openapi/quota/get (daily quotas) and /cgi-bin/openapi/rid/get
// (the request behind a failed call's rid).
//
// A [Server] is an [http.Handler]. Besides the WeChat endpoints it serves an
// admin API under /admin/ that mints phone codes, login codes and legacy
// encrypted payloads, injects faults, revokes tokens, moves the emulated
// clock and reports statistics. Every admin route has a Go method
// counterpart so that in-process tests need no HTTP round trip.
//
// The emulator reproduces the observable quirks of the real service:
// business errors come back as HTTP 200 with a text/plain JSON body whose
// errmsg ends in "rid: …", token fetches carry no errcode on success, the
// classic token endpoint supersedes the previous token after a 5-minute
// overlap, stable tokens are shared until their last 5 minutes, codes are
// single use and live for 5 minutes. docs/emulator.md describes the full
// behaviour.
//
// The package imports only the standard library and package apisec (which
// imports only the standard library).
package wxmock

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/wxphone/wxphone/apisec"
)

// Endpoint names used by faults and statistics.
const (
	// EndpointToken is GET /cgi-bin/token.
	EndpointToken = "token"
	// EndpointStableToken is POST /cgi-bin/stable_token.
	EndpointStableToken = "stable_token"
	// EndpointPhone is POST /wxa/business/getuserphonenumber.
	EndpointPhone = "phone"
	// EndpointJSCode2Session is GET /sns/jscode2session.
	EndpointJSCode2Session = "jscode2session"
	// EndpointAPIDomainIP is GET /cgi-bin/get_api_domain_ip, which needs
	// a valid access token and answers WeChat's API server addresses.
	EndpointAPIDomainIP = "get_api_domain_ip"
	// EndpointAll matches every WeChat endpoint in a [Fault].
	EndpointAll = "*"
)

// Fault kinds; see [Fault].
const (
	// FaultLatency delays the request by LatencyMS milliseconds, then lets
	// the next matching fault (or normal processing) happen.
	FaultLatency = "latency"
	// FaultErrcode answers Errcode as a business error (HTTP 200, text/plain).
	FaultErrcode = "errcode"
	// FaultHTTPStatus answers Status with a short HTML gateway page.
	FaultHTTPStatus = "http_status"
	// FaultDropAfterConsume processes the request normally, then closes the
	// connection without writing a single response byte.
	FaultDropAfterConsume = "drop_after_consume"
	// FaultResetBeforeRead closes the connection with a TCP RST before the
	// request body is read; nothing is processed.
	FaultResetBeforeRead = "reset_before_read"
	// FaultUnsignedSuccess (phone, API security mode) processes the request
	// normally, consuming the code, then answers the success in plaintext,
	// unsigned: a client must refuse it.
	FaultUnsignedSuccess = "unsigned_success"
	// FaultBadSignature (phone, API security mode) processes the request
	// normally, consuming the code, then answers the sealed success with a
	// signature that does not verify.
	FaultBadSignature = "bad_signature"
)

// Defaults and fixed protocol constants.
const (
	// DefaultTokenTTL is the lifetime of an access token (expires_in 7200).
	DefaultTokenTTL = 7200 * time.Second
	// DefaultClassicDailyLimit is the number of /cgi-bin/token fetches per
	// app per emulated day before 45009.
	DefaultClassicDailyLimit = 2000
	// DefaultStableForceDailyLimit is the number of force refreshes of the
	// stable token per app per emulated day before 45009.
	DefaultStableForceDailyLimit = 20
	// DefaultStableForceInterval is the minimum spacing of two effective
	// force refreshes of the stable token.
	DefaultStableForceInterval = 30 * time.Second
	// CodeTTL is the lifetime of phone codes and login codes.
	CodeTTL = 5 * time.Minute
	// TokenOverlap is both the classic-token overlap after a refetch and the
	// stable-token refresh window before expiry.
	TokenOverlap = 5 * time.Minute
	// MaxBodyBytes bounds every request body the emulator reads.
	MaxBodyBytes = 64 << 10
	// MaxLoadCodeLen bounds the length of a load-mode code; longer codes
	// starting with the load prefix are answered 40029.
	MaxLoadCodeLen = 128
	// tokenRetention is how long a dead token is remembered (so that it
	// still answers 42001 rather than 40001) before it is forgotten.
	tokenRetention = 24 * time.Hour
)

// App is a Mini Program known to the emulator.
type App struct {
	// AppID is the Mini Program appid, e.g. "wx4f4bc4dec97d474b".
	AppID string `json:"appid"`
	// Secret is the AppSecret that token fetches must present.
	Secret string `json:"secret"`
}

// Options configures a [Server]. The zero value of every field except Apps
// selects a default.
type Options struct {
	// Apps are the Mini Programs known at start; at least one is required.
	Apps []App
	// Now is the clock; default time.Now. [Server.Advance] adds an offset
	// on top of it.
	Now func() time.Time
	// Seed, when non-zero, makes tokens, codes, rids, openids, session keys
	// and IVs deterministic (a math/rand/v2 PCG seeded with it). Zero uses
	// crypto/rand. Determinism holds for a deterministic sequence of calls.
	Seed int64
	// TokenTTL is the access-token lifetime; default [DefaultTokenTTL].
	TokenTTL time.Duration
	// CountryCodeAsNumber makes phone_info.countryCode a JSON number (86)
	// instead of a string ("86"). Switchable with
	// [Server.SetCountryCodeAsNumber].
	CountryCodeAsNumber bool
	// LoadPrefix enables load mode when non-empty: every never-seen code
	// that starts with it is a valid, single-use phone code.
	LoadPrefix string
	// ClassicDailyLimit is the number of /cgi-bin/token fetches per app per
	// emulated day before 45009; default [DefaultClassicDailyLimit].
	ClassicDailyLimit int
	// StableForceDailyLimit is the number of effective force refreshes per
	// app per emulated day before 45009; default
	// [DefaultStableForceDailyLimit].
	StableForceDailyLimit int
	// StableForceInterval is the minimum spacing of effective force
	// refreshes; default [DefaultStableForceInterval].
	StableForceInterval time.Duration
	// PhoneRateLimit is the number of getuserphonenumber calls per app per
	// emulated minute before 45011; 0 means unlimited.
	PhoneRateLimit int
	// QuotaDailyLimits sets the daily limit that
	// /cgi-bin/openapi/quota/get reports per cgi path (e.g.
	// CGIPathPhone); unlisted paths report [DefaultQuotaDailyLimit]
	// (/cgi-bin/token: ClassicDailyLimit). Reported, not enforced.
	QuotaDailyLimits map[string]int
	// Logger receives operational logs; nil discards them. The emulator
	// never logs codes, tokens, secrets or full phone numbers.
	Logger *slog.Logger
	// OpenIDMismatchErrcode is the errcode of a getuserphonenumber call
	// whose openid is not the user the code was minted for; default
	// [DefaultOpenIDMismatchErrcode]. WeChat does not document it.
	OpenIDMismatchErrcode int
	// KeyExtension parses app public keys of algorithms beyond RSA (the
	// national algorithms) for the admin API; nil: RSA only.
	KeyExtension apisec.Extension
}

// DefaultOpenIDMismatchErrcode is the emulator's errcode for an openid
// that does not match the code's user: 40003, WeChat's "invalid openid".
// The real errcode for this case is not documented.
const DefaultOpenIDMismatchErrcode = 40003

// Server is the emulator. It is safe for concurrent use. Create it with
// [New].
type Server struct {
	clock         func() time.Time
	offset        atomic.Int64 // nanoseconds added to clock
	ttl           time.Duration
	classicLimit  int
	forceLimit    int
	forceInterval time.Duration
	loadPrefix    string
	log           *slog.Logger
	ent           entropy
	ccNumber      atomic.Bool
	phoneRate     atomic.Int64
	openidErr     atomic.Int64
	keyExt        apisec.Extension

	appMu  sync.RWMutex
	apps   map[string]*appState
	tokens map[string]*tokenRec

	codeMu     sync.Mutex
	phoneCodes map[string]*phoneCode
	loadUsed   map[string]struct{}
	rate       map[string]rateWindow
	codeSweep  int

	loginMu    sync.Mutex
	loginCodes map[string]*loginCode
	sessions   map[string]string // appid + "\x00" + openid -> session_key
	loginSweep int

	faults  faultStore
	stats   statsStore
	openapi openapiState
}

// New validates opts and returns a ready emulator.
func New(opts Options) (*Server, error) {
	if len(opts.Apps) == 0 {
		return nil, errors.New("wxmock: Options.Apps: at least one app is required")
	}
	if opts.TokenTTL < 0 {
		return nil, errors.New("wxmock: Options.TokenTTL must not be negative")
	}
	if opts.ClassicDailyLimit < 0 || opts.StableForceDailyLimit < 0 {
		return nil, errors.New("wxmock: daily limits must not be negative")
	}
	if opts.StableForceInterval < 0 {
		return nil, errors.New("wxmock: Options.StableForceInterval must not be negative")
	}
	if opts.PhoneRateLimit < 0 {
		return nil, errors.New("wxmock: Options.PhoneRateLimit must not be negative")
	}
	if len(opts.LoadPrefix) > MaxLoadCodeLen || !utf8.ValidString(opts.LoadPrefix) {
		return nil, fmt.Errorf("wxmock: Options.LoadPrefix must be valid UTF-8 of at most %d bytes", MaxLoadCodeLen)
	}
	s := &Server{
		clock:         opts.Now,
		ttl:           opts.TokenTTL,
		classicLimit:  opts.ClassicDailyLimit,
		forceLimit:    opts.StableForceDailyLimit,
		forceInterval: opts.StableForceInterval,
		loadPrefix:    opts.LoadPrefix,
		log:           opts.Logger,
		apps:          make(map[string]*appState),
		tokens:        make(map[string]*tokenRec),
		phoneCodes:    make(map[string]*phoneCode),
		loadUsed:      make(map[string]struct{}),
		rate:          make(map[string]rateWindow),
		codeSweep:     1024,
		loginCodes:    make(map[string]*loginCode),
		sessions:      make(map[string]string),
		loginSweep:    1024,
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.ttl == 0 {
		s.ttl = DefaultTokenTTL
	}
	if s.classicLimit == 0 {
		s.classicLimit = DefaultClassicDailyLimit
	}
	if s.forceLimit == 0 {
		s.forceLimit = DefaultStableForceDailyLimit
	}
	if s.forceInterval == 0 {
		s.forceInterval = DefaultStableForceInterval
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Seed != 0 {
		seed := uint64(opts.Seed)                                      // #nosec G115 -- any bit pattern is a valid seed
		s.ent.r = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) // #nosec G404 -- deterministic on purpose: Options.Seed is for reproducible tests
	}
	s.ccNumber.Store(opts.CountryCodeAsNumber)
	s.phoneRate.Store(int64(opts.PhoneRateLimit))
	if opts.OpenIDMismatchErrcode == 0 {
		opts.OpenIDMismatchErrcode = DefaultOpenIDMismatchErrcode
	}
	s.openidErr.Store(int64(opts.OpenIDMismatchErrcode))
	s.keyExt = opts.KeyExtension
	s.stats.init()
	s.openapi.init()
	for p, n := range opts.QuotaDailyLimits {
		if err := s.SetQuotaDailyLimit(p, n); err != nil {
			return nil, fmt.Errorf("wxmock: Options.QuotaDailyLimits[%q]: %w", truncate(p, 64), err)
		}
	}
	for _, a := range opts.Apps {
		if err := s.AddApp(a); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Now returns the emulated time: the configured clock plus every
// [Server.Advance] offset.
func (s *Server) Now() time.Time {
	return s.clock().Add(time.Duration(s.offset.Load()))
}

// Advance moves the emulated clock forward by d. Non-positive values are
// ignored: the emulated clock never runs backwards.
func (s *Server) Advance(d time.Duration) {
	if d > 0 {
		s.offset.Add(int64(d))
	}
}

// SetCountryCodeAsNumber switches phone_info.countryCode between a JSON
// string ("86", false) and a JSON number (86, true).
func (s *Server) SetCountryCodeAsNumber(asNumber bool) {
	s.ccNumber.Store(asNumber)
}

// SetPhoneRateLimit sets the getuserphonenumber calls allowed per app per
// emulated minute before 45011; 0 means unlimited.
func (s *Server) SetPhoneRateLimit(perMinute int) error {
	if perMinute < 0 {
		return errors.New("phone rate limit must not be negative")
	}
	s.phoneRate.Store(int64(perMinute))
	return nil
}

// SetOpenIDMismatchErrcode sets the errcode of an exchange whose openid is
// not the code's user (non-zero).
func (s *Server) SetOpenIDMismatchErrcode(errcode int) error {
	if errcode == 0 {
		return errors.New("openid mismatch errcode must be non-zero")
	}
	s.openidErr.Store(int64(errcode))
	return nil
}

// AddApp registers a Mini Program at runtime. The appid must be new, 1..64
// characters of [A-Za-z0-9_-]; the secret must be 1..128 printable ASCII
// characters without spaces.
func (s *Server) AddApp(a App) error {
	if !validIdent(a.AppID, 64) {
		return errors.New("appid must be 1..64 characters of [A-Za-z0-9_-]")
	}
	if !validSecret(a.Secret) {
		return errors.New("secret must be 1..128 printable ASCII characters without spaces")
	}
	s.appMu.Lock()
	_, dup := s.apps[a.AppID]
	if !dup {
		s.apps[a.AppID] = &appState{id: a.AppID, secret: a.Secret}
	}
	s.appMu.Unlock()
	if dup {
		return fmt.Errorf("app %s already exists", a.AppID)
	}
	s.log.Info("wxmock: app added", "appid", a.AppID)
	return nil
}

// Apps returns the appids known to the emulator, in no particular order.
func (s *Server) Apps() []string {
	s.appMu.RLock()
	defer s.appMu.RUnlock()
	ids := make([]string, 0, len(s.apps))
	for id := range s.apps {
		ids = append(ids, id)
	}
	return ids
}

// resolveApp returns appid, or the only app when appid is empty and exactly
// one app exists. It fails for unknown appids.
func (s *Server) resolveApp(appid string) (string, error) {
	s.appMu.RLock()
	defer s.appMu.RUnlock()
	if appid == "" {
		if len(s.apps) == 1 {
			for id := range s.apps {
				return id, nil
			}
		}
		return "", errors.New("appid is required when more than one app exists")
	}
	if _, ok := s.apps[appid]; !ok {
		return "", fmt.Errorf("unknown appid %q", truncate(appid, 64))
	}
	return appid, nil
}

func validIdent(v string, max int) bool {
	if v == "" || len(v) > max {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validSecret(v string) bool {
	if v == "" || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

func validDigits(v string, min, max int) bool {
	if len(v) < min || len(v) > max {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// validFreeText accepts 1..max bytes of valid UTF-8 without control
// characters.
func validFreeText(v string, max int) bool {
	if v == "" || len(v) > max || !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

func truncate(v string, n int) string {
	if len(v) <= n {
		return v
	}
	return strings.ToValidUTF8(v[:n], "") + "…"
}

// maskPhone keeps only the last four digits of a phone number for logs.
func maskPhone(p string) string {
	if len(p) <= 4 {
		return "****"
	}
	return strings.Repeat("*", len(p)-4) + p[len(p)-4:]
}
