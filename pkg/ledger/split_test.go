package ledger_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// Tests of the partitioned layout's two-step dispatch (take_split.go,
// admit_split.go, sweep.go): the crash cases of decision 0017 that leave
// a task between its function's slot and its partition.

// inflightScore is member's score in fn's in-flight set (0: none) and in
// its inflight:nh subset.
func (b *bundle) inflightScore(t *testing.T, fn, tenant, id string) (int64, int64) {
	t.Helper()
	ctx := context.Background()
	get := func(key string) int64 {
		s, err := b.l.Redis().ZScore(ctx, key, ledger.Member(tenant, id)).Result()
		if err == redis.Nil {
			return 0
		}
		require.NoError(t, err)
		return int64(s)
	}
	return get(b.l.InflightKey(fn)), get(b.l.InflightNHKey(fn))
}

func (b *bundle) sweep(t *testing.T, fns ...string) int {
	t.Helper()
	n, err := b.l.SweepReservations(context.Background(), fns)
	require.NoError(t, err)
	return n
}

// A take whose dispatcher died after take.f: the refs are reserved, not
// started; they hold the function's slots until the reservation ends, then
// the sweep puts them back and they start.
func TestSplitTakeWithoutStart(t *testing.T) {
	t.Parallel()
	b := setupLayout(t, 4, nil)
	ctx := context.Background()
	ids := b.ready(t, "a", "f", 5, 2)
	n, err := b.l.TakeFOnly(ctx, "f", 2, takeLease)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	lim := ledger.TakeLimits{Concurrency: 2}
	tk := b.take(t, "f", 2, lim)
	require.Empty(t, tk.Tasks)
	require.Equal(t, ledger.TakeLimit, tk.Status, "the reservations hold the limit")
	require.Zero(t, b.sweep(t, "f"), "nothing past its score yet")

	b.advance(takeLease + time.Second)
	require.Equal(t, 2, b.sweep(t, "f"))
	for _, id := range ids {
		require.Equal(t, contracts.StateQueued, b.stateOf(t, "a", id))
		i, nh := b.inflightScore(t, "f", "a", id)
		require.Zero(t, i)
		require.Zero(t, nh)
	}
	require.ElementsMatch(t, ids, b.queued(t, "f", ledger.BandNormal, "a"))
	b.checkCounts(t, "f")
	tk = b.take(t, "f", 2, lim)
	require.Len(t, tk.Tasks, 2, "the task starts after the sweep")
	require.Zero(t, b.sweep(t, "f"))
}

// The sweep repairs members of running attempts: a lease renewed in the
// partition but not in the function's slot moves the score; an attempt
// that ended, or a member without a record, is dropped.
func TestSplitSweepRunning(t *testing.T) {
	t.Parallel()
	b := setupLayout(t, 4, nil)
	ctx := context.Background()
	b.ready(t, "a", "f", 5, 2)
	tk := b.take(t, "f", 2, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 2)
	renewed, ended := tk.Tasks[0], tk.Tasks[1]
	i, nh := b.inflightScore(t, "f", "a", renewed.ID)
	require.Equal(t, tk.LeaseUntil.UnixMicro(), i, "the reservation's end is the lease's")
	require.Equal(t, i, nh, "a normal-band start is in inflight:nh")

	later := tk.LeaseUntil.Add(time.Minute).UnixMicro()
	require.NoError(t, b.l.Redis().HSet(ctx, b.l.TaskKey("a", renewed.ID), "lease", later).Err())
	b.finish(t, "f", ended)
	require.NoError(t, b.l.Redis().ZAdd(ctx, b.l.InflightKey("f"), redis.Z{Score: float64(b.now.UnixMicro()), Member: ledger.Member("a", "gone")}).Err())

	b.advance(takeLease + time.Second)
	// The renewed one moved, the missing one dropped (and the ended one's
	// inflight:nh twin, if its finish left it).
	require.GreaterOrEqual(t, b.sweep(t, "f"), 2)
	i, nh = b.inflightScore(t, "f", "a", renewed.ID)
	require.Equal(t, later, i)
	require.Equal(t, later, nh)
	i, _ = b.inflightScore(t, "f", "a", "gone")
	require.Zero(t, i)
	i, nh = b.inflightScore(t, "f", "a", ended.ID)
	require.Zero(t, i)
	require.Zero(t, nh)
}

// An admit whose caller died after admit.t: the task is queued, not in its
// ready queue, and its delay entry was pushed a publish guard ahead, so a
// redelivery admits it, and so does the scheduler when the entry is due.
func TestSplitAdmitWithoutAdmitF(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, via := range []string{"redelivery", "scheduler"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			b := setupLayout(t, 4, nil)
			id := b.record(t, "a", "f", 5)
			ref := ledger.TaskRef{Tenant: "a", ID: id, Function: "f", Priority: 5}
			v, err := b.l.AdmitTOnly(ctx, ref)
			require.NoError(t, err)
			require.Equal(t, "queue", v)
			require.Empty(t, b.queued(t, "f", ledger.BandNormal, "a"))
			at, ok := b.delayed(t, "a", id)
			require.True(t, ok, "the delay entry stays")
			require.Equal(t, b.now.Add(30*time.Second).UnixMicro(), at.UnixMicro())

			if via == "scheduler" {
				b.advance(31 * time.Second)
				due, err := b.l.TakeDue(ctx, 10, time.Minute)
				require.NoError(t, err)
				require.Len(t, due, 1)
				ref.Priority = due[0].Priority
			}
			require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", ref.Priority).Verdict)
			require.Equal(t, []string{id}, b.queued(t, "f", ledger.BandNormal, "a"))
			_, ok = b.delayed(t, "a", id)
			require.False(t, ok, "the last step drops the delay entry")
			b.checkCounts(t, "f")
			require.Len(t, b.take(t, "f", 1, ledger.TakeLimits{}).Tasks, 1)
		})
	}
}

