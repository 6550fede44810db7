package middleware

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/telemetry"
)

// RetryClassify records the outcome that Run, inside it, stored in the
// Delivery, by its class:
//
//   - succeeded: the task finishes succeeded;
//   - retryable or throttled with attempts left: the task waits in the
//     delay set (state retrying) for its jittered backoff, or for a
//     throttled answer's Retry-After; up to the function's MaxThrottled
//     throttled answers are refunded (they do not use up an attempt);
//   - retryable or throttled on the last attempt: dead (dead-letter
//     functions) or failed, attempts exhausted;
//   - non-retryable: dead or failed at once.
//
// Finish and retry are fenced by the attempt (and the record's redrive
// count, ledger.Fence) in the ledger; one refused (the task was taken
// over, or dead-lettered and redriven) counts as a lost lease. After a finish or a
// retry, an adaptive function's answer is fed back to its limit (throttled
// answers, and timeouts if the function counts them, as throttled). An
// outcome Run discarded (LeaseLost) is not recorded. Errors are the
// ledger's; a task's failure is never an error.
func RetryClassify(l *ledger.Ledger, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				return out, err
			}
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("classifying message %s: %w", msg.UUID, ErrNoDelivery)
			}
			if d.LeaseLost {
				return out, nil
			}
			ctx := msg.Context()
			if err := finish(ctx, l, m, logger, d); err != nil {
				return nil, err
			}
			fn := d.Function
			if d.Ran && fn.Adaptive != nil {
				throttled := d.Outcome.Class == executor.Throttled || (fn.Adaptive.Timeouts && d.TimedOut)
				if _, err := l.Feedback(ctx, fn.Name, *ledger.AdaptiveOf(fn.Adaptive), fn.Concurrency, throttled); err != nil {
					m.LedgerErrors.WithLabelValues("feedback").Inc()
					logger.Warn("recording an answer for the adaptive limit", "function", fn.Name, "error", err)
				}
			}
			return out, nil
		}
	}
}

// finish records d's outcome: terminal, or a retry at a backoff.
func finish(ctx context.Context, l *ledger.Ledger, m *metrics.Metrics, logger *slog.Logger, d *Delivery) error {
	tenant, id, function, attempt := d.Ref.Tenant, d.Ref.TaskID, d.Ref.Function, d.Claim.Attempt
	fn, out := d.Function, d.Outcome
	log := attemptLog(d)
	o := ledger.Outcome{State: contracts.StateSucceeded, Error: out.Err, Result: out.Result, Log: log}
	switch out.Class {
	case executor.Succeeded:
	case executor.Retryable, executor.Throttled:
		// Throttled answers within the allowance do not use up attempts.
		refund := out.Class == executor.Throttled && d.Claim.Throttles < fn.MaxThrottled
		if attempt < fn.MaxAttempts || refund {
			wait := jitter(fn.Backoff(attempt))
			if out.Class == executor.Throttled && out.RetryAfter > 0 {
				wait = out.RetryAfter
			}
			due := time.Now().Add(wait)
			next := contracts.LogEntry{At: time.Now(), Kind: contracts.LogRetry, Attempt: attempt,
				Message: fmt.Sprintf("retry scheduled for %s (in %s)", due.UTC().Format(time.RFC3339Nano), wait.Round(time.Millisecond))}
			if out.Class == executor.Throttled {
				next.Kind = contracts.LogThrottled
				next.Message = fmt.Sprintf("throttled: next attempt at %s (in %s)", due.UTC().Format(time.RFC3339Nano), wait.Round(time.Millisecond))
				if refund {
					next.Message += "; this attempt is not counted"
				}
			}
			end := ledgerSpan(ctx, "ledger retry", telemetry.AttrState.String(string(contracts.StateRetrying)),
				telemetry.AttrRetryIn.Float64(wait.Seconds()), attribute.Bool("tasklane.refunded", refund))
			ok, err := l.Retry(ctx, tenant, id, function, d.Claim.Fence(), due, out.Err, refund, append(log, next)...)
			end(ok, err)
			if err = recorded(m, logger, "retry", id, ok, err); err != nil {
				return err
			}
			if !ok {
				m.LeaseLost.Inc()
				return nil
			}
			m.Retries.WithLabelValues(function, string(out.Class)).Inc()
			return nil
		}
		o.State, o.Reason = fn.Unsuccessful(), contracts.ReasonAttemptsExhausted
	default:
		o.State, o.Reason = fn.Unsuccessful(), contracts.ReasonNonRetryable
	}
	end := ledgerSpan(ctx, "ledger finish", telemetry.AttrState.String(string(o.State)))
	ok, err := l.Finish(ctx, tenant, id, function, d.Claim.Fence(), o)
	end(ok, err)
	if err = recorded(m, logger, "finish", id, ok, err); err != nil {
		return err
	}
	if !ok {
		m.LeaseLost.Inc()
		return nil
	}
	m.Outcomes.WithLabelValues(tenant, function, string(o.State)).Inc()
	return nil
}

// recorded counts a ledger error of op (retry, finish) on task id and
// returns it, unless ok says the outcome was recorded all the same: in the
// partitioned layout only the function step failed (decision 0017, "Order
// and fence"), which the ledger repairs; that one is logged, and the
// outcome goes on to be counted and fed back.
func recorded(m *metrics.Metrics, logger *slog.Logger, op, id string, ok bool, err error) error {
	if err == nil {
		return nil
	}
	m.LedgerErrors.WithLabelValues(op).Inc()
	if !ok {
		return err
	}
	logger.Warn("recorded an attempt's outcome; freeing its function slot failed (it frees itself when the lease ends)",
		"task", id, "op", op, "error", err)
	return nil
}

// ledgerSpan starts a span for recording an attempt's outcome (a child of
// the attempt's span) and returns what ends it; a no-op while tracing is
// off.
func ledgerSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) func(ok bool, err error) {
	if !telemetry.Enabled() {
		return func(bool, error) {}
	}
	_, span := telemetry.Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
	return func(ok bool, err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		} else if !ok {
			span.SetAttributes(attribute.Bool("tasklane.lease_lost", true))
		}
		span.End()
	}
}

// replyExcerptBytes bounds the excerpt of a successful reply in the log.
const replyExcerptBytes = 256

// attemptLog is what an attempt adds to its task's log: the lines its
// function wrote, then its end (HTTP status, run time, error, an excerpt
// of the reply).
func attemptLog(d *Delivery) []contracts.LogEntry {
	out, attempt := d.Outcome, d.Claim.Attempt
	log := make([]contracts.LogEntry, 0, len(out.Lines)+2)
	for _, ln := range out.Lines {
		log = append(log, contracts.LogEntry{At: ln.At, Kind: contracts.LogLine, Attempt: attempt, Message: ln.Text})
	}
	msg := fmt.Sprintf("attempt %d %s", attempt, out.Class)
	if out.Err != "" {
		msg += ": " + out.Err
	}
	if out.Class == executor.Succeeded && len(out.Result) > 0 {
		r := string(out.Result)
		if len(r) > replyExcerptBytes {
			r = strings.ToValidUTF8(r[:replyExcerptBytes], "") + "..."
		}
		msg += "; reply: " + r
	}
	end := contracts.LogEntry{At: time.Now(), Kind: contracts.LogEnded, Attempt: attempt, Status: out.Status, Message: msg}
	if d.Ran {
		ms := d.RunTime.Milliseconds()
		end.DurationMS = &ms
	}
	return append(log, end)
}
