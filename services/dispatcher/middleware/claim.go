package middleware

import (
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// busyMargin is added to a busy task's lease before it is looked at again.
const busyMargin = time.Second

// Claim asks the ledger whether this delivery runs. Only VerdictRun reaches
// the handler. A terminal or missing task is acknowledged and dropped (a
// duplicate delivery never runs a task twice); a task whose TTL passed is
// ended as expired by the claim itself; a task that another
// dispatcher holds is deferred to when its lease would expire, so that a
// dispatcher that died mid-attempt is taken over.
func Claim(l *ledger.Ledger, owner string, lease time.Duration, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			c, err := l.Claim(msg.Context(), d.Ref.Tenant, d.Ref.TaskID, owner, lease)
			if err != nil {
				m.LedgerErrors.WithLabelValues("claim").Inc()
				return nil, err
			}
			m.Deliveries.WithLabelValues(string(c.Verdict)).Inc()
			switch c.Verdict {
			case ledger.VerdictRun:
				d.Claim = c
				return h(msg)
			case ledger.VerdictBusy:
				if err := l.Defer(msg.Context(), d.Ref.Tenant, d.Ref.TaskID, c.LeaseUntil.Add(busyMargin)); err != nil {
					m.LedgerErrors.WithLabelValues("defer").Inc()
					return nil, err
				}
			case ledger.VerdictExpired:
				m.Outcomes.WithLabelValues(d.Ref.Tenant, d.Ref.Function, "expired").Inc()
			case ledger.VerdictMissing:
				logger.Warn("delivery for a task the ledger does not have; dropped", "task", d.Ref.TaskID, "tenant", d.Ref.Tenant)
			}
			return nil, nil
		}
	}
}
