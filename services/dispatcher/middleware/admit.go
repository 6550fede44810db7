package middleware

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// Admit puts the delivered task into its function's ready queue in the
// ledger, where dispatchers take it by capacity, and acknowledges the
// delivery: nothing waits unacknowledged for a free slot. The ledger's
// answer is idempotent: a duplicate delivery of a task that is ready,
// running under a live lease, waiting for a backoff, or ended changes
// nothing and is acknowledged. A task whose ttl passed is ended as expired.
// A task of a function this dispatcher does not know (the configuration
// changed under it) can never run: it ends dead, non-retryable. A message
// without a Delivery (Decode did not run first) is an error wrapping
// ErrNoDelivery.
func Admit(l *ledger.Ledger, configured func(function string) bool, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("admitting message %s: %w", msg.UUID, ErrNoDelivery)
			}
			if !configured(d.Ref.Function) {
				err := l.Abandon(msg.Context(), d.Ref.Tenant, d.Ref.TaskID, contracts.StateDead, contracts.ReasonNonRetryable,
					fmt.Sprintf("function %q is not configured", d.Ref.Function))
				switch {
				case err == nil:
					m.Outcomes.WithLabelValues(d.Ref.Tenant, d.Ref.Function, string(contracts.StateDead)).Inc()
				case errors.Is(err, ledger.ErrNotAbandoned), errors.Is(err, ledger.ErrNotFound):
				default:
					m.LedgerErrors.WithLabelValues("abandon").Inc()
					return nil, err
				}
				return h(msg)
			}
			a, err := l.Admit(msg.Context(), ledger.TaskRef{
				Tenant: d.Ref.Tenant, ID: d.Ref.TaskID, Function: d.Ref.Function, Priority: d.Ref.Priority,
			})
			if err != nil {
				m.LedgerErrors.WithLabelValues("admit").Inc()
				return nil, err
			}
			m.Deliveries.WithLabelValues(string(a.Verdict)).Inc()
			d.Admission = a
			switch a.Verdict {
			case ledger.AdmitExpired:
				m.Outcomes.WithLabelValues(d.Ref.Tenant, d.Ref.Function, "expired").Inc()
			case ledger.AdmitMissing:
				logger.Warn("delivery for a task the ledger does not have; dropped", "task", d.Ref.TaskID, "tenant", d.Ref.Tenant)
			}
			return h(msg)
		}
	}
}
