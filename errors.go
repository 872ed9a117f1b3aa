package wxphone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/internal/valid"
)

// Sentinel errors. Every error this package returns matches one or more of
// them with errors.Is; the concrete types below carry the details.
var (
	// ErrInvalidInput: the caller's input (a code, a payload) was refused
	// locally; nothing was sent to WeChat. See *InputError.
	ErrInvalidInput = errors.New("wxphone: invalid input")
	// ErrInvalidCode: WeChat says the code does not exist, expired or was
	// already used (errcode 40029; 40163 on jscode2session).
	ErrInvalidCode = errors.New("wxphone: code invalid, expired or already used")
	// ErrAppIDMismatch: the code was issued to another Mini Program
	// (errcode 40013 on the exchange).
	ErrAppIDMismatch = errors.New("wxphone: code belongs to another appid")
	// ErrRateLimited: WeChat's per-minute limit (errcode 45011). Not retried.
	ErrRateLimited = errors.New("wxphone: rate limited by WeChat")
	// ErrSystemBusy: WeChat's errcode -1.
	ErrSystemBusy = errors.New("wxphone: WeChat system busy")
	// ErrTokenInvalid: WeChat rejected the access token (40001, 40014,
	// 42001, 41001) and the single refresh-and-retry did not help.
	ErrTokenInvalid = errors.New("wxphone: access token rejected by WeChat")
	// ErrOutcomeUnknown: the request may have reached WeChat, which may
	// have used the code, and the answer was lost (timeout or reset after
	// the request was written, HTTP 5xx, a truncated answer, or 40029
	// after a resend). The code must not be sent again; ask the user to tap
	// the button again. See *OutcomeUnknownError.
	ErrOutcomeUnknown = errors.New("wxphone: outcome unknown: WeChat may have used the code")
	// ErrCodeMayBeUsed: an earlier attempt of this exchange may have used
	// the code (WeChat answered -1, which it may send after using a code)
	// and the exchange then ended without an answer for it. The error
	// also matches the sentinels of what ended it (ErrRateLimited,
	// ErrTokenUnavailable, …). Retrying with the same code is allowed,
	// but a later 40029 for it means "outcome unknown", never "invalid
	// code". Every error matching ErrOutcomeUnknown matches it too. See
	// *CodeMayBeUsedError.
	ErrCodeMayBeUsed = errors.New("wxphone: WeChat may have used the code")
	// ErrTokenFetchRefused: a token fetch failed for a reason retrying will
	// not fix: wrong appid or secret, IP not whitelisted, secret frozen,
	// daily quota (40013, 40125, 40164, 40243, 45009 and kin).
	ErrTokenFetchRefused = errors.New("wxphone: WeChat refused the token fetch")
	// ErrQuotaExhausted: the daily quota of the token endpoint (45009).
	ErrQuotaExhausted = errors.New("wxphone: WeChat daily quota exhausted")
	// ErrTokenUnavailable: no usable token can be had right now (cool-down
	// after a refused fetch, force-refresh budget spent, manager closed).
	// See *TokenUnavailableError.
	ErrTokenUnavailable = errors.New("wxphone: no usable access token")
	// ErrForceRefreshLimited: a force refresh was needed but the 30 s
	// spacing or the daily budget does not allow one.
	ErrForceRefreshLimited = errors.New("wxphone: force-refresh budget exhausted")
	// ErrTokenStillValid: a token reported as rejected is still accepted
	// by WeChat (checked with get_api_domain_ip), so it was neither
	// dropped nor replaced and no force refresh was spent. See
	// TokenManager.InvalidateReported.
	ErrTokenStillValid = errors.New("wxphone: WeChat still accepts the token")
	// ErrTokenCheckFailed: asking WeChat whether a reported token is
	// rejected failed (timeout, -1, an unexpected answer), so no force
	// refresh was attempted. It comes inside a *TokenUnavailableError.
	ErrTokenCheckFailed = errors.New("wxphone: could not check the token with WeChat")
	// ErrRefreshLockNotHeld: in classic mode with a shared store, the
	// fleet's refresh lock could not be taken (another instance holds it
	// and stored no token in time, or the store is unavailable). A classic
	// fetch invalidates every other holder's token, so none is made
	// without the lock. It comes inside a *TokenUnavailableError.
	ErrRefreshLockNotHeld = errors.New("wxphone: classic mode: refresh lock not held; not fetching")
	// ErrWatermarkMismatch: the phone data carries another appid's
	// watermark; the result is refused (fail closed).
	ErrWatermarkMismatch = errors.New("wxphone: watermark appid mismatch")
	// ErrMalformedResponse: WeChat's answer could not be decoded (empty,
	// truncated, HTML, or errcode 0 without the expected data).
	ErrMalformedResponse = errors.New("wxphone: malformed response from WeChat")
	// ErrUpstream: a transport failure or an unexpected HTTP status.
	ErrUpstream = errors.New("wxphone: upstream failure")
	// ErrDecrypt: a legacy encryptedData payload could not be decrypted.
	ErrDecrypt = errors.New("wxphone: cannot decrypt payload")
	// ErrClosed: the Client or TokenManager was closed.
	ErrClosed = errors.New("wxphone: closed")
	// ErrAnswerUnverified: in the API security mode, WeChat's answer was
	// not signed by a configured platform certificate, did not decrypt, or
	// named another appid or time; it is not trusted. Since WeChat may
	// have used the code, the exchange's error matches ErrOutcomeUnknown
	// too. See *VerificationError.
	ErrAnswerUnverified = errors.New("wxphone: WeChat's answer failed verification")
	// ErrAPISecurity: WeChat refused a request of the API security mode
	// (errcodes 40230–40240). The code was not used.
	ErrAPISecurity = errors.New("wxphone: refused by WeChat's API security mode")
	// ErrAPISecurityConfig: the API security mode is misconfigured on this
	// side or in the MP console (40234 invalid signature, 40235 cannot
	// decrypt, 40236 invalid Wechatmp-Appid, 40237 appid does not match
	// the token, 40238 no symmetric key, 40239 no public key). Retrying
	// will not help; APISecuritySettings names what to check.
	ErrAPISecurityConfig = errors.New("wxphone: API security mode misconfigured")
	// ErrClockSkew: errcode 40240, the request's timestamp is outside
	// WeChat's window: this machine's clock is off.
	ErrClockSkew = errors.New("wxphone: clock skew: WeChat refused the request's timestamp")
)

