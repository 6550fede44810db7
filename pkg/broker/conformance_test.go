package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// The driver conformance suite: one table of behaviours of the Driver
// contract (package doc), run against each driver on the real broker.
// Where the contract lets the drivers differ, driverTraits says how.

// driverHarness opens drivers of one kind on one test's own lanes.
type driverHarness struct {
	traits driverTraits
	// open starts a driver, as one process would; drivers of one harness
	// share the lanes (and, on Redis, the consumer group). Closed when
	// the test ends.
	open func(t *testing.T) Driver
	// lane names a lane of the test's own, removed when the test ends.
	lane func(t *testing.T, name string) string
	// writeUndecodable writes to lane, behind the driver's back, messages
	// it cannot decode, and returns how many.
	writeUndecodable func(t *testing.T, lane string) int
	// kill makes d's consumers dead to the broker without a clean stop:
	// the amqp driver's consumer connection closes (as when the process
	// dies); the redisstream driver's heartbeat stops.
	kill func(t *testing.T, d Driver)
}

type driverTraits struct {
	name string
	// countsUnacked: Depths counts delivered, unacknowledged messages in
	// the backlog (RabbitMQ's queue.declare reports ready messages only).
	countsUnacked bool
	// prefetches: a process's consumer of a lane holds more deliveries
	// than its Subscribe calls are handling (the amqp driver's prefetch
	// window), so what it prefetched is not in the backlog of a driver
	// that does not count unacknowledged messages.
	prefetches bool
	// trimsAcked: Trim deletes acknowledged entries (Redis streams keep
	// them; RabbitMQ deletes a message when it is acked).
	trimsAcked bool
	// deletesHeldLanes: DeleteLane deletes a lane whose only message is
	// delivered and unacknowledged (RabbitMQ's if-empty counts ready
	// messages only; the ledger's lease brings the task back, decision
	// 0006).
	deletesHeldLanes bool
}

func TestDriverConformanceAMQP(t *testing.T) {
	t.Parallel()
	url := testkit.RequireAMQP(t)
	h := driverHarness{
		traits: driverTraits{name: DriverAMQP, prefetches: true, deletesHeldLanes: true},
		open: func(t *testing.T) Driver {
			d, err := New(Config{Driver: DriverAMQP, AMQPURL: url, Logger: testkit.Logger(t, slog.LevelWarn)})
			require.NoError(t, err)
			t.Cleanup(func() { _ = d.Close() })
			testkit.Eventually(t, 10*time.Second, func() bool { return d.Ping(context.Background()) == nil }, "connected")
			return d
		},
		lane: func(t *testing.T, name string) string {
			lane := testkit.UniqueName("tltest.lane." + name)
			t.Cleanup(func() { testkit.PurgeQueues(t, lane) })
			return lane
		},
		writeUndecodable: func(t *testing.T, lane string) int {
			conn, err := amqp.Dial(url)
			require.NoError(t, err)
			defer conn.Close()
			ch, err := conn.Channel()
			require.NoError(t, err)
			require.NoError(t, ch.Confirm(false))
			// Not a Watermill message: no uuid header or message id, and
			// headers that are not strings (watermill-amqp's marshaler
			// rejects those and nacks the delivery forever).
			ctx := context.Background()
			for _, p := range []amqp.Publishing{
				{Body: []byte("not a task"), Headers: amqp.Table{"attempt": int32(3), "x-death": []any{amqp.Table{"count": int64(2)}}}},
				{Body: []byte{0xff, 0xfe}},
			} {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", lane, true, false, p)
				require.NoError(t, err)
				ok, err := dc.WaitContext(ctx)
				require.NoError(t, err)
				require.True(t, ok)
			}
			return 2
		},
		kill: func(t *testing.T, d Driver) {
			require.NoError(t, d.(*amqpDriver).subConn.Connection().Close())
		},
	}
	runDriverSuite(t, h)
}

