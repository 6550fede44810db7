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

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

const acmeKey = "acme-integration-key"

// flakyFunction answers by event number n (event id "ev-<n>"):
//
//	n%20 == 0: always 400 (non-retryable: 1 call, dead)
//	n%20 == 1: always 500 (retryable: max_attempts=3 calls, dead)
//	n%10 == 2: 500 on the first attempt, then 200 (2 calls, succeeded)
//	n%10 == 3: 429 Retry-After 1 on the first attempt, then 200 (2 calls; the
//	           throttled answer does not use up an attempt, so both are attempt 1)
//	otherwise: 200 with {"n": n} (1 call)
type flakyFunction struct {
	srv      *httptest.Server
	mu       sync.Mutex
	calls    map[int]int // by event number
	problems []string
}

func expectedCalls(n int) (calls int, state contracts.State) {
	switch {
	case n%20 == 0:
		return 1, contracts.StateDead
	case n%20 == 1:
		return 3, contracts.StateDead
	case n%10 == 2, n%10 == 3:
		return 2, contracts.StateSucceeded
	}
	return 1, contracts.StateSucceeded
}

func newFlakyFunction(t *testing.T) *flakyFunction {
	f := &flakyFunction{calls: map[int]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n, err := strconv.Atoi(strings.TrimPrefix(r.Header.Get("Ce-Id"), "ev-"))
		f.mu.Lock()
		f.calls[n]++
		call := f.calls[n]
		if err != nil {
			f.problems = append(f.problems, "bad ce-id "+r.Header.Get("Ce-Id"))
		}
		wantAttempt := call
		if n%10 == 3 {
			wantAttempt = 1
		}
		if got := r.Header.Get(contracts.HeaderAttempt); got != strconv.Itoa(wantAttempt) {
			f.problems = append(f.problems, fmt.Sprintf("ev-%d call %d: Tasklane-Attempt %q", n, call, got))
		}
		if r.Header.Get(contracts.HeaderTaskID) == "" || r.Header.Get(contracts.HeaderDeadline) == "" {
			f.problems = append(f.problems, fmt.Sprintf("ev-%d: missing task headers", n))
		}
		if r.Header.Get("Authorization") != "" {
			f.problems = append(f.problems, "the tenant's key was forwarded")
		}
		if r.Header.Get("Ce-Tenantid") != "acme" {
			f.problems = append(f.problems, fmt.Sprintf("ev-%d: ce-tenantid %q", n, r.Header.Get("Ce-Tenantid")))
		}
		if want := fmt.Sprintf(`{"n":%d}`, n); string(body) != want {
			f.problems = append(f.problems, fmt.Sprintf("ev-%d: data %q, want %q", n, body, want))
		}
		f.mu.Unlock()
		switch {
		case n%20 == 0:
			http.Error(w, "bad request", http.StatusBadRequest)
		case n%20 == 1:
			http.Error(w, "always broken", http.StatusInternalServerError)
		case n%10 == 2 && call == 1:
			http.Error(w, "transient", http.StatusInternalServerError)
		case n%10 == 3 && call == 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"n":%d}`, n)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func skeletonConfig(fnURL, sinkURL string) string {
	return fmt.Sprintf(`
tenants:
  - id: acme
    api_keys: [%q]
functions:
  - name: work
    events: [com.example.work]
    endpoint: %q
    timeout: 5s
    retry: {max_attempts: 3, initial_backoff: 20ms, max_backoff: 200ms}
subscriptions:
  - name: results
    sink: %q
    filter: {types: [io.tasklane.task.succeeded, io.tasklane.task.dead]}
`, acmeKey, fnURL, sinkURL)
}

func workEvent(n int) event.Event {
	e := cloudevents.NewEvent()
	e.SetID(fmt.Sprintf("ev-%d", n))
	e.SetSource("/integration/skeleton")
	e.SetType("com.example.work")
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]int{"n": n})
	return e
}

// TestIntegrationWalkingSkeleton pushes 2,000 events through the official
// CloudEvents SDK client in all three content modes to a function that
// fails some attempts, and counts: every task ends in exactly one terminal
// state, the sink gets exactly one result event per task, and the function
// is called exactly as often as the retry rules say.
func TestIntegrationWalkingSkeleton(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runSkeleton(t, driver) })
	}
}

func runSkeleton(t *testing.T, driver string) {
	const total = 2000
	fn := newFlakyFunction(t)
	sk := newSink(t)
	e := startTasklane(t, driver, skeletonConfig(fn.srv.URL, sk.srv.URL))
	feed := e.watchResults()
	ctx := context.Background()

	client, err := cloudevents.NewClientHTTP(
		cehttp.WithTarget(e.app.URL()+"/v1/events"),
		cehttp.WithHeader("Authorization", "Bearer "+acmeKey),
	)
	require.NoError(t, err)

	var mu sync.Mutex
	accepted := map[string]bool{}
	send := func(n int, structured bool) {
		ev := workEvent(n)
		sctx := ctx
		if structured {
			sctx = cloudevents.WithEncodingStructured(ctx)
		}
		res := client.Send(sctx, ev)
		var hr *cehttp.Result
		if !cloudevents.ResultAs(res, &hr) || hr.StatusCode != http.StatusAccepted {
			t.Errorf("ev-%d: want 202, got %v", n, res)
			return
		}
		mu.Lock()
		accepted[ev.ID()] = true
		mu.Unlock()
	}
	// Binary mode: events 0..999; structured: 1000..1499.
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				send(n, n >= 1000)
			}
		}()
	}
	for n := range 1500 {
		work <- n
	}
	close(work)
	wg.Wait()
	// Batch mode: 1500..1999 in batches of 50.
	for start := 1500; start < total; start += 50 {
		var evs []event.Event
		for n := start; n < start+50; n++ {
			evs = append(evs, workEvent(n))
		}
		req, err := cehttp.NewHTTPRequestFromEvents(ctx, e.app.URL()+"/v1/events", evs)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+acmeKey)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var sr contracts.SubmitResponse
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&sr))
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Len(t, sr.Tasks, 50)
		for _, task := range sr.Tasks {
			require.False(t, task.Duplicate)
			accepted[task.EventID] = true
		}
	}
	require.Len(t, accepted, total, "every event answered 202")

	testkit.Eventually(t, 90*time.Second, func() bool { return sk.count() >= total && e.outboxDrained() && feed.count() >= total },
		"all %d results delivered (sink has %d, results feed %d)", total, sk.count(), feed.count())

	// Counts.
	sk.mu.Lock()
	defer sk.mu.Unlock()
	require.Empty(t, sk.bad, "malformed result events")
	require.Len(t, sk.byTask, total, "one task per event")
	wantStates := map[contracts.State]int{}
	for n := range total {
		_, st := expectedCalls(n)
		wantStates[st]++
	}
	require.Equal(t, wantStates[contracts.StateSucceeded], sk.types[contracts.TypeTaskSucceeded])
	require.Equal(t, wantStates[contracts.StateDead], sk.types[contracts.TypeTaskDead])
	seenEvents := map[string]bool{}
	for id, results := range sk.byTask {
		require.Len(t, results, 1, "task %s: exactly one terminal result event", id)
		r := results[0]
		n, err := strconv.Atoi(strings.TrimPrefix(r.Event.ID, "ev-"))
		require.NoError(t, err)
		calls, state := expectedCalls(n)
		require.Equal(t, state, r.State, "ev-%d", n)
		wantAttempts := calls
		if n%10 == 3 {
			wantAttempts = 1 // the 429 was refunded
		}
		require.Equal(t, wantAttempts, r.Attempts, "ev-%d attempts", n)
		require.False(t, seenEvents[r.Event.ID], "two tasks for %s", r.Event.ID)
		seenEvents[r.Event.ID] = true
		if state == contracts.StateSucceeded {
			require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, n), string(r.Result))
		} else {
			require.NotEmpty(t, r.Error)
			wantReason := contracts.ReasonNonRetryable
			if n%20 == 1 {
				wantReason = contracts.ReasonAttemptsExhausted
			}
			require.Equal(t, wantReason, r.Reason, "ev-%d", n)
		}
		stored, err := e.app.Ledger().Get(ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, state, stored.State)
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	require.Empty(t, fn.problems)
	totalCalls := 0
	for n := range total {
		want, _ := expectedCalls(n)
		require.Equal(t, want, fn.calls[n], "function calls for ev-%d", n)
		totalCalls += fn.calls[n]
	}
	t.Logf("%s: %d tasks, %d function calls, %d succeeded, %d dead", driver, total, totalCalls,
		sk.types[contracts.TypeTaskSucceeded], sk.types[contracts.TypeTaskDead])

	// Every result is on the results exchange too, routed <tenant>.<function>.<outcome>.
	feed.mu.Lock()
	require.Equal(t, map[string]int{
		"acme.work.succeeded": wantStates[contracts.StateSucceeded],
		"acme.work.dead":      wantStates[contracts.StateDead],
	}, feed.byKey)
	require.Len(t, feed.tasks, total)
	feed.mu.Unlock()

	// The ledger lists them too, by state and function.
	list, err := e.app.Ledger().List(ctx, "acme", ledger.ListFilter{State: contracts.StateDead, Function: "work", Limit: 500})
	require.NoError(t, err)
	require.Len(t, list.Tasks, wantStates[contracts.StateDead])
}
