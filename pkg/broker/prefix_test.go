package broker

import (
	"context"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func TestPrefixedNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, QuarantineTopic, QuarantineTopicFor(""))
	require.Equal(t, QuarantineTopic, QuarantineTopicFor(DefaultPrefix))
	require.Equal(t, contracts.ResultsExchange, contracts.ResultsExchangeFor(""))
	require.Equal(t, contracts.ResultsExchange, contracts.ResultsExchangeFor(DefaultPrefix))
	require.Equal(t, "blue.quarantine", QuarantineTopicFor("blue"))
	require.Equal(t, "blue.results", contracts.ResultsExchangeFor("blue"))
}

// A redisstream driver with a prefix declares its quarantine and publishes
// results under it, leaving the default names alone.
func TestRedisStreamPrefix(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	opt, err := redis.ParseURL(testkit.RedisURL())
	require.NoError(t, err)
	quarantine, results := QuarantineTopicFor(prefix), contracts.ResultsExchangeFor(prefix)
	ctx := context.Background()
	t.Cleanup(func() { _ = rdb.Del(ctx, quarantine, results).Err() })
	d, err := New(Config{Driver: DriverRedisStream, Redis: opt, ConsumerGroup: prefix + ":dispatchers", Prefix: prefix,
		Logger: testkit.Logger(t, slog.LevelInfo)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })

	require.NoError(t, d.DeclareLanes(ctx, prefix+":lane"))
	groups, err := rdb.XInfoGroups(ctx, quarantine).Result()
	require.NoError(t, err)
	require.Len(t, groups, 1)
	require.Equal(t, prefix+":dispatchers", groups[0].Name)

	m := message.NewMessage("r1", []byte(`{}`))
	m.SetContext(ctx)
	require.NoError(t, d.ResultPublisher().Publish("acme.work.succeeded", m))
	require.Equal(t, int64(1), rdb.XLen(ctx, results).Val())
	xs, err := rdb.XRange(ctx, results, "-", "+").Result()
	require.NoError(t, err)
	require.Equal(t, "acme.work.succeeded", xs[0].Values[FieldRoutingKey])
}
