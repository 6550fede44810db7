package middleware

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// LimitsFunc returns the limits a task of function and tenant starts under.
type LimitsFunc func(tenant, function string) ledger.Limits

// busyMargin is added to a busy task's lease before it is looked at again.
const busyMargin = time.Second

// Claim asks the ledger whether this delivery runs. Only VerdictRun reaches
// the handler. A terminal or missing task is acknowledged and dropped (a
// duplicate delivery never runs a task twice); a task whose TTL passed is
// ended as expired by the claim itself; a task over its function's
// concurrency or rate limit, or its tenant's rate limit, is deferred until
// it may start; a task that another dispatcher holds is deferred to when
// its lease would expire, so that a dispatcher that died mid-attempt is
// taken over. A message without a Delivery (Decode did not run first) is an
// error wrapping ErrNoDelivery.
func Claim(l *ledger.Ledger, owner string, lease time.Duration, limits LimitsFunc, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("claiming message %s: %w", msg.UUID, ErrNoDelivery)
			}
			c, err := l.Claim(msg.Context(), ledger.ClaimRequest{
				Tenant: d.Ref.Tenant, ID: d.Ref.TaskID, Function: d.Ref.Function, Owner: owner,
				Lease: lease, Limits: limits(d.Ref.Tenant, d.Ref.Function),
			})
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
			case ledger.VerdictThrottled:
				// Over a limit: not blocked, not failed, just later. A rate
				// limit gave the task its own turn; tasks waiting for a
				// concurrency slot get jitter so they do not return in one
				// wave.
				due := time.Now().Add(c.Wait)
				if c.Limit == "concurrency" {
					due = due.Add(time.Duration(rand.Int64N(int64(c.Wait/5) + 1)))
				}
				if err := l.Defer(msg.Context(), d.Ref.Tenant, d.Ref.TaskID, due); err != nil {
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
