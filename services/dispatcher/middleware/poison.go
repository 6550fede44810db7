package middleware

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// QuarantineReasonKey names the metadata that says why a message was
// quarantined.
const QuarantineReasonKey = "tl_quarantine_reason"

// Poison moves a message that Decode could not read (its Delivery has a
// ParseErr) to the quarantine topic with its reason, and acknowledges it:
// it never loops and never stops the consumer, and the chain after Poison
// only sees task messages. A copy the broker refuses for its size (its
// headers plus the reason over one frame) is quarantined without its
// headers. If the quarantine publish fails otherwise, the message is
// nacked and tried again. A message without a Delivery is an error
// wrapping ErrNoDelivery.
//
// Poison does not quarantine a task message by its broker delivery count
// (quorum queues give one, as tl_delivery_count). A delivery of a task
// message fails only when the ledger or the broker is unreachable, or the
// chain panicked: a count would quarantine healthy tasks during a Redis
// outage, and a quarantined task would stay queued in the ledger with
// nothing to publish it again.
func Poison(quarantine message.Publisher, topic string, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("checking message %s for poison: %w", msg.UUID, ErrNoDelivery)
			}
			if d.ParseErr == nil {
				return h(msg)
			}
			reason := d.ParseErr.Error()
			perr := quarantine.Publish(topic, quarantined(msg, msg.Metadata, reason))
			if errors.Is(perr, broker.ErrTooLarge) {
				// Its headers and the reason do not fit in one frame: the
				// same copy can never be published, so keep the payload
				// and the reason only.
				perr = quarantine.Publish(topic, quarantined(msg, nil, reason+" (headers dropped: "+perr.Error()+")"))
			}
			if perr != nil {
				return nil, fmt.Errorf("quarantining message %s: %w", msg.UUID, perr)
			}
			m.Quarantined.Inc()
			logger.Warn("quarantined undecodable message", "message", msg.UUID, "reason", reason)
			return nil, nil
		}
	}
}

// quarantined is the quarantine copy of msg: its payload, the metadata
// given, and the reason.
func quarantined(msg *message.Message, md message.Metadata, reason string) *message.Message {
	q := message.NewMessage(msg.UUID, msg.Payload)
	for k, v := range md {
		q.Metadata.Set(k, v)
	}
	q.Metadata.Set(QuarantineReasonKey, reason)
	q.SetContext(msg.Context())
	return q
}
