// Command peers benchmarks wxphone's phone-code exchange against peer Go
// SDKs (silenceper/wechat v2, medivhzhan/weapp v3, ArtisanCloud/PowerWeChat
// v3, fastwego/miniprogram), all driven in one process against one wxmock
// emulator that runs in a child process.
//
//	cd bench/peers && go run .          full run, prints the Markdown section
//	cd bench/peers && go run . -write   ... and writes it into docs/benchmarks.md
//	cd bench/peers && go run . -smoke   a few seconds, for CI (writes nothing)
//	cd bench/peers && go run . -profile /tmp/prof -profile-sdk wxphone
//
// From the repository root, "go -C bench/peers run ." does the same. It lives
// in its own module so that the peers' dependencies never enter the main
// module (which is also why "go run ./bench/peers" from the root does not
// work: the main module does not contain it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	maybeRunEmulator()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	smoke       bool
	write       bool
	out         string
	reps        int
	dur, warm   time.Duration
	levels      []int
	coldN       int
	deadline    time.Duration
	latency     time.Duration
	tuned       bool
	sdks        []string
	profileDir  string
	profileSDK  string
	profileMode string
	profileConc int
	quiet       bool
	args        []string
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{args: args}
	var levels, sdks string
	fs.BoolVar(&c.smoke, "smoke", false, "run everything briefly (CI); implies small -reps/-dur/-warm/-latency unless given")
	fs.BoolVar(&c.write, "write", false, "write the results section into the -out file (between the peers markers)")
	fs.StringVar(&c.out, "out", "", "docs file to update with -write (default: docs/benchmarks.md of the main tree)")
	fs.IntVar(&c.reps, "reps", 5, "repetitions of every cell (median reported)")
	fs.DurationVar(&c.dur, "dur", time.Second, "measured duration of a cell")
	fs.DurationVar(&c.warm, "warm", 250*time.Millisecond, "warm-up duration before every cell")
	fs.StringVar(&levels, "levels", "1,16,128,1024", "concurrency levels")
	fs.IntVar(&c.coldN, "cold", 200, "concurrent first calls in the cold-burst scenario")
	fs.DurationVar(&c.deadline, "deadline", time.Second, "caller deadline in the slow-upstream scenario")
	fs.DurationVar(&c.latency, "latency", 3*time.Second, "injected latency in the slow-upstream scenario")
	fs.BoolVar(&c.tuned, "tuned", true, "also measure every peer with our tuned transport")
	fs.StringVar(&sdks, "sdks", strings.Join(allSDKs, ","), "SDKs to drive (wxphone is always included)")
	fs.StringVar(&c.profileDir, "profile", "", "instead of the comparison, write CPU and allocs profiles of one SDK's exchange loop to this directory")
	fs.StringVar(&c.profileSDK, "profile-sdk", sdkOurs, "SDK to profile with -profile (or \"floor\", the hand-written floor client)")
	fs.StringVar(&c.profileMode, "profile-mode", modeDefault, "transport mode of the profiled SDK")
	fs.IntVar(&c.profileConc, "profile-conc", 128, "concurrency of the profiled run")
	fs.BoolVar(&c.quiet, "q", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.smoke {
		if !set["reps"] {
			c.reps = 1
		}
		if !set["dur"] {
			c.dur = 60 * time.Millisecond
		}
		if !set["warm"] {
			c.warm = 20 * time.Millisecond
		}
		if !set["deadline"] {
			c.deadline = 100 * time.Millisecond
		}
		if !set["latency"] {
			c.latency = 300 * time.Millisecond
		}
		if !set["cold"] {
			c.coldN = 50
		}
	}
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad -levels entry %q", f)
		}
		c.levels = append(c.levels, n)
	}
	c.sdks = []string{sdkOurs}
	for _, s := range strings.Split(sdks, ",") {
		s = strings.TrimSpace(s)
		if s == "" || s == sdkOurs {
			continue
		}
		if _, ok := sdkModules[s]; !ok {
			return nil, fmt.Errorf("unknown SDK %q (have %s)", s, strings.Join(allSDKs, ", "))
		}
		c.sdks = append(c.sdks, s)
	}
	if c.reps < 1 || c.dur <= 0 || c.warm < 0 || c.coldN < 1 {
		return nil, errors.New("-reps, -dur and -cold must be positive")
	}
	if c.latency <= c.deadline {
		return nil, errors.New("-latency must exceed -deadline")
	}
	if c.out == "" {
		c.out = defaultOut()
	}
	return c, nil
}

// moduleDir finds bench/peers: from the source path recorded at build time,
// else from the working directory.
func moduleDir() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Dir(file)
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	wd, _ := os.Getwd()
	for _, d := range []string{wd, filepath.Join(wd, "bench", "peers")} {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/wxphone/wxphone/bench/peers") {
			return d
		}
	}
	return wd
}

func defaultOut() string {
	return filepath.Join(moduleDir(), "..", "..", "docs", "benchmarks.md")
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "peers:", err)
		return 2
	}
	if cfg.profileDir != "" {
		if err := runProfile(cfg, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "peers:", err)
			return 1
		}
		return 0
	}
	rep, err := runBench(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "peers:", err)
		return 1
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if cfg.write {
		if err := writeSection(cfg.out, md); err != nil {
			fmt.Fprintln(stderr, "peers:", err)
			return 1
		}
		fmt.Fprintln(stderr, "peers: wrote", cfg.out)
	}
	return 0
}

func newEnv() (*env, func(), error) {
	scratch, err := os.MkdirTemp("", "wxphone-peers-")
	if err != nil {
		return nil, nil, err
	}
	emu, err := startEmulator()
	if err != nil {
		_ = os.RemoveAll(scratch)
		return nil, nil, err
	}
	e := &env{emu: emu, emuHost: hostOf(emu.URL), scratch: scratch}
	return e, func() { emu.Close(); _ = os.RemoveAll(scratch) }, nil
}

