package ingest

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/telemetry"
)

// startIngestSpan starts the span of one event's ingest, the producer span
// its tasks' attempts continue. Its parent is ctx's span (the gateway's
// server span, which continues the client's traceparent header); when the
// request carried no traceparent header but the event has a traceparent
// extension, the event's context is the parent and the request's span a
// link. A trigger's event without either starts a new trace.
func startIngestSpan(ctx context.Context, tenant string, e *event.Event) (context.Context, trace.Span) {
	parent := ctx
	var opts []trace.SpanStartOption
	if !telemetry.HasClientTrace(ctx) {
		ext := e.Extensions()
		if tp := extString(ext, contracts.ExtTraceParent); tp != "" {
			pctx := telemetry.Extract(ctx, tp, extString(ext, contracts.ExtTraceState))
			if sc := trace.SpanContextFromContext(pctx); sc.IsValid() && sc.IsRemote() {
				if l := trace.LinkFromContext(ctx); l.SpanContext.IsValid() {
					opts = append(opts, trace.WithLinks(l))
				}
				parent = pctx
			}
		}
	}
	opts = append(opts, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		telemetry.AttrTenant.String(tenant), telemetry.AttrEventID.String(e.ID()), telemetry.AttrEventType.String(e.Type()),
		attribute.String("messaging.system", "tasklane"), attribute.String("messaging.operation.type", "create"),
	))
	return telemetry.Tracer().Start(parent, "ingest "+e.Type(), opts...)
}

func extString(ext map[string]any, name string) string {
	v, ok := ext[name]
	if !ok {
		return ""
	}
	s, err := types.Format(v)
	if err != nil {
		return ""
	}
	return s
}

// eventSpans are the ingest spans of one submission, by event; nil while
// tracing is off (every method is then a no-op).
type eventSpans []trace.Span

// child records a step shared by the whole submission (one ledger script
// call for every event) in each event's trace, from start to now.
func (s eventSpans) child(name string, start time.Time, err error, attrs ...attribute.KeyValue) {
	end := time.Now()
	for _, sp := range s {
		if sp == nil {
			continue
		}
		ctx := trace.ContextWithSpan(context.Background(), sp)
		_, c := telemetry.Tracer().Start(ctx, name, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
		if err != nil {
			c.SetStatus(codes.Error, err.Error())
		}
		c.End(trace.WithTimestamp(end))
	}
}

// fail marks every event's span failed.
func (s eventSpans) fail(msg string) {
	for _, sp := range s {
		if sp != nil {
			sp.SetStatus(codes.Error, msg)
		}
	}
}

func (s eventSpans) end() {
	for _, sp := range s {
		if sp != nil {
			sp.End()
		}
	}
}

// startPublishSpan starts the span of one task's lane publish, a child of
// its event's ingest span (whose context its message carries).
func startPublishSpan(ctx context.Context, tenant, lane string, m *message.Message) (context.Context, trace.Span) {
	md := m.Metadata
	ctx = telemetry.Extract(ctx, md.Get(taskmsg.KeyTraceParent), md.Get(taskmsg.KeyTraceState))
	return telemetry.Tracer().Start(ctx, "publish "+lane, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		append(telemetry.TaskAttrs(tenant, md.Get(taskmsg.KeyFunction), md.Get(taskmsg.KeyTaskID)),
			telemetry.AttrLane.String(lane), attribute.String("messaging.system", "tasklane"),
			attribute.String("messaging.operation.type", "send"), attribute.String("messaging.destination.name", lane))...))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
