package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/tasktoken"
)

// Leases keeps running attempts' leases renewed.
type Leases interface {
	// Hold renews l until Release; the flag it returns turns true if l is
	// lost (another dispatcher took the task over), and cancel is called.
	Hold(l ledger.Lease, cancel func()) *atomic.Bool
	// Release stops renewing l.
	Release(l ledger.Lease)
}

// Run executes a started attempt (the Delivery's Function and Claim) under
// its lease, held renewed by leases for owner, with the function's timeout
// as its deadline, and stores the outcome in the Delivery for
// RetryClassify. A task whose stored message the starter could not read
// (ParseErr) is not executed: its outcome is non-retryable. An attempt
// whose lease was lost while it ran ends the chain with its outcome
// discarded (LeaseLost): the dispatcher that took the task over decides.
// A message without a Delivery is an error wrapping ErrNoDelivery.
//
// With tokens set, each attempt carries a task token (for HTTP functions,
// header Tasklane-Task-Token) valid until its deadline; a token that cannot
// be signed (the secret unreadable) is logged and left out.
func Run(leases Leases, owner string, tokens *tasktoken.Keys, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("running message %s: %w", msg.UUID, ErrNoDelivery)
			}
			if d.ParseErr != nil {
				d.Outcome = executor.Outcome{Class: executor.NonRetryable, Err: fmt.Sprintf("stored message unreadable: %v", d.ParseErr)}
				return h(msg)
			}
			fn := d.Function
			deadline := time.Now().Add(fn.Timeout)
			actx, cancel := context.WithDeadlineCause(msg.Context(), deadline, context.DeadlineExceeded)
			defer cancel()
			lease := ledger.Lease{Tenant: d.Ref.Tenant, ID: d.Ref.TaskID, Function: d.Ref.Function, Owner: owner, Attempt: d.Claim.Attempt, Redrives: d.Claim.Redrives}
			lost := leases.Hold(lease, cancel)
			defer leases.Release(lease)

			req := executor.Request{
				TaskID: d.Ref.TaskID, Tenant: d.Ref.Tenant, Function: fn.Name,
				Attempt: d.Claim.Attempt, Deadline: deadline, Event: d.Event,
			}
			if tokens != nil {
				tok, err := tokens.Sign(actx, tasktoken.Claims{Tenant: req.Tenant, Task: req.TaskID, Attempt: req.Attempt, Expires: deadline})
				if err != nil {
					logger.Warn("attempt runs without a task token", "task", req.TaskID, "error", err)
				}
				req.Token = tok
			}
			start := time.Now()
			out := execute(actx, m, fn, req)
			d.RunTime = time.Since(start)
			m.RunSeconds.WithLabelValues(fn.Name).Observe(d.RunTime.Seconds())
			m.Attempts.WithLabelValues(fn.Name, string(out.Class)).Inc()
			d.Outcome, d.Ran = out, true
			d.TimedOut = out.Class == executor.Retryable && errors.Is(context.Cause(actx), context.DeadlineExceeded)
			if lost.Load() {
				d.LeaseLost = true
				m.LeaseLost.Inc()
				logger.Warn("attempt finished after its lease was lost (taken over, or the task cancelled); outcome discarded", "task", d.Ref.TaskID, "attempt", d.Claim.Attempt)
				return nil, nil
			}
			return h(msg)
		}
	}
}

// execute runs the attempt, counted as in flight until it returns or
// panics.
func execute(ctx context.Context, m *metrics.Metrics, fn Function, r executor.Request) executor.Outcome {
	inflight := m.InFlight.WithLabelValues(fn.Name)
	inflight.Inc()
	defer inflight.Dec()
	return fn.Executor.Execute(ctx, r)
}
