package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// closedAddr is a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// A broker.url list whose first node refuses connections: the driver
// connects to the next one, and lanes work through it (publish, consume,
// ack).
func TestAMQPURLListSkipsADeadNode(t *testing.T) {
	t.Parallel()
	real := testkit.RequireAMQP(t)
	dead := "amqp://guest:secret@" + closedAddr(t) + "/"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The connection itself, started at the dead URL: it dials the next.
	c, err := newAMQPConn([]string{dead, real}, 0, "tasklane test", logger)
	require.NoError(t, err)
	require.Equal(t, redactURL(real), c.URL())
	require.True(t, c.IsConnected())
	require.NoError(t, c.Close())

	// The driver (which starts at a random URL of the list) publishes and
	// consumes through the live node.
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: dead + " , " + real, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Ping(ctx))
	lane := testkit.UniqueName("tltest.lane.urls")
	t.Cleanup(func() { testkit.PurgeQueues(t, lane) })
	require.NoError(t, d.DeclareLanes(ctx, lane))
	ch, err := d.Subscriber().Subscribe(ctx, lane)
	require.NoError(t, err)
	publish(t, d, lane, "m-1")
	got := receive(t, ch)
	require.Equal(t, "m-1", got.UUID)
	got.Ack()
}

// Every URL of the list refusing: one error naming each URL, without its
// password.
func TestAMQPURLListAllDead(t *testing.T) {
	t.Parallel()
	a, b := "amqp://guest:secret@"+closedAddr(t)+"/", "amqp://guest:secret@"+closedAddr(t)+"/"
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: a + "," + b, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.Error(t, err)
	require.Nil(t, d)
	require.Contains(t, err.Error(), redactURL(a))
	require.Contains(t, err.Error(), redactURL(b))
	require.NotContains(t, err.Error(), "secret")

	_, err = New(Config{Driver: DriverAMQP, AMQPURL: a + ",http://guest:secret@h2/", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.ErrorContains(t, err, "broker URL 2 of 2 (http://guest:xxxxx@h2/)")
	require.NotContains(t, err.Error(), "secret")
}

// When the connection is lost, the driver dials the next URL of the list,
// and the lane consumer and the publisher carry on over the new
// connection. Two URLs of the one local broker stand for two nodes.
func TestAMQPReconnectsToTheNextURL(t *testing.T) {
	t.Parallel()
	first := testkit.RequireAMQP(t)
	second := strings.Replace(first, "127.0.0.1", "localhost", 1)
	if second == first {
		t.Skipf("needs a broker URL with host 127.0.0.1, got %s", redactURL(first))
	}
	logger := testkit.Logger(t, slog.LevelWarn)
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: first + "," + second, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ad := d.(*amqpDriver)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lane := testkit.UniqueName("tltest.lane.next")
	t.Cleanup(func() { testkit.PurgeQueues(t, lane) })
	require.NoError(t, d.DeclareLanes(ctx, lane))
	ch, err := d.Subscriber().Subscribe(ctx, lane)
	require.NoError(t, err)
	publish(t, d, lane, "before")
	got := receive(t, ch)
	require.Equal(t, "before", got.UUID)
	got.Ack()

	for _, c := range []*amqpConn{ad.pubConn, ad.subConn} {
		was := c.URL()
		require.NoError(t, c.Connection().Close())
		testkit.Eventually(t, 20*time.Second, func() bool { return c.IsConnected() && c.URL() != was },
			"reconnected to the other URL")
	}
	// The publisher reopens its channel on the new connection (a publish
	// racing the reconnect may fail: callers retry), the consumer its own.
	testkit.Eventually(t, 20*time.Second, func() bool {
		m := message.NewMessage("after", []byte("after"))
		m.SetContext(ctx)
		return d.Publisher().Publish(lane, m) == nil
	}, "publish after the reconnect")
	got = receive(t, ch)
	require.Equal(t, "after", got.UUID)
	got.Ack()
}
