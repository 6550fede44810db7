package middleware_test

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// A panic comes out of Recover as an error that the middlewares outside it
// see; the delivery is nacked and the consumer goes on.
func TestRecoverTurnsPanicIntoError(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	errs := make(chan error, 10)
	var calls atomic.Int32
	topic, _ := route(t, ps, func(msg *message.Message) error {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return nil
	}, probe(errs), middleware.Recover(testkit.Logger(t, slog.LevelInfo)))

	msg := message.NewMessage("m1", nil)
	require.NoError(t, ps.Publish(topic, msg))
	err := receive(t, errs)
	require.Error(t, err)
	require.ErrorContains(t, err, "panic handling message m1: boom")
	ds := ps.WaitSettled(t, "m1", 2, within)
	require.True(t, ds[0].Nacked, "the panicking delivery is nacked")
	require.True(t, ds[1].Acked, "the consumer handles the redelivery")
	require.NoError(t, receive(t, errs))
}

// An error (not a panic) passes through Recover unchanged.
func TestRecoverPassesErrorsThrough(t *testing.T) {
	t.Parallel()
	errFailed := errors.New("failed")
	h := middleware.Recover(testkit.Logger(t, slog.LevelInfo))(func(*message.Message) ([]*message.Message, error) {
		return nil, errFailed
	})
	_, err := h(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, errFailed)
}
