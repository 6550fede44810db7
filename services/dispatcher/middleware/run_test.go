package middleware_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// fakeLeases records the leases held; loseOnHold makes every lease lost
// as soon as it is held (its cancel is called).
type fakeLeases struct {
	mu         sync.Mutex
	held       map[ledger.Lease]bool
	loseOnHold bool
}

func (f *fakeLeases) Hold(l ledger.Lease, cancel func()) *atomic.Bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[l] = true
	lost := &atomic.Bool{}
	if f.loseOnHold {
		lost.Store(true)
		cancel()
	}
	return lost
}

func (f *fakeLeases) Release(l ledger.Lease) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, l)
}

// execFunc is an executor.Executor made of a function.
type execFunc func(ctx context.Context, r executor.Request) executor.Outcome

func (f execFunc) Execute(ctx context.Context, r executor.Request) executor.Outcome { return f(ctx, r) }

// runAttempt runs d through Run (leases for owner "me") into a handler
// that reports whether it was reached.
func runAttempt(t *testing.T, leases middleware.Leases, d *middleware.Delivery) (reached bool, err error) {
	t.Helper()
	h := middleware.Run(leases, "me", nil, metrics.New(), testkit.Logger(t, slog.LevelInfo))(func(*message.Message) ([]*message.Message, error) {
		reached = true
		return nil, nil
	})
	msg := message.NewMessage("m1", nil)
	msg.SetContext(middleware.WithDelivery(context.Background(), d))
	_, err = h(msg)
	return reached, err
}

// Run executes the attempt under its lease, with the function's timeout as
// its deadline, and leaves the outcome for RetryClassify.
func TestRunExecutesUnderTheLease(t *testing.T) {
	t.Parallel()
	leases := &fakeLeases{held: map[ledger.Lease]bool{}}
	want := ledger.Lease{Tenant: "acme", ID: "t1", Function: "fn", Owner: "me", Attempt: 2}
	var got executor.Request
	d := &middleware.Delivery{
		Ref:   taskmsg.Ref{TaskID: "t1", Tenant: "acme", Function: "fn"},
		Claim: ledger.Claim{Attempt: 2},
		Function: middleware.Function{Name: "fn", Timeout: 50 * time.Millisecond, Executor: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
			got = r
			leases.mu.Lock()
			held := leases.held[want]
			leases.mu.Unlock()
			require.True(t, held, "the lease is held while the attempt runs")
			<-ctx.Done()
			return executor.Outcome{Class: executor.Retryable, Err: context.Cause(ctx).Error()}
		})},
	}
	start := time.Now()
	reached, err := runAttempt(t, leases, d)
	require.NoError(t, err)
	require.True(t, reached)
	require.Equal(t, 2, got.Attempt)
	require.WithinRange(t, got.Deadline, start.Add(50*time.Millisecond), time.Now())
	require.True(t, d.Ran)
	require.True(t, d.TimedOut, "the deadline ended the attempt")
	require.Equal(t, executor.Retryable, d.Outcome.Class)
	require.Empty(t, leases.held, "the lease is released")
}

// An attempt whose lease was lost has its context cancelled and its
// outcome discarded: the chain ends before RetryClassify records it.
func TestRunDiscardsOutcomeOfLostLease(t *testing.T) {
	t.Parallel()
	d := &middleware.Delivery{
		Ref: taskmsg.Ref{TaskID: "t1", Tenant: "acme", Function: "fn"},
		Function: middleware.Function{Name: "fn", Timeout: within, Executor: execFunc(func(ctx context.Context, _ executor.Request) executor.Outcome {
			<-ctx.Done()
			return executor.Outcome{Class: executor.Succeeded}
		})},
	}
	reached, err := runAttempt(t, &fakeLeases{held: map[ledger.Lease]bool{}, loseOnHold: true}, d)
	require.NoError(t, err)
	require.False(t, reached)
	require.True(t, d.LeaseLost)
	require.False(t, d.TimedOut)
}

// A task whose stored message is unreadable is not executed; its outcome
// is non-retryable.
func TestRunDoesNotExecuteUnreadable(t *testing.T) {
	t.Parallel()
	d := &middleware.Delivery{
		ParseErr: errors.New("bad bytes"),
		Function: middleware.Function{Name: "fn", Executor: execFunc(func(context.Context, executor.Request) executor.Outcome {
			t.Error("executed")
			return executor.Outcome{}
		})},
	}
	reached, err := runAttempt(t, &fakeLeases{held: map[ledger.Lease]bool{}}, d)
	require.NoError(t, err)
	require.True(t, reached)
	require.False(t, d.Ran)
	require.Equal(t, executor.NonRetryable, d.Outcome.Class)
	require.Contains(t, d.Outcome.Err, "stored message unreadable: bad bytes")
}
