package middleware_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// An admitted task waits in its function's ready queue, not in the
// consumer: the delivery is acked, the function's starter is woken, and a
// take finds the task. A duplicate, which Dedup drops, wakes nothing.
func TestThrottleWakesTheStarterOfAnAdmittedTask(t *testing.T) {
	t.Parallel()
	ps, l, m := chantest.New(t), newLedger(t), metrics.New()
	woken := make(chan string, 10)
	passed := make(chan struct{}, 10)
	topic, _ := route(t, ps, func(*message.Message) error {
		passed <- struct{}{}
		return nil
	}, middleware.Decode(),
		middleware.Dedup(l, func(string) bool { return true }, m, testkit.Logger(t, slog.LevelInfo)),
		middleware.Throttle(func(fn string) { woken <- fn }, m))

	msg := createTask(t, l, "fn")
	require.NoError(t, ps.Publish(topic, msg))
	require.Equal(t, "fn", receive(t, woken))
	receive(t, passed)
	require.True(t, ps.WaitSettled(t, msg.UUID, 1, within)[0].Acked)
	require.InDelta(t, 1.0, counter(t, m.Deliveries.WithLabelValues(string(ledger.AdmitAdmitted))), 0)

	require.NoError(t, ps.Publish(topic, msg.Copy()))
	require.True(t, ps.WaitSettled(t, msg.UUID, 2, within)[1].Acked)
	require.Empty(t, woken, "a duplicate wakes no starter")
	require.Empty(t, passed)

	tk, err := l.Take(context.Background(), "fn", "test", 10, within, ledger.TakeLimits{})
	require.NoError(t, err)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, msg.UUID, tk.Tasks[0].ID)
}

// Throttle acts only on what Dedup admitted; in a chain built in the wrong
// order it is an error, and it wakes nothing.
func TestThrottleRefusesWhatWasNotAdmitted(t *testing.T) {
	t.Parallel()
	woken := 0
	h := middleware.Throttle(func(string) { woken++ }, metrics.New())(func(*message.Message) ([]*message.Message, error) {
		return nil, nil
	})
	_, err := h(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, middleware.ErrNoDelivery)
	msg := message.NewMessage("m2", nil)
	msg.SetContext(middleware.WithDelivery(context.Background(), &middleware.Delivery{Admission: ledger.Admission{Verdict: ledger.AdmitBusy}}))
	_, err = h(msg)
	require.ErrorIs(t, err, middleware.ErrNotAdmitted)
	require.Zero(t, woken)
}
