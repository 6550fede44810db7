package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// RabbitMQ confirms a publish to a queue that does not exist and drops the
// message; the lane publisher must report it instead.
func TestAMQPPublishToMissingLaneFails(t *testing.T) {
	t.Parallel()
	url := testkit.RequireAMQP(t)
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: url, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testkit.Eventually(t, 10*time.Second, func() bool { return d.Ping(ctx) == nil }, "connected")

	lane := testkit.UniqueName("tltest.lane")
	t.Cleanup(func() { testkit.PurgeQueues(t, lane) })
	msg := message.NewMessage("m1", []byte("x"))
	msg.SetContext(ctx)
	err = d.Publisher().Publish(lane, msg)
	require.ErrorIs(t, err, ErrUnroutable)

	require.NoError(t, d.DeclareLanes(ctx, lane))
	for i := range 20 {
		m := message.NewMessage(testkit.UniqueName("m"), []byte{byte(i)})
		m.SetContext(ctx)
		require.NoError(t, d.Publisher().Publish(lane, m))
	}
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclarePassive(lane, true, false, false, false, amqp.Table{"x-max-priority": int32(9)})
	require.NoError(t, err)
	require.Equal(t, 20, q.Messages, "every confirmed publish is in the lane")
}

// A consumer whose connection drops consumes its lane again once the
// driver has reconnected (re-opening its channel checks that the lane
// exists instead of declaring it).
func TestAMQPConsumerResumesAfterReconnect(t *testing.T) {
	t.Parallel()
	url := testkit.RequireAMQP(t)
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: url, Logger: testkit.Logger(t, slog.LevelWarn)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testkit.Eventually(t, 10*time.Second, func() bool { return d.Ping(ctx) == nil }, "connected")
	lane := testkit.UniqueName("tltest.lane")
	t.Cleanup(func() { testkit.PurgeQueues(t, lane) })
	require.NoError(t, d.DeclareLanes(ctx, lane))
	ch, err := d.Subscriber().Subscribe(ctx, lane)
	require.NoError(t, err)

	require.NoError(t, d.(*amqpDriver).subConn.Connection().Close())
	publish(t, d, lane, "after")
	got := receive(t, ch)
	require.Equal(t, "after", got.UUID)
	got.Ack()
	_, exists := testkit.QueueDepth(t, lane)
	require.True(t, exists)
}

// A broker that cannot be reached is an error and no driver: a Driver
// holding a nil *amqpDriver would pass a nil check and panic in Close.
func TestNewUnreachableAMQPIsNilDriver(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: "amqp://guest:guest@" + addr + "/", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.Nil(t, d)
	require.NoError(t, (*amqpDriver)(nil).Close())
}

// N router handlers on a lane handle N deliveries at once over one channel
// and one AMQP consumer; each delivery is acked when its handler returns,
// in whatever order they finish, and none is delivered again.
func TestAMQPLaneHandlersShareOneChannel(t *testing.T) {
	t.Parallel()
	const n = 16
	url := testkit.RequireAMQP(t)
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: url, Logger: testkit.Logger(t, slog.LevelWarn)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testkit.Eventually(t, 10*time.Second, func() bool { return d.Ping(ctx) == nil }, "connected")
	lane := testkit.UniqueName("tltest.lane.slots")
	t.Cleanup(func() { testkit.PurgeQueues(t, lane) })
	require.NoError(t, d.DeclareLanes(ctx, lane))

	var (
		mu      sync.Mutex
		calls   int
		held    []*message.Message
		release = make([]chan struct{}, n)
		allIn   = make(chan struct{})
	)
	for i := range release {
		release[i] = make(chan struct{})
	}
	handle := func(msg *message.Message) error {
		mu.Lock()
		k := calls
		calls++
		if k < n {
			held = append(held, msg)
		}
		if calls == n {
			close(allIn)
		}
		mu.Unlock()
		if k >= n {
			return nil // a redelivery: counted, checked below
		}
		// Blocks until all n are in flight at once (or the deadline).
		select {
		case <-allIn:
		case <-time.After(10 * time.Second):
			return errors.New("not all deliveries in flight at once")
		}
		<-release[k]
		return nil
	}
	router, err := message.NewRouter(message.RouterConfig{}, WatermillLogger(testkit.Logger(t, slog.LevelWarn)))
	require.NoError(t, err)
	for i := range n {
		router.AddConsumerHandler(fmt.Sprintf("slot-%d", i), lane, d.Subscriber(), handle)
	}
	go func() { _ = router.Run(ctx) }()
	<-router.Running()
	t.Cleanup(func() { _ = router.Close() })

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("m-%d", i)
	}
	publish(t, d, lane, ids...)
	select {
	case <-allIn:
	case <-time.After(10 * time.Second):
		t.Fatal("not all deliveries in flight at once within 10s")
	}
	sub := d.(*amqpDriver).sub
	require.EqualValues(t, 1, sub.channels.Load(), "one consumer channel for %d handlers", n)
	require.EqualValues(t, 1, sub.consumers.Load(), "one AMQP consumer for %d handlers", n)
	depths, err := d.Depths(ctx, lane)
	require.NoError(t, err)
	require.Equal(t, LaneDepth{Consumers: 1}, depths[lane], "RabbitMQ sees one consumer, nothing ready")

	// Finish in the reverse of the order they arrived, each acked before
	// the next finishes.
	for k := n - 1; k >= 0; k-- {
		close(release[k])
		select {
		case <-held[k].Acked():
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d not acked within 10s", k)
		}
	}
	// Every ack reached RabbitMQ: once the consumer's channel is closed
	// (what it had not acked goes back into the lane), the lane is empty.
	require.NoError(t, router.Close())
	require.NoError(t, d.Close())
	depth, exists := testkit.QueueDepth(t, lane)
	require.True(t, exists)
	require.Zero(t, depth, "nothing requeued")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, n, calls, "no delivery handled twice")
}

// Result events go out in confirm batches: concurrent publishes share
// batches, and each caller still gets its own answer, after its own
// confirm: all of them arrive, and one whose wait cannot succeed (its
// context ended) fails alone, not its batch.
func TestAMQPResultsInConfirmBatches(t *testing.T) {
	t.Parallel()
	url := testkit.RequireAMQP(t)
	prefix := testkit.UniqueName("tltest")
	d, err := New(Config{Driver: DriverAMQP, AMQPURL: url, Prefix: prefix, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testkit.Eventually(t, 10*time.Second, func() bool { return d.Ping(ctx) == nil }, "connected")
	require.NoError(t, d.DeclareLanes(ctx))
	quarantine := QuarantineTopicFor(prefix)
	results := contracts.ResultsExchangeFor(prefix)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q.Name, "#", results, false, nil))
	t.Cleanup(func() {
		testkit.PurgeQueues(t, quarantine)
		if c, err := conn.Channel(); err == nil {
			_ = c.ExchangeDelete(results, false, false)
		}
	})

	const n = 300
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := message.NewMessage(fmt.Sprintf("r%d", i), []byte{byte(i)})
			if i == 7 {
				gone, stop := context.WithCancel(ctx)
				stop()
				m.SetContext(gone)
			} else {
				m.SetContext(ctx)
			}
			errs[i] = d.ResultPublisher().Publish(fmt.Sprintf("t.f.%d", i), m)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			require.ErrorIs(t, err, context.Canceled, "a wait that cannot succeed fails its own call")
			continue
		}
		require.NoError(t, err, "publish %d", i)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		st, err := ch.QueueDeclarePassive(q.Name, false, true, true, false, nil)
		return err == nil && st.Messages >= n-1
	}, "every confirmed result is in the bound queue")
}
