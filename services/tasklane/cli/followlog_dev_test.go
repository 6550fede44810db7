package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
	"github.com/tasklane/tasklane/pkg/config"
)

// FollowLog against a dev app whose function posts lines from two
// goroutines while the follower polls: every entry is given exactly once,
// the seqs given are 1..n without a gap, and every line posted is there.
func TestFollowLogUnderConcurrentAppends(t *testing.T) {
	const chattyType = "com.example.chatty"
	const writers, maxPosts = 2, 600 // at most 1,200 short lines: within the log's 64 KiB
	var cp atomic.Pointer[client.Client]
	var lineBatches atomic.Int64 // batches the follower got with lines in them
	var posted sync.Map          // line -> true
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, tok := r.Header.Get(contracts.HeaderTaskID), r.Header.Get(contracts.HeaderTaskToken)
		c := cp.Load()
		var wg sync.WaitGroup
		for g := range writers {
			wg.Go(func() {
				// Post until the follower has read lines twice while
				// posts go on (or the bound is reached).
				for i := 0; i < maxPosts && (i < 10 || lineBatches.Load() < 2); i++ {
					line := fmt.Sprintf("w%d-%d", g, i)
					if err := c.WriteTaskLog(r.Context(), id, tok, []string{line}); err != nil {
						t.Error(err)
						return
					}
					posted.Store(line, true)
				}
			})
		}
		wg.Wait()
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(fn.Close)
	c := startDevWith(t, config.Function{Name: "chatty", Events: []string{chattyType}, Endpoint: fn.URL})
	cp.Store(c)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	sr, err := c.Submit(ctx, client.Event{ID: "chatty-1", Source: "/test", Type: chattyType})
	require.NoError(t, err)
	seqs := map[int64]bool{}
	lines := map[string]int{}
	var maxSeq int64
	task, err := c.FollowLog(ctx, sr.Tasks[0].ID, client.FollowIntervalMin, func(es []contracts.LogEntry) error {
		withLines := false
		for _, e := range es {
			require.False(t, seqs[e.Seq], "seq %d given twice", e.Seq)
			seqs[e.Seq] = true
			maxSeq = max(maxSeq, e.Seq)
			if e.Kind == contracts.LogLine {
				lines[e.Message]++
				withLines = true
			}
		}
		if withLines {
			lineBatches.Add(1)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, task.State)
	require.GreaterOrEqual(t, lineBatches.Load(), int64(2), "the follower read lines while they were posted")
	for seq := int64(1); seq <= maxSeq; seq++ {
		require.True(t, seqs[seq], "seq %d missing", seq)
	}
	n := 0
	posted.Range(func(k, _ any) bool {
		n++
		require.Equal(t, 1, lines[k.(string)], "line %s given once", k)
		return true
	})
	require.Len(t, lines, n, "no line given that was not posted")
	require.Positive(t, n)
}
