package server

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/service"
)

// ErrorCode is the stable, snake_case identifier of an error answer, found
// in the body as error.code. Clients switch on it; the message is for
// humans and may change.
type ErrorCode string

// Error codes. docs/errors.md explains each one and what a client should do.
const (
	// CodeInvalidRequest (400): the body is not the JSON object the route
	// expects (malformed, an unknown field, a field twice, a field name in
	// another letter case, a wrong type, trailing data), or the request
	// carried both Transfer-Encoding and Content-Length.
	CodeInvalidRequest ErrorCode = "invalid_request"
	// CodeMalformedCode (400): the code is empty, too long or not printable
	// ASCII; it was not sent to WeChat.
	CodeMalformedCode ErrorCode = "malformed_code"
	// CodeAppIDRequired (400): several Mini Programs are served and the
	// request named none.
	CodeAppIDRequired ErrorCode = "appid_required"
	// CodeUnknownAppID (400): the request named an appid this service does
	// not serve.
	CodeUnknownAppID ErrorCode = "unknown_appid"
	// CodeUnauthorized (401): no bearer API key, or an unknown one.
	CodeUnauthorized ErrorCode = "unauthorized"
	// CodeForbidden (403): the API key is valid but not allowed on this
	// route.
	CodeForbidden ErrorCode = "forbidden"
	// CodeNotFound (404): no such route.
	CodeNotFound ErrorCode = "not_found"
	// CodeMethodNotAllowed (405): the route exists with another method (see
	// the Allow header).
	CodeMethodNotAllowed ErrorCode = "method_not_allowed"
	// CodeRequestTimeout (408): the body did not arrive within the
	// server's read deadline; nothing was sent to WeChat.
	CodeRequestTimeout ErrorCode = "request_timeout"
	// CodeCodeAlreadyUsed (409): the code was already exchanged for
	// another caller (API key, appid or openid); its outcome is not
	// disclosed.
	CodeCodeAlreadyUsed ErrorCode = "code_already_used"
	// CodeTokenStillValid (409, POST /v1/access-token/invalidate): WeChat
	// still accepts the reported token (checked with
	// get_api_domain_ip); nothing was dropped, fetched or spent.
	CodeTokenStillValid ErrorCode = "token_still_valid" // #nosec G101 -- an error code, not a credential
	// CodeBodyTooLarge (413): the body exceeds MaxBodyBytes.
	CodeBodyTooLarge ErrorCode = "body_too_large"
	// CodeUnsupportedMediaType (415): the body is not application/json.
	CodeUnsupportedMediaType ErrorCode = "unsupported_media_type"
	// CodeInvalidCode (422): WeChat refused the code: it does not exist,
	// expired or was already used (errcode 40029).
	CodeInvalidCode ErrorCode = "invalid_code"
	// CodeAppIDMismatch (422): the code was issued to another Mini Program
	// (errcode 40013).
	CodeAppIDMismatch ErrorCode = "appid_mismatch"
	// CodeRateLimited (429): this API key exceeded its request rate.
	CodeRateLimited ErrorCode = "rate_limited"
	// CodeWeChatRateLimited (429): WeChat's per-minute limit (errcode
	// 45011).
	CodeWeChatRateLimited ErrorCode = "wechat_rate_limited"
	// CodeInternalError (500): a bug; the request id identifies the log
	// line.
	CodeInternalError ErrorCode = "internal_error"
	// CodeWeChatBusy (502): WeChat answered errcode -1 twice (one jittered
	// retry was made). WeChat may have used the code: retrying with it is
	// safe, and a retry that finds it used answers outcome_unknown.
	CodeWeChatBusy ErrorCode = "wechat_busy"
	// CodeUpstreamError (502): WeChat refused the request (an unexpected
	// HTTP status below 500 or errcode), or it could not be sent.
	CodeUpstreamError ErrorCode = "upstream_error"
	// CodeWatermarkMismatch (502): WeChat's answer carried another app's
	// watermark and was refused.
	CodeWatermarkMismatch ErrorCode = "watermark_mismatch"
	// CodeOutcomeUnknown (502, or 504 after a timeout): WeChat may have
	// used the code and its answer was lost. The code must not be sent
	// again: ask the user to tap the button again.
	CodeOutcomeUnknown ErrorCode = "outcome_unknown"
	// CodeTokenUnavailable (503): no usable access token (WeChat refused
	// the fetch, quota, cool-down, or tokens keep being rejected).
	CodeTokenUnavailable ErrorCode = "token_unavailable" // #nosec G101 -- an error code, not a credential
	// CodeStoreUnavailable (503): the replay store failed; the code was not
	// sent, retrying with it is safe.
	CodeStoreUnavailable ErrorCode = "store_unavailable"
	// CodeShuttingDown (503): this instance is shutting down; retry on
	// another one.
	CodeShuttingDown ErrorCode = "shutting_down"
	// CodeNotReady (503, /readyz only): an app has no usable token or a
	// readiness check failed.
	CodeNotReady ErrorCode = "not_ready"
	// CodeAPISecurityMisconfigured (503): WeChat refused the request of the
	// API security mode for a configuration reason (errcode 40234–40239);
	// the message names the setting to check. The code was not used.
	CodeAPISecurityMisconfigured ErrorCode = "api_security_misconfigured"
	// CodeClockSkew (503): WeChat refused the request's timestamp (errcode
	// 40240): this machine's clock is off. The code was not used.
	CodeClockSkew ErrorCode = "clock_skew"
	// CodeUpstreamTimeout (504): the deadline passed before this request
	// sent the code, or while an earlier request with the same code is
	// still running; retrying with the same code is safe and receives
	// that exchange's outcome.
	CodeUpstreamTimeout ErrorCode = "upstream_timeout"
)

