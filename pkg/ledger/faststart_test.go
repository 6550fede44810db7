package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// Tests of AdmitOrStart's fast start: a delivery whose function has room
// and nothing waiting ahead of it starts in the admit step; anything else
// goes the ready-queue way, as Admit does.

func (b *bundle) admitOrStart(t *testing.T, tenant, id, fn string, priority int, lim ledger.TakeLimits) ledger.Admission {
	t.Helper()
	a, err := b.l.AdmitOrStart(context.Background(), ledger.TaskRef{Tenant: tenant, ID: id, Function: fn, Priority: priority},
		ledger.FastStart{Owner: "d1", Lease: takeLease, Limits: lim})
	require.NoError(t, err)
	b.checkCounts(t, fn)
	if a.Verdict == ledger.AdmitStarted {
		require.NotNil(t, a.Started)
		require.Equal(t, id, a.Started.ID)
		require.Equal(t, tenant, a.Started.Tenant)
	} else {
		require.Nil(t, a.Started)
	}
	return a
}

// fastStarted records a task and requires AdmitOrStart to start it.
func (b *bundle) fastStarted(t *testing.T, tenant, fn string, priority int, lim ledger.TakeLimits) ledger.Started {
	t.Helper()
	b.advance(time.Millisecond)
	id := b.record(t, tenant, fn, priority)
	a := b.admitOrStart(t, tenant, id, fn, priority, lim)
	require.Equal(t, ledger.AdmitStarted, a.Verdict, "task %s", id)
	return *a.Started
}

// waits records a task and requires AdmitOrStart to put it in the ready
// queue instead of starting it.
func (b *bundle) waits(t *testing.T, tenant, fn string, priority int, lim ledger.TakeLimits) string {
	t.Helper()
	b.advance(time.Millisecond)
	id := b.record(t, tenant, fn, priority)
	a := b.admitOrStart(t, tenant, id, fn, priority, lim)
	require.Equal(t, ledger.AdmitAdmitted, a.Verdict, "task %s", id)
	require.Contains(t, b.queued(t, fn, ledger.BandOf(priority), tenant), id)
	return id
}

// skipNoFastStart skips a fast-start test on the partitioned layout, which
// has none (AdmitOrStart admits there: TestNoFastStartPartitioned).
func skipNoFastStart(t *testing.T) {
	if testkit.LedgerPartitions() > 0 {
		t.Skip("the partitioned layout has no fast start")
	}
}

func TestFastStartWhenRoom(t *testing.T) {
	skipNoFastStart(t)
	t.Parallel()
	ctx := context.Background()
	b := setupDispatch(t, nil)
	id := b.record(t, "a", "f", 5)
	b.advance(3 * time.Millisecond)
	a := b.admitOrStart(t, "a", id, "f", 5, ledger.TakeLimits{})
	require.Equal(t, ledger.AdmitStarted, a.Verdict)
	s := *a.Started
	require.Equal(t, 1, s.Attempt)
	require.Equal(t, "m-"+id, string(s.Message))
	require.Equal(t, 3*time.Millisecond, s.Wait)
	require.Equal(t, b.now.Add(takeLease), a.LeaseUntil)

	// It never entered the ready queue: no entry, no count, no round robin.
	require.Empty(t, b.queued(t, "f", ledger.BandNormal, "a"))
	require.Equal(t, 0, b.count(t, "f", ledger.BandNormal))
	require.False(t, b.inRing(t, "f", ledger.BandNormal, "a"))

	// It runs under the lease, exactly as a take would leave it.
	task, err := b.l.Get(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateRunning, task.State)
	require.Equal(t, 1, task.Attempts)
	at, ok := b.delayed(t, "a", id)
	require.True(t, ok, "the lease is a delay-set entry")
	require.Equal(t, a.LeaseUntil.UnixMicro(), at.UnixMicro())
	inflight, err := b.l.Redis().ZScore(ctx, b.fnPrefix("f")+"inflight", ledger.Member("a", id)).Result()
	require.NoError(t, err)
	require.Equal(t, float64(a.LeaseUntil.UnixMicro()), inflight)
	log, err := b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	var kinds []contracts.LogKind
	for _, e := range log {
		kinds = append(kinds, e.Kind)
	}
	require.Equal(t, []contracts.LogKind{contracts.LogAccepted, contracts.LogStarted}, kinds)

	// A duplicate delivery finds it busy; it finishes like any attempt.
	dup := b.admitOrStart(t, "a", id, "f", 5, ledger.TakeLimits{})
	require.Equal(t, ledger.AdmitBusy, dup.Verdict)
	b.finish(t, "f", s)
	require.Equal(t, contracts.StateSucceeded, b.stateOf(t, "a", id))
	require.Equal(t, ledger.AdmitDone, b.admitOrStart(t, "a", id, "f", 5, ledger.TakeLimits{}).Verdict)
}

