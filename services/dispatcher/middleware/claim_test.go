package middleware_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

const (
	tenant = "acme"
	fn     = "fn"
	owner  = "me"
	lease  = 15 * time.Second
)

type claimBundle struct {
	ps    *chantest.PubSub
	rdb   *redis.Client
	l     *ledger.Ledger
	topic string
	// ran receives the Delivery of every attempt the claim let through.
	ran chan *middleware.Delivery
	// skew moves the ledger's clock.
	skew atomic.Int64
}

// setupClaim routes a topic through Decode and Claim (under limits) to a
// handler that records what ran, with a ledger on the test Redis.
func setupClaim(t *testing.T, limits ledger.Limits) *claimBundle {
	t.Helper()
	b := &claimBundle{ps: chantest.New(t), ran: make(chan *middleware.Delivery, 10)}
	var prefix string
	b.rdb, prefix = testkit.Redis(t)
	b.l = ledger.New(ledger.Config{Redis: b.rdb, Prefix: prefix, Now: func() time.Time {
		return time.Now().Add(time.Duration(b.skew.Load()))
	}})
	logger := testkit.Logger(t, slog.LevelInfo)
	m := metrics.New()
	b.topic, _ = route(t, b.ps, func(msg *message.Message) error {
		b.ran <- middleware.DeliveryFrom(msg.Context())
		return nil
	},
		middleware.Decode(b.ps, quarantine, m, logger),
		middleware.Claim(b.l, owner, lease, func(string, string) ledger.Limits { return limits }, m, logger),
	)
	return b
}

// create records a task (expiring at expiresAt, if not nil) in the
// ledger and returns its lane message.
func (b *claimBundle) create(t *testing.T, expiresAt *time.Time) *message.Message {
	t.Helper()
	id := testkit.UniqueName("task")
	msg := taskMessage(t, tenant, id, fn)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	_, err = b.l.Create(context.Background(), []ledger.EventTasks{{
		Tenant: tenant, Event: contracts.EventRef{ID: "ev-" + id, Source: "/test", Type: "test.event"},
		Tasks:     []ledger.NewTask{{ID: id, Function: fn, Message: stored}},
		ExpiresAt: expiresAt,
	}})
	require.NoError(t, err)
	return msg
}

// deliver publishes msg and waits for its delivery to be settled.
func (b *claimBundle) deliver(t *testing.T, msg *message.Message) chantest.Delivery {
	t.Helper()
	require.NoError(t, b.ps.Publish(b.topic, msg))
	return b.ps.WaitSettled(t, msg.UUID, 1, within)[0]
}

func (b *claimBundle) state(t *testing.T, id string) contracts.State {
	t.Helper()
	task, err := b.l.Get(context.Background(), tenant, id)
	require.NoError(t, err)
	return task.State
}

// delayScore is the task's score in the ledger's delay set (µs).
func (b *claimBundle) delayScore(t *testing.T, id string) int64 {
	t.Helper()
	s, err := b.rdb.ZScore(context.Background(), b.l.DelayKey(), ledger.Member(tenant, id)).Result()
	require.NoError(t, err)
	return int64(s)
}

// claimElsewhere makes another dispatcher hold the task.
func (b *claimBundle) claimElsewhere(t *testing.T, id string, limits ledger.Limits) ledger.Claim {
	t.Helper()
	c, err := b.l.Claim(context.Background(), ledger.ClaimRequest{
		Tenant: tenant, ID: id, Function: fn, Owner: "other", Lease: time.Minute, Limits: limits,
	})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, c.Verdict)
	return c
}

func TestClaimRunsWaitingTask(t *testing.T) {
	t.Parallel()
	b := setupClaim(t, ledger.Limits{})
	msg := b.create(t, nil)
	require.True(t, b.deliver(t, msg).Acked)
	d := receive(t, b.ran)
	require.Equal(t, msg.UUID, d.Ref.TaskID)
	require.Equal(t, ledger.VerdictRun, d.Claim.Verdict)
	require.Equal(t, 1, d.Claim.Attempt)
	require.Equal(t, contracts.StateRunning, b.state(t, msg.UUID))
}

// A delivery of a task that already ended (a duplicate, a redelivery after
// success) is acked and never runs.
func TestClaimDropsTerminalTask(t *testing.T) {
	t.Parallel()
	b := setupClaim(t, ledger.Limits{})
	msg := b.create(t, nil)
	c := b.claimElsewhere(t, msg.UUID, ledger.Limits{})
	ok, err := b.l.Finish(context.Background(), tenant, msg.UUID, fn, c.Attempt, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)

	require.True(t, b.deliver(t, msg).Acked)
	require.Empty(t, b.ran, "a terminal task does not run")
	require.Equal(t, contracts.StateSucceeded, b.state(t, msg.UUID))
}

