package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wxphone/wxphone/internal/wait"
)

// The exporter below speaks OTLP/HTTP with protobuf bodies, encoded with
// protowire from the field numbers of opentelemetry-proto (trace.proto,
// common.proto, resource.proto): the generated OTLP packages import gRPC,
// which would double the size of the binary. Tests decode its output with
// the generated types.

// exporterConfig is the exporter's part of the environment.
type exporterConfig struct {
	endpoint    string
	headers     http.Header
	timeout     time.Duration
	gzip        bool
	tlsConfig   *tls.Config
	redactedURL string // endpoint without user info or query, for errors
}

// envFirst returns the first non-empty variable of keys.
func envFirst(getenv func(string) string, keys ...string) (string, string) {
	for _, k := range keys {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v, k
		}
	}
	return "", ""
}

// exporterFromEnv reads OTEL_EXPORTER_OTLP_[TRACES_]* (the traces-specific
// variable wins).
func exporterFromEnv(getenv func(string) string) (exporterConfig, error) {
	c := exporterConfig{headers: http.Header{}, timeout: 10 * time.Second}
	if v, _ := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		c.endpoint = v // used as is
	} else if v, _ := envFirst(getenv, "OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		c.endpoint = strings.TrimRight(v, "/") + "/v1/traces"
	} else {
		c.endpoint = "http://localhost:4318/v1/traces"
	}
	u, err := url.Parse(c.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, errors.New("tracing: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT: want an http:// or https:// URL")
	}
	r := *u
	r.User, r.RawQuery, r.Fragment = nil, "", ""
	c.redactedURL = r.String()

	if v, k := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"); v != "" {
		for _, pair := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(pair, "=")
			name = strings.TrimSpace(name)
			dv, derr := url.PathUnescape(strings.TrimSpace(val))
			if !ok || name == "" || derr != nil {
				return c, fmt.Errorf("tracing: %s: want key=value pairs separated by commas (values percent-encoded)", k)
			}
			c.headers.Add(name, dv)
		}
	}
	if v, k := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return c, fmt.Errorf("tracing: %s: want milliseconds", k)
		}
		c.timeout = time.Duration(ms) * time.Millisecond
	}
	if v, k := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"); v != "" {
		switch strings.ToLower(v) {
		case "gzip":
			c.gzip = true
		case "none":
		default:
			return c, fmt.Errorf("tracing: %s: want gzip or none", k)
		}
	}
	ca, caKey := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
	cert, certKey := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
	key, keyKey := envFirst(getenv, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY")
	if ca != "" || cert != "" || key != "" {
		c.tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if ca != "" {
		pem, err := os.ReadFile(ca) // #nosec G304 -- the operator names the file
		if err != nil {
			return c, fmt.Errorf("tracing: %s: %w", caKey, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("tracing: %s: no PEM certificate in %s", caKey, ca)
		}
		c.tlsConfig.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return c, fmt.Errorf("tracing: %s and %s go together", orName(certKey, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), orName(keyKey, "OTEL_EXPORTER_OTLP_CLIENT_KEY"))
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return c, fmt.Errorf("tracing: %s / %s: cannot load the client certificate", certKey, keyKey)
		}
		c.tlsConfig.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

func orName(k, def string) string {
	if k != "" {
		return k
	}
	return def
}

// exporter is an sdktrace.SpanExporter speaking OTLP/HTTP protobuf.
type exporter struct {
	cfg exporterConfig
	hc  *http.Client
}

func newExporter(cfg exporterConfig) *exporter {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.tlsConfig != nil {
		tr.TLSClientConfig = cfg.tlsConfig
	}
	return &exporter{cfg: cfg, hc: &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// ExportSpans implements sdktrace.SpanExporter: one POST per batch,
// retried with backoff on 429, 502, 503 and 504 (honouring Retry-After)
// within the configured timeout.
func (e *exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	body := encodeRequest(spans)
	if e.cfg.gzip {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = b.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		retryAfter, err := e.post(ctx, body)
		if err == nil {
			return nil
		}
		var re retryable
		if !errors.As(err, &re) || attempt >= 5 {
			return err
		}
		pause := max(retryAfter, backoff/2+rand.N(backoff/2+1)) // #nosec G404 -- jitter
		backoff = min(backoff*2, 5*time.Second)
		if cerr := wait.Sleep(ctx, pause); cerr != nil {
			return fmt.Errorf("%w (gave up retrying: %w)", err, cerr)
		}
	}
}

// retryable marks a failure worth another attempt.
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

func (e *exporter) post(ctx context.Context, body []byte) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("tracing: OTLP export to %s: bad request", e.cfg.redactedURL)
	}
	for k, v := range e.cfg.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "wxphone-otlp/1")
	if e.cfg.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("tracing: OTLP export to %s: %w", e.cfg.redactedURL, ctx.Err())
		}
		return 0, retryable{fmt.Errorf("tracing: OTLP export to %s: connection failed", e.cfg.redactedURL)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusBadGateway ||
		resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		var after time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = time.Duration(min(s, 60)) * time.Second
		}
		return after, retryable{fmt.Errorf("tracing: OTLP export to %s: HTTP %d", e.cfg.redactedURL, resp.StatusCode)}
	}
	return 0, fmt.Errorf("tracing: OTLP export to %s: HTTP %d", e.cfg.redactedURL, resp.StatusCode)
}

