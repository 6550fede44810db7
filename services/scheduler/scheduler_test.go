package scheduler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/scheduler"
)

// layouts are the ledger key layouts the main tests run under: the legacy
// one and the partitioned one with 4 partitions.
var layouts = []int{0, 4}

// eachLayout runs f once per key layout, in parallel subtests.
func eachLayout(t *testing.T, f func(t *testing.T, partitions int)) {
	for _, p := range layouts {
		t.Run(fmt.Sprintf("partitions=%d", p), func(t *testing.T) {
			t.Parallel()
			testkit.RequirePartitionedRedis(t, p)
			f(t, p)
		})
	}
}

// tenants are tenants of several partitions of the partitioned layout.
var tenants = []string{"a", "b", "c"}

// storedMessage is a lane message of a task, as Create stores it.
func storedMessage(t *testing.T, id, taskID, tenant, fn string, priority int) []byte {
	t.Helper()
	e := event.New()
	e.SetID(id)
	e.SetSource("/test")
	e.SetType("t")
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: taskID, Tenant: tenant, Function: fn, Priority: priority}, &e)
	require.NoError(t, err)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	return stored
}

// TestDueTasksGoToTheReadyQueue: a task whose publish guard comes due (its
// gateway died before the broker confirmed it) is put into its function's
// ready queue, not published again, and starts from there; a task delayed
// into the future stays in the delay set until it is due. Tasks of tenants
// in several partitions: the scheduler takes from every partition.
func TestDueTasksGoToTheReadyQueue(t *testing.T) {
	t.Parallel()
	eachLayout(t, func(t *testing.T, partitions int) {
		rdb, prefix := testkit.Redis(t)
		led := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: partitions, PublishGuard: time.Millisecond})
		s := scheduler.New(scheduler.Config{Ledger: led, Logger: testkit.Logger(t, 0), Metrics: metrics.New()})
		ctx := context.Background()
		mk := func(tenant, id string, due time.Time) string {
			taskID := testkit.UniqueName("task")
			_, err := led.Create(ctx, []ledger.EventTasks{{
				Tenant: tenant, Event: contracts.EventRef{ID: id, Source: "/test", Type: "t"}, DueAt: due,
				Tasks: []ledger.NewTask{{ID: taskID, Function: "f1", Priority: 8, Message: storedMessage(t, id, taskID, tenant, "f1", 8)}},
			}})
			require.NoError(t, err)
			return taskID
		}
		guarded := map[string]bool{}
		for _, tenant := range tenants {
			guarded[mk(tenant, "e1", time.Time{})] = true
		}
		later := mk("a", "e2", time.Now().Add(time.Hour))

		started := map[string]bool{}
		testkit.Eventually(t, 5*time.Second, func() bool {
			_, err := s.Tick(ctx)
			require.NoError(t, err)
			tk, err := led.Take(ctx, "f1", "owner", 10, time.Minute, ledger.TakeLimits{})
			require.NoError(t, err)
			for _, st := range tk.Tasks {
				require.Equal(t, 1, st.Attempt)
				started[st.ID] = true
			}
			return len(started) == len(guarded)
		}, "the guarded tasks start from the ready queue")
		require.Equal(t, guarded, started)

		task, err := led.Get(ctx, "a", later)
		require.NoError(t, err)
		require.Equal(t, contracts.StateScheduled, task.State, "not due yet")
		score, err := rdb.ZScore(ctx, led.DelayKey("a"), ledger.Member("a", later)).Result()
		require.NoError(t, err)
		require.Greater(t, score, float64(time.Now().Add(50*time.Minute).UnixMicro()))
	})
}

// TestSchedulerEndsExpiredTasks: waiting tasks whose ttl passed end
// expired, with their result events, in every partition.
func TestSchedulerEndsExpiredTasks(t *testing.T) {
	t.Parallel()
	eachLayout(t, func(t *testing.T, partitions int) {
		rdb, prefix := testkit.Redis(t)
		led := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: partitions})
		s := scheduler.New(scheduler.Config{Ledger: led, Logger: testkit.Logger(t, 0), Metrics: metrics.New()})
		ctx := context.Background()
		past := time.Now().Add(-time.Minute)
		ids := map[string]string{}
		for _, tenant := range tenants {
			id := testkit.UniqueName("task")
			_, err := led.Create(ctx, []ledger.EventTasks{{
				Tenant: tenant, Event: contracts.EventRef{ID: id, Source: "/test", Type: "t"}, ExpiresAt: &past,
				Tasks: []ledger.NewTask{{ID: id, Function: "f1", Message: []byte("m")}},
			}})
			require.NoError(t, err)
			ids[tenant] = id
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(runCtx) }()
		testkit.Eventually(t, 10*time.Second, func() bool {
			for tenant, id := range ids {
				task, err := led.Get(ctx, tenant, id)
				if err != nil || task.State != contracts.StateExpired {
					return false
				}
			}
			return true
		}, "every tenant's task ends expired")
		cancel()
		require.NoError(t, <-done)
		for tenant, id := range ids {
			entries, err := rdb.XRange(ctx, led.OutboxStream(tenant), "-", "+").Result()
			require.NoError(t, err)
			var found bool
			for _, e := range entries {
				found = found || e.Values["id"] == id
			}
			require.True(t, found, "the result of %s's task is in its partition's outbox", tenant)
		}
	})
}

