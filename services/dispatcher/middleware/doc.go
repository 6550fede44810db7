// Package middleware holds the dispatcher's Watermill middlewares, one
// concern per file. The chain, outermost first:
//
//	Recover   a panic becomes an error (and a pause), never a crashed consumer
//	Pause     an infrastructure error pauses the consumer before the nack
//	Detach    the attempt outlives a stopping consumer (graceful drain)
//	Decode    undecodable messages are quarantined, others carry a Delivery
//	Claim     the ledger decides: run this attempt, or drop/defer the delivery
//
// The handler after the chain runs the attempt and records its outcome.
package middleware

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// Delivery is what the chain learns about a lane message.
type Delivery struct {
	Ref   taskmsg.Ref
	Event *event.Event
	Claim ledger.Claim
}

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
