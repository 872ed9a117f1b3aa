package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Section markers in docs/benchmarks.md. The tool rewrites only what lies
// between Begin and End, and keeps the hand-written notes between
// NotesBegin and NotesEnd inside it.
const (
	Begin      = "<!-- load:begin -->"
	End        = "<!-- load:end -->"
	NotesBegin = "<!-- load:notes:begin -->"
	NotesEnd   = "<!-- load:notes:end -->"
)

// Report is a whole run.
type Report struct {
	Machine Machine
	Command string
	Smoke   bool
	Results []*Result
	Plots   []Plot
}

// Machine describes where the run happened.
type Machine struct {
	CPUModel string
	CPUs     int
	Go       string
	Date     string
	Revision string
	LoadAvg  string
}

func machineFacts(root string) Machine {
	m := Machine{Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch strings.TrimSpace(k) {
			case "model name":
				m.CPUModel = strings.TrimSpace(v)
			case "processor":
				m.CPUs++
			}
		}
	}
	if m.CPUModel == "" {
		m.CPUModel = "unknown"
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Revision = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			m.Revision += " + uncommitted changes outside docs/"
		}
	} else {
		m.Revision = "unknown (no git)"
	}
	return m
}

// Markdown renders the load section, markers excluded, notes excluded.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Load test: `wxphone serve` against the emulator\n\n")
	if r.Smoke {
		w("> **Smoke run** (`-smoke`): tiny loads that check the tool works; these numbers are not benchmark results.\n\n")
	}
	w("- Command (from the repository root): `%s`\n", r.Command)
	w("- Date: %s; revision %s; Go %s\n", r.Machine.Date, r.Machine.Revision, r.Machine.Go)
	w("- Machine: %s, %d logical CPUs (/proc/cpuinfo), load average at start %s (a shared machine: other work ran beside this)\n", r.Machine.CPUModel, r.Machine.CPUs, r.Machine.LoadAvg)
	w("- Processes: the emulator (`wxphone mock --h2c`, load mode), every service replica (`wxphone serve`) and Redis (a private `redis-server`) run as separate processes built from this tree, so RSS and goroutines are the service's own; the load tool is one more process. All of them share the same CPUs.\n")
	w("- \"direct\" sends the same load straight to the emulator's phone endpoint with a token the tool fetched itself; added latency = service − direct at the same percentile.\n\n")
	w("### Targets\n\n| scenario | target | status | measured |\n|---|---|---|---|\n")
	for _, res := range r.Results {
		if res.Failed != "" {
			w("| %s | (did not run) | **FAILED** | %s |\n", res.Scenario.Name, cell(res.Failed))
			continue
		}
		for _, t := range res.Targets {
			w("| %s | %s | **%s** | %s |\n", res.Scenario.Name, t.Name, t.Status(), cell(t.Value))
		}
	}
	w("\n")
	for _, res := range r.Results {
		w("### %s\n\n%s.\n\n", res.Scenario.Name, res.Scenario.Goal)
		if res.Failed != "" {
			w("**Failed to run:** %s\n\n", cell(res.Failed))
		}
		for _, s := range res.Setup {
			w("- %s\n", s)
		}
		if len(res.Setup) > 0 {
			w("- run time of the scenario (start to stop of every process): %s\n\n", res.Elapsed.Round(time.Second))
		}
		for _, t := range res.Tables {
			w("%s:\n\n| %s |\n|%s\n", t.Title, strings.Join(t.Header, " | "), strings.Repeat("---|", len(t.Header)))
			for _, row := range t.Rows {
				cells := make([]string, len(row))
				for i, c := range row {
					cells[i] = cell(c)
				}
				w("| %s |\n", strings.Join(cells, " | "))
			}
			w("\n")
		}
		for _, p := range res.Plots {
			w("![%s](bench/%s)\n\n", p.Title, p.File)
		}
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }

// Write replaces the load section of the benchmarks file (creating the
// markers at the top when absent), keeping its notes block and every byte
// outside the markers, and writes the plots to docs/bench/.
func (r *Report) Write(path string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	updated, err := replaceSection(string(old), r.Markdown())
	if err != nil {
		return err
	}
	dir := filepath.Join(filepath.Dir(path), "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range r.Plots {
		if err := os.WriteFile(filepath.Join(dir, p.File), p.SVG, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(updated), 0o644)
}

// replaceSection puts body between the markers of doc, keeping the notes
// block of the old section.
func replaceSection(doc, body string) (string, error) {
	notes := NotesBegin + "\n" + NotesEnd
	i, j := strings.Index(doc, Begin), strings.Index(doc, End)
	switch {
	case i < 0 && j < 0:
		return Begin + "\n" + body + "\n" + notes + "\n" + End + "\n\n" + doc, nil
	case i < 0 || j < i:
		return "", errors.New("benchmarks file: load markers are unbalanced; fix them by hand")
	}
	old := doc[i:j]
	if a, b := strings.Index(old, NotesBegin), strings.Index(old, NotesEnd); a >= 0 && b > a {
		notes = old[a : b+len(NotesEnd)]
	}
	return doc[:i] + Begin + "\n" + body + "\n" + notes + "\n" + doc[j:], nil
}
