package wxphone

import (
	"context"
	"errors"
	"net/url"
)

// Session is the result of Code2Session. SessionKey never prints; never
// send it to the Mini Program.
type Session struct {
	OpenID     string     `json:"openid"`
	SessionKey SessionKey `json:"session_key"`
	UnionID    string     `json:"unionid,omitempty"`
}

type sessionResp struct {
	envelope
	Session
}

// Code2Session exchanges a wx.login code (GET /sns/jscode2session) for the
// user's openid, session_key and, when the app is bound to an Open Platform
// account, unionid. The same resend rules as PhoneNumber apply; the secret
// travels in the query string and never appears in an error.
func (c *Client) Code2Session(ctx context.Context, jsCode string) (*Session, error) {
	if err := validateCode("js_code", jsCode); err != nil {
		return nil, err
	}
	if c.secret == "" {
		return nil, errors.New("wxphone: Code2Session needs Config.Secret")
	}
	q := url.Values{
		"appid": {c.appID}, "secret": {c.secret.Reveal()},
		"js_code": {jsCode}, "grant_type": {"authorization_code"},
	}.Encode()
	var st attempts
	for {
		var r sessionResp
		err := c.up.call(ctx, epCode2Session, q, nil, &r, jsCode, c.secret.Reveal())
		if err == nil {
			if r.OpenID == "" || r.SessionKey == "" {
				return nil, &OutcomeUnknownError{Op: OpCode2Session, Err: &DecodeError{Op: OpCode2Session, Reason: "errcode 0 without openid or session_key"}}
			}
			s := r.Session
			return &s, nil
		}
		if retry, ferr := c.decide(ctx, OpCode2Session, &st, err); !retry {
			return nil, ferr
		}
	}
}
