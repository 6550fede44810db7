package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// The release side of the partitioned layout (release_split.go): its
// steps' crash cases on one Redis, and every step on a Redis Cluster.

// dropScript fails every pipeline that carries a call of one script, as a
// connection lost before it was sent would: the function step of a split
// that never reached Redis.
type dropScript struct {
	hash    string
	mu      sync.Mutex
	dropped int
	off     bool
}

func dropCalls(b *bundle, name string) *dropScript {
	d := &dropScript{hash: ledger.ScriptHash(name)}
	b.l.Redis().(*redis.Client).AddHook(d)
	return d
}

func (d *dropScript) count() int { d.mu.Lock(); defer d.mu.Unlock(); return d.dropped }
func (d *dropScript) disable()   { d.mu.Lock(); defer d.mu.Unlock(); d.off = true }
func (d *dropScript) carries(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if a := c.Args(); c.Name() == "evalsha" && len(a) > 1 && a[1] == d.hash {
			return true
		}
	}
	return false
}

func (d *dropScript) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (d *dropScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (d *dropScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		d.mu.Lock()
		drop := !d.off && d.carries(cmds)
		if drop {
			d.dropped++
		}
		d.mu.Unlock()
		if !drop {
			return next(ctx, cmds)
		}
		err := errors.New("connection lost")
		for _, c := range cmds {
			c.SetErr(err)
		}
		return err
	}
}

// TestSplitFinishLostRelease is decision 0017's crash case "finish.t and
// release.f": the task has ended, its reservation holds the function's
// slot until its score (the lease's end) passes, and then no longer
// counts; a retried finish is fenced off and sends nothing to the function.
func TestSplitFinishLostRelease(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	ids := b.ready(t, "a", "fn", 5, 2)
	tk := b.take(t, "fn", 1, ledger.TakeLimits{Concurrency: 1})
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	other := ids[0]
	if other == s.ID {
		other = ids[1]
	}
	drop := dropCalls(b, "release.f")
	ok, err := b.l.Finish(ctx, "a", s.ID, "fn", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.True(t, ok, "the tenant step ended the task")
	require.ErrorContains(t, err, "connection lost", "the function step's failure is reported")
	require.Equal(t, 1, drop.count())
	require.Equal(t, contracts.StateSucceeded, b.stateOf(t, "a", s.ID))

	inflight := b.l.InflightKey("fn")
	live := func() int64 {
		n, err := b.l.Redis().ZCount(ctx, inflight, strconv.FormatInt(b.now.UnixMicro(), 10), "+inf").Result()
		require.NoError(t, err)
		return n
	}
	require.EqualValues(t, 1, live(), "the reservation outlives the attempt")
	lim := ledger.Limits{Concurrency: 1}
	claim := func() ledger.Claim {
		c, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "a", ID: other, Function: "fn", Owner: "d2", Lease: takeLease, Limits: lim})
		require.NoError(t, err)
		return c
	}
	c := claim()
	require.Equal(t, ledger.VerdictThrottled, c.Verdict)
	require.Equal(t, "concurrency", c.Limit)

	// Sent again, the tenant step is fenced off: nothing for the function.
	ok, err = b.l.Finish(ctx, "a", s.ID, "fn", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, 1, drop.count(), "a refused tenant step sends no function step")

	// Once its score passed, the reservation no longer counts (the sweep
	// removes it): the slot is free.
	b.advance(takeLease + time.Millisecond)
	require.Zero(t, live())
	require.Equal(t, ledger.VerdictRun, claim().Verdict)
}

// TestSplitLostUnparkIsKept is the crash case "finish.t and unpark.f":
// the tenant step cleared the tenant's parked set, the function step never
// ran, so the tenant is out of the ring with a task waiting. The cleared
// member stays in the tenant's unparking set, and the first tenant step
// after the grace (here the scheduler's UnparkAll) sends its unpark.f
// again, once.
func TestSplitLostUnparkIsKept(t *testing.T) {
	b := setupLayout(t, 4, map[string]int{"a": 1}, "fn")
	ctx := context.Background()
	b.ready(t, "a", "fn", 5, 2)
	tk := b.take(t, "fn", 2, ledger.TakeLimits{Concurrency: 10, Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}})
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, 1, tk.Parked)
	require.False(t, b.inRing(t, "fn", ledger.BandNormal, "a"))

	drop := dropCalls(b, "unpark.f")
	s := tk.Tasks[0]
	ok, err := b.l.Finish(ctx, "a", s.ID, "fn", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.True(t, ok)
	require.Error(t, err)
	require.Equal(t, 1, drop.count())
	drop.disable()
	require.False(t, b.inRing(t, "fn", ledger.BandNormal, "a"))
	parked, err := b.l.Redis().SMembers(ctx, b.l.TenantKeyPrefix("a")+"parked").Result()
	require.NoError(t, err)
	require.Empty(t, parked, "the tenant step cleared the parked set")

	require.NoError(t, b.l.UnparkAll(ctx, map[string]int{"a": 1}))
	require.False(t, b.inRing(t, "fn", ledger.BandNormal, "a"), "within the grace, the end's own unpark.f may be on its way")
	b.advance(10*time.Second + time.Millisecond)
	require.NoError(t, b.l.UnparkAll(ctx, map[string]int{"a": 1}))
	require.True(t, b.inRing(t, "fn", ledger.BandNormal, "a"))
	left, err := b.l.Redis().ZCard(ctx, b.l.TenantKeyPrefix("a")+"unparking").Result()
	require.NoError(t, err)
	require.Zero(t, left, "sent again once")
	require.Len(t, b.take(t, "fn", 1, ledger.TakeLimits{Concurrency: 10}).Tasks, 1)
}

