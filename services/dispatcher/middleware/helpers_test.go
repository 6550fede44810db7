package middleware_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
)

const within = 10 * time.Second

// route runs a Watermill router whose one consumer handler reads a fresh
// topic of ps through mws (outermost first) into handler, as Watermill's
// own middleware tests do. It returns the topic and a function that closes
// the router (also called when the test ends).
func route(t *testing.T, ps *chantest.PubSub, handler message.NoPublishHandlerFunc, mws ...message.HandlerMiddleware) (string, func() error) {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: within}, broker.WatermillLogger(testkit.Logger(t, slog.LevelInfo)))
	require.NoError(t, err)
	r.AddMiddleware(mws...)
	topic := testkit.UniqueName("topic")
	r.AddConsumerHandler("h", topic, ps, handler)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = r.Close()
		if err := <-ran; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-r.Running():
	case err := <-ran:
		t.Fatalf("router stopped before running: %v", err)
	case <-time.After(within):
		t.Fatal("router not running")
	}
	return topic, r.Close
}

// probe records the error the middlewares inside it returned.
func probe(errs chan<- error) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			errs <- err
			return out, err
		}
	}
}

// receive returns the next value of ch, or fails the test after within.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("nothing received within %s", within)
	}
	panic("unreachable")
}
