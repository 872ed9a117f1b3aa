// Package tracing builds the OpenTelemetry tracer provider of `wxphone
// serve` from the standard OTEL_* environment variables: the SDK with a
// batching OTLP/HTTP exporter, off unless configured. The library (package
// wxphone) and the server take any trace.TracerProvider; only this
// package, used by the command, brings in the SDK and the exporter.
//
// Tracing is on when OTEL_TRACES_EXPORTER is "otlp", or when it is unset
// and OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turns it off.
// The exporter reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT (default
// http://localhost:4318/v1/traces), _HEADERS, _TIMEOUT (ms, default
// 10000), _COMPRESSION (gzip or none), _CERTIFICATE, _CLIENT_CERTIFICATE
// and _CLIENT_KEY; the protocol must be http/protobuf (the default; gRPC
// is not built in). The SDK reads OTEL_TRACES_SAMPLER[_ARG] and OTEL_BSP_*;
// the resource takes OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, with
// service.name "wxphone" by default. Propagation is W3C traceparent
// (OTEL_PROPAGATORS is not read). The exporter is this package's own (see
// otlp.go): OpenTelemetry's OTLP exporters bring in gRPC, which would
// double the size of the binary.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Provider is a configured tracer provider, or none.
type Provider struct {
	sdk *sdktrace.TracerProvider
}

// TracerProvider returns the provider to pass to wxphone.Config and
// server.Config, or nil when tracing is off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil || p.sdk == nil {
		return nil
	}
	return p.sdk
}

// Enabled reports whether tracing is on.
func (p *Provider) Enabled() bool { return p != nil && p.sdk != nil }

// Shutdown exports the spans still queued (within ctx) and stops the
// exporter. It does nothing when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.sdk.Shutdown(ctx)
}

// Enabled reports whether the environment read through getenv asks for
// tracing, or why its settings are refused.
func Enabled(getenv func(string) string) (bool, error) {
	if v := strings.TrimSpace(getenv("OTEL_SDK_DISABLED")); v != "" {
		off, err := strconv.ParseBool(v)
		if err != nil {
			return false, errors.New("tracing: OTEL_SDK_DISABLED: want true or false")
		}
		if off {
			return false, nil
		}
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return false, nil
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return false, nil
		}
	case "otlp":
	default:
		return false, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q is not supported; use otlp or none", exp)
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			if v != "http/protobuf" {
				return false, fmt.Errorf("tracing: %s=%q is not supported; use http/protobuf (the collector's port 4318)", k, v)
			}
			break // the traces-specific variable wins
		}
	}
	return true, nil
}

// FromEnv builds the provider the process environment asks for (see the
// package documentation); version becomes service.version. With tracing
// off it returns a Provider whose TracerProvider is nil.
func FromEnv(ctx context.Context, version string) (*Provider, error) {
	on, err := Enabled(os.Getenv)
	if err != nil || !on {
		return &Provider{}, err
	}
	ec, err := exporterFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	exp := newExporter(ec)
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "wxphone"), attribute.String("service.version", version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && res == nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return New(sdktrace.NewBatchSpanProcessor(exp), res), nil
}

// New returns a Provider exporting through sp (tests use an in-memory
// recorder), with res as its resource (nil: the SDK's default).
func New(sp sdktrace.SpanProcessor, res *resource.Resource) *Provider {
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSpanProcessor(sp)}
	if res != nil {
		opts = append(opts, sdktrace.WithResource(res))
	}
	return &Provider{sdk: sdktrace.NewTracerProvider(opts...)}
}
