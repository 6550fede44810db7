//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/keyslot"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationPartitionedLedger runs a small end-to-end flow on the
// partitioned key layout (ledger.partitions: 4) on the machine's one Redis,
// with tenants of several partitions: a duplicate submission finds the
// first task, a delayed task waits for its time, every first attempt fails
// and its retry succeeds, and every result event reaches the sink; the
// records live under their partition's hash tag, not the legacy names.
func TestIntegrationPartitionedLedger(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runPartitionedLedger(t, driver) })
	}
}

func runPartitionedLedger(t *testing.T, driver string) {
	const partitions = 4
	tenants := []string{"a", "b", "c"}
	parts := map[int]bool{}
	for _, tenant := range tenants {
		parts[keyslot.Partition(tenant, partitions)] = true
	}
	require.Greater(t, len(parts), 1, "the tenants span partitions")

	var mu sync.Mutex
	calls := map[string]int{}
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Tasklane-Task-Id")
		mu.Lock()
		calls[id]++
		n := calls[id]
		mu.Unlock()
		if n == 1 {
			http.Error(w, "first attempt fails", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(fn.Close)
	sink := newSink(t)
	e := startTasklane(t, driver, fmt.Sprintf(`
ledger: {partitions: %d}
tenants:
  - {id: a, api_keys: ["key-a-partitioned"]}
  - {id: b, api_keys: ["key-b-partitioned"]}
  - {id: c, api_keys: ["key-c-partitioned"]}
functions:
  - {name: work, events: [com.example.work], endpoint: %q, retry: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 100ms}}
subscriptions:
  - {name: all, sink: %q}
`, partitions, fn.URL, sink.srv.URL))
	require.Equal(t, partitions, e.ledger().Partitions())

	submit := func(tenant, id string, ext map[string]string) contracts.SubmittedTask {
		h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/partitions", "Ce-Type": "com.example.work"}
		for k, v := range ext {
			h["Ce-"+k] = v
		}
		status, body := e.post("/v1/events", "key-"+tenant+"-partitioned", "", h, nil)
		require.Equal(t, http.StatusAccepted, status, "%s", body)
		var sr contracts.SubmitResponse
		require.NoError(t, json.Unmarshal(body, &sr))
		require.Len(t, sr.Tasks, 1)
		return sr.Tasks[0]
	}
	ctx := context.Background()
	ids := map[string][]string{}
	for _, tenant := range tenants {
		first := submit(tenant, "now", nil)
		again := submit(tenant, "now", nil)
		require.True(t, again.Duplicate, "the same event again is a duplicate")
		require.Equal(t, first.ID, again.ID)
		delayed := submit(tenant, "later", map[string]string{"Delay": "2"})
		require.Equal(t, contracts.StateScheduled, delayed.State)
		ids[tenant] = []string{first.ID, delayed.ID}

		// The record is under the tenant's partition, not the legacy name.
		tp := e.ledger().TenantKeyPrefix(tenant)
		require.Equal(t, fmt.Sprintf("%s:{p%d}:%s:", e.prefix, keyslot.Partition(tenant, partitions), tenant), tp)
		n, err := e.rdb.Exists(ctx, tp+"task:"+first.ID).Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		n, err = e.rdb.Exists(ctx, e.prefix+":{"+tenant+"}:task:"+first.ID).Result()
		require.NoError(t, err)
		require.Zero(t, n, "no legacy key")
	}
	submitted := time.Now()

	for tenant, list := range ids {
		for _, id := range list {
			var task *contracts.Task
			testkit.Eventually(t, 30*time.Second, func() bool {
				var err error
				task, err = e.ledger().Get(ctx, tenant, id)
				return err == nil && task.State == contracts.StateSucceeded
			}, "task %s of %s succeeded", id, tenant)
			require.Equal(t, 2, task.Attempts, "one retry")
		}
		delayed, err := e.ledger().Get(ctx, tenant, list[1])
		require.NoError(t, err)
		require.NotNil(t, delayed.StartedAt)
		require.False(t, delayed.StartedAt.Before(submitted.Add(time.Second)), "the delayed task waited for its time")
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		for _, list := range ids {
			for _, id := range list {
				if sink.results(id) == 0 {
					return false
				}
			}
		}
		return e.outboxDrained()
	}, "every result event delivered and every partition's outbox drained")
	sink.mu.Lock()
	for _, list := range ids {
		for _, id := range list {
			require.Equal(t, contracts.StateSucceeded, sink.byTask[id][0].State)
		}
	}
	require.Empty(t, sink.bad)
	sink.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, calls, 2*len(tenants), "each task ran")
	for id, n := range calls {
		require.Equal(t, 2, n, "attempts of %s", id)
	}
}

// results is how many result events the sink received for task id.
func (s *sink) results(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byTask[id])
}
