package ledger_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/triggers"
)

// crossSlot pins every ledger operation whose script, multi-key command or
// transaction touches more than one Redis Cluster slot today (keys
// normalized: prefix "tl", digests "<sha>"). These cannot run on a Redis
// Cluster; docs/decisions/0017-ledger-on-redis-cluster.md says how each
// splits. A new crossing fails TestSlotAudit, and so does a fixed one:
// update this list (and the decision record) with the change.
var crossSlot = []string{
	"Abandon: EVAL abandon: tl:delay tl:expiry tl:outbox tl:{t}:task:<id>",
	"Admit: EVAL admit: tl:delay tl:expiry tl:fn:fn:rate tl:outbox tl:{f:fn}:inflight tl:{f:fn}:state tl:{t}:parked tl:{t}:pauses tl:{t}:pauses:n tl:{t}:task:<id>",
	"Cancel: EVAL cancel: tl:delay tl:expiry tl:outbox tl:{f:fn}:inflight tl:{f:fn}:state tl:{t}:inflight tl:{t}:parked tl:{t}:task:<id>",
	"CancelMatching: EVAL cancel: tl:delay tl:expiry tl:outbox tl:{f:fn}:inflight tl:{f:fn}:state tl:{t}:inflight tl:{t}:parked tl:{t}:task:<id>",
	"Claim: EVAL claim: tl:delay tl:expiry tl:fn:fn:rate tl:outbox tl:{f:fn}:inflight tl:{t}:rate tl:{t}:task:<id>",
	"Create: EVAL create: tl:delay tl:expiry tl:{t}:d:<hash> tl:{t}:dedup:<sha> tl:{t}:e:<hash> tl:{t}:st:queued tl:{t}:task:<id> tl:{t}:tasks",
	"ExpireDue: EVAL end: tl:delay tl:expiry tl:outbox tl:{t}:task:<id>",
	"Finish: EVAL finish: tl:delay tl:outbox tl:{f:fn}:inflight tl:{f:fn}:state tl:{t}:inflight tl:{t}:parked tl:{t}:task:<id>",
	"Redrive: EVAL redrive: tl:delay tl:{t}:task:<id>",
	"RedriveAll: EVAL redrive: tl:delay tl:{t}:task:<id>",
	"Renew: EVAL renew: tl:delay tl:{f:fn}:inflight tl:{t}:inflight tl:{t}:task:<id>",
	"Resume: EVAL admit: tl:delay tl:expiry tl:fn:fn:rate tl:outbox tl:{f:fn}:inflight tl:{f:fn}:state tl:{t}:parked tl:{t}:pauses tl:{t}:pauses:n tl:{t}:task:<id>",
	"Resume: EVAL resumestep: tl:delay tl:{t}:st:paused",
	"Retry: EVAL retry: tl:delay tl:{f:fn}:inflight tl:{f:fn}:state tl:{t}:inflight tl:{t}:parked tl:{t}:task:<id>",
	"Take: EVAL take: tl:delay tl:expiry tl:fn:fn:rate tl:outbox tl:{f:fn}:inflight tl:{f:fn}:state",
	"routing.Apply: EVAL (unnamed): tl:routing tl:routing:log",
}

// auditFn is the function the audit runs tasks of.
const auditFn = "fn"

// TestSlotAudit runs every ledger operation (and the routing table's and
// the triggers' state) through a client that records the cluster slots
// each command's keys hash to, and compares the crossings with crossSlot
// (the legacy key layout) and with none (the partitioned one, 4
// partitions: the hook only computes slots, one Redis serves them all).
func TestSlotAudit(t *testing.T) {
	t.Run("Legacy", func(t *testing.T) {
		require.Equal(t, crossSlot, slotAudit(t, 0),
			"the ledger's cross-slot operations changed: update crossSlot and docs/decisions/0017-ledger-on-redis-cluster.md")
	})
	t.Run("Partitioned", func(t *testing.T) {
		// Nothing crosses in the partitioned layout: every per-task script
		// of a partition (create, end, abandon, redrive, the resume step),
		// the routing table's apply, and each step of the split dispatch
		// path (decision 0017's phase 2: take.f, start.t, requeue.f,
		// repark.t, admit.t, admit.f, backlog.f, sweep.f and the release
		// side's) touch one slot. The keys they build in Lua are checked by
		// running them on a cluster (TestPartitionedOnCluster,
		// TestSplitOnCluster).
		require.Empty(t, slotAudit(t, 4),
			"a ledger operation crosses slots in the partitioned layout: split it (docs/decisions/0017-ledger-on-redis-cluster.md)")
	})
}

