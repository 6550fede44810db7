package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// addTenantResults appends count succeeded outbox entries of tenant's tasks
// <tenant>-<name>-<i> and returns their result event ids.
func (b *testBundle) addTenantResults(t *testing.T, tenant, name string, count int) []string {
	t.Helper()
	ctx := context.Background()
	pipe := b.rdb.Pipeline()
	ids := make([]string, count)
	for i := range count {
		id := fmt.Sprintf("%s-%s-%d", tenant, name, i)
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: b.stream, Values: map[string]any{
			"id": id, "tenant": tenant, "function": "work", "state": "succeeded",
			"finished": strconv.FormatInt(time.Now().UnixMicro(), 10),
		}})
		ids[i] = id + ".succeeded"
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	return ids
}

// queued is how many deliveries the subscription's queue holds.
func (b *testBundle) queued(t *testing.T, subscription string) int64 {
	t.Helper()
	n, err := b.rdb.ZCard(context.Background(), b.base+":sink:{"+subscription+"}:due").Result()
	require.NoError(t, err)
	return n
}

// gatedSink answers 204 once opened; until then it never answers (a
// request waits until the client gives up) or, with fail set, answers 500.
type gatedSink struct {
	srv      *httptest.Server
	open     chan struct{}
	openOnce sync.Once
	fail     bool

	mu       sync.Mutex
	requests int
	byID     map[string]int // requests
	ok       map[string]int // answered 204
}

func newGatedSink(t *testing.T, fail bool) *gatedSink {
	s := &gatedSink{open: make(chan struct{}), ok: map[string]int{}, byID: map[string]int{}, fail: fail}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests++
		s.byID[r.Header.Get("Ce-Id")]++
		s.mu.Unlock()
		select {
		case <-s.open:
		default:
			if s.fail {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			select {
			case <-s.open:
			case <-r.Context().Done():
				return
			}
		}
		s.mu.Lock()
		s.ok[r.Header.Get("Ce-Id")]++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(func() {
		s.answer()
		s.srv.Close()
	})
	return s
}

// answer makes the sink answer 204 from now on (waiting requests too).
func (s *gatedSink) answer() { s.openOnce.Do(func() { close(s.open) }) }

func (s *gatedSink) requestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// delivered reports whether every id was answered 204 at least once.
func (s *gatedSink) delivered(ids []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.ok[id] == 0 {
			return false
		}
	}
	return true
}

// mostAsked is the most requests made for one event.
func (s *gatedSink) mostAsked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	most := 0
	for _, n := range s.byID {
		most = max(most, n)
	}
	return most
}

func (s *gatedSink) okCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ok)
}

