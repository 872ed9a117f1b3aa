// Package metrics holds wxphone's Prometheus metrics in a private registry.
// No metric carries a phone number, a code, an openid, a token or a key in a
// label; every label has a bounded set of values.
package metrics

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wxphone/wxphone"
)

// Metrics is the set of wxphone's collectors.
type Metrics struct {
	// Registry holds every collector below plus the Go and process
	// collectors; serve it with promhttp.HandlerFor.
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, status
	RequestDuration *prometheus.HistogramVec // route
	Upstream        *prometheus.CounterVec   // endpoint, errcode
	UpstreamLatency *prometheus.HistogramVec // endpoint
	TokenFetches    *prometheus.CounterVec   // appid, kind, trigger, result
	Exchanges       *prometheus.CounterVec   // appid, result
	Replays         *prometheus.CounterVec   // appid
	OutcomeUnknown  *prometheus.CounterVec   // appid
	RateLimited     *prometheus.CounterVec   // source: local or wechat
	Fallbacks       *prometheus.CounterVec   // component: replay, ratelimit, token
	Degraded        *prometheus.GaugeVec     // component: 1 while it runs on its local fallback
	Unverified      *prometheus.CounterVec   // appid, reason: answers of the API security mode that failed verification
	Grants          *prometheus.CounterVec   // appid, kind: numbers obtained, by declared code kind
}

// New returns a fresh set of collectors registered in a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_http_requests_total", Help: "HTTP requests served, by route and status.",
		}, []string{"route", "status"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wxphone_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		Upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_upstream_requests_total", Help: "Calls to WeChat by endpoint and errcode (or failure class).",
		}, []string{"endpoint", "errcode"}),
		UpstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wxphone_upstream_duration_seconds", Help: "Latency of calls to WeChat by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint"}),
		TokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_token_fetches_total", Help: "Access-token fetches from WeChat by app, kind (stable, stable_force, classic), trigger and result.",
		}, []string{"appid", "kind", "trigger", "result"}),
		Exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_exchanges_total", Help: "Phone-code exchanges by app and result class.",
		}, []string{"appid", "result"}),
		Replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_replays_total", Help: "Exchanges answered from the replay store with no upstream call.",
		}, []string{"appid"}),
		OutcomeUnknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_outcome_unknown_total", Help: "Exchanges whose outcome is unknown (WeChat may have used the code).",
		}, []string{"appid"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_rate_limited_total", Help: "Requests refused for rate limits: local (per API key) or wechat (45011).",
		}, []string{"source"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_fallbacks_total", Help: "Operations served by the local fallback because the shared store failed.",
		}, []string{"component"}),
		Unverified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_upstream_unverified_total", Help: "Answers of WeChat's API security mode that failed verification (unsigned success, bad signature, unknown certificate, cannot decrypt, clock skew…); each is an outcome unknown.",
		}, []string{"appid", "reason"}),
		Grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxphone_phone_grants_total", Help: "Phone numbers obtained from WeChat, by the kind of code the request declared (quick ¥0.03, realtime ¥0.04, unspecified).",
		}, []string{"appid", "kind"}),
		Degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxphone_degraded", Help: "1 while a component runs on its local fallback (shared store unavailable).",
		}, []string{"component"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.Upstream, m.UpstreamLatency, m.TokenFetches,
		m.Exchanges, m.Replays, m.OutcomeUnknown, m.RateLimited, m.Fallbacks, m.Degraded,
		m.Unverified, m.Grants,
	)
	return m
}

// Hooks returns wxphone.Hooks that feed the upstream and token metrics.
func (m *Metrics) Hooks() wxphone.Hooks {
	return wxphone.Hooks{
		OnUpstream: func(e wxphone.UpstreamEvent) {
			m.Upstream.WithLabelValues(e.Op, ErrcodeLabel(e)).Inc()
			m.UpstreamLatency.WithLabelValues(e.Op).Observe(e.Duration.Seconds())
			if e.ErrCode == wxphone.ErrcodeMinuteQuota {
				m.RateLimited.WithLabelValues("wechat").Inc()
			}
			var ve *wxphone.VerificationError
			if errors.As(e.Err, &ve) {
				m.Unverified.WithLabelValues(e.AppID, ve.Reason).Inc()
			}
		},
		OnTokenFetch: func(e wxphone.TokenFetchEvent) {
			result := "ok"
			if e.Err != nil {
				result = "error"
			}
			m.TokenFetches.WithLabelValues(e.AppID, e.Kind, e.Trigger, result).Inc()
		},
	}
}

// ErrcodeLabel is the bounded errcode label of an upstream event: the
// errcode when wxphone knows it (wxphone.KnownErrcode), or "transport",
// "http_<status>", "malformed", "unverified" or "other".
func ErrcodeLabel(e wxphone.UpstreamEvent) string {
	if e.Err == nil || e.ErrCode != 0 {
		if wxphone.KnownErrcode(e.ErrCode) {
			return strconv.Itoa(e.ErrCode)
		}
		return "other"
	}
	return failureLabel(e.Err)
}

// failureLabel is ErrcodeLabel for an error without an errcode (its own
// function so that a success allocates nothing for the errors.As targets).
func failureLabel(err error) string {
	var te *wxphone.TransportError
	var he *wxphone.HTTPError
	switch {
	case errors.As(err, &te):
		return "transport"
	case errors.As(err, &he):
		if he.StatusCode >= 500 {
			return "http_5xx"
		}
		return "http_4xx"
	case errors.Is(err, wxphone.ErrMalformedResponse):
		return "malformed"
	case errors.Is(err, wxphone.ErrAnswerUnverified):
		return "unverified"
	}
	return "other"
}
