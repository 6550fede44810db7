package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// These tests run the notifier against the real Redis (testkit.Redis: a key
// prefix of the test's own, deleted afterwards) with a fake result
// publisher.

type testBundle struct {
	rdb     *redis.Client // the test's own client
	opts    *redis.Options
	stream  string
	base    string
	ledger  *ledger.Ledger
	pub     *fakePublisher
	metrics *metrics.Metrics
	// trips counts writes on the notifier's connections: one per command
	// or pipeline, i.e. Redis round trips.
	trips atomic.Int64
	log   *slog.Logger
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return setupLayout(t, testkit.LedgerPartitions())
}

// setupLayout is setup with the ledger's partitions (0: the legacy key
// layout).
func setupLayout(t *testing.T, partitions int) *testBundle {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	b := &testBundle{
		rdb:     rdb,
		ledger:  ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: partitions}),
		pub:     newFakePublisher(),
		metrics: metrics.New(),
		log:     testkit.Logger(t, slog.LevelInfo),
	}
	// Entries go to one partition's stream (acme's); the notifier reads
	// every partition's.
	b.stream, b.base = b.ledger.OutboxStream("acme"), b.ledger.OutboxBase()
	opts, err := redis.ParseURL(testkit.RedisURL())
	require.NoError(t, err)
	testkit.CountWrites(opts, &b.trips)
	b.opts = opts
	return b
}

// start runs a notifier until the test ends (or the test closes it).
func (b *testBundle) start(t *testing.T, consumers int, subs ...Subscription) *Notifier {
	t.Helper()
	n, err := New(Config{
		Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Subscriptions: subs,
		Metrics: b.metrics, Logger: b.log, Consumers: consumers, SinkBackoff: 10 * time.Millisecond,
	})
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, n.Close())
		require.NoError(t, <-ran)
	})
	select {
	case <-n.Running():
	case err := <-ran:
		t.Fatalf("notifier stopped at once: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("notifier not running within 10s")
	}
	return n
}

// addResults appends count terminal outbox entries of tasks <name>-<i> and
// returns their result event ids.
func (b *testBundle) addResults(t *testing.T, name string, count int) []string {
	t.Helper()
	ctx := context.Background()
	pipe := b.rdb.Pipeline()
	ids := make([]string, count)
	for i := range count {
		id := fmt.Sprintf("%s-%d", name, i)
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: b.stream, Values: map[string]any{
			"id": id, "tenant": "acme", "function": "work", "state": "succeeded",
			"finished": strconv.FormatInt(time.Now().UnixMicro(), 10),
		}})
		ids[i] = id + ".succeeded"
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	return ids
}

// group is the notifiers' group of the outbox: entries not yet read (lag)
// and read but not acknowledged (pending).
func (b *testBundle) group(t *testing.T) redis.XInfoGroup {
	t.Helper()
	gs, err := b.rdb.XInfoGroups(context.Background(), b.stream).Result()
	require.NoError(t, err)
	for _, g := range gs {
		if g.Name == ConsumerGroup {
			return g
		}
	}
	t.Fatalf("no group %s on %s", ConsumerGroup, b.stream)
	return redis.XInfoGroup{}
}

func (b *testBundle) drained(t *testing.T) bool {
	g := b.group(t)
	return g.Pending == 0 && g.Lag == 0
}

// TestNotifierBatches runs on the legacy layout, where the outbox's one
// stream holds every slot (with partitions each stream holds its share:
// TestNotifierSlotsPerStream).
func TestNotifierBatches(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setupLayout(t, 0)
	const total, consumers = 400, 16
	ids := b.addResults(t, "batch", total)
	// Two entries the notifier cannot use: acknowledged, never published.
	for _, v := range []map[string]any{{"id": "half", "state": "running"}, {"junk": "x"}} {
		require.NoError(t, b.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: b.stream, Values: v}).Err())
	}
	sink := newSink(t)
	release := b.pub.holdAll()

	b.start(t, consumers, Subscription{Name: "all", Sink: sink.srv.URL})

	// A whole batch is published at once: every slot holds a result whose
	// publish waits.
	testkit.Eventually(t, 10*time.Second, func() bool { return b.pub.inFlight() == consumers },
		"%d publishes in flight at once (have %d)", consumers, b.pub.inFlight())
	release()

	testkit.Eventually(t, 30*time.Second, func() bool { return b.drained(t) },
		"every entry read and acknowledged (group: %+v)", b.group(t))
	testkit.Eventually(t, 10*time.Second, func() bool { return sink.count() == total },
		"every result delivered to the sink (have %d)", sink.count())
	for _, id := range ids {
		require.Equal(t, 1, b.pub.published(id), "publishes of %s", id)
		require.Equal(t, 1, sink.got(id), "sink deliveries of %s", id)
	}
	require.Equal(t, total, b.pub.total())
	require.Equal(t, float64(total), counterValue(t, b.metrics.ResultsPublished.WithLabelValues("ok")))

	// watermill-redisstream made two round trips per entry (XREADGROUP
	// COUNT 1, XACK); batches make it a fraction of one.
	trips := b.trips.Load()
	t.Logf("%d Redis round trips for %d outbox entries (%.3f per entry), heartbeats and claim rounds included", trips, total+2, float64(trips)/float64(total+2))
	require.Less(t, trips, int64(total/2), "round trips")
}