func TestFastStartNotWhenSomethingWaits(t *testing.T) {
	skipNoFastStart(t)
	t.Parallel()
	unlimited := ledger.TakeLimits{}

	t.Run("its band waits", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		b.ready(t, "b", "f", 5, 1)
		b.waits(t, "a", "f", 5, unlimited)
		require.Equal(t, 2, b.count(t, "f", ledger.BandNormal))
	})

	t.Run("a higher band waits", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		b.ready(t, "b", "f", 8, 1)
		b.waits(t, "a", "f", 5, unlimited)
		b.waits(t, "a", "f", 0, unlimited)
	})

	t.Run("only a lower band waits", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		b.ready(t, "b", "f", 0, 1)
		// Without a limit nothing competes for a slot: the high task starts.
		b.fastStarted(t, "a", "f", 8, unlimited)
		// Under a limit the band stride decides, so it waits its turn.
		b.waits(t, "a", "f", 8, ledger.TakeLimits{Concurrency: 10})
	})

	t.Run("its tenant's parked tasks wait", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, map[string]int{"a": 1})
		lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
		b.fastStarted(t, "a", "f", 5, lim)
		b.waits(t, "a", "f", 5, lim)
		tk := b.take(t, "f", 5, lim)
		require.Equal(t, 1, tk.Parked)
		// A parked tenant's tasks still count as waiting: no task of the
		// band starts ahead of them, another tenant's neither.
		b.waits(t, "b", "f", 5, lim)
	})
}

func TestFastStartNotAtLimit(t *testing.T) {
	skipNoFastStart(t)
	t.Parallel()

	t.Run("function limit", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		lim := ledger.TakeLimits{Concurrency: 2}
		first := b.fastStarted(t, "a", "f", 5, lim)
		b.fastStarted(t, "b", "f", 5, lim)
		id := b.waits(t, "a", "f", 5, lim)
		require.Equal(t, ledger.TakeLimit, b.take(t, "f", 5, lim).Status)
		// The slot freed goes to the waiting task, not to a newcomer.
		b.finish(t, "f", first)
		b.waits(t, "c", "f", 5, lim)
		tk := b.take(t, "f", 5, lim)
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, id, tk.Tasks[0].ID)
	})

	t.Run("adaptive limit", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		lim := ledger.TakeLimits{Concurrency: 10, AdaptiveMin: 1}
		b.fastStarted(t, "a", "f", 5, lim)
		b.waits(t, "a", "f", 5, lim)
	})

	t.Run("reserved for the high band", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		lim := ledger.TakeLimits{Concurrency: 2, ReservedHigh: 0.5}
		b.fastStarted(t, "a", "f", 5, lim)
		id := b.waits(t, "a", "f", 5, lim)
		require.Equal(t, ledger.TakeLimit, b.take(t, "f", 5, lim).Status)
		require.Contains(t, b.queued(t, "f", ledger.BandNormal, "a"), id)
	})

	t.Run("reservation left for the high band", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		lim := ledger.TakeLimits{Concurrency: 2, ReservedHigh: 0.5}
		b.fastStarted(t, "a", "f", 5, lim)
		b.fastStarted(t, "a", "f", 8, lim)
	})

	t.Run("tenant quota", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, map[string]int{"a": 1})
		lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
		b.fastStarted(t, "a", "f", 5, lim)
		b.waits(t, "a", "f", 5, lim)
	})

	t.Run("function rate", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		lim := ledger.TakeLimits{Rate: 1, Burst: 1}
		b.fastStarted(t, "a", "f", 5, lim)
		b.waits(t, "a", "f", 5, lim)
		tk := b.take(t, "f", 5, lim)
		require.Equal(t, ledger.TakeRate, tk.Status, "the fast start used the rate's turn")
		b.advance(time.Second)
		require.Len(t, b.take(t, "f", 5, lim).Tasks, 1)
	})

	t.Run("tenant rate", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Rate: 1, Burst: 1}}}
		b.fastStarted(t, "a", "f", 5, lim)
		id := b.waits(t, "a", "f", 5, lim)
		require.Empty(t, b.take(t, "f", 5, lim).Tasks)
		_, ok := b.delayed(t, "a", id)
		require.True(t, ok, "over its tenant's rate: waits for its turn")
		b.fastStarted(t, "b", "f", 5, lim)
	})
}

