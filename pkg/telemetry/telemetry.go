// Package telemetry sets up OpenTelemetry tracing for a Tasklane process and
// holds the small helpers the roles use to trace a task end to end: the
// attribute keys, the W3C trace context carried in a task's stored message
// and result record, and the switch that keeps tracing free when it is off.
//
// Tracing is on when the config's telemetry block enables it or names an
// endpoint, when one of the standard variables OTEL_EXPORTER_OTLP_ENDPOINT
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or when spans are printed
// (tasklane dev --trace-stdout); OTEL_SDK_DISABLED=true or
// telemetry.enabled: false turn it off. When off, no exporter or provider
// is made and every instrumentation point is skipped after one atomic load.
// The SDK reads the other standard variables itself (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and _ARG, OTEL_BSP_*,
// OTEL_EXPORTER_OTLP_* headers, timeouts and certificates).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of Tasklane's spans.
const ScopeName = "github.com/tasklane/tasklane"

// DefaultServiceName is service.name when neither the config nor
// OTEL_SERVICE_NAME sets one.
const DefaultServiceName = "tasklane"

// Protocols of the OTLP exporter.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Attribute keys of Tasklane's spans.
const (
	AttrTenant   = attribute.Key("tasklane.tenant")
	AttrFunction = attribute.Key("tasklane.function")
	AttrTaskID   = attribute.Key("tasklane.task_id")
	AttrAttempt  = attribute.Key("tasklane.attempt")
	// AttrOutcome is an attempt's class (succeeded, retryable, throttled,
	// non_retryable) on the attempt and function-call spans.
	AttrOutcome = attribute.Key("tasklane.outcome")
	// AttrState is the state a ledger write moved the task to.
	AttrState = attribute.Key("tasklane.state")
	AttrLane  = attribute.Key("tasklane.lane")
	// AttrQueueWait is the time in seconds from the task being due to the
	// start of its first attempt.
	AttrQueueWait = attribute.Key("tasklane.queue_wait")
	AttrEventID   = attribute.Key("tasklane.event_id")
	AttrEventType = attribute.Key("tasklane.event_type")
	// AttrRetryIn is the backoff in seconds before the next attempt.
	AttrRetryIn = attribute.Key("tasklane.retry_in")
	// AttrSink names a result subscription.
	AttrSink = attribute.Key("tasklane.subscription")
)

// Config chooses the exporter. The zero Config leaves tracing to the
// standard variables.
type Config struct {
	// Enabled forces tracing on (true) or off (false); nil: on when an
	// endpoint is set here or in OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
	Enabled *bool
	// Endpoint is the OTLP endpoint's base URL (as
	// OTEL_EXPORTER_OTLP_ENDPOINT: http/protobuf posts to <url>/v1/traces
	// when the URL has no path). Empty: the standard variables.
	Endpoint string
	// Protocol is ProtocolHTTP or ProtocolGRPC. Empty:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, else
	// http/protobuf.
	Protocol string
	// SampleRatio samples this share of new traces (0..1), parent-based: a
	// client's sampled flag is followed. Nil: OTEL_TRACES_SAMPLER, else
	// every trace.
	SampleRatio *float64
	// ServiceName overrides OTEL_SERVICE_NAME.
	ServiceName string
	// Stdout, when set, receives every span as JSON (tasklane dev
	// --trace-stdout), besides any OTLP exporter.
	Stdout io.Writer
	// Getenv reads the standard variables for the on/off decision and the
	// protocol. Default: none set.
	Getenv func(string) string
}

// enabled is the switch every instrumentation point reads first.
var enabled atomic.Bool

// Enabled reports whether this process traces. Instrumentation is skipped
// entirely when it does not.
func Enabled() bool { return enabled.Load() }

var tracerMu sync.RWMutex

var tracer trace.Tracer = noop.NewTracerProvider().Tracer(ScopeName)

// Tracer returns Tasklane's tracer (a no-op one while tracing is off).
func Tracer() trace.Tracer {
	tracerMu.RLock()
	defer tracerMu.RUnlock()
	return tracer
}

// Provider is the tracing set up by Setup. Shutdown flushes it.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// On reports whether Setup turned tracing on.
func (p *Provider) On() bool { return p != nil && p.tp != nil }

// Shutdown exports the spans still buffered and stops the exporters; a
// Provider that is off does nothing. Tracing is off afterwards, if this
// Provider was the one installed.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.On() {
		return nil
	}
	tracerMu.Lock()
	if installed == p {
		enabled.Store(false)
		tracer = noop.NewTracerProvider().Tracer(ScopeName)
		otel.SetTracerProvider(noop.NewTracerProvider())
		installed = nil
	}
	tracerMu.Unlock()
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("flushing traces: %w", err)
	}
	return nil
}