func TestNotifierRetriesFailedPublish(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setup(t)
	ids := b.addResults(t, "retry", 20)
	flaky := ids[7]
	b.pub.failNext(flaky, 2)

	b.start(t, 4)

	errs := b.metrics.ResultsPublished.WithLabelValues("error")
	testkit.Eventually(t, 10*time.Second, func() bool { return counterValue(t, errs) >= 1 }, "a failed publish")
	// While it fails, the entry stays pending (not acknowledged, not lost).
	pending, err := b.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: b.stream, Group: ConsumerGroup, Start: "-", End: "+", Count: 100,
	}).Result()
	require.NoError(t, err)
	require.NotEmpty(t, pending, "the failed entry is pending")

	testkit.Eventually(t, 20*time.Second, func() bool { return b.pub.published(flaky) == 1 && b.drained(t) },
		"the failed result published on a later attempt and everything acknowledged (group: %+v)", b.group(t))
	require.Equal(t, float64(2), counterValue(t, errs))
	for _, id := range ids {
		require.Equal(t, 1, b.pub.published(id), "publishes of %s", id)
	}
}

func TestNotifierTakesOverDeadConsumer(t *testing.T) {
	t.Parallel()
	for _, partitions := range []int{0, 4} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			t.Parallel()
			testTakesOverDeadConsumer(t, setupLayout(t, partitions))
		})
	}
}

// testTakesOverDeadConsumer: entries of one partition's stream pending on
// a consumer without a heartbeat are taken over.
func testTakesOverDeadConsumer(t *testing.T, b *testBundle) {
	ctx := context.Background()
	require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, b.stream, ConsumerGroup, "0").Err())
	ids := b.addResults(t, "takeover", 30)
	read := func(consumer string, count int64) {
		t.Helper()
		require.NoError(t, b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: ConsumerGroup, Consumer: consumer, Streams: []string{b.stream, ">"}, Count: count,
		}).Err())
	}
	// "dead" read 20 entries and never heartbeated; "alive" read 5 and
	// heartbeats (its heartbeat is an hour ahead, so it stays fresh for the
	// whole test). The last 5 are unread.
	read("dead", 20)
	read("alive", 5)
	require.NoError(t, b.rdb.HSet(ctx, b.base+":"+ConsumerGroup+":heartbeats",
		"alive", time.Now().Add(time.Hour).UnixMilli()).Err())

	n := b.start(t, 8)

	testkit.Eventually(t, 20*time.Second, func() bool {
		p, err := b.rdb.XPending(ctx, b.stream, ConsumerGroup).Result()
		return err == nil && p.Count == 5 && p.Consumers["alive"] == 5 && b.pub.total() == 25
	}, "the dead consumer's entries and the unread ones published and acknowledged (published %d)", b.pub.total())
	for _, id := range ids[:20] {
		require.Equal(t, 1, b.pub.published(id), "publishes of %s (was pending on the dead consumer)", id)
	}
	for _, id := range ids[20:25] {
		require.Zero(t, b.pub.published(id), "publishes of %s (pending on the live consumer)", id)
	}
	for _, id := range ids[25:] {
		require.Equal(t, 1, b.pub.published(id), "publishes of %s (unread)", id)
	}
	require.Equal(t, 5, int(b.group(t).Pending))
	require.NotEqual(t, "alive", n.live.Consumer())
}

