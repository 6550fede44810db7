package streamgroup

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// These tests run Reader against the real Redis, on streams under a
// key prefix of the test's own.

const testGroup = "readers"

// readerRig is a reader of streams with its own counted client.
type readerRig struct {
	rdb     *redis.Client // the test's own client
	streams []string
	trips   atomic.Int64 // round trips of the reader's client
	mu      sync.Mutex
	handled map[string]int // entry "stream/id" -> times handled
}

func newReaderRig(t *testing.T, streams, entriesEach int) *readerRig {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	rig := &readerRig{rdb: rdb, handled: map[string]int{}}
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for i := range streams {
		s := fmt.Sprintf("%s:lane-%02d", prefix, i)
		rig.streams = append(rig.streams, s)
		pipe.XGroupCreateMkStream(ctx, s, testGroup, "0")
		for j := range entriesEach {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: s, Values: map[string]any{"n": j}})
		}
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	return rig
}

// run starts a reader with slots per stream and handle (nil: Done at once)
// until the test ends.
func (rig *readerRig) run(t *testing.T, slots int, handle func(stream string, m redis.XMessage) Outcome) *Reader {
	t.Helper()
	opt, err := redis.ParseURL(testkit.RedisURL())
	require.NoError(t, err)
	testkit.CountWrites(opt, &rig.trips)
	client := redis.NewClient(opt)
	// The heartbeat has a client of its own, so that trips counts reads
	// and acknowledgements only.
	beatOpt, _ := redis.ParseURL(testkit.RedisURL())
	beats := redis.NewClient(beatOpt)
	live := NewLiveness(beats, rig.streams[0]+":"+testGroup, ConsumerName(), time.Minute)
	r, err := NewReader(Config{
		Client: client, Group: testGroup, Live: live, What: "test streams",
		Logger: testkit.Logger(t, slog.LevelInfo), RetryWait: 50 * time.Millisecond,
		Handle: func(_ context.Context, stream string, m redis.XMessage) Outcome {
			rig.mu.Lock()
			rig.handled[stream+"/"+m.ID]++
			rig.mu.Unlock()
			if handle == nil {
				return Done
			}
			return handle(stream, m)
		},
	})
	require.NoError(t, err)
	for _, s := range rig.streams {
		r.AddSlots(s, slots)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		live.Close()
		_ = client.Close()
		_ = beats.Close()
	})
	return r
}

// settled reports whether every stream's group has read and acknowledged
// everything.
func (rig *readerRig) settled(t *testing.T) bool {
	for _, s := range rig.streams {
		gs, err := rig.rdb.XInfoGroups(context.Background(), s).Result()
		require.NoError(t, err)
		if len(gs) != 1 || gs[0].Lag != 0 || gs[0].Pending != 0 {
			return false
		}
	}
	return true
}

func (rig *readerRig) timesHandled() (entries, total int) {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	for _, n := range rig.handled {
		entries++
		total += n
	}
	return entries, total
}

func TestReaderReadsEveryStreamInOneRoundTrip(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	rig := newReaderRig(t, 16, 4)
	rig.run(t, 4, nil)
	testkit.Eventually(t, 10*time.Second, func() bool { return rig.settled(t) }, "all 64 entries read and acknowledged")
	entries, total := rig.timesHandled()
	require.Equal(t, 64, entries)
	require.Equal(t, 64, total, "each entry handled once")
	// A claim round, one read of all 16 streams, and the acknowledgements
	// (carried by the next reads or sent by the flusher): a few round trips
	// where a read and an ack per entry would be 128.
	require.LessOrEqual(t, rig.trips.Load(), int64(16), "round trips")
}

func TestReaderHoldsNoMoreThanItsSlots(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	rig := newReaderRig(t, 2, 10)
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	rig.run(t, 3, func(string, redis.XMessage) Outcome {
		n := inFlight.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		inFlight.Add(-1)
		return Done
	})
	testkit.Eventually(t, 10*time.Second, func() bool { return inFlight.Load() == 6 }, "3 entries of each of 2 streams in hand")
	close(release)
	testkit.Eventually(t, 10*time.Second, func() bool { return rig.settled(t) }, "all 20 entries acknowledged")
	require.Equal(t, int32(6), most.Load(), "never more than 3 slots per stream at once")
}

