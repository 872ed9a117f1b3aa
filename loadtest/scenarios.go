package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

func sortedKeys[K int64 | int | string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Scenario is one named measurement with its targets.
type Scenario struct {
	Name string
	Goal string
	Run  func(ctx context.Context, e *env) (*Result, error)
}

var scenarios = []*Scenario{
	{Name: "added-latency", Goal: "1,000 req/s, 50 ms upstream, 1 replica: p99 added latency ≤ 1 ms over calling the emulator directly", Run: runAddedLatency},
	{Name: "throughput", Goal: "zero-latency upstream, closed loop: service throughput ≥ ½ the emulator's direct throughput at the same concurrency", Run: runThroughput},
	{Name: "fleet-cold", Goal: "4 replicas on Redis, 10,000 concurrent cold-start requests: exactly 1 token fetch per app and 1 upstream call per code", Run: runFleetCold},
	{Name: "memory", Goal: "10,000 requests in flight against a 2 s upstream (h2c to the service): peak RSS < 150 MB, goroutines back to baseline", Run: func(ctx context.Context, e *env) (*Result, error) { return runMemory(ctx, e, "memory", "h2c") }},
	{Name: "memory-h1", Goal: "the memory scenario with HTTP/1.1 to the service (a connection per request in flight), for comparison", Run: func(ctx context.Context, e *env) (*Result, error) { return runMemory(ctx, e, "memory-h1", "h1") }},
}

// ScenarioNames lists the scenarios in run order.
func ScenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.Name)
	}
	return out
}

func scenarioByName(n string) *Scenario {
	for _, s := range scenarios {
		if s.Name == n {
			return s
		}
	}
	return nil
}

// Result is what a scenario measured.
type Result struct {
	Scenario *Scenario
	Setup    []string
	Targets  []Target
	Tables   []Table
	Plots    []Plot
	Failed   string
	Elapsed  time.Duration
}

// Target is one checked goal.
type Target struct {
	Name  string
	Value string
	Met   bool
}

// Status is MET or MISSED.
func (t Target) Status() string {
	if t.Met {
		return "MET"
	}
	return "MISSED"
}

// Table is a Markdown table.
type Table struct {
	Title  string
	Header []string
	Rows   [][]string
}

// pick returns the flag value when set, else the scenario's full or smoke
// default.
func pick[T comparable](flag T, full, smoke T, isSmoke bool) T {
	var zero T
	if flag != zero {
		return flag
	}
	if isSmoke {
		return smoke
	}
	return full
}

func (e *env) latency(def time.Duration) time.Duration {
	if e.o.UpstreamLatency >= 0 {
		return e.o.UpstreamLatency
	}
	return def
}

func (e *env) proto(def string) string {
	if e.o.Proto != "" {
		return e.o.Proto
	}
	return def
}

// oneAppSpec is the cluster of the one-app scenarios: the service waits
// for its token before the load, on Redis only with -redis.
func (e *env) oneAppSpec(phoneLatency time.Duration) clusterSpec {
	return clusterSpec{Apps: 1, Replicas: max(e.o.Replicas, 1), Redis: e.o.Redis, H2CIn: true, WaitReady: true, PhoneLatency: phoneLatency}
}

// svcWindow is one measured window against the service with everything
// observed around it.
type svcWindow struct {
	m             *measurement
	before, after []svcCounters
	emu           *emuStats
	samp          *sampler
}

// delta sums a counter's increase over the window across the replicas.
func (w *svcWindow) delta(f func(svcCounters) float64) float64 {
	var t float64
	for i := range w.after {
		t += f(w.after[i]) - f(w.before[i])
	}
	return t
}

func (c *cluster) counters() []svcCounters {
	out := make([]svcCounters, len(c.svcURLs))
	for i, u := range c.svcURLs {
		out[i], _ = readCounters(u)
	}
	return out
}