// TestSplitRenewExtendsAcceptedLeasesOnly: renew.f moves the reservation
// (and its place in the non-high subset, where it has one) of a lease
// renew.t extended, and leaves a lost lease's alone.
func TestSplitRenewExtendsAcceptedLeasesOnly(t *testing.T) {
	b := setupLayout(t, 4, nil)
	ctx := context.Background()
	b.ready(t, "a", "fn", 5, 2)
	tk := b.take(t, "fn", 2, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 2)
	inflight, nh := b.l.InflightKey("fn"), b.l.InflightKey("fn")+":nh"
	lease := float64(tk.LeaseUntil.UnixMicro())
	for _, s := range tk.Tasks {
		// As take.f does for a task of the normal band.
		require.NoError(t, b.l.Redis().ZAdd(ctx, nh, redis.Z{Score: lease, Member: ledger.Member(s.Tenant, s.ID)}).Err())
	}
	b.advance(time.Second)
	good, bad := tk.Tasks[0], tk.Tasks[1]
	leaseOf := func(s ledger.Started, attempt int) ledger.Lease {
		return ledger.Lease{Tenant: s.Tenant, ID: s.ID, Function: "fn", Owner: "d1", Attempt: attempt, Redrives: s.Redrives}
	}
	lost, err := b.l.Renew(ctx, time.Minute, leaseOf(good, good.Attempt), leaseOf(bad, bad.Attempt+1))
	require.NoError(t, err)
	require.Equal(t, []ledger.Lease{leaseOf(bad, bad.Attempt+1)}, lost)
	until := float64(b.now.Add(time.Minute).UnixMicro())
	for key, want := range map[string]map[string]float64{
		inflight: {good.ID: until, bad.ID: lease},
		nh:       {good.ID: until, bad.ID: lease},
	} {
		for id, score := range want {
			got, err := b.l.Redis().ZScore(ctx, key, ledger.Member("a", id)).Result()
			require.NoError(t, err)
			require.Equal(t, score, got, "%s of %s", key, id)
		}
	}
}

// TestSplitClaimReservation: a direct claim reserves its function slot
// (in the non-high subset for a task below priority 7), gives back a
// reservation it did not use, and leaves one another attempt holds.
func TestSplitClaimReservation(t *testing.T) {
	b := setupLayout(t, 4, nil)
	ctx := context.Background()
	inflight, nh := b.l.InflightKey("fn"), b.l.InflightKey("fn")+":nh"
	members := func(key string) []string {
		m, err := b.l.Redis().ZRange(ctx, key, 0, -1).Result()
		require.NoError(t, err)
		return m
	}
	lim := ledger.Limits{Concurrency: 1}
	claim := func(id string) ledger.Claim {
		c, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "a", ID: id, Function: "fn", Owner: "d1", Lease: takeLease, Limits: lim})
		require.NoError(t, err)
		return c
	}
	low, high := b.record(t, "a", "fn", 5), b.record(t, "a", "fn", 8)
	c := claim(low)
	require.Equal(t, ledger.VerdictRun, c.Verdict)
	require.Equal(t, []string{ledger.Member("a", low)}, members(inflight))
	require.Equal(t, []string{ledger.Member("a", low)}, members(nh))
	require.Equal(t, ledger.VerdictBusy, claim(low).Verdict)
	require.Equal(t, []string{ledger.Member("a", low)}, members(inflight), "the running attempt keeps its slot")
	th := claim(high)
	require.Equal(t, ledger.VerdictThrottled, th.Verdict)
	require.Equal(t, "concurrency", th.Limit)
	require.Equal(t, 250*time.Millisecond, th.Wait)

	ok, err := b.l.Finish(ctx, "a", low, "fn", c.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, members(inflight))
	require.Empty(t, members(nh))
	require.Equal(t, ledger.VerdictDone, claim(low).Verdict)
	require.Empty(t, members(inflight), "a refused claim gives its reservation back")

	require.Equal(t, ledger.VerdictRun, claim(high).Verdict)
	require.Equal(t, []string{ledger.Member("a", high)}, members(inflight))
	require.Empty(t, members(nh), "a high-band attempt is not in the non-high subset")
}