// Shutdown implements sdktrace.SpanExporter.
func (e *exporter) Shutdown(context.Context) error {
	e.hc.CloseIdleConnections()
	return nil
}

// encodeRequest encodes an ExportTraceServiceRequest: the spans grouped
// by resource and then by instrumentation scope, in order of appearance.
func encodeRequest(spans []sdktrace.ReadOnlySpan) []byte {
	type scopeGroup struct {
		scope instrumentation.Scope
		spans []sdktrace.ReadOnlySpan
	}
	type resGroup struct {
		res    sdktrace.ReadOnlySpan // a span carrying the resource
		scopes []*scopeGroup
	}
	var groups []*resGroup
	for _, s := range spans {
		var g *resGroup
		for _, x := range groups {
			if x.res.Resource() == s.Resource() || x.res.Resource().Equal(s.Resource()) {
				g = x
				break
			}
		}
		if g == nil {
			g = &resGroup{res: s}
			groups = append(groups, g)
		}
		var sg *scopeGroup
		for _, x := range g.scopes {
			if x.scope == s.InstrumentationScope() {
				sg = x
				break
			}
		}
		if sg == nil {
			sg = &scopeGroup{scope: s.InstrumentationScope()}
			g.scopes = append(g.scopes, sg)
		}
		sg.spans = append(sg.spans, s)
	}
	var out []byte
	for _, g := range groups {
		var rs []byte
		var res []byte
		if r := g.res.Resource(); r != nil {
			for _, kv := range r.Attributes() {
				res = appendMessage(res, 1, appendKeyValue(nil, kv))
			}
			rs = appendMessage(rs, 1, res) // ResourceSpans.resource
		}
		for _, sg := range g.scopes {
			var ss []byte
			var sc []byte
			sc = appendString(sc, 1, sg.scope.Name)
			sc = appendString(sc, 2, sg.scope.Version)
			ss = appendMessage(ss, 1, sc) // ScopeSpans.scope
			for _, s := range sg.spans {
				ss = appendMessage(ss, 2, encodeSpan(s))
			}
			ss = appendString(ss, 3, sg.scope.SchemaURL)
			rs = appendMessage(rs, 2, ss) // ResourceSpans.scope_spans
		}
		if r := g.res.Resource(); r != nil {
			rs = appendString(rs, 3, r.SchemaURL())
		}
		out = appendMessage(out, 1, rs) // ExportTraceServiceRequest.resource_spans
	}
	return out
}

