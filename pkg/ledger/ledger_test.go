package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

type bundle struct {
	l   *ledger.Ledger
	now time.Time
	mu  sync.Mutex
}

func (b *bundle) advance(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = b.now.Add(d)
}

func setup(t *testing.T) *bundle {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	b := &bundle{now: time.Now().Truncate(time.Millisecond)}
	b.l = ledger.New(ledger.Config{
		Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), PublishGuard: 30 * time.Second,
		Now: func() time.Time { b.mu.Lock(); defer b.mu.Unlock(); return b.now },
	})
	return b
}

func event(tenant, id string, fns ...string) ledger.EventTasks {
	ev := ledger.EventTasks{Tenant: tenant, Event: contracts.EventRef{ID: id, Source: "/test", Type: "t"}}
	for _, fn := range fns {
		ev.Tasks = append(ev.Tasks, ledger.NewTask{ID: testkit.UniqueName("task"), Function: fn, Message: []byte("m-" + fn)})
	}
	return ev
}

func TestCreateDedupsPerTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	first, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1", "f2")})
	require.NoError(t, err)
	require.False(t, first[0].Duplicate)
	require.Len(t, first[0].Tasks, 2)

	again, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1", "f2"), event("other", "e1", "f1")})
	require.NoError(t, err)
	require.True(t, again[0].Duplicate)
	require.Equal(t, first[0].Tasks[0].ID, again[0].Tasks[0].ID)
	require.Equal(t, "f2", again[0].Tasks[1].Function)
	require.Equal(t, contracts.StateQueued, again[0].Tasks[1].State)
	require.False(t, again[1].Duplicate, "the same source+id of another tenant is a new event")

	_, err = b.l.Get(ctx, "other", first[0].Tasks[0].ID)
	require.ErrorIs(t, err, ledger.ErrNotFound, "a task never leaks across tenants")
}

func TestLifecycleSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	require.NoError(t, b.l.Enqueued(ctx, "acme", c[0].GuardScore, id))

	b.advance(40 * time.Millisecond)
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	require.Equal(t, 1, cl.Attempt)

	busy, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d2", Lease: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictBusy, busy.Verdict, "a running task is not run twice at once")

	b.advance(25 * time.Millisecond)
	ok, err := b.l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded, Result: []byte(`{"ok":true}`)})
	require.NoError(t, err)
	require.True(t, ok)

	task, err := b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, task.State)
	require.Equal(t, 1, task.Attempts)
	require.EqualValues(t, 40, *task.QueueWaitMS)
	require.EqualValues(t, 25, *task.RunMS)
	require.JSONEq(t, `{"ok":true}`, string(task.Result))

	done, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d3", Lease: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictDone, done.Verdict, "a succeeded task never runs again")

	again, err := b.l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateFailed, Error: "late"})
	require.NoError(t, err)
	require.False(t, again, "a second terminal transition is fenced off")

	entries, err := b.l.Redis().XRange(ctx, b.l.OutboxStream("acme"), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 1, "exactly one outbox entry per task")
	rec := ledger.RecordFromValues(entries[0].Values)
	require.Equal(t, id, rec.ID)
	require.Equal(t, contracts.StateSucceeded, rec.State)
	require.NotContains(t, entries[0].Values, "env")
}

