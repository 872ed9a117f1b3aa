package wxphone

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

// pipeNet is an in-memory network for synctest bubbles: Dial returns one end
// of a net.Pipe and the listener's Accept the other, so an http.Server and
// an http.Transport talk with no socket (a socket would keep the bubble from
// ever being idle).
type pipeNet struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeNet() *pipeNet {
	return &pipeNet{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeNet) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case p.conns <- s:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeNet) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *pipeNet) Close() error   { p.once.Do(func() { close(p.closed) }); return nil }
func (p *pipeNet) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "127.0.0.1:80" }

// readFirst reads a request's whole body before h sees it, as WeChat does:
// a request it received is processed even if the client hangs up while it
// works (see docs/emulator.md).
func readFirst(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		h.ServeHTTP(w, r)
	})
}

// TestSlowAnswerWithinTheCallersDeadline: an answer slower than any fixed
// transport timeout (WeChat answers after 12 s) still reaches a caller
// whose own deadline (30 s) has not passed. Before the fix NewHTTPClient's
// 10 s ResponseHeaderTimeout dropped it although WeChat had used the code.
func TestSlowAnswerWithinTheCallersDeadline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
		direct  bool // Config.HTTPClient unset: wxphone's own transport
	}{
		{"12s, own client", 12 * time.Second, true},
		{"12s, NewHTTPClient passed in", 12 * time.Second, false},
		{"29s, own client", 29 * time.Second, true},
		{"40s, no deadline of the caller's, own client", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				emu := newEmulator(t)
				pn := newPipeNet()
				srv := &http.Server{Handler: readFirst(emu)}
				go func() { _ = srv.Serve(pn) }()
				defer func() { _ = srv.Close(); _ = pn.Close() }()

				hc := NewHTTPClient()
				tr := hc.Transport.(*http.Transport)
				tr.DialContext = pn.DialContext
				cfg := Config{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1:80"}
				if !tc.direct {
					cfg.HTTPClient = hc
				}
				c, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if tc.direct {
					c.up.direct.DialContext = pn.DialContext
					c.owned.up.direct.DialContext = pn.DialContext
				}
				defer c.Close()
				if err := c.Warm(context.Background()); err != nil {
					t.Fatal(err)
				}
				latency, ctx := tc.latency, context.Background()
				if latency == 0 {
					// No deadline of the caller's: the library's own
					// overall bound (defaultOverallTimeout) applies, and an
					// answer later than that is lost.
					latency = defaultOverallTimeout + 10*time.Second
				} else {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
				}
				addFault(t, emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: int(latency / time.Millisecond)})
				code := mintPhone(t, emu, testPhone)
				start := time.Now()
				info, err := c.PhoneNumber(ctx, code)
				if tc.latency == 0 {
					if !errors.Is(err, ErrOutcomeUnknown) || time.Since(start) != defaultOverallTimeout {
						t.Fatalf("after %v: %v, want outcome unknown after %v", time.Since(start), err, defaultOverallTimeout)
					}
					return
				}
				if err != nil {
					t.Fatalf("after %v: %v, want the number (WeChat answered after %v, the deadline is 30s)", time.Since(start), err, latency)
				}
				if info.PurePhoneNumber.Reveal() != testPhone {
					t.Fatalf("number %v", info.PurePhoneNumber)
				}
			})
		})
	}
}

// TestNewHTTPClientHasNoTimeoutOfItsOwn pins the rule behind
// TestSlowAnswerWithinTheCallersDeadline: every bound on a call that may
// already have carried a code comes from the caller's context, so no
// transport timeout can be shorter than an exchange's own timeout.
func TestNewHTTPClientHasNoTimeoutOfItsOwn(t *testing.T) {
	hc := NewHTTPClient()
	tr := hc.Transport.(*http.Transport)
	if hc.Timeout != 0 || tr.ResponseHeaderTimeout != 0 || tr.ExpectContinueTimeout != 0 {
		t.Fatalf("Client.Timeout %v, ResponseHeaderTimeout %v, ExpectContinueTimeout %v: want none (the context bounds a call)",
			hc.Timeout, tr.ResponseHeaderTimeout, tr.ExpectContinueTimeout)
	}
}

