package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/internal/contract"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/replay"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	appA    = "wxtestappaaaaaaa"
	appB    = "wxtestappbbbbbbb"
	secretA = "secret-a-0123456789abcdef"
	secretB = "secret-b-0123456789abcdef"

	keyPhone  = "phone-key-0123456789abcdef"
	keyPhone2 = "phone-key-2-0123456789abcdef"
	keyToken  = "token-key-0123456789abcdef"
	keyBoth   = "both-key-0123456789abcdef"
)

// envOpts shapes a test environment.
type envOpts struct {
	emuApps         []wxmock.App // default app A and app B
	served          []wxmock.App // apps the service serves; default app A
	requestTimeout  time.Duration
	exchangeTimeout time.Duration
	rate            ratelimit.Limit
	replay          replay.Store
	checks          []server.Check
	fallback        http.Handler
	wrap            func(http.Handler) http.Handler // around the emulator
	wrapServer      func(http.Handler) http.Handler // around the server's handler, inside the contract check
	contract        contract.Reporter               // receives contract failures; default the test
	noWarm          bool                            // do not fetch tokens before the test
	serverCfg       func(*server.Config)            // adjusts the server's configuration
	clientCfg       func(*wxphone.Config)           // adjusts each client's configuration
	// apiSecurity, when set, puts each served app in the API security
	// mode with the keys it returns (after configuring the emulator).
	apiSecurity func(emu *wxmock.Server, appid string) *apisec.Keys
}

// env is the emulator, the service and the server, wired for real over
// loopback HTTP.
type env struct {
	t       *testing.T
	emu     *wxmock.Server
	emuTS   *httptest.Server
	svc     *service.Service
	srv     *server.Server
	ts      *httptest.Server
	logs    *logtest.Buffer
	m       *metrics.Metrics
	up      *http.Client // the clients' upstream HTTP client
	hc      *http.Client // the test's client
	secrets []string     // app secrets and API keys: never in a log, body or header
	codes   []string     // every code minted
	phones  []string     // every full phone number minted
	tokens  map[string]bool
	seen    []exchange
	mu      sync.Mutex
}

// exchange is one request the test made and its answer.
type exchange struct {
	path   string
	status int
	header http.Header
	body   []byte
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.emuApps == nil {
		o.emuApps = []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}}
	}
	if o.served == nil {
		o.served = []wxmock.App{{AppID: appA, Secret: secretA}}
	}
	e := &env{t: t, logs: &logtest.Buffer{}, m: metrics.New(), tokens: map[string]bool{}}
	emu, err := wxmock.New(wxmock.Options{Apps: o.emuApps})
	if err != nil {
		t.Fatal(err)
	}
	e.emu = emu
	var h http.Handler = emu
	if o.wrap != nil {
		h = o.wrap(emu)
	}
	e.emuTS = httptest.NewServer(h)
	t.Cleanup(e.emuTS.Close)

	logger := server.NewLogger(e.logs, slog.LevelDebug)
	e.up = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(e.up.CloseIdleConnections)
	var clients []*wxphone.Client
	for _, a := range o.served {
		cc := wxphone.Config{AppID: a.AppID, Secret: wxphone.Secret(a.Secret), BaseURL: e.emuTS.URL,
			HTTPClient: e.up, Logger: logger, Hooks: e.m.Hooks()}
		if o.apiSecurity != nil {
			cc.APISecurity = o.apiSecurity(emu, a.AppID)
		}
		if o.clientCfg != nil {
			o.clientCfg(&cc)
		}
		c, err := wxphone.New(cc)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for _, a := range o.emuApps {
		e.secrets = append(e.secrets, a.Secret)
	}
	e.secrets = append(e.secrets, keyPhone, keyPhone2, keyToken, keyBoth)
	svc, err := service.New(service.Config{Clients: clients, Replay: o.replay, ExchangeTimeout: o.exchangeTimeout, Metrics: e.m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	scfg := server.Config{
		Service: svc, APIKeys: []wxphone.Secret{keyPhone, keyPhone2, keyBoth}, TokenAPIKeys: []wxphone.Secret{keyToken, keyBoth},
		RateLimit: o.rate, Metrics: e.m, Logger: logger, RequestTimeout: o.requestTimeout,
		ReadyChecks: o.checks, Fallback: o.fallback,
	}
	if o.serverCfg != nil {
		o.serverCfg(&scfg)
	}
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	// Every answer the test receives is checked against docs/openapi.json.
	sh := srv.Handler()
	if o.wrapServer != nil {
		sh = o.wrapServer(sh)
	}
	var rep contract.Reporter = t
	if o.contract != nil {
		rep = o.contract
	}
	ck := checker(t)
	if o.fallback != nil {
		// A Fallback's answers are its own: only the API's are checked
		// (and a 404, which must have the documented shape).
		ck = ck.Ignoring(func(p string) bool { return !ck.Documented(p) })
	}
	e.ts = httptest.NewServer(ck.Handler(rep, sh))
	t.Cleanup(e.ts.Close)
	e.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(e.hc.CloseIdleConnections)
	if !o.noWarm {
		if err := svc.Warm(context.Background()); err != nil {
			t.Fatalf("warm: %v", err)
		}
	}
	return e
}

// mint mints a phone code for appid with the given number.
func (e *env) mint(appid, pure string) string {
	e.t.Helper()
	code, err := e.emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appid, PurePhoneNumber: pure})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.codes = append(e.codes, code)
	e.phones = append(e.phones, pure)
	e.mu.Unlock()
	return code
}

