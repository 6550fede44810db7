package middleware

import (
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrorBackoff waits d before returning a handler error, so the nack that
// follows comes d later. The dispatcher returns errors only when the ledger
// or the broker is unreachable, or when the chain panicked (Recover, inside
// it, turns the panic into an error); task failures are outcomes, not
// errors. Nacking at once would make the broker redeliver in a hot loop
// while every consumer fails the same way. This is the one deliberate wait
// inside a consumer, and it happens only when no consumer can make progress
// anyway. (Not to be confused with pausing tasks, a task-control feature.)
//
// The wait ends early when the delivery's context ends (the consumer is
// stopping): the context is taken before the inner handler runs, because
// Detach, further in, replaces the message's context with one that a
// stopping consumer does not cancel.
func ErrorBackoff(d time.Duration, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			out, err := h(msg)
			if err != nil {
				logger.Warn("delivery failed; backing off before the nack", "message", msg.UUID, "backoff", d, "error", err)
				t := time.NewTimer(d)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
				}
			}
			return out, err
		}
	}
}
