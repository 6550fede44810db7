package middleware

import (
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// QuarantineReasonKey names the metadata that says why a message was
// quarantined.
const QuarantineReasonKey = "tl_quarantine_reason"

// Decode reads the task and its event from the message. A message that is
// not a task message (published by hand, corrupted, from an old version) is
// moved to the quarantine topic with its reason and acknowledged: it never
// loops and never stops the consumer. If the quarantine publish fails, the
// message is nacked and tried again.
func Decode(quarantine message.Publisher, topic string, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ref, ev, err := taskmsg.Parse(msg)
			if err != nil {
				q := message.NewMessage(msg.UUID, msg.Payload)
				for k, v := range msg.Metadata {
					q.Metadata.Set(k, v)
				}
				q.Metadata.Set(QuarantineReasonKey, err.Error())
				q.SetContext(msg.Context())
				if perr := quarantine.Publish(topic, q); perr != nil {
					return nil, fmt.Errorf("quarantining message %s: %w", msg.UUID, perr)
				}
				m.Quarantined.Inc()
				logger.Warn("quarantined undecodable message", "message", msg.UUID, "reason", err.Error())
				return nil, nil
			}
			msg.SetContext(WithDelivery(msg.Context(), &Delivery{Ref: ref, Event: ev}))
			return h(msg)
		}
	}
}