// Admit never drops a lease-takeover entry: an admit of a running task
// whose lease ended takes it over, and the entry its next start writes
// (same member) survives the admit's forget of its own score.
func TestSplitAdmitKeepsTakeoverEntry(t *testing.T) {
	t.Parallel()
	b := setupLayout(t, 4, nil)
	id := b.ready(t, "a", "f", 5, 1)[0]
	_, ok := b.delayed(t, "a", id)
	require.False(t, ok)
	tk := b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	at, ok := b.delayed(t, "a", id)
	require.True(t, ok)
	require.Equal(t, tk.LeaseUntil.UnixMicro(), at.UnixMicro(), "the lease-takeover entry")
	// A duplicate delivery finds it busy and leaves the entry alone.
	require.Equal(t, ledger.AdmitBusy, b.admit(t, "a", id, "f", 5).Verdict)
	at, ok = b.delayed(t, "a", id)
	require.True(t, ok)
	require.Equal(t, tk.LeaseUntil.UnixMicro(), at.UnixMicro())

	b.advance(takeLease + time.Second) // the dispatcher died
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
	require.Equal(t, contracts.StateQueued, b.stateOf(t, "a", id))
	tk = b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, 2, tk.Tasks[0].Attempt)
	at, ok = b.delayed(t, "a", id)
	require.True(t, ok)
	require.Equal(t, tk.LeaseUntil.UnixMicro(), at.UnixMicro())
}

// A tenant at its quota: its refused refs go back to the head of its
// queue, in order, and it leaves the round robin; other tenants' tasks
// start in the same Take (a second round).
func TestSplitTakeQuotaRound(t *testing.T) {
	t.Parallel()
	b := setupLayout(t, 4, map[string]int{"a": 1})
	a := b.ready(t, "a", "f", 5, 4)
	b.ready(t, "b", "f", 5, 4)
	lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
	tk := b.take(t, "f", 5, lim)
	require.Equal(t, 1, countTenant(tenantsOf(tk), "a"), "%v", tenantsOf(tk))
	require.Equal(t, 4, countTenant(tenantsOf(tk), "b"), "%v", tenantsOf(tk))
	require.Equal(t, a[0], tk.Tasks[0].ID)
	require.Equal(t, a[1:], b.queued(t, "f", ledger.BandNormal, "a"), "a's refused refs keep their place")
	require.False(t, b.inRing(t, "f", ledger.BandNormal, "a"))
	for _, id := range a[1:] {
		i, nh := b.inflightScore(t, "f", "a", id)
		require.Zero(t, i, "no reservation left")
		require.Zero(t, nh)
	}
}

// beforeScript runs do once, before the first pipeline that calls script.
type beforeScript struct {
	hash string
	once sync.Once
	do   func()
}

func (h *beforeScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *beforeScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}

func (h *beforeScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if a := c.Args(); len(a) > 1 && a[0] == "evalsha" && a[1] == h.hash {
				h.once.Do(h.do)
			}
		}
		return next(ctx, cmds)
	}
}

// A tenant refused for its quota whose running attempt ends between
// start.t (which parked it) and requeue.f (which takes it out of the round
// robin): the finish unparks it before requeue.f runs, and repark.t puts
// it back, so its tasks do not strand out of the round robin and unparked:
// the same Take's second round starts it.
func TestSplitTakeQuotaRaceWithFinish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupLayout(t, 4, map[string]int{"a": 1})
	rdb := b.l.Redis().(*redis.Client)
	other := redis.NewClient(rdb.Options())
	t.Cleanup(func() { _ = other.Close() })
	finisher := ledger.New(ledger.Config{Redis: other, Prefix: strings.TrimSuffix(b.l.KeyPrefix(), ":"), Partitions: 4,
		TenantQuota: func(string) int { return 1 }})
	require.Equal(t, b.l.TaskKey("a", "x"), finisher.TaskKey("a", "x"))
	lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}
	ids := b.ready(t, "a", "f", 5, 2)
	first := b.take(t, "f", 1, lim).Tasks
	require.Len(t, first, 1)

	rdb.AddHook(&beforeScript{hash: ledger.Scripts["requeue.f"].Hash(), do: func() {
		ok, err := finisher.Finish(ctx, "a", first[0].ID, "f", first[0].Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.True(t, ok)
	}})
	// Refused in the first round (a was at its quota when start.t ran),
	// back in the round robin, started in the second.
	tk := b.take(t, "f", 1, lim)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, ids[1], tk.Tasks[0].ID)
}