func TestDriverConformanceRedisStream(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	opt, err := redis.ParseURL(testkit.RedisURL())
	require.NoError(t, err)
	group := prefix + ":dispatchers"
	t.Cleanup(func() {
		// DeclareLanes made the (shared) quarantine stream and a group on
		// it: leave no trace.
		ctx := context.Background()
		_ = rdb.XGroupDestroy(ctx, QuarantineTopic, group).Err()
		if groups, _ := rdb.XInfoGroups(ctx, QuarantineTopic).Result(); len(groups) == 0 && rdb.XLen(ctx, QuarantineTopic).Val() == 0 {
			_ = rdb.Del(ctx, QuarantineTopic).Err()
		}
	})
	h := driverHarness{
		traits: driverTraits{name: DriverRedisStream, countsUnacked: true, trimsAcked: true},
		open: func(t *testing.T) Driver {
			d, err := New(Config{Driver: DriverRedisStream, Redis: opt, ConsumerGroup: group, Logger: testkit.Logger(t, slog.LevelWarn)})
			require.NoError(t, err)
			t.Cleanup(func() { _ = d.Close() }) // CloseEndsConsumers checks its error
			return d
		},
		lane: func(_ *testing.T, name string) string {
			return testkit.UniqueName(prefix + ":lane." + name) // deleted with the prefix
		},
		writeUndecodable: func(t *testing.T, lane string) int {
			ctx := context.Background()
			for _, values := range []map[string]any{
				{"data": "written by something else"},
				{fieldUUID: "u-1", fieldMetadata: "{not json", fieldPayload: "x"},
			} {
				require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: lane, Values: values}).Err())
			}
			return 2
		},
		kill: func(_ *testing.T, d Driver) {
			d.(*redisStreamDriver).live.Close()
		},
	}
	runDriverSuite(t, h)
}

