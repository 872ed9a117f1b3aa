package wxphone

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/wxmock"
)

// TestNothingSecretInLogsOrErrors drives every failure path with a debug
// JSON logger and then searches every log line and every error for access
// tokens, the AppSecret, codes, session keys and full phone numbers.
func TestNothingSecretInLogsOrErrors(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	logger := debugLogger(&logs)
	env := newSrvEnv(t)
	const foreignPure = "51234567"
	const wrongSecret = "wrong-AppSecret-9876543210"
	secrets := map[string]string{testSecret: "AppSecret", wrongSecret: "wrong AppSecret", testPhone: "phone number", foreignPure: "phone number"}
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
			logger.Error("application logs the failure", "err", err) // what a caller does
		}
	}
	snapshotTokens := func() {
		for _, tok := range env.emu.ValidTokens("") {
			secrets[tok] = "access token"
		}
	}
	mint := func(phone string) string {
		g := wxmock.PhoneGrant{PurePhoneNumber: phone}
		if phone == foreignPure {
			g.CountryCode = "852"
		}
		code, err := env.emu.MintPhoneCode(g)
		if err != nil {
			t.Fatal(err)
		}
		secrets[code] = "phone code"
		return code
	}
	// Every hook event is rendered too: their Err fields carry the same
	// errors.
	var eventsMu sync.Mutex
	var events []any
	hooks := Hooks{
		OnUpstream:   func(ev UpstreamEvent) { eventsMu.Lock(); events = append(events, ev); eventsMu.Unlock() },
		OnTokenFetch: func(ev TokenFetchEvent) { eventsMu.Lock(); events = append(events, ev); eventsMu.Unlock() },
	}
	cfgWith := func(mut func(*Config)) Config {
		cfg := env.config(t)
		cfg.Logger = logger
		cfg.Hooks = hooks
		if mut != nil {
			mut(&cfg)
		}
		return cfg
	}
	fault := func(f wxmock.Fault) { addFault(t, env.emu, f) }
	ctx := ctxTimeout(t, 60*time.Second)

	c := newTestClient(t, cfgWith(nil))
	// Successes, logged by the application as they are.
	for _, phone := range []string{testPhone, foreignPure} {
		p, err := c.PhoneNumber(ctx, mint(phone))
		if err != nil {
			t.Fatal(err)
		}
		logger.Info("exchanged", "phone", p.PhoneNumber, "pure", p.PurePhoneNumber, "info", p, "ptr", *p)
	}
	snapshotTokens()

	// Business errors and lost answers on the exchange.
	phoneFaults := []wxmock.Fault{
		{Kind: wxmock.FaultErrcode, Errcode: 40029, Count: 1},
		{Kind: wxmock.FaultErrcode, Errcode: -1, Count: 2},
		{Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1},
		{Kind: wxmock.FaultErrcode, Errcode: 45011, Count: 1},
		{Kind: wxmock.FaultErrcode, Errcode: 40013, Count: 1},
		{Kind: wxmock.FaultHTTPStatus, Status: 502, Count: 1},
		{Kind: wxmock.FaultHTTPStatus, Status: 200, Consume: true, Count: 1},
		{Kind: wxmock.FaultDropAfterConsume, Count: 1},
		{Kind: wxmock.FaultResetBeforeRead, Count: 1},
	}
	for _, f := range phoneFaults {
		f.Endpoint = wxmock.EndpointPhone
		fault(f)
		_, err := c.PhoneNumber(ctx, mint(testPhone))
		keep(err)
	}
	// Timeout after the request was written.
	fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 5000, Count: 1})
	_, err := c.PhoneNumber(ctxTimeout(t, 200*time.Millisecond), mint(testPhone))
	keep(err)
	// WeChat echoing the code and the token in errmsg.
	code := mint(testPhone)
	tok := env.emu.ValidTokens(testAppID)[0]
	fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40029, Errmsg: "code " + code + " token " + tok, Count: 1})
	_, err = c.PhoneNumber(ctx, code)
	keep(err)

	// Token errors: one recovered by a refresh, one persistent (normal
	// fetch, force refresh, then the budget refusal).
	if _, err := env.emu.RevokeTokens(testAppID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PhoneNumber(ctx, mint(testPhone)); err != nil {
		t.Fatal(err)
	}
	snapshotTokens()
	fault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40001})
	for range 2 {
		_, err := c.PhoneNumber(ctx, mint(testPhone))
		keep(err)
		snapshotTokens()
	}
	env.emu.ClearFaults()

	// Transport failures before anything was sent.
	fd := &flakyDialer{}
	hc := NewHTTPClient()
	hc.Transport.(*http.Transport).DialContext = fd.DialContext
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	t.Cleanup(hc.CloseIdleConnections)
	dc := newTestClient(t, cfgWith(func(c *Config) { c.HTTPClient = hc }))
	if err := dc.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	snapshotTokens()
	fd.failNext.Store(100)
	_, err = dc.PhoneNumber(ctx, mint(testPhone))
	keep(err)
	lc, _ := env.emu.MintLoginCode(wxmock.LoginGrant{})
	secrets[lc.Code], secrets[lc.SessionKey] = "js_code", "session_key"
	_, err = dc.Code2Session(ctx, lc.Code)
	keep(err)
	keep(dc.Warm(ctx)) // held token: no error expected
	fd.failNext.Store(0)

	// Token fetch failures: refused (cool-down), busy (retried), wrong
	// secret, transport.
	fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 40164, Count: 1})
	rc := newTestClient(t, cfgWith(nil))
	keep(rc.Warm(ctx))
	keep(rc.Warm(ctx)) // in the cool-down
	status := rc.TokenSource().(*TokenManager).Status()
	if status.LastError == nil {
		t.Error("no LastError in the cool-down")
	}
	logger.Debug("status", "status", status)
	_, err = rc.PhoneNumber(ctx, mint(testPhone))
	keep(err)
	fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 2})
	bc := newTestClient(t, cfgWith(nil))
	keep(bc.Warm(ctx))
	fault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultHTTPStatus, Status: 503, Count: 6})
	hc5 := newTestClient(t, cfgWith(nil))
	keep(hc5.Warm(ctx))
	env.emu.ClearFaults()
	wc := newTestClient(t, cfgWith(func(c *Config) { c.Secret = wrongSecret }))
	keep(wc.Warm(ctx))
	lc2, _ := env.emu.MintLoginCode(wxmock.LoginGrant{})
	secrets[lc2.Code] = "js_code"
	_, err = wc.Code2Session(ctx, lc2.Code)
	keep(err)
	cc := newTestClient(t, cfgWith(func(c *Config) { c.Token.Classic = true }))
	fault(wxmock.Fault{Endpoint: wxmock.EndpointToken, Kind: wxmock.FaultDropAfterConsume, Count: 1})
	keep(cc.Warm(ctx))
	snapshotTokens()

	// jscode2session: success and failures.
	for _, f := range []*wxmock.Fault{nil,
		{Kind: wxmock.FaultErrcode, Errcode: 40029, Count: 1},
		{Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1},
		{Kind: wxmock.FaultDropAfterConsume, Count: 1},
		{Kind: wxmock.FaultHTTPStatus, Status: 500, Count: 1},
	} {
		lc, _ := env.emu.MintLoginCode(wxmock.LoginGrant{UnionID: "union-1"})
		secrets[lc.Code], secrets[lc.SessionKey] = "js_code", "session_key"
		if f != nil {
			f.Endpoint = wxmock.EndpointJSCode2Session
			fault(*f)
		}
		s, err := c.Code2Session(ctx, lc.Code)
		keep(err)
		if s != nil {
			logger.Info("session", "session", s, "key", s.SessionKey, "copy", *s)
		}
	}
	// Reuse: 40163.
	_, err = c.Code2Session(ctx, lc.Code)
	keep(err)

	// Legacy decryption failures.
	pl, _ := env.emu.MintLegacyPayload(wxmock.LegacyGrant{PurePhoneNumber: testPhone})
	secrets[pl.SessionKey] = "session_key"
	_, err = c.DecryptPhoneNumber(SessionKey(pl.SessionKey), pl.EncryptedData[:len(pl.EncryptedData)-8], pl.IV)
	keep(err)
	_, err = DecryptPhoneNumber("wx0000000000000000", SessionKey(pl.SessionKey), pl.EncryptedData, pl.IV)
	keep(err)

	// A watermark mismatch from a stub whose body carries the number.
	stub := newStub(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "text/plain", strings.Replace(phoneStubBody, testAppID, "wx0000000000000000", 1))
	})
	sc := newTestClient(t, Config{AppID: testAppID, BaseURL: stub.URL, Logger: logger, TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789"})})
	secrets["STATIC-TOKEN-0123456789"] = "access token"
	_, err = sc.PhoneNumber(ctx, mint(testPhone))
	keep(err)

	// Input refused locally.
	for _, bad := range []string{"", "code with a space " + testSecret, strings.Repeat("c", MaxCodeLen+1)} {
		_, err = c.PhoneNumber(ctx, bad)
		keep(err)
	}

	// After Close.
	_ = c.Close()
	_, err = c.PhoneNumber(ctx, mint(testPhone))
	keep(err)
	snapshotTokens()
	for _, tok := range env.rec.accessTokens() {
		secrets[tok] = "access token"
	}

	// The search.
	text := logs.String()
	for _, want := range []string{`"level":"DEBUG"`, "token fetched", "retrying", "refused", "invalidating"} {
		if !strings.Contains(text, want) {
			t.Errorf("the logs lack %q: the failure paths were not exercised", want)
		}
	}
	if len(errs) < 30 {
		t.Errorf("only %d errors collected", len(errs))
	}
	// Every error, every error in its chain and every hook event, in every
	// rendering (fmt verbs, slog text and JSON, encoding/json and xml).
	var rendered []string
	render := func(v any) {
		for _, r := range renderings(t, v) {
			rendered = append(rendered, r)
		}
	}
	for _, err := range errs {
		for e := err; e != nil; e = errors.Unwrap(e) {
			render(e)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			render(ue)
			rendered = append(rendered, ue.URL)
			if strings.Contains(ue.URL, "=") {
				t.Errorf("url.Error carries a query: %s", ue.URL)
			}
		}
		var ae *APIError
		if errors.As(err, &ae) {
			render(ae)
		}
	}
	render(status)
	render(&status)
	eventsMu.Lock()
	for _, ev := range events {
		render(ev)
	}
	eventsMu.Unlock()
	// Every error type was met on the way.
	for name, target := range map[string]any{
		"APIError": new(*APIError), "TransportError": new(*TransportError), "url.Error": new(*url.Error),
		"HTTPError": new(*HTTPError), "DecodeError": new(*DecodeError), "OutcomeUnknownError": new(*OutcomeUnknownError),
		"InputError": new(*InputError), "WatermarkError": new(*WatermarkError), "TokenUnavailableError": new(*TokenUnavailableError),
		"DecryptError": new(*DecryptError),
	} {
		found := false
		for _, err := range errs {
			found = found || errors.As(err, target)
		}
		if !found {
			t.Errorf("no failure path produced a %s", name)
		}
	}
	for s, what := range secrets {
		if len(s) < 6 {
			t.Fatalf("secret %q too short to search for", s)
		}
		if strings.Contains(text, s) {
			t.Errorf("a log line contains the %s", what)
		}
		for _, r := range rendered {
			if strings.Contains(r, s) {
				t.Errorf("an error contains the %s: %s", what, r)
				break
			}
		}
	}
	for _, needle := range []string{"access_token=", "secret=", "js_code="} {
		if strings.Contains(text, needle) {
			t.Errorf("logs contain %q", needle)
		}
	}
	if !strings.Contains(text, "138****8000") {
		t.Error("the masked number never appeared; was the success logged?")
	}
}
