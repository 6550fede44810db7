package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// Decode reads the task and its event from the message into a Delivery in
// the message's context. A message that is not a task message (published
// by hand, corrupted, from an old version) gets a Delivery with only
// ParseErr set: Poison, next in the chain, quarantines it.
func Decode() message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ref, ev, err := taskmsg.Parse(msg)
			d := &Delivery{Ref: ref, Event: ev, ParseErr: err}
			if err != nil {
				d.Ref, d.Event = taskmsg.Ref{}, nil
			}
			msg.SetContext(WithDelivery(msg.Context(), d))
			return h(msg)
		}
	}
}