// encodeSpan encodes one Span message.
func encodeSpan(s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	var b []byte
	b = appendBytes(b, 1, tid[:])
	b = appendBytes(b, 2, sid[:])
	b = appendString(b, 3, sc.TraceState().String())
	if p := s.Parent(); p.SpanID().IsValid() {
		psid := p.SpanID()
		b = appendBytes(b, 4, psid[:])
	}
	b = appendString(b, 5, s.Name())
	if k := int(s.SpanKind()); k != 0 {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(k)) // #nosec G115 -- a small enum
	}
	b = appendFixed64(b, 7, unixNano(s.StartTime()))
	b = appendFixed64(b, 8, unixNano(s.EndTime()))
	for _, kv := range s.Attributes() {
		b = appendMessage(b, 9, appendKeyValue(nil, kv))
	}
	b = appendUint(b, 10, s.DroppedAttributes())
	for _, ev := range s.Events() {
		var e []byte
		e = appendFixed64(e, 1, unixNano(ev.Time))
		e = appendString(e, 2, ev.Name)
		for _, kv := range ev.Attributes {
			e = appendMessage(e, 3, appendKeyValue(nil, kv))
		}
		e = appendUint(e, 4, ev.DroppedAttributeCount)
		b = appendMessage(b, 11, e)
	}
	b = appendUint(b, 12, s.DroppedEvents())
	for _, l := range s.Links() {
		var e []byte
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		e = appendBytes(e, 1, ltid[:])
		e = appendBytes(e, 2, lsid[:])
		e = appendString(e, 3, l.SpanContext.TraceState().String())
		for _, kv := range l.Attributes {
			e = appendMessage(e, 4, appendKeyValue(nil, kv))
		}
		e = appendUint(e, 5, l.DroppedAttributeCount)
		b = appendMessage(b, 13, e)
	}
	b = appendUint(b, 14, s.DroppedLinks())
	var st []byte
	st = appendString(st, 2, s.Status().Description)
	code := 0 // STATUS_CODE_UNSET
	switch s.Status().Code {
	case codes.Ok:
		code = 1
	case codes.Error:
		code = 2
	}
	if code != 0 {
		st = protowire.AppendTag(st, 3, protowire.VarintType)
		st = protowire.AppendVarint(st, uint64(code)) // #nosec G115 -- 1 or 2
	}
	b = appendMessage(b, 15, st)
	b = protowire.AppendTag(b, 16, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, uint32(sc.TraceFlags()))
	return b
}

// appendKeyValue encodes a KeyValue message.
func appendKeyValue(b []byte, kv attribute.KeyValue) []byte {
	b = appendString(b, 1, string(kv.Key))
	return appendMessage(b, 2, encodeValue(kv.Value))
}

// encodeValue encodes an AnyValue message.
func encodeValue(v attribute.Value) []byte {
	var b []byte
	switch v.Type() {
	case attribute.BOOL:
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.AsInt64())) // #nosec G115 -- int64 is encoded as its two's complement
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, v.AsString())
	case attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE, attribute.STRINGSLICE:
		var arr []byte
		switch v.Type() {
		case attribute.BOOLSLICE:
			for _, x := range v.AsBoolSlice() {
				arr = appendMessage(arr, 1, encodeValue(attribute.BoolValue(x)))
			}
		case attribute.INT64SLICE:
			for _, x := range v.AsInt64Slice() {
				arr = appendMessage(arr, 1, encodeValue(attribute.Int64Value(x)))
			}
		case attribute.FLOAT64SLICE:
			for _, x := range v.AsFloat64Slice() {
				arr = appendMessage(arr, 1, encodeValue(attribute.Float64Value(x)))
			}
		default:
			for _, x := range v.AsStringSlice() {
				arr = appendMessage(arr, 1, encodeValue(attribute.StringValue(x)))
			}
		}
		b = appendMessage(b, 5, arr)
	default: // a type this encoder does not know: its text form
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, v.String())
	}
	return b
}

func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	return appendMessage(b, num, v)
}

// appendString skips an empty string (proto3's default).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendUint skips zero (proto3's default).
func appendUint(b []byte, num protowire.Number, n int) []byte {
	if n <= 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(n))
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() || t.UnixNano() < 0 {
		return 0
	}
	return uint64(t.UnixNano()) // #nosec G115 -- checked non-negative
}