// measureService resets the emulator's statistics, runs load and collects
// the service's counters, RSS and goroutines around it.
func (c *cluster) measureService(ctx context.Context, name string, load func(*target) *measurement, dur time.Duration) (*svcWindow, error) {
	if err := c.resetStats(); err != nil {
		return nil, err
	}
	w := &svcWindow{before: c.counters()}
	w.samp = c.sample()
	profDone := make(chan struct{})
	if c.pprofURL != "" && dur >= time.Second {
		go func() {
			defer close(profDone)
			_ = c.profile("profile", fmt.Sprintf("?seconds=%d", int(dur.Seconds())), name+"-cpu.pprof")
		}()
		go func() {
			time.Sleep(dur / 4)
			_ = c.profile("heap", "?gc=1", name+"-heap.pprof")
			_ = c.profile("goroutine", "", name+"-goroutine.pprof")
		}()
	} else {
		close(profDone)
	}
	w.m = load(c.serviceTarget(name))
	w.samp.Stop()
	<-profDone
	_ = c.profile("allocs", "", name+"-allocs.pprof")
	w.after = c.counters()
	var err error
	w.emu, err = c.stats()
	return w, err
}

func (c *cluster) measureDirect(name string, load func(*target) *measurement) (*measurement, error) {
	t, err := c.directTarget(name)
	if err != nil {
		return nil, err
	}
	return load(t), nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func mb(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func errorsText(m *measurement) string {
	if len(m.Errors) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range sortedKeys(m.Errors) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m.Errors[k]))
	}
	return strings.Join(parts, "; ")
}

// pooled merges measurements of the same kind (ABBA order).
func pooled(label string, ms ...*measurement) *measurement {
	out := &measurement{Label: label, Errors: map[string]int{}}
	for _, m := range ms {
		out.Requests += m.Requests
		out.OK += m.OK
		out.Elapsed += m.Elapsed
		out.Lat = append(out.Lat, m.Lat...)
		out.InFlight = max(out.InFlight, m.InFlight)
		for k, v := range m.Errors {
			out.Errors[k] += v
		}
	}
	slices.Sort(out.Lat)
	return out
}

// latencyRows are the common rows comparing the service with direct.
func latencyRows(svc, dir *measurement) [][]string {
	added := func(q float64) string {
		s, d := svc.Pct(q), dir.Pct(q)
		ratio := 0.0
		if d > 0 {
			ratio = float64(s) / float64(d)
		}
		return fmt.Sprintf("%+.2f ms (×%.3f)", float64(s-d)/float64(time.Millisecond), ratio)
	}
	row := func(name string, f func(*measurement) string, add string) []string {
		return []string{name, f(svc), f(dir), add}
	}
	return [][]string{
		row("requests (ok)", func(m *measurement) string { return fmt.Sprintf("%d (%d)", m.Requests, m.OK) }, ""),
		row("throughput, ok/s", func(m *measurement) string { return fmt.Sprintf("%.0f", m.Throughput()) }, ""),
		row("p50 ms", func(m *measurement) string { return ms(m.Pct(.5)) }, added(.5)),
		row("p90 ms", func(m *measurement) string { return ms(m.Pct(.9)) }, added(.9)),
		row("p99 ms", func(m *measurement) string { return ms(m.Pct(.99)) }, added(.99)),
		row("max ms", func(m *measurement) string { return ms(m.Max()) }, ""),
		row("errors by class", errorsText, ""),
	}
}

