package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

const (
	beginMarker = "<!-- peers:begin -->"
	endMarker   = "<!-- peers:end -->"
)

type meta struct {
	Date      time.Time
	Command   string
	GoVersion string
	OSArch    string
	CPUModel  string
	Tree      string
	CPUs      int
	MaxProcs  int
	EmuPid    int
	Smoke     bool
	Reps      int
	Warm      time.Duration
	Dur       time.Duration
	Levels    []int
	ColdN     int
	Deadline  time.Duration
	Latency   time.Duration
	Baseline  *cellResult // harness with a no-op exchange
}

type report struct {
	Meta      meta
	Versions  map[string]string
	Cells     []cellResult
	Scenarios []sdkScenarios
	Labels    []string // instance labels in report order
}

type agg struct {
	Label               string
	SDK, Mode           string
	Conc                int
	Rate, Allocs, Bytes float64
	CPU                 float64 // µs per exchange
	EmuCPU              float64 // emulator µs per exchange
	P50, P99            time.Duration
	Errors, Wrong, Ops  int64
	Runs                int
	FirstErr            string
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *report) aggregate(label string, conc int) (agg, bool) {
	a := agg{Label: label, Conc: conc}
	var rates, allocs, bytes_, p50, p99, cpu, emu []float64
	for _, c := range r.Cells {
		if c.Label != label || c.Conc != conc {
			continue
		}
		a.SDK, a.Mode = c.SDK, c.Mode
		rates = append(rates, c.Rate())
		allocs = append(allocs, c.AllocsPerOp())
		bytes_ = append(bytes_, c.BytesPerOp())
		p50 = append(p50, float64(c.P50))
		p99 = append(p99, float64(c.P99))
		cpu = append(cpu, float64(c.CPUPerOp())/1e3)
		emu = append(emu, float64(c.EmuCPUPerOp())/1e3)
		a.Errors += c.Errors
		a.Wrong += c.Wrong
		a.Ops += c.Ops
		a.Runs++
		if a.FirstErr == "" {
			a.FirstErr = c.FirstErr
		}
	}
	if a.Runs == 0 {
		return a, false
	}
	a.Rate, a.Allocs, a.Bytes, a.CPU = median(rates), median(allocs), median(bytes_), median(cpu)
	a.P50, a.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	a.EmuCPU = median(emu)
	return a, true
}