// slotAudit runs the audit on a ledger with partitions and returns its
// crossings.
func slotAudit(t *testing.T, partitions int) []string {
	rdb, prefix := testkit.Redis(t)
	normal := strings.NewReplacer("{acme}", "{t}", "{beta}", "{t}", "{f:"+auditFn+"}", "{f:fn}")
	part, partTenant := regexp.MustCompile(`\{p[0-9]+\}`), regexp.MustCompile(`\{p\}:(acme|beta):`)
	digest, task := regexp.MustCompile(`[0-9a-f]{64}`), regexp.MustCompile(`:t[0-9]+$`)
	short := regexp.MustCompile(`:([de]):[A-Za-z0-9_-]{22}$`)
	audit := testkit.NewSlotAudit(ledger.Scripts, func(k string) string {
		k = normal.Replace(strings.Replace(k, prefix, "tl", 1))
		k = partTenant.ReplaceAllString(part.ReplaceAllString(k, "{p}"), "{p}:t:")
		k = short.ReplaceAllString(k, ":$1:<hash>")
		return task.ReplaceAllString(digest.ReplaceAllString(k, "<sha>"), ":<id>")
	})
	rdb.AddHook(audit)
	now := time.Now().Truncate(time.Millisecond)
	clock := func() time.Time { return now }
	l := ledger.New(ledger.Config{
		Redis: rdb, Prefix: prefix, Now: clock, Partitions: partitions,
		TenantQuota: func(string) int { return 2 },
		Limited:     func(string) bool { return true },
	})
	ctx := context.Background()
	op := func(name string, f func() error) {
		t.Helper()
		audit.Op(name)
		require.NoError(t, f(), name)
	}
	ev := func(tenant, id string, tasks ...string) ledger.EventTasks {
		e := ledger.EventTasks{Tenant: tenant, Event: contracts.EventRef{ID: id, Source: "/audit", Type: "t"}}
		for _, task := range tasks {
			e.Tasks = append(e.Tasks, ledger.NewTask{ID: task, Function: auditFn, Message: []byte("m")})
		}
		return e
	}
	lim := ledger.TakeLimits{Concurrency: 10, Tenants: map[string]ledger.TenantLimits{"acme": {Concurrency: 2}}}
	take := func(want int) ledger.Taken {
		t.Helper()
		audit.Op("Take")
		tk, err := l.Take(ctx, auditFn, "d1", 10, time.Minute, lim)
		require.NoError(t, err)
		require.Len(t, tk.Tasks, want)
		return tk
	}
	admit := func(tenant, id string) {
		t.Helper()
		audit.Op("Admit")
		_, err := l.Admit(ctx, ledger.TaskRef{Tenant: tenant, ID: id, Function: auditFn})
		require.NoError(t, err)
	}

	// Create: one event, then two events of two tenants in one call.
	var guard int64
	op("Create", func() error {
		c, err := l.Create(ctx, []ledger.EventTasks{ev("acme", "e1", "t1")})
		guard = c[0].GuardScore
		return err
	})
	op("Create", func() error {
		_, err := l.Create(ctx, []ledger.EventTasks{ev("acme", "e2", "t2", "t3"), ev("beta", "e1", "t4")})
		return err
	})
	op("Enqueued", func() error { return l.Enqueued(ctx, "acme", guard, "t1") })
	op("DropGuards", func() error {
		return l.DropGuards(ctx, []ledger.Guard{{Tenant: "acme", ID: "t2", Score: guard}, {Tenant: "beta", ID: "t4", Score: guard}})
	})

	// The dispatch path: admit, take, renew, finish; a retry.
	admit("acme", "t1")
	admit("acme", "t2")
	tk := take(2)
	op("Renew", func() error {
		_, err := l.Renew(ctx, time.Minute, ledger.Lease{Tenant: "acme", ID: "t1", Function: auditFn, Owner: "d1", Attempt: 1})
		return err
	})
	op("Finish", func() error {
		_, err := l.Finish(ctx, "acme", tk.Tasks[0].ID, auditFn, ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded, Result: []byte("ok")})
		return err
	})
	op("Retry", func() error {
		_, err := l.Retry(ctx, "acme", tk.Tasks[1].ID, auditFn, ledger.Fence{Attempt: 1}, now.Add(-time.Second), "boom", false)
		return err
	})
	op("TakeDue", func() error { _, err := l.TakeDue(ctx, 100, time.Minute); return err })
	op("Defer", func() error { return l.Defer(ctx, "acme", "t3", now.Add(time.Hour)) })

	// The direct claim path.
	op("Claim", func() error {
		_, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: "beta", ID: "t4", Function: auditFn, Owner: "d1", Lease: time.Minute,
			Limits: ledger.Limits{Concurrency: 5, Rate: 100, Burst: 10, TenantRate: 100, TenantBurst: 10}})
		return err
	})
	op("Finish", func() error {
		_, err := l.Finish(ctx, "beta", "t4", auditFn, ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateDead, Error: "no", Reason: contracts.ReasonNonRetryable})
		return err
	})
	op("Abandon", func() error {
		return l.Abandon(ctx, "acme", "t3", contracts.StateFailed, contracts.ReasonNonRetryable, "abandoned")
	})

	// Expiry: a task whose ttl passed before it started.
	past := now.Add(-time.Minute)
	op("Create", func() error {
		e := ev("acme", "e3", "t5")
		e.ExpiresAt = &past
		_, err := l.Create(ctx, []ledger.EventTasks{e})
		return err
	})
	op("ExpireDue", func() error { _, err := l.ExpireDue(ctx, 100); return err })

	// Cancel, pauses.
	op("Create", func() error {
		_, err := l.Create(ctx, []ledger.EventTasks{ev("acme", "e4", "t6", "t7", "t8")})
		return err
	})
	op("Cancel", func() error { _, err := l.Cancel(ctx, "acme", "t6"); return err })
	var pause contracts.Pause
	op("CreatePause", func() error {
		var err error
		pause, err = l.CreatePause(ctx, "acme", contracts.Selector{Function: auditFn})
		return err
	})
	op("Pauses", func() error { _, err := l.Pauses(ctx, "acme"); return err })
	op("Resume", func() error { _, err := l.Resume(ctx, "acme", pause.ID); return err })
	op("CancelMatching", func() error {
		_, err := l.CancelMatching(ctx, "acme", contracts.CancelRequest{Selector: contracts.Selector{Function: auditFn}})
		return err
	})

	// Parked tenants, adaptive limits, statistics.
	op("UnparkAll", func() error { return l.UnparkAll(ctx, map[string]int{"acme": 2, "beta": 2}) })
	op("Unpark", func() error { return l.Unpark(ctx, "acme", 2) })
	adaptive := ledger.Adaptive{Min: 1, Max: 10, Increase: 1, Interval: time.Second, Decrease: 0.5}
	op("Feedback", func() error { _, err := l.Feedback(ctx, auditFn, adaptive, 5, false); return err })
	op("FunctionStats", func() error {
		_, err := l.FunctionStats(ctx, []ledger.FunctionSpec{{Name: auditFn, Concurrency: 5}, {Name: "other", Adaptive: &adaptive}})
		return err
	})
	op("Backlogs", func() error { _, err := l.Backlogs(ctx, []string{"acme", "beta"}); return err })
	op("ReadyQueues", func() error { _, err := l.ReadyQueues(ctx, []string{auditFn}, []string{"acme", "beta"}); return err })
	op("TaskCounts", func() error { _, err := l.TaskCounts(ctx, []string{"acme", "beta"}); return err })

	// Reads, logs, the token secret.
	op("List", func() error { _, err := l.List(ctx, "acme", ledger.ListFilter{}); return err })
	op("List", func() error {
		_, err := l.List(ctx, "acme", ledger.ListFilter{State: contracts.StateCancelled, Function: auditFn})
		return err
	})
	op("Get", func() error { _, err := l.Get(ctx, "acme", "t1"); return err })
	op("Message", func() error {
		// t1 has ended: a compact record keeps no message.
		if _, err := l.Message(ctx, "acme", "t1"); err != nil && !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		return nil
	})
	op("AppendLog", func() error {
		return l.AppendLog(ctx, "acme", "t1", contracts.LogEntry{Message: "hello"})
	})
	op("Log", func() error { _, err := l.Log(ctx, "acme", "t1"); return err })
	op("TokenSecret", func() error { _, err := l.TokenSecret(ctx); return err })

	// The dead-letter queue.
	op("DeadIDs", func() error { _, err := l.DeadIDs(ctx, "beta", ledger.ListFilter{}); return err })
	op("Redrive", func() error { return l.Redrive(ctx, "beta", "t4") })
	admit("beta", "t4")
	tk = take(1)
	op("Finish", func() error {
		_, err := l.Finish(ctx, "beta", "t4", auditFn, tk.Tasks[0].Fence(), ledger.Outcome{State: contracts.StateDead, Error: "no", Reason: contracts.ReasonNonRetryable})
		return err
	})
	op("RedriveAll", func() error { _, err := l.RedriveAll(ctx, "beta", ledger.ListFilter{}, false); return err })
	admit("beta", "t4")
	tk = take(1)
	op("Finish", func() error {
		_, err := l.Finish(ctx, "beta", "t4", auditFn, tk.Tasks[0].Fence(), ledger.Outcome{State: contracts.StateDead, Error: "no", Reason: contracts.ReasonNonRetryable})
		return err
	})
	op("PurgeAll", func() error { _, err := l.PurgeAll(ctx, "beta", ledger.ListFilter{}, true); return err })
	op("Purge", func() error { return l.Purge(ctx, "beta", "t4") })

	// The routing table and the triggers' state.
	store := routing.NewStoreAt(rdb, l.RoutingKey())
	op("routing.Load", func() error { _, err := store.Load(ctx); return err })
	op("routing.Apply", func() error {
		_, err := store.Apply(ctx, 0, routing.Change{Tenant: "acme", Action: contracts.ActionSplit, Lane: "tasklane.lane.tenant.acme"}, nil)
		return err
	})
	op("routing.Log", func() error { _, err := store.Log(ctx, 10); return err })
	rep := routing.NewReporter(rdb, prefix, time.Minute, 0.1)
	rep.Observe("acme", 100)
	op("routing.Flush", func() error { return rep.Flush(ctx, 1) })
	trig := triggers.NewStore(rdb, prefix)
	op("triggers.Heartbeat", func() error { return trig.Heartbeat(ctx, "nightly", "p1", "running", now, now) })
	op("triggers.Fired", func() error { return trig.Fired(ctx, "nightly", "ev1", 1, now) })
	op("triggers.Read", func() error { _, err := trig.Read(ctx, "nightly", "hourly"); return err })
	lock := trig.Lock("nightly", "p1", time.Minute)
	op("triggers.Lock", func() error { _, err := lock.Acquire(ctx); return err })

	var got []string
	for _, c := range audit.Crossings() {
		got = append(got, c.String())
	}
	for _, c := range got {
		t.Log(c)
	}
	for op, n := range audit.PipelineSlots() {
		t.Logf("pipeline of %s: %d slots", op, n)
	}
	return got
}
