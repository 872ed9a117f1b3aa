package server

import (
	"context"
	"net/http"
	"net/url"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing (Config.TracerProvider): every API request is a server span
// named "<METHOD> <route>" (the route pattern, "other" for an unknown
// path, never the raw path), continuing the caller's W3C traceparent. The
// exchange's calls to WeChat are its children when the clients share the
// provider (wxphone.Config.TracerProvider). /healthz, /readyz and /metrics
// are not traced. finish adds the outcome: the route, the appid, the
// error code, WeChat's errcode and rid, whether the answer was replayed.
// No span carries a code, a token, an API key, a phone number, a query
// string or an unknown path.

// traced wraps next in otelhttp's server instrumentation.
func (s *Server) traced(next http.Handler, tp trace.TracerProvider) http.Handler {
	h := otelhttp.NewHandler(restoreURL(next), "wxphone",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()), // metrics are Prometheus's
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + s.routeLabel(r)
		}),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case PathHealthz, PathReadyz, PathMetrics:
				return false
			}
			return true
		}),
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.routeLabel(r) != "other" {
			h.ServeHTTP(w, r)
			return
		}
		// otelhttp records url.path: hide a path that is no route (it
		// may carry anything), and give it back to the handler.
		u := *r.URL
		u.Path, u.RawPath = "", ""
		hidden := r.WithContext(context.WithValue(r.Context(), origURLKey{}, r.URL))
		hidden.URL = &u
		h.ServeHTTP(w, hidden)
	})
}

type origURLKey struct{}

// restoreURL gives next the URL that traced hid from otelhttp.
func restoreURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, ok := r.Context().Value(origURLKey{}).(*url.URL); ok {
			r2 := *r
			r2.URL = u
			r = &r2
		}
		next.ServeHTTP(w, r)
	})
}

// routeLabel is the route of r as logs and metrics name it: the route's
// path, or "other" when no route has that path.
func (s *Server) routeLabel(r *http.Request) string {
	if len(s.routes[r.URL.Path]) > 0 {
		return r.URL.Path
	}
	return "other"
}

// annotateSpan adds a request's outcome to its server span, if any.
func annotateSpan(r *http.Request, rc *reqCtx) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs, attribute.String("http.route", rc.route), attribute.String("wxphone.request_id", rc.id))
	if rc.appID != "" {
		attrs = append(attrs, attribute.String("wxphone.appid", rc.appID))
	}
	if rc.errCode != "" {
		attrs = append(attrs, attribute.String("wxphone.error", string(rc.errCode)))
	}
	if rc.errcode != 0 {
		attrs = append(attrs, attribute.Int("wechat.errcode", rc.errcode))
	}
	if rc.rid != "" {
		attrs = append(attrs, attribute.String("wechat.rid", rc.rid))
	}
	if rc.replayed != nil {
		attrs = append(attrs, attribute.Bool("wxphone.replayed", *rc.replayed))
	}
	span.SetAttributes(attrs...)
}
