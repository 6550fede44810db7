package broker

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// streamDriver opens a redisstream driver whose lanes and group are under
// a key prefix of the test's own.
func streamDriver(t *testing.T) (Driver, *redis.Client, func(string) string) {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	opt, err := redis.ParseURL(testkit.RedisURL())
	require.NoError(t, err)
	group := prefix + ":dispatchers"
	d, err := New(Config{Driver: DriverRedisStream, Redis: opt, ConsumerGroup: group, Logger: testkit.Logger(t, slog.LevelInfo)})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, d.Close())
		// DeclareLanes made the (shared) quarantine stream and a group on
		// it: leave no trace.
		ctx := context.Background()
		_ = rdb.XGroupDestroy(ctx, QuarantineTopic, group).Err()
		if groups, _ := rdb.XInfoGroups(ctx, QuarantineTopic).Result(); len(groups) == 0 && rdb.XLen(ctx, QuarantineTopic).Val() == 0 {
			_ = rdb.Del(ctx, QuarantineTopic).Err()
		}
	})
	return d, rdb, func(name string) string { return prefix + ":" + name }
}

func publishN(t *testing.T, d Driver, lane string, n int) {
	t.Helper()
	for i := range n {
		m := message.NewMessage(fmt.Sprintf("%s-%d", lane, i), []byte{byte(i)})
		m.SetContext(context.Background())
		require.NoError(t, d.Publisher().Publish(lane, m))
	}
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		require.NotNil(t, m, "subscription closed")
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

// Each Subscribe call is one consumer holding at most one unacknowledged
// message, even when the reader reads for other lanes' idle consumers in
// the same XREADGROUP.
func TestStreamLanesOneUnackedMessagePerConsumer(t *testing.T) {
	d, rdb, name := streamDriver(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	busy, idle := name("busy"), name("idle")
	require.NoError(t, d.DeclareLanes(ctx, busy, idle))
	publishN(t, d, busy, 8)
	for range 8 {
		_, err := d.Subscriber().Subscribe(ctx, idle)
		require.NoError(t, err)
	}
	ch, err := d.Subscriber().Subscribe(ctx, busy)
	require.NoError(t, err)

	first := receive(t, ch)
	select {
	case m := <-ch:
		t.Fatalf("a second message %s before the first was acked", m.UUID)
	case <-time.After(300 * time.Millisecond): // a bounded look for a message that must not come
	}
	pending, err := rdb.XPending(ctx, busy, name("dispatchers")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, pending.Count, "the reader read no more of the busy lane than its one consumer takes")
	first.Ack()
	second := receive(t, ch)
	require.NotEqual(t, first.UUID, second.UUID)
	second.Ack()
}

// A lane stream deleted while consumed (a retired dedicated lane) neither
// stops the other lanes nor comes back; once it is declared again its
// entries are read.
func TestStreamLanesSurviveADeletedLane(t *testing.T) {
	d, rdb, name := streamDriver(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kept, gone := name("kept"), name("gone")
	require.NoError(t, d.DeclareLanes(ctx, kept, gone))
	keptCh, err := d.Subscriber().Subscribe(ctx, kept)
	require.NoError(t, err)
	goneCh, err := d.Subscriber().Subscribe(ctx, gone)
	require.NoError(t, err)
	publishN(t, d, kept, 1)
	receive(t, keptCh).Ack() // the reader is reading both lanes

	require.NoError(t, rdb.Del(ctx, gone).Err())
	publishN(t, d, kept, 1)
	receive(t, keptCh).Ack()
	n, err := rdb.Exists(ctx, gone).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the deleted lane was not created again")

	// A publish does not make it again (NOMKSTREAM); declared again (the
	// tenant split off again), it is read by the consumer that stayed.
	require.NoError(t, d.DeclareLanes(ctx, gone))
	publishN(t, d, gone, 1)
	receive(t, goneCh).Ack()
}
