package main

// Closed-loop throughput cells with client-side allocation accounting.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// codeSeq makes load-mode codes that are unique within a run (the emulator
// is fresh for every run).
var codeSeq atomic.Int64

func newCodes(n int) []string {
	out := make([]string, n)
	base := codeSeq.Add(int64(n)) - int64(n)
	for i := range out {
		out[i] = loadPrefix + "b" + strconv.FormatInt(base+int64(i), 36)
	}
	return out
}

func newCode() string { return newCodes(1)[0] }

// expectedPhone reports whether phone is the number the emulator derives for
// a load-mode code: "13" + 9 digits of FNV-1a 64 (docs/emulator.md §7). It
// does not allocate.
func expectedPhone(code, phone string) bool {
	if len(phone) != 11 || phone[0] != '1' || phone[1] != '3' {
		return false
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(code); i++ {
		h ^= uint64(code[i])
		h *= 1099511628211
	}
	n := h % 1_000_000_000
	for i := 10; i >= 2; i-- {
		if phone[i] != byte('0'+n%10) {
			return false
		}
		n /= 10
	}
	return true
}

type cellResult struct {
	Label    string
	SDK      string
	Mode     string
	Conc     int
	Rep      int
	Ops      int64
	Errors   int64
	Wrong    int64 // answers with a number that does not match the code
	Elapsed  time.Duration
	Mallocs  uint64        // runtime.MemStats.Mallocs delta over the measured window
	Bytes    uint64        // runtime.MemStats.TotalAlloc delta
	CPU      time.Duration // client process user+system CPU over the window
	EmuCPU   time.Duration // emulator process CPU over the window (10 ms resolution)
	P50      time.Duration
	P99      time.Duration
	FirstErr string
}

func (r cellResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

func (r cellResult) AllocsPerOp() float64 {
	if r.Ops == 0 {
		return 0
	}
	return float64(r.Mallocs) / float64(r.Ops)
}

// CPUPerOp is the client process's CPU time per exchange (all threads;
// the emulator is another process).
func (r cellResult) CPUPerOp() time.Duration {
	if r.Ops == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Ops)
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// EmuCPUPerOp is the emulator's CPU time per exchange.
func (r cellResult) EmuCPUPerOp() time.Duration {
	if r.Ops == 0 {
		return 0
	}
	return r.EmuCPU / time.Duration(r.Ops)
}

func (r cellResult) BytesPerOp() float64 {
	if r.Ops == 0 {
		return 0
	}
	return float64(r.Bytes) / float64(r.Ops)
}

// closedLoop runs conc workers that exchange codes back to back until dur
// has passed or the codes run out. Workers are started and parked before
// the MemStats snapshot so that the measured window contains only
// exchanges (and the SDK's own background work).
func closedLoop(in *instance, conc int, dur time.Duration, codes []string, check bool) cellResult {
	return closedLoopEmu(in, conc, dur, codes, check, nil)
}

func closedLoopEmu(in *instance, conc int, dur time.Duration, codes []string, check bool, emu *emulator) cellResult {
	res := cellResult{Label: in.Label(), SDK: in.SDK, Mode: in.Mode, Conc: conc}
	lat := make([]int64, len(codes))
	var (
		next     atomic.Int64
		errs     atomic.Int64
		wrong    atomic.Int64
		firstErr atomic.Pointer[string]
		start    time.Time
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		gate     = make(chan struct{})
	)
	ctx := context.Background()
	n := int64(len(codes))
	ready.Add(conc)
	wg.Add(conc)
	for range conc {
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				if t0.Sub(start) >= dur {
					return
				}
				phone, err := in.exchange(ctx, codes[i])
				lat[i] = int64(time.Since(t0))
				if err != nil {
					if errs.Add(1) == 1 {
						s := err.Error()
						firstErr.Store(&s)
					}
				} else if check && !expectedPhone(codes[i], phone) {
					wrong.Add(1)
				}
			}
		}()
	}
	ready.Wait()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	var emu0 time.Duration
	if emu != nil {
		emu0 = emu.CPU()
	}
	start = time.Now()
	close(gate)
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.CPU = processCPU() - cpu0
	if emu != nil {
		res.EmuCPU = emu.CPU() - emu0
	}
	runtime.ReadMemStats(&m1)

	issued := min(next.Load(), n)
	// Workers that saw the deadline took an index without using it.
	used := lat[:issued]
	done := make([]int64, 0, len(used))
	for _, v := range used {
		if v > 0 {
			done = append(done, v)
		}
	}
	res.Ops = int64(len(done))
	res.Errors = errs.Load()
	res.Wrong = wrong.Load()
	res.Mallocs = m1.Mallocs - m0.Mallocs
	res.Bytes = m1.TotalAlloc - m0.TotalAlloc
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	if len(done) > 0 {
		slices.Sort(done)
		res.P50 = time.Duration(done[len(done)/2])
		res.P99 = time.Duration(done[min(len(done)-1, len(done)*99/100)])
	}
	return res
}

