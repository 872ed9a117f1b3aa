package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// sink is a goroutine-safe bytes.Buffer that counts its writes.
type sink struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *sink) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func TestFlushOnInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{})
		defer w.Close()
		_, _ = w.Write([]byte("a\n"))
		_, _ = w.Write([]byte("b\n"))
		time.Sleep(DefaultInterval - time.Millisecond)
		synctest.Wait()
		if got := out.String(); got != "" {
			t.Fatalf("written before the interval: %q", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := out.String(); got != "a\nb\n" {
			t.Fatalf("after the interval: %q, want both lines", got)
		}
		if n := out.Writes(); n != 1 {
			t.Fatalf("%d writes to the underlying writer, want 1", n)
		}
	})
}

func TestIntervalIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{Interval: time.Hour})
		defer w.Close()
		_, _ = w.Write([]byte("a\n"))
		time.Sleep(MaxInterval)
		synctest.Wait()
		if got := out.String(); got != "a\n" {
			t.Fatalf("after MaxInterval: %q", got)
		}
	})
}

func TestCloseFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{})
		_, _ = w.Write([]byte("a\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != "a\n" {
			t.Fatalf("after Close: %q", got)
		}
		// After Close a write is not buffered (nothing would flush it).
		_, _ = w.Write([]byte("b\n"))
		if got := out.String(); got != "a\nb\n" {
			t.Fatalf("a write after Close: %q", got)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestWarningsAreImmediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{})
		defer w.Close()
		log := slog.New(w.Handler(func(o io.Writer) slog.Handler { return slog.NewJSONHandler(o, nil) })).With("app", "x")
		log.Info("one")
		if got := out.String(); got != "" {
			t.Fatalf("info written at once: %q", got)
		}
		log.Warn("two")
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"one"`) || !strings.Contains(lines[1], `"msg":"two"`) ||
			!strings.Contains(lines[1], `"app":"x"`) {
			t.Fatalf("after a warning: %q, want the buffered info line, then the warning", lines)
		}
		log.WithGroup("g").Error("three", "k", 1)
		if got := out.String(); !strings.Contains(got, `"msg":"three","app":"x","g":{"k":1}`) {
			t.Fatalf("error not written at once, or its group lost: %q", got)
		}
		log.Debug("hidden")
		log.Info("four")
		if got := out.String(); strings.Contains(got, "four") || strings.Contains(got, "hidden") {
			t.Fatalf("info written at once: %q", got)
		}
	})
}

func TestBufferIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{MaxBytes: 8})
		defer w.Close()
		_, _ = w.Write([]byte("aaaa\n"))
		_, _ = w.Write([]byte("bbbb\n")) // would pass 8 bytes: "aaaa\n" goes out first
		if got := out.String(); got != "aaaa\n" {
			t.Fatalf("after passing the bound: %q", got)
		}
		_, _ = w.Write([]byte("cccccccccc\n")) // larger than the bound: written directly, in order
		if got := out.String(); got != "aaaa\nbbbb\ncccccccccc\n" {
			t.Fatalf("a line larger than the bound: %q", got)
		}
	})
}

// TestNoLossOnClose writes from many goroutines while the ticker flushes,
// then closes: every line arrives exactly once, whole.
func TestNoLossOnClose(t *testing.T) {
	out := &sink{}
	w := New(out, Options{Interval: time.Millisecond, MaxBytes: 512})
	log := slog.New(w.Handler(func(o io.Writer) slog.Handler { return slog.NewJSONHandler(o, nil) }))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if i%50 == 0 {
					log.Warn("line", "id", fmt.Sprintf("%d-%d", g, i))
				} else {
					log.Info("line", "id", fmt.Sprintf("%d-%d", g, i))
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		i := strings.Index(l, `"id":"`)
		if i < 0 || !strings.HasSuffix(l, `"}`) {
			t.Fatalf("torn line %q", l)
		}
		seen[l[i:]]++
	}
	if len(seen) != 8*500 {
		t.Fatalf("%d distinct lines, want %d", len(seen), 8*500)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s written %d times", id, n)
		}
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestFlushReportsWriteErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := New(failing{}, Options{})
		_, _ = w.Write([]byte("a\n"))
		if err := w.Close(); err == nil || err.Error() != "disk full" {
			t.Fatalf("Close = %v, want the writer's error", err)
		}
	})
}