func TestRetryGoesThroughDelaySet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	require.NoError(t, b.l.Enqueued(ctx, "acme", c[0].GuardScore, id))

	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 10 * time.Second})
	require.NoError(t, err)
	ok, err := b.l.Retry(ctx, "acme", id, "f1", cl.Fence(), b.now.Add(2*time.Second), "boom", false)
	require.NoError(t, err)
	require.True(t, ok)

	due, err := b.l.TakeDue(ctx, 10, 30*time.Second)
	require.NoError(t, err)
	require.Empty(t, due, "not due before its backoff")

	b.advance(2 * time.Second)
	due, err = b.l.TakeDue(ctx, 10, 30*time.Second)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, id, due[0].ID)
	require.Equal(t, contracts.StateRetrying, due[0].State)
	require.Equal(t, []byte("m-f1"), due[0].Message)

	again, err := b.l.TakeDue(ctx, 10, 30*time.Second)
	require.NoError(t, err)
	require.Empty(t, again, "a taken entry is guarded, not handed out twice")

	_, err = b.l.Admit(ctx, ledger.TaskRef{Tenant: "acme", ID: id, Function: "f1"})
	require.NoError(t, err)
	task, err := b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateQueued, task.State)
	require.Equal(t, "boom", task.Error)

	b.advance(time.Minute)
	none, err := b.l.TakeDue(ctx, 10, 30*time.Second)
	require.NoError(t, err)
	require.Empty(t, none, "requeued entries leave the delay set")

	cl2, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d2", Lease: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, 2, cl2.Attempt)
	stale, err := b.l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.False(t, stale, "an old attempt cannot finish the task")
}

func TestPublishGuardRepublishesUnconfirmedTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	b.advance(31 * time.Second)
	due, err := b.l.TakeDue(ctx, 10, 30*time.Second)
	require.NoError(t, err)
	require.Len(t, due, 1, "a task whose publish was never confirmed comes back")
	require.Equal(t, c[0].Tasks[0].ID, due[0].ID)
}

func TestExpiredLeaseIsTakenOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	_, err = b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 5 * time.Second})
	require.NoError(t, err)
	lost, err := b.l.Renew(ctx, 5*time.Second, ledger.Lease{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Attempt: 1})
	require.NoError(t, err)
	require.Empty(t, lost)
	b.advance(6 * time.Second)
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d2", Lease: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	require.Equal(t, 2, cl.Attempt)
	lost, err = b.l.Renew(ctx, 5*time.Second, ledger.Lease{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Attempt: 1})
	require.NoError(t, err)
	require.Len(t, lost, 1, "the dead owner's lease is gone")
}

func TestListPagesThroughTies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// 25 events in one Create share one created-µs score.
	var evs []ledger.EventTasks
	for i := range 25 {
		fn := "even"
		if i%2 == 1 {
			fn = "odd"
		}
		evs = append(evs, event("acme", fmt.Sprintf("e%d", i), fn))
	}
	_, err := b.l.Create(ctx, evs)
	require.NoError(t, err)
	b.advance(time.Millisecond)
	_, err = b.l.Create(ctx, []ledger.EventTasks{event("acme", "later", "odd")})
	require.NoError(t, err)

	seen := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		page, err := b.l.List(ctx, "acme", ledger.ListFilter{Limit: 7, Cursor: cursor})
		require.NoError(t, err)
		pages++
		for _, task := range page.Tasks {
			require.False(t, seen[task.ID], "task %s listed twice", task.ID)
			seen[task.ID] = true
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Len(t, seen, 26)
	require.Equal(t, 4, pages)

	odd, err := b.l.List(ctx, "acme", ledger.ListFilter{Function: "odd", State: contracts.StateQueued, Limit: 100})
	require.NoError(t, err)
	require.Len(t, odd.Tasks, 13)
	require.Equal(t, "later", odd.Tasks[0].Event.ID, "newest first")

	_, err = b.l.List(ctx, "acme", ledger.ListFilter{Cursor: "bogus"})
	require.ErrorIs(t, err, ledger.ErrBadCursor)
}

