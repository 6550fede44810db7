package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func ids(l contracts.TaskList) []string {
	var out []string
	for _, t := range l.Tasks {
		out = append(out, t.ID)
	}
	return out
}

func TestListByEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a := event("acme", "e1", "f1", "f2")
	b.advance(time.Millisecond)
	other := event("acme", "e1", "f1")
	other.Event.Source = "/elsewhere"
	unrelated := event("acme", "e2", "f1")
	foreign := event("other", "e1", "f1")
	c, err := b.l.Create(ctx, []ledger.EventTasks{a, other, unrelated, foreign})
	require.NoError(t, err)

	bySource, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", EventSource: "/test"})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{c[0].Tasks[0].ID, c[0].Tasks[1].ID}, ids(bySource), "source and id are the dedup identity")
	require.Equal(t, "e1", bySource.Tasks[0].Event.ID)

	byID, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1"})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{c[0].Tasks[0].ID, c[0].Tasks[1].ID, c[1].Tasks[0].ID}, ids(byID), "every source's event with that id")

	page, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", Limit: 2})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 2)
	require.NotEmpty(t, page.NextCursor)
	rest, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", Limit: 2, Cursor: page.NextCursor})
	require.NoError(t, err)
	require.ElementsMatch(t, ids(byID), append(ids(page), ids(rest)...))

	fn, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", Function: "f2"})
	require.NoError(t, err)
	require.Equal(t, []string{c[0].Tasks[1].ID}, ids(fn))

	running, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", State: contracts.StateRunning})
	require.NoError(t, err)
	require.Empty(t, running.Tasks, "the state filter applies too")

	for _, f := range []ledger.ListFilter{{EventID: "e1"}, {EventID: "e1", EventSource: "/test"}} {
		none, err := b.l.List(ctx, "nobody", f)
		require.NoError(t, err)
		require.Empty(t, none.Tasks, "another tenant's event id answers nothing")
	}
	missing, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", EventSource: "/nowhere"})
	require.NoError(t, err)
	require.Empty(t, missing.Tasks)
}

func TestSuccessClearsAnEarlierAttemptsError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	claim := func() ledger.Fence {
		cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 10 * time.Second})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, cl.Verdict)
		return cl.Fence()
	}
	ok, err := b.l.Retry(ctx, "acme", id, "f1", claim(), b.now, "HTTP 500: boom", false)
	require.NoError(t, err)
	require.True(t, ok)
	got, err := b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "HTTP 500: boom", got.Error)

	ok, err = b.l.Finish(ctx, "acme", id, "f1", claim(), ledger.Outcome{State: contracts.StateSucceeded, Result: []byte(`{"ok":true}`)})
	require.NoError(t, err)
	require.True(t, ok)
	got, err = b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, got.State)
	require.Empty(t, got.Error, "a success does not keep an earlier attempt's error")
}

// The event-id index is refreshed by every event with that id: without
// trimming, one id reused by many sources (CloudEvents ids are unique per
// source only) would keep every task it ever named, past the dedup window.
func TestEventIndexKeepsOnlyTheDedupWindow(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	b := &bundle{now: time.Now().Truncate(time.Millisecond)}
	const window = time.Hour
	b.l = ledger.New(ledger.Config{
		Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), DedupWindow: window,
		Now: func() time.Time { b.mu.Lock(); defer b.mu.Unlock(); return b.now },
	})
	ctx := context.Background()
	var last ledger.Created
	for i := range 3 {
		ev := event("acme", "e1", "f1")
		ev.Event.Source = fmt.Sprintf("/src-%d", i)
		c, err := b.l.Create(ctx, []ledger.EventTasks{ev})
		require.NoError(t, err)
		last = c[0]
		b.advance(window + time.Second)
	}
	got, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1"})
	require.NoError(t, err)
	require.Equal(t, []string{last.Tasks[0].ID}, ids(got), "events older than the dedup window are not found")

	keys, err := rdb.Keys(ctx, b.l.TenantKeyPrefix("acme")+"e:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	n, err := rdb.ZCard(ctx, keys[0]).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the index holds only the window's tasks")
}
