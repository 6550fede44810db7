package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ingest"
)

// Chainer submits a function's reply event as a new event chained from
// its task; *ingest.Ingester implements it.
type Chainer interface {
	SubmitReply(ctx context.Context, tenant string, parent ingest.Parent, e *event.Event) ([]contracts.SubmittedTask, error)
}

// Reply chains the reply event of a succeeded attempt (the Outcome's
// Reply, stored by Run inside it): it submits the event through c, the
// ingest path (validation, dedup on the reply's source and id, limits),
// before RetryClassify, outside it, records the task's success. A crash in
// between re-runs the task, and the re-run's reply, deduplicated on its
// source and id, finds the tasks made the first time: the child is neither
// lost nor doubled. The outcome becomes:
//
//   - non-retryable, naming why, when ingest refuses the reply as invalid
//     (bad attributes, too large, a chain deeper than
//     contracts.MaxChainDepth);
//   - throttled, after the refusal's Retry-After, when backpressure
//     refuses the reply's tenant;
//   - retryable when the ledger did not answer;
//   - unchanged (succeeded) when the reply is recorded, or when no
//     function subscribes to its type (logged: nothing to run).
//
// A nil c leaves replies unchained (logged). An outcome Run discarded
// (LeaseLost) chains nothing: the dispatcher that took the task over runs
// it again.
func Reply(c Chainer, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				return out, err
			}
			d := DeliveryFrom(msg.Context())
			if d == nil {
				return nil, fmt.Errorf("chaining the reply of message %s: %w", msg.UUID, ErrNoDelivery)
			}
			reply := d.Outcome.Reply
			if d.LeaseLost || d.Outcome.Class != executor.Succeeded || reply == nil {
				return out, nil
			}
			log := logger.With("task", d.Ref.TaskID, "tenant", d.Ref.Tenant, "reply_source", reply.Source(), "reply_id", reply.ID())
			if c == nil {
				log.Warn("reply event not chained: this dispatcher has no ingest path")
				return out, nil
			}
			tasks, err := c.SubmitReply(msg.Context(), d.Ref.Tenant, ingest.Parent{TaskID: d.Ref.TaskID, Event: d.Event}, reply)
			d.Outcome = chained(d.Outcome, err, log)
			if err == nil {
				log.Debug("reply event chained", "tasks", len(tasks))
			}
			return out, nil
		}
	}
}

// chained is the outcome of a succeeded attempt whose reply submission
// ended with err.
func chained(o executor.Outcome, err error, log *slog.Logger) executor.Outcome {
	if err == nil {
		return o
	}
	var ie *ingest.Error
	var refused *admission.RefusedError
	switch {
	case errors.As(err, &ie) && ie.NoSubscriber:
		log.Info("reply event not chained: no function subscribes to its type", "reply_type", o.Reply.Type())
		return o
	case errors.As(err, &refused):
		o.Class, o.RetryAfter = executor.Throttled, refused.RetryAfter
		o.Err = "reply event refused by backpressure: " + err.Error()
	case errors.As(err, &ie) && ie.Status < http.StatusInternalServerError:
		o.Class = executor.NonRetryable
		o.Err = "invalid reply event: " + ie.Msg
	default:
		o.Class = executor.Retryable
		o.Err = "chaining the reply event: " + err.Error()
	}
	o.Reply = nil
	log.Warn("reply event not chained", "class", o.Class, "error", o.Err)
	return o
}