func TestScriptsSurviveScriptFlush(t *testing.T) {
	// Not parallel: SCRIPT FLUSH affects every test using this Redis.
	b := setup(t)
	ctx := context.Background()
	flush := func() { require.NoError(t, b.l.Redis().ScriptFlush(ctx).Err()) }
	flush()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")}) // one event: batched
	require.NoError(t, err)
	require.Len(t, c[0].Tasks, 1)
	flush()
	c2, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e2", "f1"), event("acme", "e3", "f1")}) // a pipeline
	require.NoError(t, err)
	require.Len(t, c2, 2)
	id := c[0].Tasks[0].ID
	flush()
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	flush()
	ok, err := b.l.Finish(ctx, "acme", id, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	flush()
	b.advance(time.Minute)                        // past the other tasks' publish guards
	due, err := b.l.TakeDue(ctx, 10, time.Minute) // a single script call
	require.NoError(t, err)
	require.Len(t, due, 2)
}

// TestConcurrentCallsShareRoundTrips runs many tasks' create, claim and
// finish from concurrent goroutines: every call gets its own answer, and
// the calls went to Redis in fewer pipelines than there were calls.
func TestConcurrentCallsShareRoundTrips(t *testing.T) {
	testkit.SkipShort(t, "900 concurrent Lua script calls take the embedded Redis (gopher-lua) tens of seconds")
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	counter := &pipelineCounter{}
	rdb.AddHook(counter)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	ctx := context.Background()
	require.NoError(t, l.LoadScripts(ctx))

	const n = 300
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- lifecycle(ctx, l, fmt.Sprintf("e%d", i))
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	calls, pipelines := counter.counts()
	perTask := 3
	if l.Partitioned() {
		perTask = 4 // finish is finish.t and release.f
	}
	require.Equal(t, perTask*n, calls, "one create, claim and finish per task")
	require.Less(t, pipelines, calls, "concurrent calls share round trips")
	t.Logf("%d script calls in %d round trips", calls, pipelines)
}

// lifecycle creates, claims and finishes one task and checks each answer.
func lifecycle(ctx context.Context, l *ledger.Ledger, eventID string) error {
	ev := event("acme", eventID, "f1")
	c, err := l.Create(ctx, []ledger.EventTasks{ev})
	if err != nil {
		return err
	}
	if c[0].Duplicate || len(c[0].Tasks) != 1 || c[0].Tasks[0].ID != ev.Tasks[0].ID {
		return fmt.Errorf("create %s: got %+v", eventID, c[0])
	}
	id := ev.Tasks[0].ID
	cl, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d", Lease: 10 * time.Second})
	if err != nil {
		return err
	}
	if cl.Verdict != ledger.VerdictRun || cl.Attempt != 1 {
		return fmt.Errorf("claim %s: got %+v", id, cl)
	}
	ok, err := l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded, Result: []byte(`"` + id + `"`)})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("finish %s: fenced off", id)
	}
	task, err := l.Get(ctx, "acme", id)
	if err != nil {
		return err
	}
	if task.State != contracts.StateSucceeded || string(task.Result) != `"`+id+`"` {
		return fmt.Errorf("task %s: state %s, result %s", id, task.State, task.Result)
	}
	return nil
}

// pipelineCounter counts the script calls sent in pipelines and the
// pipelines (round trips) that carried them.
type pipelineCounter struct {
	mu               sync.Mutex
	calls, pipelines int
}

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, cmd := range cmds {
			if cmd.Name() == "evalsha" {
				n++
			}
		}
		if n > 0 {
			c.mu.Lock()
			c.calls += n
			c.pipelines++
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (c *pipelineCounter) counts() (calls, pipelines int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.pipelines
}

func TestCancelWaitingTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1"), event("acme", "e2", "f1")})
	require.NoError(t, err)
	waiting, running := c[0].Tasks[0].ID, c[1].Tasks[0].ID

	_, err = b.l.Cancel(ctx, "other", waiting)
	require.ErrorIs(t, err, ledger.ErrNotFound, "another tenant cannot cancel it")

	task, err := b.l.Cancel(ctx, "acme", waiting)
	require.NoError(t, err)
	require.Equal(t, contracts.StateCancelled, task.State)
	_, err = b.l.Cancel(ctx, "acme", waiting)
	require.ErrorIs(t, err, ledger.ErrNotCancellable)
	require.ErrorContains(t, err, "it is cancelled")

	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: waiting, Function: "f1", Owner: "d1", Lease: time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictDone, cl.Verdict, "a cancelled task never runs")
	b.advance(time.Minute)
	due, err := b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	for _, d := range due {
		require.NotEqual(t, waiting, d.ID, "cancel removed its publish guard")
	}

	_, err = b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: running, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	// A running task is cancelled too; its attempt's outcome is refused.
	task, err = b.l.Cancel(ctx, "acme", running)
	require.NoError(t, err)
	require.Equal(t, contracts.StateCancelled, task.State)
	ok, err := b.l.Finish(ctx, "acme", running, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.False(t, ok)

	entries, err := b.l.Redis().XRange(ctx, b.l.OutboxStream("acme"), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 2)
	for _, e := range entries {
		require.Equal(t, contracts.StateCancelled, ledger.RecordFromValues(e.Values).State)
	}
}

func TestExpiredTaskNeverRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ev := event("acme", "e1", "f1")
	ev.ExpiresAt = new(b.now.Add(10 * time.Second))
	c, err := b.l.Create(ctx, []ledger.EventTasks{ev, event("acme", "e2", "f1")})
	require.NoError(t, err)
	id, other := c[0].Tasks[0].ID, c[1].Tasks[0].ID

	b.advance(11 * time.Second)
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictExpired, cl.Verdict)
	task, err := b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateExpired, task.State)
	require.Equal(t, 0, task.Attempts)
	require.Contains(t, task.Error, "ttl")

	again, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictDone, again.Verdict)
	noTTL, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: other, Function: "f1", Owner: "d1", Lease: time.Second})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, noTTL.Verdict, "a task without a ttl does not expire")

	entries, err := b.l.Redis().XRange(ctx, b.l.OutboxStream("acme"), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 1, "one result event for the expired task")
}

func TestLeaseIsADelayEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	require.NoError(t, b.l.Enqueued(ctx, "acme", c[0].GuardScore, id))
	_, err = b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 10 * time.Second})
	require.NoError(t, err)

	// A live dispatcher renews: the entry never comes due.
	b.advance(8 * time.Second)
	lost, err := b.l.Renew(ctx, 10*time.Second, ledger.Lease{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Attempt: 1})
	require.NoError(t, err)
	require.Empty(t, lost)
	b.advance(8 * time.Second)
	due, err := b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, due, "a renewed lease is not due")

	// The dispatcher dies: when the lease ends the task is due again.
	b.advance(3 * time.Second)
	due, err = b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, contracts.StateRunning, due[0].State)
	require.True(t, due[0].LeaseUntil.Before(b.now), "the lease has ended")

	// Finishing drops the entry.
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d2", Lease: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, 2, cl.Attempt)
	ok, err := b.l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 2}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	b.advance(time.Hour)
	due, err = b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, due)
}

// deadTask creates a task of fn and runs one attempt that dead-letters it.
func deadTask(t *testing.T, b *bundle, id string, fn string, reason contracts.Reason) string {
	t.Helper()
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", id, fn)})
	require.NoError(t, err)
	task := c[0].Tasks[0].ID
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: task, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	ok, err := b.l.Finish(ctx, "acme", task, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateDead, Error: "HTTP 500", Reason: reason})
	require.NoError(t, err)
	require.True(t, ok)
	return task
}

func TestDeadLetterRedriveAndPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a := deadTask(t, b, "e1", "resize", contracts.ReasonAttemptsExhausted)
	b.advance(time.Second)
	cut := b.now
	bb := deadTask(t, b, "e2", "resize", contracts.ReasonNonRetryable)
	other := deadTask(t, b, "e3", "mail", contracts.ReasonNonRetryable)

	dead, err := b.l.Get(ctx, "acme", a)
	require.NoError(t, err)
	require.Equal(t, contracts.StateDead, dead.State)
	require.Equal(t, contracts.ReasonAttemptsExhausted, dead.Reason)

	list, err := b.l.List(ctx, "acme", ledger.ListFilter{State: contracts.StateDead, Reason: contracts.ReasonNonRetryable})
	require.NoError(t, err)
	require.Len(t, list.Tasks, 2)
	list, err = b.l.List(ctx, "acme", ledger.ListFilter{State: contracts.StateDead, FinishedSince: cut, Function: "resize"})
	require.NoError(t, err)
	require.Len(t, list.Tasks, 1)
	require.Equal(t, bb, list.Tasks[0].ID)

	dry, err := b.l.RedriveAll(ctx, "acme", ledger.ListFilter{Function: "resize"}, true)
	require.NoError(t, err)
	require.Equal(t, contracts.DLQResult{Matched: 2, DryRun: true}, dry)
	still, err := b.l.Get(ctx, "acme", a)
	require.NoError(t, err)
	require.Equal(t, contracts.StateDead, still.State, "a dry run changes nothing")

	// Redrive one: queued, fresh budget, due now, counted.
	require.NoError(t, b.l.Redrive(ctx, "acme", a))
	back, err := b.l.Get(ctx, "acme", a)
	require.NoError(t, err)
	require.Equal(t, contracts.StateQueued, back.State)
	require.Equal(t, 0, back.Attempts)
	require.Equal(t, 1, back.Redrives)
	require.Empty(t, back.Reason)
	due, err := b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, a, due[0].ID)
	require.ErrorIs(t, b.l.Redrive(ctx, "acme", a), ledger.ErrNotDead)
	require.ErrorIs(t, b.l.Redrive(ctx, "other", bb), ledger.ErrNotFound, "tenants never see each other's dead letters")

	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: a, Function: "f1", Owner: "d2", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	require.Equal(t, 1, cl.Attempt)

	// Purge the rest of resize in bulk; mail stays.
	res, err := b.l.PurgeAll(ctx, "acme", ledger.ListFilter{Function: "resize"}, false)
	require.NoError(t, err)
	require.Equal(t, contracts.DLQResult{Matched: 1, Done: 1}, res)
	_, err = b.l.Get(ctx, "acme", bb)
	require.ErrorIs(t, err, ledger.ErrNotFound)
	require.NoError(t, b.l.Purge(ctx, "acme", other))
	require.ErrorIs(t, b.l.Purge(ctx, "acme", other), ledger.ErrNotFound)
}

func TestThrottledRetryRefundsTheAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	for i := range 3 {
		cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
		require.NoError(t, err)
		require.Equal(t, 1, cl.Attempt, "throttled answers do not use up attempts")
		require.Equal(t, i, cl.Throttles)
		ok, err := b.l.Retry(ctx, "acme", id, "f1", cl.Fence(), b.now, "HTTP 429", true)
		require.NoError(t, err)
		require.True(t, ok)
	}
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, 3, cl.Throttles)
	ok, err := b.l.Retry(ctx, "acme", id, "f1", cl.Fence(), b.now, "HTTP 500", false)
	require.NoError(t, err)
	require.True(t, ok)
	cl, err = b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, 2, cl.Attempt)
}

func TestClaimLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var ids []string
	for i := range 4 {
		c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", fmt.Sprintf("e%d", i), "f1")})
		require.NoError(t, err)
		ids = append(ids, c[0].Tasks[0].ID)
	}
	claim := func(id string, lim ledger.Limits) ledger.Claim {
		c, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute, Limits: lim})
		require.NoError(t, err)
		return c
	}

	// Concurrency 2: the third waits until one finishes.
	conc := ledger.Limits{Concurrency: 2, ConcurrencyWait: 300 * time.Millisecond}
	require.Equal(t, ledger.VerdictRun, claim(ids[0], conc).Verdict)
	require.Equal(t, ledger.VerdictRun, claim(ids[1], conc).Verdict)
	held := claim(ids[2], conc)
	require.Equal(t, ledger.VerdictThrottled, held.Verdict)
	require.Equal(t, "concurrency", held.Limit)
	require.Equal(t, 300*time.Millisecond, held.Wait)
	ok, err := b.l.Finish(ctx, "acme", ids[0], "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ledger.VerdictRun, claim(ids[2], conc).Verdict)

	// A lease that runs out frees its slot too (its dispatcher died).
	b.advance(2 * time.Minute)
	require.Equal(t, ledger.VerdictRun, claim(ids[3], conc).Verdict)

	// Rate 10/s, burst 1: one start per 100ms.
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "r1", "f1"), event("acme", "r2", "f1")})
	require.NoError(t, err)
	r1, r2 := c[0].Tasks[0].ID, c[1].Tasks[0].ID
	rate := ledger.Limits{Rate: 10, Burst: 1}
	require.Equal(t, ledger.VerdictRun, claim(r1, rate).Verdict)
	held = claim(r2, rate)
	require.Equal(t, ledger.VerdictThrottled, held.Verdict)
	require.Equal(t, "rate", held.Limit)
	require.Equal(t, 100*time.Millisecond, held.Wait)
	b.advance(100 * time.Millisecond)
	require.Equal(t, ledger.VerdictRun, claim(r2, rate).Verdict)

	// A tenant rate applies across functions.
	c, err = b.l.Create(ctx, []ledger.EventTasks{event("acme", "t1", "f1"), event("acme", "t2", "f1")})
	require.NoError(t, err)
	trate := ledger.Limits{TenantRate: 2, TenantBurst: 1}
	require.Equal(t, ledger.VerdictRun, claim(c[0].Tasks[0].ID, trate).Verdict)
	held = claim(c[1].Tasks[0].ID, trate)
	require.Equal(t, "tenant_rate", held.Limit)
	require.Equal(t, 500*time.Millisecond, held.Wait)
}

func TestExpireDueEndsWaitingTasksOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	mk := func(id string) string {
		ev := event("acme", id, "f1")
		ev.ExpiresAt = new(b.now.Add(5 * time.Second))
		c, err := b.l.Create(ctx, []ledger.EventTasks{ev})
		require.NoError(t, err)
		return c[0].Tasks[0].ID
	}
	waiting, started := mk("e1"), mk("e2")
	_, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: started, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)

	n, err := b.l.ExpireDue(ctx, 100)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is past its ttl yet")
	b.advance(6 * time.Second)
	n, err = b.l.ExpireDue(ctx, 100)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	w, err := b.l.Get(ctx, "acme", waiting)
	require.NoError(t, err)
	require.Equal(t, contracts.StateExpired, w.State)
	s, err := b.l.Get(ctx, "acme", started)
	require.NoError(t, err)
	require.Equal(t, contracts.StateRunning, s.State, "a started task is past its ttl's reach")
	n, err = b.l.ExpireDue(ctx, 100)
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestDropGuardsKeepsReplacedOnes drops the guards of several tenants'
// tasks in one call, except a guard whose score changed since Create (a
// claim replaced it with a lease): that one stays due.
func TestDropGuardsKeepsReplacedOnes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1", "f2"), event("other", "e1", "f1")})
	require.NoError(t, err)
	guards := []ledger.Guard{
		{Tenant: "acme", ID: c[0].Tasks[0].ID, Score: c[0].GuardScore},
		{Tenant: "acme", ID: c[0].Tasks[1].ID, Score: c[0].GuardScore - 1}, // as if replaced
		{Tenant: "other", ID: c[1].Tasks[0].ID, Score: c[1].GuardScore},
	}

	require.NoError(t, b.l.DropGuards(ctx, guards))

	b.advance(time.Minute) // past every guard
	due, err := b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, due, 1, "only the replaced guard is left")
	require.Equal(t, guards[1].ID, due[0].ID)
}