// WeChat errcodes wxphone acts on, by name (those of the API security mode
// are apisec's Errcode constants). What each means to wxphone is in one
// table, errcodes, which APIError's methods, the Client, the token manager,
// the metrics and the service all read.
const (
	ErrcodeSystemBusy             = -1    // system busy: retry later; WeChat may send it after using a code
	ErrcodeOK                     = 0     // success
	ErrcodeInvalidCredential      = 40001 // the access token is invalid or not the latest; on GET /cgi-bin/token, a wrong AppSecret
	ErrcodeInvalidGrantType       = 40002 // invalid grant_type
	ErrcodeInvalidOpenID          = 40003 // invalid openid
	ErrcodeInvalidAppID           = 40013 // invalid appid; on the exchange, the code belongs to another appid
	ErrcodeInvalidAccessToken     = 40014 // invalid access_token
	ErrcodeInvalidCode            = 40029 // the code does not exist, expired or was used
	ErrcodeInvalidSecret          = 40125 // invalid AppSecret
	ErrcodeCodeBeenUsed           = 40163 // jscode2session: the login code was used
	ErrcodeIPNotWhitelisted       = 40164 // the caller's IP is not on the API IP whitelist
	ErrcodeHighRiskUser           = 40226 // jscode2session: login of a high-risk user blocked
	ErrcodeSecretFrozen           = 40243 // the AppSecret is frozen
	ErrcodeAccessTokenMissing     = 41001 // access_token missing
	ErrcodeAppIDMissing           = 41002 // appid missing
	ErrcodeSecretMissing          = 41004 // AppSecret missing
	ErrcodeAccessTokenExpired     = 42001 // access_token expired
	ErrcodeRequirePOST            = 43002 // the API requires POST
	ErrcodeEmptyPostData          = 44002 // empty POST body
	ErrcodeDailyQuota             = 45009 // the API's daily quota is spent
	ErrcodeMinuteQuota            = 45011 // the per-minute limit: retry next minute
	ErrcodeDataFormat             = 47001 // the body is not the expected JSON
	ErrcodeTokenAPIForbidden      = 50004 // the token API may not be used
	ErrcodeAccountFrozen          = 50007 // the account is frozen
	ErrcodeThirdPartyToken        = 61024 // the API needs a third-party platform's token
	ErrcodeIPAwaitingConfirmation = 89501 // the IP awaits the administrator's confirmation
	ErrcodeIPNeedsConfirmation    = 89503 // the IP needs the administrator's confirmation
	ErrcodeIPRefusedForDay        = 89506 // the administrator refused the IP twice within 24 h
	ErrcodeIPRefusedForHour       = 89507 // the administrator refused the IP within the hour
)

