package wxphone

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func newRecorderProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// AssertNoSecrets fails when any attribute, event, link or status of any
// span carries one of secrets.
func assertNoSecrets(t *testing.T, spans []sdktrace.ReadOnlySpan, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		texts := []string{s.Name(), s.Status().Description}
		for _, kv := range s.Attributes() {
			texts = append(texts, string(kv.Key)+"="+kv.Value.String())
		}
		for _, ev := range s.Events() {
			texts = append(texts, ev.Name)
			for _, kv := range ev.Attributes {
				texts = append(texts, string(kv.Key)+"="+kv.Value.String())
			}
		}
		for _, kv := range s.Resource().Attributes() {
			texts = append(texts, kv.Value.String())
		}
		for _, txt := range texts {
			for _, sec := range secrets {
				if sec != "" && strings.Contains(txt, sec) {
					t.Errorf("span %q carries a secret in %q", s.Name(), txt)
				}
			}
		}
	}
}

func spanNamed(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	t.Helper()
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// TestTracingClientSpans: every call to WeChat is a client span, a child
// of the caller's span, whose traceparent WeChat receives; outcomes show
// as attributes and statuses that carry no secret.
func TestTracingClientSpans(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "http.Client"}[direct], func(t *testing.T) {
			e := newSrvEnv(t)
			tp, rec := newRecorderProvider(t)
			cfg := e.config(t)
			if direct {
				cfg.HTTPClient = nil
			}
			cfg.TracerProvider = tp
			c := newTestClient(t, cfg)
			ctx, parent := tp.Tracer("test").Start(ctxTimeout(t, 10e9), "parent")
			code := mintPhone(t, e.emu, testPhone)
			if _, err := c.PhoneNumber(ctx, code); err != nil {
				t.Fatal(err)
			}
			_, err := c.PhoneNumber(ctx, code) // reused: 40029
			var ae *APIError
			if !errors.As(err, &ae) || ae.ErrCode != 40029 {
				t.Fatalf("reuse: %v", err)
			}
			parent.End()
			tok, _ := c.TokenSource().Token(ctx)

			spans := rec.Ended()
			phone := spanNamed(t, spans, "WeChat getuserphonenumber")
			if len(phone) != 2 || len(spanNamed(t, spans, "WeChat stable_token")) != 1 {
				t.Fatalf("spans: %v", spans)
			}
			ok, failed := phone[0], phone[1]
			if ok.SpanKind() != trace.SpanKindClient || ok.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("kind %v, parent %v", ok.SpanKind(), ok.Parent())
			}
			a := spanAttrs(ok)
			if a["wechat.op"].AsString() != OpPhoneNumber || a["wechat.appid"].AsString() != testAppID ||
				a["http.response.status_code"].AsInt64() != 200 || a["wechat.errcode"].AsInt64() != 0 ||
				a["url.path"].AsString() != pathPhone || a["http.request.method"].AsString() != "POST" {
				t.Errorf("success attributes: %v", ok.Attributes())
			}
			if ok.Status().Code == codes.Error {
				t.Errorf("success status %v", ok.Status())
			}
			a = spanAttrs(failed)
			if a["wechat.errcode"].AsInt64() != 40029 || a["wechat.rid"].AsString() != ae.RID || failed.Status().Code != codes.Error {
				t.Errorf("failure: %v %v", failed.Attributes(), failed.Status())
			}

			// WeChat received each span's context as a W3C traceparent.
			var got []string
			for _, r := range e.rec.requests() {
				if r.Path == pathPhone {
					got = append(got, r.Header.Get("Traceparent"))
				}
			}
			for i, s := range phone {
				sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
					propagation.HeaderCarrier(http.Header{"Traceparent": {got[i]}})))
				if sc.TraceID() != s.SpanContext().TraceID() || sc.SpanID() != s.SpanContext().SpanID() || !sc.IsSampled() {
					t.Errorf("request %d: traceparent %q, span %v", i, got[i], s.SpanContext())
				}
			}
			if direct {
				if h := c.up.postHeader; h.Get("Traceparent") != "" || len(h) != 3 {
					t.Errorf("the shared header map was modified: %v", h)
				}
			}
			assertNoSecrets(t, spans, code, tok.Value, testSecret, testPhone)
		})
	}
}

// TestTracingTransportError: a call that never reached WeChat says so.
func TestTracingTransportError(t *testing.T) {
	tp, rec := newRecorderProvider(t)
	c := newTestClient(t, Config{AppID: testAppID, BaseURL: "http://127.0.0.1:1", TracerProvider: tp,
		TokenSource: StaticTokenSource(Token{Value: "STATIC-TOKEN-0123456789", ExpiresAt: time.Now().Add(time.Hour)})})
	if _, err := c.PhoneNumber(ctxTimeout(t, 5e9), "some-code-0123456789"); err == nil {
		t.Fatal("no error")
	}
	spans := rec.Ended()
	if len(spans) == 0 {
		t.Fatal("no span")
	}
	for _, s := range spans {
		a := spanAttrs(s)
		if a["error.type"].AsString() != "transport" || a["wxphone.may_have_sent"].AsBool() || s.Status().Code != codes.Error {
			t.Errorf("span %v %v", s.Attributes(), s.Status())
		}
	}
	assertNoSecrets(t, spans, "some-code-0123456789", "STATIC-TOKEN-0123456789")
}

// TestTracingOff: without a TracerProvider no traceparent is sent, even
// when the caller's context carries a span.
func TestTracingOff(t *testing.T) {
	e := newSrvEnv(t)
	cfg := e.config(t)
	cfg.HTTPClient = nil
	c := newTestClient(t, cfg)
	tp, _ := newRecorderProvider(t)
	ctx, span := tp.Tracer("test").Start(ctxTimeout(t, 10e9), "parent")
	defer span.End()
	if _, err := c.PhoneNumber(ctx, mintPhone(t, e.emu, testPhone)); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.rec.requests() {
		if r.Header.Get("Traceparent") != "" {
			t.Errorf("%s carried a traceparent", r.Path)
		}
	}
	if c.up.tracer != nil {
		t.Error("tracer set")
	}
}
