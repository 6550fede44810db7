package ledger_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// Second review of the partitioned layout's take/admit side
// (take_split.go, admit_split.go, sweep.go).

// TestSplitTakeBehindALiveMemberLeavesNoTaskStuck: retry.t ended attempt 1
// and its release.f has not run yet when the retry, due at once, is
// admitted and taken. take.f finds the task's member live (attempt 1's)
// and must not drop the ref: the task is queued, admit's forget dropped
// its delay entry, and once release.f removes the member nothing (not the
// sweep, which looks at members past their score) would ever put it back.
// Attempt 2 starts, in that take or in the next.
func TestSplitTakeBehindALiveMemberLeavesNoTaskStuck(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	id := b.ready(t, "a", "fn", 5, 1)[0]
	tk := b.take(t, "fn", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	var during ledger.Taken
	h := &interleave{hash: ledger.ScriptHash("release.f")}
	h.f = func() {
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "fn", 5).Verdict)
		b.advance(time.Millisecond)
		during = b.take(t, "fn", 1, ledger.TakeLimits{})
	}
	b.l.Redis().(*redis.Client).AddHook(h)
	ok, err := b.l.Retry(ctx, "a", s.ID, "fn", s.Fence(), b.now, "boom", false)
	require.NoError(t, err)
	require.True(t, ok)
	after := b.take(t, "fn", 1, ledger.TakeLimits{})
	require.Equal(t, 1, len(during.Tasks)+len(after.Tasks), "attempt 2 starts, beside attempt 1's late release or after it")
	require.Equal(t, contracts.StateRunning, b.stateOf(t, "a", id))
}

// TestSplitReleaseFenceFollowsRenewals: release.f is fenced by the lease
// the tenant step ended, the latest one renew.t wrote: a renewed attempt's
// end frees its slot (its member's score grew with renew.f), and a late
// release.f of it leaves the next attempt's member, scored by a later
// lease, alone.
func TestSplitReleaseFenceFollowsRenewals(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	lim := ledger.TakeLimits{Concurrency: 2}
	live := func() int64 {
		n, err := b.l.Redis().ZCount(ctx, b.l.InflightKey("fn"), strconv.FormatInt(b.now.UnixMicro(), 10), "+inf").Result()
		require.NoError(t, err)
		return n
	}
	renewed := func(s ledger.Started) {
		b.advance(time.Second)
		lost, err := b.l.Renew(ctx, takeLease, ledger.Lease{Tenant: s.Tenant, ID: s.ID, Function: "fn", Owner: "d1", Attempt: s.Attempt, Redrives: s.Redrives})
		require.NoError(t, err)
		require.Empty(t, lost)
	}

	// A renewed attempt ends: its slot is free.
	b.ready(t, "a", "fn", 5, 2)
	tk := b.take(t, "fn", 1, lim)
	require.Len(t, tk.Tasks, 1)
	renewed(tk.Tasks[0])
	ok, err := b.l.Finish(ctx, "a", tk.Tasks[0].ID, "fn", tk.Tasks[0].Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Zero(t, live(), "the renewed attempt's release frees its slot")

	// A renewed attempt retried, its release.f late: attempt 2 keeps its slot.
	tk = b.take(t, "fn", 1, lim)
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	renewed(s)
	var next ledger.Taken
	h := &interleave{hash: ledger.ScriptHash("release.f")}
	h.f = func() {
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", s.ID, "fn", 5).Verdict)
		b.advance(time.Millisecond)
		next = b.take(t, "fn", 1, lim)
	}
	b.l.Redis().(*redis.Client).AddHook(h)
	ok, err = b.l.Retry(ctx, "a", s.ID, "fn", s.Fence(), b.now, "boom", false)
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, next.Tasks, 1, "attempt 2 started before attempt 1's release.f")
	require.EqualValues(t, 1, live(), "attempt 2 holds the function's slot")
}

// TestSplitAdmitOfAParkedTenantRacingItsUnpark: admit.t finds the tenant
// parked in the band (at its quota), so admit.f does not put it in the
// band's round robin; between the two, the tenant's running attempt ends
// and its unpark.f finds the tenant's queue empty (the admitted task is
// not in it yet) and puts nothing back. The tenant, below its quota now,
// must not be left out of the round robin with a task ready (until the
// scheduler's UnparkAll sends the cleared member again, 10 s later).
func TestSplitAdmitOfAParkedTenantRacingItsUnpark(t *testing.T) {
	t.Skip("defect left (review 2, low): a tenant parked with an empty queue (only a lost requeue.f leaves one, for a lease) whose attempt ends between admit.t and admit.f stays out of the ring until UnparkAll resends the cleared member, 10 s later; a fix needs admit's last step to see the tenant no longer parked and send unpark.f")
	ctx := context.Background()
	b := setupLayout(t, 4, map[string]int{"a": 1})
	rdb := b.l.Redis().(*redis.Client)
	other := redis.NewClient(rdb.Options())
	t.Cleanup(func() { _ = other.Close() })
	finisher := ledger.New(ledger.Config{Redis: other, Prefix: strings.TrimSuffix(b.l.KeyPrefix(), ":"), Partitions: 4,
		TenantQuota: func(string) int { return 1 }})
	lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
	b.ready(t, "a", "f", 5, 2)
	tk := b.take(t, "f", 2, lim)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, 1, tk.Parked)
	first := tk.Tasks[0]
	// a is parked in the normal band with its queue empty: the refused
	// task was cancelled, and its stale ref dropped.
	for _, id := range b.queued(t, "f", ledger.BandNormal, "a") {
		_, err := b.l.Cancel(ctx, "a", id)
		require.NoError(t, err)
	}
	require.NoError(t, rdb.Del(ctx, b.fnPrefix("f")+"ready:normal:a").Err())
	require.NoError(t, rdb.HSet(ctx, b.l.FnStateKey("f"), "n_normal", 0).Err())

	rdb.AddHook(&beforeScript{hash: ledger.Scripts["admit.f"].Hash(), do: func() {
		ok, err := finisher.Finish(ctx, "a", first.ID, "f", first.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.True(t, ok)
	}})
	id := b.record(t, "a", "f", 5)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
	require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"), "a, below its quota, is in the round robin")
	tk = b.take(t, "f", 1, lim)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, id, tk.Tasks[0].ID)
}
