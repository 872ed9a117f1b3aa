package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/logbuf"
	"github.com/wxphone/wxphone/metrics"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
)

// fixedBackend answers every exchange with the same number, so that what
// is measured is the server's own work on a request: middleware, body
// decoding, the answer's encoding, the log line and the metrics.
type fixedBackend struct{ res service.Result }

func (b *fixedBackend) Exchange(context.Context, service.Request) (*service.Result, error) {
	r := b.res
	return &r, nil
}
func (b *fixedBackend) AccessToken(context.Context, string) (wxphone.Token, error) {
	return wxphone.Token{}, wxphone.ErrTokenUnavailable
}
func (b *fixedBackend) InvalidateToken(context.Context, string, string) (wxphone.Token, error) {
	return wxphone.Token{}, wxphone.ErrTokenUnavailable
}
func (b *fixedBackend) Status() []service.AppStatus { return nil }
func (b *fixedBackend) Apps() []string              { return []string{appA} }

// servePath builds a server over fixedBackend that logs to w as `wxphone
// serve` does (JSON lines, buffered when w is a logbuf.Writer) at level, and
// a request to send it.
func servePath(tb testing.TB, w io.Writer, level slog.Level) (http.Handler, func() *http.Request) {
	tb.Helper()
	srv, err := server.New(server.Config{
		Service: &fixedBackend{res: service.Result{AppID: appA, Phone: wxphone.PhoneInfo{
			PhoneNumber: "+86 13800138000", PurePhoneNumber: "13800138000", CountryCode: "86",
			Watermark: wxphone.Watermark{AppID: appA, Timestamp: 1700000000},
		}}},
		APIKeys: []wxphone.Secret{wxphone.Secret(keyPhone)},
		Metrics: metrics.New(),
		Logger:  server.NewLogger(w, level),
	})
	if err != nil {
		tb.Fatal(err)
	}
	body := `{"code":"0a1b2c3d4e5f60718293a4b5c6d7e8f9"}`
	req := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/v1/phone-number", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+keyPhone)
		return r
	}
	return srv.Handler(), req
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// reusableBody is a request body that can be read again after Reset.
type reusableBody struct{ strings.Reader }

func (*reusableBody) Close() error { return nil }

// resender sends the same request to h again and again (its body rewound,
// the response discarded) and returns the status of each.
func resender(h http.Handler, req func() *http.Request) func() int {
	r := req()
	raw, _ := io.ReadAll(r.Body)
	body := string(raw)
	rb := new(reusableBody)
	w := &discardWriter{h: http.Header{}}
	return func() int {
		rb.Reset(body)
		r.Body = rb
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, r)
		return w.status
	}
}

// BenchmarkServePhone is the server's own cost of one answered exchange,
// without net/http's connection handling and without the service: one
// request, its body rewound each time.
func BenchmarkServePhone(b *testing.B) {
	lw := logbuf.New(io.Discard, logbuf.Options{})
	b.Cleanup(func() { _ = lw.Close() })
	send := resender(servePath(b, lw, slog.LevelInfo))
	b.ReportAllocs()
	for b.Loop() {
		if status := send(); status != http.StatusOK {
			b.Fatalf("status %d", status)
		}
	}
}

// TestRequestLogLine pins the request's log line: its fields, the number
// masked, no caller (the record carries none), and nothing at all when the
// level is above the line's.
func TestRequestLogLine(t *testing.T) {
	var buf bytes.Buffer
	h, req := servePath(t, &buf, slog.LevelInfo)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req())
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	for _, k := range []string{"time", "request_id"} {
		if s, _ := line[k].(string); s == "" {
			t.Errorf("%s missing: %s", k, buf.Bytes())
		}
		delete(line, k)
	}
	if ms, ok := line["latency_ms"].(float64); !ok || ms < 0 {
		t.Errorf("latency_ms %v", line["latency_ms"])
	}
	delete(line, "latency_ms")
	want := map[string]any{"level": "INFO", "msg": "request", "method": "POST", "route": server.PathPhoneNumber, "status": 200.0,
		"key_id": line["key_id"], "appid": appA, "replayed": false, "phone": "+86 138****8000"}
	if !reflect.DeepEqual(line, want) {
		t.Errorf("log line\n%v\nwant\n%v", line, want)
	}
	if id, _ := line["key_id"].(string); len(id) != 12 {
		t.Errorf("key_id %q", id)
	}

	buf.Reset()
	h, req = servePath(t, &buf, slog.LevelWarn)
	h.ServeHTTP(httptest.NewRecorder(), req())
	if buf.Len() != 0 {
		t.Errorf("a 200 logged at level warn: %s", buf.Bytes())
	}
}

// TestServeAllocBudget pins the server's own allocations per answered
// exchange (BenchmarkServePhone's path): 20 before the hand-written answer
// encoder and the log line's record (docs/benchmarks.md), 18 after.
func TestServeAllocBudget(t *testing.T) {
	if server.RaceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	send := resender(servePath(t, io.Discard, slog.LevelInfo))
	allocs := testing.AllocsPerRun(200, func() { send() })
	if budget := 18.0; allocs > budget {
		t.Errorf("%.0f allocations per answered exchange, budget %.0f", allocs, budget)
	}
}
