package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// Dedup makes the delivery's one ledger call, ledger.Admit, and drops what
// it must not admit twice. Admit is idempotent across dispatchers: a
// duplicate delivery of a task that is ready, running under a live lease,
// waiting for a backoff or a delay, paused or ended changes nothing, and a
// task whose ttl passed is ended as expired. Dedup stores the answer in the
// Delivery; for every verdict but admitted it ends the chain, and the
// delivery is acknowledged. An admitted task goes on to Throttle, which
// shares this call.
//
// A task of a function this dispatcher does not know (the configuration
// changed under it) can never run: Dedup ends it dead, non-retryable,
// without admitting it (so no ready queue holds what no starter takes),
// and drops the delivery. That too is idempotent: a second delivery finds
// the task ended.
//
// A message without a Delivery is an error wrapping ErrNoDelivery; one
// that was not a task message (Poison did not run first) is an error too.
func Dedup(l *ledger.Ledger, configured func(function string) bool, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return DedupWith(l, l.Admit, configured, m, logger)
}

// AdmitFunc is the ledger call Dedup makes: ledger.Admit, or a call that
// may also start the task (ledger.AdmitOrStart) and run the attempt.
type AdmitFunc func(ctx context.Context, t ledger.TaskRef) (ledger.Admission, error)

// DedupWith is Dedup making its ledger call with admit. A task admit
// started at once (ledger.AdmitStarted: admit runs its attempt) ends the
// chain like a duplicate: it waits for nothing, so Throttle has no wake to
// give, and the delivery is acknowledged.
func DedupWith(l *ledger.Ledger, admit AdmitFunc, configured func(function string) bool, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("admitting message %s: %w", msg.UUID, ErrNoDelivery)
			}
			if d.ParseErr != nil {
				return nil, fmt.Errorf("admitting message %s (Poison must run before Dedup): %w", msg.UUID, d.ParseErr)
			}
			if !configured(d.Ref.Function) {
				return nil, abandonUnconfigured(msg, d, l, m)
			}
			a, err := admit(msg.Context(), ledger.TaskRef{
				Tenant: d.Ref.Tenant, ID: d.Ref.TaskID, Function: d.Ref.Function, Priority: d.Ref.Priority,
			})
			if err != nil {
				m.LedgerErrors.WithLabelValues("admit").Inc()
				return nil, err
			}
			d.Admission = a
			if a.Verdict == ledger.AdmitAdmitted {
				return h(msg)
			}
			m.Deliveries.WithLabelValues(string(a.Verdict)).Inc()
			switch a.Verdict {
			case ledger.AdmitExpired:
				m.Outcomes.WithLabelValues(d.Ref.Tenant, d.Ref.Function, "expired").Inc()
			case ledger.AdmitMissing:
				logger.Warn("delivery for a task the ledger does not have; dropped", "task", d.Ref.TaskID, "tenant", d.Ref.Tenant)
			}
			return nil, nil
		}
	}
}

// abandonUnconfigured ends d's task dead: its function is not configured.
func abandonUnconfigured(msg *message.Message, d *Delivery, l *ledger.Ledger, m *metrics.Metrics) error {
	err := l.Abandon(msg.Context(), d.Ref.Tenant, d.Ref.TaskID, contracts.StateDead, contracts.ReasonNonRetryable,
		fmt.Sprintf("function %q is not configured", d.Ref.Function))
	switch {
	case err == nil:
		m.Outcomes.WithLabelValues(d.Ref.Tenant, d.Ref.Function, string(contracts.StateDead)).Inc()
	case errors.Is(err, ledger.ErrNotAbandoned), errors.Is(err, ledger.ErrNotFound):
	default:
		m.LedgerErrors.WithLabelValues("abandon").Inc()
		return err
	}
	return nil
}
