package streamgroup

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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

// xreadCounter counts, per stream, the XREADGROUP commands naming it.
type xreadCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *xreadCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *xreadCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.count(cmd); return next(ctx, cmd) }
}
func (c *xreadCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return next(ctx, cmds)
	}
}
func (c *xreadCounter) count(cmd redis.Cmder) {
	if !strings.EqualFold(cmd.Name(), "xreadgroup") {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasPrefix(s, "tl:{p") {
			c.n[s]++
		}
	}
}

func (c *xreadCounter) of(s string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[s]
}

// TestReaderOnClusterReadsHotStreams: on a cluster, while one stream of
// many has entries, rounds read that stream again at once and the idle
// ones only every ClusterPoll; before, every round read every stream
// (tens of XREADGROUPs per entry with 64 outbox partitions).
func TestReaderOnClusterReadsHotStreams(t *testing.T) {
	cl := testkit.StartCluster(t, 3, 0)
	rdb := cl.Client()
	ctx := context.Background()
	var streams []string
	for i := range 8 {
		s := fmt.Sprintf("tl:{p%d}:outbox", i)
		streams = append(streams, s)
		require.NoError(t, EnsureGroup(ctx, rdb, s, testGroup))
	}
	const entries = 600
	for j := range entries {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: streams[0], Values: map[string]any{"n": j}}).Err())
	}
	client := NewClient(nil, &redis.ClusterOptions{Addrs: cl.Addrs()}, 4)
	t.Cleanup(func() { _ = client.Close() })
	counter := &xreadCounter{n: map[string]int{}}
	client.AddHook(counter)
	live := NewLiveness(client, "tl:readers", ConsumerName(), time.Minute)
	t.Cleanup(live.Close)
	var handled atomic.Int64
	r, err := NewReader(Config{
		Client: client, Group: testGroup, Live: live, What: "test streams", Logger: testkit.Logger(t, slog.LevelInfo),
		ClusterPoll: 50 * time.Millisecond,
		Handle: func(context.Context, string, redis.XMessage) Outcome {
			handled.Add(1)
			return Done
		},
	})
	require.NoError(t, err)
	for _, s := range streams {
		r.AddSlots(s, 4) // a few entries per read: many rounds
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	testkit.Eventually(t, 20*time.Second, func() bool { return handled.Load() == entries }, "every entry handled")
	stop()
	<-done

	hot := counter.of(streams[0])
	t.Logf("XREADGROUPs naming the hot stream: %d; each idle one: %d", hot, counter.of(streams[1]))
	require.GreaterOrEqual(t, hot, entries/4, "the hot stream is read a few entries at a time")
	for _, s := range streams[1:] {
		require.Less(t, counter.of(s), hot/2, "idle stream %s is read on the polls, not every round (hot stream: %d reads)", s, hot)
	}
}
