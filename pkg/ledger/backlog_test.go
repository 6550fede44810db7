package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// A tenant's backlog counts its queued and paused tasks, not scheduled,
// running, retrying inside their backoff or ended ones; Ended grows as
// tasks end.
func TestBacklogs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	var events []ledger.EventTasks
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		events = append(events, event("acme", id, "f1"))
	}
	later := event("acme", "e5", "f1")
	later.DueAt = b.now.Add(time.Hour) // scheduled: not waiting yet
	events = append(events, later, event("other", "e1", "f1", "f2"))
	c, err := b.l.Create(ctx, events)
	require.NoError(t, err)

	got, err := b.l.Backlogs(ctx, []string{"acme", "other", "nobody"})
	require.NoError(t, err)
	require.Equal(t, []ledger.Backlog{
		{Tenant: "acme", Waiting: 4},
		{Tenant: "other", Waiting: 2},
		{Tenant: "nobody"},
	}, got)

	// e1 runs and succeeds; e2 runs and waits out its backoff (waiting for
	// its time, not for capacity); e3 runs.
	claim := func(i int) {
		t.Helper()
		cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: c[i].Tasks[0].ID, Function: "f1", Owner: "d", Lease: 10 * time.Second})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, cl.Verdict)
	}
	claim(0)
	claim(1)
	claim(2)
	ok, err := b.l.Finish(ctx, "acme", c[0].Tasks[0].ID, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.l.Retry(ctx, "acme", c[1].Tasks[0].ID, "f1", ledger.Fence{Attempt: 1}, b.now.Add(time.Minute), "boom", false)
	require.NoError(t, err)
	require.True(t, ok)

	got, err = b.l.Backlogs(ctx, []string{"acme"})
	require.NoError(t, err)
	require.Equal(t, []ledger.Backlog{{Tenant: "acme", Waiting: 1, Ended: 1}}, got, "e4 queued waits; e2 retrying in its backoff does not; e1 ended")

	// A pause holds e2, e4 and e5 (retrying, queued, scheduled): paused
	// tasks are stored and wait for nothing but the resume, so all count.
	_, err = b.l.CreatePause(ctx, "acme", contracts.Selector{Function: "f1"})
	require.NoError(t, err)
	got, err = b.l.Backlogs(ctx, []string{"acme"})
	require.NoError(t, err)
	require.Equal(t, []ledger.Backlog{{Tenant: "acme", Waiting: 3, Ended: 1}}, got, "e2, e4 and e5 paused wait")

	none, err := b.l.Backlogs(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, none)
}
