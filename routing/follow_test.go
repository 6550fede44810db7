package routing

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/broker"
)

// fakeSource is a routing table and a broker whose answers a test sets.
type fakeSource struct {
	mu      sync.Mutex
	snap    Snapshot
	loadErr error
	loads   int
	depths  map[string]broker.LaneDepth
	asked   []string // the lanes of the last Depths call
}

func (f *fakeSource) Load(context.Context) (Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	return f.snap, f.loadErr
}

func (f *fakeSource) Depths(_ context.Context, lanes ...string) (map[string]broker.LaneDepth, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = slices.Clone(lanes)
	return f.depths, nil
}

func (f *fakeSource) set(change func(*fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// TestDynamicFollow: the table follows the store's versions and the
// broker's backlogs, the lanes (a new dedicated one included) are handed
// on after each refresh, a failed read keeps the table, and Follow returns
// when its context ends.
func TestDynamicFollow(t *testing.T) {
	t.Parallel()
	st, err := NewStatic(4, 2)
	require.NoError(t, err)
	d := NewDynamic(st, nil)
	shared := st.Lanes()
	acme := DedicatedLaneName("acme")
	src := &fakeSource{
		snap:   Snapshot{Version: 1, Dedicated: map[string]string{"acme": acme}},
		depths: map[string]broker.LaneDepth{shared[0]: {Backlog: 7, Consumers: 2}, acme: {Backlog: 40}},
	}
	var mu sync.Mutex
	var handed []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Follow(ctx, FollowConfig{Store: src, Lanes: src, Every: time.Millisecond, OnLanes: func(_ context.Context, lanes []string) {
			mu.Lock()
			handed = lanes
			mu.Unlock()
		}})
	}()
	lastHanded := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return handed
	}

	want := append(slices.Clone(shared), acme)
	require.Eventually(t, func() bool { return slices.Equal(lastHanded(), want) }, 5*time.Second, time.Millisecond, "the lanes with the dedicated one")
	require.EqualValues(t, 1, d.Snapshot().Version)
	require.Equal(t, []string{acme}, d.Shard("acme"))
	require.Eventually(t, func() bool {
		return d.Depths()[shared[0]] == 7 && d.Depths()[acme] == 40
	}, 5*time.Second, time.Millisecond, "the backlogs recorded")
	src.set(func(f *fakeSource) { require.Equal(t, want, f.asked, "the backlogs of every lane are asked") })

	// The store cannot be read: the table stays as it was (what comes
	// with the error is not installed), the backlogs are still polled.
	var loads int
	src.set(func(f *fakeSource) {
		f.snap, f.loadErr, loads = Snapshot{Version: 9}, errors.New("redis down"), f.loads
		f.depths = map[string]broker.LaneDepth{shared[0]: {Backlog: 3}}
	})
	require.Eventually(t, func() bool {
		var n int
		src.set(func(f *fakeSource) { n = f.loads })
		return n >= loads+2 && d.Depths()[shared[0]] == 3
	}, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 1, d.Snapshot().Version, "a failed read keeps the table")
	require.Equal(t, []string{acme}, d.Shard("acme"))

	// A newer version retires the lane: it is still handed on.
	src.set(func(f *fakeSource) {
		f.loadErr = nil
		f.snap = Snapshot{Version: 2, Retiring: map[string]time.Time{acme: time.Now()}}
	})
	require.Eventually(t, func() bool { return d.Snapshot().Version == 2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, st.Shard("acme"), d.Shard("acme"), "merged back to its shard")
	require.Eventually(t, func() bool { return slices.Equal(lastHanded(), want) }, 5*time.Second, time.Millisecond, "a retiring lane is still consumed")

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return when its context ended")
	}
}