// codeBudget sizes the pre-generated code list of a measured window: three
// times the warm-up rate (which underestimates a warmed-up pool) and at
// least 40,000 per second, so that a cell ends at its deadline, not by
// running out of codes.
func codeBudget(rate float64, conc int, dur time.Duration) int {
	n := int(max(rate*3, 40_000)*dur.Seconds()) + 4*conc + 256
	return min(n, 8_000_000)
}

// runCell warms the instance up at the given concurrency, then measures it.
func runCell(in *instance, conc int, warm, dur time.Duration, check bool, emu *emulator) cellResult {
	in.enter()
	defer in.leave()
	// Warm-up: establishes connections for this concurrency and gives a
	// rate estimate to size the pre-generated code list.
	wcodes := newCodes(max(4*conc, 64) + 20000)
	w := closedLoop(in, conc, warm, wcodes, check)
	rate := w.Rate()
	if rate <= 0 {
		rate = 1000
	}
	return closedLoopEmu(in, conc, dur, newCodes(codeBudget(rate, conc, dur)), check, emu)
}

type matrixOpts struct {
	levels []int
	reps   int
	warm   time.Duration
	dur    time.Duration
	logf   func(format string, args ...any)
	emu    *emulator
}

// runMatrix measures every instance at every level, reps times, with the
// order rotated per (rep, level) so that slow drifts of the machine hit all
// instances alike.
func runMatrix(insts []*instance, o matrixOpts) []cellResult {
	var out []cellResult
	k := 0
	for rep := range o.reps {
		for _, c := range o.levels {
			for j := range insts {
				in := insts[(j+k)%len(insts)]
				r := runCell(in, c, o.warm, o.dur, true, o.emu)
				r.Rep = rep
				out = append(out, r)
				o.logf("rep %d c=%-4d %-24s %9.0f ex/s %7.1f allocs/op %8.0f B/op errors %d cpu %dµs/op emu %dµs/op",
					rep+1, c, r.Label, r.Rate(), r.AllocsPerOp(), r.BytesPerOp(), r.Errors, r.CPUPerOp().Microseconds(), r.EmuCPUPerOp().Microseconds())
			}
			k++
		}
	}
	return out
}

// profileInstance profiles in at conc: one measured window under the CPU
// profiler (default allocation sampling), then, with every allocation
// recorded (runtime.MemProfileRate = 1, which would distort a CPU profile),
// a second window bracketed by two allocs profiles; diff them with
// "go tool pprof -base X.allocs-before.pprof X.allocs.pprof" for exact
// per-exchange allocation counts. It returns the CPU window's result.
func profileInstance(in *instance, conc int, warm, dur time.Duration, dir string) (cellResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return cellResult{}, err
	}
	name := in.SDK
	if in.SDK != sdkOurs {
		name += "-" + in.Mode
	}
	prefix := filepath.Join(dir, fmt.Sprintf("%s-c%d", name, conc))
	writeAllocs := func(path string) error {
		runtime.GC() // make the profile current
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}
	in.enter()
	defer in.leave()
	w := closedLoop(in, conc, warm, newCodes(max(4*conc, 64)+20000), true)
	codes := newCodes(codeBudget(w.Rate(), conc, dur))
	f, err := os.Create(prefix + ".cpu.pprof")
	if err != nil {
		return cellResult{}, err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return cellResult{}, err
	}
	r := closedLoop(in, conc, dur, codes, true)
	pprof.StopCPUProfile()

	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	codes = newCodes(20000)
	if err := writeAllocs(prefix + ".allocs-before.pprof"); err != nil {
		return r, err
	}
	closedLoop(in, conc, 5*time.Second, codes, true) // ends when the codes run out
	return r, writeAllocs(prefix + ".allocs.pprof")
}