func TestFastStartKeepsTheGuards(t *testing.T) {
	skipNoFastStart(t)
	t.Parallel()
	ctx := context.Background()
	lim := ledger.TakeLimits{}

	t.Run("paused", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		_, err := b.l.CreatePause(ctx, "a", contracts.Selector{Function: "f"})
		require.NoError(t, err)
		id := b.record(t, "a", "f", 5)
		require.Equal(t, ledger.AdmitPaused, b.admitOrStart(t, "a", id, "f", 5, lim).Verdict)
		require.Equal(t, contracts.StatePaused, b.stateOf(t, "a", id))
		b.fastStarted(t, "b", "f", 5, lim)
	})

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		id := b.record(t, "a", "f", 5)
		_, err := b.l.Cancel(ctx, "a", id)
		require.NoError(t, err)
		require.Equal(t, ledger.AdmitDone, b.admitOrStart(t, "a", id, "f", 5, lim).Verdict)
	})

	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		exp := b.now.Add(time.Second)
		id := b.record(t, "a", "f", 5, func(ev *ledger.EventTasks) { ev.ExpiresAt = &exp })
		b.advance(2 * time.Second)
		require.Equal(t, ledger.AdmitExpired, b.admitOrStart(t, "a", id, "f", 5, lim).Verdict)
		require.Equal(t, contracts.StateExpired, b.stateOf(t, "a", id))
	})

	t.Run("a retry not yet due", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		s := b.fastStarted(t, "a", "f", 5, lim)
		ok, err := b.l.Retry(ctx, s.Tenant, s.ID, "f", s.Fence(), b.now.Add(time.Minute), "boom", false)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, ledger.AdmitEarly, b.admitOrStart(t, "a", s.ID, "f", 5, lim).Verdict)
		b.advance(time.Minute)
		again := b.admitOrStart(t, "a", s.ID, "f", 5, lim)
		require.Equal(t, ledger.AdmitStarted, again.Verdict, "a due retry starts at once too")
		require.Equal(t, 2, again.Started.Attempt)
		require.Equal(t, contracts.StateRunning, b.stateOf(t, "a", s.ID))
	})

	t.Run("taken over", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		s := b.fastStarted(t, "a", "f", 5, lim)
		b.advance(takeLease + time.Second)
		a := b.admitOrStart(t, "a", s.ID, "f", 5, lim)
		require.Equal(t, ledger.AdmitStarted, a.Verdict)
		require.Equal(t, 2, a.Started.Attempt)
		ok, err := b.l.Finish(ctx, s.Tenant, s.ID, "f", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.False(t, ok, "the old attempt's outcome is refused")
		b.finish(t, "f", *a.Started)
	})
}

// TestNoFastStartPartitioned: on the partitioned layout AdmitOrStart
// admits, even with room to start.
func TestNoFastStartPartitioned(t *testing.T) {
	t.Parallel()
	b := setupLayout(t, 4, nil)
	id := b.record(t, "a", "f", 5)
	a := b.admitOrStart(t, "a", id, "f", 5, ledger.TakeLimits{})
	require.Equal(t, ledger.AdmitAdmitted, a.Verdict)
	require.Contains(t, b.queued(t, "f", ledger.BandNormal, "a"), id)
}
