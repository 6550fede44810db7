package middleware

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// ErrNotAdmitted is returned by Throttle for a Delivery that Dedup did not
// admit (a chain built in the wrong order).
var ErrNotAdmitted = errors.New("task not admitted (Dedup must run before Throttle)")

// Throttle is where an admitted task waits for capacity: in its function's
// ready queue in the ledger, where Dedup's ledger.Admit put it, not in the
// consumer. The function's limits (concurrency, adaptive limit, rates,
// tenant quotas) apply when a starter takes it (ledger.Take), so Throttle
// holds nothing: it counts the admission and calls wake with the task's
// function, so this process's starter takes it at once instead of waiting
// for the ledger's wake-up, and the delivery is acknowledged.
func Throttle(wake func(function string), m *metrics.Metrics) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("throttling message %s: %w", msg.UUID, ErrNoDelivery)
			}
			if d.Admission.Verdict != ledger.AdmitAdmitted {
				return nil, fmt.Errorf("throttling message %s (verdict %q): %w", msg.UUID, d.Admission.Verdict, ErrNotAdmitted)
			}
			m.Deliveries.WithLabelValues(string(ledger.AdmitAdmitted)).Inc()
			wake(d.Ref.Function)
			return h(msg)
		}
	}
}
