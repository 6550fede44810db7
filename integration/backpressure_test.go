//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/cron"
)

// TestIntegrationBackpressure: tenant burst, whose function runs one task
// at a time, bursts far past its max_backlog and is answered 429 with
// Retry-After and a JSON error naming the backlog; a refused batch is
// refused whole (none of its events is recorded); its steady neighbour,
// with a limit of its own and its own function, is never refused and its
// tasks complete.
func TestIntegrationBackpressure(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runBackpressure(t, driver) })
	}
}

func runBackpressure(t *testing.T, driver string) {
	var mu sync.Mutex
	done := map[string]int{}
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(200 * time.Millisecond) // the function's work: 5 tasks a second
		}
		mu.Lock()
		done[r.URL.Path]++
		mu.Unlock()
	}))
	t.Cleanup(fn.Close)
	const limit = 20
	e := startTasklane(t, driver, fmt.Sprintf(`
server: {admin_keys: ["admin-integration-key"], max_batch_events: 100}
tenants:
  - {id: burst, api_keys: ["key-burst-integration"], max_backlog: %d}
  - {id: steady, api_keys: ["key-steady-integration"], max_backlog: %d}
functions:
  - {name: slow, events: [com.example.slow], endpoint: %q, concurrency: 1, tenants: [burst]}
  - {name: quick, events: [com.example.quick], endpoint: %q, tenants: [steady]}
`, limit, limit, fn.URL+"/slow", fn.URL+"/quick"))

	batch := func(round int) []byte {
		var evs []string
		for i := range 50 {
			evs = append(evs, fmt.Sprintf(`{"specversion":"1.0","id":"b-%d-%d","source":"/burst","type":"com.example.slow"}`, round, i))
		}
		return []byte("[" + strings.Join(evs, ",") + "]")
	}
	post := func(key, ct string, body []byte) (int, http.Header, []byte) {
		req, err := http.NewRequest(http.MethodPost, e.app.URL()+"/v1/events", strings.NewReader(string(body)))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, b
	}

	const rounds = 30
	acceptedBatches, refused := 0, 0
	var refusedRounds []int
	steadyAccepted := 0
	for round := range rounds {
		status, h, body := post("key-burst-integration", "application/cloudevents-batch+json", batch(round))
		switch status {
		case http.StatusAccepted:
			acceptedBatches++
		case http.StatusTooManyRequests:
			refused++
			refusedRounds = append(refusedRounds, round)
			ra, err := strconv.Atoi(h.Get("Retry-After"))
			require.NoError(t, err, "Retry-After %q is whole seconds", h.Get("Retry-After"))
			require.GreaterOrEqual(t, ra, 1)
			require.LessOrEqual(t, ra, 60)
			var er contracts.ErrorResponse
			require.NoError(t, json.Unmarshal(body, &er), "%s", body)
			require.Contains(t, er.Error, "backlog")
			require.Equal(t, "burst", er.Tenant)
			require.EqualValues(t, limit, er.Limit)
			require.GreaterOrEqual(t, er.Backlog, int64(limit))
			require.Equal(t, contracts.RefusedTenantBacklog, er.Reason)
		default:
			t.Fatalf("burst round %d: status %d: %s", round, status, body)
		}
		// The neighbour keeps submitting, one event at a time.
		status, _, body = post("key-steady-integration", "application/cloudevents+json",
			fmt.Appendf(nil, `{"specversion":"1.0","id":"s-%d","source":"/steady","type":"com.example.quick"}`, round))
		require.Equal(t, http.StatusAccepted, status, "steady is never refused (round %d): %s", round, body)
		steadyAccepted++
		time.Sleep(20 * time.Millisecond) // pacing the load, not synchronisation
	}
	require.Positive(t, acceptedBatches, "the first burst is accepted")
	require.GreaterOrEqual(t, refused, rounds/2, "burst, 50 tasks a batch against a backlog limit of %d draining 5 a second, is mostly refused", limit)

	// A refused batch is refused whole: burst has exactly the tasks of
	// its accepted batches, and none of a refused batch's events.
	require.Len(t, allTasks(t, e.ledger(), "burst"), 50*acceptedBatches)
	status, body := e.get(fmt.Sprintf("/v1/tasks?event_id=b-%d-0&source=/burst", refusedRounds[0]), "key-burst-integration")
	require.Equal(t, http.StatusOK, status, "%s", body)
	var list contracts.TaskList
	require.NoError(t, json.Unmarshal(body, &list))
	require.Empty(t, list.Tasks, "nothing of a refused batch is recorded")

	testkit.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done["/quick"] == steadyAccepted
	}, "the neighbour's tasks complete")

	// The refusals are counted by tenant and reason.
	status, body = e.get("/metrics", "admin-integration-key")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(body), fmt.Sprintf(`tasklane_admission_refusals_total{reason="tenant_backlog",tenant="burst"} %d`, refused))
	require.NotContains(t, string(body), `tenant="steady"} `+"\n")
	require.NotContains(t, string(body), `tasklane_admission_refusals_total{reason="tenant_backlog",tenant="steady"}`)
}

