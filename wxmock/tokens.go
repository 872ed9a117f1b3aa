package wxmock

import (
	"crypto/subtle"
	"errors"
	"time"
)

type tokenKind uint8

const (
	kindClassic tokenKind = iota + 1
	kindStable
)

// tokenRec is an issued access token. Its fields change only under
// Server.appMu held for writing.
type tokenRec struct {
	token     string
	app       string
	kind      tokenKind
	expires   time.Time
	invalidAt time.Time // zero: not superseded/revoked; always before expires when set
}

// state returns 0 when the token is usable at now, 40001 when it was
// superseded or revoked, 42001 when it expired.
func (t *tokenRec) state(now time.Time) int {
	if !t.invalidAt.IsZero() && !now.Before(t.invalidAt) {
		return 40001
	}
	if !now.Before(t.expires) {
		return 42001
	}
	return 0
}

// invalidateAt makes the token stop working at at, unless it already stops
// earlier (by invalidation or expiry).
func (t *tokenRec) invalidateAt(at time.Time) {
	if !at.Before(t.expires) {
		return
	}
	if t.invalidAt.IsZero() || at.Before(t.invalidAt) {
		t.invalidAt = at
	}
}

func (t *tokenRec) deadline() time.Time {
	if !t.invalidAt.IsZero() {
		return t.invalidAt
	}
	return t.expires
}

// appState is the per-app token state, guarded by Server.appMu.
type appState struct {
	id     string
	secret string
	sec    *secState // API security mode; nil when not configured

	issued  []*tokenRec // both kinds, in issuance order
	classic *tokenRec   // latest classic token
	stable  *tokenRec   // latest stable token

	classicDay   int64
	classicCount int
	forceDay     int64
	forceCount   int
	lastForce    time.Time // last effective force refresh

	// statistics, reset by ResetStats
	tokenFetches int64
	stableNormal int64
	stableForce  int64
	tokensMinted int64
}

// dayNumber returns the number of the day containing t in Beijing time
// (UTC+8), the zone in which WeChat's daily quotas roll over.
func dayNumber(t time.Time) int64 {
	sec := t.Unix() + 8*3600
	d := sec / 86400
	if sec%86400 < 0 {
		d--
	}
	return d
}

// checkCredentials validates appid and secret like WeChat's token
// endpoints, returning 0 or the errcode. It must be called with appMu held.
func (s *Server) checkCredentials(appid, secret string) (*appState, int) {
	if appid == "" {
		return nil, 41002
	}
	app := s.apps[appid]
	if app == nil {
		return nil, 40013
	}
	if secret == "" {
		return nil, 41004
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(app.secret)) != 1 {
		return nil, 40125
	}
	return app, 0
}

// mintLocked issues a new token of kind for app. appMu must be held for
// writing.
func (s *Server) mintLocked(app *appState, kind tokenKind, now time.Time) *tokenRec {
	s.pruneLocked(app, now)
	var tok string
	for {
		tok = s.newToken()
		if _, dup := s.tokens[tok]; !dup {
			break
		}
	}
	rec := &tokenRec{token: tok, app: app.id, kind: kind, expires: now.Add(s.ttl)}
	s.tokens[tok] = rec
	app.issued = append(app.issued, rec)
	app.tokensMinted++
	return rec
}

// pruneLocked forgets tokens that died more than tokenRetention ago. Tokens
// are issued in order, so dead ones accumulate at the front.
func (s *Server) pruneLocked(app *appState, now time.Time) {
	n := 0
	for n < len(app.issued) && now.Sub(app.issued[n].deadline()) > tokenRetention {
		delete(s.tokens, app.issued[n].token)
		app.issued[n] = nil
		n++
	}
	if n > 0 {
		app.issued = app.issued[n:]
	}
}

// tokenResult is what a token endpoint produced.
type tokenResult struct {
	errcode   int
	token     string
	expiresIn int64
}

// fetchClassic implements GET /cgi-bin/token after parameter extraction.
func (s *Server) fetchClassic(grantType, appid, secret string, now time.Time) tokenResult {
	if grantType != "client_credential" {
		return tokenResult{errcode: 40002}
	}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	app, ec := s.checkCredentials(appid, secret)
	if ec != 0 {
		return tokenResult{errcode: ec}
	}
	day := dayNumber(now)
	if app.classicDay != day {
		app.classicDay, app.classicCount = day, 0
	}
	if app.classicCount >= s.classicLimit {
		return tokenResult{errcode: 45009}
	}
	app.classicCount++
	if prev := app.classic; prev != nil {
		prev.invalidateAt(now.Add(TokenOverlap))
	}
	rec := s.mintLocked(app, kindClassic, now)
	app.classic = rec
	app.tokenFetches++
	return tokenResult{token: rec.token, expiresIn: int64(s.ttl / time.Second)}
}

