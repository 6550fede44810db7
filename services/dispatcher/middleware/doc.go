// Package middleware holds the dispatcher's Watermill middlewares, one
// concern per file. The dispatcher builds two chains of them, each as a
// list of Named middlewares whose order a test checks.
//
// The lane (admission) chain runs in the router's lane consumers,
// outermost first:
//
//	ErrorBackoff  an error (a panic included) waits before the nack
//	Recover       a panic becomes an error, never a crashed consumer
//	Detach        the chain outlives a stopping consumer (graceful drain)
//	Decode        the message is parsed into a Delivery (a parse error is recorded)
//	Poison        an undecodable message is quarantined and acked
//	Dedup         ledger.Admit: a duplicate, ended or expired task is acked and dropped
//	              (the dispatcher's AdmitFunc may start the task at once: acked too)
//	Throttle      the admitted task waits for capacity in its ready queue; the starter is woken
//
// The attempt chain runs each attempt a starter took from a ready queue
// (ledger.Take), with no router: the starter calls the chain's handler
// directly with a message whose context carries the Delivery:
//
//	RetryClassify the outcome picks finish, retry at a backoff, or dead/failed
//	Reply         a succeeded attempt's reply event is ingested (chained) first
//	Run           the attempt runs under its renewed lease
//
// ErrorBackoff is outside Recover so that a panic, once an error, gets the
// same back-off as a ledger or broker failure. Poison is outside Dedup so
// that nothing reaches the ledger without a task reference. Dedup and
// Throttle share one ledger.Admit call (the script that dedups also puts
// the task in its ready queue): Dedup makes it and stores its answer in
// the Delivery, Throttle acts on an admission. RetryClassify is outside Run
// as Watermill's Retry is outside the handler: it classifies what Run
// returned. Reply sits between them so that a reply event is recorded
// before the task's success is, and a reply it refuses turns the outcome
// into the failure RetryClassify records.
package middleware

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// Named is a middleware with the name the chain lists it by.
type Named struct {
	Name       string
	Middleware message.HandlerMiddleware
}

// Chain applies mws (outermost first) to h.
func Chain(h message.HandlerFunc, mws ...Named) message.HandlerFunc {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i].Middleware(h)
	}
	return h
}

// Function is what the dispatcher knows of one function.
type Function struct {
	Name     string
	Executor executor.Executor
	// Timeout bounds one attempt.
	Timeout time.Duration
	// MaxAttempts is the number of attempts before the task fails.
	MaxAttempts int
	// Backoff is the wait before attempt n+1 after attempt n failed,
	// without jitter.
	Backoff func(attempt int) time.Duration
	// MaxThrottled is how many throttled answers do not count as attempts.
	MaxThrottled int
	// DeadLetter keeps unsuccessful tasks in the dead-letter queue (state
	// dead) instead of ending them failed.
	DeadLetter bool
	// Concurrency, Rate and Burst limit the function across the cluster
	// (zero: no limit).
	Concurrency int
	Rate        float64
	Burst       int
	// Adaptive, when set, makes the concurrency limit adapt (AIMD).
	Adaptive *config.Adaptive
}

// Unsuccessful is the terminal state of a task of f that failed for good.
func (f Function) Unsuccessful() contracts.State {
	if f.DeadLetter {
		return contracts.StateDead
	}
	return contracts.StateFailed
}

// Delivery is what a chain learns about a task: in the lane chain, from the
// lane message and the ledger's admission; in the attempt chain, from the
// started task and its attempt.
type Delivery struct {
	Ref   taskmsg.Ref
	Event *event.Event
	// ParseErr is why the message is not a task message (set by Decode, or
	// by the starter for a stored message it cannot read); Ref and Event
	// are then unset (the starter sets Ref from the ledger).
	ParseErr error
	// Admission is the ledger's answer to Admit (set by Dedup).
	Admission ledger.Admission

	// Function is the started task's function (attempt chain).
	Function Function
	// Claim is the started attempt (attempt chain).
	Claim ledger.Claim
	// Outcome is the attempt's outcome (set by Run).
	Outcome executor.Outcome
	// Ran is set when the executor answered (not for an unreadable task).
	Ran bool
	// TimedOut is set when the attempt's deadline passed while it ran.
	TimedOut bool
	// RunTime is how long the executor took (set by Run).
	RunTime time.Duration
	// LeaseLost is set when another dispatcher took the task over while
	// the attempt ran: its outcome is discarded.
	LeaseLost bool
}

// ErrNoDelivery is returned by what reads the Delivery when the message's
// context has none: Decode (or the starter) did not set it (a chain built
// in the wrong order).
var ErrNoDelivery = errors.New("no Delivery in the message context (Decode must run first)")

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

// jitter spreads a backoff over [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}
