package middleware_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// fakeChainer records the replies submitted (into the shared log, as
// "submit") and answers err.
type fakeChainer struct {
	log     *[]string
	err     error
	parents []ingest.Parent
	tenants []string
}

func (f *fakeChainer) SubmitReply(_ context.Context, tenant string, p ingest.Parent, e *event.Event) ([]contracts.SubmittedTask, error) {
	*f.log = append(*f.log, "submit "+e.ID())
	f.parents, f.tenants = append(f.parents, p), append(f.tenants, tenant)
	if f.err != nil {
		return nil, f.err
	}
	return []contracts.SubmittedTask{{ID: "child", EventID: e.ID(), Function: "next", State: contracts.StateQueued}}, nil
}

// replyAttempt runs a Delivery whose attempt (standing in for Run) ends
// with out through Reply, inside a stand-in for RetryClassify that logs
// "record <class>" once the chain inside it returned; it returns the
// Delivery.
func replyAttempt(t *testing.T, c middleware.Chainer, log *[]string, out executor.Outcome, leaseLost bool) *middleware.Delivery {
	t.Helper()
	parentEvent := event.New()
	parentEvent.SetID("ev-p")
	d := &middleware.Delivery{Ref: taskmsg.Ref{TaskID: "parent", Tenant: "acme", Function: "first"}, Event: &parentEvent}
	run := func(*message.Message) ([]*message.Message, error) {
		d.Outcome, d.Ran, d.LeaseLost = out, true, leaseLost
		return nil, nil
	}
	record := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			o, err := h(msg)
			*log = append(*log, "record "+string(d.Outcome.Class))
			return o, err
		}
	}
	h := record(middleware.Reply(c, testkit.Logger(t, slog.LevelInfo))(run))
	msg := message.NewMessage("m1", nil)
	msg.SetContext(middleware.WithDelivery(context.Background(), d))
	_, err := h(msg)
	require.NoError(t, err)
	return d
}

func reply(id string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/fn")
	e.SetType("next")
	return &e
}

// TestReplyChainsBeforeTheSuccessIsRecorded: a succeeded attempt's reply
// is submitted, as the task's tenant and naming the task (and its event)
// as the parent, before the outcome is recorded.
func TestReplyChainsBeforeTheSuccessIsRecorded(t *testing.T) {
	t.Parallel()
	var log []string
	c := &fakeChainer{log: &log}
	d := replyAttempt(t, c, &log, executor.Outcome{Class: executor.Succeeded, Status: 200, Reply: reply("r-1")}, false)
	require.Equal(t, []string{"submit r-1", "record succeeded"}, log)
	require.Equal(t, executor.Succeeded, d.Outcome.Class)
	require.Equal(t, []string{"acme"}, c.tenants)
	require.Equal(t, "parent", c.parents[0].TaskID)
	require.Equal(t, "ev-p", c.parents[0].Event.ID())
}

// TestReplyNotChained: nothing is submitted for a failed attempt, an
// attempt without a reply, or one whose lease was lost (its outcome is
// discarded: the dispatcher that took the task over runs it again); a
// dispatcher without a Chainer leaves the reply unchained.
func TestReplyNotChained(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		out  executor.Outcome
		lost bool
	}{
		"failed":     {executor.Outcome{Class: executor.Retryable, Reply: reply("r")}, false},
		"no reply":   {executor.Outcome{Class: executor.Succeeded}, false},
		"lease lost": {executor.Outcome{Class: executor.Succeeded, Reply: reply("r")}, true},
	} {
		var log []string
		d := replyAttempt(t, &fakeChainer{log: &log}, &log, tc.out, tc.lost)
		require.Equal(t, []string{"record " + string(tc.out.Class)}, log, name)
		require.Equal(t, tc.out.Class, d.Outcome.Class, name)
	}
	var log []string
	d := replyAttempt(t, nil, &log, executor.Outcome{Class: executor.Succeeded, Reply: reply("r")}, false)
	require.Equal(t, executor.Succeeded, d.Outcome.Class)
}

// TestReplyRefused maps ingest's refusals of a reply to the attempt's
// outcome: invalid -> non-retryable naming why; backpressure -> throttled
// after its Retry-After; the ledger not answering -> retryable; no
// subscriber -> still succeeded.
func TestReplyRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		err        error
		class      executor.Class
		errPart    string
		retryAfter time.Duration
	}{
		{"invalid", &ingest.Error{Status: http.StatusBadRequest, Msg: "invalid event: source: REQUIRED"}, executor.NonRetryable, "invalid reply event: invalid event: source: REQUIRED", 0},
		{"too deep", &ingest.Error{Status: http.StatusUnprocessableEntity, Msg: "chain too deep: ..."}, executor.NonRetryable, "invalid reply event: chain too deep", 0},
		{"backpressure", &admission.RefusedError{Tenant: "acme", Reason: contracts.RefusedTenantBacklog, Backlog: 10, Limit: 10, RetryAfter: 3 * time.Second}, executor.Throttled, "reply event refused by backpressure", 3 * time.Second},
		{"ledger down", &ingest.Error{Status: http.StatusServiceUnavailable, Msg: "the task ledger did not answer"}, executor.Retryable, "chaining the reply event: the task ledger did not answer", 0},
		{"other", errors.New("boom"), executor.Retryable, "chaining the reply event: boom", 0},
		{"no subscriber", &ingest.Error{Status: http.StatusUnprocessableEntity, Msg: "type: no function", NoSubscriber: true}, executor.Succeeded, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var log []string
			d := replyAttempt(t, &fakeChainer{log: &log, err: c.err}, &log, executor.Outcome{Class: executor.Succeeded, Status: 200, Reply: reply("r-1")}, false)
			require.Equal(t, []string{"submit r-1", "record " + string(c.class)}, log)
			require.Equal(t, c.class, d.Outcome.Class)
			require.Equal(t, c.retryAfter, d.Outcome.RetryAfter)
			if c.errPart != "" {
				require.Contains(t, d.Outcome.Err, c.errPart)
			} else {
				require.Empty(t, d.Outcome.Err)
			}
		})
	}
}
