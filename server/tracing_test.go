package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/server"
)

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// spanTexts is everything a span carries as text: name, attributes,
// events, links, status and resource.
func spanTexts(s sdktrace.ReadOnlySpan) []string {
	out := []string{s.Name(), s.Status().Description}
	add := func(kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			out = append(out, string(kv.Key)+"="+kv.Value.String())
		}
	}
	add(s.Attributes())
	add(s.Resource().Attributes())
	for _, ev := range s.Events() {
		out = append(out, ev.Name)
		add(ev.Attributes)
	}
	for _, l := range s.Links() {
		add(l.Attributes)
	}
	return out
}

// TestTracingSpans: a request is a server span named by its route that
// continues the caller's traceparent; the exchange's call to WeChat is its
// child; health checks are not traced; no span carries a secret.
func TestTracingSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	e := newEnv(t, envOpts{
		serverCfg: func(c *server.Config) { c.TracerProvider = tp },
		clientCfg: func(c *wxphone.Config) { c.TracerProvider = tp },
	})
	// The caller's span, sent as a W3C traceparent.
	callerCtx, caller := tp.Tracer("caller").Start(context.Background(), "caller")
	caller.End()
	hdr := http.Header{}
	propagation.TraceContext{}.Inject(callerCtx, propagation.HeaderCarrier(hdr))

	code := e.mint(appA, "13912345678")
	if st, _, b := e.do(request{key: keyPhone, body: `{"code":"` + code + `"}`, header: map[string]string{"Traceparent": hdr.Get("Traceparent")}}); st != 200 {
		t.Fatalf("exchange: %d %s", st, b)
	}
	// Replayed, then refused, then an unknown path carrying secrets, a
	// query with a token, health.
	if st, _, _ := e.do(request{key: keyPhone, body: `{"code":"` + code + `"}`}); st != 200 {
		t.Fatalf("replay: %d", st)
	}
	if st, _, _ := e.do(request{key: "wrong-key-0123456789abcdef", body: `{"code":"` + code + `"}`}); st != 401 {
		t.Fatalf("unauthorized: %d", st)
	}
	tok, err := e.svc.AccessToken(context.Background(), appA)
	if err != nil {
		t.Fatal(err)
	}
	e.do(request{method: "GET", path: "/v1/" + code + "/13912345678?access_token=" + tok.Value, key: keyPhone})
	e.do(request{method: "GET", path: server.PathAccessToken + "?appid=" + appA + "&access_token=" + tok.Value, key: keyToken})
	e.do(request{method: "GET", path: server.PathHealthz})
	e.do(request{method: "GET", path: server.PathReadyz})
	e.do(request{method: "GET", path: server.PathMetrics})

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	phone := byName["POST "+server.PathPhoneNumber]
	if len(phone) != 3 {
		t.Fatalf("phone spans %d; all: %v", len(phone), keys(byName))
	}
	first := phone[0]
	if first.SpanKind() != trace.SpanKindServer || first.Parent().SpanID() != caller.SpanContext().SpanID() ||
		first.SpanContext().TraceID() != caller.SpanContext().TraceID() || !first.Parent().IsRemote() {
		t.Errorf("server span: kind %v parent %v", first.SpanKind(), first.Parent())
	}
	a := attrsOf(first)
	if a["http.route"].AsString() != server.PathPhoneNumber || a["wxphone.appid"].AsString() != appA ||
		a["http.response.status_code"].AsInt64() != 200 || a["wxphone.replayed"].AsBool() || a["wxphone.request_id"].AsString() == "" {
		t.Errorf("server span attributes: %v", first.Attributes())
	}
	if !attrsOf(phone[1])["wxphone.replayed"].AsBool() {
		t.Errorf("replay not marked: %v", phone[1].Attributes())
	}
	if attrsOf(phone[2])["wxphone.error"].AsString() != "unauthorized" {
		t.Errorf("401 span: %v", phone[2].Attributes())
	}
	var child sdktrace.ReadOnlySpan
	for _, s := range byName["WeChat getuserphonenumber"] {
		if s.Parent().SpanID() == first.SpanContext().SpanID() {
			child = s
		}
	}
	if child == nil || len(byName["WeChat getuserphonenumber"]) != 1 {
		t.Errorf("the WeChat call is not the one child of the server span: %v", byName["WeChat getuserphonenumber"])
	}
	if len(byName["GET other"]) != 1 || len(byName["GET "+server.PathAccessToken]) != 1 {
		t.Errorf("spans: %v", keys(byName))
	}
	for _, p := range []string{server.PathHealthz, server.PathReadyz, server.PathMetrics} {
		if len(byName["GET "+p]) != 0 {
			t.Errorf("%s traced", p)
		}
	}
	if u := attrsOf(byName["GET other"][0])["url.path"]; u.AsString() != "" {
		t.Errorf("unknown path recorded: %q", u.AsString())
	}
	secrets := append(append(append([]string{tok.Value, "wrong-key-0123456789abcdef"}, e.secrets...), e.codes...), e.phones...)
	for _, s := range spans {
		for _, txt := range spanTexts(s) {
			for _, sec := range secrets {
				if strings.Contains(txt, sec) {
					t.Errorf("span %q carries a secret in %q", s.Name(), txt)
				}
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
