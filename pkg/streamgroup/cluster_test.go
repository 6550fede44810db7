package streamgroup

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/keyslot"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// On a Redis Cluster a reader of streams in several slots (one XREADGROUP
// naming two slots is CROSSSLOT) reads every entry, those written before
// it started and those written while it polls, and acknowledges them.
func TestReaderOnCluster(t *testing.T) {
	cl := testkit.StartCluster(t, 3, 0)
	rdb := cl.Client()
	ctx := context.Background()
	var streams []string
	slots := map[int]bool{}
	for i := range 8 {
		s := fmt.Sprintf("tl:{p%d}:outbox", i)
		streams = append(streams, s)
		slots[keyslot.Of(s)] = true
		require.NoError(t, EnsureGroup(ctx, rdb, s, testGroup))
	}
	require.Greater(t, len(slots), 1)
	add := func(n int) {
		for _, s := range streams {
			for j := range n {
				require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: s, Values: map[string]any{"n": j}}).Err())
			}
		}
	}
	add(5)

	client := NewClient(nil, &redis.ClusterOptions{Addrs: cl.Addrs()}, 4)
	t.Cleanup(func() { _ = client.Close() })
	live := NewLiveness(client, "tl:readers", ConsumerName(), time.Minute)
	t.Cleanup(live.Close)
	var mu sync.Mutex
	handled := map[string]int{}
	r, err := NewReader(Config{
		Client: client, Group: testGroup, Live: live, What: "test streams", Logger: testkit.Logger(t, slog.LevelInfo),
		ClusterPoll: 10 * time.Millisecond,
		Handle: func(_ context.Context, stream string, m redis.XMessage) Outcome {
			mu.Lock()
			handled[stream+"/"+m.ID]++
			mu.Unlock()
			return Done
		},
	})
	require.NoError(t, err)
	require.True(t, r.cluster)
	for _, s := range streams {
		r.AddSlots(s, 3) // fewer than the backlog: several reads each
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })

	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(handled)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return count() == 5*len(streams) }, "every entry handled")
	add(2) // while the reader polls
	testkit.Eventually(t, 10*time.Second, func() bool { return count() == 7*len(streams) }, "every entry handled")
	testkit.Eventually(t, 10*time.Second, func() bool {
		for _, s := range streams {
			p, err := rdb.XPending(ctx, s, testGroup).Result()
			if err != nil || p.Count != 0 {
				return false
			}
		}
		return true
	}, "every entry acknowledged")
	mu.Lock()
	defer mu.Unlock()
	for k, n := range handled {
		require.Equal(t, 1, n, "%s handled once", k)
	}
}
