package jobs_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/jobs"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// counter is a job's work: numbers 0..n-1, stepped by step, each "done"
// once; the cursor is the next number.
type counter struct {
	n, step int
	mu      sync.Mutex
	done    map[int]int
	starts  []string
	// block, when set, holds every step after the first until closed.
	block chan struct{}
	fail  int
}

func (c *counter) run(ctx context.Context, j *jobs.Record) (jobs.StepResult, error) {
	c.mu.Lock()
	c.starts = append(c.starts, j.Cursor)
	blocked := c.block != nil && len(c.starts) > 1
	if c.fail > 0 {
		c.fail--
		c.mu.Unlock()
		return jobs.StepResult{}, errors.New("redis: connection refused")
	}
	c.mu.Unlock()
	if blocked {
		select {
		case <-c.block:
		case <-ctx.Done():
			return jobs.StepResult{}, ctx.Err()
		}
	}
	from, _ := strconv.Atoi(j.Cursor)
	to := min(from+c.step, c.n)
	c.mu.Lock()
	for i := from; i < to; i++ {
		c.done[i]++
	}
	c.mu.Unlock()
	next := ""
	if to < c.n {
		next = strconv.Itoa(to)
	}
	return jobs.StepResult{Matched: to - from, Done: to - from, Cursor: next}, nil
}

func (c *counter) each(t *testing.T, want int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Len(t, c.done, c.n)
	for i, n := range c.done {
		require.Equal(t, want, n, "number %d done %d times", i, n)
	}
}

// newRunner returns a runner of c's steps whose jobs are stopped (and
// waited for) when the test ends, before its keys are deleted.
func newRunner(t *testing.T, store *jobs.Store, c *counter, lease time.Duration) *jobs.Runner {
	r := jobs.NewRunner(jobs.RunnerConfig{
		Store: store, Steps: map[contracts.JobKind]jobs.Step{contracts.JobCancel: c.run},
		Logger: testkit.Logger(t, 0), Lease: lease, PerTenant: 2, Backoff: time.Millisecond,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r.Run(ctx) // with an ended context: stops the jobs and waits
	})
	return r
}

func waitState(t *testing.T, store *jobs.Store, tenant, id string, want contracts.JobState) jobs.Record {
	t.Helper()
	var rec jobs.Record
	testkit.Eventually(t, 10*time.Second, func() bool {
		var err error
		rec, err = store.Get(context.Background(), tenant, id)
		require.NoError(t, err)
		return rec.State == want
	}, "job %s reaches %s", id, want)
	return rec
}

// A job runs to the end in steps: every number done once, the counts
// summed, the record kept with a bounded TTL and out of the running sets.
func TestJobRunsToSuccess(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, time.Hour)
	c := &counter{n: 95, step: 10, done: map[int]int{}}
	r := newRunner(t, store, c, time.Second)
	ctx := context.Background()
	j, err := r.Start(ctx, "acme", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, contracts.JobRunning, j.State)
	rec := waitState(t, store, "acme", j.ID, contracts.JobSucceeded)
	require.Equal(t, 95, rec.Matched)
	require.Equal(t, 95, rec.Done)
	require.NotNil(t, rec.FinishedAt)
	c.each(t, 1)
	ttl := rdb.TTL(ctx, prefix+":{acme}:job:"+j.ID).Val()
	require.True(t, ttl > 0 && ttl <= time.Hour, "ended job kept for a bounded time, ttl %s", ttl)
	require.Zero(t, rdb.ZCard(ctx, prefix+":{acme}:jobs:running").Val())
	// The lease index is another key (its own hash slot), cleared just
	// after the record ends: the state above can be read before it.
	testkit.Eventually(t, 5*time.Second, func() bool { return rdb.ZCard(ctx, store.LeasesKey()).Val() == 0 },
		"the ended job's lease unindexed")
}