func (e *env) fault(f wxmock.Fault) {
	e.t.Helper()
	if _, err := e.emu.AddFault(f); err != nil {
		e.t.Fatal(err)
	}
}

// request is one HTTP request to the server.
type request struct {
	method      string
	path        string
	key         string // bearer key; "" sends no Authorization
	auth        string // raw Authorization header, overrides key
	contentType string // default application/json for bodies
	body        string
	header      map[string]string
}

// do sends r and records the answer.
func (e *env) do(r request) (int, http.Header, []byte) {
	e.t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = server.PathPhoneNumber
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, e.ts.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.body != "" {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		if ct != "-" {
			req.Header.Set("Content-Type", ct)
		}
	}
	switch {
	case r.auth != "":
		req.Header.Set("Authorization", r.auth)
	case r.key != "":
		req.Header.Set("Authorization", "Bearer "+r.key)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.seen = append(e.seen, exchange{path: r.path, status: resp.StatusCode, header: resp.Header.Clone(), body: b})
	e.mu.Unlock()
	return resp.StatusCode, resp.Header, b
}

// phone posts an exchange request for code with key.
func (e *env) phone(key string, fields map[string]string) (int, http.Header, []byte) {
	e.t.Helper()
	b, _ := json.Marshal(fields)
	return e.do(request{key: key, body: string(b)})
}

// errBody is the error answer.
type errBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Errcode   int    `json:"errcode"`
		RID       string `json:"rid"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func decodeErr(t *testing.T, b []byte) errBody {
	t.Helper()
	var eb errBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code == "" {
		t.Fatalf("not an error body: %s", b)
	}
	return eb
}

// okBody is the exchange's success answer.
type okBody struct {
	PhoneNumber     string `json:"phoneNumber"`
	PurePhoneNumber string `json:"purePhoneNumber"`
	CountryCode     string `json:"countryCode"`
	Watermark       struct {
		AppID     string `json:"appid"`
		Timestamp int64  `json:"timestamp"`
	} `json:"watermark"`
	Replayed bool `json:"replayed"`
}

func decodeOK(t *testing.T, b []byte) okBody {
	t.Helper()
	var ok okBody
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ok); err != nil {
		t.Fatalf("not a success body: %v: %s", err, b)
	}
	return ok
}

// collectTokens remembers every token the emulator currently honours.
func (e *env) collectTokens() {
	for _, tok := range e.emu.ValidTokens("") {
		e.tokens[tok] = true
	}
}

// checkNoLeaks asserts that no code, token, key, secret or full phone
// number appears in any log line, answer header or answer body, except the
// full number in a 200 body of the exchange and a token in a 200 body of
// the token endpoints.
func (e *env) checkNoLeaks() {
	e.t.Helper()
	e.collectTokens()
	logs := e.logs.String()
	type item struct{ kind, v string }
	var items []item
	for _, v := range e.codes {
		items = append(items, item{"code", v})
	}
	for _, v := range e.phones {
		items = append(items, item{"phone", v})
	}
	for v := range e.tokens {
		items = append(items, item{"token", v})
	}
	for _, v := range e.secrets {
		items = append(items, item{"secret/key", v})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, it := range items {
		if strings.Contains(logs, it.v) {
			e.t.Errorf("a %s appears in the logs", it.kind)
		}
		for _, x := range e.seen {
			for k, vs := range x.header {
				for _, v := range vs {
					if strings.Contains(v, it.v) {
						e.t.Errorf("a %s appears in header %s of a %s answer", it.kind, k, x.path)
					}
				}
			}
			if !strings.Contains(string(x.body), it.v) {
				continue
			}
			switch {
			case it.kind == "phone" && x.status == 200 && x.path == server.PathPhoneNumber:
			case it.kind == "token" && x.status == 200 && strings.HasPrefix(x.path, server.PathAccessToken):
			default:
				e.t.Errorf("a %s appears in a %d body of %s: %s", it.kind, x.status, x.path, x.body)
			}
		}
	}
}
