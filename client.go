package wxphone

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"time"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/internal/wait"
)

// Client exchanges codes with WeChat for one Mini Program. It is safe for
// concurrent use. Create it with New and Close it when done.
type Client struct {
	appID  string
	secret Secret
	up     *upstream
	tokens TokenSource
	owned  *TokenManager // closed by Close; nil when the caller supplied TokenSource
	log    *slog.Logger

	noOpenID bool // Config.NoOpenIDBinding
}

// tokenQuery is the query string that carries an access token.
func tokenQuery(tok string) string { return "access_token=" + url.QueryEscape(tok) }

// New validates cfg and returns a Client. Unless cfg.TokenSource is set, the
// Client owns a TokenManager (stable tokens, refreshed in the background)
// built from cfg. New makes no network call; see Client.Warm.
func New(cfg Config) (*Client, error) {
	tc := cfg.tokenConfig()
	up, log, err := tc.newUpstream()
	if err != nil {
		return nil, err
	}
	if k := cfg.APISecurity; k != nil {
		if k.AppID != cfg.AppID {
			return nil, errors.New("wxphone: APISecurity.AppID must be the Config's AppID")
		}
		if up.sec, err = apisec.NewClient(*k, nil); err != nil {
			return nil, err
		}
	}
	c := &Client{appID: cfg.AppID, secret: cfg.Secret, up: up, tokens: cfg.TokenSource, log: log, noOpenID: cfg.NoOpenIDBinding}
	if c.tokens == nil {
		// The manager shares the Client's HTTP stack: one transport, one
		// connection pool for exchanges and token fetches.
		m, err := newTokenManager(up, tc)
		if err != nil {
			return nil, err
		}
		c.tokens, c.owned = m, m
	}
	return c, nil
}

// AppID returns the Mini Program's appid.
func (c *Client) AppID() string { return c.appID }

// TokenSource returns the source of the Client's access tokens (a
// *TokenManager unless Config.TokenSource was set).
func (c *Client) TokenSource() TokenSource { return c.tokens }

// Warm obtains a token now so that the first exchange does not wait for one.
func (c *Client) Warm(ctx context.Context) error {
	_, err := c.tokens.Token(ctx)
	return err
}

// Close stops the Client's own TokenManager, if any.
func (c *Client) Close() error {
	if c.owned != nil {
		return c.owned.Close()
	}
	return nil
}

// PhoneNumber exchanges a getPhoneNumber code for the user's phone number.
//
// The code is validated first (see ValidateCode); a bad one is refused with
// an *InputError and never sent. The code is resent only when it cannot have
// been used: when nothing was written to the connection (dial, DNS, TLS), once
// after a token error (the token is invalidated if still current and
// refreshed), and once, after a jittered pause, after errcode -1. When the
// request may have reached WeChat and the answer was lost (a timeout or reset
// after writing, HTTP 5xx, a truncated answer) the error matches
// ErrOutcomeUnknown and the code must not be sent again. So does a 40029
// that follows a resend. 45011 is returned at once (ErrRateLimited).
//
// The result's watermark must name this Client's appid, else the result is
// refused with a *WatermarkError. A nil result always comes with a non-nil
// error.
func (c *Client) PhoneNumber(ctx context.Context, code string) (*PhoneInfo, error) {
	return c.Exchange(ctx, PhoneRequest{Code: Secret(code)})
}

// PhoneRequest is an exchange with its options; see Client.Exchange.
type PhoneRequest struct {
	// Code is the getPhoneNumber (or getRealtimePhoneNumber) code. Like
	// every secret it never prints.
	Code Secret
	// OpenID, when set, is the user the caller expects the code to belong
	// to. It is sent to WeChat (getuserphonenumber's optional openid),
	// which then checks that the code was issued to that user and answers
	// an error if not, unless Config.NoOpenIDBinding is set. WeChat does
	// not document the errcode of a mismatch: it arrives as an *APIError
	// with its errcode and rid.
	OpenID string
}

// Exchange is PhoneNumber with options (see PhoneRequest). Codes from
// getRealtimePhoneNumber (手机号实时验证) are exchanged the same way: WeChat
// answers them at the same endpoint with the same data.
func (c *Client) Exchange(ctx context.Context, r PhoneRequest) (*PhoneInfo, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	code := r.Code.Reveal()
	openid := r.OpenID
	if c.noOpenID {
		openid = ""
	}
	var st attempts
	info, err := c.phoneNumber(ctx, code, openid, &st)
	if err != nil && st.busyAnswered && !errors.Is(err, ErrCodeMayBeUsed) {
		// An attempt was answered -1, which WeChat may send after using
		// the code: whatever ended the exchange, say so.
		err = &CodeMayBeUsedError{Op: OpPhoneNumber, Err: err}
	}
	return info, err
}