// Tenants see only their own jobs.
func TestJobIsTenantScoped(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	c := &counter{n: 5, step: 10, done: map[int]int{}}
	r := newRunner(t, store, c, time.Second)
	j, err := r.Start(context.Background(), "acme", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
	waitState(t, store, "acme", j.ID, contracts.JobSucceeded)
	_, err = store.Get(context.Background(), "other", j.ID)
	require.ErrorIs(t, err, jobs.ErrNotFound)
	_, err = store.Get(context.Background(), "acme", "nope")
	require.ErrorIs(t, err, jobs.ErrNotFound)
}

// A tenant runs at most PerTenant jobs at once; others are not counted
// against it, and an ended job frees its place.
func TestJobsPerTenantBounded(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	c := &counter{n: 100, step: 1, done: map[int]int{}, block: make(chan struct{})}
	r := newRunner(t, store, c, time.Minute)
	ctx := context.Background()
	var ids []string
	for range 2 {
		j, err := r.Start(ctx, "acme", contracts.JobCancel, []byte(`{}`))
		require.NoError(t, err)
		ids = append(ids, j.ID)
	}
	_, err := r.Start(ctx, "acme", contracts.JobCancel, []byte(`{}`))
	require.ErrorIs(t, err, jobs.ErrTooMany)
	_, err = r.Start(ctx, "other", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
	close(c.block)
	for _, id := range ids {
		waitState(t, store, "acme", id, contracts.JobSucceeded)
	}
	_, err = r.Start(ctx, "acme", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
}

// A job whose runner stopped without a word (its lease expires) is taken
// over by another runner's sweep and resumed from its saved cursor: every
// number done exactly once, the takeover counted.
func TestJobLeaseTakeoverResumesFromCursor(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	ctx := context.Background()
	// A gateway that died after its step up to 40 was saved.
	now := time.Now()
	rec, err := store.Create(ctx, "acme", contracts.JobCancel, []byte(`{}`), "dead-gateway", now, now.Add(time.Minute), 4)
	require.NoError(t, err)
	rec.Matched, rec.Done, rec.Cursor = 40, 40, "40"
	require.NoError(t, store.Progress(ctx, &rec, now.Add(-time.Second)))

	c := &counter{n: 100, step: 7, done: map[int]int{}}
	for i := range 40 {
		c.done[i] = 1 // done by the dead gateway
	}
	b := newRunner(t, store, c, time.Second)
	b.Sweep(ctx)
	got := waitState(t, store, "acme", rec.ID, contracts.JobSucceeded)
	require.Equal(t, 100, got.Matched)
	require.Equal(t, 100, got.Done)
	require.Equal(t, 1, got.Resumed)
	require.Equal(t, "40", c.starts[0], "resumed from the saved cursor")
	c.each(t, 1)

	// The dead gateway coming back cannot write over the new owner's work.
	require.ErrorIs(t, store.Progress(ctx, &rec, time.Now().Add(time.Minute)), jobs.ErrLeaseLost)
	require.ErrorIs(t, store.Finish(ctx, &rec, contracts.JobFailed, time.Now()), jobs.ErrLeaseLost)
}

// A live lease is not taken over.
func TestJobLeaseHeldIsNotTakenOver(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	ctx := context.Background()
	now := time.Now()
	rec, err := store.Create(ctx, "acme", contracts.JobCancel, []byte(`{}`), "live", now, now.Add(time.Minute), 4)
	require.NoError(t, err)
	_, ok, err := store.Takeover(ctx, "acme", rec.ID, "thief", now, now.Add(time.Minute))
	require.NoError(t, err)
	require.False(t, ok)
	expired, err := store.Expired(ctx, now, 10)
	require.NoError(t, err)
	require.Empty(t, expired)
}

// A runner stopping (Run's context ends) releases its job's lease; the
// next runner's sweep resumes it at once, and it still does every number
// exactly once.
func TestJobReleasedOnStopIsResumed(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	c := &counter{n: 50, step: 5, done: map[int]int{}, block: make(chan struct{})}
	a := newRunner(t, store, c, time.Minute)
	actx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { a.Run(actx); close(ran) }()
	j, err := a.Start(context.Background(), "acme", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
	testkit.Eventually(t, 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.starts) >= 2 // the second step is held
	}, "second step starts")
	stop()
	<-ran
	rec, err := store.Get(context.Background(), "acme", j.ID)
	require.NoError(t, err)
	require.Equal(t, contracts.JobRunning, rec.State)
	require.Equal(t, "5", rec.Cursor)

	close(c.block)
	b := newRunner(t, store, c, time.Minute)
	b.Sweep(context.Background())
	got := waitState(t, store, "acme", j.ID, contracts.JobSucceeded)
	require.Equal(t, 50, got.Done)
	c.each(t, 1)
}

// Failing steps are retried and counted; after MaxStepErrors in a row the
// job fails with the error, and is not left running.
func TestJobFailsAfterRepeatedStepErrors(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	c := &counter{n: 10, step: 5, done: map[int]int{}, fail: 2}
	r := newRunner(t, store, c, time.Second)
	j, err := r.Start(context.Background(), "acme", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
	got := waitState(t, store, "acme", j.ID, contracts.JobSucceeded)
	require.Equal(t, 2, got.Errors)
	require.Equal(t, 10, got.Done)

	c2 := &counter{n: 10, step: 5, done: map[int]int{}, fail: 100}
	r2 := newRunner(t, store, c2, time.Second)
	j2, err := r2.Start(context.Background(), "acme", contracts.JobCancel, []byte(`{}`))
	require.NoError(t, err)
	got = waitState(t, store, "acme", j2.ID, contracts.JobFailed)
	require.Equal(t, jobs.MaxStepErrorsDefault, got.Errors)
	require.Contains(t, got.Error, "connection refused")
}

// A job taken over more than MaxResumes times fails instead of running
// again.
func TestJobResumedTooOftenFails(t *testing.T) {
	rdb, prefix := testkit.Redis(t)
	store := jobs.NewStore(rdb, prefix, 0)
	ctx := context.Background()
	now := time.Now()
	// Its lease ended a second ago: a takeover at the same clock reading
	// would find it still held.
	rec, err := store.Create(ctx, "acme", contracts.JobCancel, []byte(`{}`), "x", now, now.Add(-time.Second), 4)
	require.NoError(t, err)
	c := &counter{n: 10, step: 5, done: map[int]int{}}
	for i := range jobs.MaxResumesDefault {
		_, ok, err := store.Takeover(ctx, "acme", rec.ID, "crashing-"+strconv.Itoa(i), time.Now(), time.Now().Add(-time.Millisecond))
		require.NoError(t, err)
		require.True(t, ok)
	}
	r := newRunner(t, store, c, time.Second)
	r.Sweep(ctx)
	got := waitState(t, store, "acme", rec.ID, contracts.JobFailed)
	require.Contains(t, got.Error, "interrupted")
	require.Empty(t, c.starts)
}
