package middleware

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Recover turns a panic in the chain into an error, so that ErrorBackoff,
// outside it, waits before the nack as for any other error, instead of the
// panic passing ErrorBackoff by and Watermill's router nacking at once.
func Recover(logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) (out []*message.Message, err error) {
			defer func() {
				if p := recover(); p != nil {
					logger.Error("dispatcher panic", "message", msg.UUID, "panic", p, "stack", string(debug.Stack()))
					err = fmt.Errorf("panic handling message %s: %v", msg.UUID, p)
				}
			}()
			return h(msg)
		}
	}
}
