//go:build integration

package integration

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// starts records which events a test function saw start, in order.
type starts struct {
	mu  sync.Mutex
	ids []string
	at  map[string]time.Time
}

func (s *starts) record(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]time.Time{}
	}
	if _, ok := s.at[id]; !ok {
		s.at[id] = time.Now()
		s.ids = append(s.ids, id)
	}
}

func (s *starts) snapshot() ([]string, map[string]time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids), maps.Clone(s.at)
}

func (s *starts) count(prefix string) int {
	ids, _ := s.snapshot()
	n := 0
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}

// batchOf is a batch of n events with ids prefix-0.. and the priority.
func priorityBatch(prefix, typ string, from, n, priority int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := from; i < from+n; i++ {
		if i > from {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"specversion":"1.0","id":"%s-%d","source":"/flow","type":%q,"priority":%d}`, prefix, i, typ, priority)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

func (e *env) submitBatch(t *testing.T, body []byte) {
	t.Helper()
	status, resp := e.post("/v1/events", "", "application/cloudevents-batch+json", nil, body)
	require.Equal(t, http.StatusAccepted, status, "%s", resp)
}

// TestIntegrationPriorityUnderLimit: a function limited to 2 running
// attempts has 600 priority-0 tasks waiting; 20 priority-9 tasks submitted
// then start within a second or two (they take the next free slots), not
// after the backlog; and every task still runs.
func TestIntegrationPriorityUnderLimit(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runPriorityUnderLimit(t, driver) })
	}
}

func runPriorityUnderLimit(t *testing.T, driver string) {
	var seen starts
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.record(r.Header.Get("Ce-Id"))
		time.Sleep(40 * time.Millisecond) // the function's work
	}))
	t.Cleanup(fn.Close)
	e := startTasklane(t, driver, fmt.Sprintf(`
functions:
  - {name: limited, events: [com.example.limited], endpoint: %q, concurrency: 2}
`, fn.URL))
	const low, high = 600, 20
	for from := 0; from < low; from += 100 {
		e.submitBatch(t, priorityBatch("low", "com.example.limited", from, 100, 0))
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return seen.count("low-") >= 10 }, "the low-priority backlog is being worked")
	submitted := time.Now()
	e.submitBatch(t, priorityBatch("high", "com.example.limited", 0, high, 9))
	testkit.Eventually(t, 30*time.Second, func() bool { return seen.count("high-") == high }, "every high-priority task started")
	_, at := seen.snapshot()
	var worst time.Duration
	for i := range high {
		worst = max(worst, at[fmt.Sprintf("high-%d", i)].Sub(submitted))
	}
	lowsBefore := seen.count("low-")
	t.Logf("%s: the last of %d priority-9 tasks started %.0fms after submission, with %d of %d priority-0 tasks started",
		driver, high, float64(worst)/1e6, lowsBefore, low)
	require.Less(t, worst, 2*time.Second, "priority-9 tasks start at the next free slots")
	require.Less(t, lowsBefore, low-100, "the high-priority tasks did not wait for the backlog")
	testkit.Eventually(t, 90*time.Second, func() bool { return seen.count("low-") == low }, "every low-priority task ran too")
}

// TestIntegrationPriorityNoStarvation: 400 priority-9 and 40 priority-0
// tasks submitted together to a function limited to 2: high priority goes
// first, but the low band still gets its share of the starts (1 in 7 while
// only these two bands wait), so most low tasks start before the highs are
// done.
func TestIntegrationPriorityNoStarvation(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runNoStarvation(t, driver) })
	}
}

func runNoStarvation(t *testing.T, driver string) {
	var seen starts
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.record(r.Header.Get("Ce-Id"))
		time.Sleep(10 * time.Millisecond)
	}))
	t.Cleanup(fn.Close)
	e := startTasklane(t, driver, fmt.Sprintf(`
functions:
  - {name: limited, events: [com.example.limited], endpoint: %q, concurrency: 2}
`, fn.URL))
	const high, low = 400, 40
	// One batch, the low tasks spread through it.
	var parts []string
	for i := range high {
		parts = append(parts, fmt.Sprintf(`{"specversion":"1.0","id":"high-%d","source":"/flow","type":"com.example.limited","priority":9}`, i))
		if i%10 == 9 {
			parts = append(parts, fmt.Sprintf(`{"specversion":"1.0","id":"low-%d","source":"/flow","type":"com.example.limited","priority":0}`, i/10))
		}
	}
	e.submitBatch(t, []byte("["+strings.Join(parts, ",")+"]"))
	testkit.Eventually(t, 90*time.Second, func() bool { return len(func() []string { ids, _ := seen.snapshot(); return ids }()) == high+low }, "every task started")
	ids, _ := seen.snapshot()
	lastHigh := 0
	for i, id := range ids {
		if strings.HasPrefix(id, "high-") {
			lastHigh = i
		}
	}
	lowsBeforeLastHigh := 0
	for _, id := range ids[:lastHigh] {
		if strings.HasPrefix(id, "low-") {
			lowsBeforeLastHigh++
		}
	}
	firstHigh := slices.IndexFunc(ids, func(id string) bool { return strings.HasPrefix(id, "high-") })
	lowsEarly := 0
	for _, id := range ids[:min(len(ids), 140)] {
		if strings.HasPrefix(id, "low-") {
			lowsEarly++
		}
	}
	t.Logf("%s: %d of %d low tasks started before the last high one; %d low tasks among the first 140 starts; the first high task was start #%d",
		driver, lowsBeforeLastHigh, low, lowsEarly, firstHigh+1)
	require.GreaterOrEqual(t, lowsBeforeLastHigh, 30, "most low tasks start before the highs are done")
	require.GreaterOrEqual(t, lowsEarly, 10, "the low band gets at least 1 in 14 of the starts while both wait")
	require.Less(t, firstHigh, 10, "high priority goes first")
}

// TestIntegrationAIMD: a function with a hidden capacity answers 429 above
// it. With an adaptive limit every task succeeds, throttled answers stay a
// small share of the calls, and the limit settles near the capacity and
// follows it when the capacity halves and doubles.
func TestIntegrationAIMD(t *testing.T) {
	var capacity, inflight, calls, throttled atomic.Int64
	capacity.Store(8)
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if inflight.Add(1) > capacity.Load() {
			inflight.Add(-1)
			throttled.Add(1)
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		time.Sleep(20 * time.Millisecond)
		inflight.Add(-1)
	}))
	t.Cleanup(fn.Close)
	e := startTasklane(t, "redisstream", fmt.Sprintf(`
functions:
  - name: shaped
    events: [com.example.shaped]
    endpoint: %q
    adaptive: {min: 1, max: 64, interval: 200ms}
    retry: {initial_backoff: 100ms, max_backoff: 1s, max_throttled: 1000}
`, fn.URL))
	spec := []ledger.FunctionSpec{{Name: "shaped", Adaptive: &ledger.Adaptive{Min: 1, Max: 64}}}
	ctx := context.Background()
	limit := func() int {
		st, err := e.app.Ledger().FunctionStats(ctx, spec)
		require.NoError(t, err)
		return st[0].Limit
	}
	// A producer keeps a backlog: the limit only grows while tasks wait.
	stop := make(chan struct{})
	var produced atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n += 100 {
			select {
			case <-stop:
				return
			default:
			}
			st, err := e.app.Ledger().FunctionStats(ctx, spec)
			if err == nil && st[0].Waiting > 300 {
				time.Sleep(20 * time.Millisecond) // pacing the producer, not synchronising
				continue
			}
			status, body := e.post("/v1/events", "", "application/cloudevents-batch+json", nil, priorityBatch("aimd", "com.example.shaped", n, 100, 0))
			if status != http.StatusAccepted {
				t.Errorf("submit answered %d: %s", status, body)
				return
			}
			produced.Add(100)
		}
	}()
	type phase struct {
		capacity int64
		length   time.Duration
	}
	var trace []string
	median := func(xs []int) int { slices.Sort(xs); return xs[len(xs)/2] }
	for _, p := range []phase{{8, 10 * time.Second}, {4, 8 * time.Second}, {16, 10 * time.Second}} {
		capacity.Store(p.capacity)
		var tail []int
		start := time.Now()
		for tick := time.NewTicker(250 * time.Millisecond); time.Since(start) < p.length; <-tick.C {
			l := limit()
			trace = append(trace, fmt.Sprintf("%.1fs C=%d limit=%d", time.Since(start).Seconds(), p.capacity, l))
			if time.Since(start) > p.length-3*time.Second {
				tail = append(tail, l)
			}
		}
		m := median(tail)
		t.Logf("capacity %d: limit over the last 3s of the phase %v (median %d)", p.capacity, tail, m)
		// "Near the capacity": within [0.8, 1.5] x C.
		require.GreaterOrEqual(t, float64(m), 0.8*float64(p.capacity), "the limit settles near the capacity %d", p.capacity)
		require.LessOrEqual(t, float64(m), 1.5*float64(p.capacity), "the limit settles near the capacity %d", p.capacity)
	}
	close(stop)
	wg.Wait()
	t.Logf("trace: %s", strings.Join(trace, "; "))
	testkit.Eventually(t, 120*time.Second, func() bool {
		n, err := e.rdb.ZCard(ctx, e.ledger().TenantKeyPrefix("default")+"st:succeeded").Result()
		return err == nil && n == produced.Load()
	}, "every task succeeded")
	share := float64(throttled.Load()) / float64(calls.Load())
	t.Logf("%d tasks, %d calls, %d throttled (%.1f%%)", produced.Load(), calls.Load(), throttled.Load(), 100*share)
	require.Less(t, share, 0.15, "throttled answers are a small share of the calls")
}

// TestIntegrationTenantQuota: tenant a's `concurrency: 2` caps its running
// attempts across all its functions, while tenant b, on the same
// functions, runs as wide as the functions allow; every task runs.
func TestIntegrationTenantQuota(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runTenantQuota(t, driver) })
	}
}

func runTenantQuota(t *testing.T, driver string) {
	var mu sync.Mutex
	inflight, peak := map[string]int{}, map[string]int{}
	var done atomic.Int64
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := r.Header.Get("Ce-Tenantid")
		mu.Lock()
		inflight[tenant]++
		peak[tenant] = max(peak[tenant], inflight[tenant])
		mu.Unlock()
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		inflight[tenant]--
		mu.Unlock()
		done.Add(1)
	}))
	t.Cleanup(fn.Close)
	e := startTasklane(t, driver, fmt.Sprintf(`
tenants:
  - {id: a, api_keys: ["key-a-integration"], concurrency: 2}
  - {id: b, api_keys: ["key-b-integration"]}
functions:
  - {name: one, events: [com.example.one], endpoint: %q}
  - {name: two, events: [com.example.two], endpoint: %q}
`, fn.URL, fn.URL))
	const each = 60
	for _, tenant := range []string{"a", "b"} {
		for _, typ := range []string{"one", "two"} {
			status, body := e.post("/v1/events", "key-"+tenant+"-integration", "application/cloudevents-batch+json", nil,
				priorityBatch(tenant+typ, "com.example."+typ, 0, each, 0))
			require.Equal(t, http.StatusAccepted, status, "%s", body)
		}
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return done.Load() == 4*each }, "every task ran")
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%s: peak running attempts: tenant a %d (quota 2), tenant b %d", driver, peak["a"], peak["b"])
	require.LessOrEqual(t, peak["a"], 2, "a's quota holds across its functions")
	require.Greater(t, peak["b"], 2, "b is not held by a's quota")
}
