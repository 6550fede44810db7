package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

func TestReadyQueuesCountAndAge(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	b.mu.Lock()
	start := b.now
	b.mu.Unlock()
	a := b.ready(t, "a", "resize", 5, 3) // ready at start+1..3 ms
	b.advance(time.Second)
	b.ready(t, "a", "resize", 9, 2) // high band, later
	b.ready(t, "b", "resize", 0, 1) // low band
	b.advance(time.Minute)

	qs, err := b.l.ReadyQueues(ctx, []string{"resize", "echo"}, []string{"a", "b", "c"})
	require.NoError(t, err)
	require.Len(t, qs, 2)
	require.Equal(t, "resize", qs[0].Function)
	require.Equal(t, map[string]int64{"a": 5, "b": 1, "c": 0}, qs[0].Tenants)
	require.WithinDuration(t, start.Add(time.Millisecond), qs[0].Oldest, 0, "the oldest is the first ready, whatever its priority")
	require.Equal(t, ledger.FunctionBacklog{Function: "echo", Tenants: map[string]int64{"a": 0, "b": 0, "c": 0}}, qs[1])

	// A cancelled entry first in line does not count as the oldest; the
	// next one does.
	_, err = b.l.Cancel(ctx, "a", a[0])
	require.NoError(t, err)
	qs, err = b.l.ReadyQueues(ctx, []string{"resize"}, []string{"a", "b"})
	require.NoError(t, err)
	require.WithinDuration(t, start.Add(2*time.Millisecond), qs[0].Oldest, 0)

	// Take reports each started task's wait since it was due.
	b.advance(time.Second)
	b.mu.Lock()
	now := b.now
	b.mu.Unlock()
	tk := b.take(t, "resize", 10, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 5)
	for _, s := range tk.Tasks {
		if s.ID == a[1] {
			require.Equal(t, now.Sub(start.Add(2*time.Millisecond)), s.Wait)
		}
		require.Positive(t, s.Wait)
	}

	counts, err := b.l.TaskCounts(ctx, []string{"a", "b"})
	require.NoError(t, err)
	require.Equal(t, int64(4), counts["a"][contracts.StateRunning])
	require.Equal(t, int64(1), counts["b"][contracts.StateRunning])
	require.Zero(t, counts["a"][contracts.StateQueued])
	require.Len(t, counts["a"], len(ledger.CountedStates))
}