// h2ResetServer is a minimal HTTP/2 (h2c, prior knowledge) server that reads
// each request's body, records it, and answers with RST_STREAM
// (PROTOCOL_ERROR): WeChat received the request, and may have used the
// code, but the client gets a stream error. Go's HTTP/2 transport retries a
// request after such a reset by calling GetBody.
type h2ResetServer struct {
	ln     net.Listener
	mu     sync.Mutex
	bodies []string
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newH2ResetServer(t *testing.T, tlsConfig *tls.Config) *h2ResetServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s := &h2ResetServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *h2ResetServer) Bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

const (
	h2Data, h2Headers, h2RST, h2Settings, h2Ping, h2GoAway, h2Window = 0, 1, 3, 4, 6, 7, 8
	h2FlagAck, h2FlagEndStream                                       = 1, 1
	h2ProtocolError                                                  = 1
)

func (s *h2ResetServer) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	preface := make([]byte, len(http2Preface))
	if _, err := io.ReadFull(r, preface); err != nil || string(preface) != http2Preface {
		return
	}
	write := func(typ, flags byte, stream uint32, payload []byte) error {
		var h [9]byte
		h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
		h[3], h[4] = typ, flags
		binary.BigEndian.PutUint32(h[5:], stream)
		_, err := c.Write(append(h[:], payload...))
		return err
	}
	if write(h2Settings, 0, 0, nil) != nil {
		return
	}
	for {
		var h [9]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags, stream := h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		switch typ {
		case h2Settings:
			if flags&h2FlagAck == 0 && write(h2Settings, h2FlagAck, 0, nil) != nil {
				return
			}
		case h2Ping:
			if flags&h2FlagAck == 0 && write(h2Ping, h2FlagAck, 0, payload) != nil {
				return
			}
		case h2Data:
			s.mu.Lock()
			s.bodies = append(s.bodies, string(payload))
			s.mu.Unlock()
			if flags&h2FlagEndStream != 0 {
				var code [4]byte
				binary.BigEndian.PutUint32(code[:], h2ProtocolError)
				if write(h2RST, 0, stream, code[:]) != nil {
					return
				}
			}
		}
	}
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// TestHTTP2ResetAfterTheCodeWasSentIsNotResent: over HTTP/2, a stream reset
// after the request was written makes Go's transport resend it through
// GetBody. The code must reach WeChat once; the caller learns that the
// outcome is unknown, never a definite answer from a second send.
func TestHTTP2ResetAfterTheCodeWasSentIsNotResent(t *testing.T) {
	// TLS that negotiates h2, with the caller's http.Client: a throwaway
	// httptest server provides the certificate and a client trusting it.
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.EnableHTTP2 = true
	ts.StartTLS()
	tlsClient := ts.Client()
	srvTLS := ts.TLS.Clone()
	srvTLS.NextProtos = []string{"h2"}
	ts.Close()

	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2c, own client", false}, {"TLS h2, caller's client", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{AppID: testAppID, H2C: true,
				TokenSource: StaticTokenSource(Token{Value: "static-token-0123456789", ExpiresAt: time.Now().Add(time.Hour)})}
			var s *h2ResetServer
			if tc.tls {
				s = newH2ResetServer(t, srvTLS)
				cfg.BaseURL, cfg.HTTPClient = "https://"+s.ln.Addr().String(), tlsClient
			} else {
				s = newH2ResetServer(t, nil)
				cfg.BaseURL = "http://" + s.ln.Addr().String()
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			const code = "0123456789abcdef-h2-reset"
			_, err = c.PhoneNumber(ctx, code)
			var sent int
			for _, b := range s.Bodies() {
				sent += strings.Count(b, code)
			}
			if sent != 1 {
				t.Errorf("the code reached the server %d times, want 1", sent)
			}
			if !errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("error %v, want one matching ErrOutcomeUnknown", err)
			}
		})
	}
}

func TestParseBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"", DefaultBaseURL},
		{"https://api.weixin.qq.com", "https://api.weixin.qq.com"},
		{"https://api.weixin.qq.com/", "https://api.weixin.qq.com"},
		{"https://proxy.example.com/wechat/", "https://proxy.example.com/wechat"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.9.9.9", "http://127.9.9.9"},
		{"http://localhost:9000", "http://localhost:9000"},
		{"http://[::1]:9000", "http://[::1]:9000"},
		{"http://api.weixin.qq.com", ""},
		{"http://10.0.0.1", ""},
		{"http://192.168.1.1:80", ""},
		{"http://localhost.evil.example", ""},
		{"http://127.0.0.1.evil.example", ""},
		{"http://[::ffff:8.8.8.8]", ""},
		{"https://user:pass@api.weixin.qq.com", ""},
		{"https://user@api.weixin.qq.com", ""},
		{"https://api.weixin.qq.com?access_token=x", ""},
		{"https://api.weixin.qq.com/#frag", ""},
		{"api.weixin.qq.com", ""},
		{"/wxa", ""},
		{"ftp://api.weixin.qq.com", ""},
		{"file:///etc/passwd", ""},
		{"javascript:alert(1)", ""},
		{"https://", ""},
		{"https://api.weixin.qq.com/%zz", ""},
		{" https://api.weixin.qq.com", ""},
	}
	for _, tt := range tests {
		u, err := ParseBaseURL(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseBaseURL(%q) = %v; want an error", tt.in, u)
		case tt.want != "" && err != nil:
			t.Errorf("ParseBaseURL(%q): %v", tt.in, err)
		case tt.want != "" && u.String() != tt.want:
			t.Errorf("ParseBaseURL(%q) = %v, want %s", tt.in, u, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "pass@") {
			t.Errorf("error quotes user info: %v", err)
		}
		// New refuses the same URLs.
		c, err2 := New(Config{AppID: testAppID, BaseURL: tt.in, TokenSource: StaticTokenSource(Token{Value: "x"})})
		if (err2 == nil) != (tt.want != "") {
			t.Errorf("New with BaseURL %q: %v", tt.in, err2)
		}
		if c != nil {
			_ = c.Close()
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://api.weixin.qq.com/wxa/business/getuserphonenumber?access_token=SECRET", "https://api.weixin.qq.com/wxa/business/getuserphonenumber?REDACTED"},
		{"https://u:p@host/path?secret=S&js_code=C#frag", "https://host/path?REDACTED"},
		{"https://host/path", "https://host/path"},
		{"https://host/path#frag", "https://host/path"},
		{"://bad url?access_token=SECRET", "://bad url?REDACTED"},
		{"%zz?access_token=SECRET", "%zz?REDACTED"},
		{"%zz", "REDACTED"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewHTTPClient(t *testing.T) {
	t.Parallel()
	hc := NewHTTPClient()
	tr, ok := hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T", hc.Transport)
	}
	if tr.DialContext == nil || tr.TLSHandshakeTimeout <= 0 || tr.IdleConnTimeout <= 0 {
		t.Errorf("transport lacks connection timeouts: %+v", tr)
	}
	if tr.MaxIdleConnsPerHost <= 2 || tr.MaxIdleConns < tr.MaxIdleConnsPerHost {
		t.Errorf("idle pool %d per host, %d total; want more than Go's 2 per host", tr.MaxIdleConnsPerHost, tr.MaxIdleConns)
	}
	if c := tr.TLSClientConfig; c == nil || c.InsecureSkipVerify || c.MinVersion < tls.VersionTLS12 {
		t.Errorf("TLS config %+v", c)
	}
	if hc.CheckRedirect == nil || !errors.Is(hc.CheckRedirect(nil, nil), http.ErrUseLastResponse) {
		t.Error("redirects are followed")
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	target := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", phoneStubBody) })
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirector := newStub(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.RequestURI(), status)
		})
		// Through the caller's http.Client and through wxphone's own
		// stack (the direct path, which skips http.Client).
		direct := newTestClient(t, Config{AppID: testAppID, BaseURL: redirector.URL,
			TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789", ExpiresAt: time.Now().Add(time.Hour)})})
		t.Cleanup(direct.up.direct.CloseIdleConnections)
		for _, c := range []*Client{stubClient(t, redirector.URL), direct} {
			_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			var he *HTTPError
			if !errors.As(err, &he) || he.StatusCode != status {
				t.Errorf("redirect %d (direct path %v): err = %v; want *HTTPError", status, c.up.direct != nil, err)
			}
		}
	}
	if n := target.calls.Load(); n != 0 {
		t.Errorf("the redirect target saw %d requests; the token would have left", n)
	}
}

// TestIdlePoolKeepsConnections: under concurrency the tuned client keeps its
// connections for the next wave (Go's default keeps 2 per host).
func TestIdlePoolKeepsConnections(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t, func(o *wxmock.Options) { o.LoadPrefix = "load-" })
	c := newTestClient(t, env.config(t))
	ctx := ctxTimeout(t, 20*time.Second)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	addFault(t, env.emu, wxmock.Fault{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 100})
	const n = 8
	wave := func(w int) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, err := c.PhoneNumber(ctx, "load-"+strings.Repeat("w", w)+string(rune('a'+i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	wave(1)
	before := env.newConns.Load()
	wave(2)
	if d := env.newConns.Load() - before; d != 0 {
		t.Errorf("second wave opened %d new connections; the pool dropped idle ones", d)
	}
}

func TestTransportErrorsAreRedacted(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	fd := &flakyDialer{}
	hc := NewHTTPClient()
	tr := hc.Transport.(*http.Transport)
	tr.DialContext = fd.DialContext
	tr.DisableKeepAlives = true
	cfg := env.config(t)
	cfg.HTTPClient = hc
	c := newTestClient(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	if err := c.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	token := env.emu.ValidTokens(testAppID)[0]
	fd.failNext.Store(10)
	code := mintPhone(t, env.emu, testPhone)
	_, err := c.PhoneNumber(ctx, code)
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v; want a *url.Error inside", err)
	}
	if strings.Contains(ue.URL, token) || !strings.HasSuffix(ue.URL, "?REDACTED") {
		t.Errorf("url.Error URL = %q", ue.URL)
	}
	for _, s := range []string{err.Error(), ue.Error()} {
		if strings.Contains(s, token) || strings.Contains(s, code) || strings.Contains(s, "access_token=") {
			t.Errorf("error leaks: %s", s)
		}
	}
	// Code2Session: the query carries the secret and the js_code.
	lc, _ := env.emu.MintLoginCode(wxmock.LoginGrant{})
	_, err = c.Code2Session(ctx, lc.Code)
	if !errors.As(err, &ue) || strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), lc.Code) {
		t.Errorf("Code2Session err = %v", err)
	}
}

// cannedServer is a loopback HTTP/1.1 server that answers every request
// with the same 200 body without allocating per request, so that
// testing.AllocsPerRun over an exchange against it counts the client's
// allocations only. It reads each request's head up to the blank line and
// skips a Content-Length body.
func cannedServer(t testing.TB, body string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serveCanned(c, resp) })
		}
	})
	return "http://" + ln.Addr().String()
}