// phoneNumber runs the attempts of PhoneNumber, recording in st what they
// did with the code.
func (c *Client) phoneNumber(ctx context.Context, code, openid string, st *attempts) (*PhoneInfo, error) {
	body := phoneBody(code, openid)
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	for {
		var r phoneResp
		// getuserphonenumber supports the API security mode ("支持加密请求").
		err := c.up.callSealed(ctx, epPhoneNumber, tokenQuery(tok.Value), body, &r, code, tok.Value)
		if err == nil {
			return c.checkPhone(r.PhoneInfo.info())
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Is(ErrTokenInvalid) && !st.tokenRetried {
			inv, ok := c.tokens.(TokenInvalidator)
			if !ok {
				return nil, err
			}
			st.tokenRetried, st.resent = true, true
			c.log.Info("access token rejected; invalidating and retrying once", "errcode", ae.ErrCode, "rid", ae.RID, "token", tok)
			if tok, err = inv.Invalidate(ctx, tok.Value); err != nil {
				return nil, err
			}
			continue
		}
		if retry, ferr := c.decide(ctx, OpPhoneNumber, st, err); !retry {
			return nil, ferr
		}
	}
}

func (c *Client) checkPhone(p *PhoneInfo) (*PhoneInfo, error) {
	switch {
	case p == nil:
		return nil, &OutcomeUnknownError{Op: OpPhoneNumber, Err: &DecodeError{Op: OpPhoneNumber, Reason: "errcode 0 without phone_info"}}
	case p.PhoneNumber == "" && p.PurePhoneNumber == "":
		return nil, &OutcomeUnknownError{Op: OpPhoneNumber, Err: &DecodeError{Op: OpPhoneNumber, Reason: "phone_info without a phone number"}}
	case p.Watermark.AppID != c.appID:
		return nil, &WatermarkError{Want: c.appID, Got: p.Watermark.AppID}
	}
	return p, nil
}

type phoneResp struct {
	envelope
	PhoneInfo *wirePhoneInfo `json:"phone_info"`
}

// phoneBody builds {"code":"…"} or {"code":"…","openid":"…"} for a
// validated code and openid (printable ASCII).
func phoneBody(code, openid string) []byte {
	b := make([]byte, 0, len(code)+len(openid)+24)
	b = append(b, `{"code":"`...)
	b = appendASCIIJSON(b, code)
	if openid != "" {
		b = append(b, `","openid":"`...)
		b = appendASCIIJSON(b, openid)
	}
	return append(b, `"}`...)
}

// appendASCIIJSON appends printable ASCII escaped for a JSON string.
func appendASCIIJSON(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return b
}

// attempts tracks what an exchange has already done with its code.
type attempts struct {
	unsent       int  // retries after failures where nothing was sent
	busyAnswered bool // an attempt was answered -1 (it may have used the code)
	busyRetried  bool // resent once after errcode -1
	tokenRetried bool // resent once after a token error
	resent       bool // the code went to WeChat more than once
}

// decide classifies a failed attempt: retry (the code cannot have been used)
// or the error to return.
func (c *Client) decide(ctx context.Context, op string, st *attempts, err error) (retry bool, _ error) {
	var te *TransportError
	var ae *APIError
	var he *HTTPError
	switch {
	case errors.As(err, &te) && !te.Sent:
		if ctx.Err() != nil || st.unsent >= 2 {
			return false, err
		}
		st.unsent++
		return sleepCtx(ctx, jitter(50*time.Millisecond, 150*time.Millisecond)), err
	case errors.As(err, &ae):
		busy := ae.ErrCode == ErrcodeSystemBusy
		st.busyAnswered = st.busyAnswered || busy
		switch {
		case busy && !st.busyRetried:
			st.busyRetried = true
			if !sleepCtx(ctx, jitter(100*time.Millisecond, 300*time.Millisecond)) {
				return false, err
			}
			st.resent = true
			c.log.Info("WeChat busy (-1); retrying once", "op", op, "rid", ae.RID)
			return true, nil
		case st.resent && ae.Is(ErrInvalidCode):
			// The first send may have used the code.
			return false, &OutcomeUnknownError{Op: op, Err: err}
		}
		return false, err
	case errors.As(err, &he) && he.StatusCode < 500:
		return false, err // refused before processing (a proxy, a wrong path)
	default:
		// Sent and lost, 5xx, or an undecodable answer: WeChat may have
		// used the code.
		return false, &OutcomeUnknownError{Op: op, Err: err}
	}
}

func jitter(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo+1) } // #nosec G404 -- jitter, not a secret

// sleepCtx waits d unless ctx ends first or its deadline leaves no time for
// another attempt after the wait; it reports whether the wait completed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d+50*time.Millisecond {
		return false
	}
	return wait.Sleep(ctx, d) == nil
}
