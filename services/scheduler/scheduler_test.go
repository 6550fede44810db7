package scheduler_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/scheduler"
)

// refusingPublisher refuses every message as too large, as a broker
// driver does for a header table over frame_max, and counts the tries.
type refusingPublisher struct {
	mu    sync.Mutex
	tries map[string]int
}

func (p *refusingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.tries[m.UUID]++
	}
	return &broker.TooLargeError{What: "header frame", Size: 200000, Limit: 131072}
}

func (p *refusingPublisher) Close() error { return nil }

type oneLane struct{}

func (oneLane) LaneFor(string, string) string { return "lane" }

// TestTooLargeEndsTheTaskOnce: a due task whose lane message the broker
// refuses for its size ends dead (failed for a function without
// dead-lettering) at the first try, non-retryable, with one result event,
// and is never tried again.
func TestTooLargeEndsTheTaskOnce(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	led := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, PublishGuard: time.Millisecond})
	pub := &refusingPublisher{tries: map[string]int{}}
	s := scheduler.New(scheduler.Config{
		Ledger: led, Publisher: pub, Router: oneLane{}, Logger: testkit.Logger(t, 0),
		Metrics:    metrics.New(),
		DeadLetter: func(fn string) bool { return fn != "nodlq" },
	})
	ctx := context.Background()
	mk := func(id, fn string) string {
		e := event.New()
		e.SetID(id)
		e.SetSource("/test")
		e.SetType("t")
		taskID := testkit.UniqueName("task")
		msg, err := taskmsg.New(taskmsg.Ref{TaskID: taskID, Tenant: "acme", Function: fn}, &e)
		require.NoError(t, err)
		stored, err := taskmsg.Encode(msg)
		require.NoError(t, err)
		_, err = led.Create(ctx, []ledger.EventTasks{{
			Tenant: "acme", Event: contracts.EventRef{ID: id, Source: "/test", Type: "t"},
			Tasks: []ledger.NewTask{{ID: taskID, Function: fn, Message: stored}},
		}})
		require.NoError(t, err)
		return taskID
	}
	dead, failed := mk("e1", "f1"), mk("e2", "nodlq")

	// The publish guards are due at once; a few scans run, as Run would.
	deadline := time.Now().Add(1500 * time.Millisecond) // past a republish a second after a failure
	for time.Now().Before(deadline) {
		_, err := s.Tick(ctx)
		require.NoError(t, err)
	}
	for id, want := range map[string]contracts.State{dead: contracts.StateDead, failed: contracts.StateFailed} {
		task, err := led.Get(ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, want, task.State, id)
		require.Equal(t, contracts.ReasonNonRetryable, task.Reason)
		require.Contains(t, task.Error, "exceeds the broker's limit of 131072 bytes")
		require.Equal(t, 1, pub.tries[id], "tried once, never again")
	}
	entries, err := rdb.XRange(ctx, led.OutboxStream(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 2, "one result event per task")
	n, err := rdb.ZCard(ctx, led.DelayKey()).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing left to republish")
}
