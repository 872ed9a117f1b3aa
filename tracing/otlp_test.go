package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// recordSpans runs fn with a tracer and returns the ended spans.
func recordSpans(t *testing.T, res *resource.Resource, fn func(trace.Tracer)) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	fn(tp.Tracer("scope-a", trace.WithInstrumentationVersion("1.0")))
	return rec.Ended()
}

func anyString(v *commonpb.AnyValue) string { return v.GetStringValue() }

// TestEncodeMatchesGeneratedTypes: what the hand encoder writes decodes,
// with OpenTelemetry's generated types, into the same spans.
func TestEncodeMatchesGeneratedTypes(t *testing.T) {
	res := resource.NewSchemaless(attribute.String("service.name", "wxphone"), attribute.Int("replica", 3))
	ts, _ := trace.ParseTraceState("vendor=opaque")
	linked := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8}, TraceState: ts, TraceFlags: trace.FlagsSampled})
	spans := recordSpans(t, res, func(tr trace.Tracer) {
		ctx, parent := tr.Start(context.Background(), "parent", trace.WithSpanKind(trace.SpanKindServer))
		_, child := tr.Start(ctx, "WeChat getuserphonenumber", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithLinks(trace.Link{SpanContext: linked, Attributes: []attribute.KeyValue{attribute.String("l", "x")}}),
			trace.WithAttributes(
				attribute.String("s", "v"), attribute.Int64("i", -42), attribute.Float64("f", 1.5), attribute.Bool("b", true),
				attribute.StringSlice("ss", []string{"a", "b"}), attribute.Int64Slice("is", []int64{1, -2}),
				attribute.Float64Slice("fs", []float64{0.25}), attribute.BoolSlice("bs", []bool{false, true}),
			))
		child.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", 2)))
		child.SetStatus(codes.Error, "WeChat errcode 40029")
		child.End()
		parent.SetStatus(codes.Ok, "")
		parent.End()
	})
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(encodeRequest(spans), &req); err != nil {
		t.Fatal(err)
	}
	if len(req.ResourceSpans) != 1 || len(req.ResourceSpans[0].ScopeSpans) != 1 {
		t.Fatalf("grouping: %v", &req)
	}
	rs := req.ResourceSpans[0]
	if len(rs.Resource.Attributes) != 2 || rs.Resource.Attributes[0].Key != "replica" || rs.Resource.Attributes[0].Value.GetIntValue() != 3 ||
		anyString(rs.Resource.Attributes[1].Value) != "wxphone" {
		t.Errorf("resource %v", rs.Resource)
	}
	ss := rs.ScopeSpans[0]
	if ss.Scope.Name != "scope-a" || ss.Scope.Version != "1.0" || len(ss.Spans) != 2 {
		t.Fatalf("scope %v", ss)
	}
	for i, got := range ss.Spans {
		want := spans[i]
		sc := want.SpanContext()
		tid, sid := sc.TraceID(), sc.SpanID()
		if !bytes.Equal(got.TraceId, tid[:]) || !bytes.Equal(got.SpanId, sid[:]) || got.Name != want.Name() ||
			int(got.Kind) != int(want.SpanKind()) || got.StartTimeUnixNano != uint64(want.StartTime().UnixNano()) ||
			got.EndTimeUnixNano != uint64(want.EndTime().UnixNano()) || got.Flags != uint32(sc.TraceFlags()) {
			t.Errorf("span %d: %v", i, got)
		}
		if p := want.Parent(); p.IsValid() {
			psid := p.SpanID()
			if !bytes.Equal(got.ParentSpanId, psid[:]) {
				t.Errorf("span %d parent %x", i, got.ParentSpanId)
			}
		} else if len(got.ParentSpanId) != 0 {
			t.Errorf("root span with a parent %x", got.ParentSpanId)
		}
	}
	c := ss.Spans[0]
	attrs := map[string]*commonpb.AnyValue{}
	for _, kv := range c.Attributes {
		attrs[kv.Key] = kv.Value
	}
	arr := func(k string) []*commonpb.AnyValue { return attrs[k].GetArrayValue().GetValues() }
	if anyString(attrs["s"]) != "v" || attrs["i"].GetIntValue() != -42 || attrs["f"].GetDoubleValue() != 1.5 || !attrs["b"].GetBoolValue() ||
		len(arr("ss")) != 2 || anyString(arr("ss")[1]) != "b" || arr("is")[1].GetIntValue() != -2 ||
		arr("fs")[0].GetDoubleValue() != 0.25 || !arr("bs")[1].GetBoolValue() {
		t.Errorf("attributes %v", c.Attributes)
	}
	if len(c.Events) != 1 || c.Events[0].Name != "retry" || c.Events[0].Attributes[0].Value.GetIntValue() != 2 || c.Events[0].TimeUnixNano == 0 {
		t.Errorf("events %v", c.Events)
	}
	if len(c.Links) != 1 || c.Links[0].TraceState != "vendor=opaque" || c.Links[0].TraceId[0] != 9 || c.Links[0].SpanId[0] != 8 ||
		anyString(c.Links[0].Attributes[0].Value) != "x" {
		t.Errorf("links %v", c.Links)
	}
	if c.Status.Code != tracepb.Status_STATUS_CODE_ERROR || c.Status.Message != "WeChat errcode 40029" {
		t.Errorf("status %v", c.Status)
	}
	if p := ss.Spans[1]; p.Status.Code != tracepb.Status_STATUS_CODE_OK || p.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("parent %v", p)
	}
}

