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
)

// controlFn is an HTTP function that counts its calls per task, and
// either answers at once or holds each call for hold, noting the calls
// whose request context ended (the connection closed) before that.
type controlFn struct {
	*httptest.Server
	hold time.Duration

	mu      sync.Mutex
	calls   map[string]int
	aborted map[string]bool
	done    map[string]bool
}

func newControlFn(t *testing.T, hold time.Duration) *controlFn {
	f := &controlFn{hold: hold, calls: map[string]int{}, aborted: map[string]bool{}, done: map[string]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(contracts.HeaderTaskID)
		// A server notices a closed connection once it has read the body.
		_, _ = io.Copy(io.Discard, r.Body)
		f.mu.Lock()
		f.calls[id]++
		f.mu.Unlock()
		if f.hold > 0 {
			select {
			case <-r.Context().Done():
				f.mu.Lock()
				f.aborted[id] = true
				f.mu.Unlock()
				return
			case <-time.After(f.hold):
			}
		}
		f.mu.Lock()
		f.done[id] = true
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(f.Close)
	return f
}

// counts answers the calls made, the tasks called more than once, the
// calls aborted and the calls answered.
func (f *controlFn) counts() (calls, twice, aborted, done int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.calls {
		calls += n
		if n > 1 {
			twice++
		}
	}
	return calls, twice, len(f.aborted), len(f.done)
}

// submitGrouped submits n events of type typ with the batch extension set,
// as one batch-mode request, and returns the task ids.
func (e *env) submitGrouped(key, typ, batch string, n int) []string {
	t := e.t
	t.Helper()
	evs := make([]map[string]any, n)
	for i := range evs {
		evs[i] = map[string]any{"specversion": "1.0", "id": fmt.Sprintf("%s-%d", batch, i), "source": "/control",
			"type": typ, "batch": batch, "data": map[string]int{"i": i}}
	}
	body, err := json.Marshal(evs)
	require.NoError(t, err)
	status, resp := e.post("/v1/events", key, "application/cloudevents-batch+json", nil, body)
	require.Equal(t, http.StatusAccepted, status, "%s", resp)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal(resp, &sr))
	ids := make([]string, len(sr.Tasks))
	for i, s := range sr.Tasks {
		ids[i] = s.ID
	}
	return ids
}

// statesOf reads the tasks' states from the ledger.
func (e *env) statesOf(tenant string, ids []string) map[contracts.State]int {
	e.t.Helper()
	out := map[contracts.State]int{}
	for _, id := range ids {
		task, err := e.ledger().Get(context.Background(), tenant, id)
		require.NoError(e.t, err)
		out[task.State]++
	}
	return out
}

// eventually polls cond every 50ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationPauseResume: a pause holds 100 tasks of a function,
// submitted while it exists, with zero calls; a second, overlapping pause
// holds them after the first is gone; both survive a restart; once both are resumed each task runs
// exactly once. Bad input is refused: empty selector (400), unknown field
// (400), another tenant's pause id (404), an unknown function (422).
func TestIntegrationPauseResume(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runPauseResume(t, driver) })
	}
}

