package dispatcher_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
)

const (
	tenant = "acme"
	fnName = "fn"
	// errorBackoff is the dispatcher's pause before a nack in these tests.
	errorBackoff = 300 * time.Millisecond
	within       = 10 * time.Second
)

// execFunc is an executor.Executor made of a function.
type execFunc func(ctx context.Context, r executor.Request) executor.Outcome

func (f execFunc) Execute(ctx context.Context, r executor.Request) executor.Outcome { return f(ctx, r) }

type bundle struct {
	ps   *chantest.PubSub
	l    *ledger.Ledger
	d    *dispatcher.Dispatcher
	lane string
}

type options struct {
	exec executor.Executor
	// ledger replaces the ledger on the test Redis.
	ledger *ledger.Ledger
}

// setup runs a dispatcher with one consumer on one lane of a gochannel
// pub/sub, with a ledger on the test Redis.
func setup(t *testing.T, o options) *bundle {
	t.Helper()
	b := &bundle{ps: chantest.New(t), lane: testkit.UniqueName("lane"), l: o.ledger}
	if b.l == nil {
		rdb, prefix := testkit.Redis(t)
		b.l = ledger.New(ledger.Config{Redis: rdb, Prefix: prefix})
	}
	d, err := dispatcher.New(dispatcher.Config{
		Broker: b.ps, Lanes: []string{b.lane}, ConsumersPerLane: 1, Ledger: b.l,
		Functions: map[string]dispatcher.Function{fnName: {
			Name: fnName, Executor: o.exec, Timeout: within, MaxAttempts: 3,
			Backoff: func(int) time.Duration { return time.Minute },
		}},
		Metrics: metrics.New(), Logger: testkit.Logger(t, slog.LevelDebug),
		ErrorBackoff: errorBackoff,
	})
	require.NoError(t, err)
	b.d = d
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	t.Cleanup(func() {
		require.NoError(t, d.Stop())
		cancel()
		require.NoError(t, <-ran)
	})
	select {
	case <-d.Running():
	case err := <-ran:
		t.Fatalf("dispatcher stopped before running: %v", err)
	case <-time.After(within):
		t.Fatal("dispatcher not running")
	}
	return b
}

// submit records a task in the ledger and publishes its message to the
// lane; it returns the task id (the message UUID).
func (b *bundle) submit(t *testing.T) string {
	t.Helper()
	id := testkit.UniqueName("task")
	e := event.New()
	e.SetID(id)
	e.SetSource("/test")
	e.SetType("test.event")
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: tenant, Function: fnName}, &e)
	require.NoError(t, err)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	_, err = b.l.Create(context.Background(), []ledger.EventTasks{{
		Tenant: tenant, Event: contracts.EventRef{ID: id, Source: "/test", Type: "test.event"},
		Tasks: []ledger.NewTask{{ID: id, Function: fnName, Message: stored}},
	}})
	require.NoError(t, err)
	require.NoError(t, b.ps.Publish(b.lane, msg))
	return id
}

func (b *bundle) state(t *testing.T, id string) contracts.State {
	t.Helper()
	task, err := b.l.Get(context.Background(), tenant, id)
	require.NoError(t, err)
	return task.State
}

func succeed(context.Context, executor.Request) executor.Outcome {
	return executor.Outcome{Class: executor.Succeeded}
}

// A handler that panics is paused like any infrastructure error before its
// delivery is nacked: the panic becomes an error inside the back-off.
func TestDispatcherPanicIsPausedBeforeNack(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, options{exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return succeed(ctx, r)
	})})
	id := b.submit(t)
	ds := b.ps.WaitSettled(t, id, 2, within)
	require.True(t, ds[0].Nacked, "the panicking delivery is nacked")
	require.GreaterOrEqual(t, ds[0].SettledAt.Sub(ds[0].At), errorBackoff, "the nack waits for the error back-off")
	// The redelivery finds the task held by the panicked attempt's lease:
	// deferred to the lease's end and acked, not run a second time.
	require.True(t, ds[1].Acked)
	require.Equal(t, int32(1), calls.Load())
}
