package middleware

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// QuarantineReasonKey names the metadata that says why a message was
// quarantined.
const QuarantineReasonKey = "tl_quarantine_reason"

// Decode reads the task and its event from the message. A message that is
// not a task message (published by hand, corrupted, from an old version) is
// moved to the quarantine topic with its reason and acknowledged: it never
// loops and never stops the consumer. A copy the broker refuses for its
// size (its headers plus the reason over one frame) is quarantined without
// its headers. If the quarantine publish fails otherwise, the message is
// nacked and tried again.
func Decode(quarantine message.Publisher, topic string, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ref, ev, err := taskmsg.Parse(msg)
			if err != nil {
				perr := quarantine.Publish(topic, quarantined(msg, msg.Metadata, err.Error()))
				if errors.Is(perr, broker.ErrTooLarge) {
					// Its headers and the reason do not fit in one frame:
					// the same copy can never be published, so keep the
					// payload and the reason only.
					perr = quarantine.Publish(topic, quarantined(msg, nil, err.Error()+" (headers dropped: "+perr.Error()+")"))
				}
				if perr != nil {
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
