package wxphone

import (
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// maxExpiresIn bounds a believable expires_in; WeChat sends at most 7200.
const maxExpiresIn = 86400

type tokenResp struct {
	envelope
	AccessToken string  `json:"access_token"`
	ExpiresIn   flexInt `json:"expires_in"`
}

type stableTokenReq struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// fetchStable calls POST /cgi-bin/stable_token.
func (u *upstream) fetchStable(ctx context.Context, secret Secret, force bool) (Token, error) {
	body, err := json.Marshal(stableTokenReq{GrantType: "client_credential", AppID: u.appID, Secret: secret.Reveal(), ForceRefresh: force})
	if err != nil {
		return Token{}, err
	}
	var r tokenResp
	sent := time.Now()
	if err := u.call(ctx, epStableToken, "", body, &r, secret.Reveal()); err != nil {
		return Token{}, err
	}
	return r.token(OpStableToken, sent)
}

// fetchClassic calls GET /cgi-bin/token. Every call invalidates the
// previous classic token five minutes later.
func (u *upstream) fetchClassic(ctx context.Context, secret Secret) (Token, error) {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {u.appID}, "secret": {secret.Reveal()}}
	var r tokenResp
	sent := time.Now()
	if err := u.call(ctx, epToken, q.Encode(), nil, &r, secret.Reveal()); err != nil {
		return Token{}, err
	}
	return r.token(OpToken, sent)
}

// token turns a decoded answer into a Token whose expiry counts from when
// the request was sent: WeChat issued the token no earlier, so the expiry
// is never later than WeChat's own, however long the answer took.
func (r *tokenResp) token(op string, sent time.Time) (Token, error) {
	if r.AccessToken == "" {
		return Token{}, &DecodeError{Op: op, Reason: "errcode 0 without access_token"}
	}
	if r.ExpiresIn <= 0 || r.ExpiresIn > maxExpiresIn {
		return Token{}, &DecodeError{Op: op, Reason: "expires_in out of range"}
	}
	return Token{Value: r.AccessToken, ExpiresAt: sent.Add(time.Duration(r.ExpiresIn) * time.Second)}, nil
}

// domainIPResp is the answer of GET /cgi-bin/get_api_domain_ip.
type domainIPResp struct {
	envelope
	IPList []string `json:"ip_list"`
}

// checkToken asks WeChat whether it accepts token, with GET
// /cgi-bin/get_api_domain_ip, the cheapest call that needs a valid token
// and changes nothing. nil means WeChat accepted it; an *APIError matching
// ErrTokenInvalid means WeChat rejected it; anything else is inconclusive.
func (u *upstream) checkToken(ctx context.Context, token Secret) error {
	q := url.Values{"access_token": {token.Reveal()}}
	var r domainIPResp
	if err := u.call(ctx, epAPIDomainIP, q.Encode(), nil, &r, token.Reveal()); err != nil {
		return err
	}
	if len(r.IPList) == 0 {
		return &DecodeError{Op: OpAPIDomainIP, Reason: "errcode 0 without ip_list"}
	}
	return nil
}
