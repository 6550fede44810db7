package routing

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// recordingLanes stands in for the broker's lane management and records
// what the controller asked of it (the integration tests use RabbitMQ).
type recordingLanes struct {
	mu       sync.Mutex
	declared []string
	deleted  []string
	// full lanes hold messages: DeleteLane leaves them.
	full map[string]bool
}

func (r *recordingLanes) DeclareLanes(_ context.Context, lanes ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.declared = append(r.declared, lanes...)
	return nil
}

func (r *recordingLanes) DeleteLane(_ context.Context, lane string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full[lane] {
		return false, nil
	}
	r.deleted = append(r.deleted, lane)
	return true, nil
}

func TestControllerSplitsAndMerges(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	ctx := context.Background()
	// Under a broker prefix of its own: the controller names the lanes it
	// declares with the table's prefix.
	st, err := NewStaticNamed(NamesFor("ctl"), 16, 2)
	require.NoError(t, err)
	table := NewDynamic(st, nil)
	lanes := &recordingLanes{full: map[string]bool{}}
	const window = time.Second
	c := NewController(ControllerConfig{
		Store: NewStore(rdb, prefix), Table: table, Lanes: lanes, Redis: rdb, Prefix: prefix,
		Window: window, HotShare: 0.3, HotBacklog: 100, Cooldown: 5 * time.Second, MaxDedicated: 1, LaneGrace: 10 * time.Second,
	})
	now := time.Unix(1_800_000_000, 0)
	report := func(at time.Time, counts map[string]int) {
		r := NewReporter(rdb, prefix, window, 0.15)
		for tenant, n := range counts {
			r.Observe(tenant, n)
		}
		require.NoError(t, r.Flush(ctx, WindowIndex(at, window)-1))
	}
	hotShard := st.Shard("hot")

	// Hot by share but nothing waiting: stays.
	report(now, map[string]int{"hot": 800, "a": 100, "b": 100})
	require.NoError(t, c.Step(ctx, now))
	require.Empty(t, table.Snapshot().Dedicated)

	// Hot and backed up: split, lane declared first. "warm" is hot too, but
	// the cap is one dedicated lane.
	now = now.Add(window)
	report(now, map[string]int{"hot": 600, "warm": 350, "a": 50})
	table.SetDepths(map[string]int64{hotShard[0]: 90, hotShard[1]: 50, st.Shard("warm")[0]: 500})
	require.NoError(t, c.Step(ctx, now))
	lane := "ctl.lane.tenant.hot"
	require.Equal(t, map[string]string{"hot": lane}, table.Snapshot().Dedicated)
	require.Equal(t, []string{lane}, lanes.declared)
	require.Equal(t, lane, table.LaneFor("hot", "k"))

	// Cooling: quiet, but its lane still has work: no merge.
	now = now.Add(window)
	report(now, map[string]int{"a": 100})
	table.SetDepths(map[string]int64{lane: 3})
	require.NoError(t, c.Step(ctx, now))
	require.Contains(t, table.Snapshot().Dedicated, "hot")

	// Quiet with an empty lane for the cooldown: merged back.
	table.SetDepths(map[string]int64{lane: 0})
	for range 6 {
		now = now.Add(window)
		report(now, map[string]int{"a": 100})
		require.NoError(t, c.Step(ctx, now))
	}
	require.Empty(t, table.Snapshot().Dedicated)
	require.Contains(t, hotShard, table.LaneFor("hot", "k"))
	require.Empty(t, lanes.deleted, "the lane outlives the merge by its grace period")
	require.Contains(t, table.Snapshot().Retiring, lane, "a merged lane retires")
	require.Contains(t, table.Lanes(), lane, "dispatchers keep consuming a retiring lane")

	log, err := c.cfg.Store.Log(ctx, 10)
	require.NoError(t, err)
	require.Len(t, log, 2)
	require.Equal(t, "merge", log[0].Action)
	require.Equal(t, "split", log[1].Action)
	require.Contains(t, log[1].Reason, "waiting in its shard")

	// Pin "a" to a dedicated lane; the controller leaves it be.
	ch, err := c.Pin(ctx, "a", true)
	require.NoError(t, err)
	require.Equal(t, "split", ch.Action)
	require.True(t, ch.Pinned)
	for range 8 {
		now = now.Add(window)
		report(now, map[string]int{"b": 100})
		require.NoError(t, c.Step(ctx, now))
	}
	require.Contains(t, table.Snapshot().Dedicated, "a", "a pinned tenant is not merged")

	// Past the grace period the retired lane is deleted, but only once
	// empty; then it leaves the table.
	lanes.mu.Lock()
	lanes.full[lane] = true
	lanes.mu.Unlock()
	for range 4 {
		now = now.Add(window)
		report(now, map[string]int{"b": 100})
		require.NoError(t, c.Step(ctx, now))
	}
	require.Empty(t, lanes.deleted)
	require.Contains(t, table.Lanes(), lane)
	lanes.mu.Lock()
	lanes.full[lane] = false
	lanes.mu.Unlock()
	now = now.Add(window)
	report(now, map[string]int{"b": 100})
	require.NoError(t, c.Step(ctx, now))
	require.Equal(t, []string{lane}, lanes.deleted)
	require.Empty(t, table.Snapshot().Retiring)
	require.NotContains(t, table.Lanes(), lane)
	log, err = c.cfg.Store.Log(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "delete", log[0].Action)
	require.Equal(t, lane, log[0].Lane)
}