// TestNotifierHangingSinkDelaysOnlyItself: 12 results for a sink that
// never answers must not hold back other tenants' results, neither on the
// results exchange nor to a healthy sink; the hanging sink's deliveries are
// retried and delivered once it answers.
func TestNotifierHangingSinkDelaysOnlyItself(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setup(t)
	hanging := newGatedSink(t, false)
	healthy := newSink(t)
	const sinkTimeout = 3 * time.Second

	n, err := New(Config{
		Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: b.log,
		Consumers: 8,
		Subscriptions: []Subscription{
			{Name: "slow", Sink: hanging.srv.URL, Tenants: []string{"slow"}},
			{Name: "all", Sink: healthy.srv.URL},
		},
		SinkTimeout: sinkTimeout, SinkConcurrency: 4, SinkBackoff: 50 * time.Millisecond,
		SinkBreakerFailures: 5, SinkBreakerCooldown: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, n.Close())
		require.NoError(t, <-ran)
	})
	<-n.Running()

	slow := b.addTenantResults(t, "slow", "r", 12)
	testkit.Eventually(t, 5*time.Second, func() bool { return hanging.requestCount() > 0 }, "the hanging sink asked")
	var others []string
	for _, tenant := range []string{"acme", "globex", "initech"} {
		others = append(others, b.addTenantResults(t, tenant, "r", 8)...)
	}
	all := append(append([]string{}, slow...), others...)

	// Well before the hanging sink's timeout: every result is on the
	// exchange and at the healthy sink.
	start := time.Now()
	testkit.Eventually(t, sinkTimeout/2, func() bool {
		for _, id := range all {
			if b.pub.published(id) == 0 || healthy.got(id) == 0 {
				return false
			}
		}
		return true
	}, "every result published and at the healthy sink (published %d, healthy sink %d of %d)", b.pub.total(), healthy.count(), len(all))
	t.Logf("other results arrived %s after the first hanging request", time.Since(start))
	require.Zero(t, hanging.okCount(), "the hanging sink answered nothing yet")

	// The hanging sink's deliveries time out and are scheduled again; once
	// it answers, they are tried again and delivered.
	retries := b.metrics.SinkDeliveries.WithLabelValues("slow", "retry")
	testkit.Eventually(t, 3*sinkTimeout, func() bool { return counterValue(t, retries) > 0 }, "a hanging delivery scheduled again")
	hanging.answer()
	testkit.Eventually(t, 10*time.Second, func() bool { return hanging.delivered(slow) && b.queued(t, "slow") == 0 },
		"every result delivered to the sink once it answers (%d of %d, %d queued)", hanging.okCount(), len(slow), b.queued(t, "slow"))
	require.GreaterOrEqual(t, hanging.mostAsked(), 2, "a timed-out delivery was tried again")
	require.Zero(t, b.queued(t, "all"))
	testkit.Eventually(t, 5*time.Second, func() bool { return b.drained(t) }, "the outbox acknowledged")
}

// runNotifier runs a notifier until the test ends or the returned stop is
// called.
func runNotifier(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	n, err := New(cfg)
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			require.NoError(t, n.Close())
			require.NoError(t, <-ran)
		})
	}
	t.Cleanup(stop)
	select {
	case <-n.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("notifier not running within 10s")
	}
	return stop
}

// TestNotifierStopMidRetryKeepsDelivery: a notifier stopped while its
// sink deliveries wait for a retry leaves them queued; the next notifier
// delivers them once the sink answers.
func TestNotifierStopMidRetryKeepsDelivery(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setup(t)
	failing := newGatedSink(t, true)
	sub := Subscription{Name: "s", Sink: failing.srv.URL}
	cfg := Config{
		Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: b.log,
		Subscriptions: []Subscription{sub}, SinkBackoff: time.Second,
	}
	stopA := runNotifier(t, cfg)
	ids := b.addResults(t, "mid-retry", 5)
	retries := b.metrics.SinkDeliveries.WithLabelValues("s", "retry")
	testkit.Eventually(t, 5*time.Second, func() bool { return counterValue(t, retries) == float64(len(ids)) }, "every delivery failed once and waits for a retry")
	stopped := time.Now()
	stopA()
	require.Less(t, time.Since(stopped), 5*time.Second, "Close waited for sink retries")
	require.Zero(t, failing.okCount())

	failing.answer()
	cfg.SinkBackoff = 10 * time.Millisecond
	runNotifier(t, cfg)
	testkit.Eventually(t, 5*time.Second, func() bool { return failing.delivered(ids) && b.queued(t, "s") == 0 },
		"every result delivered by the next notifier (%d of %d)", failing.okCount(), len(ids))
	require.True(t, b.drained(t), "outbox acknowledged")
}

// cutter cuts a Redis client's network: after cut, no write reaches Redis
// (a process that died, as far as Redis can tell).
type cutter struct{ cut atomic.Bool }

var errCut = errors.New("network cut")

func (c *cutter) options(o redis.Options) *redis.Options {
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if c.cut.Load() {
			return nil, errCut
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &cutConn{Conn: conn, c: c}, nil
	}
	o.MaxRetries = -1
	return &o
}

type cutConn struct {
	net.Conn
	c *cutter
}

func (k *cutConn) Write(p []byte) (int, error) {
	if k.c.cut.Load() {
		return 0, errCut
	}
	return k.Conn.Write(p)
}

