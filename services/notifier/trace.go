package notifier

import (
	"context"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/telemetry"
)

// setTraceParent puts the task's trace context (its record's traceparent,
// kept when the task was traced at ingest) on its result event, so that
// receivers continue the task's trace.
func setTraceParent(ev *event.Event, tp string) {
	if tp != "" {
		ev.SetExtension(contracts.ExtTraceParent, tp)
	}
}

// startResultSpan starts the producer span of a result event's publish, in
// the task's trace.
func startResultSpan(ctx context.Context, exchange string, t *contracts.Task, tp string) (context.Context, trace.Span) {
	ctx = telemetry.Extract(ctx, tp, "")
	return telemetry.Tracer().Start(ctx, "publish "+exchange, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		append(telemetry.TaskAttrs(t.Tenant, t.Function, t.ID), telemetry.AttrState.String(string(t.State)),
			attribute.String("messaging.system", "tasklane"), attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", exchange))...))
}

// startSinkSpan starts the client span of one sink delivery, continuing the
// trace of the result event's traceparent; req carries the span's
// traceparent header.
func startSinkSpan(ctx context.Context, req *http.Request, e *event.Event, subscription string) (context.Context, trace.Span) {
	tp, _ := e.Extensions()[contracts.ExtTraceParent].(string)
	ctx = telemetry.Extract(ctx, tp, "")
	return telemetry.StartClient(ctx, "POST", req, telemetry.AttrSink.String(subscription), attribute.String("cloudevents.event_id", e.ID()))
}

// withSpanContext returns a copy of e whose traceparent extension is ctx's
// span, or e when ctx has none.
func withSpanContext(ctx context.Context, e *event.Event) *event.Event {
	tp, _ := telemetry.Inject(ctx)
	if tp == "" {
		return e
	}
	c := e.Clone()
	c.SetExtension(contracts.ExtTraceParent, tp)
	return &c
}
