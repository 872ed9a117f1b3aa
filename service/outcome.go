package service

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/jsonscan"
)

// outcome is what the replay store keeps (sealed) for a code: the phone
// data, or the final error. It is stored only for outcomes that a second
// upstream call could not improve on.
type outcome struct {
	Phone *phoneData `json:"p,omitempty"`
	Err   *errData   `json:"e,omitempty"`
}

type phoneData struct {
	PhoneNumber     string `json:"n"`
	PurePhoneNumber string `json:"pn"`
	CountryCode     string `json:"cc"`
	AppID           string `json:"a"`
	Timestamp       int64  `json:"t"`
}

type errData struct {
	Kind    string `json:"k"` // kindOutcomeUnknown, kindAPI, kindWatermark
	ErrCode int    `json:"c,omitempty"`
	ErrMsg  string `json:"m,omitempty"`
	RID     string `json:"r,omitempty"`
	Got     string `json:"g,omitempty"` // watermark appid
	Want    string `json:"w,omitempty"`
	// Unverified is the reason WeChat's answer failed verification (API
	// security mode), for an outcome_unknown.
	Unverified string `json:"v,omitempty"`
}

const (
	kindOutcomeUnknown = "outcome_unknown"
	kindAPI            = "api"
	kindWatermark      = "watermark"
)

// toOutcome converts an exchange's result; final reports whether it is to
// be stored (otherwise the claim is released so the code can be retried).
func toOutcome(info *wxphone.PhoneInfo, err error) (out outcome, final bool) {
	if err == nil {
		return outcome{Phone: &phoneData{
			PhoneNumber: info.PhoneNumber.Reveal(), PurePhoneNumber: info.PurePhoneNumber.Reveal(),
			CountryCode: info.CountryCode, AppID: info.Watermark.AppID, Timestamp: info.Watermark.Timestamp,
		}}, true
	}
	return errOutcome(err)
}

// errOutcome is toOutcome for a failure (its own function so that a
// success allocates nothing for the errors.As targets).
func errOutcome(err error) (out outcome, final bool) {
	var ae *wxphone.APIError
	var we *wxphone.WatermarkError
	switch {
	case errors.Is(err, wxphone.ErrOutcomeUnknown):
		e := &errData{Kind: kindOutcomeUnknown}
		if errors.As(err, &ae) {
			e.ErrCode, e.ErrMsg, e.RID = ae.ErrCode, ae.ErrMsg, ae.RID
		}
		var ve *wxphone.VerificationError
		if errors.As(err, &ve) {
			e.Unverified = ve.Reason
		}
		return outcome{Err: e}, true
	case errors.As(err, &we):
		return outcome{Err: &errData{Kind: kindWatermark, Got: we.Got, Want: we.Want}}, true
	case errors.As(err, &ae) && (errors.Is(err, wxphone.ErrInvalidCode) || errors.Is(err, wxphone.ErrAppIDMismatch)):
		return outcome{Err: &errData{Kind: kindAPI, ErrCode: ae.ErrCode, ErrMsg: ae.ErrMsg, RID: ae.RID}}, true
	}
	return outcome{}, false
}

// encode is json.Marshal(o), written by hand for the usual outcome (a
// number whose strings encoding/json copies as they are): the reflective
// encoder was 1 % of the service's CPU. FuzzOutcomeEncode checks the two
// agree byte for byte; the stored format is unchanged.
func (o outcome) encode() ([]byte, error) {
	p := o.Phone
	if p == nil || o.Err != nil || !jsonscan.Plain(p.PhoneNumber) || !jsonscan.Plain(p.PurePhoneNumber) || !jsonscan.Plain(p.CountryCode) || !jsonscan.Plain(p.AppID) {
		return json.Marshal(o)
	}
	b := make([]byte, 0, 64+len(p.PhoneNumber)+len(p.PurePhoneNumber)+len(p.CountryCode)+len(p.AppID))
	b = append(b, `{"p":{"n":"`...)
	b = append(b, p.PhoneNumber...)
	b = append(b, `","pn":"`...)
	b = append(b, p.PurePhoneNumber...)
	b = append(b, `","cc":"`...)
	b = append(b, p.CountryCode...)
	b = append(b, `","a":"`...)
	b = append(b, p.AppID...)
	b = append(b, `","t":`...)
	b = strconv.AppendInt(b, p.Timestamp, 10)
	return append(b, "}}"...), nil
}

// result rebuilds the typed result a replay returns.
func (o outcome) result() (*wxphone.PhoneInfo, error) {
	if o.Phone != nil {
		return &wxphone.PhoneInfo{
			PhoneNumber: wxphone.PhoneNumber(o.Phone.PhoneNumber), PurePhoneNumber: wxphone.PhoneNumber(o.Phone.PurePhoneNumber),
			CountryCode: o.Phone.CountryCode, Watermark: wxphone.Watermark{AppID: o.Phone.AppID, Timestamp: o.Phone.Timestamp},
		}, nil
	}
	e := o.Err
	if e == nil {
		return nil, &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: errors.New("empty stored outcome")}
	}
	switch e.Kind {
	case kindAPI:
		return nil, &wxphone.APIError{Op: wxphone.OpPhoneNumber, ErrCode: e.ErrCode, ErrMsg: e.ErrMsg, RID: e.RID}
	case kindWatermark:
		return nil, &wxphone.WatermarkError{Want: e.Want, Got: e.Got}
	}
	var cause error = errors.New("an earlier exchange of this code lost WeChat's answer")
	switch {
	case e.ErrCode != 0:
		cause = &wxphone.APIError{Op: wxphone.OpPhoneNumber, ErrCode: e.ErrCode, ErrMsg: e.ErrMsg, RID: e.RID}
	case e.Unverified != "":
		cause = &wxphone.VerificationError{Op: wxphone.OpPhoneNumber, Reason: e.Unverified}
	}
	return nil, &wxphone.OutcomeUnknownError{Op: wxphone.OpPhoneNumber, Err: cause}
}

// resultClass is the bounded metric label of an exchange result.
func resultClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, wxphone.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, wxphone.ErrInvalidCode):
		return "invalid_code"
	case errors.Is(err, wxphone.ErrAppIDMismatch):
		return "appid_mismatch"
	case errors.Is(err, wxphone.ErrWatermarkMismatch):
		return "watermark_mismatch"
	case errors.Is(err, wxphone.ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, wxphone.ErrTokenUnavailable), errors.Is(err, wxphone.ErrTokenFetchRefused), errors.Is(err, wxphone.ErrTokenInvalid):
		return "token_unavailable"
	case errors.Is(err, wxphone.ErrSystemBusy):
		return "busy"
	case wxphone.IsTimeout(err):
		return "timeout"
	case errors.Is(err, wxphone.ErrUpstream), errors.Is(err, wxphone.ErrMalformedResponse):
		return "upstream_error"
	}
	return "error"
}
