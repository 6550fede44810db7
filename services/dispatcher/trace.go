package dispatcher

import (
	"context"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/telemetry"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// startAttempt starts the consumer span of one attempt of t, continuing the
// task's trace from its stored message (the ingest span's context in
// tl_traceparent, else the event's traceparent extension) and linked to
// that producer context. For a first attempt it also records the wait in
// the ready queue, from the task being due to now, as a "queue" span and
// the attempt's tasklane.queue_wait attribute.
func startAttempt(ctx context.Context, fn string, t ledger.Started, msg *message.Message, ev *event.Event) (context.Context, trace.Span) {
	var md message.Metadata
	if msg != nil {
		md = msg.Metadata
	}
	tp, ts := md.Get(taskmsg.KeyTraceParent), md.Get(taskmsg.KeyTraceState)
	if tp == "" && ev != nil {
		tp, ts = extString(ev, contracts.ExtTraceParent), extString(ev, contracts.ExtTraceState)
	}
	pctx := telemetry.Extract(ctx, tp, ts)
	now := time.Now()
	attrs := append(telemetry.TaskAttrs(t.Tenant, fn, t.ID), telemetry.AttrAttempt.Int(t.Attempt))
	var opts []trace.SpanStartOption
	if sc := trace.SpanContextFromContext(pctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	if due, err := strconv.ParseInt(md.Get(taskmsg.KeyDue), 10, 64); err == nil && t.Attempt == 1 {
		dueAt := time.UnixMicro(due)
		if dueAt.After(now) {
			dueAt = now
		}
		wait := now.Sub(dueAt)
		attrs = append(attrs, telemetry.AttrQueueWait.Float64(wait.Seconds()))
		_, q := telemetry.Tracer().Start(pctx, "queue "+fn, trace.WithTimestamp(dueAt), trace.WithAttributes(attrs...))
		q.End(trace.WithTimestamp(now))
	}
	opts = append(opts, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(append(attrs,
		attribute.String("messaging.system", "tasklane"), attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", fn))...))
	return telemetry.Tracer().Start(pctx, "process "+fn, opts...)
}

// endAttempt records how the attempt went and ends its span.
func endAttempt(span trace.Span, del *middleware.Delivery, err error) {
	switch {
	case del.LeaseLost:
		span.SetAttributes(attribute.Bool("tasklane.lease_lost", true))
		span.SetStatus(codes.Error, "lease lost: the outcome was discarded")
	case del.Ran || del.ParseErr != nil:
		span.SetAttributes(telemetry.AttrOutcome.String(string(del.Outcome.Class)))
		if del.Outcome.Class != executor.Succeeded {
			span.SetStatus(codes.Error, del.Outcome.Err)
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func extString(e *event.Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	s, err := types.Format(v)
	if err != nil {
		return ""
	}
	return s
}