// ErrorInfo describes one error code for documentation and tests.
type ErrorInfo struct {
	// Code is the error code.
	Code ErrorCode
	// Statuses are the HTTP statuses the code can come with.
	Statuses []int
}

// ErrorCodes lists every error code the server can emit, with its
// statuses.
func ErrorCodes() []ErrorInfo {
	return []ErrorInfo{
		{CodeInvalidRequest, []int{400}},
		{CodeMalformedCode, []int{400}},
		{CodeAppIDRequired, []int{400}},
		{CodeUnknownAppID, []int{400}},
		{CodeUnauthorized, []int{401}},
		{CodeForbidden, []int{403}},
		{CodeNotFound, []int{404}},
		{CodeMethodNotAllowed, []int{405}},
		{CodeRequestTimeout, []int{408}},
		{CodeCodeAlreadyUsed, []int{409}},
		{CodeTokenStillValid, []int{409}},
		{CodeBodyTooLarge, []int{413}},
		{CodeUnsupportedMediaType, []int{415}},
		{CodeInvalidCode, []int{422}},
		{CodeAppIDMismatch, []int{422}},
		{CodeRateLimited, []int{429}},
		{CodeWeChatRateLimited, []int{429}},
		{CodeInternalError, []int{500}},
		{CodeWeChatBusy, []int{502}},
		{CodeUpstreamError, []int{502}},
		{CodeWatermarkMismatch, []int{502}},
		{CodeOutcomeUnknown, []int{502, 504}},
		{CodeTokenUnavailable, []int{503}},
		{CodeStoreUnavailable, []int{503}},
		{CodeShuttingDown, []int{503}},
		{CodeNotReady, []int{503}},
		{CodeAPISecurityMisconfigured, []int{503}},
		{CodeClockSkew, []int{503}},
		{CodeUpstreamTimeout, []int{504}},
	}
}

// apiError is an error answer: status, code, a message for humans and,
// when WeChat gave them, its errcode and rid.
type apiError struct {
	status     int
	code       ErrorCode
	msg        string
	errcode    int
	rid        string
	retryAfter time.Duration
	allow      string // Allow header for 405
	close      bool   // answer with Connection: close
	cause      error  // logged, never sent
}

