package ledger_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// Review of the release side of the partitioned layout (release_split.go).

// TestSplitCancelKeepsTheTenantOutcome: cancel.t cancelled a running task
// and release.f was lost. The task is cancelled (a second Cancel answers
// ErrNotCancellable, the gateway's 409), and the lost function step is
// repaired as a lost finish's is (the reservation's score passes, the
// unparking set sends its unpark.f again): Cancel answers the cancelled
// task, not an error the caller would take for "not cancelled", and
// CancelMatching counts the cancel.
func TestSplitCancelKeepsTheTenantOutcome(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	lim := ledger.Limits{Concurrency: 2}
	run := func() string {
		id := b.record(t, "a", "fn", 5)
		c, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "a", ID: id, Function: "fn", Owner: "d1", Lease: takeLease, Limits: lim})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, c.Verdict)
		return id
	}
	one, two := run(), run()
	drop := dropCalls(b, "release.f")

	task, err := b.l.Cancel(ctx, "a", one)
	require.Equal(t, 1, drop.count())
	require.Equal(t, contracts.StateCancelled, b.stateOf(t, "a", one))
	require.NoError(t, err, "the task was cancelled")
	require.NotNil(t, task)
	require.Equal(t, contracts.StateCancelled, task.State)

	res, err := b.l.CancelMatching(ctx, "a", contracts.CancelRequest{Selector: contracts.Selector{State: contracts.StateRunning}})
	require.Equal(t, contracts.StateCancelled, b.stateOf(t, "a", two))
	require.NoError(t, err)
	require.Equal(t, contracts.CancelResponse{Matched: 1, Cancelled: 1}, res)
}

// interleave runs f once, just before the first pipeline that carries a
// call of script name is sent: another dispatcher's steps between two of
// this one's.
type interleave struct {
	hash string
	f    func()
	done atomic.Bool
}

func (h *interleave) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *interleave) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *interleave) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if a := c.Args(); c.Name() == "evalsha" && len(a) > 1 && a[1] == h.hash {
				if h.done.CompareAndSwap(false, true) {
					h.f()
				}
				break
			}
		}
		return next(ctx, cmds)
	}
}

// TestSplitClaimBusyKeepsTheRunningAttemptsSlot: two direct claims of one
// task race. A's reserve.f reserves the task's slot; B's reserve.f finds
// the task's member live and reserves nothing, and B's claim.t starts the
// task on it; A's claim.t answers busy. A must not give back the member:
// it is the running attempt's only place in the function's in-flight set,
// and without it a claim of another task passes the concurrency limit.
func TestSplitClaimBusyKeepsTheRunningAttemptsSlot(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	lim := ledger.Limits{Concurrency: 1}
	claim := func(id, owner string) ledger.Claim {
		c, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "a", ID: id, Function: "fn", Owner: owner, Lease: takeLease, Limits: lim})
		require.NoError(t, err)
		return c
	}
	task, other := b.record(t, "a", "fn", 5), b.record(t, "a", "fn", 5)
	var bc ledger.Claim
	h := &interleave{hash: ledger.ScriptHash("claim.t")}
	h.f = func() { bc = claim(task, "B") }
	b.l.Redis().(*redis.Client).AddHook(h)

	require.Equal(t, ledger.VerdictBusy, claim(task, "A").Verdict)
	require.Equal(t, ledger.VerdictRun, bc.Verdict, "B started the task between A's two steps")
	live, err := b.l.Redis().ZCount(ctx, b.l.InflightKey("fn"), strconv.FormatInt(b.now.UnixMicro(), 10), "+inf").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, live, "B's running attempt holds the function's slot")
	c := claim(other, "C")
	require.Equal(t, ledger.VerdictThrottled, c.Verdict, "one attempt runs: the limit of 1 is reached")
	require.Equal(t, "concurrency", c.Limit)
}

// TestSplitLateReleaseKeepsTheNextAttemptsSlot: retry.t ended attempt 1
// and its release.f is late (a stalled process, a slow round trip): the
// retry was due at once, and attempt 2 started (the limit, 2, had room
// beside attempt 1's reservation) under the same member, its score grown
// to attempt 2's lease. release.f is fenced by attempt 1's lease (retry.t
// answers it), so it leaves attempt 2's member, and the function stays
// within its limit.
func TestSplitLateReleaseKeepsTheNextAttemptsSlot(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	ids := b.ready(t, "a", "fn", 5, 1)
	lim := ledger.TakeLimits{Concurrency: 2}
	tk := b.take(t, "fn", 1, lim)
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	var next ledger.Taken
	h := &interleave{hash: ledger.ScriptHash("release.f")}
	h.f = func() {
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", ids[0], "fn", 5).Verdict)
		// Later than attempt 1's start: attempt 2's lease ends later.
		b.advance(time.Millisecond)
		next = b.take(t, "fn", 1, lim)
	}
	b.l.Redis().(*redis.Client).AddHook(h)
	ok, err := b.l.Retry(ctx, "a", s.ID, "fn", s.Fence(), b.now, "boom", false)
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, next.Tasks, 1, "attempt 2 started before attempt 1's release.f")
	live, err := b.l.Redis().ZCount(ctx, b.l.InflightKey("fn"), strconv.FormatInt(b.now.UnixMicro(), 10), "+inf").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, live, "attempt 2 holds the function's slot")
}
