package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/keyslot"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// layoutPartitions is the partition count of the partitioned layout the
// tests below run under, beside the legacy layout (0).
const layoutPartitions = 4

// eachLayout runs f on a ledger of each key layout.
func eachLayout(t *testing.T, f func(t *testing.T, b *bundle, partitions int)) {
	for _, p := range []int{0, layoutPartitions} {
		t.Run(fmt.Sprintf("partitions=%d", p), func(t *testing.T) {
			t.Parallel()
			f(t, setupLayout(t, p, nil), p)
		})
	}
}

// TestLayoutKeyNames: the legacy layout keeps the names of every release
// before partitions; the partitioned one puts a tenant's keys and its
// partition's shared sets under the partition's hash tag.
func TestLayoutKeyNames(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	legacy := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix})
	require.False(t, legacy.Partitioned())
	require.Equal(t, 1, legacy.Partitions())
	require.Equal(t, prefix+":{acme}:", legacy.TenantKeyPrefix("acme"))
	require.Equal(t, prefix+":{acme}:task:t1", legacy.TaskKey("acme", "t1"))
	require.Equal(t, prefix+":delay", legacy.DelayKey("acme"))
	require.Equal(t, prefix+":expiry", legacy.ExpiryKey("acme"))
	require.Equal(t, prefix+":outbox", legacy.OutboxStream("acme"))
	require.Equal(t, []string{prefix + ":outbox"}, legacy.OutboxStreams())
	require.Equal(t, prefix+":outbox", legacy.OutboxBase())
	require.Equal(t, prefix+":routing", legacy.RoutingKey())
	require.Equal(t, prefix+":{f:fn}:state", legacy.FnStateKey("fn"))

	part := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: layoutPartitions})
	require.True(t, part.Partitioned())
	require.Equal(t, layoutPartitions, part.Partitions())
	k := keyslot.Partition("acme", layoutPartitions)
	tag := fmt.Sprintf("%s:{p%d}:", prefix, k)
	require.Equal(t, tag+"acme:", part.TenantKeyPrefix("acme"))
	require.Equal(t, tag+"acme:task:t1", part.TaskKey("acme", "t1"))
	require.Equal(t, tag+"delay", part.DelayKey("acme"))
	require.Equal(t, tag+"expiry", part.ExpiryKey("acme"))
	require.Equal(t, tag+"outbox", part.OutboxStream("acme"))
	require.Len(t, part.OutboxStreams(), layoutPartitions)
	require.Equal(t, part.OutboxStream("acme"), part.OutboxStreams()[k])
	require.Equal(t, prefix+":outbox", part.OutboxBase(), "named after the legacy stream, whatever the partitions")
	require.Equal(t, prefix+":{routing}", part.RoutingKey())
	require.Equal(t, prefix+":{f:fn}:state", part.FnStateKey("fn"))
	for _, key := range []string{part.TaskKey("acme", "t1"), part.StateKey("acme", contracts.StateQueued), part.LogKey("acme", "t1"),
		part.DelayKey("acme"), part.ExpiryKey("acme"), part.OutboxStream("acme")} {
		require.Equal(t, keyslot.Of(tag), keyslot.Of(key), "%s is in acme's partition's slot", key)
	}
}

// TestLuaTenantPrefix: the scripts that find tenants in a function's keys
// build the same key names as the Go side, in both layouts.
func TestLuaTenantPrefix(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	script := redis.NewScript(ledger.LuaTenantPrefix + `
local d, o, e = tshared(ARGV[1], tonumber(ARGV[2]), ARGV[3], 'd', 'o', 'e')
return {tprefix(ARGV[1], tonumber(ARGV[2]), ARGV[3]), d, o, e}
`)
	tenants := []string{"a", "b", "acme", "globex", "123456789", "tenant_with-dashes_0042", "ünïcødé", string([]byte{0, 0xff, 0x80})}
	for i := range 40 {
		tenants = append(tenants, fmt.Sprintf("t%d", i))
	}
	for _, parts := range []int{0, 1, 4, 64, 1024} {
		l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: parts})
		for _, tenant := range tenants {
			got, err := script.Run(context.Background(), rdb, nil, prefix, parts, tenant).StringSlice()
			require.NoError(t, err)
			want := []string{l.TenantKeyPrefix(tenant), "d", "o", "e"}
			if parts > 0 {
				want = []string{l.TenantKeyPrefix(tenant), l.DelayKey(tenant), l.OutboxStream(tenant), l.ExpiryKey(tenant)}
			}
			require.Equal(t, want, got, "tenant %q, %d partitions", tenant, parts)
		}
	}
}

// layoutTenants are tenants of at least two partitions of
// layoutPartitions (checked).
var layoutTenants = []string{"a", "b", "c"}

