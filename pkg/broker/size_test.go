package broker

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestAMQPOversizedHeaderIsRefusedBeforeSending publishes messages whose
// header table cannot fit RabbitMQ's frame_max: one huge header value, and
// 20,000 small headers. Each publish fails at once with ErrTooLarge, nothing
// reaches the lane, and the publishing connection is the same one before
// and after (RabbitMQ closes a connection that sends such a frame), still
// publishing.
func TestAMQPOversizedHeaderIsRefusedBeforeSending(t *testing.T) {
	t.Parallel()
	url := testkit.RequireAMQP(t)
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: url, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testkit.Eventually(t, 10*time.Second, func() bool { return d.Ping(ctx) == nil }, "connected")
	lane := testkit.UniqueName("tltest.lane")
	require.NoError(t, d.DeclareLanes(ctx, lane))
	t.Cleanup(func() {
		testkit.PurgeQueues(t, lane)
		_, _ = d.DeleteLane(context.Background(), lane)
	})

	ad := d.(*amqpDriver)
	conn := ad.pubConn.Connection()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	publish := func(m *message.Message) error {
		m.SetContext(ctx)
		return d.Publisher().Publish(lane, m)
	}
	require.NoError(t, publish(message.NewMessage("ok-0", []byte("x"))))

	bigValue := message.NewMessage("big-value", []byte("x"))
	bigValue.Metadata.Set("ce_id", strings.Repeat("i", 140<<10))
	many := message.NewMessage("many", []byte("x"))
	for i := range 20000 {
		many.Metadata.Set("ce_x"+strconv.Itoa(i), "v")
	}
	longName := message.NewMessage("long-name", []byte("x"))
	longName.Metadata.Set("ce_"+strings.Repeat("n", 300), "v")
	for _, m := range []*message.Message{bigValue, many, longName} {
		require.ErrorIs(t, CheckSize(d.Publisher(), m), ErrTooLarge, m.UUID)
		err := publish(m)
		require.ErrorIs(t, err, ErrTooLarge, m.UUID)
		var tl *TooLargeError
		require.ErrorAs(t, err, &tl)
		require.Greater(t, tl.Size, tl.Limit)
	}
	// A message just under the negotiated limit still goes.
	fits := message.NewMessage("fits", []byte("x"))
	fits.Metadata.Set("ce_id", strings.Repeat("i", 120<<10))
	require.NoError(t, CheckSize(d.Publisher(), fits))
	require.NoError(t, publish(fits))
	require.NoError(t, publish(message.NewMessage("ok-1", []byte("x"))))

	select {
	case e := <-closed:
		t.Fatalf("the publishing connection was closed: %v", e)
	default:
	}
	require.Same(t, conn, ad.pubConn.Connection(), "the publishing connection is the one it was")
	require.False(t, conn.IsClosed())
	depths, err := d.Depths(ctx, lane)
	require.NoError(t, err)
	require.Equal(t, int64(3), depths[lane].Backlog, "only the messages that fit reached the lane")
}

// TestStreamOversizedMetadataIsRefused: the redisstream driver refuses the
// same messages, by the same bound.
func TestStreamOversizedMetadataIsRefused(t *testing.T) {
	t.Parallel()
	d, rdb, name := streamDriver(t)
	ctx := context.Background()
	lane := name("lane")
	require.NoError(t, d.DeclareLanes(ctx, lane))
	big := message.NewMessage("big", []byte("x"))
	big.Metadata.Set("ce_id", strings.Repeat("i", 140<<10))
	big.SetContext(ctx)
	require.ErrorIs(t, CheckSize(d.Publisher(), big), ErrTooLarge)
	require.ErrorIs(t, d.Publisher().Publish(lane, big), ErrTooLarge)
	fits := message.NewMessage("fits", []byte("x"))
	fits.Metadata.Set("ce_id", strings.Repeat("i", 120<<10))
	fits.SetContext(ctx)
	require.NoError(t, CheckSize(d.Publisher(), fits))
	require.NoError(t, d.Publisher().Publish(lane, fits))
	require.Equal(t, int64(1), rdb.XLen(ctx, lane).Val())
}
