package dispatcher_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
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
	m    *metrics.Metrics
	lane string
}

type options struct {
	exec executor.Executor
	// ledger replaces the ledger on the test Redis.
	ledger *ledger.Ledger
	// maxRunning bounds the process's running attempts (default 256).
	maxRunning int
	// noFastStart makes every delivery wait for a take.
	noFastStart bool
}

// setup runs a dispatcher with one consumer on one lane of a gochannel
// pub/sub, with a ledger on the test Redis.
func setup(t *testing.T, o options) *bundle {
	t.Helper()
	b := &bundle{ps: chantest.New(t), lane: testkit.UniqueName("lane"), l: o.ledger, m: metrics.New()}
	if b.l == nil {
		rdb, prefix := testkit.Redis(t)
		b.l = ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	}
	d, err := dispatcher.New(dispatcher.Config{
		Broker: b.ps, Lanes: []string{b.lane}, ConsumersPerLane: 1, Ledger: b.l,
		Functions: map[string]dispatcher.Function{fnName: {
			Name: fnName, Executor: o.exec, Timeout: within, MaxAttempts: 3,
			Backoff: func(int) time.Duration { return time.Minute },
		}},
		Metrics: b.m, Logger: testkit.Logger(t, slog.LevelInfo),
		ErrorBackoff: errorBackoff, MaxRunning: o.maxRunning,
	})
	require.NoError(t, err)
	if o.noFastStart {
		dispatcher.NoFastStart(d)
	}
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

// An attempt that panics does not take the process down: its worker is
// freed (the next task runs), it is not counted as running, and its task
// is not run again while the panicked attempt's lease lives (when it ends,
// the scheduler hands the task to another attempt).
func TestDispatcherAttemptPanicIsContained(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, options{maxRunning: 1, exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return succeed(ctx, r)
	})})
	first := b.submit(t)
	testkit.Eventually(t, within, func() bool { return calls.Load() == 1 }, "the first attempt ran")
	second := b.submit(t)
	testkit.Eventually(t, within, func() bool { return b.state(t, second) == contracts.StateSucceeded }, "the next task runs on the freed worker")
	require.Equal(t, contracts.StateRunning, b.state(t, first), "held by the panicked attempt's lease")
	require.Equal(t, int32(2), calls.Load())
	var inflight dto.Metric
	require.NoError(t, b.m.InFlight.WithLabelValues(fnName).Write(&inflight))
	require.Zero(t, inflight.GetGauge().GetValue(), "the panicked attempt is not counted as running")
}

func TestDispatcherChainOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, options{exec: execFunc(succeed)})
	require.Equal(t, []string{"ErrorBackoff", "Recover", "Detach", "Decode", "Poison", "Dedup", "Throttle"}, dispatcher.ChainNames(b.d))
	require.Equal(t, []string{"RetryClassify", "Reply", "Run"}, dispatcher.AttemptChainNames(b.d))
}

// A Config built in Go gets the same defaults as the configuration file.
func TestDispatcherDefaultsAreTheConfigDefaults(t *testing.T) {
	t.Parallel()
	d, err := dispatcher.New(dispatcher.Config{Broker: chantest.New(t), Metrics: metrics.New(), Logger: testkit.Logger(t, slog.LevelInfo)})
	require.NoError(t, err)
	cfg := dispatcher.Settings(d)
	require.Equal(t, config.ConsumersPerLaneDefault, cfg.ConsumersPerLane)
	require.Equal(t, config.LeaseTTLDefault.Std(), cfg.LeaseTTL)
	require.Equal(t, config.DrainTimeoutDefault.Std(), cfg.DrainTimeout)
	require.Equal(t, dispatcher.ErrorBackoffDefault, cfg.ErrorBackoff)
	require.NoError(t, d.Stop())
}

func TestDispatcherRunsAndAcks(t *testing.T) {
	t.Parallel()
	got := make(chan executor.Request, 1)
	b := setup(t, options{exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		got <- r
		return executor.Outcome{Class: executor.Succeeded, Result: []byte(`"done"`)}
	})})
	id := b.submit(t)
	ds := b.ps.WaitSettled(t, id, 1, within)
	require.True(t, ds[0].Acked)
	r := <-got
	require.Equal(t, id, r.TaskID)
	require.Equal(t, tenant, r.Tenant)
	require.Equal(t, fnName, r.Function)
	require.Equal(t, 1, r.Attempt)
	require.Equal(t, id, r.Event.ID())
	testkit.Eventually(t, within, func() bool { return b.state(t, id) == contracts.StateSucceeded }, "succeeded")
}

