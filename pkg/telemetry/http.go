package telemetry

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Handler wraps h in a server span per request, continuing the trace of
// the request's traceparent header (the context is then marked with
// WithClientTrace). The span is named after the route pattern the mux
// matched. While tracing is off it calls h directly.
func Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Enabled() {
			h.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		if r.Header.Get("traceparent") != "" {
			ctx = tc.Extract(ctx, propagation.HeaderCarrier(r.Header))
			if trace.SpanContextFromContext(ctx).IsValid() {
				ctx = WithClientTrace(ctx)
			}
		}
		ctx, span := Tracer().Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.URLPath(r.URL.Path)))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(ctx)
		h.ServeHTTP(sw, r)
		if r.Pattern != "" {
			span.SetName(r.Pattern)
			span.SetAttributes(semconv.HTTPRoute(r.Pattern))
		}
		span.SetAttributes(semconv.HTTPResponseStatusCode(sw.status))
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// StartClient starts an HTTP client span for req (the function call, a sink
// delivery) and writes its traceparent into req's headers. End it with
// EndClient. The caller checks Enabled first.
func StartClient(ctx context.Context, name string, req *http.Request, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(req.Method), semconv.ServerAddress(req.URL.Hostname()))
	ctx, span := Tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	tc.Inject(ctx, propagation.HeaderCarrier(req.Header))
	return ctx, span
}

// EndClient records an HTTP call's answer (status 0: none) or error and ends
// its span.
func EndClient(span trace.Span, status int, err error) {
	if status > 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	switch {
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
	case status >= 400:
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}
