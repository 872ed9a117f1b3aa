// Command loadtest measures wxphone serve against the WeChat emulator, both
// run as separate processes built from this repository, and checks the
// project's performance targets side by side:
//
//	added-latency  1,000 req/s, 50 ms upstream: p99 added over direct ≤ 1 ms
//	throughput     zero-latency upstream, closed loop: service ≥ ½ direct
//	fleet-cold     4 replicas on Redis, 10,000 concurrent cold requests:
//	               1 token fetch per app, 1 upstream call per code
//	memory         10,000 requests in flight, 2 s upstream: peak RSS < 150 MB,
//	               goroutines back to baseline
//
// Run it from the repository root:
//
//	go run -C loadtest . -scenario all -write
//
// -smoke runs every scenario with small numbers in a few seconds (CI) and
// leaves the documentation alone unless -write is also given. The numbers
// are benchmark results, never test assertions: the tool exits non-zero only
// when it cannot run, not when a target is missed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Options are the command-line settings; zero values select each
// scenario's defaults.
type Options struct {
	Scenarios       []string
	Duration        time.Duration
	Rate            int
	Concurrency     int
	Replicas        int
	Redis           bool
	UpstreamLatency time.Duration // < 0: scenario default
	Proto           string        // inbound protocol: "" (scenario default), h1, h2c
	UpstreamProto   string        // h1 or h2c
	Smoke           bool
	Write           bool
	KeepLogs        bool
	PprofDir        string
	LogLevel        string
	ExchangeTimeout time.Duration // memory scenarios: WXPHONE_EXCHANGE_TIMEOUT (0: 8s)
	Docs            string        // path of docs/benchmarks.md
	Out             io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	rep, err := Run(ctx, o)
	if rep != nil {
		fmt.Fprintln(out)
		fmt.Fprint(out, rep.Markdown())
	}
	if err != nil {
		return err
	}
	if o.Write {
		if err := rep.Write(o.Docs); err != nil {
			return err
		}
		fmt.Fprintf(out, "\nwrote %s and %d plot(s) under %s\n", o.Docs, len(rep.Plots), filepath.Join(filepath.Dir(o.Docs), "bench"))
	}
	return nil
}

func parseFlags(args []string, out io.Writer) (*Options, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(out)
	o := &Options{Out: out}
	scen := fs.String("scenario", "all", "scenario name, comma-separated names, or all: "+strings.Join(ScenarioNames(), ", "))
	fs.DurationVar(&o.Duration, "duration", 0, "measured duration of each window (0: scenario default)")
	fs.IntVar(&o.Rate, "rate", 0, "open-loop request rate per second (0: scenario default)")
	fs.IntVar(&o.Concurrency, "concurrency", 0, "closed-loop concurrency / requests in flight (0: scenario default)")
	fs.IntVar(&o.Replicas, "replicas", 0, "service replicas (0: scenario default)")
	fs.BoolVar(&o.Redis, "redis", false, "run every scenario on Redis (fleet-cold always does): a private redis-server on a free port when the binary exists, else REDIS_URL")
	fs.DurationVar(&o.UpstreamLatency, "upstream-latency", -1, "latency the emulator adds to the phone endpoint (-1: scenario default)")
	fs.StringVar(&o.Proto, "proto", "", "protocol from the load tool to the service: h1 or h2c (default: per scenario)")
	fs.StringVar(&o.UpstreamProto, "upstream-proto", "h2c", "protocol from the service to the emulator: h1 or h2c")
	fs.BoolVar(&o.Smoke, "smoke", false, "tiny numbers, a few seconds in all (CI); docs untouched unless -write")
	fs.BoolVar(&o.Write, "write", false, "update docs/benchmarks.md (the load section) and docs/bench/*.svg")
	fs.BoolVar(&o.KeepLogs, "keep-logs", false, "keep the processes' logs (their directory is printed)")
	fs.StringVar(&o.PprofDir, "pprof", "", "directory for CPU, heap, allocs and goroutine profiles of the (first) service process")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level of the service processes (info logs one line per request, as in production)")
	fs.DurationVar(&o.ExchangeTimeout, "exchange-timeout", 0, "WXPHONE_EXCHANGE_TIMEOUT of the memory scenarios (0: 8s, below the 10 s request timeout, so exchanges run on their request's goroutine; 15s: the default, detached)")
	fs.StringVar(&o.Docs, "docs", "", "benchmarks file to update (default <repo>/docs/benchmarks.md)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: go run -C loadtest . [flags]\n\nStarts the WeChat emulator and wxphone serve as separate processes, drives load\nand reports latency, throughput, upstream calls, token fetches, errors, RSS and\ngoroutines per scenario.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	names, err := selectScenarios(*scen)
	if err != nil {
		return nil, err
	}
	o.Scenarios = names
	for _, p := range []string{o.Proto, o.UpstreamProto} {
		if p != "" && p != "h1" && p != "h2c" {
			return nil, fmt.Errorf("protocol %q: want h1 or h2c", p)
		}
	}
	if o.UpstreamProto == "" {
		o.UpstreamProto = "h2c"
	}
	if o.Rate < 0 || o.Concurrency < 0 || o.Replicas < 0 || o.Duration < 0 {
		return nil, errors.New("negative -rate, -concurrency, -replicas or -duration")
	}
	return o, nil
}

func selectScenarios(s string) ([]string, error) {
	if s == "" || s == "all" {
		return ScenarioNames(), nil
	}
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if scenarioByName(n) == nil {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", n, strings.Join(ScenarioNames(), ", "))
		}
		out = append(out, n)
	}
	return out, nil
}

