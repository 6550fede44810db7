package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// deadTasks creates n dead tasks of f1 in one Create (so they share one
// created-µs score: the ties a stepped walk must get through).
func deadTasks(t *testing.T, b *bundle, n int) []string {
	t.Helper()
	ctx := context.Background()
	var evs []ledger.EventTasks
	for i := range n {
		evs = append(evs, event("acme", fmt.Sprintf("e%d", i), "f1"))
	}
	c, err := b.l.Create(ctx, evs)
	require.NoError(t, err)
	ids := make([]string, n)
	for i := range c {
		ids[i] = c[i].Tasks[0].ID
		kill(t, b, ids[i])
	}
	return ids
}

// kill runs one attempt of a waiting task that dead-letters it.
func kill(t *testing.T, b *bundle, id string) {
	t.Helper()
	ctx := context.Background()
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	ok, err := b.l.Finish(ctx, "acme", id, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateDead, Error: "HTTP 400", Reason: contracts.ReasonNonRetryable})
	require.NoError(t, err)
	require.True(t, ok)
}

// A worker that still holds an attempt of a task that was dead-lettered
// and then redriven has the attempt number the new run's first attempt
// gets: its finish, retry and renewal must be refused all the same.
func TestStaleAttemptCannotEndARedrivenTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	claim := func() ledger.Claim {
		t.Helper()
		cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 5 * time.Second})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, cl.Verdict)
		return cl
	}
	stale := claim() // attempt 1; its worker stalls past its lease
	b.advance(6 * time.Second)
	second := claim() // taken over: attempt 2, which dead-letters it
	ok, err := b.l.Finish(ctx, "acme", id, "f1", second.Fence(), ledger.Outcome{State: contracts.StateDead, Error: "HTTP 400", Reason: contracts.ReasonNonRetryable})
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.l.Redrive(ctx, "acme", id))
	fresh := claim()
	require.Equal(t, stale.Attempt, fresh.Attempt, "a fresh budget: the attempt numbers start again")

	ok, err = b.l.Finish(ctx, "acme", id, "f1", stale.Fence(), ledger.Outcome{State: contracts.StateSucceeded, Result: []byte("stale")})
	require.NoError(t, err)
	require.False(t, ok, "the stale attempt's finish is refused")
	ok, err = b.l.Retry(ctx, "acme", id, "f1", stale.Fence(), b.now.Add(time.Minute), "stale", false)
	require.NoError(t, err)
	require.False(t, ok, "the stale attempt's retry is refused")
	lost, err := b.l.Renew(ctx, 5*time.Second, ledger.Lease{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Attempt: stale.Attempt, Redrives: stale.Redrives})
	require.NoError(t, err)
	require.Len(t, lost, 1, "the stale attempt's lease is not renewed")
	task, err := b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateRunning, task.State)

	lost, err = b.l.Renew(ctx, 5*time.Second, ledger.Lease{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Attempt: fresh.Attempt, Redrives: fresh.Redrives})
	require.NoError(t, err)
	require.Empty(t, lost)
	ok, err = b.l.Finish(ctx, "acme", id, "f1", fresh.Fence(), ledger.Outcome{State: contracts.StateSucceeded, Result: []byte("ok")})
	require.NoError(t, err)
	require.True(t, ok, "the current attempt's finish applies")
}

// Take (the dispatch path) hands out the redrive count with the attempt,
// so the dispatcher's finish carries the whole fence.
func TestTakeCarriesTheRedriveCount(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := deadTasks(t, b, 1)[0]
	require.NoError(t, b.l.Redrive(ctx, "acme", id))
	_, err := b.l.Admit(ctx, ledger.TaskRef{Tenant: "acme", ID: id, Function: "f1"})
	require.NoError(t, err)
	tk, err := b.l.Take(ctx, "f1", "d1", 10, time.Minute, ledger.TakeLimits{})
	require.NoError(t, err)
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	require.Equal(t, ledger.Fence{Attempt: 1, Redrives: 1}, s.Fence())
	require.Equal(t, "m-f1", string(s.Message), "the stored message comes after the count")

	ok, err := b.l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.False(t, ok, "attempt 1 of the run before the redrive")
	ok, err = b.l.Finish(ctx, "acme", id, "f1", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
}
