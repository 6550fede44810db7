package dispatcher

import (
	"context"
	"errors"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// attempt runs one attempt under a renewed lease and records the outcome.
func (d *Dispatcher) attempt(ctx context.Context, del *middleware.Delivery, fn Function) error {
	deadline := time.Now().Add(fn.Timeout)
	actx, cancel := context.WithDeadlineCause(ctx, deadline, context.DeadlineExceeded)
	defer cancel()
	lease := ledger.Lease{Tenant: del.Ref.Tenant, ID: del.Ref.TaskID, Function: del.Ref.Function, Owner: d.cfg.Owner, Attempt: del.Claim.Attempt}
	lost := d.leases.hold(lease, func() { cancel() })
	defer d.leases.release(lease)

	start := time.Now()
	out := d.execute(actx, fn, executor.Request{
		TaskID: del.Ref.TaskID, Tenant: del.Ref.Tenant, Function: fn.Name,
		Attempt: del.Claim.Attempt, Deadline: deadline, Event: del.Event,
	})
	d.cfg.Metrics.RunSeconds.WithLabelValues(fn.Name).Observe(time.Since(start).Seconds())
	d.cfg.Metrics.Attempts.WithLabelValues(fn.Name, string(out.Class)).Inc()
	if lost.Load() {
		// Another dispatcher took the task over; its outcome counts.
		d.cfg.Metrics.LeaseLost.Inc()
		d.cfg.Logger.Warn("attempt finished after its lease was lost; outcome discarded", "task", del.Ref.TaskID, "attempt", del.Claim.Attempt)
		return nil
	}
	if err := d.finish(ctx, del, out, fn); err != nil {
		return err
	}
	if fn.Adaptive != nil {
		timedOut := out.Class == executor.Retryable && errors.Is(context.Cause(actx), context.DeadlineExceeded)
		throttled := out.Class == executor.Throttled || (fn.Adaptive.Timeouts && timedOut)
		if _, err := d.cfg.Ledger.Feedback(ctx, fn.Name, *ledger.AdaptiveOf(fn.Adaptive), fn.Concurrency, throttled); err != nil {
			d.cfg.Metrics.LedgerErrors.WithLabelValues("feedback").Inc()
			d.cfg.Logger.Warn("recording an answer for the adaptive limit", "function", fn.Name, "error", err)
		}
	}
	return nil
}

// execute runs the attempt, counted as in flight until it returns or
// panics (Recover turns the panic into an error further up).
func (d *Dispatcher) execute(ctx context.Context, fn Function, r executor.Request) executor.Outcome {
	inflight := d.cfg.Metrics.InFlight.WithLabelValues(fn.Name)
	inflight.Inc()
	defer inflight.Dec()
	return fn.Executor.Execute(ctx, r)
}

// finish records an attempt's outcome: terminal, or a retry at a backoff.
func (d *Dispatcher) finish(ctx context.Context, del *middleware.Delivery, out executor.Outcome, fn Function) error {
	tenant, id, function, attempt := del.Ref.Tenant, del.Ref.TaskID, del.Ref.Function, del.Claim.Attempt
	o := ledger.Outcome{State: contracts.StateSucceeded, Error: out.Err, Result: out.Result}
	switch out.Class {
	case executor.Succeeded:
	case executor.Retryable, executor.Throttled:
		// Throttled answers within the allowance do not use up attempts.
		refund := out.Class == executor.Throttled && del.Claim.Throttles < fn.MaxThrottled
		if attempt < fn.MaxAttempts || refund {
			wait := jitter(fn.Backoff(attempt))
			if out.Class == executor.Throttled && out.RetryAfter > 0 {
				wait = out.RetryAfter
			}
			ok, err := d.cfg.Ledger.Retry(ctx, tenant, id, function, attempt, time.Now().Add(wait), out.Err, refund)
			if err != nil {
				d.cfg.Metrics.LedgerErrors.WithLabelValues("retry").Inc()
				return err
			}
			if !ok {
				d.cfg.Metrics.LeaseLost.Inc()
			}
			return nil
		}
		o.State, o.Reason = fn.unsuccessful(), contracts.ReasonAttemptsExhausted
	default:
		o.State, o.Reason = fn.unsuccessful(), contracts.ReasonNonRetryable
	}
	ok, err := d.cfg.Ledger.Finish(ctx, tenant, id, function, attempt, o)
	if err != nil {
		d.cfg.Metrics.LedgerErrors.WithLabelValues("finish").Inc()
		return err
	}
	if !ok {
		d.cfg.Metrics.LeaseLost.Inc()
		return nil
	}
	d.cfg.Metrics.Outcomes.WithLabelValues(tenant, function, string(o.State)).Inc()
	return nil
}
