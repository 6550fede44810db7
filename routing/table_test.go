package routing

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestShardIndexesStable(t *testing.T) {
	t.Parallel()
	// Golden values: changing them moves every tenant to other lanes.
	require.Equal(t, []int{1, 5}, ShardIndexes("acme", 16, 2))
	require.Equal(t, []int{14, 1}, ShardIndexes("default", 16, 2))
	require.Equal(t, ShardIndexes("acme", 16, 2), ShardIndexes("acme", 16, 2))
}

func TestShardIndexesDistinctAndInRange(t *testing.T) {
	t.Parallel()
	for i := range 2000 {
		tenant := fmt.Sprintf("t%d", i)
		for _, nk := range [][2]int{{16, 2}, {16, 3}, {5, 5}, {1, 1}, {32, 4}} {
			idx := ShardIndexes(tenant, nk[0], nk[1])
			require.Len(t, idx, nk[1])
			seen := map[int]bool{}
			for _, j := range idx {
				require.GreaterOrEqual(t, j, 0)
				require.Less(t, j, nk[0])
				require.False(t, seen[j], "duplicate lane in shard %v", idx)
				seen[j] = true
			}
		}
	}
}

func TestShardSpreadIsEven(t *testing.T) {
	t.Parallel()
	const tenants, n, k = 10000, 16, 2
	counts := make([]int, n)
	for i := range tenants {
		for _, j := range ShardIndexes(fmt.Sprintf("tenant-%d", i), n, k) {
			counts[j]++
		}
	}
	// Expected 1250 per lane; a chi-square over 15 degrees of freedom above
	// 37.7 has probability < 0.001 for a uniform assignment.
	expected := float64(tenants*k) / n
	var chi2 float64
	for _, c := range counts {
		d := float64(c) - expected
		chi2 += d * d / expected
	}
	require.Less(t, chi2, 37.7, "lane counts %v", counts)
}

func TestStaticTable(t *testing.T) {
	t.Parallel()
	tab, err := NewStatic(16, 2)
	require.NoError(t, err)
	require.Len(t, tab.Lanes(), 16)
	require.Equal(t, "tasklane.lane.shared.00", tab.Lanes()[0])
	require.Equal(t, "tasklane.lane.shared.15", tab.Lanes()[15])
	shard := tab.Shard("acme")
	used := map[string]int{}
	for i := range 1000 {
		lane := tab.LaneFor("acme", fmt.Sprintf("task-%d", i))
		require.Contains(t, shard, lane)
		used[lane]++
	}
	require.Len(t, used, 2, "tasks spread over both lanes of the shard")

	_, err = NewStatic(4, 5)
	require.ErrorContains(t, err, "shard_size=5")
	_, err = NewStatic(0, 0)
	require.Error(t, err)
}

func BenchmarkLaneFor(b *testing.B) {
	tab, err := NewStatic(16, 2)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = tab.LaneFor("tenant-42", "01J0000000000000000000000")
	}
}

// The blast-radius figures in the package doc, checked by simulation: over
// every pair of 1,000 tenants, how often two share their whole shard, and
// how often none of it.
func TestShardOverlapMatchesBlastRadius(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		n, k       int
		full, none float64 // from the package doc
	}{
		{16, 2, 1.0 / 120, 91.0 / 120},
		{16, 3, 1.0 / 560, 286.0 / 560},
	} {
		const tenants = 1000
		shards := make([]map[int]bool, tenants)
		for i := range shards {
			shards[i] = map[int]bool{}
			for _, j := range ShardIndexes(fmt.Sprintf("tenant-%d", i), c.n, c.k) {
				shards[i][j] = true
			}
		}
		var pairs, full, none int
		for a := range tenants {
			for b := a + 1; b < tenants; b++ {
				shared := 0
				for j := range shards[a] {
					if shards[b][j] {
						shared++
					}
				}
				pairs++
				if shared == c.k {
					full++
				}
				if shared == 0 {
					none++
				}
			}
		}
		gotFull, gotNone := float64(full)/float64(pairs), float64(none)/float64(pairs)
		t.Logf("N=%d S=%d: full overlap %.3f%% (want %.3f%%), no overlap %.1f%% (want %.1f%%)", c.n, c.k, 100*gotFull, 100*c.full, 100*gotNone, 100*c.none)
		require.InDelta(t, c.full, gotFull, c.full*0.2, "full overlap, N=%d S=%d", c.n, c.k)
		require.InDelta(t, c.none, gotNone, 0.01, "no overlap, N=%d S=%d", c.n, c.k)
	}
}