// TestNotifierCrashMidRetryLosesNoDelivery: a notifier that dies with
// sink deliveries waiting for a retry and its outbox entries not
// acknowledged loses nothing: the next notifier takes the entries over
// (without queueing them twice) and delivers the queued retries.
func TestNotifierCrashMidRetryLosesNoDelivery(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setup(t)
	failing := newGatedSink(t, true)
	sub := Subscription{Name: "s", Sink: failing.srv.URL}

	// Notifier A talks to Redis through clients whose network the test
	// cuts.
	var cut cutter
	aOpts := cut.options(*b.opts)
	aLedger := ledger.New(ledger.Config{Redis: redis.NewClient(aOpts), Prefix: b.ledger.KeyPrefix(), Partitions: testkit.LedgerPartitions()})
	t.Cleanup(func() { _ = aLedger.Redis().Close() })
	release := b.pub.holdAll()
	stopA := runNotifier(t, Config{
		Ledger: aLedger, Redis: aOpts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: b.log,
		Subscriptions: []Subscription{sub}, SinkBackoff: 500 * time.Millisecond,
	})
	ids := b.addResults(t, "crash", 5)
	// Every result is queued for the sink and failed its first attempt;
	// its publish is under way, so the outbox entry is not acknowledged.
	retries := b.metrics.SinkDeliveries.WithLabelValues("s", "retry")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counterValue(t, retries) == float64(len(ids)) && b.pub.inFlight() == len(ids)
	}, "every delivery failed once, every publish in flight")
	cut.cut.Store(true)
	release()
	stopA()
	g := b.group(t)
	require.Equal(t, int64(len(ids)), g.Pending, "A acknowledged nothing")

	failing.answer()
	runNotifier(t, Config{
		Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: b.log,
		Subscriptions: []Subscription{sub}, SinkBackoff: 10 * time.Millisecond,
	})
	testkit.Eventually(t, 15*time.Second, func() bool { return b.drained(t) }, "the dead notifier's entries taken over and acknowledged")
	// A delivery the dead notifier rescheduled when the network was cut is
	// due when its lease ends, seconds after the takeover: the deadline
	// covers that lease under a loaded CI machine.
	testkit.Eventually(t, 20*time.Second, func() bool { return failing.delivered(ids) && b.queued(t, "s") == 0 },
		"every result delivered (%d of %d)", failing.okCount(), len(ids))
	for _, id := range ids {
		require.GreaterOrEqual(t, b.pub.published(id), 1, "publishes of %s", id)
	}
}

// TestBreaker: the circuit opens after the threshold of consecutive
// failures, lets one probe through after the cooldown, doubles the
// cooldown when the probe fails and closes when one succeeds.
func TestBreaker(t *testing.T) {
	t.Parallel()
	b := breaker{threshold: 3, base: time.Second}
	now := time.Unix(1000, 0)
	for i := range 2 {
		opened, _ := b.failure(now, false)
		require.False(t, opened, "failure %d", i+1)
	}
	b.success()
	for range 2 {
		b.failure(now, false)
	}
	require.True(t, b.closed(), "a success resets the count")
	opened, cooldown := b.failure(now, false)
	require.True(t, opened)
	require.Equal(t, time.Second, cooldown)
	require.False(t, b.closed())

	n, _, wait := b.admit(now.Add(400 * time.Millisecond))
	require.Zero(t, n, "open: nothing starts")
	require.Equal(t, 600*time.Millisecond, wait)

	later := now.Add(time.Second)
	n, probe, _ := b.admit(later)
	require.Equal(t, 1, n)
	require.True(t, probe)
	n, _, _ = b.admit(later)
	require.Zero(t, n, "one probe at a time")

	opened, cooldown = b.failure(later, true)
	require.True(t, opened, "a failed probe opens the circuit again")
	require.Equal(t, 2*time.Second, cooldown)
	n, _, _ = b.admit(later.Add(time.Second))
	require.Zero(t, n)

	n, probe, _ = b.admit(later.Add(2 * time.Second))
	require.Equal(t, 1, n)
	require.True(t, probe)
	require.True(t, b.success(), "a successful probe closes the circuit")
	require.True(t, b.closed())
	n, _, _ = b.admit(later.Add(2 * time.Second))
	require.Greater(t, n, 1)
}