func ratio(ours, theirs float64) string {
	if theirs == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", ours/theirs)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func (r *report) ourLabel() string { return sdkOurs }

type targetStatus struct {
	ThroughputMet  bool
	Throughput     string
	AllocsMet      bool
	Allocs         string
	FloorRateMet   bool // ours ≥ 0.90 × the floor's exchanges/s at every level
	FloorAllocsMet bool // ours below the floor's allocs/op at every level
	FloorRate      string
}

// floorRatio is the throughput target against the floor client.
const floorRatio = 0.90

// floorRow is one concurrency level of ours against the floor, measured in
// the same run.
type floorRow struct {
	Conc          int
	Ours, Floor   agg
	MinPeerAllocs float64
	MinPeerLabel  string
}

// floorRows pairs ours with the floor at every level both were measured at.
func (r *report) floorRows() []floorRow {
	var out []floorRow
	for _, c := range r.Meta.Levels {
		o, ok1 := r.aggregate(sdkOurs, c)
		f, ok2 := r.aggregate(sdkFloor, c)
		if !ok1 || !ok2 {
			continue
		}
		row := floorRow{Conc: c, Ours: o, Floor: f, MinPeerAllocs: -1}
		for _, l := range r.Labels {
			if l == sdkOurs || l == sdkFloor {
				continue
			}
			if p, ok := r.aggregate(l, c); ok && (row.MinPeerAllocs < 0 || p.Allocs < row.MinPeerAllocs) {
				row.MinPeerAllocs, row.MinPeerLabel = p.Allocs, l
			}
		}
		out = append(out, row)
	}
	return out
}

func (r *report) targets() targetStatus {
	var t targetStatus
	ours, ok1 := r.aggregate(sdkOurs, 128)
	sp, ok2 := r.aggregate(sdkSilenceper+" ("+modeDefault+")", 128)
	spt, ok3 := r.aggregate(sdkSilenceper+" ("+modeTuned+")", 128)
	if ok1 && ok2 {
		t.ThroughputMet = ours.Rate >= 2*sp.Rate
		t.Throughput = fmt.Sprintf("c=128: ours %.0f ex/s vs silenceper (README default) %.0f ex/s = **%.3f×** (target ≥ 2×)", ours.Rate, sp.Rate, ours.Rate/sp.Rate)
		if ok3 {
			t.Throughput += fmt.Sprintf("; vs silenceper with our tuned transport %.0f ex/s = %.2f×", spt.Rate, ours.Rate/spt.Rate)
		}
		if ours.EmuCPU > 0 && sp.EmuCPU > 0 {
			need := (sp.CPU + sp.EmuCPU) / 2
			t.Throughput += fmt.Sprintf(". CPU per exchange (client + emulator, which share the same %d CPUs): ours %.0f + %.0f µs, silenceper %.0f + %.0f µs; "+
				"twice silenceper's rate needs ours' total ≤ %.0f µs, i.e. a client cost ≤ %.0f µs with this emulator cost",
				r.Meta.CPUs, ours.CPU, ours.EmuCPU, sp.CPU, sp.EmuCPU, need, need-ours.EmuCPU)
			if need-ours.EmuCPU <= 0 {
				t.Throughput += " (impossible here: the emulator alone costs more)"
			}
		}
	} else {
		t.Throughput = "not measured (c=128 missing)"
	}
	rows := r.floorRows()
	t.FloorRateMet, t.FloorAllocsMet = len(rows) > 0, len(rows) > 0
	var fr []string
	for _, row := range rows {
		q := row.Ours.Rate / row.Floor.Rate
		if row.Floor.Rate == 0 || q < floorRatio {
			t.FloorRateMet = false
		}
		if row.Ours.Allocs >= row.Floor.Allocs {
			t.FloorAllocsMet = false
		}
		fr = append(fr, fmt.Sprintf("c=%d %.2f", row.Conc, q))
	}
	t.FloorRate = "ours ÷ floor exchanges/s: " + strings.Join(fr, ", ")
	if len(rows) == 0 {
		t.FloorRate = "not measured"
	}
	t.AllocsMet = true
	var worst []string
	checked := 0
	for _, c := range r.Meta.Levels {
		o, ok := r.aggregate(sdkOurs, c)
		if !ok {
			continue
		}
		for _, l := range r.Labels {
			if l == sdkOurs || l == sdkFloor { // the floor has its own target
				continue
			}
			p, ok := r.aggregate(l, c)
			if !ok {
				continue
			}
			checked++
			if o.Allocs >= p.Allocs {
				t.AllocsMet = false
				worst = append(worst, fmt.Sprintf("c=%d %s %.1f ≤ ours %.1f", c, l, p.Allocs, o.Allocs))
			}
		}
	}
	if checked == 0 {
		t.AllocsMet = false
		t.Allocs = "not measured"
	} else if t.AllocsMet {
		lo, hi := 1e18, 0.0
		for _, c := range r.Meta.Levels {
			o, _ := r.aggregate(sdkOurs, c)
			for _, l := range r.Labels {
				if l == sdkOurs || l == sdkFloor {
					continue
				}
				if p, ok := r.aggregate(l, c); ok && p.Allocs > 0 {
					q := o.Allocs / p.Allocs
					lo, hi = min(lo, q), max(hi, q)
				}
			}
		}
		t.Allocs = fmt.Sprintf("ours has fewer allocs/op than every peer in all %d (peer, mode, concurrency) cells; ours ÷ theirs ranges %.2f–%.2f", checked, lo, hi)
	} else {
		t.Allocs = "missed: " + strings.Join(worst, "; ")
	}
	return t
}

func yesNo(b bool) string {
	if b {
		return "**met**"
	}
	return "**MISSED**"
}

func leakNote(o outcome) string {
	if len(o.Leaks) == 0 {
		return ""
	}
	return " ⚠ error text contains the " + strings.Join(o.Leaks, ", ")
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// markdown renders the section that goes between the markers.
func (r *report) markdown() string {
	var b strings.Builder
	m := r.Meta
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## wxphone vs peer SDKs: phone-code exchange\n\n")
	if m.Smoke {
		w("> **Smoke run** (tiny durations and counts): numbers are not meaningful, only the structure is.\n\n")
	}
	w("- Command: `%s` (from the repository root: `go -C bench/peers run .%s`)\n", m.Command, strings.TrimPrefix(m.Command, "cd bench/peers && go run ."))
	w("- Date: %s; wxphone measured from the working tree at %s\n", m.Date.UTC().Format("2006-01-02 15:04 MST"), m.Tree)
	w("- Go: %s %s; CPU: %s, %d logical CPUs (GOMAXPROCS %d in the client process; the emulator child process has the same machine)\n",
		m.GoVersion, m.OSArch, m.CPUModel, m.CPUs, m.MaxProcs)
	w("- Cells: closed loop, concurrency %s; each cell = %v warm-up + %v measured; %d repetitions, interleaved (order rotated every (repetition, concurrency) step); medians reported\n",
		intsString(m.Levels), m.Warm, m.Dur, m.Reps)
	w("- SDK versions built and driven: ")
	var vs []string
	for _, s := range allSDKs {
		vs = append(vs, fmt.Sprintf("%s %s (`%s`)", s, r.Versions[s], sdkModules[s]))
	}
	w("%s\n\n", strings.Join(vs, "; "))

	t := r.targets()
	w("**Targets.** Throughput ≥ 2× silenceper at c=128: %s — %s.  \n", yesNo(t.ThroughputMet), t.Throughput)
	w("Fewer allocations per exchange than every peer: %s — %s.  \n", yesNo(t.AllocsMet), t.Allocs)
	w("Within 10 %% of the floor client's exchanges/s at every concurrency: %s — %s.  \n", yesNo(t.FloorRateMet), t.FloorRate)
	w("Fewer allocations per exchange than the floor client at every concurrency: %s.\n\n", yesNo(t.FloorAllocsMet))

	w("### wxphone against the floor client (same run, medians)\n\n")
	w("The floor is a hand-written caller (`bench/peers/floor.go`): one pooled `http.Client` (the tuned transport), a stable token fetched once, and per code one `http.NewRequestWithContext` POST with a JSON body, decoded into errcode and purePhoneNumber. No retries, no token refresh, no checks.\n\n")
	w("| c | wxphone ex/s | floor ex/s | wxphone ÷ floor | wxphone allocs/op | floor allocs/op | fewest peer allocs/op (who) |\n")
	w("|---:|---:|---:|---:|---:|---:|---|\n")
	for _, row := range r.floorRows() {
		w("| %d | %.0f | %.0f | %s | %.1f | %.1f | %.1f (%s) |\n", row.Conc, row.Ours.Rate, row.Floor.Rate, ratio(row.Ours.Rate, row.Floor.Rate),
			row.Ours.Allocs, row.Floor.Allocs, row.MinPeerAllocs, row.MinPeerLabel)
	}
	w("\n")

	w("### Throughput and client-side allocations (medians)\n\n")
	w("Ratios are ours ÷ theirs: above 1 is better for exchanges/s, below 1 is better for allocs/op, B/op and CPU. Client CPU is the benchmark process's user+system time per exchange (getrusage), the emulator being another process: on this machine both share the same cores, so exchanges/s is bounded by client plus emulator CPU, while client CPU/op is the SDK's own cost; emulator CPU/op (from /proc, 10 ms ticks) shows what the server side costs, more for SDKs that open a connection per request. ")
	w("\"default\" = the SDK configured as its README shows (loggers silenced); \"tuned\" = the same tuned HTTP transport ours uses by default (`wxphone.NewHTTPClient()`, a fresh pool per SDK).\n\n")
	w("| c | SDK (mode) | token | exchanges/s | ours ÷ theirs | allocs/op | ours ÷ theirs | B/op | ours ÷ theirs | client CPU µs/op | ours ÷ theirs | emulator CPU µs/op | p50 ms | p99 ms | errors / ops |\n")
	w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range m.Levels {
		o, ok := r.aggregate(sdkOurs, c)
		for _, l := range r.Labels {
			a, ok2 := r.aggregate(l, c)
			if !ok2 {
				continue
			}
			rr, ra, rb, rc := "1.00", "1.00", "1.00", "1.00"
			if l != sdkOurs {
				if ok {
					rr, ra, rb, rc = ratio(o.Rate, a.Rate), ratio(o.Allocs, a.Allocs), ratio(o.Bytes, a.Bytes), ratio(o.CPU, a.CPU)
				} else {
					rr, ra, rb, rc = "–", "–", "–", "–"
				}
			}
			name := l
			if l == sdkOurs {
				name = "**wxphone (ours)**"
			}
			errs := fmt.Sprintf("%d / %d", a.Errors, a.Ops)
			if a.Wrong > 0 {
				errs += fmt.Sprintf(" (+%d wrong numbers)", a.Wrong)
			}
			w("| %d | %s | %s | %.0f | %s | %.1f | %s | %.0f | %s | %.0f | %s | %.0f | %s | %s | %s |\n",
				c, name, sdkTokenKind[a.SDK], a.Rate, rr, a.Allocs, ra, a.Bytes, rb, a.CPU, rc, a.EmuCPU, ms(a.P50), ms(a.P99), errs)
		}
	}
	w("\n")
	var errNotes []string
	for _, c := range m.Levels {
		for _, l := range r.Labels {
			if a, ok := r.aggregate(l, c); ok && a.FirstErr != "" {
				errNotes = append(errNotes, fmt.Sprintf("c=%d %s: %s", c, l, sanitizeLoose(a.FirstErr)))
			}
		}
	}
	if len(errNotes) > 0 {
		w("First error per cell with errors:\n\n")
		for _, n := range errNotes {
			w("- %s\n", cell(n))
		}
		w("\n")
	}
	if m.Baseline != nil {
		w("Harness baseline (a no-op exchange through the same loop, c=128): %.2f allocs/op, %.0f B/op, so the figures above are the SDKs' own.\n\n",
			m.Baseline.AllocsPerOp(), m.Baseline.BytesPerOp())
	}

	w("### Token fetches and fault behaviour (each SDK in its default configuration, fresh appid)\n\n")
	w("- Cold burst: %d concurrent first calls on a cold token cache; token fetches = the emulator's per-app count (classic + stable).\n", m.ColdN)
	w("- 40001: `RevokeTokens` on a warm client, then one exchange; \"next\" is the exchange after it.\n")
	w("- −1: errcode −1 once on the phone endpoint (code not consumed).\n")
	w("- Slow: %v latency on the phone endpoint once, caller deadline %v (SDKs without a context cannot be given one).\n", m.Latency, m.Deadline)
	w("- HTTP 500: once on the phone endpoint (code not consumed).\n")
	w("- \"calls\" = getuserphonenumber requests the emulator received for that exchange; \"fetches\" = token fetches during it.\n\n")
	w("| SDK | token | cold burst: fetches / ok / errors / wall | 40001 once (revoked) | −1 once | slow upstream | HTTP 500 |\n")
	w("|---|---|---|---|---|---|---|\n")
	for _, s := range r.Scenarios {
		name := s.SDK
		if s.SDK == sdkOurs {
			name = "**wxphone (ours)**"
		}
		cold := s.Cold.Err
		if cold == "" {
			cold = fmt.Sprintf("**%d** / %d / %d / %v", s.Cold.TokenFetches, s.Cold.OK, s.Cold.Errors, s.Cold.Wall.Round(time.Millisecond))
			if s.Cold.FirstErr != "" {
				cold += "; first error: " + s.Cold.FirstErr
			}
		}
		w("| %s | %s | %s | %s | %s | %s | %s |\n", name, sdkTokenKind[s.SDK], cell(cold),
			cell(faultCell(s.Revoke, true, 0)), cell(faultCell(s.Busy, false, 0)),
			cell(faultCell(s.Slow, false, m.Deadline)), cell(faultCell(s.HTTP500, false, 0)))
	}
	w("\n")

	w("### Method\n\n")
	w("- One process drives all SDKs; the emulator (`wxmock`, load mode: every unused `load-…` code is valid once, so no admin call per code) runs in a **child process** (this binary re-executed), so its allocations are not in the client's `runtime.MemStats`. allocs/op and B/op are the `Mallocs` and `TotalAlloc` deltas of the client process over the measured window divided by completed exchanges. Workers are started and parked before the first snapshot, codes are pre-generated, latencies go into a pre-allocated slice, and the answer is checked against the number the emulator derives from the code without allocating; the no-op baseline above shows what is left of the harness. The SDKs' own background goroutines (token refreshers, cache janitors) are included, as they would be in production.\n")
	w("- Peers are pointed at the emulator without adding allocations: PowerWeChat through `Http.BaseURI` plus `AccessToken.EndpointToGetToken`, fastwego through `miniprogram.WXServerUrl`, silenceper and weapp through an `http.RoundTripper` that rewrites `*.weixin.qq.com` to the emulator in place (installed as `util.DefaultHTTPClient` / `WithHttpClient`; the base transport is `http.DefaultTransport`, i.e. the same as their `http.DefaultClient` default). Ours gets `Config.BaseURL`.\n")
	w("- Loggers silenced: logrus (silenceper's `init` sets Debug on stdout) to Panic level and io.Discard; PowerWeChat `HttpDebug` false (its README sets true), log level error to a scratch dir; weapp `logger.Silent`; fastwego `Logger = nil`. PowerWeChat gets a scratch `HOME` (its token cache file), fastwego's file token cache a scratch dir.\n")
	w("- Token kind: each SDK's default, named in the tables (ours and weapp: stable_token; silenceper, PowerWeChat, fastwego: classic cgi-bin/token). In steady state every SDK serves from its cache, so the kind matters for the cold burst and the 40001 case only.\n")
	w("- Calls take `context.Background()` in the throughput loop (SDKs without a context cannot take one anyway); no HTTP timeouts are added to default configurations.\n")
	w("- Faults are scoped to the scenario's appid and counted from the emulator's statistics before and after the one exchange; \"the emulator still used the code\" means it answered the code successfully although the SDK reported an error (the slow case: the emulator does not notice the client leaving while it delays an unread request, as a real server that already has the request may not), so a blind retry would get 40029.\n")
	w("- Profiles of one SDK's exchange loop (CPU, and exact allocation counts with `runtime.MemProfileRate = 1` in a separate window): `cd bench/peers && go run . -profile /tmp/prof -profile-sdk wxphone [-profile-mode tuned] [-profile-conc 128]`, then `go tool pprof -sample_index=alloc_objects -base /tmp/prof/wxphone-c128.allocs-before.pprof /tmp/prof/wxphone-c128.allocs.pprof`.\n")
	w("- Transports: ")
	var td []string
	for _, s := range allSDKs {
		td = append(td, fmt.Sprintf("%s default: %s; tuned: %s", s, transportDesc[s][modeDefault], transportDesc[s][modeTuned]))
	}
	w("%s.\n\n", strings.Join(td, ". "))

	w("<details><summary>Raw numbers (every cell, every repetition)</summary>\n\n")
	w("| rep | c | SDK (mode) | ops | seconds | exchanges/s | allocs/op | B/op | client CPU µs/op | emulator CPU µs/op | p50 ms | p99 ms | errors |\n")
	w("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Cells {
		w("| %d | %d | %s | %d | %.3f | %.0f | %.2f | %.0f | %.1f | %.1f | %s | %s | %d |\n",
			c.Rep+1, c.Conc, c.Label, c.Ops, c.Elapsed.Seconds(), c.Rate(), c.AllocsPerOp(), c.BytesPerOp(), float64(c.CPUPerOp())/1e3, float64(c.EmuCPUPerOp())/1e3, ms(c.P50), ms(c.P99), c.Errors)
	}
	w("\n</details>\n")
	return b.String()
}

func faultCell(f faultResult, next bool, deadline time.Duration) string {
	if f.Err != "" {
		return "setup failed: " + f.Err
	}
	s := f.Outcome.Text + leakNote(f.Outcome)
	s += fmt.Sprintf("; %s ms; %d calls, %d fetches", ms(f.Outcome.Elapsed), f.PhoneCalls, f.TokenFetches)
	if deadline > 0 {
		honoured := f.Outcome.Elapsed <= deadline+250*time.Millisecond
		if honoured {
			s += "; deadline honoured"
		} else {
			s += "; **deadline ignored**"
		}
		if f.Canceled > 0 {
			s += fmt.Sprintf(" (%d abandoned at the emulator)", f.Canceled)
		}
		if f.Consumed && !f.Outcome.OK {
			s += "; the emulator still used the code"
		}
	}
	if next && f.Next != nil {
		s += "; next: " + f.Next.Text + leakNote(*f.Next)
	}
	return s
}

// sanitizeLoose scrubs token-like strings and query secrets from an error
// text recorded in a throughput cell (where the code is not known).
func sanitizeLoose(s string) string {
	s = tokenRe.ReplaceAllString(s, "<token>")
	s = paramRe.ReplaceAllString(s, "$1=…")
	s = spacesRe.ReplaceAllString(s, " ")
	if len(s) > 140 {
		s = s[:137] + "…"
	}
	return s
}

func intsString(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ", ")
}

// writeSection replaces the text between the peers markers in path, or
// appends a marked section (creating the file) when there is none. Nothing
// outside the markers is changed.
func writeSection(path, section string) error {
	block := beginMarker + "\n" + strings.TrimRight(section, "\n") + "\n" + endMarker
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return os.WriteFile(path, []byte(block+"\n"), 0o644)
	}
	if err != nil {
		return err
	}
	i := bytes.Index(old, []byte(beginMarker))
	j := bytes.Index(old, []byte(endMarker))
	var out []byte
	switch {
	case i >= 0 && j > i:
		out = append(out, old[:i]...)
		out = append(out, block...)
		out = append(out, old[j+len(endMarker):]...)
	case i < 0 && j < 0:
		out = append(out, old...)
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		if len(out) > 0 {
			out = append(out, '\n')
		}
		out = append(out, block...)
		out = append(out, '\n')
	default:
		return fmt.Errorf("%s: unbalanced %s / %s markers; not touching it", path, beginMarker, endMarker)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, fi.Mode().Perm())
}