// TestSplitOnCluster runs the release side on a Redis Cluster (3 masters,
// 8 partitions, 16 tenants, so that tenants' partitions and the function's
// slot sit on different nodes): claim, renew, finish, retry, cancel,
// cancel by selector, unpark, each without a cross-slot error, leaving the
// function's in-flight set empty.
func TestSplitOnCluster(t *testing.T) {
	cl := testkit.StartCluster(t, 3, 0)
	rdb := cl.Client()
	ctx := context.Background()
	l := ledger.New(ledger.Config{
		Redis: rdb, Prefix: testkit.UniqueName("tl"), Partitions: 8,
		TenantQuota: func(string) int { return 2 },
		Limited:     func(string) bool { return true },
	})
	const fn = "fn"
	fp := strings.TrimSuffix(l.FnStateKey(fn), "state")
	ring := fp + "ready:normal"
	tenants := make([]string, 16)
	tasks := map[string][]string{}
	for i := range tenants {
		tenant := fmt.Sprintf("t%02d", i)
		tenants[i] = tenant
		ev := ledger.EventTasks{Tenant: tenant, Event: contracts.EventRef{ID: "e", Source: "/cluster", Type: "t"}}
		for j := range 4 {
			ev.Tasks = append(ev.Tasks, ledger.NewTask{ID: fmt.Sprintf("k%d", j), Function: fn, Priority: 5, Message: []byte("m")})
			tasks[tenant] = append(tasks[tenant], fmt.Sprintf("k%d", j))
		}
		_, err := l.Create(ctx, []ledger.EventTasks{ev})
		require.NoError(t, err)
	}
	lim := ledger.Limits{Concurrency: 100, Rate: 1000, Burst: 100, TenantRate: 100, TenantBurst: 10}
	claim := func(t *testing.T, tenant, id string) ledger.Claim {
		t.Helper()
		c, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: tenant, ID: id, Function: fn, Owner: "d1", Lease: time.Minute, Limits: lim})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, c.Verdict, "claiming %s/%s", tenant, id)
		return c
	}
	// park parks tenant in fn's normal band with a task waiting there.
	park := func(t *testing.T, tenant string) {
		t.Helper()
		require.NoError(t, rdb.ZAdd(ctx, ring+":"+tenant, redis.Z{Score: 1, Member: "waiting"}).Err())
		require.NoError(t, rdb.SAdd(ctx, l.TenantKeyPrefix(tenant)+"parked", fn+"\n"+ring).Err())
	}
	inRing := func(t *testing.T, tenant string) bool {
		t.Helper()
		err := rdb.ZScore(ctx, ring, tenant).Err()
		if errors.Is(err, redis.Nil) {
			return false
		}
		require.NoError(t, err)
		return true
	}

	t.Run("ClaimRenewFinish", func(t *testing.T) {
		for _, tenant := range tenants {
			c := claim(t, tenant, tasks[tenant][0])
			lost, err := l.Renew(ctx, 2*time.Minute, ledger.Lease{Tenant: tenant, ID: tasks[tenant][0], Function: fn, Owner: "d1", Attempt: c.Attempt, Redrives: c.Redrives})
			require.NoError(t, err)
			require.Empty(t, lost)
			park(t, tenant)
			ok, err := l.Finish(ctx, tenant, tasks[tenant][0], fn, c.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
			require.NoError(t, err)
			require.True(t, ok)
			require.True(t, inRing(t, tenant), "the finish unparked %s", tenant)
			require.NoError(t, rdb.ZRem(ctx, ring, tenant).Err())
		}
	})
	t.Run("Retry", func(t *testing.T) {
		for _, tenant := range tenants {
			c := claim(t, tenant, tasks[tenant][1])
			ok, err := l.Retry(ctx, tenant, tasks[tenant][1], fn, c.Fence(), time.Now().Add(time.Hour), "boom", false)
			require.NoError(t, err)
			require.True(t, ok)
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		for _, tenant := range tenants {
			claim(t, tenant, tasks[tenant][2])
			task, err := l.Cancel(ctx, tenant, tasks[tenant][2])
			require.NoError(t, err)
			require.Equal(t, contracts.StateCancelled, task.State)
		}
	})
	t.Run("CancelMatching", func(t *testing.T) {
		for _, tenant := range tenants {
			claim(t, tenant, tasks[tenant][3])
			res, err := l.CancelMatching(ctx, tenant, contracts.CancelRequest{Selector: contracts.Selector{Function: fn, State: contracts.StateRunning}})
			require.NoError(t, err)
			require.Equal(t, 1, res.Cancelled)
		}
	})
	t.Run("Unpark", func(t *testing.T) {
		quotas := map[string]int{}
		for i, tenant := range tenants {
			park(t, tenant)
			if i%2 == 0 {
				require.NoError(t, l.Unpark(ctx, tenant, 2))
			} else {
				quotas[tenant] = 2
			}
		}
		require.NoError(t, l.UnparkAll(ctx, quotas))
		for _, tenant := range tenants {
			require.True(t, inRing(t, tenant), "%s unparked", tenant)
		}
	})
	for _, key := range []string{l.InflightKey(fn), l.InflightKey(fn) + ":nh"} {
		n, err := rdb.ZCard(ctx, key).Result()
		require.NoError(t, err)
		require.Zero(t, n, "%s is empty", key)
	}
}