func runPauseResume(t *testing.T, driver string) {
	fn := newControlFn(t, 0)
	e := startTasklane(t, driver, fmt.Sprintf(`
tenants:
  - {id: acme, api_keys: ["key-acme-control"]}
  - {id: other, api_keys: ["key-other-control"]}
functions:
  - {name: work, events: [com.example.work], endpoint: %q, concurrency: 10}
`, fn.URL))
	const key, otherKey = "key-acme-control", "key-other-control"
	pause := func(key, body string) (int, contracts.Pause) {
		status, resp := e.post("/v1/pauses", key, "application/json", nil, []byte(body))
		var p contracts.Pause
		if status == http.StatusCreated {
			require.NoError(t, json.Unmarshal(resp, &p))
		}
		return status, p
	}
	resume := func(key, id string) (int, contracts.ResumeResponse) {
		status, resp := e.do(http.MethodDelete, "/v1/pauses/"+id, key, nil, nil)
		var r contracts.ResumeResponse
		if status == http.StatusOK {
			require.NoError(t, json.Unmarshal(resp, &r))
		}
		return status, r
	}

	// Bad input.
	for body, want := range map[string]int{
		`{}`:                                    http.StatusBadRequest,
		`{"state": "queued"}`:                   http.StatusBadRequest,
		`{"function": "work", "colour": "red"}`: http.StatusBadRequest,
		`{"function": "nope"}`:                  http.StatusUnprocessableEntity,
		`{"function": "work", "state": "dead"}`: http.StatusBadRequest,
	} {
		status, _ := pause(key, body)
		require.Equal(t, want, status, body)
	}
	for body, want := range map[string]int{
		`{}`:                                   http.StatusBadRequest,
		`{"function": "work", "dryrun": true}`: http.StatusBadRequest,
		`{"function": "nope"}`:                 http.StatusUnprocessableEntity,
	} {
		status, _ := e.post("/v1/tasks/cancel", key, "application/json", nil, []byte(body))
		require.Equal(t, want, status, body)
	}

	status, p1 := pause(key, `{"function": "work"}`)
	require.Equal(t, http.StatusCreated, status)
	require.Zero(t, p1.Paused)
	status, _ = resume(otherKey, p1.ID)
	require.Equal(t, http.StatusNotFound, status, "another tenant's pause")

	ids := e.submitGrouped(key, "com.example.work", "b1", 100)
	eventually(t, 10*time.Second, "100 tasks paused", func() bool {
		return e.statesOf("acme", ids)[contracts.StatePaused] == 100
	})
	status, p2 := pause(key, `{"batch": "b1"}`)
	require.Equal(t, http.StatusCreated, status)
	require.Equal(t, 100, p2.Paused, "the second pause holds the paused tasks too")

	status, resp := e.get("/v1/pauses", key)
	require.Equal(t, http.StatusOK, status)
	var list contracts.PauseList
	require.NoError(t, json.Unmarshal(resp, &list))
	require.Len(t, list.Pauses, 2)
	require.Equal(t, p1.ID, list.Pauses[0].ID)
	require.Equal(t, 100, list.Pauses[0].Paused)
	status, resp = e.get("/v1/pauses", otherKey)
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"pauses": []}`, string(resp))

	// Pauses survive a restart of every role.
	require.NoError(t, e.app.Shutdown(context.Background()))
	e.start()
	status, resp = e.get("/v1/pauses", key)
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, json.Unmarshal(resp, &list))
	require.Len(t, list.Pauses, 2)

	status, r := resume(key, p1.ID)
	require.Equal(t, http.StatusOK, status)
	require.Zero(t, r.Resumed, "the other pause still holds them")
	// The tasks stay held for a few seconds: no call at all.
	time.Sleep(3 * time.Second)
	calls, _, _, _ := fn.counts()
	require.Zero(t, calls)
	require.Equal(t, map[contracts.State]int{contracts.StatePaused: 100}, e.statesOf("acme", ids))

	status, r = resume(key, p2.ID)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 100, r.Resumed)
	eventually(t, 30*time.Second, "100 tasks succeeded", func() bool {
		return e.statesOf("acme", ids)[contracts.StateSucceeded] == 100
	})
	calls, twice, _, _ := fn.counts()
	require.Equal(t, 100, calls, "each task ran exactly once")
	require.Zero(t, twice)
	status, _ = resume(key, p2.ID)
	require.Equal(t, http.StatusNotFound, status)

	// GET /v1/tasks?batch= lists them.
	status, resp = e.get("/v1/tasks?batch=b1&limit=500", key)
	require.Equal(t, http.StatusOK, status)
	var tl contracts.TaskList
	require.NoError(t, json.Unmarshal(resp, &tl))
	require.Len(t, tl.Tasks, 100)
	require.Equal(t, "b1", tl.Tasks[0].Batch)
}

// TestIntegrationCancelBySelector: 40 tasks of a 40-second function, 10
// of them running, are cancelled by one request within seconds: every
// running call is aborted (the function sees its request context end),
// none succeeds, each ends cancelled with one result event.
func TestIntegrationCancelBySelector(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runCancelBySelector(t, driver) })
	}
}

func runCancelBySelector(t *testing.T, driver string) {
	fn := newControlFn(t, 40*time.Second)
	e := startTasklane(t, driver, fmt.Sprintf(`
