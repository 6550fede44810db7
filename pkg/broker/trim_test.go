package broker

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

func TestTrimAckedKeepsUnfinishedWork(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	ctx := context.Background()
	stream := prefix + ":lane"
	t.Cleanup(func() { rdb.Del(context.Background(), stream) })

	n, err := TrimAcked(ctx, rdb, stream)
	require.NoError(t, err)
	require.Zero(t, n, "a missing stream is fine")

	var ids []string
	for range 10 {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"v": "x"}}).Result()
		require.NoError(t, err)
		ids = append(ids, id)
	}
	n, err = TrimAcked(ctx, rdb, stream)
	require.NoError(t, err)
	require.Zero(t, n, "no group has read anything: nothing may go")

	for _, g := range []string{"fast", "slow"} {
		require.NoError(t, rdb.XGroupCreate(ctx, stream, g, "0").Err())
	}
	// fast reads 8 and acks all but the 4th; slow reads 6 and acks them all.
	read := func(g string, count int64) {
		_, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g, Consumer: "c", Streams: []string{stream, ">"}, Count: count}).Result()
		require.NoError(t, err)
	}
	read("fast", 8)
	read("slow", 6)
	for i := range 8 {
		if i != 3 {
			require.NoError(t, rdb.XAck(ctx, stream, "fast", ids[i]).Err())
		}
	}
	require.NoError(t, rdb.XAck(ctx, stream, "slow", ids[:6]...).Err())

	_, err = TrimAcked(ctx, rdb, stream)
	require.NoError(t, err)
	left, err := rdb.XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	// Everything from fast's pending 4th entry on remains; before it, every
	// group is done.
	var got []string
	for _, m := range left {
		got = append(got, m.ID)
	}
	require.Equal(t, ids[3:], got)

	require.True(t, lessID("9-0", "10-0"))
	require.True(t, lessID("10-2", "10-10"))
	require.False(t, lessID("10-10", "10-2"))
}