func (c *config) logf(stderr io.Writer) func(string, ...any) {
	return func(format string, args ...any) {
		if !c.quiet {
			fmt.Fprintf(stderr, "peers: "+format+"\n", args...)
		}
	}
}

func runBench(cfg *config, stderr io.Writer) (*report, error) {
	logf := cfg.logf(stderr)
	e, cleanup, err := newEnv()
	if err != nil {
		return nil, err
	}
	defer cleanup()

	rep := &report{Versions: map[string]string{}}
	for _, s := range allSDKs {
		rep.Versions[s] = moduleVersion(sdkModules[s])
	}
	rep.Meta = meta{
		Date:      time.Now(),
		Command:   command(cfg.args),
		GoVersion: runtime.Version(),
		OSArch:    runtime.GOOS + "/" + runtime.GOARCH,
		CPUModel:  cpuModel(),
		Tree:      treeState(),
		CPUs:      runtime.NumCPU(),
		MaxProcs:  runtime.GOMAXPROCS(0),
		EmuPid:    e.emu.Pid(),
		Smoke:     cfg.smoke,
		Reps:      cfg.reps,
		Warm:      cfg.warm,
		Dur:       cfg.dur,
		Levels:    cfg.levels,
		ColdN:     cfg.coldN,
		Deadline:  cfg.deadline,
		Latency:   cfg.latency,
	}

	// Scenarios first, while the emulator's per-code statistics are small.
	logf("scenarios: cold burst and faults")
	rep.Scenarios = e.runScenarios(cfg.sdks, scenarioOpts{coldN: cfg.coldN, deadline: cfg.deadline, latency: cfg.latency, logf: logf})
	_ = e.emu.ResetStats()

	var insts []*instance
	defer func() {
		for _, in := range insts {
			in.close()
		}
	}()
	// The floor runs in every cell, next to ours.
	floor, err := e.newFloorInstance("wxb-floor")
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	insts = append(insts, floor)
	rep.Labels = append(rep.Labels, floor.Label())
	for _, s := range cfg.sdks {
		modes := []string{modeDefault}
		if cfg.tuned && s != sdkOurs {
			modes = append(modes, modeTuned)
		}
		for _, m := range modes {
			in, err := e.newInstance(s, m, "wxb-"+s+"-"+m)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", s, m, err)
			}
			insts = append(insts, in)
			rep.Labels = append(rep.Labels, in.Label())
			// First call: fetch a token, check the path works end to end.
			in.enter()
			o := e.call(in, newCode(), 30*time.Second)
			in.leave()
			if !o.OK {
				logf("%s: first exchange failed: %s", in.Label(), o.Text)
			}
		}
	}

	// Harness baseline: the loop with an exchange that does nothing.
	noop := &instance{SDK: "noop", Mode: modeDefault, enter: func() {}, leave: func() {}, close: func() {},
		exchange: func(context.Context, string) (string, error) { return "", nil }}
	b := closedLoop(noop, 128, cfg.dur/2+time.Millisecond, newCodes(200_000), false)
	rep.Meta.Baseline = &b

	logf("throughput: %d instances × %d levels × %d reps", len(insts), len(cfg.levels), cfg.reps)
	rep.Cells = runMatrix(insts, matrixOpts{levels: cfg.levels, reps: cfg.reps, warm: cfg.warm, dur: cfg.dur, logf: logf, emu: e.emu})
	return rep, nil
}

func runProfile(cfg *config, stdout, stderr io.Writer) error {
	logf := cfg.logf(stderr)
	e, cleanup, err := newEnv()
	if err != nil {
		return err
	}
	defer cleanup()
	var in *instance
	if cfg.profileSDK == sdkFloor {
		in, err = e.newFloorInstance("wxb-prof-floor")
	} else {
		in, err = e.newInstance(cfg.profileSDK, cfg.profileMode, "wxb-prof-"+cfg.profileSDK)
	}
	if err != nil {
		return err
	}
	defer in.close()
	in.enter()
	o := e.call(in, newCode(), 30*time.Second)
	in.leave()
	if !o.OK {
		return fmt.Errorf("first exchange failed: %s", o.Text)
	}
	r, err := profileInstance(in, cfg.profileConc, cfg.warm, cfg.dur, cfg.profileDir)
	if err != nil {
		return err
	}
	logf("profiled %s c=%d", in.Label(), cfg.profileConc)
	fmt.Fprintf(stdout, "%s c=%d: %.0f ex/s, %.2f allocs/op, %.0f B/op, errors %d; profiles in %s\n",
		in.Label(), cfg.profileConc, r.Rate(), r.AllocsPerOp(), r.BytesPerOp(), r.Errors, cfg.profileDir)
	return nil
}

func command(args []string) string {
	s := "cd bench/peers && go run ."
	if len(args) > 0 {
		s += " " + strings.Join(args, " ")
	}
	return s
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	n := 0
	model := ""
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "processor":
			n++
		}
	}
	if model == "" {
		model = "unknown"
	}
	return fmt.Sprintf("%s (/proc/cpuinfo: %d processors)", model, n)
}

// treeState names the main tree's commit and whether it had uncommitted
// changes outside docs/ (which -write rewrites), since the library is
// measured from the working tree.
func treeState() string {
	root := filepath.Join(moduleDir(), "..", "..")
	head, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(head))
	st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs").Output()
	if err == nil {
		if t := strings.TrimSpace(string(st)); t != "" {
			n := len(strings.Split(t, "\n"))
			s += fmt.Sprintf(" + uncommitted changes to %d tracked files", n)
		}
	}
	return s
}
