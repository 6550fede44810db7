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

// A task redriven by a stepped walk that dies again before the walk ends
// comes back into the dead index at its old place (score = created µs,
// among ties by id): the walk, continuing after the last task it passed,
// must neither meet it again nor skip a task it has not reached.
func TestSteppedRedriveMeetsATaskThatDiesAgainOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := deadTasks(t, b, 7)
	cursor, steps, done := "", 0, 0
	for {
		res, err := b.l.RedriveAll(ctx, "acme", ledger.ListFilter{Limit: 2, Cursor: cursor}, false)
		require.NoError(t, err)
		steps++
		done += res.Done
		if steps == 1 {
			// Both tasks of the first step die again at once.
			q, err := b.l.List(ctx, "acme", ledger.ListFilter{State: contracts.StateQueued})
			require.NoError(t, err)
			require.Len(t, q.Tasks, 2)
			for _, task := range q.Tasks {
				kill(t, b, task.ID)
			}
		}
		if res.NextCursor == "" {
			break
		}
		cursor = res.NextCursor
		require.Less(t, steps, 10, "the walk ends")
	}
	require.Equal(t, len(ids), done, "each dead task redriven once")
	for _, id := range ids {
		task, err := b.l.Get(ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, 1, task.Redrives, "task %s: redriven once by the walk", id)
	}
}

// A cursor of an earlier release ("<score>:<n>": n entries at that score
// passed) still continues a walk, from the place it named, and the page
// answers a cursor of the current form.
func TestListContinuesAnEarlierReleasesCursor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var evs []ledger.EventTasks
	for i := range 10 {
		evs = append(evs, event("acme", fmt.Sprintf("e%d", i), "f1"))
	}
	tied := b.now.UnixMicro()
	_, err := b.l.Create(ctx, evs)
	require.NoError(t, err)
	b.advance(time.Millisecond)
	_, err = b.l.Create(ctx, []ledger.EventTasks{event("acme", "later", "f1")})
	require.NoError(t, err)
	all, err := b.l.List(ctx, "acme", ledger.ListFilter{Limit: 100})
	require.NoError(t, err)
	require.Len(t, all.Tasks, 11)
	ids := func(ts []contracts.Task) []string {
		out := make([]string, len(ts))
		for i := range ts {
			out[i] = ts[i].ID
		}
		return out
	}
	want := ids(all.Tasks)

	page, err := b.l.List(ctx, "acme", ledger.ListFilter{Limit: 3, Cursor: fmt.Sprintf("%d:4", tied)})
	require.NoError(t, err)
	require.Equal(t, want[5:8], ids(page.Tasks), "4 of the ties passed")
	require.NotContains(t, page.NextCursor, ":", "answered in the current form")
	rest, err := b.l.List(ctx, "acme", ledger.ListFilter{Limit: 3, Cursor: page.NextCursor})
	require.NoError(t, err)
	require.Equal(t, want[8:11], ids(rest.Tasks))

	page, err = b.l.List(ctx, "acme", ledger.ListFilter{Limit: 3, Cursor: fmt.Sprintf("%d:0", tied)})
	require.NoError(t, err)
	require.Equal(t, want[1:4], ids(page.Tasks), "none of the ties passed")
	page, err = b.l.List(ctx, "acme", ledger.ListFilter{Limit: 3, Cursor: fmt.Sprintf("%d:50", tied)})
	require.NoError(t, err)
	require.Empty(t, page.Tasks, "past every tie")

	for _, bad := range []string{"x:1", "1:-1", "bogus", "MTIz"} {
		_, err = b.l.List(ctx, "acme", ledger.ListFilter{Cursor: bad})
		require.ErrorIs(t, err, ledger.ErrBadCursor, bad)
	}
}

// Purging a dead task forgets it in its event's dedup entry: the same
// event submitted again (within the dedup window) is no longer answered
// with the purged task, which GET would not find; once none of the event's
// tasks is left, the event makes new ones. A task of the same event that
// was not purged still dedups it.
func TestPurgeForgetsTheTaskInDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	purges := map[string]func(b *bundle, id string){
		"one": func(b *bundle, id string) { require.NoError(t, b.l.Purge(ctx, "acme", id)) },
		"all": func(b *bundle, _ string) {
			res, err := b.l.PurgeAll(ctx, "acme", ledger.ListFilter{}, false)
			require.NoError(t, err)
			require.Equal(t, 1, res.Done)
		},
		"step": func(b *bundle, _ string) {
			res, err := b.l.PurgeAll(ctx, "acme", ledger.ListFilter{Limit: 10}, false)
			require.NoError(t, err)
			require.Equal(t, 1, res.Done)
		},
	}
	for name, purge := range purges {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id := deadTasks(t, b, 1)[0]
			purge(b, id)
			again, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e0", "f1")})
			require.NoError(t, err)
			require.False(t, again[0].Duplicate, "the purged task's event is forgotten")
			require.NotEqual(t, id, again[0].Tasks[0].ID)
			found, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e0"})
			require.NoError(t, err)
			require.Len(t, found.Tasks, 1, "the event's tasks: the new one")
			require.Equal(t, again[0].Tasks[0].ID, found.Tasks[0].ID)
		})
	}

	t.Run("fan-out", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "fan", "f1", "f2")})
		require.NoError(t, err)
		dead, kept := c[0].Tasks[0].ID, c[0].Tasks[1].ID
		kill(t, b, dead)
		require.NoError(t, b.l.Purge(ctx, "acme", dead))
		again, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "fan", "f1", "f2")})
		require.NoError(t, err)
		require.True(t, again[0].Duplicate, "f2's task still dedups the event")
		require.Len(t, again[0].Tasks, 1)
		require.Equal(t, kept, again[0].Tasks[0].ID)
		require.Equal(t, "f2", again[0].Tasks[0].Function)
	})
}
