package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// Prune drops the index entries of records that are gone and only those,
// oldest first, a page at a time; a page of live records with one score
// (an event's tasks) does not hold it in place.
func TestPruneDropsEntriesOfExpiredRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	rdb := b.l.Redis()

	// Three live tasks made at once (one score), then two that end and
	// expire, then a dead one (kept longer).
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e0", "f1", "f2", "f3")})
	require.NoError(t, err)
	var live []string
	for _, x := range c[0].Tasks {
		live = append(live, x.ID)
	}
	var gone []string
	for _, e := range []string{"e1", "e2"} {
		b.advance(time.Millisecond)
		c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", e, "f1")})
		require.NoError(t, err)
		id := c[0].Tasks[0].ID
		cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
		require.NoError(t, err)
		ok, err := b.l.Finish(ctx, "acme", id, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.True(t, ok)
		// Its retention passes (the test Redis's clock is not the ledger's).
		require.NoError(t, rdb.Del(ctx, b.l.TaskKey("acme", id)).Err())
		gone = append(gone, id)
	}
	b.advance(time.Millisecond)
	dead := deadTask(t, b, "e3", "f1", contracts.ReasonNonRetryable)

	// Nothing is younger than the retention yet: nothing is looked at.
	n, next, err := b.l.Prune(ctx, "acme", "", 2)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Empty(t, next)

	before, err := b.l.Backlogs(ctx, []string{"acme"})
	require.NoError(t, err)
	require.EqualValues(t, 3, before[0].Ended, "two succeeded, one dead")

	b.advance(config.RetentionDefault.Std() + time.Minute)
	var cursor ledger.PruneCursor
	total, calls := 0, 0
	for {
		n, next, err := b.l.Prune(ctx, "acme", cursor, 2)
		require.NoError(t, err)
		total += n
		calls++
		cursor = next
		if cursor == "" {
			break
		}
		require.Less(t, calls, 10, "the scan moves on")
	}
	require.Equal(t, 2, total)
	after, err := b.l.Backlogs(ctx, []string{"acme"})
	require.NoError(t, err)
	require.Equal(t, before[0].Ended, after[0].Ended, "pruned entries still count as ended (the drain rate is Ended's growth)")

	all, err := rdb.ZRange(ctx, b.l.AllKey("acme"), 0, -1).Result()
	require.NoError(t, err)
	require.ElementsMatch(t, append(live, dead), all)
	succeeded, err := rdb.ZCard(ctx, b.l.StateKey("acme", contracts.StateSucceeded)).Result()
	require.NoError(t, err)
	require.Zero(t, succeeded)
	list, err := b.l.List(ctx, "acme", ledger.ListFilter{State: contracts.StateDead})
	require.NoError(t, err)
	require.Len(t, list.Tasks, 1)
	require.Equal(t, dead, list.Tasks[0].ID)
	for _, id := range gone {
		require.NotContains(t, all, id)
	}
}
