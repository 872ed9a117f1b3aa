// Command wxphone exchanges WeChat Mini Program phone codes as a service.
//
//	wxphone serve     run the HTTP API (configured by environment and flags)
//	wxphone mock      run the WeChat emulator alone
//	wxphone demo      run the emulator and the service with a demo page
//	wxphone quota     print WeChat's daily quotas of each configured app
//	wxphone rid       look up a failed WeChat call by its rid
//	wxphone version   print the version
//	wxphone healthcheck  probe /healthz of a running serve (exit 0 or 1)
//
// Each subcommand takes -h. This command only wires packages together:
// config loads the settings, the wxphone clients talk to WeChat, service
// adds replay protection, server is the HTTP API, demo runs the demo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wxphone/wxphone/config"
	"github.com/wxphone/wxphone/demo"
	"github.com/wxphone/wxphone/internal/logbuf"
	"github.com/wxphone/wxphone/redis"
	"github.com/wxphone/wxphone/replica"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/wxmock"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

const usage = `wxphone exchanges WeChat Mini Program phone codes.

Usage:
  wxphone serve [flags]     run the HTTP API (see wxphone serve -h)
  wxphone mock [flags]      run the WeChat emulator alone
  wxphone demo [flags]      run the emulator and the service, with a demo page
  wxphone quota [flags]     print WeChat's daily quotas of each configured app
  wxphone rid [flags] RID   look up a failed WeChat call by its rid (secrets masked)
  wxphone version           print the version
  wxphone healthcheck       probe /healthz of a running serve (for HEALTHCHECK)

Run "wxphone <command> -h" for a command's flags.
`

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr, getenv)
	case "mock":
		err = mock(ctx, args[1:], stdout, getenv)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "quota":
		err = quotaCmd(ctx, args[1:], stdout, stderr, getenv)
	case "rid":
		err = ridCmd(ctx, args[1:], stdout, stderr, getenv)
	case "healthcheck":
		err = healthcheck(ctx, args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "wxphone", version())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "wxphone: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "wxphone:", err)
	return 1
}

// errUsage marks a command-line mistake already reported.
var errUsage = errors.New("usage")

// buildVersion is set at link time by release and image builds
// (-ldflags "-X main.buildVersion=v1.2.3"); it is never written at run
// time. Empty: the module version from the build information.
var buildVersion string

// version returns the version: buildVersion, or the module version from
// the build information, with the VCS revision and the Go version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if buildVersion != "" {
		v = buildVersion
	}
	if v == "" {
		v = "(devel)"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v + " " + bi.GoVersion
}

// serve runs the HTTP API until ctx is cancelled.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if errors.Is(err, config.ErrHelp) {
		config.PrintUsage(stdout)
		return flag.ErrHelp
	}
	if err != nil {
		return err
	}
	tp, err := setupTracing(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	defer stopTracing(tp)
	// Info lines are written every 100 ms rather than one system call each;
	// warnings at once. Closed after the replica, so a graceful shutdown
	// writes every line (docs/operations.md, "Logs").
	logOut := logbuf.New(stdout, logbuf.Options{})
	defer logOut.Close()
	r, err := build(ctx, cfg, logOut, replica.Options{TracerProvider: tp.TracerProvider()})
	if err != nil {
		return err
	}
	defer r.Close()
	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, stderr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	return r.ListenAndServe(ctx)
}

// servePprof serves net/http/pprof on addr (config allows loopback only),
// on a mux of its own: the API listener never exposes the profiler.
func servePprof(addr string, stderr io.Writer) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Fprintf(stderr, "wxphone: pprof on http://%s/debug/pprof/\n", ln.Addr())
	return func() { _ = hs.Close() }, nil
}

// envBool reads a boolean variable; unset or unparsable is false.
func envBool(getenv func(string) string, key string) bool {
	b, _ := strconv.ParseBool(getenv(key))
	return b
}

// build wires a replica from cfg (see package replica); go-redis's own
// messages go to the same log.
func build(ctx context.Context, cfg *config.Config, logOut io.Writer, opts ...replica.Options) (*replica.Replica, error) {
	if cfg.RedisURL != "" {
		redis.SetLogger(server.NewLogger(logOut, cfg.LogLevel))
	}
	var o replica.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.LogOut = logOut
	return replica.Build(ctx, cfg, o)
}

// appsFlag collects repeated --app appid:secret values.
type appsFlag []wxmock.App

func (a *appsFlag) String() string { return strconv.Itoa(len(*a)) + " app(s)" }

func (a *appsFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		id, secret, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok || id == "" || secret == "" {
			return errors.New("want appid:secret")
		}
		*a = append(*a, wxmock.App{AppID: id, Secret: secret})
	}
	return nil
}

// mock runs the emulator alone.
func mock(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := newFlags("mock", "Usage: wxphone mock [flags]\n\nRuns the WeChat emulator (endpoints and admin API, docs/emulator.md).\nIts secrets are fake test values, so they may be given on the command line.", stdout)
	var apps appsFlag
	addr := fs.String("addr", envOr(getenv, "WXMOCK_ADDR", demo.DefaultEmulatorAddr), "listen address (env WXMOCK_ADDR)")
	fs.Var(&apps, "app", "emulated app as appid:secret; repeatable (env WXMOCK_APPS, comma-separated); default the demo app")
	prefix := fs.String("load-prefix", getenv("WXMOCK_LOAD_PREFIX"), "load mode: every new code with this prefix is valid once (env WXMOCK_LOAD_PREFIX)")
	ccNum := fs.Bool("country-code-number", false, "send countryCode as a JSON number, like the documentation's example")
	seed := fs.Int64("seed", 0, "non-zero: deterministic tokens and codes")
	h2c := fs.Bool("h2c", envBool(getenv, "WXMOCK_H2C"), "also accept unencrypted HTTP/2 with prior knowledge (env WXMOCK_H2C)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(apps) == 0 {
		if v := getenv("WXMOCK_APPS"); v != "" {
			if err := apps.Set(v); err != nil {
				return fmt.Errorf("WXMOCK_APPS: %w", err)
			}
		}
	}
	return demo.RunEmulator(ctx, demo.EmulatorOptions{Addr: *addr, Apps: apps, LoadPrefix: *prefix, CountryCodeAsNumber: *ccNum, Seed: *seed, H2C: *h2c}, stdout)
}

// runDemo runs the demo.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "Usage: wxphone demo [flags]\n\nRuns the WeChat emulator and the wxphone service on 127.0.0.1 with a generated\nAPI key, and serves a page playing the Mini Program's button.", stdout)
	addr := fs.String("addr", "", "service address (default "+demo.DefaultAddr+" when free, else a random port; loopback only)")
	emuAddr := fs.String("emulator-addr", "", "emulator address (default "+demo.DefaultEmulatorAddr+" when free, else a random port; loopback only)")
	verbose := fs.Bool("v", false, "print the service's JSON request log on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts := demo.Options{Addr: *addr, EmulatorAddr: *emuAddr}
	if *verbose {
		opts.Log = stderr
	}
	return demo.Run(ctx, opts, stdout)
}

// newFlags returns the flag set of a command whose -h prints usage (the
// text before the flag list) and the flags to out.
func newFlags(name, usage string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(out, usage+"\n\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs: flag.ErrHelp for -h, errUsage for a
// mistake fs already reported.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