// TestExpiryAtOrBeforeTheEpochExpires creates tasks whose expiry is the Unix
// epoch, before it, and Go's zero time: each is an expiry in the past, not
// "no expiry", so the claim ends it expired (with its result event) and the
// expiry scan finds the others.
func TestExpiryAtOrBeforeTheEpochExpires(t *testing.T) {
	t.Parallel()
	for name, at := range map[string]time.Time{
		"Epoch":       time.Unix(0, 0),
		"BeforeEpoch": time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC),
		"ZeroTime":    {},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			claimed, scanned := event("acme", "e1", "f1"), event("acme", "e2", "f1")
			claimed.ExpiresAt, scanned.ExpiresAt = &at, &at
			c, err := b.l.Create(ctx, []ledger.EventTasks{claimed, scanned})
			require.NoError(t, err)

			cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: c[0].Tasks[0].ID, Function: "f1", Owner: "d1", Lease: time.Second})
			require.NoError(t, err)
			require.Equal(t, ledger.VerdictExpired, cl.Verdict)
			n, err := b.l.ExpireDue(ctx, 100)
			require.NoError(t, err)
			require.Equal(t, 1, n, "the scan ends the other one")
			for _, ct := range c {
				task, err := b.l.Get(ctx, "acme", ct.Tasks[0].ID)
				require.NoError(t, err)
				require.Equal(t, contracts.StateExpired, task.State)
				require.Zero(t, task.Attempts)
			}
			entries, err := b.l.Redis().XRange(ctx, b.l.OutboxStream("acme"), "-", "+").Result()
			require.NoError(t, err)
			require.Len(t, entries, 2, "one result event each")
		})
	}
}

// TestAbandonEndsWaitingTasksOnce ends a queued task dead and a retrying
// one failed, each with its reason and one result event; a task running
// under a live lease, or already ended, is left alone.
func TestAbandonEndsWaitingTasksOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1"), event("acme", "e2", "f1"), event("acme", "e3", "f1")})
	require.NoError(t, err)
	queued, retrying, running := c[0].Tasks[0].ID, c[1].Tasks[0].ID, c[2].Tasks[0].ID
	for _, id := range []string{retrying, running} {
		cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, cl.Verdict)
	}
	ok, err := b.l.Retry(ctx, "acme", retrying, "f1", ledger.Fence{Attempt: 1}, b.now, "boom", false)
	require.NoError(t, err)
	require.True(t, ok)

	require.NoError(t, b.l.Abandon(ctx, "acme", queued, contracts.StateDead, contracts.ReasonNonRetryable, "too large"))
	require.NoError(t, b.l.Abandon(ctx, "acme", retrying, contracts.StateFailed, contracts.ReasonNonRetryable, "too large"))
	require.ErrorIs(t, b.l.Abandon(ctx, "acme", running, contracts.StateDead, contracts.ReasonNonRetryable, "too large"), ledger.ErrNotAbandoned)
	require.ErrorIs(t, b.l.Abandon(ctx, "acme", queued, contracts.StateDead, contracts.ReasonNonRetryable, "again"), ledger.ErrNotAbandoned)
	require.ErrorIs(t, b.l.Abandon(ctx, "acme", "nope", contracts.StateDead, contracts.ReasonNonRetryable, "x"), ledger.ErrNotFound)

	for id, want := range map[string]contracts.State{queued: contracts.StateDead, retrying: contracts.StateFailed, running: contracts.StateRunning} {
		task, err := b.l.Get(ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, want, task.State)
		if want != contracts.StateRunning {
			require.Equal(t, contracts.ReasonNonRetryable, task.Reason)
			require.Equal(t, "too large", task.Error)
		}
	}
	b.advance(time.Hour)
	due, err := b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, due, 1, "only the running task's lease entry is left")
	require.Equal(t, running, due[0].ID)
	entries, err := b.l.Redis().XRange(ctx, b.l.OutboxStream("acme"), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 2, "one result event per abandoned task")
}
