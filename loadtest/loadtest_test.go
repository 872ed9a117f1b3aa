package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every scenario with -smoke and checks the report's
// structure only: each scenario ran, has targets with a status, tables,
// plots that are SVG, and the section replaces only its own markers. No
// number is asserted: the tool measures, tests do not time.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds wxphone and runs processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docs := filepath.Join(t.TempDir(), "benchmarks.md")
	outside := "# Benchmarks\n\n<!-- peers:begin -->\npeer text\n<!-- peers:end -->\n"
	if err := os.WriteFile(docs, []byte(outside), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"-smoke", "-scenario", "all", "-write", "-docs", docs}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(docs)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.Contains(doc, outside) {
		t.Fatalf("text outside the load markers changed:\n%s", doc)
	}
	for _, want := range []string{Begin, End, NotesBegin, NotesEnd, "Smoke run", "### Targets", "go run -C loadtest .", "CPUs"} {
		if !strings.Contains(doc, want) {
			t.Errorf("section lacks %q", want)
		}
	}
	for _, name := range ScenarioNames() {
		if !strings.Contains(doc, "### "+name+"\n") {
			t.Errorf("no section for scenario %s", name)
		}
		if strings.Contains(doc, "| "+name+" | (did not run)") {
			t.Errorf("scenario %s did not run:\n%s", name, out.String())
		}
	}
	if strings.Count(doc, "**MET**")+strings.Count(doc, "**MISSED**") < 7 {
		t.Errorf("expected a status for each of the 7 targets:\n%s", doc)
	}
	plots, _ := filepath.Glob(filepath.Join(filepath.Dir(docs), "bench", "*.svg"))
	if len(plots) < len(ScenarioNames())+1 {
		t.Fatalf("plots = %v", plots)
	}
	for _, p := range plots {
		b, _ := os.ReadFile(p)
		if !bytes.HasPrefix(b, []byte("<svg ")) || !bytes.HasSuffix(bytes.TrimSpace(b), []byte("</svg>")) {
			t.Errorf("%s is not an SVG document", p)
		}
		if !strings.Contains(doc, "(bench/"+filepath.Base(p)+")") {
			t.Errorf("%s is not linked from the section", filepath.Base(p))
		}
	}

	// A second write keeps the notes block and everything outside.
	notes := strings.Replace(doc, NotesBegin+"\n", NotesBegin+"\nhand-written notes\n", 1)
	if err := os.WriteFile(docs, []byte(notes), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &Report{Command: "x", Smoke: true}
	if err := rep.Write(docs); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(docs)
	if !strings.Contains(string(b), "hand-written notes") || !strings.Contains(string(b), outside) {
		t.Fatalf("rewrite lost the notes or the text outside:\n%s", b)
	}
}

// TestReplaceSection: the section between the markers is replaced, the
// notes block kept, and markers are created at the top when absent.
func TestReplaceSection(t *testing.T) {
	doc := "a\n" + Begin + "\nold\n" + NotesBegin + "\nkeep\n" + NotesEnd + "\n" + End + "\nb\n"
	got, err := replaceSection(doc, "new\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "a\n" + Begin + "\nnew\n\n" + NotesBegin + "\nkeep\n" + NotesEnd + "\n" + End + "\nb\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if _, err := replaceSection(End+Begin, "x"); err == nil {
		t.Fatal("unbalanced markers accepted")
	}
	got, _ = replaceSection("rest\n", "body\n")
	if !strings.HasPrefix(got, Begin+"\nbody\n") || !strings.HasSuffix(got, End+"\n\nrest\n") {
		t.Fatalf("markers not created: %q", got)
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-scenario", "nope"}, &out); err == nil {
		t.Fatal("unknown scenario accepted")
	}
	if _, err := parseFlags([]string{"-proto", "h3"}, &out); err == nil {
		t.Fatal("unknown protocol accepted")
	}
	o, err := parseFlags([]string{"-scenario", "memory,throughput", "-smoke"}, &out)
	if err != nil || len(o.Scenarios) != 2 || !o.Smoke || o.Write {
		t.Fatalf("parse = %+v, %v", o, err)
	}
}
