// Package demo runs the WeChat emulator (wxmock) and the wxphone service in
// one process on 127.0.0.1, with a generated API key and a small page that
// plays the Mini Program's getPhoneNumber button: `wxphone demo`.
//
// The page is served at the service's root. Tapping its button mints a
// code through a demo-only endpoint (standing in for WeChat handing the
// code to the Mini Program), posts it to POST /v1/phone-number with the
// demo key (standing in for the customer backend) and shows the answer.
// Other buttons inject emulator faults so that replays, retries and
// outcome_unknown can be seen. Everything listens on loopback only; the
// demo endpoints also refuse requests whose Host is not a loopback name, so
// a web page elsewhere cannot read the demo key through DNS rebinding.
package demo

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/apisec"
	"github.com/wxphone/wxphone/apisec/sm"
	"github.com/wxphone/wxphone/internal/logbuf"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/ratelimit"
	"github.com/wxphone/wxphone/replica"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

// The emulated Mini Program of the demo and of `wxphone mock` without
// --app. The secret is a fake one, known to the emulator only.
const (
	DemoAppID  = "wxdemo0123456789"
	DemoSecret = "demo-secret-not-for-production"
)

// Default addresses, used when free.
const (
	DefaultAddr         = "127.0.0.1:8080"
	DefaultEmulatorAddr = "127.0.0.1:8081"
)

//go:embed web
var webFS embed.FS

// Options configures Run.
type Options struct {
	// Addr is the service's listen address (loopback only). Empty: DefaultAddr
	// when free, else a random port.
	Addr string
	// EmulatorAddr is the emulator's listen address (loopback only).
	// Empty: DefaultEmulatorAddr when free, else a random port.
	EmulatorAddr string
	// Log receives the service's JSON request log, written every 100 ms
	// (warnings at once) and completely by the time Run returns; nil
	// discards it.
	Log io.Writer
	// LogLevel is the level of Log.
	LogLevel slog.Level
	// Seed makes the emulator deterministic when non-zero.
	Seed int64
	// OnReady, if set, is called once both servers listen.
	OnReady func(Info)
}

// Info describes a running demo.
type Info struct {
	ServiceURL  string // e.g. http://127.0.0.1:8080
	EmulatorURL string // e.g. http://127.0.0.1:8081
	APIKey      string // may call POST /v1/phone-number
	TokenAPIKey string // may call the access-token endpoints
	AppID       string // the emulated Mini Program
}

// Run starts the emulator and the service, prints the demo key and
// ready-to-paste curl commands to out, and serves until ctx is cancelled,
// then shuts both down gracefully.
func Run(ctx context.Context, opts Options, out io.Writer) error {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: DemoAppID, Secret: DemoSecret}}, Seed: opts.Seed})
	if err != nil {
		return err
	}
	emuLn, err := listen(opts.EmulatorAddr, DefaultEmulatorAddr)
	if err != nil {
		return fmt.Errorf("demo: emulator: %w", err)
	}
	svcLn, err := listen(opts.Addr, DefaultAddr)
	if err != nil {
		_ = emuLn.Close()
		return fmt.Errorf("demo: service: %w", err)
	}
	defer svcLn.Close()
	info := Info{
		ServiceURL: "http://" + svcLn.Addr().String(), EmulatorURL: "http://" + emuLn.Addr().String(),
		APIKey: "demo_" + randomHex(16), TokenAPIKey: "demotok_" + randomHex(16), AppID: DemoAppID,
	}

	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	emuDone := make(chan struct{})
	go func() { defer close(emuDone); _ = emuSrv.Serve(emuLn) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if emuSrv.Shutdown(sctx) != nil {
			_ = emuSrv.Close()
		}
		<-emuDone
	}()

	var logw io.Writer = io.Discard
	if opts.Log != nil {
		// As serve's: info lines every 100 ms, warnings at once; closed
		// after both backends (deferred before them), so none is lost.
		lw := logbuf.New(opts.Log, logbuf.Options{})
		defer lw.Close()
		logw = lw
	}
	// Both backends share the log and the metrics; each is one replica
	// wired as serve's is.
	spec := replica.Spec{
		Apps:   []wxphone.Config{{AppID: DemoAppID, Secret: DemoSecret, BaseURL: info.EmulatorURL}},
		Server: server.Config{APIKeys: []wxphone.Secret{wxphone.Secret(info.APIKey)}, RateLimit: ratelimit.Limit{Rate: 20, Burst: 40}},
		Logger: server.NewLogger(logw, opts.LogLevel), Metrics: metrics.New(),
	}
	secure, err := secureBackend(ctx, emu, spec)
	if err != nil {
		return err
	}
	defer secure.Close()
	spec.Server.TokenAPIKeys = []wxphone.Secret{wxphone.Secret(info.TokenAPIKey)}
	spec.Server.Fallback = newPage(emu, info, http.StripPrefix(SecurePrefix, secure.Server.Handler()))
	plain, err := replica.Wire(ctx, spec)
	if err != nil {
		return err
	}
	defer plain.Close()
	printBanner(out, info)
	if opts.OnReady != nil {
		opts.OnReady(info)
	}
	return plain.Run(ctx, svcLn)
}