// fetchStable implements POST /cgi-bin/stable_token after body decoding.
func (s *Server) fetchStable(grantType, appid, secret string, force bool, now time.Time) tokenResult {
	if grantType != "client_credential" {
		return tokenResult{errcode: 40002}
	}
	s.appMu.Lock()
	defer s.appMu.Unlock()
	app, ec := s.checkCredentials(appid, secret)
	if ec != 0 {
		return tokenResult{errcode: ec}
	}
	cur := app.stable
	curUsable := cur != nil && cur.state(now) == 0
	remaining := func(t *tokenRec) int64 { return int64(t.expires.Sub(now) / time.Second) }

	if !force {
		app.stableNormal++
		if curUsable && cur.expires.Sub(now) > TokenOverlap {
			return tokenResult{token: cur.token, expiresIn: remaining(cur)}
		}
		// Last 5 minutes, none yet, or revoked: hand over to a new token;
		// the old one stays valid until its own expiry.
		rec := s.mintLocked(app, kindStable, now)
		app.stable = rec
		return tokenResult{token: rec.token, expiresIn: remaining(rec)}
	}

	if curUsable && !app.lastForce.IsZero() && now.Sub(app.lastForce) < s.forceInterval {
		// Too soon after the previous effective force: no refresh happens.
		app.stableForce++
		return tokenResult{token: cur.token, expiresIn: remaining(cur)}
	}
	day := dayNumber(now)
	if app.forceDay != day {
		app.forceDay, app.forceCount = day, 0
	}
	if app.forceCount >= s.forceLimit {
		return tokenResult{errcode: 45009}
	}
	app.forceCount++
	app.lastForce = now
	for _, t := range app.issued {
		if t.kind == kindStable {
			t.invalidateAt(now)
		}
	}
	rec := s.mintLocked(app, kindStable, now)
	app.stable = rec
	app.stableForce++
	return tokenResult{token: rec.token, expiresIn: remaining(rec)}
}

// checkToken returns the token's appid and 0, or the business-API errcode
// for it (40001 unknown/superseded/revoked, 42001 expired).
func (s *Server) checkToken(tok string, now time.Time) (string, int) {
	s.appMu.RLock()
	rec := s.tokens[tok]
	if rec == nil {
		s.appMu.RUnlock()
		return "", 40001
	}
	app, ec := rec.app, rec.state(now)
	s.appMu.RUnlock()
	return app, ec
}

// tokenApp returns the appid a token was issued to, valid or not, or "".
func (s *Server) tokenApp(tok string) string {
	s.appMu.RLock()
	defer s.appMu.RUnlock()
	if rec := s.tokens[tok]; rec != nil {
		return rec.app
	}
	return ""
}

// RevokeTokens makes every issued token (classic and stable) of appid, or of
// all apps when appid is empty, invalid immediately: business APIs answer
// 40001 and the next normal stable_token call mints a new token. It returns
// how many usable tokens were revoked, and an error for an unknown appid.
func (s *Server) RevokeTokens(appid string) (int, error) {
	now := s.Now()
	s.appMu.Lock()
	if appid != "" {
		if _, ok := s.apps[appid]; !ok {
			s.appMu.Unlock()
			return 0, errors.New("unknown appid")
		}
	}
	n := 0
	for id, app := range s.apps {
		if appid != "" && id != appid {
			continue
		}
		for _, t := range app.issued {
			if t.state(now) == 0 {
				n++
			}
			t.invalidateAt(now)
		}
	}
	s.appMu.Unlock()
	s.log.Info("wxmock: tokens revoked", "appid", appid, "count", n)
	return n, nil
}

// ValidTokens returns the currently usable tokens of appid (all apps when
// appid is empty), oldest first per app. Unknown appids yield nil.
func (s *Server) ValidTokens(appid string) []string {
	now := s.Now()
	s.appMu.RLock()
	defer s.appMu.RUnlock()
	var out []string
	for id, app := range s.apps {
		if appid != "" && id != appid {
			continue
		}
		for _, t := range app.issued {
			if t.state(now) == 0 {
				out = append(out, t.token)
			}
		}
	}
	return out
}