// TestNotifierSinkBounds: a sink's queue holds at most SinkBacklog
// deliveries (the rest are dropped and counted), and a delivery is given
// up after SinkAttempts attempts, leaving nothing in Redis.
func TestNotifierSinkBounds(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setup(t)
	failing := newGatedSink(t, true)
	// Written before the notifier starts, so one read takes them all and
	// they are queued well before the first is given up.
	ids := b.addResults(t, "bounds", 5)
	runNotifier(t, Config{
		Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: b.log,
		Subscriptions: []Subscription{{Name: "s", Sink: failing.srv.URL}},
		SinkBacklog:   2, SinkAttempts: 3, SinkBackoff: 200 * time.Millisecond, SinkBreakerFailures: 100,
	})
	dropped := b.metrics.SinkDeliveries.WithLabelValues("s", "dropped")
	testkit.Eventually(t, 5*time.Second, func() bool { return b.drained(t) }, "the outbox acknowledged")
	testkit.Eventually(t, 5*time.Second, func() bool { return counterValue(t, dropped) == float64(len(ids)) && b.queued(t, "s") == 0 },
		"every delivery dropped (%v), the queue empty (%d)", counterValue(t, dropped), b.queued(t, "s"))
	// The two queued were attempted SinkAttempts times; the three that found
	// the queue full never.
	require.Equal(t, 2*3, failing.requestCount())
	for _, k := range []string{":body", ":tries"} {
		n, err := b.rdb.HLen(context.Background(), b.base+":sink:{s}"+k).Result()
		require.NoError(t, err)
		require.Zero(t, n, k)
	}
}

// TestNotifierSinkCredentialsStayOutOfLogs: a sink URL's password and
// query (where webhook tokens go) never reach the logs, whatever fails.
func TestNotifierSinkCredentialsStayOutOfLogs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing answers there
	var logs testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b.addResults(t, "secret", 1)
	runNotifier(t, Config{
		Ledger: b.ledger, Redis: b.opts, ResultPublisher: b.pub, Metrics: b.metrics, Logger: log,
		Subscriptions: []Subscription{{Name: "s", Sink: "http://hook:pa55word@" + addr + "/in?token=t0ken"}},
		SinkAttempts:  2, SinkBackoff: 10 * time.Millisecond, SinkBreakerFailures: 1, SinkBreakerCooldown: 10 * time.Millisecond,
	})
	dropped := b.metrics.SinkDeliveries.WithLabelValues("s", "dropped")
	// The drop is counted just before it is logged: wait for both.
	testkit.Eventually(t, 10*time.Second, func() bool {
		return counterValue(t, dropped) == 1 && strings.Contains(logs.String(), "giving up on sink delivery")
	}, "the delivery given up")
	out := logs.String()
	require.Contains(t, out, addr, "the failure names the sink")
	require.NotContains(t, out, "pa55word")
	require.NotContains(t, out, "t0ken")
}

// TestNotifierFailedPublishSendsTheSinkOnce: while the result publish
// fails, the entry is handled again every second; the sink, which had its
// delivery on the first handling, must not get it again each time.
func TestNotifierFailedPublishSendsTheSinkOnce(t *testing.T) {
	testkit.RequireRealRedis(t, testkit.NeedsStreamLag)
	t.Parallel()
	b := setup(t)
	sink := newGatedSink(t, false)
	sink.answer()
	ids := b.addResults(t, "pubfail", 3)
	flaky := ids[1]
	b.pub.failNext(flaky, 2)
	b.start(t, 4, Subscription{Name: "s", Sink: sink.srv.URL})
	testkit.Eventually(t, 20*time.Second, func() bool { return b.pub.published(flaky) == 1 && b.drained(t) && sink.delivered(ids) },
		"published after two failures, delivered, acknowledged")
	require.Equal(t, 1, sink.mostAsked(), "one request per result")
}