func serveCanned(c net.Conn, resp []byte) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	n := 0
	for {
		end := bytes.Index(buf[:n], []byte("\r\n\r\n"))
		if end < 0 {
			if n == len(buf) {
				return
			}
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			continue
		}
		need := end + 4 + cannedContentLength(buf[:end])
		for n < need {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
		n = copy(buf, buf[need:n])
	}
}

// cannedContentLength returns the Content-Length of a request head, 0 if none.
func cannedContentLength(head []byte) int {
	const key = "\r\ncontent-length:"
	for i := 0; i+len(key) <= len(head); i++ {
		if !bytes.EqualFold(head[i:i+len(key)], []byte(key)) {
			continue
		}
		v, k := 0, i+len(key)
		for k < len(head) && head[k] == ' ' {
			k++
		}
		for k < len(head) && head[k] >= '0' && head[k] <= '9' {
			v = v*10 + int(head[k]-'0')
			k++
		}
		return v
	}
	return 0
}

// exchangeAllocBudget is the allocations of one exchange with wxphone's own
// HTTP stack (Config.HTTPClient unset), measured with Go 1.26 on
// linux/amd64: the direct path (Transport.RoundTrip without http.Client)
// and the hand-built request with shared read-only header maps save 14 of
// them (6 and 8; docs/benchmarks.md, "Speed-shaped paths"), and decoding
// the answer without reflection 12 (answer.go). A change that spends more
// fails here; one that spends less should lower the budget.
const exchangeAllocBudget = 64

func TestExchangeAllocBudget(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts (sync.Pool drops items)")
	}
	url := cannedServer(t, phoneStubBody)
	c := newTestClient(t, Config{AppID: testAppID, BaseURL: url,
		TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789", ExpiresAt: time.Now().Add(time.Hour)})})
	t.Cleanup(c.up.direct.CloseIdleConnections)
	ctx := context.Background()
	exchange := func() {
		if _, err := c.PhoneNumber(ctx, "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"); err != nil {
			t.Fatal(err)
		}
	}
	exchange() // connect
	got := testing.AllocsPerRun(500, exchange)
	t.Logf("%.1f allocations per exchange", got)
	if got > exchangeAllocBudget {
		t.Errorf("an exchange made %.1f allocations, budget %d", got, exchangeAllocBudget)
	}
}
