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

// Tests of task control (control.go): selectors, pauses, resume and
// cancel by selector, against real Redis.

func TestMatches(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	task := contracts.Task{Function: "f", Batch: "b1", State: contracts.StateQueued, CreatedAt: created,
		Event: contracts.EventRef{Type: "com.x", Source: "/s", Subject: "orders/42"}}
	at := func(d time.Duration) *time.Time { t := created.Add(d); return &t }
	for _, c := range []struct {
		name string
		sel  contracts.Selector
		want bool
	}{
		{"function", contracts.Selector{Function: "f"}, true},
		{"other function", contracts.Selector{Function: "g"}, false},
		{"type", contracts.Selector{Type: "com.x"}, true},
		{"other type", contracts.Selector{Type: "com.y"}, false},
		{"source", contracts.Selector{Source: "/s"}, true},
		{"other source", contracts.Selector{Source: "/t"}, false},
		{"subject prefix", contracts.Selector{SubjectPrefix: "orders/"}, true},
		{"whole subject", contracts.Selector{SubjectPrefix: "orders/42"}, true},
		{"other subject prefix", contracts.Selector{SubjectPrefix: "users/"}, false},
		{"batch", contracts.Selector{Batch: "b1"}, true},
		{"other batch", contracts.Selector{Batch: "b2"}, false},
		{"state", contracts.Selector{Function: "f", State: contracts.StateQueued}, true},
		{"other state", contracts.Selector{Function: "f", State: contracts.StateRunning}, false},
		{"created after, equal", contracts.Selector{CreatedAfter: at(0)}, true},
		{"created after, later", contracts.Selector{CreatedAfter: at(time.Microsecond)}, false},
		{"created before, equal", contracts.Selector{CreatedBefore: at(0)}, false},
		{"created before, later", contracts.Selector{CreatedBefore: at(time.Microsecond)}, true},
		{"all given must match", contracts.Selector{Function: "f", Batch: "b2"}, false},
		{"all match", contracts.Selector{Function: "f", Type: "com.x", Source: "/s", SubjectPrefix: "o", Batch: "b1",
			CreatedAfter: at(-time.Hour), CreatedBefore: at(time.Hour)}, true},
	} {
		require.Equal(t, c.want, ledger.Matches(c.sel, &task), c.name)
	}
	require.ErrorIs(t, contracts.Selector{}.Validate(), contracts.ErrEmptySelector)
	require.ErrorIs(t, contracts.Selector{State: contracts.StateQueued}.Validate(contracts.PausableStates...), contracts.ErrEmptySelector)
	require.Error(t, contracts.Selector{Function: "f", State: contracts.StateRunning}.Validate(contracts.PausableStates...))
	require.NoError(t, contracts.Selector{Function: "f", State: contracts.StateRunning}.Validate(contracts.CancellableStates...))
}

// recordBatch creates one task of fn per event, n events in one Create
// call (they share the created time, the index score), with batch set.
func (b *bundle) recordBatch(t *testing.T, tenant, fn, batch string, n int) []string {
	t.Helper()
	evs := make([]ledger.EventTasks, n)
	ids := make([]string, n)
	for i := range evs {
		ids[i] = testkit.UniqueName("task")
		evs[i] = ledger.EventTasks{
			Tenant: tenant, Batch: batch,
			Event: contracts.EventRef{ID: testkit.UniqueName("ev"), Source: "/test", Type: "t", Subject: fmt.Sprintf("s/%d", i)},
			Tasks: []ledger.NewTask{{ID: ids[i], Function: fn, Message: []byte("m")}},
		}
	}
	_, err := b.l.Create(context.Background(), evs)
	require.NoError(t, err)
	return ids
}

func (b *bundle) states(t *testing.T, tenant string, ids []string) map[contracts.State]int {
	t.Helper()
	out := map[contracts.State]int{}
	for _, id := range ids {
		out[b.stateOf(t, tenant, id)]++
	}
	return out
}

