package ledger_test

import (
	"context"
	"errors"
	"fmt"
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

// errorHook records every error a command answered (but nil replies), so
// that a script error the ledger swallows (a repair left to the sweep)
// still fails the test.
type errorHook struct {
	mu   sync.Mutex
	errs []string
}

func (h *errorHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *errorHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.record(cmd)
		return err
	}
}

func (h *errorHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.record(c)
		}
		return err
	}
}

func (h *errorHook) record(cmd redis.Cmder) {
	if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
		h.mu.Lock()
		h.errs = append(h.errs, err.Error())
		h.mu.Unlock()
	}
}

func (h *errorHook) errors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.errs...)
}

// TestPartitionedOnCluster runs the partitioned layout's take, admit,
// backlog and reservation sweep on a Redis Cluster of 3 masters, 8
// partitions and 16 tenants: every script runs in one slot (an
// undeclared key of another slot fails with "non local key" or "do not
// hash to the same slot"), tasks start, and tenants share the starts.
func TestPartitionedOnCluster(t *testing.T) {
	c := testkit.StartCluster(t, 3, 0)
	rdb := c.Client()
	hook := &errorHook{}
	rdb.AddHook(hook)
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now().Truncate(time.Millisecond)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: "tl", Partitions: 8, Now: clock, PublishGuard: 30 * time.Second})
	require.NoError(t, l.LoadScripts(ctx))

	const fn, perTenant = "fn", 4
	var tenants []string
	for i := range 16 {
		tenants = append(tenants, fmt.Sprintf("t%02d", i))
	}
	parked, rated := tenants[0], tenants[1]
	lim := ledger.TakeLimits{Concurrency: 200, ReservedHigh: 0.25, Rate: 10_000, Burst: 1000,
		Tenants: map[string]ledger.TenantLimits{parked: {Concurrency: 1}, rated: {Rate: 1, Burst: 1}}}
	const lease = time.Minute
	prio := map[string]int{}
	started := map[string]int{} // task id: starts
	tenantOf := map[string]string{}
	take := func(n int) ledger.Taken {
		t.Helper()
		tk, err := l.Take(ctx, fn, "d1", n, lease, lim)
		require.NoError(t, err)
		for _, s := range tk.Tasks {
			started[s.ID]++
			require.Equal(t, []byte("m-"+s.ID), s.Message)
		}
		return tk
	}
	admit := func(tenant, id string) ledger.AdmitVerdict {
		t.Helper()
		a, err := l.Admit(ctx, ledger.TaskRef{Tenant: tenant, ID: id, Function: fn, Priority: prio[id]})
		require.NoError(t, err)
		return a.Verdict
	}
	defer func() { require.Empty(t, hook.errors(), "no command failed") }()

	t.Run("admit", func(t *testing.T) {
		for _, tenant := range tenants {
			ev := ledger.EventTasks{Tenant: tenant, Event: contracts.EventRef{ID: "e-" + tenant, Source: "/cluster", Type: "t"}}
			for j := range perTenant {
				id := fmt.Sprintf("%s-task%d", tenant, j)
				prio[id], tenantOf[id] = 5, tenant
				ev.Tasks = append(ev.Tasks, ledger.NewTask{ID: id, Function: fn, Priority: prio[id], Message: []byte("m-" + id)})
			}
			_, err := l.Create(ctx, []ledger.EventTasks{ev})
			require.NoError(t, err)
			for _, task := range ev.Tasks {
				require.Equal(t, ledger.AdmitAdmitted, admit(tenant, task.ID))
				require.Equal(t, ledger.AdmitReady, admit(tenant, task.ID), "a redelivery")
			}
		}
		// The 16 tenants' records spread over every master.
		var masters sync.Map
		require.NoError(t, rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			keys, err := m.Keys(ctx, "tl:{p*}:t*:task:*").Result()
			masters.Store(m.Options().Addr, len(keys))
			return err
		}))
		n := 0
		masters.Range(func(addr, keys any) bool {
			n++
			require.Positive(t, keys.(int), "task records on master %s", addr)
			return true
		})
		require.Equal(t, 3, n)
	})

	t.Run("backlog", func(t *testing.T) {
		qs, err := l.ReadyQueues(ctx, []string{fn}, tenants)
		require.NoError(t, err)
		require.Len(t, qs, 1)
		for _, tenant := range tenants {
			require.EqualValues(t, perTenant, qs[0].Tenants[tenant], tenant)
		}
		require.False(t, qs[0].Oldest.IsZero())
		require.False(t, qs[0].Oldest.After(clock()))
	})

	t.Run("take fairly", func(t *testing.T) {
		tk := take(16)
		require.Len(t, tk.Tasks, 16)
		seen := map[string]bool{}
		for _, s := range tk.Tasks {
			seen[s.Tenant] = true
		}
		require.Len(t, seen, 16, "one start per tenant")
	})

	t.Run("quota and rate", func(t *testing.T) {
		tk := take(16)
		require.Len(t, tk.Tasks, 16)
		per := map[string]int{}
		for _, s := range tk.Tasks {
			per[s.Tenant]++
		}
		require.Zero(t, per[parked], "at its quota")
		require.Zero(t, per[rated], "over its rate")
		require.Equal(t, 1, tk.Parked)
		for _, tenant := range tenants[2:] {
			require.GreaterOrEqual(t, per[tenant], 1, tenant)
		}
	})

	t.Run("sweep", func(t *testing.T) {
		n, err := l.TakeFOnly(ctx, fn, 4, lease)
		require.NoError(t, err)
		require.Equal(t, 4, n)
		advance(lease + time.Second)
		swept, err := l.SweepReservations(ctx, []string{fn})
		require.NoError(t, err)
		require.GreaterOrEqual(t, swept, 4)
	})

	t.Run("all start", func(t *testing.T) {
		deadline := 200
		for ; deadline > 0; deadline-- {
			due, err := l.TakeDue(ctx, 100, 30*time.Second)
			require.NoError(t, err)
			for _, d := range due {
				if d.State.Terminal() || d.Message == nil {
					require.NoError(t, l.Forget(ctx, d))
					continue
				}
				admit(d.Tenant, d.ID)
			}
			take(32)
			if len(started) == len(prio)-(perTenant-1) {
				break
			}
			advance(time.Second)
		}
		require.Positive(t, deadline, "started %d of %d", len(started), len(prio))
		for id := range prio {
			if tenantOf[id] == parked && started[id] == 0 {
				continue
			}
			require.Positive(t, started[id], id)
		}
	})
	for _, e := range hook.errors() {
		require.False(t, strings.Contains(e, "CROSSSLOT") || strings.Contains(e, "non local") || strings.Contains(e, "same slot"), e)
	}
}