// serviceRows describe the service side of a window.
func serviceRows(c *cluster, w *svcWindow, baseGor []float64, afterGor []float64) [][]string {
	ok := float64(w.m.OK)
	perEx := "n/a"
	if ok > 0 {
		perEx = fmt.Sprintf("%.3f (service metric) / %.3f (emulator)", w.delta(func(c svcCounters) float64 { return c.PhoneCalls })/ok, float64(w.emu.Endpoints.Phone.Calls)/ok)
	}
	var emuFetch int64
	for _, a := range c.apps {
		emuFetch += w.emu.fetches(a.ID)
	}
	rows := [][]string{
		{"upstream phone calls per successful exchange", perEx},
		{"token fetches during the window", fmt.Sprintf("%.0f (service metric) / %d (emulator)", w.delta(func(c svcCounters) float64 { return c.TokenFetch }), emuFetch)},
	}
	for i, p := range c.svcs {
		st, _ := readStatus(p.pid())
		name := "service"
		if len(c.svcs) > 1 {
			name = fmt.Sprintf("replica %d", i)
		}
		rows = append(rows,
			[]string{name + ": peak RSS (VmHWM, whole process life)", mb(st.HWM) + " MB"},
			[]string{name + ": RSS before → peak sampled → now", fmt.Sprintf("%s → %s → %s MB", mb(int64(w.before[i].RSS)), mb(w.samp.peakRSS[i]), mb(st.RSS))},
			[]string{name + ": goroutines before → peak sampled → after", fmt.Sprintf("%.0f → %.0f → %.0f", baseGor[i], w.samp.peakGor[i], afterGor[i])},
			[]string{name + ": Go stacks / heap in use, peak sampled", fmt.Sprintf("%s / %s MB", mb(int64(w.samp.peakStk[i])), mb(int64(w.samp.peakHeap[i])))},
		)
	}
	return rows
}

// settle closes nothing itself (the load clients closed their idle
// connections) and waits for every replica's goroutines to come back to
// its baseline (+tolerance).
func (c *cluster) settle(base []float64, tol float64, timeout time.Duration) []float64 {
	out := make([]float64, len(c.svcURLs))
	for i, u := range c.svcURLs {
		out[i] = goroutinesSettle(u, base[i]+tol, timeout)
	}
	return out
}

// goroutines picks each replica's goroutine count out of its counters.
func goroutines(cs []svcCounters) []float64 {
	out := make([]float64, len(cs))
	for i := range cs {
		out[i] = cs[i].Goroutines
	}
	return out
}

// goroutineTolerance is how many goroutines above the pre-load baseline
// still count as "back to baseline" (a metrics scrape's connection).
const goroutineTolerance = 5

// abba runs a warm-up and a measured window of each kind in ABBA order
// (direct, service, service, direct; the first two with -smoke) and returns
// each kind's windows pooled and the last service window. short names the
// windows' codes; tag follows the kind in progress lines.
func (c *cluster) abba(ctx context.Context, name, short, tag string, warm, dur time.Duration, load func(d time.Duration, label string) func(*target) *measurement) (svc, dir *measurement, last *svcWindow, err error) {
	var dirs, svcs []*measurement
	for i, kind := range []string{"direct", "service", "service", "direct"} {
		if c.e.o.Smoke && i >= 2 {
			break
		}
		win := fmt.Sprintf("%s-%s-%d", short, kind, i)
		var m *measurement
		if kind == "direct" {
			if _, err := c.measureDirect(win+"w", load(warm, "warm")); err != nil {
				return nil, nil, nil, err
			}
			if m, err = c.measureDirect(win, load(dur, kind)); err != nil {
				return nil, nil, nil, err
			}
			dirs = append(dirs, m)
		} else {
			load(warm, "warm")(c.serviceTarget(win + "w"))
			if last, err = c.measureService(ctx, name, load(dur, kind), dur); err != nil {
				return nil, nil, nil, err
			}
			m = last.m
			svcs = append(svcs, m)
		}
		c.e.logf("%s%s: %.0f ok/s, p50 %s ms, p99 %s ms, errors %d", kind, tag, m.Throughput(), ms(m.Pct(.5)), ms(m.Pct(.99)), m.ErrorCount())
	}
	return pooled("service", svcs...), pooled("direct", dirs...), last, nil
}