// errcodeRule is what one errcode means to wxphone.
type errcodeRule struct {
	// sentinel is the sentinel error the errcode matches on any
	// operation, if any.
	sentinel error
	// token: on a call made with an access token, WeChat rejected the
	// token (ErrTokenInvalid); the Client invalidates it and resends once.
	token bool
	// retryable: the same request may succeed later (APIError.Temporary).
	retryable bool
	// refusal: on a token fetch, a refusal retrying will not fix
	// (ErrTokenFetchRefused); the token manager cools down.
	refusal bool
	// mayHaveUsed: on an exchange, WeChat may have used the code before
	// answering. Only the errcodes WeChat answers before it reads the
	// request (a rejected token, the per-minute limit, the API security
	// mode's refusals) leave the code unused; so does no errcode outside
	// the table.
	mayHaveUsed bool
	// apiSecurity: a refusal of the API security mode (ErrAPISecurity).
	apiSecurity bool
	// settings names what to check when the errcode says the API security
	// mode is misconfigured (ErrAPISecurityConfig).
	settings string
}

// errcodes is the one table of the errcodes wxphone knows.
var errcodes = map[int]errcodeRule{
	ErrcodeSystemBusy:             {sentinel: ErrSystemBusy, retryable: true, mayHaveUsed: true},
	ErrcodeOK:                     {mayHaveUsed: true},
	ErrcodeInvalidCredential:      {token: true, refusal: true},
	ErrcodeInvalidGrantType:       {refusal: true, mayHaveUsed: true},
	ErrcodeInvalidOpenID:          {mayHaveUsed: true},
	ErrcodeInvalidAppID:           {refusal: true, mayHaveUsed: true},
	ErrcodeInvalidAccessToken:     {token: true},
	ErrcodeInvalidCode:            {mayHaveUsed: true},
	ErrcodeInvalidSecret:          {refusal: true, mayHaveUsed: true},
	ErrcodeCodeBeenUsed:           {mayHaveUsed: true},
	ErrcodeIPNotWhitelisted:       {refusal: true, mayHaveUsed: true},
	ErrcodeHighRiskUser:           {mayHaveUsed: true},
	ErrcodeSecretFrozen:           {refusal: true, mayHaveUsed: true},
	ErrcodeAccessTokenMissing:     {token: true},
	ErrcodeAppIDMissing:           {refusal: true, mayHaveUsed: true},
	ErrcodeSecretMissing:          {refusal: true, mayHaveUsed: true},
	ErrcodeAccessTokenExpired:     {token: true},
	ErrcodeRequirePOST:            {mayHaveUsed: true},
	ErrcodeEmptyPostData:          {mayHaveUsed: true},
	ErrcodeDailyQuota:             {sentinel: ErrQuotaExhausted, refusal: true, mayHaveUsed: true},
	ErrcodeMinuteQuota:            {sentinel: ErrRateLimited, retryable: true},
	ErrcodeDataFormat:             {mayHaveUsed: true},
	ErrcodeTokenAPIForbidden:      {refusal: true, mayHaveUsed: true},
	ErrcodeAccountFrozen:          {refusal: true, mayHaveUsed: true},
	ErrcodeThirdPartyToken:        {refusal: true, mayHaveUsed: true},
	ErrcodeIPAwaitingConfirmation: {refusal: true, mayHaveUsed: true},
	ErrcodeIPNeedsConfirmation:    {refusal: true, mayHaveUsed: true},
	ErrcodeIPRefusedForDay:        {refusal: true, mayHaveUsed: true},
	ErrcodeIPRefusedForHour:       {refusal: true, mayHaveUsed: true},

	apisec.ErrcodeMissingSerial:    {apiSecurity: true},
	apisec.ErrcodeMissingTimestamp: {apiSecurity: true},
	apisec.ErrcodeMissingSignature: {apiSecurity: true},
	apisec.ErrcodeMissingAppID:     {apiSecurity: true},
	apisec.ErrcodeBadSignature: {apiSecurity: true, sentinel: ErrAPISecurityConfig,
		settings: "the app private key and its number (WX_API_PRIVATE_KEY_FILE, WX_API_PRIVATE_KEY_SN) must match the app public key in the MP console"},
	apisec.ErrcodeBadEncryption: {apiSecurity: true, sentinel: ErrAPISecurityConfig,
		settings: "the symmetric key and its number (WX_API_SYM_KEY_FILE, WX_API_SYM_SN) must match the MP console's"},
	apisec.ErrcodeBadAppID: {apiSecurity: true, sentinel: ErrAPISecurityConfig,
		settings: "the appid (WX_APPID) must be the Mini Program whose API security mode is configured"},
	apisec.ErrcodeAppIDNotToken: {apiSecurity: true, sentinel: ErrAPISecurityConfig,
		settings: "the access token must belong to the same appid (WX_APPID, WX_SECRET)"},
	apisec.ErrcodeNoSymKey: {apiSecurity: true, sentinel: ErrAPISecurityConfig,
		settings: "no symmetric key is configured in the MP console (API安全 → API对称密钥) for this appid; check WX_API_SYM_KEY_FILE and WX_API_SYM_SN"},
	apisec.ErrcodeNoPublicKey: {apiSecurity: true, sentinel: ErrAPISecurityConfig,
		settings: "no app public key is configured in the MP console (API安全 → API非对称密钥) for this appid; check WX_API_PRIVATE_KEY_FILE and WX_API_PRIVATE_KEY_SN"},
	apisec.ErrcodeExpiredTimestamp: {apiSecurity: true, sentinel: ErrClockSkew},
}