functions:
  - {name: slow, events: [com.example.slow], endpoint: %q, concurrency: 10, timeout: 60s}
  - {name: other, events: [com.example.other], endpoint: %q, concurrency: 2, timeout: 60s}
`, fn.URL, fn.URL))
	results := e.watchResults()
	ids := e.submitGrouped("", "com.example.slow", "c1", 40)
	keep := e.submitGrouped("", "com.example.other", "c2", 2)
	eventually(t, 15*time.Second, "12 calls running", func() bool {
		calls, _, _, _ := fn.counts()
		return calls == 12
	})

	status, resp := e.post("/v1/tasks/cancel", "", "application/json", nil, []byte(`{"batch": "c1", "dry_run": true}`))
	require.Equal(t, http.StatusOK, status, "%s", resp)
	require.JSONEq(t, `{"matched": 40, "cancelled": 0}`, string(resp))

	start := time.Now()
	status, resp = e.post("/v1/tasks/cancel", "", "application/json", nil, []byte(`{"function": "slow"}`))
	require.Equal(t, http.StatusOK, status, "%s", resp)
	require.JSONEq(t, `{"matched": 40, "cancelled": 40}`, string(resp))
	eventually(t, 5*time.Second, "the 10 running calls aborted", func() bool {
		_, _, aborted, _ := fn.counts()
		return aborted == 10
	})
	t.Logf("running calls aborted %s after the cancel", time.Since(start).Round(time.Millisecond))
	require.Equal(t, map[contracts.State]int{contracts.StateCancelled: 40}, e.statesOf("default", ids))
	eventually(t, 30*time.Second, "40 cancelled result events", func() bool {
		results.mu.Lock()
		defer results.mu.Unlock()
		n := 0
		for _, id := range ids {
			n += results.tasks[id]
		}
		return n >= 40
	})
	// Nothing else starts or ends for the cancelled tasks.
	time.Sleep(time.Second)
	calls, twice, aborted, done := fn.counts()
	require.Equal(t, 12, calls, "no cancelled task started")
	require.Zero(t, twice)
	require.Equal(t, 10, aborted)
	require.Zero(t, done, "no call ran to its answer")
	results.mu.Lock()
	for _, id := range ids {
		require.Equal(t, 1, results.tasks[id], "one result event for %s", id)
	}
	for k, n := range results.byKey {
		require.Contains(t, []string{"default.slow.cancelled"}, k, "%d results", n)
	}
	results.mu.Unlock()
	require.Equal(t, map[contracts.State]int{contracts.StateRunning: 2}, e.statesOf("default", keep), "other functions run on")

	// DELETE of a running task cancels it the same way.
	status, resp = e.deleteTask(keep[0])
	require.Equal(t, http.StatusOK, status, "%s", resp)
	eventually(t, 5*time.Second, "the deleted task's call aborted", func() bool {
		_, _, aborted, _ := fn.counts()
		return aborted == 11
	})
	status, _ = e.deleteTask(keep[0])
	require.Equal(t, http.StatusConflict, status)
	status, _ = e.post("/v1/tasks/cancel", "", "application/json", nil, []byte(`{"batch": "c2"}`))
	require.Equal(t, http.StatusOK, status)
}