func TestExporterFromEnv(t *testing.T) {
	tests := []struct {
		env      map[string]string
		endpoint string
		err      string
		check    func(exporterConfig) bool
	}{
		{env: nil, endpoint: "http://localhost:4318/v1/traces"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://col:4318/"}, endpoint: "https://col:4318/v1/traces"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://col:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other/custom"}, endpoint: "http://other/custom"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1,Authorization=Bearer%20tok%2Cen"}, check: func(c exporterConfig) bool {
			return c.headers.Get("A") == "1" && c.headers.Get("Authorization") == "Bearer tok,en"
		}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"}, check: func(c exporterConfig) bool {
			return c.headers.Get("A") == "" && c.headers.Get("B") == "2"
		}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, check: func(c exporterConfig) bool {
			return c.timeout == 2500*time.Millisecond && c.gzip
		}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://col"}, err: "ENDPOINT"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, err: "OTEL_EXPORTER_OTLP_HEADERS"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, err: "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd"}, err: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent.pem"}, err: "OTEL_EXPORTER_OTLP_CERTIFICATE"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_KEY": "/k.pem"}, err: "go together"},
	}
	for _, tc := range tests {
		c, err := exporterFromEnv(func(k string) string { return tc.env[k] })
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.env, err, tc.err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.endpoint != "" && c.endpoint != tc.endpoint:
			t.Errorf("%v: endpoint %q", tc.env, c.endpoint)
		case tc.check != nil && !tc.check(c):
			t.Errorf("%v: %+v", tc.env, c)
		}
	}
}

// TestExporterRetries: 503 with Retry-After, then success; gzip bodies;
// a permanent failure is not retried and its error names no secret.
func TestExporterRetries(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	var bodies [][]byte
	status := atomic.Int64{}
	status.Store(503)
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		var rd io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, "bad gzip", 400)
				return
			}
			rd = zr
		}
		b, _ := io.ReadAll(rd)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(int(status.Load()))
			return
		}
		if r.Header.Get("X-Secret") != "hdr-secret-value" {
			w.WriteHeader(401)
		}
	}))
	defer col.Close()
	cfg, err := exporterFromEnv(func(k string) string {
		return map[string]string{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": strings.Replace(col.URL, "http://", "http://user:pw-secret@", 1) + "/v1/traces?token=q-secret",
			"OTEL_EXPORTER_OTLP_HEADERS":         "X-Secret=hdr-secret-value", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newExporter(cfg)
	spans := recordSpans(t, resource.Empty(), func(tr trace.Tracer) { _, s := tr.Start(context.Background(), "x"); s.End() })
	start := time.Now()
	if err := e.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || time.Since(start) < 900*time.Millisecond {
		t.Errorf("%d calls in %v (Retry-After 1 s)", calls.Load(), time.Since(start))
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(bodies[1], &req); err != nil || req.ResourceSpans[0].ScopeSpans[0].Spans[0].Name != "x" {
		t.Errorf("body: %v %v", err, &req)
	}
	// A 400 is not retried; the error names the endpoint without secrets.
	calls.Store(0)
	status.Store(400)
	err = e.ExportSpans(context.Background(), spans)
	if err == nil || calls.Load() != 1 || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("400: %v after %d calls", err, calls.Load())
	}
	for _, s := range []string{"pw-secret", "q-secret", "hdr-secret-value"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q carries %s", err, s)
		}
	}
	if err := e.ExportSpans(context.Background(), nil); err != nil {
		t.Error(err)
	}
	_ = e.Shutdown(context.Background())
}