func newError(status int, code ErrorCode, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

// Messages. None may contain request data: they are fixed texts.
const (
	msgOutcomeUnknown = "WeChat may have used the code but its answer was lost. Do not send this code again: ask the user to tap the button again."
	msgInFlight       = "The deadline passed while an earlier request with the same code is still being exchanged. Retry with the same code to receive that exchange's outcome."
	msgTimeout        = "The deadline passed before this request sent the code to WeChat. Retrying with the same code is safe."
	msgUnverified     = "WeChat's answer failed verification (API security mode: unsigned, bad signature, unknown platform certificate or undecryptable) and was refused. WeChat may have used the code: do not send it again, ask the user to tap the button again; check WX_API_PLATFORM_CERT_FILE and WX_API_PLATFORM_CERT_SN."
	// msgMayBeUsed ends the message of an error after an attempt that
	// WeChat answered -1 (wxphone.ErrCodeMayBeUsed).
	msgMayBeUsed = " An earlier attempt may have used the code (WeChat answered -1): retrying with the same code is safe, and answers outcome_unknown if WeChat did use it."
)

// classify maps an error from the service to its answer. The order
// matters: an outcome-unknown error may wrap a 40029 or a timeout, and must
// be reported as such; token failures may wrap rate-limit or busy errcodes
// of the token endpoint.
func classify(err error) *apiError {
	e := classifyCause(err)
	if e.code != CodeOutcomeUnknown && errors.Is(err, wxphone.ErrCodeMayBeUsed) {
		e.msg += msgMayBeUsed
	}
	return e
}

func classifyCause(err error) *apiError {
	var ae *wxphone.APIError
	hasAPI := errors.As(err, &ae)
	withWeChat := func(e *apiError) *apiError {
		if hasAPI {
			e.errcode, e.rid = ae.ErrCode, ae.RID
		}
		e.cause = err
		return e
	}
	var ie *wxphone.InputError
	switch {
	case errors.Is(err, wxphone.ErrOutcomeUnknown):
		status := http.StatusBadGateway
		if wxphone.IsTimeout(err) {
			status = http.StatusGatewayTimeout
		}
		msg := msgOutcomeUnknown
		if errors.Is(err, wxphone.ErrAnswerUnverified) {
			msg = msgUnverified
		}
		return withWeChat(newError(status, CodeOutcomeUnknown, msg))
	case errors.Is(err, service.ErrForeignReplay):
		return withWeChat(newError(http.StatusConflict, CodeCodeAlreadyUsed,
			"This code was already exchanged by another caller (API key, appid or openid). Ask the user to tap the button again."))
	case errors.Is(err, wxphone.ErrTokenStillValid):
		return withWeChat(newError(http.StatusConflict, CodeTokenStillValid,
			"WeChat still accepts this access token, so it was not replaced. Keep using it; report it again only after WeChat rejects it (40001, 40014, 42001)."))
	case errors.Is(err, service.ErrInFlight):
		return withWeChat(newError(http.StatusGatewayTimeout, CodeUpstreamTimeout, msgInFlight))
	case errors.Is(err, wxphone.ErrClosed):
		return withWeChat(newError(http.StatusServiceUnavailable, CodeShuttingDown, "This instance is shutting down; this request did not send the code. Retry on another instance with the same code."))
	case errors.As(err, &ie):
		e := newError(http.StatusBadRequest, CodeInvalidRequest, "invalid "+ie.Field+": "+ie.Reason)
		if ie.Field == "code" {
			e.code, e.msg = CodeMalformedCode, "The code is not a valid getPhoneNumber code ("+ie.Reason+"); it was not sent to WeChat."
		}
		return withWeChat(e)
	case errors.Is(err, wxphone.ErrInvalidInput):
		return withWeChat(newError(http.StatusBadRequest, CodeInvalidRequest, "invalid input"))
	case errors.Is(err, service.ErrAppRequired):
		return withWeChat(newError(http.StatusBadRequest, CodeAppIDRequired, "Several Mini Programs are served: name one with \"appid\"."))
	case errors.Is(err, service.ErrUnknownApp):
		return withWeChat(newError(http.StatusBadRequest, CodeUnknownAppID, "This service does not serve that appid."))
	case errors.Is(err, service.ErrUnresolved):
		e := withWeChat(newError(http.StatusServiceUnavailable, CodeStoreUnavailable, "This instance cannot reach the shared replay store, and another instance may hold this code's answer. Retry with the same code shortly: the answer is kept."))
		e.retryAfter = time.Second
		return e
	case errors.Is(err, service.ErrStore):
		return withWeChat(newError(http.StatusServiceUnavailable, CodeStoreUnavailable, "The replay store is unavailable; this request did not send the code. Retrying with the same code is safe."))
	case isTokenFailure(err):
		e := withWeChat(newError(http.StatusServiceUnavailable, CodeTokenUnavailable, "No usable WeChat access token right now; this request did not send the code. Retry later with the same code."))
		if d, ok := wxphone.RetryAfter(err); ok {
			e.retryAfter = d
		}
		return e
	case errors.Is(err, wxphone.ErrAPISecurityConfig):
		return withWeChat(newError(http.StatusServiceUnavailable, CodeAPISecurityMisconfigured,
			"WeChat refused the request: the API security mode is misconfigured (errcode "+strconv.Itoa(ae.ErrCode)+"): "+
				wxphone.APISecuritySettings(ae.ErrCode)+". WeChat refused this request before reading it, so it did not use the code: retry with the same code after fixing the configuration."))
	case errors.Is(err, wxphone.ErrClockSkew):
		return withWeChat(newError(http.StatusServiceUnavailable, CodeClockSkew,
			"WeChat refused the request's timestamp (errcode 40240, clock skew): check this machine's clock (NTP). WeChat refused this request before reading it, so it did not use the code."))
	case errors.Is(err, wxphone.ErrInvalidCode):
		return withWeChat(newError(http.StatusUnprocessableEntity, CodeInvalidCode, "WeChat refused the code: it does not exist, expired or was already used. Ask the user to tap the button again."))
	case errors.Is(err, wxphone.ErrAppIDMismatch):
		return withWeChat(newError(http.StatusUnprocessableEntity, CodeAppIDMismatch, "The code was issued to another Mini Program than the one named."))
	case errors.Is(err, wxphone.ErrRateLimited):
		e := withWeChat(newError(http.StatusTooManyRequests, CodeWeChatRateLimited, "WeChat's per-minute limit (errcode 45011) was reached. Retry with the same code after the delay in Retry-After."))
		e.retryAfter = time.Minute
		if d, ok := wxphone.RetryAfter(err); ok {
			e.retryAfter = d
		}
		return e
	case errors.Is(err, wxphone.ErrSystemBusy):
		return withWeChat(newError(http.StatusBadGateway, CodeWeChatBusy, "WeChat is busy (errcode -1) after one retry. Retry shortly with the same code."))
	case errors.Is(err, wxphone.ErrWatermarkMismatch):
		return withWeChat(newError(http.StatusBadGateway, CodeWatermarkMismatch, "WeChat's answer belongs to another Mini Program and was refused."))
	case wxphone.IsTimeout(err), errors.Is(err, context.Canceled):
		return withWeChat(newError(http.StatusGatewayTimeout, CodeUpstreamTimeout, msgTimeout))
	case errors.Is(err, wxphone.ErrUpstream), errors.Is(err, wxphone.ErrMalformedResponse), hasAPI:
		return withWeChat(newError(http.StatusBadGateway, CodeUpstreamError, "WeChat refused the request (an unexpected status or errcode), or it could not be sent. Retry later with the same code."))
	}
	return withWeChat(newError(http.StatusInternalServerError, CodeInternalError, "Internal error."))
}

// classifyToken maps an error of the token routes: the same codes as
// classify, with messages for a token client (there is no code there to
// speak of).
func classifyToken(err error) *apiError {
	e := classify(err)
	switch e.code {
	case CodeTokenUnavailable:
		e.msg = "No usable WeChat access token right now (WeChat refused the fetch, a cool-down, or the force-refresh budget is spent). Keep using a token you hold until it expires, retry after the delay in Retry-After, and do not fetch from WeChat yourself."
	case CodeUpstreamTimeout:
		e.msg = "The deadline passed before a token could be had. Retry shortly."
	case CodeShuttingDown:
		e.msg = "This instance is shutting down; retry on another one."
	case CodeWeChatRateLimited:
		e.msg = "WeChat's per-minute limit was reached. Retry after the delay in Retry-After."
	case CodeWeChatBusy, CodeUpstreamError, CodeOutcomeUnknown:
		e.code, e.status = CodeUpstreamError, http.StatusBadGateway
		e.msg = "WeChat failed while a token was being fetched. Retry later."
	}
	return e
}

// isTokenFailure reports errors about the access token rather than the
// code: the token sentinels, or any failure of a token-endpoint call.
func isTokenFailure(err error) bool {
	if errors.Is(err, wxphone.ErrTokenUnavailable) || errors.Is(err, wxphone.ErrTokenFetchRefused) ||
		errors.Is(err, wxphone.ErrTokenInvalid) || errors.Is(err, wxphone.ErrQuotaExhausted) {
		return true
	}
	switch errOp(err) {
	case wxphone.OpStableToken, wxphone.OpToken:
		return true
	}
	return false
}

// errOp returns the WeChat operation a typed library error names.
func errOp(err error) string {
	var ae *wxphone.APIError
	var te *wxphone.TransportError
	var he *wxphone.HTTPError
	var de *wxphone.DecodeError
	switch {
	case errors.As(err, &ae):
		return ae.Op
	case errors.As(err, &te):
		return te.Op
	case errors.As(err, &he):
		return he.Op
	case errors.As(err, &de):
		return de.Op
	}
	return ""
}

// retryAfterSeconds renders a Retry-After value: whole seconds, rounded up,
// at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