func TestDispatcherQuarantinesUndecodable(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, options{exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		calls.Add(1)
		return succeed(ctx, r)
	})})
	msg := message.NewMessage(testkit.UniqueName("junk"), []byte("not a task"))
	require.NoError(t, b.ps.Publish(b.lane, msg))
	ds := b.ps.WaitSettled(t, msg.UUID, 1, within)
	require.True(t, ds[0].Acked, "an undecodable message is acked, not looped")
	q := b.ps.Read(t, broker.QuarantineTopic, 1, within)[0]
	require.Equal(t, msg.UUID, q.UUID)
	require.Equal(t, msg.Payload, q.Payload)
	require.Contains(t, q.Metadata.Get(middleware.QuarantineReasonKey), taskmsg.KeyTaskID)
	require.Zero(t, calls.Load())
}

// A redelivery of a task that already succeeded is acked and dropped.
func TestDispatcherDropsTerminalTask(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, options{exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		calls.Add(1)
		return succeed(ctx, r)
	})})
	id := b.submit(t)
	require.True(t, b.ps.WaitSettled(t, id, 1, within)[0].Acked)
	testkit.Eventually(t, within, func() bool { return b.state(t, id) == contracts.StateSucceeded }, "succeeded")

	// The same lane message again (a finished task no longer stores it).
	e := event.New()
	e.SetID(id)
	e.SetSource("/test")
	e.SetType("test.event")
	again, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: tenant, Function: fnName}, &e)
	require.NoError(t, err)
	require.NoError(t, b.ps.Publish(b.lane, again))
	ds := b.ps.WaitSettled(t, id, 2, within)
	require.True(t, ds[1].Acked)
	require.Equal(t, int32(1), calls.Load(), "a terminal task never runs again")
	require.Equal(t, contracts.StateSucceeded, b.state(t, id))
}

// When the ledger is unreachable the claim fails: the consumer waits the
// error back-off, then nacks (the broker redelivers).
func TestDispatcherInfrastructureErrorBacksOffThenNacks(t *testing.T) {
	t.Parallel()
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = down.Close() })
	var calls atomic.Int32
	b := setup(t, options{
		ledger: ledger.New(ledger.Config{Redis: down, Prefix: testkit.UniqueName("tltest"), Partitions: testkit.LedgerPartitions()}),
		exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
			calls.Add(1)
			return succeed(ctx, r)
		}),
	})
	e := event.New()
	e.SetID("e1")
	e.SetSource("/test")
	e.SetType("test.event")
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: testkit.UniqueName("task"), Tenant: tenant, Function: fnName}, &e)
	require.NoError(t, err)
	require.NoError(t, b.ps.Publish(b.lane, msg))
	ds := b.ps.WaitSettled(t, msg.UUID, 2, within)
	for i, d := range ds {
		require.True(t, d.Nacked, "delivery %d", i)
		require.GreaterOrEqual(t, d.SettledAt.Sub(d.At), errorBackoff, "delivery %d is nacked after the back-off", i)
	}
	require.Zero(t, calls.Load())
}

// Stopping the dispatcher stops its consumers, but an attempt already
// running keeps its context, finishes, is recorded and acked.
func TestDispatcherStopLetsRunningAttemptFinish(t *testing.T) {
	t.Parallel()
	started := make(chan context.Context, 1)
	release := make(chan struct{})
	b := setup(t, options{exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		started <- ctx
		<-release
		if ctx.Err() != nil {
			return executor.Outcome{Class: executor.Retryable, Err: context.Cause(ctx).Error()}
		}
		return succeed(ctx, r)
	})})
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseOnce) // before the dispatcher's cleanup, if the test fails
	id := b.submit(t)
	var actx context.Context
	select {
	case actx = <-started:
	case <-time.After(within):
		t.Fatal("attempt did not start")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.d.Stop() }()
	// The consumer's subscription ends (gochannel cancels the contexts of
	// the messages it handed out) while the attempt still runs.
	testkit.Eventually(t, within, func() bool { return b.ps.Ended(b.lane) == 1 }, "consumer stopped")
	require.NoError(t, actx.Err(), "a stopping consumer does not cancel the running attempt")
	releaseOnce()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(within):
		t.Fatal("Stop did not return after the attempt finished")
	}
	ds := b.ps.WaitSettled(t, id, 1, within)
	require.True(t, ds[0].Acked)
	require.Equal(t, contracts.StateSucceeded, b.state(t, id))
}

// The handler at the end of the chain reads the Delivery that Decode set;
// without one it returns ErrNoDelivery instead of dereferencing nil.
func TestDispatcherHandlerWithoutDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t, options{exec: execFunc(succeed)})
	err := dispatcher.Handle(b.d, message.NewMessage("m1", nil))
	require.ErrorIs(t, err, middleware.ErrNoDelivery)
	require.ErrorContains(t, err, "m1")
}
