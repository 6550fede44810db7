package middleware_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// A consumer that stops (drain) does not cancel the running handler's
// context; the handler finishes and its delivery is acked.
func TestDetachKeepsHandlerRunningWhileConsumerStops(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	started := make(chan context.Context, 1)
	release := make(chan struct{})
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	topic, closeRouter := route(t, ps, func(msg *message.Message) error {
		started <- msg.Context()
		<-release
		return msg.Context().Err()
	}, middleware.Detach())
	t.Cleanup(releaseOnce)

	require.NoError(t, ps.Publish(topic, message.NewMessage("m1", nil)))
	ctx := receive(t, started)
	closed := make(chan error, 1)
	go func() { closed <- closeRouter() }()
	// The subscription has ended (gochannel cancelled the context it gave
	// the message) while the handler still runs.
	testkit.Eventually(t, within, func() bool { return ps.Ended(topic) == 1 }, "subscription ended")
	require.NoError(t, ctx.Err(), "the handler's context outlives the consumer")
	require.Equal(t, "h", message.HandlerNameFromCtx(ctx), "the detached context keeps the message's values")
	releaseOnce()
	require.True(t, ps.WaitSettled(t, "m1", 1, within)[0].Acked)
	require.NoError(t, receive(t, closed))
}
