package middleware

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Detach gives the handler a context that a stopping subscriber does not
// cancel. Stopping a handler (drain) cancels msg.Context(); with Detach the
// running attempt finishes and acks, and only then does the consumer close.
// Attempt deadlines come from the function's timeout, set by the handler.
func Detach() message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			msg.SetContext(context.WithoutCancel(msg.Context()))
			return h(msg)
		}
	}
}
