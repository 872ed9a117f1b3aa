package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary double as the emulator child process.
func TestMain(m *testing.M) {
	maybeRunEmulator()
	os.Exit(m.Run())
}

// TestSmoke runs the whole comparison in smoke mode and checks only its
// structure: every SDK produced a row at every level and a scenario entry,
// and ours had no errors on the happy path. No timing is asserted.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an emulator process and drives five SDKs")
	}
	cfg, err := parseFlags([]string{"-smoke", "-q"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.write {
		t.Fatal("smoke mode must not write the docs by default")
	}
	rep, err := runBench(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	wantLabels := []string{sdkOurs, sdkFloor}
	for _, s := range allSDKs[1:] {
		wantLabels = append(wantLabels, s+" ("+modeDefault+")", s+" ("+modeTuned+")")
	}
	for _, l := range wantLabels {
		for _, c := range cfg.levels {
			a, ok := rep.aggregate(l, c)
			if !ok {
				t.Errorf("no row for %s at c=%d", l, c)
				continue
			}
			if l == sdkOurs || l == sdkFloor {
				if a.Ops == 0 {
					t.Errorf("%s made no exchange at c=%d", l, c)
				}
				if a.Errors != 0 || a.Wrong != 0 {
					t.Errorf("%s at c=%d: %d errors, %d wrong numbers (first: %s)", l, c, a.Errors, a.Wrong, a.FirstErr)
				}
			}
		}
	}

	if len(rep.Scenarios) != len(allSDKs) {
		t.Fatalf("scenario rows = %d, want %d", len(rep.Scenarios), len(allSDKs))
	}
	for _, s := range rep.Scenarios {
		if s.Cold.Err != "" {
			t.Errorf("%s cold burst: %s", s.SDK, s.Cold.Err)
		}
		for name, f := range map[string]faultResult{"revoke": s.Revoke, "busy": s.Busy, "slow": s.Slow, "http500": s.HTTP500} {
			if f.Err != "" {
				t.Errorf("%s %s: %s", s.SDK, name, f.Err)
			}
		}
		if s.SDK == sdkOurs {
			if s.Cold.OK != cfg.coldN || s.Cold.Errors != 0 {
				t.Errorf("ours cold burst: %d ok, %d errors (first: %s)", s.Cold.OK, s.Cold.Errors, s.Cold.FirstErr)
			}
			if s.Cold.TokenFetches != 1 {
				t.Logf("ours cold burst made %d token fetches", s.Cold.TokenFetches)
			}
		}
	}

	md := rep.markdown()
	for _, want := range []string{"| c | SDK (mode) |", "**wxphone (ours)**", "Targets.", "Raw numbers"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if !strings.Contains(md, "wxphone ÷ floor") {
		t.Error("markdown lacks the floor table")
	}
	for _, l := range wantLabels[2:] {
		if !strings.Contains(md, "| "+l+" |") {
			t.Errorf("markdown has no row for %s", l)
		}
	}
}

func TestWriteSection(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "benchmarks.md")

	// Created with just our section.
	if err := writeSection(path, "one\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if got, want := string(b), beginMarker+"\none\n"+endMarker+"\n"; got != want {
		t.Fatalf("created file = %q, want %q", got, want)
	}

	// Only the text between our markers changes.
	head := "# Benchmarks\n\n<!-- load:begin -->\nload stuff\n<!-- load:end -->\n\n"
	tail := "\ntrailing text\n"
	if err := os.WriteFile(path, []byte(head+beginMarker+"\nold\n"+endMarker+tail), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "new\n"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if got, want := string(b), head+beginMarker+"\nnew\n"+endMarker+tail; got != want {
		t.Fatalf("rewritten file = %q, want %q", got, want)
	}

	// No markers yet: appended, the rest untouched.
	other := "# Benchmarks\n\n<!-- load:begin -->\nx\n<!-- load:end -->"
	if err := os.WriteFile(path, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "s"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if got, want := string(b), other+"\n\n"+beginMarker+"\ns\n"+endMarker+"\n"; got != want {
		t.Fatalf("appended file = %q, want %q", got, want)
	}

	// Unbalanced markers: refuse.
	if err := os.WriteFile(path, []byte(beginMarker+"\nno end\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "s"); err == nil {
		t.Fatal("unbalanced markers accepted")
	}
}

func TestExpectedPhone(t *testing.T) {
	// The emulator's own derivation, through a real exchange, is covered
	// by TestSmoke; here only the shape checks.
	if expectedPhone("load-x", "") || expectedPhone("load-x", "12345678901") {
		t.Fatal("malformed numbers accepted")
	}
}

// TestTargetsAgainstFloor checks the target arithmetic on made-up cells:
// the floor is judged by its own targets, not counted as a peer.
func TestTargetsAgainstFloor(t *testing.T) {
	mk := func(label, sdk string, conc int, ops, mallocs int64) cellResult {
		return cellResult{Label: label, SDK: sdk, Mode: modeDefault, Conc: conc, Ops: ops, Elapsed: time.Second, Mallocs: uint64(mallocs)}
	}
	peer := sdkWeapp + " (" + modeDefault + ")"
	r := &report{Meta: meta{Levels: []int{1, 16}}, Labels: []string{sdkOurs, sdkFloor, peer}}
	for _, c := range []int{1, 16} {
		r.Cells = append(r.Cells,
			mk(sdkOurs, sdkOurs, c, 950, 950*78),
			mk(sdkFloor, sdkFloor, c, 1000, 1000*72),
			mk(peer, sdkWeapp, c, 500, 500*83))
	}
	tg := r.targets()
	if !tg.AllocsMet {
		t.Errorf("fewer allocs than every peer not met: %s", tg.Allocs)
	}
	if tg.FloorAllocsMet {
		t.Error("78 allocs/op judged below the floor's 72")
	}
	if !tg.FloorRateMet {
		t.Errorf("0.95 of the floor judged outside 10 %%: %s", tg.FloorRate)
	}
	r.Cells[0].Ops = 800 // c=1: 0.80 of the floor
	if tg := r.targets(); tg.FloorRateMet || !strings.Contains(tg.FloorRate, "c=1 0.80") {
		t.Errorf("0.80 of the floor judged met: %s", tg.FloorRate)
	}
}
