package wxphone

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The token and jscode2session answers are decoded by the same
// decodeAnswer as the exchange's (FuzzDecodePhoneResponse), then checked by
// tokenResp.token and by Code2Session. These targets drive those checks with
// arbitrary bodies and assert properties of every outcome, not only the
// absence of a panic: a success is complete and in range, a failure is one
// of the typed errors, a DecodeError has one of the fixed shapes (so it can
// quote nothing from the body), an APIError's message is bounded and
// scrubbed of the secret and the code, and the decoded values never print.

// decodeErrText is every shape a *DecodeError's text can have: fixed
// reasons, and decoder errors reduced to a field path of our own structs, a
// JSON kind or an offset.
var decodeErrText = regexp.MustCompile(`^wxphone: (getuserphonenumber|stable_token|token|jscode2session): malformed response: ` +
	`(empty body|HTML or XML instead of JSON|not a JSON object|invalid JSON|truncated JSON|unexpected field type|` +
	`errcode 0 without access_token|expires_in out of range|errcode 0 without openid or session_key|` +
	`errcode 0 without phone_info|phone_info without a phone number|body larger than 1 MiB)` +
	`(: (field "[A-Za-z_.]*": cannot decode a JSON [a-z ]+|syntax error at offset [0-9]+|cannot decode))?$`)

// checkUpstreamError asserts the properties every decoding failure has;
// sensitive are the values the request carried (secret, code).
func checkUpstreamError(t *testing.T, op string, err error, sensitive ...string) {
	t.Helper()
	var ae *APIError
	var de *DecodeError
	switch {
	case errors.As(err, &ae):
		if ae.ErrCode == 0 || ae.Op != op {
			t.Fatalf("APIError %+v for op %s", ae, op)
		}
		if n := len([]rune(ae.ErrMsg)); n > maxErrMsg+1 {
			t.Fatalf("errmsg of %d characters", n)
		}
		for _, r := range ae.ErrMsg {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("errmsg keeps a control character: %q", ae.ErrMsg)
			}
		}
		for _, s := range sensitive {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes a value the request carried: %q", err)
			}
		}
		if ae.RID != "" && !strings.Contains(ae.ErrMsg, ae.RID) {
			t.Fatalf("rid %q is not from errmsg %q", ae.RID, ae.ErrMsg)
		}
	case errors.As(err, &de):
		if !errors.Is(err, ErrMalformedResponse) {
			t.Fatalf("DecodeError without ErrMalformedResponse: %v", err)
		}
		if text := de.Error(); !decodeErrText.MatchString(text) {
			t.Fatalf("DecodeError of an unexpected shape (could it quote the body?): %q", text)
		}
	default:
		t.Fatalf("untyped error %T %v", err, err)
	}
}

// assertNotRendered fails if any rendering of v contains secret. baseline
// is the same value without the secret: a secret that its renderings show
// anyway (a fuzzed value equal to part of a field name, say) proves
// nothing and is skipped, as are values too short to search for.
func assertNotRendered(t *testing.T, what string, v, baseline any, secret string) {
	t.Helper()
	if len(secret) < 6 {
		return
	}
	for _, r := range renderings(t, baseline) {
		if strings.Contains(r, secret) || strings.Contains(r, fmt.Sprintf("%x", secret)) {
			return
		}
	}
	for _, r := range renderings(t, v) {
		if strings.Contains(r, secret) {
			t.Fatalf("a rendering of the %s shows it: %s", what, r)
		}
		// A hex or quoted rendering of the value is a leak too.
		if strings.Contains(r, fmt.Sprintf("%x", secret)) || strings.Contains(r, strings.Trim(fmt.Sprintf("%q", secret), `"`)) {
			t.Fatalf("a rendering of the %s shows it encoded: %s", what, r)
		}
	}
}

const (
	fuzzSecret = "FUZZ-AppSecret-0123456789abcdef"
	fuzzJSCode = "FUZZ-js-code-0123456789"
)

var fuzzSent = time.Unix(1_700_000_000, 0)

// decodeTokenAnswer is what fetchStable and fetchClassic do with an HTTP 200
// answer.
func decodeTokenAnswer(op string, body []byte) (Token, error) {
	var r tokenResp
	if err := decodeAnswer(op, body, &r, []string{fuzzSecret}); err != nil {
		return Token{}, err
	}
	return r.token(op, fuzzSent)
}

func FuzzDecodeTokenResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"86_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIjKlMnOpQrStUvWxYz","expires_in":7200}`,
		`{"errcode":0,"errmsg":"ok","access_token":"86_tok","expires_in":"7200"}`,
		`{"errcode":40125,"errmsg":"invalid appsecret rid: 6566d6c1-0e5c6c4b-3a6c0f3f"}`,
		`{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 6566d6c1-0e5c6c4b-3a6c0f3f"}`,
		`{"errcode":-1,"errmsg":"system error"}`,
		`{"access_token":"","expires_in":7200}`,
		`{"access_token":"86_tok","expires_in":0}`,
		`{"access_token":"86_tok","expires_in":1e3}`,
		`<html>502 Bad Gateway</html>`,
		`{"access_token":"86_tok"`,
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, classic bool, body []byte) {
		op := OpStableToken
		if classic {
			op = OpToken
		}
		tok, err := decodeTokenAnswer(op, body)
		if (tok.Value == "") == (err == nil) {
			t.Fatalf("decode = %v, %v: want exactly one of a token and an error", tok, err)
		}
		if err != nil {
			checkUpstreamError(t, op, err, fuzzSecret)
			var ae *APIError
			if errors.As(err, &ae) && errors.Is(err, ErrTokenFetchRefused) != ruleOf(ae.ErrCode).refusal {
				t.Fatalf("errcode %d: ErrTokenFetchRefused = %v", ae.ErrCode, errors.Is(err, ErrTokenFetchRefused))
			}
			if errors.Is(err, ErrInvalidCode) || errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("a token fetch error matches a business sentinel: %v", err)
			}
			return
		}
		if left := tok.ExpiresAt.Sub(fuzzSent); left <= 0 || left > maxExpiresIn*time.Second {
			t.Fatalf("token accepted with %v of life", left)
		}
		base := Token{Value: "x", ExpiresAt: tok.ExpiresAt}
		assertNotRendered(t, "access token", tok, base, tok.Value)
		assertNotRendered(t, "access token", &tok, &base, tok.Value)
	})
}

// decodeSessionAnswer is what Code2Session does with an HTTP 200 answer.
func decodeSessionAnswer(body []byte) (*Session, error) {
	var r sessionResp
	if err := decodeAnswer(OpCode2Session, body, &r, []string{fuzzJSCode, fuzzSecret}); err != nil {
		return nil, err
	}
	if r.OpenID == "" || r.SessionKey == "" {
		return nil, &OutcomeUnknownError{Op: OpCode2Session, Err: &DecodeError{Op: OpCode2Session, Reason: "errcode 0 without openid or session_key"}}
	}
	s := r.Session
	return &s, nil
}

func FuzzDecodeSessionResponse(f *testing.F) {
	for _, s := range []string{
		`{"openid":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","session_key":"tiihtNczf5v6AKRyjwEUhQ==","unionid":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA"}`,
		`{"errcode":0,"errmsg":"ok","openid":"oX","session_key":"tiihtNczf5v6AKRyjwEUhQ=="}`,
		`{"errcode":40029,"errmsg":"invalid code, rid: 6566d6c1-0e5c6c4b-3a6c0f3f"}`,
		`{"errcode":40163,"errmsg":"code been used, rid: 6566d6c1-0e5c6c4b-3a6c0f3f"}`,
		`{"errcode":40029,"errmsg":"invalid code FUZZ-js-code-0123456789 secret FUZZ-AppSecret-0123456789abcdef"}`,
		`{"openid":"oX"}`,
		`{"openid":"oX","session_key":42}`,
		`{"openid":"oX","session_key":"tiihtNczf5v6AKRyjwEUhQ==","openid":"oY"}`,
		`{"errcode":"45011","errmsg":"api minute-quota reach limit"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := decodeSessionAnswer(body)
		if (s == nil) == (err == nil) {
			t.Fatalf("decode = %v, %v: want exactly one of a session and an error", s, err)
		}
		if err != nil {
			checkUpstreamError(t, OpCode2Session, err, fuzzJSCode, fuzzSecret)
			var de *DecodeError
			if errors.As(err, &de) && strings.HasPrefix(de.Reason, "errcode 0") && !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("a success without data is not outcome-unknown: %v", err)
			}
			return
		}
		if s.OpenID == "" || s.SessionKey == "" {
			t.Fatalf("accepted an incomplete session %+v", s)
		}
		key := s.SessionKey.Reveal()
		base := *s
		base.SessionKey = "x"
		assertNotRendered(t, "session_key", s, &base, key)
		assertNotRendered(t, "session_key", *s, base, key)
		assertNotRendered(t, "session_key", s.SessionKey, base.SessionKey, key)
	})
}