// TestNotifierReadsEveryPartition: results recorded by the ledger for
// tenants of several partitions all reach the exchange and the sink; in the
// partitioned layout two partitions' entries with the same stream id are
// two deliveries.
func TestNotifierReadsEveryPartition(t *testing.T) {
	t.Parallel()
	for _, partitions := range []int{0, 4} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			t.Parallel()
			b := setupLayout(t, partitions)
			ctx := context.Background()
			var want []string
			for _, tenant := range []string{"a", "b", "c", "d"} {
				id := testkit.UniqueName(tenant)
				_, err := b.ledger.Create(ctx, []ledger.EventTasks{{
					Tenant: tenant, Event: contracts.EventRef{ID: id, Source: "/test", Type: "t"},
					Tasks: []ledger.NewTask{{ID: id, Function: "work", Message: []byte("m")}},
				}})
				require.NoError(t, err)
				cl, err := b.ledger.Claim(ctx, ledger.ClaimRequest{Tenant: tenant, ID: id, Function: "work", Owner: "d1", Lease: time.Minute})
				require.NoError(t, err)
				require.Equal(t, ledger.VerdictRun, cl.Verdict)
				ok, err := b.ledger.Finish(ctx, tenant, id, "work", cl.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
				require.NoError(t, err)
				require.True(t, ok)
				want = append(want, id+".succeeded")
			}
			if streams := b.ledger.OutboxStreams(); len(streams) > 1 {
				same := fmt.Sprintf("%d-0", time.Now().Add(time.Minute).UnixMilli()) // after every entry so far
				for i, stream := range streams[:2] {
					id := fmt.Sprintf("same-id-%d", i)
					require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: same, Values: map[string]any{
						"id": id, "tenant": "acme", "function": "work", "state": "succeeded",
					}}).Err())
					want = append(want, id+".succeeded")
				}
			}
			sink := newSink(t)
			b.start(t, 8, Subscription{Name: "all", Sink: sink.srv.URL})
			testkit.Eventually(t, 10*time.Second, func() bool { return sink.count() == len(want) },
				"every result delivered to the sink (have %d of %d)", sink.count(), len(want))
			for _, id := range want {
				require.Equal(t, 1, b.pub.published(id), "publishes of %s", id)
				require.Equal(t, 1, sink.got(id), "sink deliveries of %s", id)
			}
			for _, stream := range b.ledger.OutboxStreams() {
				testkit.Eventually(t, 10*time.Second, func() bool {
					p, err := b.rdb.XPending(ctx, stream, ConsumerGroup).Result()
					return err == nil && p.Count == 0
				}, "every entry of %s acknowledged", stream)
			}
		})
	}
}

// TestNotifierSlotsPerStream: Consumers is split between the partitions'
// streams, at least minSlotsPerPartition each, at most Consumers.
func TestNotifierSlotsPerStream(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ consumers, streams, want int }{
		{32, 1, 32}, {32, 4, 8}, {32, 64, minSlotsPerPartition}, {2, 4, 2}, {256, 64, 4}, {30, 4, 8},
	} {
		n := &Notifier{cfg: Config{Consumers: c.consumers}, streams: make([]string, c.streams)}
		require.Equal(t, c.want, n.slotsPerStream(), "%d consumers, %d streams", c.consumers, c.streams)
	}
}

// TestNotifierCloseDrains runs on the legacy layout (a full batch of one
// stream is Consumers entries).
func TestNotifierCloseDrains(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setupLayout(t, 0)
	const total, consumers = 40, 8
	ids := b.addResults(t, "drain", total)
	release := b.pub.holdAll()

	n, err := New(Config{Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: b.log, Consumers: consumers})
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	testkit.Eventually(t, 10*time.Second, func() bool { return b.pub.inFlight() == consumers }, "a full batch in flight")

	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	testkit.Eventually(t, 5*time.Second, func() bool {
		select {
		case <-n.stop:
			return true
		default:
			return false
		}
	}, "Close started")
	release()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(40 * time.Second):
		t.Fatal("Close did not return")
	}
	require.NoError(t, <-ran)

	// What was in flight was published and acknowledged; nothing else was
	// read; the consumer left the group.
	require.Equal(t, consumers, b.pub.total())
	g := b.group(t)
	require.Zero(t, g.Pending)
	require.Equal(t, int64(total-consumers), g.Lag)
	cs, err := b.rdb.XInfoConsumers(context.Background(), b.stream, ConsumerGroup).Result()
	require.NoError(t, err)
	require.Empty(t, cs, "consumers left in the group")

	// The next notifier sends the rest, each result once in all.
	b.start(t, consumers)
	testkit.Eventually(t, 20*time.Second, func() bool { return b.drained(t) }, "the rest read and acknowledged")
	for _, id := range ids {
		require.Equal(t, 1, b.pub.published(id), "publishes of %s", id)
	}
}