// runDriverSuite runs every behaviour of the Driver contract against the
// drivers h opens. The behaviours run in parallel, each on lanes of its own.
func runDriverSuite(t *testing.T, h driverHarness) {
	tr := h.traits
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t)
		})
	}
	ctx := context.Background()

	run("NameAndPing", func(t *testing.T) {
		d := h.open(t)
		require.Equal(t, tr.name, d.Name())
		require.NoError(t, d.Ping(ctx))
	})

	run("DeclareLanesIsIdempotentAndMakesTheQuarantine", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "declared")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		require.NoError(t, d.DeclareLanes(ctx, lane), "declaring again")
		depths, err := d.Depths(ctx, lane, QuarantineTopic)
		require.NoError(t, err)
		require.Contains(t, depths, lane)
		require.Contains(t, depths, QuarantineTopic)
	})

	run("PublishReturnsOnceTheBrokerHoldsTheMessage", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "confirm")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1", "m-2", "m-3")
		// No waiting: a publish that returned is in the lane.
		requireBacklog(t, d, lane, 3)
	})

	run("DeliversWhatWasPublishedAndAckRemovesIt", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "deliver")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		m := message.NewMessage("m-1", []byte("payload \x00\xff"))
		m.Metadata.Set(taskmsg.KeyTenant, "acme")
		m.Metadata.Set("ce_type", "com.example.hello")
		m.SetContext(ctx)
		require.NoError(t, d.Publisher().Publish(lane, m))

		ch := subscribe(t, d, lane)
		got := receive(t, ch)
		require.Equal(t, m.UUID, got.UUID)
		require.Equal(t, []byte(m.Payload), []byte(got.Payload))
		require.Equal(t, "acme", got.Metadata.Get(taskmsg.KeyTenant))
		require.Equal(t, "com.example.hello", got.Metadata.Get("ce_type"))
		require.Empty(t, got.Metadata.Get(taskmsg.KeyUndecodable))
		got.Ack()
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, d, lane) == 0 }, "the acked message leaves the lane")
		requireNothing(t, ch)
	})

	run("OneUnackedMessagePerConsumer", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "one")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1", "m-2")
		ch := subscribe(t, d, lane)
		first := receive(t, ch)
		requireNothing(t, ch)
		first.Ack()
		second := receive(t, ch)
		require.NotEqual(t, first.UUID, second.UUID)
		second.Ack()
	})

	run("SlotsHandleAtOnceOnOneConsumerAndAckInAnyOrder", func(t *testing.T) {
		const n = 8
		d := h.open(t)
		lane := h.lane(t, "slots")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		chs := make([]<-chan *message.Message, n)
		ids := make([]string, n)
		for i := range n {
			chs[i] = subscribe(t, d, lane)
			ids[i] = fmt.Sprintf("m-%d", i)
		}
		publish(t, d, lane, ids...)
		// Each slot holds one, none acked: n messages in flight at once.
		held := make([]*message.Message, n)
		seen := map[string]bool{}
		for i, ch := range chs {
			held[i] = receive(t, ch)
			seen[held[i].UUID] = true
		}
		require.Len(t, seen, n, "%d distinct messages in flight", n)
		// The broker sees one consumer, not one per slot.
		testkit.Eventually(t, 10*time.Second, func() bool {
			depths, err := d.Depths(ctx, lane)
			require.NoError(t, err)
			return depths[lane].Consumers == 1
		}, "one consumer for %d slots", n)
		// Acked in the reverse of the order they were taken.
		for i := n - 1; i >= 0; i-- {
			held[i].Ack()
		}
		// Every ack reached the broker: once the consumer is gone (its
		// unacked deliveries back in the lane), nothing is left.
		require.NoError(t, d.Close())
		other := h.open(t)
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, other, lane) == 0 }, "every message acked")
		requireBacklog(t, other, lane, 0)
	})

	run("NackRedelivers", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "nack")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1")
		ch := subscribe(t, d, lane)
		first := receive(t, ch)
		first.Nack()
		again := receive(t, ch)
		require.Equal(t, first.UUID, again.UUID)
		again.Ack()
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, d, lane) == 0 }, "acked after the redelivery")
		requireNothing(t, ch)
	})

	run("UndecodableMessagesAreDeliveredForQuarantine", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "junk")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		n := h.writeUndecodable(t, lane)
		ch := subscribe(t, d, lane)
		// Each reaches the handler (never dropped, never looping in the
		// driver), and the dispatcher's Decode rejects it, so it goes to
		// the quarantine and is acked.
		for range n {
			m := receive(t, ch)
			_, _, err := taskmsg.Parse(m)
			require.ErrorIs(t, err, taskmsg.ErrUndecodable, "message %s", m.UUID)
			m.Ack()
		}
		// The consumer lives on.
		publish(t, d, lane, "good")
		good := receive(t, ch)
		require.Equal(t, "good", good.UUID)
		good.Ack()
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, d, lane) == 0 }, "everything acked")
	})

	run("DeadConsumersMessagesAreTakenOver", func(t *testing.T) {
		dead, alive := h.open(t), h.open(t)
		lane := h.lane(t, "takeover")
		require.NoError(t, dead.DeclareLanes(ctx, lane))
		publish(t, dead, lane, "m-1")
		held := receive(t, subscribe(t, dead, lane))
		h.kill(t, dead)
		got := receive(t, subscribe(t, alive, lane))
		require.Equal(t, held.UUID, got.UUID)
		got.Ack()
		held.Ack() // what the dead process would never do; lets its Close finish
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, alive, lane) == 0 }, "acked by the consumer that took it over")
	})

	run("DepthsCountBacklogAndConsumers", func(t *testing.T) {
		d := h.open(t)
		busy, empty, missing := h.lane(t, "busy"), h.lane(t, "empty"), h.lane(t, "missing")
		require.NoError(t, d.DeclareLanes(ctx, busy, empty))
		publish(t, d, busy, "m-1", "m-2", "m-3")
		depths, err := d.Depths(ctx, busy, empty, missing)
		require.NoError(t, err)
		require.Equal(t, map[string]LaneDepth{busy: {Backlog: 3}, empty: {}}, depths, "a lane that does not exist is left out")

		ch1, ch2 := subscribe(t, d, busy), subscribe(t, d, busy)
		held := []*message.Message{receive(t, ch1), receive(t, ch2)}
		// Two Subscribe calls in one process are one consumer.
		wantBacklog, wantConsumers := int64(1), 1
		switch {
		case tr.countsUnacked:
			wantBacklog = 3
		case tr.prefetches:
			wantBacklog = 0
		}
		testkit.Eventually(t, 10*time.Second, func() bool {
			depths, err := d.Depths(ctx, busy)
			require.NoError(t, err)
			return depths[busy] == LaneDepth{Backlog: wantBacklog, Consumers: wantConsumers}
		}, "backlog %d and %d consumers with 2 of 3 messages delivered", wantBacklog, wantConsumers)
		for _, m := range held {
			m.Ack()
		}
		receiveAny(t, ch1, ch2).Ack()
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, d, busy) == 0 }, "all acked")
	})

	run("DeleteLaneOnlyWhenEmpty", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "delete")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1")
		deleted, err := d.DeleteLane(ctx, lane)
		require.NoError(t, err)
		require.False(t, deleted, "a lane with a message is kept")
		requireBacklog(t, d, lane, 1)

		sctx, stop := context.WithCancel(ctx)
		defer stop()
		ch, err := d.Subscriber().Subscribe(sctx, lane)
		require.NoError(t, err)
		receive(t, ch).Ack()
		testkit.Eventually(t, 10*time.Second, func() bool {
			deleted, err := d.DeleteLane(ctx, lane)
			require.NoError(t, err)
			return deleted
		}, "the emptied lane deleted")
		// Its consumer does not bring it back.
		requireGone(t, d, lane)

		m := message.NewMessage("late", nil)
		m.SetContext(ctx)
		// A publish to it fails (RabbitMQ: mandatory publish; Redis:
		// NOMKSTREAM), so the ledger keeps the task and publishes it again
		// later, instead of leaving it on a lane nothing reads.
		require.ErrorIs(t, d.Publisher().Publish(lane, m), ErrUnroutable)
		requireGone(t, d, lane)
		// Declared again (the tenant split off again), the lane is read by
		// the consumer that stayed on it.
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "again")
		got := receive(t, ch)
		require.Equal(t, "again", got.UUID)
		got.Ack()
		// A consumer whose context ends stops.
		stop()
		requireClosed(t, ch)
	})

	run("DeleteLaneOfAnUnackedMessage", func(t *testing.T) {
		// On RabbitMQ, deleting a queue under a consumer may close the
		// connection (504 CHANNEL_ERROR): the driver reconnects.
		d := h.open(t)
		lane := h.lane(t, "held")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1")
		ch := subscribe(t, d, lane)
		held := receive(t, ch)
		// Nothing is ready, but a handler holds the message.
		deleted, err := d.DeleteLane(ctx, lane)
		require.NoError(t, err)
		if tr.deletesHeldLanes {
			require.True(t, deleted, "RabbitMQ's if-empty ignores unacked messages")
			held.Ack() // goes nowhere
			requireGone(t, d, lane)
			return
		}
		require.False(t, deleted, "a lane with an unacked message is kept")
		held.Ack()
		testkit.Eventually(t, 10*time.Second, func() bool {
			deleted, err := d.DeleteLane(ctx, lane)
			require.NoError(t, err)
			return deleted
		}, "deleted once the message is acked")
	})

	run("TrimFreesOnlyAcknowledgedMessages", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "trim")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1", "m-2", "m-3")
		n, err := d.Trim(ctx, lane)
		require.NoError(t, err)
		require.Zero(t, n, "nothing acked yet")
		ch := subscribe(t, d, lane)
		receive(t, ch).Ack()
		receive(t, ch).Ack()
		third := receive(t, ch) // delivered, not acked
		if tr.trimsAcked {
			// Acks are sent in batches: trim until both are gone.
			var trimmed int64
			testkit.Eventually(t, 10*time.Second, func() bool {
				n, err := d.Trim(ctx, lane)
				require.NoError(t, err)
				trimmed += n
				return trimmed >= 2
			}, "the two acked entries trimmed")
			require.EqualValues(t, 2, trimmed)
		} else {
			n, err = d.Trim(ctx, lane)
			require.NoError(t, err)
			require.Zero(t, n)
		}
		if tr.countsUnacked {
			requireBacklog(t, d, lane, 1) // the unacked third is kept
		}
		third.Ack()
		testkit.Eventually(t, 10*time.Second, func() bool { return backlog(t, d, lane) == 0 }, "the third acked")
	})

	run("CloseEndsConsumers", func(t *testing.T) {
		d := h.open(t)
		lane := h.lane(t, "close")
		require.NoError(t, d.DeclareLanes(ctx, lane))
		publish(t, d, lane, "m-1")
		ch := subscribe(t, d, lane)
		receive(t, ch).Ack()
		require.NoError(t, d.Close())
		requireClosed(t, ch)
		_, err := d.Subscriber().Subscribe(ctx, lane)
		require.Error(t, err, "subscribing after Close")
	})

	run("ResultPublisherRoutesByKey", func(t *testing.T) {
		d := h.open(t)
		require.NoError(t, d.DeclareLanes(ctx))
		key := testkit.UniqueName("tltest") + ".fn.succeeded"
		m := message.NewMessage(testkit.UniqueName("result"), []byte(`{"status":"succeeded"}`))
		m.SetContext(ctx)
		read := readResults(t, tr.name, key)
		require.NoError(t, d.ResultPublisher().Publish(key, m))
		require.Contains(t, read(), m.UUID)
		require.NoError(t, d.ResultPublisher().Close(), "a no-op: the publisher is shared")
		require.NoError(t, d.Publisher().Close(), "a no-op: the publisher is shared")
		require.NoError(t, d.Ping(ctx))
	})
}

