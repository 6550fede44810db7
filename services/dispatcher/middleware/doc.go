// Package middleware holds the dispatcher's Watermill middlewares, one
// concern per file. The chain, outermost first (the dispatcher builds it as
// a list of Named middlewares, which a test checks):
//
//	ErrorBackoff  an error (a panic included) waits before the nack
//	Recover       a panic becomes an error, never a crashed consumer
//	Detach        the attempt outlives a stopping consumer (graceful drain)
//	Decode        undecodable messages are quarantined, others carry a Delivery
//	Admit         the task goes into its function's ready queue; the delivery is acked
//
// Attempts do not run in the lane consumers: dispatchers take tasks from
// the ready queues by capacity (the dispatcher's starters).
// ErrorBackoff is outside Recover so that a panic, once an error, gets the
// same back-off as a ledger or broker failure.
package middleware

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// Named is a middleware with the name the chain lists it by.
type Named struct {
	Name       string
	Middleware message.HandlerMiddleware
}

// Delivery is what the chain learns about a lane message.
type Delivery struct {
	Ref   taskmsg.Ref
	Event *event.Event
	// Admission is the ledger's answer to Admit.
	Admission ledger.Admission
	// Claim is set for an attempt this process started.
	Claim ledger.Claim
}

// ErrNoDelivery is returned by what reads the Delivery when the message's
// context has none: Decode did not run before it (a chain built in the
// wrong order).
var ErrNoDelivery = errors.New("no Delivery in the message context (Decode must run before Claim and the handler)")

type deliveryKey struct{}

// WithDelivery returns ctx carrying d.
func WithDelivery(ctx context.Context, d *Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}

// DeliveryFrom returns the Delivery set by Decode, or nil.
func DeliveryFrom(ctx context.Context) *Delivery {
	d, _ := ctx.Value(deliveryKey{}).(*Delivery)
	return d
}