// SecurePrefix is the path prefix of the demo's second backend, which
// exchanges codes in WeChat's API security mode (encrypted and signed):
// POST /secure/v1/phone-number. The page's switch selects it.
const SecurePrefix = "/secure"

// secureBackend configures the emulator's API security mode for the demo
// app (fresh keys, as a developer sets them in the MP console; plaintext
// exchanges stay allowed for the main backend) and wires a second replica
// from spec whose client seals every exchange; the page serves its API
// under SecurePrefix. It fetches its token on the first exchange.
func secureBackend(ctx context.Context, emu *wxmock.Server, spec replica.Spec) (*replica.Replica, error) {
	keys, err := demoAPISecurity(emu)
	if err != nil {
		return nil, err
	}
	app := spec.Apps[0]
	app.APISecurity = keys
	spec.Apps, spec.NoWarm = []wxphone.Config{app}, true
	return replica.Wire(ctx, spec)
}

// demoAPISecurity generates the demo app's keys of the API security mode
// and registers them with the emulator.
func demoAPISecurity(emu *wxmock.Server) (*apisec.Keys, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	signer, err := apisec.NewRSASigner(rk)
	if err != nil {
		return nil, err
	}
	appKey, err := apisec.NewAppKey("demo-app-key-1", apisec.RSAwithSHA256, signer)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	sym, err := apisec.NewAESKey("demo-sym-key-1", raw)
	clear(raw)
	if err != nil {
		return nil, err
	}
	in, err := emu.SetAPISecurity(DemoAppID, wxmock.APISecurity{SymKey: sym, AppKeySN: appKey.SN(), AppKey: appKey.Verifier()})
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(in.PEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	pc, err := apisec.NewRSAPlatformCert(in.SN, cert)
	if err != nil {
		return nil, err
	}
	return &apisec.Keys{AppID: DemoAppID, Sym: sym, App: appKey, Platform: []*apisec.PlatformCert{pc}}, nil
}

// listen listens on addr, or on def when addr is empty and def is free,
// else on a random loopback port. Only loopback addresses are accepted.
func listen(addr, def string) (net.Listener, error) {
	explicit := addr != ""
	if !explicit {
		addr = def
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bad address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("the demo listens on loopback addresses only, not %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil || explicit {
		return ln, err
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("demo: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}

func printBanner(out io.Writer, in Info) {
	fmt.Fprintf(out, `wxphone demo: the WeChat emulator and the wxphone service, on this machine only.

  service:   %[1]s   (open %[1]s/ in a browser for the interactive page)
  emulator:  %[2]s   (admin API under %[2]s/admin/)
  appid:     %[3]s
  API key:   %[4]s   (demo only, valid until this process exits)
  token key: %[5]s   (for the central access-token endpoint)

# 1. Mint a code, as WeChat would hand one to the Mini Program (emulator admin API):
CODE=$(curl -s -X POST %[2]s/admin/phone-codes -H 'Content-Type: application/json' \
  -d '{"purePhoneNumber":"13800138000"}' | sed -E 's/.*"code":"([^"]+)".*/\1/')

# 2. Exchange it, as your backend would (run it twice: the second answer is a replay):
curl -s -X POST %[1]s/v1/phone-number -H 'Authorization: Bearer %[4]s' \
  -H 'Content-Type: application/json' -d "{\"code\":\"$CODE\"}"

# 3. Make WeChat drop its answer after using the next code, then exchange a new code:
curl -s -X POST %[2]s/admin/faults -H 'Content-Type: application/json' \
  -d '{"endpoint":"phone","kind":"drop_after_consume","count":1}'

# 4. Mint another code (step 1), then exchange it in WeChat's API security mode
#    (encrypted request, signed and verified answer):
curl -s -X POST %[1]s/secure/v1/phone-number -H 'Authorization: Bearer %[4]s' \
  -H 'Content-Type: application/json' -d "{\"code\":\"$CODE\"}"

# 5. The central access-token endpoint:
curl -s %[1]s/v1/access-token -H 'Authorization: Bearer %[5]s'

Press Ctrl-C to stop.
`, in.ServiceURL, in.EmulatorURL, in.AppID, in.APIKey, in.TokenAPIKey)
}

// EmulatorMaxStreams is the HTTP/2 streams one client connection may have
// open on the emulator served with h2c.
const EmulatorMaxStreams = 1 << 16

// EmulatorOptions configures RunEmulator.
type EmulatorOptions struct {
	// Addr is the listen address; default DefaultEmulatorAddr.
	Addr string
	// Apps are the emulated Mini Programs; default the demo app.
	Apps []wxmock.App
	// LoadPrefix enables load mode (see wxmock.Options.LoadPrefix).
	LoadPrefix string
	// CountryCodeAsNumber sends countryCode as a JSON number.
	CountryCodeAsNumber bool
	// Seed makes the emulator deterministic when non-zero.
	Seed int64
	// H2C also accepts unencrypted HTTP/2 with prior knowledge (for a
	// client such as `wxphone serve --upstream-h2c` or a load tool).
	H2C bool
	// Logger receives the emulator's logs; nil discards them.
	Logger *slog.Logger
	// OnReady, if set, is called with the base URL once listening.
	OnReady func(baseURL string)
}

// RunEmulator serves the WeChat emulator alone (`wxphone mock`) until ctx
// is cancelled. It prints the base URL, the admin base URL and the apps to
// out (the demo app's fake secret included; secrets given in opts.Apps are
// not printed).
func RunEmulator(ctx context.Context, opts EmulatorOptions, out io.Writer) error {
	apps, demoApp := opts.Apps, false
	if len(apps) == 0 {
		apps, demoApp = []wxmock.App{{AppID: DemoAppID, Secret: DemoSecret}}, true
	}
	emu, err := wxmock.New(wxmock.Options{Apps: apps, LoadPrefix: opts.LoadPrefix, CountryCodeAsNumber: opts.CountryCodeAsNumber, Seed: opts.Seed, Logger: opts.Logger,
		KeyExtension: sm.Extension{}})
	if err != nil {
		return err
	}
	addr := opts.Addr
	if addr == "" {
		addr = DefaultEmulatorAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mock: %w", err)
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "wxmock: WeChat emulator listening on %s\n  admin API: %s/admin/\n", base, base)
	for _, a := range apps {
		if demoApp {
			fmt.Fprintf(out, "  app: %s (secret %s, a fake for the emulator only)\n", a.AppID, a.Secret)
		} else {
			fmt.Fprintf(out, "  app: %s\n", a.AppID)
		}
	}
	if opts.LoadPrefix != "" {
		fmt.Fprintf(out, "  load mode: every new code starting with %s is valid once\n", strconv.Quote(opts.LoadPrefix))
	}
	fmt.Fprintf(out, "Point wxphone serve at it with WX_API_BASE=%s\n", base)
	hs := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	if opts.H2C {
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
		// One connection may carry every request of a load test: a
		// client then needs no second connection (Go's default is 250
		// streams, past which a client dials more).
		hs.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: EmulatorMaxStreams}
		fmt.Fprintln(out, "  h2c: unencrypted HTTP/2 with prior knowledge accepted")
	}
	errc := make(chan error, 1)
	// Through emu.Listener, reset_after_consume faults can choose the
	// RST_STREAM error code of an HTTP/2 stream.
	go func() { errc <- hs.Serve(emu.Listener(ln)) }()
	if opts.OnReady != nil {
		opts.OnReady(base)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
