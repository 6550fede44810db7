package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// fakeTrimmer records the lanes it is asked to trim.
type fakeTrimmer struct {
	mu    sync.Mutex
	calls [][]string
}

func (f *fakeTrimmer) Trim(_ context.Context, lanes ...string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, slices.Clone(lanes))
	return 0, nil
}

func (f *fakeTrimmer) last() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return nil, 0
	}
	return f.calls[len(f.calls)-1], len(f.calls)
}

// TestSchedulerTrims: a running scheduler with a Trim trims the lanes the
// table lists, and the results outbox (every partition's stream) of what
// its consumer group acknowledged (an entry delivered but not acknowledged
// stays); it stops with Run.
func TestSchedulerTrims(t *testing.T) {
	t.Parallel()
	for _, partitions := range []int{0, 4} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			t.Parallel()
			testSchedulerTrims(t, partitions)
		})
	}
}

func testSchedulerTrims(t *testing.T, partitions int) {
	rdb, prefix := testkit.Redis(t)
	ctx := context.Background()
	led := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: partitions})
	kept := map[string]string{}
	for _, outbox := range led.OutboxStreams() {
		for range 3 {
			require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: outbox, Values: []string{"k", "v"}}).Err())
		}
		require.NoError(t, rdb.XGroupCreate(ctx, outbox, "notifier", "0").Err())
		read, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "notifier", Consumer: "c", Streams: []string{outbox, ">"}, Count: 3}).Result()
		require.NoError(t, err)
		msgs := read[0].Messages
		require.Len(t, msgs, 3)
		require.NoError(t, rdb.XAck(ctx, outbox, "notifier", msgs[0].ID, msgs[1].ID).Err())
		kept[outbox] = msgs[2].ID
	}

	lanes := &fakeTrimmer{}
	s := New(Config{
		Ledger: led, Logger: slog.New(slog.DiscardHandler),
		Trim: &Trim{Broker: lanes, Lanes: func() []string { return []string{"lane.a", "lane.b"} }, Every: 10 * time.Millisecond},
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	testkit.Eventually(t, 5*time.Second, func() bool {
		got, _ := lanes.last()
		return slices.Equal(got, []string{"lane.a", "lane.b"})
	}, "the lanes trimmed")
	for outbox, id := range kept {
		testkit.Eventually(t, 5*time.Second, func() bool {
			entries, err := rdb.XRange(ctx, outbox, "-", "+").Result()
			return err == nil && len(entries) == 1 && entries[0].ID == id
		}, "the outbox stream %s keeps only its unacknowledged entry", outbox)
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	_, n := lanes.last()
	time.Sleep(50 * time.Millisecond) // five trim intervals: none may come after Run returned
	_, after := lanes.last()
	require.Equal(t, n, after, "trimming stops with Run")
}