func TestReaderRetriesAndLeaves(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	rig := newReaderRig(t, 1, 2)
	var first sync.Map
	rig.run(t, 2, func(_ string, m redis.XMessage) Outcome {
		if _, seen := first.LoadOrStore(m.ID, true); !seen {
			return Retry
		}
		return Done
	})
	testkit.Eventually(t, 10*time.Second, func() bool { return rig.settled(t) }, "both entries acknowledged after a retry")
	entries, total := rig.timesHandled()
	require.Equal(t, 2, entries)
	require.Equal(t, 4, total, "each entry handled twice: Retry, then Done")

	// Leave: the entry stays pending on the reader's consumer.
	left := newReaderRig(t, 1, 1)
	left.run(t, 1, func(string, redis.XMessage) Outcome { return Leave })
	testkit.Eventually(t, 10*time.Second, func() bool {
		gs, err := left.rdb.XInfoGroups(context.Background(), left.streams[0]).Result()
		require.NoError(t, err)
		return gs[0].Lag == 0 && gs[0].Pending == 1
	}, "the entry read and left pending, not acknowledged")
}

func TestReaderTakesOverDeadConsumersOnEveryStream(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	rig := newReaderRig(t, 3, 2)
	ctx := context.Background()
	// A consumer without a heartbeat read every entry and died.
	for _, s := range rig.streams {
		_, err := rig.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: testGroup, Consumer: "ghost", Streams: []string{s, ">"}}).Result()
		require.NoError(t, err)
	}
	r := rig.run(t, 4, nil)
	testkit.Eventually(t, 15*time.Second, func() bool { return rig.settled(t) }, "the ghost's 6 entries taken over and acknowledged")
	entries, total := rig.timesHandled()
	require.Equal(t, 6, entries)
	require.Equal(t, 6, total)
	for _, s := range rig.streams {
		xps, err := rig.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: s, Group: testGroup, Start: "-", End: "+", Count: 10, Consumer: r.Consumer()}).Result()
		require.NoError(t, err)
		require.Empty(t, xps)
	}
}

func TestReaderReleasedEntryIsTakenByAClaimRound(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	rig := newReaderRig(t, 1, 1)
	var released atomic.Bool
	r := rig.run(t, 1, func(string, redis.XMessage) Outcome {
		if released.CompareAndSwap(false, true) {
			return Release
		}
		return Done
	})
	testkit.Eventually(t, 15*time.Second, func() bool { return rig.settled(t) }, "the released entry taken again and acknowledged")
	_, total := rig.timesHandled()
	require.Equal(t, 2, total, "handled, released, then handled again after a claim round")
	cs, err := rig.rdb.XInfoConsumers(context.Background(), rig.streams[0], testGroup).Result()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, c := range cs {
		names[c.Name] = true
		require.Zero(t, c.Pending, c.Name)
	}
	require.True(t, names[OrphanConsumer], "the entry went through %s", OrphanConsumer)
	require.True(t, names[r.Consumer()])
}

func TestReaderReleasesOnlyWhatItStillHolds(t *testing.T) {
	rig := newReaderRig(t, 1, 2)
	ctx := context.Background()
	s := rig.streams[0]
	// Both entries pending: the first on another consumer (it took the
	// entry over meanwhile), the second on the reader's.
	r := rig.run(t, 0, nil)
	first, err := rig.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: testGroup, Consumer: "other", Streams: []string{s, ">"}, Count: 1}).Result()
	require.NoError(t, err)
	second, err := rig.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: testGroup, Consumer: r.Consumer(), Streams: []string{s, ">"}, Count: 1}).Result()
	require.NoError(t, err)
	r.release(entryKey{s, first[0].Messages[0].ID})
	r.release(entryKey{s, second[0].Messages[0].ID})

	owner := func(id string) string {
		xps, err := rig.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: s, Group: testGroup, Start: id, End: id, Count: 1}).Result()
		require.NoError(t, err)
		require.Len(t, xps, 1)
		return xps[0].Consumer
	}
	require.Equal(t, "other", owner(first[0].Messages[0].ID), "an entry another consumer holds stays with it")
	require.Equal(t, OrphanConsumer, owner(second[0].Messages[0].ID), "the reader's own entry is released")
}