// TestLayoutFlows runs the main flows in both layouts with tenants of
// several partitions: create (and dedup), admit, one take across the
// tenants, finish into each tenant's outbox, a retry through the delay
// set, a delayed task, expiry by the scan and by take, cancel.
func TestLayoutFlows(t *testing.T) {
	t.Parallel()
	parts := map[int]bool{}
	for _, tenant := range layoutTenants {
		parts[keyslot.Partition(tenant, layoutPartitions)] = true
	}
	require.Greater(t, len(parts), 1, "the tenants span partitions")

	eachLayout(t, func(t *testing.T, b *bundle, _ int) {
		ctx := context.Background()
		// Create, dedup, admit (a's task in the high band), takes across
		// the tenants, finish.
		ids := map[string]string{}
		for _, tenant := range layoutTenants {
			ev := event(tenant, "e-"+tenant, "f")
			ev.Tasks[0].Priority = 5
			if tenant == "a" {
				ev.Tasks[0].Priority = 8
			}
			c, err := b.l.Create(ctx, []ledger.EventTasks{ev})
			require.NoError(t, err)
			again, err := b.l.Create(ctx, []ledger.EventTasks{ev})
			require.NoError(t, err)
			require.True(t, again[0].Duplicate)
			require.Equal(t, c[0].Tasks[0].ID, again[0].Tasks[0].ID)
			ids[tenant] = c[0].Tasks[0].ID
			require.NoError(t, b.l.Enqueued(ctx, tenant, c[0].GuardScore, ids[tenant]))
			_, guarded := b.delayed(t, tenant, ids[tenant])
			require.False(t, guarded, "the guard is dropped from the tenant's partition")
			require.Equal(t, ledger.AdmitAdmitted, b.admit(t, tenant, ids[tenant], "f", ev.Tasks[0].Priority).Verdict)
		}
		// A limit of 2, one slot kept for the high band: the high task
		// first; then the take counts the running attempts of the lower
		// bands by reading their records (none: a's is high), so one
		// normal task starts.
		lim := ledger.TakeLimits{Concurrency: 2, ReservedHigh: 0.5}
		tk := b.take(t, "f", 1, lim)
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, "a", tk.Tasks[0].Tenant)
		tk1 := b.take(t, "f", 10, lim)
		require.Len(t, tk1.Tasks, 1, "the running high task does not count against the normal band")
		tk2 := b.take(t, "f", 10, ledger.TakeLimits{})
		started := append(append(tk.Tasks, tk1.Tasks...), tk2.Tasks...)
		require.Len(t, started, len(layoutTenants))
		for _, s := range started {
			require.Equal(t, ids[s.Tenant], s.ID)
			_, leased := b.delayed(t, s.Tenant, s.ID)
			require.True(t, leased, "the lease's delay entry is in the tenant's partition")
			b.finish(t, "f", s)
		}
		for _, tenant := range layoutTenants {
			require.Equal(t, []string{ids[tenant]}, b.outboxIDs(t, tenant), "%s's result is in its partition's outbox", tenant)
		}

		// A retry waits in the delay set of its tenant's partition and
		// comes back through TakeDue.
		r := b.record(t, "b", "f", 5)
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "b", r, "f", 5).Verdict)
		st := b.take(t, "f", 1, ledger.TakeLimits{}).Tasks
		require.Len(t, st, 1)
		ok, err := b.l.Retry(ctx, "b", r, "f", st[0].Fence(), b.now.Add(time.Second), "boom", false)
		require.NoError(t, err)
		require.True(t, ok)
		// A delayed task of another tenant.
		d := b.record(t, "c", "f", 5, func(ev *ledger.EventTasks) { ev.DueAt = b.now.Add(time.Second) })
		due, err := b.l.TakeDue(ctx, 100, time.Minute)
		require.NoError(t, err)
		require.Empty(t, due, "nothing due yet")
		b.advance(2 * time.Second)
		due, err = b.l.TakeDue(ctx, 100, time.Minute)
		require.NoError(t, err)
		got := map[string]contracts.State{}
		for _, x := range due {
			got[x.Tenant+"/"+x.ID] = x.State
		}
		require.Equal(t, map[string]contracts.State{"b/" + r: contracts.StateRetrying, "c/" + d: contracts.StateScheduled}, got)
		for _, x := range due {
			require.Equal(t, ledger.AdmitAdmitted, b.admit(t, x.Tenant, x.ID, "f", 5).Verdict)
		}
		require.Len(t, b.take(t, "f", 10, ledger.TakeLimits{}).Tasks, 2)

		// Expiry: by the scan, and by a take that finds the task expired.
		past := b.now.Add(-time.Second)
		scanned := b.record(t, "a", "f", 5, func(ev *ledger.EventTasks) { ev.ExpiresAt = &past })
		soon := b.now.Add(time.Second)
		taken := b.record(t, "b", "f", 5, func(ev *ledger.EventTasks) { ev.ExpiresAt = &soon })
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "b", taken, "f", 5).Verdict)
		n, err := b.l.ExpireDue(ctx, 100)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, contracts.StateExpired, b.stateOf(t, "a", scanned))
		b.advance(2 * time.Second)
		tk = b.take(t, "f", 10, ledger.TakeLimits{})
		require.Empty(t, tk.Tasks)
		require.Equal(t, 1, tk.Expired)
		require.Equal(t, contracts.StateExpired, b.stateOf(t, "b", taken))
		for _, key := range []string{b.l.ExpiryKey("a"), b.l.ExpiryKey("b")} {
			n, err := b.l.Redis().ZCard(ctx, key).Result()
			require.NoError(t, err)
			require.Zero(t, n, "nothing left in %s", key)
		}

		// Cancel a waiting task.
		cx := b.record(t, "c", "f", 5)
		task, err := b.l.Cancel(ctx, "c", cx)
		require.NoError(t, err)
		require.Equal(t, contracts.StateCancelled, task.State)

		require.Contains(t, b.outboxIDs(t, "a"), scanned)
		require.Contains(t, b.outboxIDs(t, "b"), taken)
		require.Contains(t, b.outboxIDs(t, "c"), cx)
	})
}

// outboxIDs lists the task ids of tenant's entries in its partition's
// outbox.
func (b *bundle) outboxIDs(t *testing.T, tenant string) []string {
	t.Helper()
	entries, err := b.l.Redis().XRange(context.Background(), b.l.OutboxStream(tenant), "-", "+").Result()
	require.NoError(t, err)
	var ids []string
	for _, e := range entries {
		if e.Values["tenant"] == tenant {
			ids = append(ids, e.Values["id"].(string))
		}
	}
	return ids
}