var installed *Provider

// Wanted reports whether cfg (with the standard variables) turns tracing
// on.
func Wanted(cfg Config) bool {
	getenv := getenvOf(cfg)
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return cfg.Stdout != nil
	}
	if cfg.Stdout != nil {
		return true
	}
	if cfg.Enabled != nil {
		return *cfg.Enabled
	}
	return cfg.Endpoint != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

func getenvOf(cfg Config) func(string) string {
	if cfg.Getenv != nil {
		return cfg.Getenv
	}
	return func(string) string { return "" }
}

// Setup installs the tracer provider cfg asks for as the process's (the
// otel global and Tracer) and the W3C trace-context propagator. When
// tracing is not wanted it changes nothing and returns a Provider that is
// off. Shut the Provider down last: it flushes the spans.
func Setup(ctx context.Context, cfg Config) (*Provider, error) {
	if !Wanted(cfg) {
		return &Provider{}, nil
	}
	getenv := getenvOf(cfg)
	var opts []sdktrace.TracerProviderOption
	otlpOn := cfg.Endpoint != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || (cfg.Enabled != nil && *cfg.Enabled)
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		otlpOn = false
	}
	if otlpOn {
		exp, err := otlpExporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if cfg.Stdout != nil {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(cfg.Stdout))
		if err != nil {
			return nil, fmt.Errorf("making the stdout span exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithSyncer(exp))
	}
	if cfg.SampleRatio != nil {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*cfg.SampleRatio))))
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, sdktrace.WithResource(res))
	p := &Provider{tp: sdktrace.NewTracerProvider(opts...)}
	tracerMu.Lock()
	installed = p
	tracer = p.tp.Tracer(ScopeName)
	otel.SetTracerProvider(p.tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	enabled.Store(true)
	tracerMu.Unlock()
	return p, nil
}

func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	opts := []resource.Option{
		resource.WithAttributes(semconv.ServiceName(DefaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
	}
	if cfg.ServiceName != "" {
		opts = append(opts, resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)))
	}
	res, err := resource.New(ctx, opts...)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("building the trace resource: %w", err)
	}
	return res, nil
}

// Protocol is the OTLP protocol cfg and the standard variables choose.
func Protocol(cfg Config) string {
	getenv := getenvOf(cfg)
	p := cfg.Protocol
	if p == "" {
		p = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	}
	if p == "" {
		p = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	if p == "" {
		p = ProtocolHTTP
	}
	return p
}

func otlpExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	switch p := Protocol(cfg); p {
	case ProtocolHTTP:
		var opts []otlptracehttp.Option
		if cfg.Endpoint != "" {
			u, err := url.Parse(cfg.Endpoint)
			if err != nil {
				return nil, fmt.Errorf("telemetry endpoint %q: %w", cfg.Endpoint, err)
			}
			if u.Path == "" || u.Path == "/" {
				u.Path = "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("making the OTLP/HTTP span exporter: %w", err)
		}
		return exp, nil
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("making the OTLP/gRPC span exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("OTLP protocol %q: use %s or %s", p, ProtocolHTTP, ProtocolGRPC)
	}
}

// tc is the W3C trace-context propagator Tasklane carries task contexts
// with (independent of the global one, which an embedding program may
// replace).
var tc = propagation.TraceContext{}

// Inject returns the traceparent and tracestate of ctx's span, empty when
// it has none.
func Inject(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	tc.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// Extract returns ctx with the remote span context traceparent (and
// tracestate) describe; ctx itself when traceparent is empty or invalid.
func Extract(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		c["tracestate"] = tracestate
	}
	return tc.Extract(ctx, c)
}

// clientTrace marks a context whose trace continues an HTTP request's
// traceparent header.
type clientTrace struct{}

// WithClientTrace marks ctx as continuing a trace context the client sent
// in HTTP headers: ingest then does not look at the events' traceparent
// extensions.
func WithClientTrace(ctx context.Context) context.Context {
	return context.WithValue(ctx, clientTrace{}, true)
}

// HasClientTrace reports whether WithClientTrace marked ctx.
func HasClientTrace(ctx context.Context) bool {
	v, _ := ctx.Value(clientTrace{}).(bool)
	return v
}

// TaskAttrs are the attributes naming a task.
func TaskAttrs(tenant, function, taskID string) []attribute.KeyValue {
	return []attribute.KeyValue{AttrTenant.String(tenant), AttrFunction.String(function), AttrTaskID.String(taskID)}
}