func TestNotifierConfig(t *testing.T) {
	t.Parallel()
	_, err := New(Config{})
	require.ErrorContains(t, err, "missing Ledger")
	require.ErrorContains(t, err, "missing Redis")
	require.ErrorContains(t, err, "missing ResultPublisher")

	b := setup(t)
	for _, sink := range []string{"ftp://u:pa55@host/x", "http://u:pa55@[::1/x", "/relative?token=pa55"} {
		_, err = New(Config{
			Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub,
			Subscriptions: []Subscription{{Name: "s", Sink: sink}},
		})
		require.ErrorContains(t, err, `subscription "s": sink is not an http:// or https:// URL`, sink)
		require.NotContains(t, err.Error(), "pa55", "the error keeps the sink's credentials out")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// fakePublisher records result publishes by message UUID (the result
// event id). Publishes can be held until released, and made to fail.
type fakePublisher struct {
	mu       sync.Mutex
	byID     map[string]int
	failures map[string]int
	hold     chan struct{}
	inflight int
}

func newFakePublisher() *fakePublisher {
	return &fakePublisher{byID: map[string]int{}, failures: map[string]int{}}
}

// holdAll makes publishes wait until the returned func is called.
func (p *fakePublisher) holdAll() func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	p.hold = ch
	return func() {
		p.mu.Lock()
		p.hold = nil
		p.mu.Unlock()
		close(ch)
	}
}

// failNext makes the next times publishes of id fail.
func (p *fakePublisher) failNext(id string, times int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures[id] = times
}

func (p *fakePublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	p.inflight++
	hold := p.hold
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-msgs[0].Context().Done():
			return msgs[0].Context().Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		if p.failures[m.UUID] > 0 {
			p.failures[m.UUID]--
			return errors.New("broker unavailable")
		}
	}
	for _, m := range msgs {
		p.byID[m.UUID]++
	}
	return nil
}

func (p *fakePublisher) Close() error { return nil }

func (p *fakePublisher) inFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inflight
}

func (p *fakePublisher) published(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byID[id]
}

func (p *fakePublisher) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byID)
}

// sink counts result events by Ce-Id.
type sink struct {
	srv  *httptest.Server
	mu   sync.Mutex
	byID map[string]int
}

func newSink(t *testing.T) *sink {
	s := &sink{byID: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.byID[r.Header.Get("Ce-Id")]++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

func (s *sink) got(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

// TestNotifierLogsSinkDeliveriesOnly: publishing a task's result event on
// the results exchange, which every task has, is counted and not appended
// to the task's log (one script call per task); a delivery to a sink is.
func TestNotifierLogsSinkDeliveriesOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	finished := func(b *testBundle) string {
		id := testkit.UniqueName("logged")
		_, err := b.ledger.Create(ctx, []ledger.EventTasks{{
			Tenant: "acme", Event: contracts.EventRef{ID: id, Source: "/test", Type: "t"},
			Tasks: []ledger.NewTask{{ID: id, Function: "work", Message: []byte("m")}},
		}})
		require.NoError(t, err)
		cl, err := b.ledger.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "work", Owner: "d1", Lease: time.Minute})
		require.NoError(t, err)
		ok, err := b.ledger.Finish(ctx, "acme", id, "work", cl.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.True(t, ok)
		return id
	}
	delivered := func(b *testBundle, id string) int {
		entries, err := b.ledger.Log(ctx, "acme", id)
		require.NoError(t, err)
		n := 0
		for _, e := range entries {
			if e.Kind == contracts.LogDelivered {
				n++
			}
		}
		return n
	}

	b := setup(t)
	id := finished(b)
	b.start(t, 4)
	testkit.Eventually(t, 10*time.Second, func() bool { return b.pub.published(id+".succeeded") == 1 }, "the result published")
	testkit.Eventually(t, 10*time.Second, func() bool {
		p, err := b.rdb.XPending(ctx, b.stream, ConsumerGroup).Result()
		return err == nil && p.Count == 0
	}, "the outbox entry acknowledged")
	require.Zero(t, delivered(b, id), "the exchange publish is not in the task's log")

	b = setup(t)
	id = finished(b)
	sink := newSink(t)
	b.start(t, 4, Subscription{Name: "all", Sink: sink.srv.URL})
	testkit.Eventually(t, 10*time.Second, func() bool { return delivered(b, id) == 1 }, "the sink's delivery in the task's log")
}