func runAddedLatency(ctx context.Context, e *env) (*Result, error) {
	sm := e.o.Smoke
	rate := pick(e.o.Rate, 1000, 50, sm)
	dur := pick(e.o.Duration, 10*time.Second, time.Second, sm)
	warm := pick(0, 2*time.Second, 300*time.Millisecond, sm)
	lat := e.latency(50 * time.Millisecond)
	proto := e.proto("h1")
	spec := e.oneAppSpec(lat)
	c, err := e.startCluster(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res := &Result{Setup: []string{
		fmt.Sprintf("%d replica(s), %s stores; load tool → service over %s, service → emulator over %s", spec.Replicas, storeName(spec.Redis), proto, e.o.UpstreamProto),
		fmt.Sprintf("emulator latency on the phone endpoint: %s", lat),
		fmt.Sprintf("open loop (vegeta): %d req/s for %s per window, %s warm-up; windows in ABBA order (direct, service, service, direct), each kind's two windows pooled", rate, dur, warm),
	}}
	base := goroutines(c.counters())
	svc, dir, last, err := c.abba(ctx, "added-latency", "added", "", warm, dur, func(d time.Duration, label string) func(*target) *measurement {
		return func(t *target) *measurement { return openLoop(ctx, t, proto, rate, d, label) }
	})
	if err != nil {
		return res, err
	}
	after := c.settle(base, goroutineTolerance, 15*time.Second)
	addedP99 := svc.Pct(.99) - dir.Pct(.99)
	res.Targets = []Target{
		{Name: "p99 added latency ≤ 1 ms", Value: fmt.Sprintf("p99 service %s ms − direct %s ms = %+.2f ms", ms(svc.Pct(.99)), ms(dir.Pct(.99)), float64(addedP99)/1e6), Met: addedP99 <= time.Millisecond && svc.ErrorCount() == 0},
	}
	t := Table{Title: "Latency (service vs direct, pooled windows)", Header: []string{"", "service", "direct (emulator)", "added (service − direct)"}, Rows: latencyRows(svc, dir)}
	res.Tables = append(res.Tables, t, Table{Title: "Service (the last service window)", Header: []string{"", "value"}, Rows: serviceRows(c, last, base, after)})
	res.Plots = append(res.Plots, latencyPlot("added-latency", "added-latency: latency by percentile", []*measurement{svc, dir}))
	return res, nil
}

func inlineText(exchangeTO time.Duration) string {
	if exchangeTO < 10*time.Second {
		return "below the 10 s request timeout, so each exchange runs on its request's goroutine"
	}
	return "not below the 10 s request timeout, so each exchange runs on a detached goroutine"
}

func storeName(redis bool) string {
	if redis {
		return "Redis"
	}
	return "in-memory"
}

func runThroughput(ctx context.Context, e *env) (*Result, error) {
	sm := e.o.Smoke
	conc := pick(e.o.Concurrency, 32, 4, sm)
	dur := pick(e.o.Duration, 5*time.Second, 500*time.Millisecond, sm)
	warm := pick(0, time.Second, 200*time.Millisecond, sm)
	sweepDur := pick(e.o.Duration, 2*time.Second, 300*time.Millisecond, sm)
	sweep := []int{1, 2, 4, 8, 16, 32, 64, 128, 256}
	if sm {
		sweep = []int{1, 4}
	}
	lat := e.latency(0)
	proto := e.proto("h1")
	spec := e.oneAppSpec(lat)
	c, err := e.startCluster(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res := &Result{Setup: []string{
		fmt.Sprintf("%d replica(s), %s stores; load tool → service over %s, service → emulator over %s; emulator latency %s", spec.Replicas, storeName(spec.Redis), proto, e.o.UpstreamProto, lat),
		fmt.Sprintf("closed loop: %d workers, %s per window, %s warm-up, ABBA order, pooled; sweep %v with %s per point (direct and service alternating)", conc, dur, warm, sweep, sweepDur),
		"the load tool, the emulator and the service share the machine's CPUs: the direct run gives the emulator all of them, the service run splits them three ways",
	}}
	base := goroutines(c.counters())
	load := func(n int, d time.Duration, label string) func(*target) *measurement {
		return func(t *target) *measurement { return closedLoop(ctx, t, proto, n, d, 0, label) }
	}
	svc, dir, last, err := c.abba(ctx, "throughput", "tp", fmt.Sprintf(" c=%d", conc), warm, dur, func(d time.Duration, label string) func(*target) *measurement {
		return load(conc, d, label)
	})
	if err != nil {
		return res, err
	}
	ratio := svc.Throughput() / max(dir.Throughput(), 1)
	res.Targets = []Target{{Name: "service throughput ≥ ½ direct", Value: fmt.Sprintf("c=%d: service %.0f ok/s ÷ direct %.0f ok/s = %.2f", conc, svc.Throughput(), dir.Throughput(), ratio), Met: ratio >= 0.5 && svc.ErrorCount() == 0}}

	sw := Table{Title: "Sweep: throughput against concurrency", Header: []string{"concurrency", "service ok/s", "direct ok/s", "service ÷ direct", "service p50 / p99 ms", "direct p50 / p99 ms", "errors (service / direct)"}}
	var pts []sweepPoint
	for _, n := range sweep {
		d, err := c.measureDirect(fmt.Sprintf("sw-d-%d", n), load(n, sweepDur, "direct"))
		if err != nil {
			return res, err
		}
		s := load(n, sweepDur, "service")(c.serviceTarget(fmt.Sprintf("sw-s-%d", n)))
		pts = append(pts, sweepPoint{C: n, Service: s.Throughput(), Direct: d.Throughput()})
		sw.Rows = append(sw.Rows, []string{fmt.Sprint(n), fmt.Sprintf("%.0f", s.Throughput()), fmt.Sprintf("%.0f", d.Throughput()), fmt.Sprintf("%.2f", s.Throughput()/max(d.Throughput(), 1)),
			ms(s.Pct(.5)) + " / " + ms(s.Pct(.99)), ms(d.Pct(.5)) + " / " + ms(d.Pct(.99)), fmt.Sprintf("%d / %d", s.ErrorCount(), d.ErrorCount())})
		e.logf("sweep c=%d: service %.0f ok/s, direct %.0f ok/s", n, s.Throughput(), d.Throughput())
	}
	after := c.settle(base, goroutineTolerance, 15*time.Second)
	res.Tables = append(res.Tables,
		Table{Title: fmt.Sprintf("Closed loop at c=%d (service vs direct, pooled windows)", conc), Header: []string{"", "service", "direct (emulator)", "added (service − direct)"}, Rows: latencyRows(svc, dir)},
		Table{Title: "Service (the last main service window; goroutines after = after the sweep)", Header: []string{"", "value"}, Rows: serviceRows(c, last, base, after)},
		sw)
	res.Plots = append(res.Plots,
		latencyPlot("throughput", fmt.Sprintf("throughput: latency by percentile, closed loop c=%d", conc), []*measurement{svc, dir}),
		sweepPlot("throughput-sweep", "throughput against concurrency (closed loop, zero-latency upstream)", pts))
	return res, nil
}

func runFleetCold(ctx context.Context, e *env) (*Result, error) {
	sm := e.o.Smoke
	n := pick(e.o.Concurrency, 10000, 200, sm)
	replicas := pick(e.o.Replicas, 4, 2, sm)
	tokenLat := pick(0, time.Second, 200*time.Millisecond, sm)
	lat := e.latency(0)
	// Replicas behind a load balancer that multiplexes (h2c): 10,000 new
	// HTTP/1.1 connections at once would measure the kernel's accept
	// queues and the replicas' ReadHeaderTimeout on 2 shared cores more
	// than the exchange (-proto h1 runs that too).
	proto := e.proto("h2c")
	spec := clusterSpec{Apps: 2, Replicas: replicas, Redis: true, H2CIn: true, PhoneLatency: lat, StableLatency: tokenLat, RequestTO: 30 * time.Second}
	c, err := e.startCluster(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res := &Result{Setup: []string{
		fmt.Sprintf("%d replicas sharing a private Redis; 2 apps; load tool → replicas over %s (round robin), replicas → emulator over %s", replicas, proto, e.o.UpstreamProto),
		fmt.Sprintf("cold start: the replicas are started and the burst is sent at once; the emulator delays stable_token by %s so that every request of the burst arrives before any replica holds a token", tokenLat),
		fmt.Sprintf("burst: %d requests with distinct codes, all sent at the same moment (one per worker), alternating apps and replicas; request timeout 30 s", n),
	}}
	stats0, err := c.stats()
	if err != nil {
		return res, err
	}
	if stats0.Endpoints.Phone.Calls != 0 {
		return res, fmt.Errorf("the emulator saw %d phone calls before the burst", stats0.Endpoints.Phone.Calls)
	}
	w := &svcWindow{before: c.counters()}
	base := goroutines(w.before)
	w.samp = c.sample()
	tgt := c.serviceTarget("fleet")
	w.m = closedLoop(ctx, tgt, proto, n, 0, 1, "service")
	w.samp.Stop()
	w.after = c.counters()
	if w.emu, err = c.stats(); err != nil {
		return res, err
	}
	after := c.settle(base, goroutineTolerance, 15*time.Second)
	e.logf("burst: %d ok of %d in %s, p99 %s ms", w.m.OK, w.m.Requests, w.m.Elapsed.Round(time.Millisecond), ms(w.m.Pct(.99)))

	// Token fetches: whole life of the emulator (it started with the
	// fleet), per app.
	var fetchParts []string
	fetchOK := true
	for _, a := range c.apps {
		f := w.emu.fetches(a.ID)
		fetchParts = append(fetchParts, fmt.Sprintf("%s: %d", a.ID, f))
		if f != 1 {
			fetchOK = false
		}
	}
	// Upstream calls per code of the burst.
	hist := map[int64]int{}
	for i := uint64(0); i < uint64(w.m.Requests); i++ {
		code := tgt.prefix + strconv.FormatUint(i, 36)
		hist[w.emu.Codes[code].Calls]++
	}
	once := hist[1]
	var histParts []string
	for _, k := range sortedKeys(hist) {
		histParts = append(histParts, fmt.Sprintf("%d call(s): %d codes", k, hist[k]))
	}
	res.Targets = []Target{
		{Name: "exactly 1 token fetch per app", Value: strings.Join(fetchParts, ", "), Met: fetchOK},
		{Name: "exactly 1 upstream call per code", Value: fmt.Sprintf("%d of %d codes called exactly once (%s); phone endpoint calls %d", once, w.m.Requests, strings.Join(histParts, ", "), w.emu.Endpoints.Phone.Calls), Met: once == w.m.Requests && w.emu.Endpoints.Phone.Calls == int64(w.m.Requests)},
	}
	// Direct burst of the same size, for the added latency.
	dir, err := c.measureDirect("fleet-direct", func(t *target) *measurement { return closedLoop(ctx, t, proto, n, 0, 1, "direct") })
	if err != nil {
		return res, err
	}
	rows := latencyRows(w.m, dir)
	rows = append(rows, []string{"burst wall time", w.m.Elapsed.Round(time.Millisecond).String(), dir.Elapsed.Round(time.Millisecond).String(), ""})
	res.Tables = append(res.Tables,
		Table{Title: "Burst (service vs the same burst sent directly to the emulator)", Header: []string{"", "service (all replicas)", "direct (emulator)", "added (service − direct)"}, Rows: rows},
		Table{Title: "Replicas (counters over the burst; RSS before = at start)", Header: []string{"", "value"}, Rows: serviceRows(c, w, base, after)})
	res.Plots = append(res.Plots, latencyPlot("fleet-cold", fmt.Sprintf("fleet-cold: latency by percentile, %d concurrent cold requests", n), []*measurement{w.m, dir}))
	return res, nil
}

func runMemory(ctx context.Context, e *env, name, defProto string) (*Result, error) {
	sm := e.o.Smoke
	n := pick(e.o.Concurrency, 10000, 100, sm)
	dur := pick(e.o.Duration, 6*time.Second, 500*time.Millisecond, sm)
	lat := e.latency(pick(0, 2*time.Second, 200*time.Millisecond, sm))
	holdLat := pick(0, 6*time.Second, 600*time.Millisecond, sm)
	holdRate := pick(0, 2500, 400, sm)
	proto := e.proto(defProto)
	spec := e.oneAppSpec(lat)
	spec.ExchangeTO = cmp.Or(e.o.ExchangeTimeout, 8*time.Second)
	c, err := e.startCluster(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res := &Result{Setup: []string{
		fmt.Sprintf("%d replica, %s stores; load tool → service over %s, service → emulator over %s; WXPHONE_EXCHANGE_TIMEOUT=%s (%s)", spec.Replicas, storeName(spec.Redis), proto, e.o.UpstreamProto, spec.ExchangeTO, inlineText(spec.ExchangeTO)),
		fmt.Sprintf("window 1 (the target's load): closed loop, %d workers for %s, all starting together, %s emulator latency; the service holds as many as it can accept within the %s", n, dur, lat, lat),
		fmt.Sprintf("window 2 (hold): %d requests sent at %d/s into a %s emulator latency, so that all %d are in flight at the service together (its wxphone_http_requests_in_flight gauge); memory per request in flight = (RSS at that moment − RSS before any load) ÷ requests in flight", n, holdRate, holdLat, n),
		"peak RSS = VmHWM of the service process (/proc/<pid>/status) over its whole life (both windows); stacks and heap from its Go metrics, sampled every 500 ms",
	}}
	cs := c.counters()
	base, cs0 := goroutines(cs), cs[0]
	st0, _ := readStatus(c.svcs[0].pid())
	w, err := c.measureService(ctx, name, func(t *target) *measurement { return closedLoop(ctx, t, proto, n, dur, 0, "service") }, dur)
	if err != nil {
		return res, err
	}
	after := c.settle(base, goroutineTolerance, 20*time.Second)
	e.logf("window 1: in flight at the service (sampled) %.0f; %d ok of %d; RSS peak sampled %s MB; goroutines %.0f → %.0f → %.0f", w.samp.peakIn[0], w.m.OK, w.m.Requests, mb(w.samp.peakRSS[0]), base[0], w.samp.peakGor[0], after[0])
	dir, err := c.measureDirect(name+"-direct", func(t *target) *measurement { return closedLoop(ctx, t, proto, n, dur, 0, "direct") })
	if err != nil {
		return res, err
	}

	// Window 2: hold n requests in flight.
	if err := c.admin("DELETE", "/admin/faults", "", nil); err != nil {
		return res, err
	}
	if err := c.addLatency("phone", holdLat); err != nil {
		return res, err
	}
	holdDur := time.Duration(float64(n) / float64(holdRate) * float64(time.Second))
	h, err := c.measureService(ctx, name+"-hold", func(t *target) *measurement { return paced(ctx, t, proto, n, holdRate, "hold") }, holdDur)
	if err != nil {
		return res, err
	}
	afterHold := c.settle(base, goroutineTolerance, 20*time.Second)
	st, _ := readStatus(c.svcs[0].pid())
	pk := h.samp.atPeakIn()
	perReq := func(v, b float64) float64 { return (v - b) / max(pk.InFlight, 1) / 1024 }
	e.logf("window 2: %.0f in flight at the service; RSS %s MB (%.1f KB/request: stacks %.1f, heap %.1f); goroutines %.0f; %d ok of %d", pk.InFlight, mb(pk.RSS), perReq(float64(pk.RSS), float64(st0.RSS)), perReq(pk.Stack, cs0.StackInuse), perReq(pk.Heap, cs0.HeapInuse), pk.Goroutines, h.m.OK, h.m.Requests)
	e.logf("VmHWM %s MB; goroutines after both windows %.0f (baseline %.0f)", mb(st.HWM), afterHold[0], base[0])

	const limit = 150 << 20
	res.Targets = []Target{
		{Name: "peak RSS < 150 MB", Value: fmt.Sprintf("VmHWM %s MB; %.0f requests in flight at the service: RSS %s MB, ≈ %.1f KB per request in flight (Go stacks %.1f KB, Go heap in use %.1f KB) over %s MB before any load", mb(st.HWM), pk.InFlight, mb(pk.RSS), perReq(float64(pk.RSS), float64(st0.RSS)), perReq(pk.Stack, cs0.StackInuse), perReq(pk.Heap, cs0.HeapInuse), mb(st0.RSS)), Met: st.HWM < limit && w.m.ErrorCount() == 0 && h.m.ErrorCount() == 0 && pk.InFlight >= float64(n)*0.99},
		{Name: "goroutines back to baseline", Value: fmt.Sprintf("baseline %.0f; after window 1 %.0f (peak sampled %.0f); after window 2 %.0f (peak sampled %.0f); tolerance +%d", base[0], after[0], w.samp.peakGor[0], afterHold[0], h.samp.peakGor[0], goroutineTolerance), Met: after[0] >= 0 && after[0] <= base[0]+goroutineTolerance && afterHold[0] >= 0 && afterHold[0] <= base[0]+goroutineTolerance},
	}
	rows := latencyRows(w.m, dir)
	rows = append(rows,
		[]string{"peak requests in flight, client side", fmt.Sprint(w.m.InFlight), fmt.Sprint(dir.InFlight), ""},
		[]string{"peak requests in flight at the service (sampled gauge)", fmt.Sprintf("%.0f", w.samp.peakIn[0]), "", ""})
	holdRows := [][]string{
		{"requests (ok)", fmt.Sprintf("%d (%d)", h.m.Requests, h.m.OK)},
		{"errors by class", errorsText(h.m)},
		{"requests in flight at the service at the peak sample", fmt.Sprintf("%.0f", pk.InFlight)},
		{"RSS at that sample", mb(pk.RSS) + " MB"},
		{"Go stacks / heap in use at that sample", fmt.Sprintf("%s / %s MB", mb(int64(pk.Stack)), mb(int64(pk.Heap)))},
		{"per request in flight: RSS / stacks / heap", fmt.Sprintf("%.1f / %.1f / %.1f KB", perReq(float64(pk.RSS), float64(st0.RSS)), perReq(pk.Stack, cs0.StackInuse), perReq(pk.Heap, cs0.HeapInuse))},
		{"goroutines at that sample", fmt.Sprintf("%.0f (%.2f per request in flight)", pk.Goroutines, (pk.Goroutines-base[0])/max(pk.InFlight, 1))},
		{"p50 / p99 / max ms", ms(h.m.Pct(.5)) + " / " + ms(h.m.Pct(.99)) + " / " + ms(h.m.Max())},
	}
	res.Tables = append(res.Tables,
		Table{Title: "Window 1: load (service vs direct)", Header: []string{"", "service", "direct (emulator)", "added (service − direct)"}, Rows: rows},
		Table{Title: "Window 1: service", Header: []string{"", "value"}, Rows: serviceRows(c, w, base, after)},
		Table{Title: fmt.Sprintf("Window 2: %d requests held in flight (%s upstream)", n, holdLat), Header: []string{"", "value"}, Rows: holdRows})
	res.Plots = append(res.Plots,
		latencyPlot(name, fmt.Sprintf("%s: latency by percentile, %d workers, %s upstream", name, n, lat), []*measurement{w.m, dir}),
		rssPlot(name+"-rss", fmt.Sprintf("%s, window 2: service RSS and requests in flight", name), h.samp.series))
	return res, nil
}
