package middleware_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

type dedupBundle struct {
	ps    *chantest.PubSub
	l     *ledger.Ledger
	m     *metrics.Metrics
	topic string
	// passed receives the Delivery of every message Dedup passed on.
	passed chan *middleware.Delivery
}

// dedupSetup routes a fresh topic through Decode and Dedup (function "fn"
// is configured, no other) on a ledger on the test Redis.
func dedupSetup(t *testing.T) *dedupBundle {
	t.Helper()
	b := &dedupBundle{ps: chantest.New(t), l: newLedger(t), m: metrics.New(), passed: make(chan *middleware.Delivery, 10)}
	b.topic, _ = route(t, b.ps, func(msg *message.Message) error {
		b.passed <- middleware.DeliveryFrom(msg.Context())
		return nil
	}, middleware.Decode(), middleware.Dedup(b.l, func(fn string) bool { return fn == "fn" }, b.m, testkit.Logger(t, slog.LevelInfo)))
	return b
}

// A first delivery is admitted and passed on with the ledger's answer; a
// redelivery of the same task is acked and dropped, and the task is in the
// ready queue once.
func TestDedupAdmitsOnceAndDropsDuplicates(t *testing.T) {
	t.Parallel()
	b := dedupSetup(t)
	msg := createTask(t, b.l, "fn")
	require.NoError(t, b.ps.Publish(b.topic, msg))
	d := receive(t, b.passed)
	require.Equal(t, ledger.AdmitAdmitted, d.Admission.Verdict)
	require.Equal(t, msg.UUID, d.Ref.TaskID)
	require.True(t, b.ps.WaitSettled(t, msg.UUID, 1, within)[0].Acked)

	require.NoError(t, b.ps.Publish(b.topic, msg.Copy()))
	require.True(t, b.ps.WaitSettled(t, msg.UUID, 2, within)[1].Acked)
	require.Empty(t, b.passed, "a duplicate is not passed on")
	require.InDelta(t, 1.0, counter(t, b.m.Deliveries.WithLabelValues(string(ledger.AdmitReady))), 0)

	tk, err := b.l.Take(context.Background(), "fn", "test", 10, within, ledger.TakeLimits{})
	require.NoError(t, err)
	require.Len(t, tk.Tasks, 1, "the task is in the ready queue once")
}

// Deliveries of tasks that ended, or that the ledger does not have, end
// the chain with an ack.
func TestDedupDropsEndedAndMissingTasks(t *testing.T) {
	t.Parallel()
	b := dedupSetup(t)
	ended := createTask(t, b.l, "fn")
	require.NoError(t, b.l.Abandon(context.Background(), "acme", ended.UUID, contracts.StateFailed, contracts.ReasonNonRetryable, "ended"))
	missing := taskMessage(t, "acme", testkit.UniqueName("missing"), "fn")

	for _, msg := range []*message.Message{ended, missing} {
		require.NoError(t, b.ps.Publish(b.topic, msg))
		require.True(t, b.ps.WaitSettled(t, msg.UUID, 1, within)[0].Acked)
	}
	require.Empty(t, b.passed)
	require.InDelta(t, 1.0, counter(t, b.m.Deliveries.WithLabelValues(string(ledger.AdmitDone))), 0)
	require.InDelta(t, 1.0, counter(t, b.m.Deliveries.WithLabelValues(string(ledger.AdmitMissing))), 0)
}

// A task of a function this dispatcher does not run ends dead at once,
// without entering a ready queue no starter takes.
func TestDedupEndsUnconfiguredFunctionDead(t *testing.T) {
	t.Parallel()
	b := dedupSetup(t)
	msg := createTask(t, b.l, "gone")
	require.NoError(t, b.ps.Publish(b.topic, msg))
	require.True(t, b.ps.WaitSettled(t, msg.UUID, 1, within)[0].Acked)
	task := state(t, b.l, msg.UUID)
	require.Equal(t, contracts.StateDead, task.State)
	require.Equal(t, contracts.ReasonNonRetryable, task.Reason)
	require.Contains(t, task.Error, `function "gone" is not configured`)
	require.Empty(t, b.passed)
}

// Without Poison before it, Dedup refuses an undecodable message (an
// error, so the delivery is nacked) instead of admitting an empty task.
func TestDedupRefusesUndecodable(t *testing.T) {
	t.Parallel()
	var admitted atomic.Int32
	h := middleware.Dedup(newLedger(t), func(string) bool { return true }, metrics.New(), testkit.Logger(t, slog.LevelInfo))(
		func(*message.Message) ([]*message.Message, error) {
			admitted.Add(1)
			return nil, nil
		})
	_, err := h(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, middleware.ErrNoDelivery)

	msg := message.NewMessage("m2", nil)
	msg.SetContext(middleware.WithDelivery(context.Background(), &middleware.Delivery{ParseErr: context.Canceled}))
	_, err = h(msg)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "Poison must run before Dedup")
	require.Zero(t, admitted.Load())
}