// Run runs the selected scenarios and returns their report. A scenario
// that fails to run is reported as such; the error is the first one.
func Run(ctx context.Context, o *Options) (*Report, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	// Before newEnv's build, whose CPU would show in the load average.
	machine := machineFacts(root)
	env, err := newEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	rep := &Report{Machine: machine, Command: commandLine(o), Smoke: o.Smoke}
	var first error
	for _, name := range o.Scenarios {
		if ctx.Err() != nil {
			break
		}
		sc := scenarioByName(name)
		fmt.Fprintf(o.Out, "=== %s: %s\n", sc.Name, sc.Goal)
		start := time.Now()
		res, err := sc.Run(ctx, env)
		if res == nil {
			res = &Result{Scenario: sc}
		}
		res.Scenario = sc
		res.Elapsed = time.Since(start)
		if err != nil {
			res.Failed = err.Error()
			fmt.Fprintf(o.Out, "    FAILED: %v\n", err)
			if first == nil {
				first = fmt.Errorf("%s: %w", name, err)
			}
		}
		for _, t := range res.Targets {
			fmt.Fprintf(o.Out, "    target %s: %s (%s)\n", t.Name, t.Status(), t.Value)
		}
		rep.Results = append(rep.Results, res)
		rep.Plots = append(rep.Plots, res.Plots...)
	}
	if o.KeepLogs {
		fmt.Fprintf(o.Out, "logs kept in %s\n", env.logDir)
	}
	return rep, first
}

func commandLine(o *Options) string {
	parts := []string{"go run -C loadtest ."}
	if len(o.Scenarios) == len(ScenarioNames()) {
		parts = append(parts, "-scenario all")
	} else {
		parts = append(parts, "-scenario "+strings.Join(o.Scenarios, ","))
	}
	if o.Smoke {
		parts = append(parts, "-smoke")
	}
	if o.Duration > 0 {
		parts = append(parts, "-duration "+o.Duration.String())
	}
	if o.Rate > 0 {
		parts = append(parts, fmt.Sprintf("-rate %d", o.Rate))
	}
	if o.Concurrency > 0 {
		parts = append(parts, fmt.Sprintf("-concurrency %d", o.Concurrency))
	}
	if o.Replicas > 0 {
		parts = append(parts, fmt.Sprintf("-replicas %d", o.Replicas))
	}
	if o.Redis {
		parts = append(parts, "-redis")
	}
	if o.UpstreamLatency >= 0 {
		parts = append(parts, "-upstream-latency "+o.UpstreamLatency.String())
	}
	if o.Proto != "" {
		parts = append(parts, "-proto "+o.Proto)
	}
	if o.UpstreamProto != "h2c" {
		parts = append(parts, "-upstream-proto "+o.UpstreamProto)
	}
	if o.ExchangeTimeout > 0 {
		parts = append(parts, "-exchange-timeout "+o.ExchangeTimeout.String())
	}
	if o.LogLevel != "info" {
		parts = append(parts, "-log-level "+o.LogLevel)
	}
	parts = append(parts, "-write")
	return strings.Join(parts, " ")
}
