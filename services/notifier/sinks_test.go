package notifier

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

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
	testkit.Eventually(t, 10*time.Second, func() bool { return hanging.delivered(slow) }, "every result delivered to the sink once it answers (%d of %d)", hanging.okCount(), len(slow))
	require.GreaterOrEqual(t, hanging.mostAsked(), 2, "a timed-out delivery was tried again")
	testkit.Eventually(t, 5*time.Second, func() bool { return b.drained(t) }, "the outbox acknowledged")
}
