package wxphone

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names wxphone's tracer (the instrumentation scope).
const tracerName = "github.com/wxphone/wxphone"

// startSpan starts the client span of one call to WeChat (see
// Config.TracerProvider). Its attributes name the operation, the app and
// the path, never the query (which carries the access_token or the
// AppSecret) or the body.
func (u *upstream) startSpan(ctx context.Context, op, method, path string) (context.Context, trace.Span) {
	return u.tracer.Start(ctx, "WeChat "+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("wechat.op", op),
		attribute.String("wechat.appid", u.appID),
		attribute.String("http.request.method", method),
		attribute.String("server.address", u.base.Hostname()),
		attribute.String("url.path", u.base.Path+path),
	))
}

// endSpan records a call's outcome on its span and ends it: the HTTP
// status, WeChat's errcode and rid, and for a failure its class, never the
// error text.
func endSpan(span trace.Span, status int, err error) {
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	var ae *APIError
	var te *TransportError
	var he *HTTPError
	switch {
	case err == nil:
		span.SetAttributes(attribute.Int("wechat.errcode", 0))
	case errors.As(err, &ae):
		span.SetAttributes(attribute.Int("wechat.errcode", ae.ErrCode), attribute.String("error.type", strconv.Itoa(ae.ErrCode)))
		if ae.RID != "" {
			span.SetAttributes(attribute.String("wechat.rid", ae.RID))
		}
		span.SetStatus(codes.Error, "WeChat errcode "+strconv.Itoa(ae.ErrCode))
	case errors.As(err, &te):
		span.SetAttributes(attribute.String("error.type", "transport"), attribute.Bool("wxphone.may_have_sent", te.Sent))
		span.SetStatus(codes.Error, "transport error")
	case errors.As(err, &he):
		span.SetAttributes(attribute.String("error.type", strconv.Itoa(he.StatusCode)))
		span.SetStatus(codes.Error, "HTTP "+strconv.Itoa(he.StatusCode))
	case errors.Is(err, ErrMalformedResponse):
		span.SetAttributes(attribute.String("error.type", "malformed_response"))
		span.SetStatus(codes.Error, "malformed response")
	default:
		span.SetAttributes(attribute.String("error.type", "other"))
		span.SetStatus(codes.Error, "error")
	}
	span.End()
}

// injectTraceparent gives req the W3C trace context (traceparent and
// tracestate headers) of span. It replaces req.Header by a copy: on the
// direct path one read-only header map serves every request.
func injectTraceparent(req *http.Request, span trace.Span) {
	sc := span.SpanContext()
	if !sc.IsValid() {
		return
	}
	h := make(http.Header, len(req.Header)+2)
	for k, v := range req.Header {
		h[k] = v // the value slices are shared and never modified
	}
	flags := "00"
	if sc.IsSampled() {
		flags = "01"
	}
	h["Traceparent"] = []string{"00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + flags}
	if ts := sc.TraceState().String(); ts != "" {
		h["Tracestate"] = []string{ts}
	}
	req.Header = h
}