// readResults returns a function that reads the result published with
// routing key key, as text that holds its uuid: from a queue bound to the
// results exchange (amqp), or from the results stream (redisstream).
func readResults(t *testing.T, driver, key string) func() string {
	t.Helper()
	ctx := context.Background()
	if driver == DriverRedisStream {
		rdb, _ := testkit.Redis(t)
		return func() string {
			ms, err := rdb.XRevRangeN(ctx, contracts.ResultsExchange, "+", "-", 1000).Result()
			require.NoError(t, err)
			// Whatever the entry's field names, it carries the routing
			// key and the uuid.
			for _, m := range ms {
				if entry := fmt.Sprint(m.Values); strings.Contains(entry, key) {
					_ = rdb.XDel(ctx, contracts.ResultsExchange, m.ID).Err()
					return entry
				}
			}
			t.Fatalf("no result with routing key %s on the results stream", key)
			return ""
		}
	}
	conn, err := amqp.Dial(testkit.AMQPURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q.Name, key, contracts.ResultsExchange, false, nil))
	return func() string {
		var d amqp.Delivery
		testkit.Eventually(t, 10*time.Second, func() bool {
			var ok bool
			d, ok, err = ch.Get(q.Name, true)
			require.NoError(t, err)
			return ok
		}, "the result in a queue bound with its routing key")
		return fmt.Sprint(d.MessageId, d.Headers)
	}
}

