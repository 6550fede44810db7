package middleware

import (
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Pause waits before returning a handler error. The dispatcher returns
// errors only when the ledger or the broker is unreachable (task failures
// are outcomes, not errors); nacking at once would make the broker redeliver
// in a hot loop while every consumer fails the same way. This is the one
// deliberate wait inside a consumer, and it happens only when no consumer
// can make progress anyway.
func Pause(d time.Duration, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				logger.Warn("delivery failed; pausing before redelivery", "message", msg.UUID, "pause", d, "error", err)
				t := time.NewTimer(d)
				defer t.Stop()
				select {
				case <-t.C:
				case <-msg.Context().Done():
				}
			}
			return out, err
		}
	}
}
