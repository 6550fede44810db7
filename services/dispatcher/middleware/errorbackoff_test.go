package middleware_test

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

var errDown = errors.New("ledger unreachable")

func TestErrorBackoffWaitsBeforeNack(t *testing.T) {
	t.Parallel()
	const backoff = 200 * time.Millisecond
	ps := chantest.New(t)
	var calls atomic.Int32
	topic, _ := route(t, ps, func(msg *message.Message) error {
		if calls.Add(1) == 1 {
			return errDown
		}
		return nil
	}, middleware.ErrorBackoff(backoff, testkit.Logger(t, slog.LevelInfo)))

	require.NoError(t, ps.Publish(topic, message.NewMessage("m1", nil)))
	ds := ps.WaitSettled(t, "m1", 2, within)
	require.True(t, ds[0].Nacked)
	require.GreaterOrEqual(t, ds[0].SettledAt.Sub(ds[0].At), backoff, "the nack comes after the back-off")
	require.True(t, ds[1].Acked)
}

// Success is acked at once: the back-off is for errors only.
func TestErrorBackoffDoesNotDelaySuccess(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	topic, _ := route(t, ps, func(*message.Message) error { return nil },
		middleware.ErrorBackoff(time.Hour, testkit.Logger(t, slog.LevelInfo)))
	require.NoError(t, ps.Publish(topic, message.NewMessage("m1", nil)))
	require.True(t, ps.WaitSettled(t, "m1", 1, within)[0].Acked)
}

// A stopping consumer ends the back-off (the nack follows at once), even
// though Detach, inside it, gave the message a context that does not end.
func TestErrorBackoffEndsWhenConsumerStops(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	failed := make(chan struct{}, 1)
	topic, closeRouter := route(t, ps, func(*message.Message) error {
		select {
		case failed <- struct{}{}:
		default:
		}
		return errDown
	}, middleware.ErrorBackoff(time.Hour, testkit.Logger(t, slog.LevelInfo)), middleware.Detach())

	require.NoError(t, ps.Publish(topic, message.NewMessage("m1", nil)))
	receive(t, failed)
	closed := make(chan error, 1)
	go func() { closed <- closeRouter() }()
	require.True(t, ps.WaitSettled(t, "m1", 1, within)[0].Nacked)
	require.NoError(t, receive(t, closed))
}
