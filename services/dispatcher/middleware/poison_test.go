package middleware_test

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/cloudevent"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// poison is the Decode and Poison part of the lane chain, quarantining to
// pub.
func poison(t *testing.T, pub message.Publisher, m *metrics.Metrics) []message.HandlerMiddleware {
	return []message.HandlerMiddleware{middleware.Decode(), middleware.Poison(pub, quarantine, m, testkit.Logger(t, slog.LevelInfo))}
}

// A task message passes Poison untouched.
func TestPoisonPassesTaskMessagesOn(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	got := make(chan *middleware.Delivery, 1)
	topic, _ := route(t, ps, func(msg *message.Message) error {
		got <- middleware.DeliveryFrom(msg.Context())
		return nil
	}, poison(t, ps, metrics.New())...)

	require.NoError(t, ps.Publish(topic, taskMessage(t, "acme", "t1", "fn")))
	require.Equal(t, "t1", receive(t, got).Ref.TaskID)
	require.True(t, ps.WaitSettled(t, "t1", 1, within)[0].Acked)
}

// What is not a task message is moved to the quarantine with its reason
// and acked; the handler never sees it.
func TestPoisonQuarantinesUndecodable(t *testing.T) {
	t.Parallel()
	flagged := message.NewMessage("m-flagged", []byte("payload"))
	flagged.Metadata.Set(taskmsg.KeyUndecodable, "header x-death is not a string")
	flagged.Metadata.Set("other", "kept")
	notEvent := taskMessage(t, "acme", "m-not-event", "fn")
	notEvent.Metadata.Set(cloudevent.KeyType, "")
	for name, c := range map[string]struct {
		msg    *message.Message
		reason string
	}{
		"flagged by the driver": {flagged, "header x-death is not a string"},
		"no task metadata":      {message.NewMessage("m-bare", []byte("x")), taskmsg.KeyTaskID},
		"not an event":          {notEvent, cloudevent.ErrNotAnEvent.Error()},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ps := chantest.New(t)
			var calls atomic.Int32
			m := metrics.New()
			topic, _ := route(t, ps, func(*message.Message) error {
				calls.Add(1)
				return nil
			}, poison(t, ps, m)...)

			require.NoError(t, ps.Publish(topic, c.msg))
			require.True(t, ps.WaitSettled(t, c.msg.UUID, 1, within)[0].Acked)
			q := ps.Read(t, quarantine, 1, within)[0]
			require.Equal(t, c.msg.UUID, q.UUID)
			require.Equal(t, c.msg.Payload, q.Payload)
			require.Contains(t, q.Metadata.Get(middleware.QuarantineReasonKey), c.reason)
			for k, v := range c.msg.Metadata {
				require.Equal(t, v, q.Metadata.Get(k), "metadata %s is kept", k)
			}
			require.Zero(t, calls.Load())
		})
	}
}

// failOnce fails its first publish.
type failOnce struct {
	message.Publisher
	n atomic.Int32
}

func (p *failOnce) Publish(topic string, msgs ...*message.Message) error {
	if p.n.Add(1) == 1 {
		return errors.New("broker unreachable")
	}
	return p.Publisher.Publish(topic, msgs...)
}

// A quarantine that cannot be written is an error: the message is nacked
// (and redelivered), never acked without a copy.
func TestPoisonNacksWhenQuarantineFails(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	errs := make(chan error, 10)
	topic, _ := route(t, ps, func(*message.Message) error { return nil },
		append([]message.HandlerMiddleware{probe(errs)}, poison(t, &failOnce{Publisher: ps}, metrics.New())...)...)

	require.NoError(t, ps.Publish(topic, message.NewMessage("m1", []byte("x"))))
	require.ErrorContains(t, receive(t, errs), "quarantining message m1: broker unreachable")
	ds := ps.WaitSettled(t, "m1", 2, within)
	require.True(t, ds[0].Nacked)
	require.True(t, ds[1].Acked)
	require.Equal(t, "m1", ps.Read(t, quarantine, 1, within)[0].UUID)
}

// refuseLarge refuses, as the amqp driver does for a header frame over
// frame_max, any message with more than maxKeys metadata entries.
type refuseLarge struct {
	message.Publisher
	maxKeys int
}

func (p *refuseLarge) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if len(m.Metadata) > p.maxKeys {
			return &broker.TooLargeError{What: "header frame", Size: len(m.Metadata), Limit: p.maxKeys}
		}
	}
	return p.Publisher.Publish(topic, msgs...)
}

// An undecodable message whose quarantine copy the broker refuses for its
// size (its headers plus the reason) is quarantined without its headers
// and acked: retrying the same copy could never succeed, so a nack would
// loop forever.
func TestPoisonQuarantinesTooLargeWithoutHeaders(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	topic, _ := route(t, ps, func(*message.Message) error { return nil },
		poison(t, &refuseLarge{Publisher: ps, maxKeys: 3}, metrics.New())...)

	m := message.NewMessage("big", []byte("x"))
	for i := range 10 {
		m.Metadata.Set(fmt.Sprintf("h%d", i), "v")
	}
	require.NoError(t, ps.Publish(topic, m))
	ds := ps.WaitSettled(t, "big", 1, within)
	require.True(t, ds[0].Acked)
	q := ps.Read(t, quarantine, 1, within)[0]
	require.Equal(t, "big", q.UUID)
	require.Equal(t, []byte("x"), []byte(q.Payload))
	require.Contains(t, q.Metadata.Get(middleware.QuarantineReasonKey), "undecodable task message")
	require.Contains(t, q.Metadata.Get(middleware.QuarantineReasonKey), "headers dropped")
	require.Empty(t, q.Metadata.Get("h0"))
}

// Poison without Decode before it is an error, not a nil dereference.
func TestPoisonWithoutDelivery(t *testing.T) {
	t.Parallel()
	h := middleware.Poison(chantest.New(t), quarantine, metrics.New(), testkit.Logger(t, slog.LevelInfo))(func(*message.Message) ([]*message.Message, error) {
		return nil, nil
	})
	_, err := h(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, middleware.ErrNoDelivery)
}