// TestDueTaskOfAnUnconfiguredFunctionEndsDead: a retry (or takeover) that
// comes due for a function the configuration no longer has would wait in a
// ready queue no dispatcher takes; it ends dead, non-retryable, instead.
func TestDueTaskOfAnUnconfiguredFunctionEndsDead(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	led := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), PublishGuard: time.Millisecond})
	s := scheduler.New(scheduler.Config{Ledger: led, Logger: testkit.Logger(t, 0), Metrics: metrics.New(),
		Configured: func(fn string) bool { return fn == "kept" }})
	ctx := context.Background()
	mk := func(fn string) string {
		e := event.New()
		e.SetID(testkit.UniqueName("ev"))
		e.SetSource("/test")
		e.SetType("t")
		id := testkit.UniqueName("task")
		msg, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: "acme", Function: fn}, &e)
		require.NoError(t, err)
		stored, err := taskmsg.Encode(msg)
		require.NoError(t, err)
		_, err = led.Create(ctx, []ledger.EventTasks{{
			Tenant: "acme", Event: contracts.EventRef{ID: e.ID(), Source: "/test", Type: "t"},
			Tasks: []ledger.NewTask{{ID: id, Function: fn, Message: stored}},
		}})
		require.NoError(t, err)
		return id
	}
	gone, kept := mk("gone"), mk("kept")
	var started []ledger.Started
	testkit.Eventually(t, 5*time.Second, func() bool {
		_, err := s.Tick(ctx)
		require.NoError(t, err)
		tk, err := led.Take(ctx, "kept", "owner", 10, time.Minute, ledger.TakeLimits{})
		require.NoError(t, err)
		started = append(started, tk.Tasks...)
		task, err := led.Get(ctx, "acme", gone)
		require.NoError(t, err)
		return task.State == contracts.StateDead && len(started) > 0
	}, "the task of the removed function ends dead; the other one is ready as before")
	task, err := led.Get(ctx, "acme", gone)
	require.NoError(t, err)
	require.Equal(t, contracts.ReasonNonRetryable, task.Reason)
	require.Contains(t, task.Error, `function "gone" is not configured`)
	require.Len(t, started, 1)
	require.Equal(t, kept, started[0].ID)
}

// Prune drops, for every configured tenant, the index entries of tasks
// whose records expired, and keeps those of live ones.
func TestPruneDropsExpiredIndexEntries(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	now := time.Now()
	led := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), Retention: time.Hour, Now: func() time.Time { return now }})
	ctx := context.Background()
	var made []string
	for _, tenant := range []string{"acme", "globex"} {
		for i := range 3 {
			c, err := led.Create(ctx, []ledger.EventTasks{{
				Tenant: tenant, Event: contracts.EventRef{ID: testkit.UniqueName("e"), Source: "/test", Type: "t"},
				Tasks: []ledger.NewTask{{ID: testkit.UniqueName("task"), Function: "f1", Message: []byte("m")}},
			}})
			require.NoError(t, err)
			id := c[0].Tasks[0].ID
			if i > 0 { // expired: its record is gone
				require.NoError(t, rdb.Del(ctx, led.TenantKeyPrefix(tenant)+"task:"+id).Err())
			}
			made = append(made, id)
		}
	}
	s := scheduler.New(scheduler.Config{Ledger: led, Logger: testkit.Logger(t, 0), Metrics: metrics.New(),
		Tenants: func() []string { return []string{"acme", "globex"} }})
	require.Zero(t, s.Prune(ctx, map[string]ledger.PruneCursor{}), "entries younger than the retention are left alone")
	now = now.Add(2 * time.Hour)
	require.Equal(t, 4, s.Prune(ctx, map[string]ledger.PruneCursor{}))
	for _, tenant := range []string{"acme", "globex"} {
		list, err := led.List(ctx, tenant, ledger.ListFilter{})
		require.NoError(t, err)
		require.Len(t, list.Tasks, 1)
		n, err := rdb.ZCard(ctx, led.TenantKeyPrefix(tenant)+"tasks").Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
	}
	require.Len(t, made, 6)
}
