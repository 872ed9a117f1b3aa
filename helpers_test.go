package wxphone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/wxmock"
)

// The app every test talks to. The appid is the one of WeChat's official
// legacy test vector so the same constant serves every test.
const (
	testAppID  = "wx4f4bc4dec97d474b"
	testSecret = "s3cr3t-AppSecret-0123456789abcdef"
	testPhone  = "13800138000"
)

// newEmulator returns a fresh emulator knowing the test app.
func newEmulator(t testing.TB, mutate ...func(*wxmock.Options)) *wxmock.Server {
	t.Helper()
	opts := wxmock.Options{Apps: []wxmock.App{{AppID: testAppID, Secret: testSecret}}}
	for _, m := range mutate {
		m(&opts)
	}
	emu, err := wxmock.New(opts)
	if err != nil {
		t.Fatalf("wxmock.New: %v", err)
	}
	return emu
}

// mintPhone mints a phone code for phone (country code 86).
func mintPhone(t testing.TB, emu *wxmock.Server, phone string) string {
	t.Helper()
	code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: phone})
	if err != nil {
		t.Fatalf("MintPhoneCode: %v", err)
	}
	return code
}

func addFault(t testing.TB, emu *wxmock.Server, f wxmock.Fault) {
	t.Helper()
	if _, err := emu.AddFault(f); err != nil {
		t.Fatalf("AddFault(%+v): %v", f, err)
	}
}

// seenRequest is one request as an upstream saw it.
type seenRequest struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   string
	At     time.Time
}

// recorder records every request before handing it to h.
type recorder struct {
	h    http.Handler
	mu   sync.Mutex
	reqs []seenRequest
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, seenRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body), At: time.Now()})
	rc.mu.Unlock()
	rc.h.ServeHTTP(w, r)
}

func (rc *recorder) requests() []seenRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]seenRequest(nil), rc.reqs...)
}

func (rc *recorder) count(path string) int {
	n := 0
	for _, r := range rc.requests() {
		if r.Path == path {
			n++
		}
	}
	return n
}

// accessTokens returns every access_token any request carried.
func (rc *recorder) accessTokens() []string {
	var out []string
	for _, r := range rc.requests() {
		if i := strings.Index(r.Query, "access_token="); i >= 0 {
			v := r.Query[i+len("access_token="):]
			if j := strings.IndexByte(v, '&'); j >= 0 {
				v = v[:j]
			}
			out = append(out, v)
		}
	}
	return out
}

const (
	pathPhone   = "/wxa/business/getuserphonenumber"
	pathStable  = "/cgi-bin/stable_token"
	pathClassic = "/cgi-bin/token"
	pathSession = "/sns/jscode2session"
)

// srvEnv is an emulator behind a real loopback HTTP server.
type srvEnv struct {
	emu      *wxmock.Server
	rec      *recorder
	srv      *httptest.Server
	newConns atomic.Int64
}

func newSrvEnv(t testing.TB, mutate ...func(*wxmock.Options)) *srvEnv {
	t.Helper()
	e := &srvEnv{emu: newEmulator(t, mutate...)}
	e.rec = &recorder{h: e.emu}
	e.srv = httptest.NewUnstartedServer(e.rec)
	e.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.newConns.Add(1)
		}
	}
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

// config returns a Config for the test app against the server, with its
// own tuned HTTP client.
func (e *srvEnv) config(t testing.TB) Config {
	t.Helper()
	hc := NewHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return Config{AppID: testAppID, Secret: testSecret, BaseURL: e.srv.URL, HTTPClient: hc}
}

func newTestClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// memTransport is an in-memory http.RoundTripper that serves each request
// with h.ServeHTTP through an httptest.ResponseRecorder: no sockets, no
// goroutines, so it works inside a synctest bubble.
type memTransport struct {
	h http.Handler

	mu sync.Mutex
	// fail, when set, may refuse a request before it reaches h (a
	// transport failure).
	fail func(*http.Request) error
	// observe, when set, sees every request and the answer h produced.
	observe func(req *http.Request, reqBody []byte, status int, respBody []byte)
}

func (m *memTransport) setFail(f func(*http.Request) error) {
	m.mu.Lock()
	m.fail = f
	m.mu.Unlock()
}

func (m *memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	m.mu.Lock()
	fail, observe := m.fail, m.observe
	m.mu.Unlock()
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	if fail != nil {
		if err := fail(req); err != nil {
			return nil, err
		}
	}
	sreq := req.Clone(req.Context())
	sreq.Body = io.NopCloser(bytes.NewReader(body))
	sreq.ContentLength = int64(len(body))
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	if aborted := serveRecovering(m.h, rec, sreq); aborted {
		return nil, errors.New("memtransport: connection closed after the request was sent")
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	res := rec.Result()
	res.Request = req
	if observe != nil {
		b, _ := io.ReadAll(res.Body)
		res.Body = io.NopCloser(bytes.NewReader(b))
		observe(req, body, res.StatusCode, b)
	}
	return res, nil
}

func serveRecovering(h http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				aborted = true
				return
			}
			panic(v)
		}
	}()
	h.ServeHTTP(w, r)
	return false
}

// memEnv is an emulator reached through a memTransport.
type memEnv struct {
	emu *wxmock.Server
	rec *recorder
	tr  *memTransport
	hc  *http.Client
}

func newMemEnv(t testing.TB, mutate ...func(*wxmock.Options)) *memEnv {
	t.Helper()
	e := &memEnv{emu: newEmulator(t, mutate...)}
	e.rec = &recorder{h: e.emu}
	e.tr = &memTransport{h: e.rec}
	e.hc = &http.Client{Transport: e.tr}
	return e
}

func (e *memEnv) config() Config {
	return Config{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1", HTTPClient: e.hc}
}

// fetchLog records token fetch events.
type fetchLog struct {
	mu     sync.Mutex
	events []fetchAt
}

type fetchAt struct {
	TokenFetchEvent
	At time.Time
}

func (l *fetchLog) hook(ev TokenFetchEvent) {
	l.mu.Lock()
	l.events = append(l.events, fetchAt{ev, time.Now()})
	l.mu.Unlock()
}

func (l *fetchLog) all() []fetchAt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]fetchAt(nil), l.events...)
}

func (l *fetchLog) count(pred func(fetchAt) bool) int {
	n := 0
	for _, e := range l.all() {
		if pred == nil || pred(e) {
			n++
		}
	}
	return n
}

// stubServer answers every request with fn and counts them.
type stubServer struct {
	*httptest.Server
	calls atomic.Int64
}

func newStub(t testing.TB, fn http.HandlerFunc) *stubServer {
	t.Helper()
	s := &stubServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		fn(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// stubClient is a Client on a stub with a static token, so only the
// exchange itself talks to the stub.
func stubClient(t testing.TB, url string) *Client {
	t.Helper()
	hc := NewHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return newTestClient(t, Config{
		AppID: testAppID, BaseURL: url, HTTPClient: hc,
		TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789", ExpiresAt: time.Now().Add(time.Hour)}),
	})
}

func writeJSON(w http.ResponseWriter, ct, body string) {
	if ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	_, _ = io.WriteString(w, body)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// debugLogger returns a JSON logger at debug level writing into buf.
func debugLogger(buf *logtest.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