func TestPauseHoldsWaitingAndLaterTasksAndResumeRunsThemOnce(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	// 1200 tasks with one created time: more than a scan step, all tied.
	held := b.recordBatch(t, "a", "f1", "", 1200)
	for _, id := range held[:100] {
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f1", 0).Verdict)
	}
	other := b.ready(t, "a", "f2", 0, 3)
	otherTenant := b.ready(t, "b", "f1", 0, 2)

	p, err := b.l.CreatePause(ctx, "a", contracts.Selector{Function: "f1"})
	require.NoError(t, err)
	require.Equal(t, 1200, p.Paused)
	require.Equal(t, map[contracts.State]int{contracts.StatePaused: 1200}, b.states(t, "a", held))

	// Entries already in the ready queue are dropped by take; a task
	// admitted later is paused; other functions and tenants run.
	tk := b.take(t, "f1", 500, ledger.TakeLimits{})
	require.ElementsMatch(t, otherTenant, idsOf(tk))
	later := b.record(t, "a", "f1", 5)
	require.Equal(t, ledger.AdmitPaused, b.admit(t, "a", later, "f1", 5).Verdict)
	require.Equal(t, contracts.StatePaused, b.stateOf(t, "a", later))
	require.Len(t, b.take(t, "f2", 10, ledger.TakeLimits{}).Tasks, len(other))

	ps, err := b.l.Pauses(ctx, "a")
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Equal(t, 1201, ps[0].Paused)
	others, err := b.l.Pauses(ctx, "b")
	require.NoError(t, err)
	require.Empty(t, others, "pauses are per tenant")
	_, err = b.l.Resume(ctx, "b", p.ID)
	require.ErrorIs(t, err, ledger.ErrPauseNotFound)

	n, err := b.l.Resume(ctx, "a", p.ID)
	require.NoError(t, err)
	require.Equal(t, 1201, n)
	all := append(held, later)
	require.Equal(t, map[contracts.State]int{contracts.StateQueued: 1201}, b.states(t, "a", all))
	started := map[string]int{}
	first := ""
	for {
		tk := b.take(t, "f1", 500, ledger.TakeLimits{})
		if len(tk.Tasks) == 0 {
			break
		}
		for _, s := range tk.Tasks {
			if first == "" {
				first = s.ID
			}
			started[s.ID]++
		}
	}
	require.Len(t, started, 1201)
	for id, k := range started {
		require.Equal(t, 1, k, "task %s started once", id)
	}
	require.Equal(t, later, first, "the priority 5 task starts first")
	b.checkCounts(t, "f1")
	ps, err = b.l.Pauses(ctx, "a")
	require.NoError(t, err)
	require.Empty(t, ps)
	_, err = b.l.Resume(ctx, "a", p.ID)
	require.ErrorIs(t, err, ledger.ErrPauseNotFound)
}