// ruleOf returns errcode's row of errcodes. An errcode outside the table
// gets the cautious row: no token error, no retry, no refusal, and WeChat
// may have used the code.
func ruleOf(errcode int) errcodeRule {
	if r, ok := errcodes[errcode]; ok {
		return r
	}
	return errcodeRule{mayHaveUsed: true}
}

// KnownErrcode reports whether errcode is one wxphone knows (one of the
// Errcode constants here or in apisec), for a bounded metric label.
func KnownErrcode(errcode int) bool {
	_, ok := errcodes[errcode]
	return ok
}

// APISecuritySettings names what to check for an errcode of the API
// security mode that means misconfiguration (see ErrAPISecurityConfig),
// or "" for any other errcode.
func APISecuritySettings(errcode int) string { return ruleOf(errcode).settings }

func isTokenOp(op string) bool { return op == OpStableToken || op == OpToken }

// APIError is an error WeChat reported in the body (HTTP 200 with a non-zero
// errcode).
type APIError struct {
	Op      string // the operation, e.g. OpPhoneNumber
	ErrCode int    // WeChat's errcode
	ErrMsg  string // WeChat's errmsg, sanitised and truncated
	RID     string // the rid parsed from errmsg, for WeChat support
}

// Error describes the failure without any credential or code.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("wxphone: ")
	b.WriteString(e.Op)
	b.WriteString(": errcode ")
	b.WriteString(strconv.Itoa(e.ErrCode))
	if e.ErrMsg != "" {
		b.WriteString(": ")
		b.WriteString(e.ErrMsg)
	}
	return b.String()
}

// Is matches the sentinels that describe this errcode for this operation
// (see the Errcode constants).
func (e *APIError) Is(target error) bool {
	r := ruleOf(e.ErrCode)
	switch {
	case target == nil:
		return false
	case target == r.sentinel, target == ErrAPISecurity && r.apiSecurity:
		return true
	case isTokenOp(e.Op):
		return target == ErrTokenFetchRefused && r.refusal
	}
	switch target {
	case ErrInvalidCode:
		return e.ErrCode == ErrcodeInvalidCode || (e.Op == OpCode2Session && e.ErrCode == ErrcodeCodeBeenUsed)
	case ErrAppIDMismatch:
		return e.ErrCode == ErrcodeInvalidAppID
	case ErrTokenInvalid:
		return r.token
	}
	return false
}

// RetryAfter is how long to wait before trying again: a minute for 45011.
func (e *APIError) RetryAfter() time.Duration {
	if e.ErrCode == ErrcodeMinuteQuota {
		return time.Minute
	}
	return 0
}

// Temporary reports whether the same request may succeed later (-1, 45011).
func (e *APIError) Temporary() bool { return ruleOf(e.ErrCode).retryable }

// MayHaveUsedCode reports whether WeChat may have used the code an
// exchange (OpPhoneNumber, OpCode2Session) carried before it answered this
// errcode: true unless WeChat answers the errcode before it reads the
// request (a rejected access token, the per-minute limit, a refusal of the
// API security mode). A retry of such a code that WeChat answers 40029
// cannot tell "invalid" from "used by the first attempt".
func (e *APIError) MayHaveUsedCode() bool {
	return (e.Op == OpPhoneNumber || e.Op == OpCode2Session) && ruleOf(e.ErrCode).mayHaveUsed
}