func publish(t *testing.T, d Driver, lane string, uuids ...string) {
	t.Helper()
	for _, id := range uuids {
		m := message.NewMessage(id, []byte(id))
		m.SetContext(context.Background())
		require.NoError(t, d.Publisher().Publish(lane, m))
	}
}

// subscribe adds a consumer of lane until the test ends.
func subscribe(t *testing.T, d Driver, lane string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := d.Subscriber().Subscribe(ctx, lane)
	require.NoError(t, err)
	return ch
}

// requireNothing fails if ch delivers a message within a short look (a
// bounded wait for something that must not come).
func requireNothing(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s", m.UUID)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// requireClosed waits for ch to close (a consumer that ended).
func requireClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool {
		select {
		case _, ok := <-ch:
			return !ok
		default:
			return false
		}
	}, "the consumer's channel closed")
}

// receiveAny returns the next message of either channel.
func receiveAny(t *testing.T, a, b <-chan *message.Message) *message.Message {
	t.Helper()
	var m *message.Message
	select {
	case m = <-a:
	case m = <-b:
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	require.NotNil(t, m, "subscription closed")
	return m
}

func backlog(t *testing.T, d Driver, lane string) int64 {
	t.Helper()
	depths, err := d.Depths(context.Background(), lane)
	require.NoError(t, err)
	dep, ok := depths[lane]
	require.True(t, ok, "lane %s exists", lane)
	return dep.Backlog
}

func requireBacklog(t *testing.T, d Driver, lane string, want int64) {
	t.Helper()
	require.Equal(t, want, backlog(t, d, lane), "backlog of %s", lane)
}

// requireGone checks that lane does not exist, now and for a while (a
// consumer that would declare it again does so within milliseconds).
func requireGone(t *testing.T, d Driver, lane string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		depths, err := d.Depths(context.Background(), lane)
		require.NoError(t, err)
		require.NotContains(t, depths, lane, "the deleted lane exists again")
		time.Sleep(50 * time.Millisecond) // polling a state that must not change
	}
}
