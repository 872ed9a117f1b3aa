package wxphone

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/wxmock"
)

// benchClient is a warm Client against an emulator in load mode (every
// fresh code starting with "load-" is a valid phone code) behind a real
// loopback HTTP server.
func benchClient(b *testing.B) *Client {
	b.Helper()
	emu := newEmulator(b, func(o *wxmock.Options) { o.LoadPrefix = "load-" })
	srv := httptest.NewServer(emu)
	b.Cleanup(srv.Close)
	hc := NewHTTPClient()
	b.Cleanup(hc.CloseIdleConnections)
	c := newTestClient(b, Config{AppID: testAppID, Secret: testSecret, BaseURL: srv.URL, HTTPClient: hc})
	if err := c.Warm(context.Background()); err != nil {
		b.Fatal(err)
	}
	return c
}

// loadCode returns a fresh load-mode code. It costs the benchmark one
// allocation per exchange (the string).
func loadCode(buf []byte, n int64) string {
	return string(strconv.AppendInt(append(buf[:0], "load-"...), n, 10))
}

// BenchmarkPhoneNumber is a full exchange: token from memory, HTTP round
// trip to the emulator, decoding and checks.
func BenchmarkPhoneNumber(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	var buf [32]byte
	var n int64
	cpu := startCPU()
	defer cpu.report(b)
	b.ReportAllocs()
	for b.Loop() {
		n++
		if _, err := c.PhoneNumber(ctx, loadCode(buf[:], n)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPhoneNumberParallel(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	var n atomic.Int64
	cpu := startCPU()
	defer cpu.report(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var buf [32]byte
		for pb.Next() {
			if _, err := c.PhoneNumber(ctx, loadCode(buf[:], n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTokenHot is Token on a warm manager: the request path's cost of
// getting a token.
func BenchmarkTokenHot(b *testing.B) {
	env := newMemEnv(b)
	m := newManager(b, env.config())
	ctx := context.Background()
	if err := m.Warm(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Token(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenHotParallel(b *testing.B) {
	env := newMemEnv(b)
	m := newManager(b, env.config())
	ctx := context.Background()
	if err := m.Warm(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Token(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDecodePhoneResponse decodes a real-shaped answer the way the
// exchange does (decodeAnswer, then checkPhone).
func BenchmarkDecodePhoneResponse(b *testing.B) {
	bodies := map[string]string{
		"success":     phoneStubBody,
		"cc_number":   `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`,
		"error_40029": `{"errcode":40029,"errmsg":"invalid code rid: 6566d6c1-0e5c6c4b-3a6c0f3f"}`,
	}
	for name, body := range bodies {
		b.Run(name, func(b *testing.B) {
			in := []byte(body)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = decodePhoneAnswer(in, "code-0123456789abcdef")
			}
		})
	}
}

// cannedTransport answers every request with the same 200 body, without a
// network or a server: what remains is the client's own cost.
type cannedTransport struct {
	body   []byte
	header http.Header // nil: none
}

func (c cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	h := c.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(bytes.NewReader(c.body)), Request: req}, nil
}

// BenchmarkPhoneNumberClientOnly isolates the client side of an exchange
// (the canned transport itself costs 3 allocations per call).
func BenchmarkPhoneNumberClientOnly(b *testing.B) {
	hc := &http.Client{Transport: cannedTransport{body: []byte(phoneStubBody)}}
	c := newTestClient(b, Config{AppID: testAppID, BaseURL: "http://127.0.0.1", HTTPClient: hc,
		TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789", ExpiresAt: time.Now().Add(time.Hour)})})
	ctx := context.Background()
	cpu := startCPU()
	defer cpu.report(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.PhoneNumber(ctx, "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSecureClient is benchClient in WeChat's API security mode: every
// exchange is sealed (AES-256-GCM, RSA-PSS signature) and every answer
// verified and decrypted; the emulator does the platform's half (verify,
// decrypt, encrypt, sign) on the same machine.
func benchSecureClient(b *testing.B) *Client {
	b.Helper()
	emu := newEmulator(b, func(o *wxmock.Options) { o.LoadPrefix = "load-" })
	keys := secSetup(b, emu, 0)
	srv := httptest.NewServer(emu)
	b.Cleanup(srv.Close)
	hc := NewHTTPClient()
	b.Cleanup(hc.CloseIdleConnections)
	c := newTestClient(b, Config{AppID: testAppID, Secret: testSecret, BaseURL: srv.URL, HTTPClient: hc, APISecurity: keys})
	if err := c.Warm(context.Background()); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkPhoneNumberSealed is BenchmarkPhoneNumber in the API security
// mode (client and emulator CPU both count).
func BenchmarkPhoneNumberSealed(b *testing.B) {
	c := benchSecureClient(b)
	ctx := context.Background()
	var buf [32]byte
	var n int64
	cpu := startCPU()
	defer cpu.report(b)
	b.ReportAllocs()
	for b.Loop() {
		n++
		if _, err := c.PhoneNumber(ctx, loadCode(buf[:], n)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPhoneNumberSealedParallel(b *testing.B) {
	c := benchSecureClient(b)
	ctx := context.Background()
	var n atomic.Int64
	cpu := startCPU()
	defer cpu.report(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var buf [32]byte
		for pb.Next() {
			if _, err := c.PhoneNumber(ctx, loadCode(buf[:], n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPhoneNumberClientOnlySealed is BenchmarkPhoneNumberClientOnly
// in the API security mode: the client's own cost of sealing a request
// (encrypt, sign) and opening the answer (verify, decrypt). The canned
// answer is sealed once by a platform key, with a timestamp that stays
// within the 5-minute window for the benchmark's run.
func BenchmarkPhoneNumberClientOnlySealed(b *testing.B) {
	emu := newEmulator(b)
	keys := secSetup(b, emu, 0)
	pk, err := apisec.GeneratePlatformKey("bench-platform", testAppID, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	cert, _ := pk.Certificate(apisec.RSAwithSHA256)
	keys.Platform = []*apisec.PlatformCert{cert}
	p := &apisec.Platform{AppID: testAppID, Sym: keys.Sym, Key: pk}
	body, h, err := p.SealResponse("http://127.0.0.1/wxa/business/getuserphonenumber", []byte(phoneStubBody), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: cannedTransport{body: body, header: h}}
	c := newTestClient(b, Config{AppID: testAppID, BaseURL: "http://127.0.0.1", HTTPClient: hc, APISecurity: keys,
		TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789", ExpiresAt: time.Now().Add(time.Hour)})})
	ctx := context.Background()
	cpu := startCPU()
	defer cpu.report(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.PhoneNumber(ctx, "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuMeter reports the process's CPU time (user + system, all goroutines:
// the client, the in-process emulator, the GC) per operation, which the
// shared machine's load disturbs far less than wall time.
type cpuMeter struct{ start time.Duration }

func startCPU() cpuMeter { return cpuMeter{start: processCPU()} }

func (m cpuMeter) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64((processCPU()-m.start).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPhoneNumberStack compares, in one run, an exchange through
// wxphone's own HTTP stack (Config.HTTPClient unset: the direct path,
// Transport.RoundTrip without http.Client) with the same exchange through
// an http.Client over the same kind of transport (NewHTTPClient passed as
// Config.HTTPClient). TestExchangeAllocBudget pins the difference.
func BenchmarkPhoneNumberStack(b *testing.B) {
	for _, direct := range []bool{true, false} {
		b.Run(map[bool]string{true: "direct", false: "http.Client"}[direct], func(b *testing.B) {
			emu := newEmulator(b, func(o *wxmock.Options) { o.LoadPrefix = "load-" })
			srv := httptest.NewServer(emu)
			b.Cleanup(srv.Close)
			cfg := Config{AppID: testAppID, Secret: testSecret, BaseURL: srv.URL}
			if !direct {
				cfg.HTTPClient = NewHTTPClient()
				b.Cleanup(cfg.HTTPClient.CloseIdleConnections)
			}
			c := newTestClient(b, cfg)
			if direct {
				b.Cleanup(c.up.direct.CloseIdleConnections)
			}
			ctx := context.Background()
			if err := c.Warm(ctx); err != nil {
				b.Fatal(err)
			}
			var buf [32]byte
			var n int64
			b.ReportAllocs()
			for b.Loop() {
				n++
				if _, err := c.PhoneNumber(ctx, loadCode(buf[:], n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