// gatedFunction answers once the gate opens, recording event ids.
type gatedFunction struct {
	srv  *httptest.Server
	gate chan struct{}
	once sync.Once
	mu   sync.Mutex
	ids  map[string]int
}

func newGatedFunction(t *testing.T) *gatedFunction {
	g := &gatedFunction{gate: make(chan struct{}), ids: map[string]int{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-g.gate:
		case <-r.Context().Done():
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		g.mu.Lock()
		g.ids[r.Header.Get("Ce-Id")]++
		g.mu.Unlock()
	}))
	t.Cleanup(func() {
		g.open()
		g.srv.Close()
	})
	return g
}

// open opens the gate (once).
func (g *gatedFunction) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gatedFunction) calls() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.ids))
	for k, v := range g.ids {
		out[k] = v
	}
	return out
}

// TestIntegrationBackpressureCron: a cron trigger whose tenant is at its
// max_backlog is refused in process; its fires are held, not lost, and are
// submitted once the backlog drains: every scheduled second from the first
// fire on runs exactly once.
func TestIntegrationBackpressureCron(t *testing.T) {
	fn := newGatedFunction(t)
	// One driver: the behaviour is the trigger's and the admission's. The
	// redisstream driver's lanes are read by a consumer group per key
	// prefix, so other stacks on the same machine do not take its tasks.
	e := startTasklane(t, config.BrokerDriverRedisStream, fmt.Sprintf(`
tenants:
  - {id: ticker, api_keys: ["key-ticker-integration"], max_backlog: 1}
functions:
  - {name: tick, events: [com.example.tick], endpoint: %q, concurrency: 1, timeout: 120s}
triggers:
  - name: every-second
    tenant: ticker
    cron: {schedule: "@every 1s"}
    event: {type: com.example.tick, source: /triggers/every-second}
`, fn.srv.URL))
	t.Cleanup(fn.open) // before the app's shutdown, which waits for the held attempt
	store := triggers.NewStore(e.rdb, e.prefix)

	// The function holds its first task; the second waits (backlog 1, at
	// the limit), and the fires after it are refused.
	testkit.Eventually(t, 30*time.Second, func() bool {
		recs, err := store.Read(context.Background(), "every-second")
		require.NoError(t, err)
		return strings.Contains(recs["every-second"].LastError, "backpressure")
	}, "a fire is refused by backpressure")
	refusedAt := time.Now()
	// Let it stay refused a few seconds, then open the gate.
	testkit.Eventually(t, 10*time.Second, func() bool { return time.Since(refusedAt) > 3*time.Second }, "refused for a while")
	fn.open()

	tasks := allTasks(t, e.ledger(), "ticker")
	require.NotEmpty(t, tasks)
	first := tasks[0].Event.ID
	for _, tk := range tasks {
		first = min(first, tk.Event.ID)
	}
	firstAt, err := time.Parse(time.RFC3339, strings.TrimPrefix(first, "every-second/"))
	require.NoError(t, err)
	until := refusedAt.Add(3 * time.Second).Truncate(time.Second)
	testkit.Eventually(t, 60*time.Second, func() bool {
		calls := fn.calls()
		for ts := firstAt; !ts.After(until); ts = ts.Add(time.Second) {
			if calls[cron.EventID("every-second", ts)] == 0 {
				return false
			}
		}
		return true
	}, "every fire from %s to %s ran, those refused included", firstAt, until)
	for id, n := range fn.calls() {
		require.Equal(t, 1, n, "fire %s ran once", id)
	}
}
