package broker

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestAMQPHeaderFrameSizeIsExact checks amqpHeaderFrameSize against
// RabbitMQ itself, publishing through amqp091 directly (no size check in
// the way). A lane message with 500 headers whose header frame the
// arithmetic puts at exactly the negotiated frame_max is confirmed. RabbitMQ
// tolerates 8 bytes more than the spec's frame_max (it lets a payload reach
// frame_max, for clients that forget the frame's 8 bytes of overhead), so
// the same message 9 bytes larger is the smallest it refuses: it closes the
// connection (frame_too_large) naming the payload size it read, which must
// be the computed size less those 8 bytes, to the byte.
func TestAMQPHeaderFrameSizeIsExact(t *testing.T) {
	t.Parallel()
	url := testkit.RequireAMQP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	build := func(limit, extra int) amqp.Publishing {
		m := message.NewMessage("exact-"+strconv.Itoa(extra), []byte("body"))
		for i := range 500 {
			m.Metadata.Set("ce_x"+strconv.Itoa(i), strings.Repeat("v", i%37))
		}
		m.Metadata.Set("tl_priority", "3")
		m.Metadata.Set("ce_pad", "")
		pub, err := amqpMarshaler{}.Marshal(m)
		require.NoError(t, err)
		pad := limit - amqpHeaderFrameSize(pub) + extra
		require.Positive(t, pad)
		pub.Headers["ce_pad"] = strings.Repeat("p", pad)
		require.Equal(t, limit+extra, amqpHeaderFrameSize(pub))
		return pub
	}
	// open connects and declares a server-named exclusive queue (deleted
	// with the connection) on a confirm-mode channel.
	open := func() (*amqp.Connection, *amqp.Channel, string) {
		conn, err := amqp.Dial(url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		ch, err := conn.Channel()
		require.NoError(t, err)
		require.NoError(t, ch.Confirm(false))
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		require.NoError(t, err)
		return conn, ch, q.Name
	}

	conn, ch, q := open()
	limit := conn.Config.FrameSize
	require.Positive(t, limit)
	atLimit := build(limit, 0)
	require.NoError(t, checkAMQPSize(atLimit, "", q, limit))
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, atLimit)
	require.NoError(t, err)
	ok, err := dc.WaitContext(ctx)
	require.NoError(t, err)
	require.True(t, ok, "a header frame of exactly frame_max is confirmed")
	require.False(t, conn.IsClosed())
	got, ok, err := ch.Get(q, true)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, atLimit.Headers["ce_pad"], got.Headers["ce_pad"])

	conn, ch, q = open()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	over := build(limit, 8+1)
	require.ErrorIs(t, checkAMQPSize(over, "", q, limit), ErrTooLarge)
	_, _ = ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, over)
	select {
	case e := <-closed:
		require.NotNil(t, e)
		payload := amqpHeaderFrameSize(over) - 8 // type, channel, size, end byte
		require.Contains(t, e.Reason, "{frame_too_large,"+strconv.Itoa(payload)+",", "the payload RabbitMQ read is the computed one")
	case <-ctx.Done():
		t.Fatal("RabbitMQ took a header frame 9 bytes over frame_max: the arithmetic overestimates")
	}
}