func TestClaimDropsMissingTask(t *testing.T) {
	t.Parallel()
	b := setupClaim(t, ledger.Limits{})
	msg := taskMessage(t, tenant, testkit.UniqueName("task"), fn)
	require.True(t, b.deliver(t, msg).Acked)
	require.Empty(t, b.ran)
}

// A task another dispatcher holds is not run a second time: the delivery
// is acked and the task stays in the delay set (the scheduler looks at it
// again when the holder's lease would end, so a dead holder is taken over).
func TestClaimDefersBusyTask(t *testing.T) {
	t.Parallel()
	b := setupClaim(t, ledger.Limits{})
	msg := b.create(t, nil)
	before := time.Now()
	b.claimElsewhere(t, msg.UUID, ledger.Limits{})

	require.True(t, b.deliver(t, msg).Acked)
	require.Empty(t, b.ran)
	// Deferred to the holder's lease end (a minute) plus the busy margin.
	score := b.delayScore(t, msg.UUID)
	require.GreaterOrEqual(t, score, before.Add(time.Minute+time.Second).UnixMicro(), "deferred to the lease end")
	require.Less(t, score, time.Now().Add(time.Minute+2*time.Second).UnixMicro(), "deferred to the lease end")
	require.Equal(t, contracts.StateRunning, b.state(t, msg.UUID))
}

// A task at its function's concurrency limit waits in the delay set; the
// delivery is acked, nothing blocks the consumer.
func TestClaimDefersThrottledTask(t *testing.T) {
	t.Parallel()
	limits := ledger.Limits{Concurrency: 1}
	b := setupClaim(t, limits)
	running := b.create(t, nil)
	b.claimElsewhere(t, running.UUID, limits)
	msg := b.create(t, nil)

	before := time.Now()
	require.True(t, b.deliver(t, msg).Acked)
	require.Empty(t, b.ran)
	// The publish guard (due in 30s) is replaced by the concurrency wait
	// (250ms, plus up to a fifth of it as jitter).
	score := b.delayScore(t, msg.UUID)
	require.GreaterOrEqual(t, score, before.Add(250*time.Millisecond).UnixMicro(), "deferred by the concurrency wait")
	require.Less(t, score, time.Now().Add(5*time.Second).UnixMicro(), "deferred by the concurrency wait, not the publish guard")
	require.Equal(t, contracts.StateQueued, b.state(t, msg.UUID))
}

func TestClaimExpiresTaskPastItsTTL(t *testing.T) {
	t.Parallel()
	b := setupClaim(t, ledger.Limits{})
	expires := time.Now().Add(time.Second)
	msg := b.create(t, &expires)
	b.skew.Store(int64(2 * time.Second))
	require.True(t, b.deliver(t, msg).Acked)
	require.Empty(t, b.ran)
	require.Equal(t, contracts.StateExpired, b.state(t, msg.UUID))
}

// A claim the ledger cannot answer is an error: nacked, for the back-off
// outside to pace.
func TestClaimLedgerErrorNacks(t *testing.T) {
	t.Parallel()
	const backoff = 50 * time.Millisecond
	ps := chantest.New(t)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = down.Close() })
	l := ledger.New(ledger.Config{Redis: down, Prefix: testkit.UniqueName("tltest")})
	logger := testkit.Logger(t, slog.LevelInfo)
	m := metrics.New()
	errs := make(chan error, 100)
	var calls atomic.Int32
	topic, _ := route(t, ps, func(*message.Message) error {
		calls.Add(1)
		return nil
	},
		middleware.ErrorBackoff(backoff, logger), probe(errs),
		middleware.Decode(ps, quarantine, m, logger),
		middleware.Claim(l, owner, lease, func(string, string) ledger.Limits { return ledger.Limits{} }, m, logger),
	)
	msg := taskMessage(t, tenant, "t1", fn)
	require.NoError(t, ps.Publish(topic, msg))
	require.ErrorContains(t, receive(t, errs), "claiming task t1")
	ds := ps.WaitSettled(t, msg.UUID, 2, within)
	require.True(t, ds[0].Nacked)
	require.True(t, ds[1].Nacked)
	require.Zero(t, calls.Load())
}

// Claim reads the Delivery that Decode put in the context; without one it
// is an error naming the cause, not a nil dereference.
func TestClaimWithoutDeliveryIsAnError(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix})
	var calls atomic.Int32
	h := middleware.Claim(l, owner, lease, func(string, string) ledger.Limits { return ledger.Limits{} }, metrics.New(), testkit.Logger(t, slog.LevelInfo))(
		func(*message.Message) ([]*message.Message, error) {
			calls.Add(1)
			return nil, nil
		})
	_, err := h(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, middleware.ErrNoDelivery)
	require.ErrorContains(t, err, "m1")
	require.Zero(t, calls.Load())
}
