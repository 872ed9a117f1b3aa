// Package logbuf is a buffered writer for the service's log: info lines
// are collected in memory and written in one system call every Interval
// (at most 100 ms) instead of one per line, while warnings and errors are
// written at once (after the lines buffered before them, so the order is
// kept). Close writes what is left. A crash (a panic that is not
// recovered, a kill) loses at most the last Interval of buffered lines;
// docs/operations.md says so.
package logbuf

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Defaults and limits of Options.
const (
	// DefaultInterval is how often buffered lines are written.
	DefaultInterval = 100 * time.Millisecond
	// MaxInterval bounds Options.Interval: the lines a crash may lose.
	MaxInterval = 100 * time.Millisecond
	// DefaultMaxBytes bounds the buffer: a write that would pass it writes
	// the buffer out first.
	DefaultMaxBytes = 64 << 10
)

// Options configures a Writer. The zero value uses the defaults.
type Options struct {
	// Interval is how often buffered lines are written; 0 means
	// DefaultInterval, and more than MaxInterval means MaxInterval.
	Interval time.Duration
	// MaxBytes bounds the buffer; 0 means DefaultMaxBytes.
	MaxBytes int
}

// Writer buffers writes to an underlying writer; see the package
// documentation. It is safe for concurrent use. Each Write should be one
// whole log line, as slog's handlers make them.
type Writer struct {
	out  io.Writer
	max  int
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	buf    []byte
	err    error // the first error of the underlying writer
	closed bool
}

// New returns a Writer over out and starts its flushing goroutine, which
// Close stops.
func New(out io.Writer, o Options) *Writer {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	o.Interval = min(o.Interval, MaxInterval)
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	w := &Writer{out: out, max: o.MaxBytes, stop: make(chan struct{}), done: make(chan struct{}), buf: make([]byte, 0, o.MaxBytes)}
	go w.loop(o.Interval)
	return w
}

func (w *Writer) loop(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = w.Flush()
		case <-w.stop:
			return
		}
	}
}

// Write buffers p. When the buffer would pass its bound it is written out
// first; a p larger than the bound, or any write after Close, is written
// directly.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(p) > w.max {
		w.flushLocked()
		return w.writeLocked(p)
	}
	if len(w.buf)+len(p) > w.max {
		w.flushLocked()
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// WriteNow writes the buffered lines, then p, at once.
func (w *Writer) WriteNow(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return w.writeLocked(p)
}

// Flush writes the buffered lines and returns the first error the
// underlying writer ever reported.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return w.err
}

// Close stops the flushing goroutine and writes the buffered lines. Later
// writes go straight to the underlying writer. It returns what Flush does.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return w.Flush()
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
	return w.Flush()
}

func (w *Writer) flushLocked() {
	if len(w.buf) == 0 {
		return
	}
	_, _ = w.writeLocked(w.buf)
	w.buf = w.buf[:0]
}

func (w *Writer) writeLocked(p []byte) (int, error) {
	n, err := w.out.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// immediate is the io.Writer of the records written at once.
type immediate struct{ w *Writer }

func (i immediate) Write(p []byte) (int, error) { return i.w.WriteNow(p) }

// Handler returns a slog.Handler that formats records with the handler
// newHandler makes for a given writer, buffers those below slog.LevelWarn
// in w and writes those at slog.LevelWarn and above at once.
func (w *Writer) Handler(newHandler func(io.Writer) slog.Handler) slog.Handler {
	return splitHandler{buffered: newHandler(w), now: newHandler(immediate{w})}
}

// splitHandler sends a record to one of two handlers by its level.
type splitHandler struct{ buffered, now slog.Handler }

func (h splitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.buffered.Enabled(ctx, l)
}

func (h splitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		return h.now.Handle(ctx, r)
	}
	return h.buffered.Handle(ctx, r)
}

func (h splitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return splitHandler{buffered: h.buffered.WithAttrs(as), now: h.now.WithAttrs(as)}
}

func (h splitHandler) WithGroup(name string) slog.Handler {
	return splitHandler{buffered: h.buffered.WithGroup(name), now: h.now.WithGroup(name)}
}