// parseRID extracts the rid from an errmsg such as
// "invalid code hint: [xyz] rid: 632d16be-15ad5486-1e378de4" or the older
// "…, hints: [ req_id: abc ]".
func parseRID(msg string) string {
	for _, marker := range []string{"rid:", "req_id:"} {
		i := strings.LastIndex(msg, marker)
		if i < 0 {
			continue
		}
		s := strings.TrimLeft(msg[i+len(marker):], " ")
		end := 0
		for end < len(s) && end < 64 && valid.IDChar(s[end]) {
			end++
		}
		if end > 0 {
			return s[:end]
		}
	}
	return ""
}

// maxErrMsg bounds how much of WeChat's errmsg an error carries.
const maxErrMsg = 200

// sanitizeMsg bounds an upstream message, drops control characters and
// removes any of the given sensitive values should the upstream echo them.
func sanitizeMsg(msg string, sensitive ...string) string {
	for _, s := range sensitive {
		if len(s) >= 4 && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	var b strings.Builder
	for _, r := range msg {
		if b.Len() >= maxErrMsg {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}

// InputError reports input refused locally, before any network call. It
// never contains the input itself.
type InputError struct {
	Field  string // "code", "encryptedData", …
	Reason string // what is wrong, e.g. "empty" or "longer than 128 bytes"
}

func (e *InputError) Error() string { return "wxphone: invalid " + e.Field + ": " + e.Reason }

// Is matches ErrInvalidInput.
func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

// TransportError is a failure below HTTP: dial, DNS, TLS, a reset, a timeout
// or a cancelled context. URLs inside it are redacted.
type TransportError struct {
	Op string
	// Sent reports whether any part of the request may have been written
	// to the connection: if true, WeChat may have received and acted on
	// it. It is false only when net/http's Transport showed that nothing
	// was written (it reports httptrace events; a RoundTripper that does
	// not is assumed to have sent the request).
	Sent bool
	Err  error
}

func (e *TransportError) Error() string {
	s := "wxphone: " + e.Op + ": transport failure"
	if !e.Sent {
		s += " (nothing sent)"
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the redacted cause, so errors.Is(err,
// context.DeadlineExceeded) works.
func (e *TransportError) Unwrap() error { return e.Err }

// Is matches ErrUpstream.
func (e *TransportError) Is(target error) bool { return target == ErrUpstream }

// Timeout reports whether the failure was a timeout (a deadline or a
// transport timeout).
func (e *TransportError) Timeout() bool { return IsTimeout(e.Err) }

// HTTPError is an unexpected HTTP status from WeChat (or a proxy before it).
type HTTPError struct {
	Op         string
	StatusCode int
}

func (e *HTTPError) Error() string {
	return "wxphone: " + e.Op + ": unexpected HTTP status " + strconv.Itoa(e.StatusCode)
}

// Is matches ErrUpstream.
func (e *HTTPError) Is(target error) bool { return target == ErrUpstream }

// DecodeError reports an answer that could not be decoded. It never carries
// the body, which may hold a phone number or a token.
type DecodeError struct {
	Op     string
	Reason string // e.g. "empty body", "HTML instead of JSON", "truncated JSON"
	Err    error  // the decoder's error, if any
}

func (e *DecodeError) Error() string {
	s := "wxphone: " + e.Op + ": malformed response: " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the decoder's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is matches ErrMalformedResponse.
func (e *DecodeError) Is(target error) bool { return target == ErrMalformedResponse }

// OutcomeUnknownError means the request may have reached WeChat and the answer
// was lost. Err is the cause (a *TransportError, *HTTPError, *DecodeError or
// *APIError). The code must not be sent again.
type OutcomeUnknownError struct {
	Op  string
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	return "wxphone: " + e.Op + ": outcome unknown (WeChat may have used the code; ask the user to tap again): " + e.Err.Error()
}

// Unwrap returns the cause, except an *APIError (a 40029 or 40163 that
// followed a resend): its sentinels would tell the caller "invalid code"
// when WeChat may well have used the code for the first send. errors.As
// still finds that *APIError (for its rid); errors.Is does not match
// ErrInvalidCode.
func (e *OutcomeUnknownError) Unwrap() error {
	if _, ok := e.Err.(*APIError); ok {
		return nil
	}
	return e.Err
}

// As lets errors.As reach a hidden *APIError cause.
func (e *OutcomeUnknownError) As(target any) bool {
	ae, ok := e.Err.(*APIError)
	if p, isAE := target.(**APIError); ok && isAE {
		*p = ae
		return true
	}
	return false
}

// Is matches ErrOutcomeUnknown and ErrCodeMayBeUsed.
func (e *OutcomeUnknownError) Is(target error) bool {
	return target == ErrOutcomeUnknown || target == ErrCodeMayBeUsed
}

// CodeMayBeUsedError is the end of an exchange that did not obtain an
// answer for its code after an attempt that may have used the code (see
// ErrCodeMayBeUsed). Err is what ended it, and errors.Is matches its
// sentinels, except ErrInvalidCode: a 40029 after such an attempt is an
// *OutcomeUnknownError instead.
type CodeMayBeUsedError struct {
	Op  string
	Err error
}

func (e *CodeMayBeUsedError) Error() string {
	return "wxphone: " + e.Op + ": an earlier attempt may have used the code (WeChat answered -1): " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *CodeMayBeUsedError) Unwrap() error { return e.Err }

// Is matches ErrCodeMayBeUsed.
func (e *CodeMayBeUsedError) Is(target error) bool { return target == ErrCodeMayBeUsed }

// RetryAfter is the cause's, if any (45011, a token cool-down).
func (e *CodeMayBeUsedError) RetryAfter() time.Duration {
	d, _ := RetryAfter(e.Err)
	return d
}

// VerificationError reports an answer to a request of the API security
// mode that failed verification (see ErrAnswerUnverified). It names what
// failed, never the answer's content. An exchange wraps it in an
// *OutcomeUnknownError.
type VerificationError struct {
	Op string
	// Reason is one of apisec's Reason constants, e.g. "bad signature".
	Reason string
	// Serials are the platform certificate numbers the answer named.
	Serials []string
}

func (e *VerificationError) Error() string {
	s := "wxphone: " + e.Op + ": WeChat's answer failed verification (API security mode): " + e.Reason
	if len(e.Serials) > 0 {
		s += " (serial " + strings.Join(e.Serials, ", ") + "; check WX_API_PLATFORM_CERT_FILE and WX_API_PLATFORM_CERT_SN)"
	}
	return s
}

// Is matches ErrAnswerUnverified, and ErrClockSkew when the answer's
// timestamp was outside the window.
func (e *VerificationError) Is(target error) bool {
	return target == ErrAnswerUnverified || (target == ErrClockSkew && e.Reason == apisec.ReasonClockSkew)
}

// WatermarkError reports phone data whose watermark names another appid.
type WatermarkError struct {
	Want, Got string // appids are not secret
}

func (e *WatermarkError) Error() string {
	return fmt.Sprintf("wxphone: watermark appid %q does not match the configured appid %q", e.Got, e.Want)
}

// Is matches ErrWatermarkMismatch.
func (e *WatermarkError) Is(target error) bool { return target == ErrWatermarkMismatch }

// TokenUnavailableError reports that no usable token can be had until Until:
// a refused fetch tripped a cool-down, or a needed force refresh is not
// allowed by its budget. Err holds the cause (e.g. the *APIError with 45009,
// or ErrForceRefreshLimited).
type TokenUnavailableError struct {
	AppID  string
	Reason string
	Until  time.Time
	Err    error
}

func (e *TokenUnavailableError) Error() string {
	s := "wxphone: no usable access token for " + e.AppID + ": " + e.Reason
	if !e.Until.IsZero() {
		s += " until " + e.Until.UTC().Format(time.RFC3339)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *TokenUnavailableError) Unwrap() error { return e.Err }

// Is matches ErrTokenUnavailable.
func (e *TokenUnavailableError) Is(target error) bool { return target == ErrTokenUnavailable }

// RetryAfter is the time left until Until (at least a second).
func (e *TokenUnavailableError) RetryAfter() time.Duration {
	d := time.Until(e.Until)
	if d < time.Second {
		d = time.Second
	}
	return d
}

// RetryAfter reports how long a caller should wait before retrying after err,
// if err says so (45011, a token cool-down).
func RetryAfter(err error) (time.Duration, bool) {
	var r interface{ RetryAfter() time.Duration }
	if errors.As(err, &r) {
		if d := r.RetryAfter(); d > 0 {
			return d, true
		}
	}
	return 0, false
}

// IsTimeout reports whether err is a deadline or a transport timeout.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