func idsOf(tk ledger.Taken) []string {
	var ids []string
	for _, s := range tk.Tasks {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestOverlappingPausesHoldUntilBothAreGone(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	both := b.recordBatch(t, "a", "f1", "x", 5)
	onlyFn := b.recordBatch(t, "a", "f1", "y", 3)
	p1, err := b.l.CreatePause(ctx, "a", contracts.Selector{Function: "f1"})
	require.NoError(t, err)
	require.Equal(t, 8, p1.Paused)
	p2, err := b.l.CreatePause(ctx, "a", contracts.Selector{Batch: "x"})
	require.NoError(t, err)
	require.Equal(t, 5, p2.Paused, "tasks already paused by another pause are held by this one too")

	n, err := b.l.Resume(ctx, "a", p1.ID)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, map[contracts.State]int{contracts.StatePaused: 5}, b.states(t, "a", both))
	require.Equal(t, map[contracts.State]int{contracts.StateQueued: 3}, b.states(t, "a", onlyFn))
	later := b.recordBatch(t, "a", "f1", "x", 1)[0]
	require.Equal(t, ledger.AdmitPaused, b.admit(t, "a", later, "f1", 0).Verdict)

	n, err = b.l.Resume(ctx, "a", p2.ID)
	require.NoError(t, err)
	require.Equal(t, 6, n)
	require.Equal(t, map[contracts.State]int{contracts.StateQueued: 6}, b.states(t, "a", append(both, later)))
	require.Len(t, b.take(t, "f1", 100, ledger.TakeLimits{}).Tasks, 9)
}

func TestPausedDelayedTaskKeepsItsTimeAndExpires(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	due := b.now.Add(time.Hour)
	delayed := b.record(t, "a", "f1", 0, func(e *ledger.EventTasks) { e.DueAt = due })
	exp := b.now.Add(time.Minute)
	expiring := b.record(t, "a", "f1", 0, func(e *ledger.EventTasks) { e.ExpiresAt = &exp })
	p, err := b.l.CreatePause(ctx, "a", contracts.Selector{Function: "f1"})
	require.NoError(t, err)
	require.Equal(t, 2, p.Paused)

	b.advance(2 * time.Minute)
	n, err := b.l.ExpireDue(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, contracts.StateExpired, b.stateOf(t, "a", expiring), "a paused task's ttl still applies")

	n, err = b.l.Resume(ctx, "a", p.ID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, contracts.StateScheduled, b.stateOf(t, "a", delayed))
	at, ok := b.delayed(t, "a", delayed)
	require.True(t, ok)
	require.Equal(t, due.UnixMicro(), at.UnixMicro(), "a resumed delayed task waits for its time")
}

func TestCancelMatchingWaitingPausedAndRunning(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	ids := b.recordBatch(t, "a", "f1", "x", 1100)
	keep := b.recordBatch(t, "a", "f1", "y", 4)
	for _, id := range ids[:10] {
		b.admit(t, "a", id, "f1", 0)
	}
	tk := b.take(t, "f1", 4, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 4)
	_, err := b.l.CreatePause(ctx, "a", contracts.Selector{Batch: "x", State: contracts.StateQueued})
	require.NoError(t, err)

	sel := contracts.Selector{Batch: "x"}
	dry, err := b.l.CancelMatching(ctx, "a", contracts.CancelRequest{Selector: sel, DryRun: true})
	require.NoError(t, err)
	require.Equal(t, contracts.CancelResponse{Matched: 1100}, dry)
	other, err := b.l.CancelMatching(ctx, "b", contracts.CancelRequest{Selector: sel})
	require.NoError(t, err)
	require.Equal(t, contracts.CancelResponse{}, other, "another tenant's tasks are not selected")

	ps := b.l.Redis().Subscribe(ctx, b.l.AbortChannel())
	t.Cleanup(func() { _ = ps.Close() })
	_, err = ps.Receive(ctx)
	require.NoError(t, err)
	outbox0, err := b.l.Redis().XLen(ctx, b.l.OutboxStream("a")).Result()
	require.NoError(t, err)

	// In steps of 400, as the CLI goes: the cursor continues where the
	// last step stopped, ties on the created time included.
	total := contracts.CancelResponse{}
	req := contracts.CancelRequest{Selector: sel, Limit: 400}
	steps := 0
	for {
		r, err := b.l.CancelMatching(ctx, "a", req)
		require.NoError(t, err)
		steps++
		total.Matched += r.Matched
		total.Cancelled += r.Cancelled
		if r.NextCursor == "" {
			break
		}
		req.Cursor = r.NextCursor
	}
	require.GreaterOrEqual(t, steps, 3)
	require.Equal(t, contracts.CancelResponse{Matched: 1100, Cancelled: 1100}, total)
	require.Equal(t, map[contracts.State]int{contracts.StateCancelled: 1100}, b.states(t, "a", ids))
	require.Equal(t, map[contracts.State]int{contracts.StateQueued: 4}, b.states(t, "a", keep))
	outbox, err := b.l.Redis().XLen(ctx, b.l.OutboxStream("a")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1100, outbox-outbox0, "one result event each")

	aborted := map[string]bool{}
	for range tk.Tasks {
		select {
		case m := <-ps.Channel():
			aborted[m.Payload] = true
		case <-time.After(5 * time.Second):
			t.Fatal("no abort message")
		}
	}
	for _, s := range tk.Tasks {
		require.True(t, aborted[ledger.Member("a", s.ID)])
		ok, err := b.l.Finish(ctx, "a", s.ID, "f1", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.False(t, ok, "the aborted attempt's outcome is refused")
		ok, err = b.l.Retry(ctx, "a", s.ID, "f1", s.Fence(), b.now, "boom", false)
		require.NoError(t, err)
		require.False(t, ok)
		require.Equal(t, contracts.StateCancelled, b.stateOf(t, "a", s.ID))
	}
	inflight, err := b.l.Redis().ZCard(ctx, b.l.InflightKey("f1")).Result()
	require.NoError(t, err)
	require.Zero(t, inflight, "the aborted attempts' slots are free")

	_, err = b.l.CancelMatching(ctx, "a", contracts.CancelRequest{Selector: sel, Cursor: "bogus"})
	require.ErrorIs(t, err, ledger.ErrBadControlCursor)
}

func TestCancelRunningTaskByID(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.ready(t, "a", "f1", 0, 1)[0]
	tk := b.take(t, "f1", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	task, err := b.l.Cancel(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateCancelled, task.State)
	_, err = b.l.Cancel(ctx, "a", id)
	require.ErrorIs(t, err, ledger.ErrNotCancellable)
	_, err = b.l.Cancel(ctx, "b", id)
	require.ErrorIs(t, err, ledger.ErrNotFound)
	lost, err := b.l.Renew(ctx, time.Minute, ledger.Lease{Tenant: "a", ID: id, Function: "f1", Owner: "d1", Attempt: 1})
	require.NoError(t, err)
	require.Len(t, lost, 1, "the renewal finds the lease lost")
}
