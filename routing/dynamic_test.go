package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

func TestDynamicPicksTheLeastBacklog(t *testing.T) {
	t.Parallel()
	st, err := NewStatic(16, 2)
	require.NoError(t, err)
	d := NewDynamic(st, []string{"urgent"})
	shard := d.Shard("acme")
	require.Len(t, shard, 2)

	// No depths known: spread over the shard.
	seen := map[string]bool{}
	for i := range 100 {
		seen[d.LaneFor("acme", fmt.Sprint(i))] = true
	}
	require.Len(t, seen, 2)

	// One lane of the shard is backed up: every task avoids it.
	d.SetDepths(map[string]int64{shard[0]: 5000, shard[1]: 3})
	for i := range 100 {
		require.Equal(t, shard[1], d.LaneFor("acme", fmt.Sprint(i)))
	}

	// A latency-sensitive tenant goes to the emptiest shared lane of all.
	depths := map[string]int64{}
	for i, lane := range st.Lanes() {
		depths[lane] = int64(100 + i)
	}
	depths[st.Lanes()[7]] = 0
	d.SetDepths(depths)
	require.Equal(t, st.Lanes()[7], d.LaneFor("urgent", "x"))
}

// Between two depth polls, a burst must not pile onto the lane that looked
// emptiest at the last poll: what this process sent since counts.
func TestDynamicCountsWhatItSentSinceThePoll(t *testing.T) {
	t.Parallel()
	st, err := NewStatic(16, 2)
	require.NoError(t, err)
	d := NewDynamic(st, nil)
	shard := d.Shard("acme")
	d.SetDepths(map[string]int64{shard[0]: 0, shard[1]: 100})

	perLane := map[string]int{}
	for i := range 1000 {
		perLane[d.LaneFor("acme", fmt.Sprint(i))]++
	}
	// shard[0] takes the first 100 alone, then the two alternate.
	require.InDelta(t, 550, perLane[shard[0]], 1)
	require.InDelta(t, 450, perLane[shard[1]], 1)

	// A neighbour sharing shard[0] now sees it as backed up...
	var neighbour, other string
	for i := range 1000 {
		n := fmt.Sprintf("tenant-%d", i)
		if s := st.Shard(n); s[0] == shard[0] && s[1] != shard[1] || s[1] == shard[0] && s[0] != shard[1] {
			neighbour, other = n, s[0]
			if other == shard[0] {
				other = s[1]
			}
			break
		}
	}
	require.NotEmpty(t, neighbour)
	require.Equal(t, other, d.LaneFor(neighbour, "x"))

	// ...until a poll says it drained.
	d.SetDepths(map[string]int64{other: 10})
	require.Equal(t, shard[0], d.LaneFor(neighbour, "x"))
}

func TestDynamicDedicatedLanes(t *testing.T) {
	t.Parallel()
	st, err := NewStatic(4, 2)
	require.NoError(t, err)
	d := NewDynamic(st, nil)
	var mu sync.Mutex
	var events []string
	d.OnChange(func(added, removed []string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, fmt.Sprintf("+%v -%v", added, removed))
	})
	lane := DedicatedLaneName("hot")
	d.Update(Snapshot{Version: 1, Dedicated: map[string]string{"hot": lane}})
	require.Equal(t, lane, d.LaneFor("hot", "k"))
	require.Equal(t, []string{lane}, d.Shard("hot"))
	require.Contains(t, d.Lanes(), lane)
	require.Len(t, d.Lanes(), 5)

	d.Update(Snapshot{Version: 1}) // not newer: ignored
	require.Equal(t, lane, d.LaneFor("hot", "k"))
	d.Update(Snapshot{Version: 2})
	require.Contains(t, d.SharedShard("hot"), d.LaneFor("hot", "k"))
	require.Len(t, d.Lanes(), 4)
	require.Equal(t, []string{"+[" + lane + "] -[]", "+[] -[" + lane + "]"}, events)
}

// Two controllers deciding from the same version: exactly one change
// lands, the other is told to reload. No split-brain table.
func TestStoreVersionRace(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	ctx := context.Background()
	s := NewStore(rdb, prefix)
	snap, err := s.Load(ctx)
	require.NoError(t, err)
	require.Zero(t, snap.Version)

	var wg sync.WaitGroup
	results := make([]error, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := fmt.Sprintf("t%d", i)
			_, results[i] = s.Apply(ctx, 0, Change{Tenant: tenant, Action: "split", Lane: DedicatedLaneName(tenant), Reason: "test"}, nil)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range results {
		if err == nil {
			won++
		} else {
			require.True(t, errors.Is(err, ErrConflict), "%v", err)
		}
	}
	require.Equal(t, 1, won, "exactly one change applies to version 0")
	snap, err = s.Load(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, snap.Version)
	require.Len(t, snap.Dedicated, 1)

	pin := true
	var tenant string
	for t := range snap.Dedicated {
		tenant = t
	}
	v, err := s.Apply(ctx, 1, Change{Tenant: tenant, Action: "merge", Reason: "operator"}, &pin)
	require.NoError(t, err)
	require.EqualValues(t, 2, v)
	snap, err = s.Load(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Dedicated)
	require.True(t, snap.Pinned[tenant])

	log, err := s.Log(ctx, 10)
	require.NoError(t, err)
	require.Len(t, log, 2)
	require.Equal(t, "merge", log[0].Action)
	require.EqualValues(t, 2, log[0].Version)
	require.EqualValues(t, 1, log[1].Version)
}
