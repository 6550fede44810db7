package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
)

// A renewal that comes after its lease ended, but before the scheduler
// took the task over, keeps the attempt running: it must count against
// the function's limit and its tenant's quota again, or one more attempt
// starts past each.
func TestRenewAfterTrimCountsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// late starts an attempt of fn under lim, lets its lease end, trims
	// the in-flight sets (a take of the function, the scheduler's unpark
	// sweep of the tenant), and renews.
	late := func(t *testing.T, b *bundle, fn string, lim ledger.TakeLimits) {
		t.Helper()
		b.ready(t, "a", fn, 5, 1)
		tk := b.take(t, fn, 1, lim)
		require.Len(t, tk.Tasks, 1)
		s := tk.Tasks[0]
		b.advance(takeLease + time.Second)
		require.Empty(t, b.take(t, fn, 0, lim).Tasks)
		require.NoError(t, b.l.Unpark(ctx, "a", 1))
		lost, err := b.l.Renew(ctx, takeLease, ledger.Lease{Tenant: "a", ID: s.ID, Function: fn, Owner: "d1", Attempt: s.Attempt})
		require.NoError(t, err)
		require.Empty(t, lost, "nobody took the task over: the attempt goes on")
	}

	t.Run("function limit", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		lim := ledger.TakeLimits{Concurrency: 1}
		late(t, b, "f", lim)
		b.ready(t, "a", "f", 5, 1)
		require.Empty(t, b.take(t, "f", 1, lim).Tasks, "the renewed attempt holds the function's only slot")
	})

	t.Run("tenant quota", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, map[string]int{"a": 1})
		lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
		late(t, b, "f", lim)
		b.ready(t, "a", "g", 5, 1)
		require.Empty(t, b.take(t, "g", 1, lim).Tasks, "the renewed attempt holds the tenant's quota")
	})
}

// A tenant parked at its quota is put back when its attempt ends even if
// its quota is gone meanwhile (the configuration changed across a
// restart): else its tasks wait forever.
func TestUnparkWhenQuotaRemoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quotas := map[string]int{}
	b := setupDispatch(t, quotas)
	lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
	b.ready(t, "a", "f", 5, 2)
	tk := b.take(t, "f", 2, lim)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, 1, tk.Parked)

	t.Run("finish", func(t *testing.T) {
		// The ledger's TenantQuota now says 0 (none).
		b.finish(t, "f", tk.Tasks[0])
		require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"), "unparked")
		require.Len(t, b.take(t, "f", 2, ledger.TakeLimits{}).Tasks, 1)
	})

	t.Run("sweep", func(t *testing.T) {
		b.ready(t, "a", "f", 5, 2)
		tk := b.take(t, "f", 2, lim)
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, 1, tk.Parked)
		b.advance(takeLease + time.Second) // its dispatcher died
		require.NoError(t, b.l.UnparkAll(ctx, map[string]int{"a": 0, "b": 1}))
		require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"), "unparked by the sweep without a quota")
	})
}

// An adaptive limit stored above the function's max (the max was lowered
// in the configuration) comes down to it at the next answer, instead of
// staying above it until enough throttled answers bring it down.
func TestFeedbackClampsToALoweredMax(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setState(t, "f", "limit", "40")
	require.Equal(t, aimd.Max, b.answers(t, "f", aimd, 0, 1, 0))
}
