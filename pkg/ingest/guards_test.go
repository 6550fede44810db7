package ingest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// recordingPublisher confirms every publish and remembers the topics.
type recordingPublisher struct {
	mu     sync.Mutex
	topics []string
}

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range msgs {
		p.topics = append(p.topics, topic)
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

type oneLane struct{}

func (oneLane) LaneFor(string, string) string { return "lane" }

// TestConfirmedTasksLoseTheirGuards submits events whose publishes are
// confirmed: their publish guards are dropped in the background (Submit
// does not wait for it), so once every guard would have passed, the
// scheduler finds nothing to publish again. Close drops what is queued.
func TestConfirmedTasksLoseTheirGuards(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), PublishGuard: 30 * time.Second, Now: clock})
	pub := &recordingPublisher{}
	in := ingest.New(ingest.Config{
		Ledger: l, Publisher: pub, Router: oneLane{}, Metrics: metrics.New(), Now: clock,
		Subscribers: func(string, string) []string { return []string{"f1", "f2"} },
	})
	ctx := context.Background()
	var events []*event.Event
	for _, id := range []string{"a", "b", "c"} {
		e := event.New()
		e.SetID(id)
		e.SetSource("/test")
		e.SetType("t")
		events = append(events, &e)
	}
	tasks, err := in.Submit(ctx, "acme", events[:1])
	require.NoError(t, err)
	require.Len(t, tasks, 2)
	tasks, err = in.Submit(ctx, "acme", events[1:])
	require.NoError(t, err)
	require.Len(t, tasks, 4)
	in.Close()
	require.Len(t, pub.topics, 6)

	mu.Lock()
	now = now.Add(time.Minute) // past every guard
	mu.Unlock()
	due, err := l.TakeDue(ctx, 100, time.Minute)
	require.NoError(t, err)
	require.Empty(t, due, "every confirmed task's guard was dropped")

	// After Close, Submit still drops its guards (itself).
	e := event.New()
	e.SetID("d")
	e.SetSource("/test")
	e.SetType("t")
	_, err = in.Submit(ctx, "acme", []*event.Event{&e})
	require.NoError(t, err)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	due, err = l.TakeDue(ctx, 100, time.Minute)
	require.NoError(t, err)
	require.Empty(t, due)
}
