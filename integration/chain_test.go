//go:build integration

package integration

import (
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

// TestIntegrationChain: a function whose 2xx answer is a CloudEvent chains
// a task of the function that takes the reply's type (binary and
// structured replies); each child runs once and names its parent; a reply
// that is not a valid CloudEvent, or that ingest refuses, fails its parent
// non-retryable with the reason.
func TestIntegrationChain(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runChain(t, driver) })
	}
}

func runChain(t *testing.T, driver string) {
	const n = 20
	// first replies with the next event: binary mode for even ids,
	// structured for odd; the reply's id derives from the task's event, so a
	// re-run would reply with the same event.
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Ce-Id")
		var i int
		_, _ = fmt.Sscanf(id, "job-%d", &i)
		if i%2 == 0 {
			w.Header().Set("Ce-Specversion", "1.0")
			w.Header().Set("Ce-Id", id+".next")
			w.Header().Set("Ce-Source", "/fn/first")
			w.Header().Set("Ce-Type", "com.example.second")
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprintf(w, `{"job":%d}`, i)
			return
		}
		w.Header().Set("Content-Type", "application/cloudevents+json")
		_, _ = fmt.Fprintf(w, `{"specversion":"1.0","id":%q,"source":"/fn/first","type":"com.example.second","datacontenttype":"application/json","data":{"job":%d}}`, id+".next", i)
	}))
	t.Cleanup(first.Close)
	// bad answers 200 with a CloudEvent without a source; badprio with one
	// whose priority ingest refuses.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "x")
		w.Header().Set("Ce-Type", "com.example.second")
	}))
	t.Cleanup(bad.Close)
	badPrio := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "y")
		w.Header().Set("Ce-Source", "/fn/badprio")
		w.Header().Set("Ce-Type", "com.example.second")
		w.Header().Set("Ce-Priority", "42")
	}))
	t.Cleanup(badPrio.Close)
	type call struct{ id, parent, depth, data string }
	var mu sync.Mutex
	var calls []call
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, call{r.Header.Get("Ce-Id"), r.Header.Get("Ce-Parenttask"), r.Header.Get("Ce-Chaindepth"), string(body)})
		mu.Unlock()
	}))
	t.Cleanup(second.Close)
	e := newStack(t, driver, fmt.Sprintf(`
functions:
  - {name: first, events: [com.example.first], endpoint: %q}
  - {name: bad, events: [com.example.bad], endpoint: %q}
  - {name: badprio, events: [com.example.badprio], endpoint: %q}
  - {name: second, events: [com.example.second], endpoint: %q}
`, first.URL, bad.URL, badPrio.URL, second.URL))
	// The dispatcher runs alone, as in production: its in-process ingest
	// path needs nothing of the gateway's.
	e.spawn("dispatcher")
	e.start("gateway", "scheduler", "notifier")

	submit := func(id, typ string) string {
		h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/chain", "Ce-Type": typ}
		status, body := e.post("/v1/events", "", "", h, nil)
		require.Equal(t, http.StatusAccepted, status, "%s", body)
		var sr contracts.SubmitResponse
		require.NoError(t, json.Unmarshal(body, &sr))
		return sr.Tasks[0].ID
	}
	parents := map[string]int{}
	for i := range n {
		parents[submit(fmt.Sprintf("job-%d", i), "com.example.first")] = i
	}
	badID := submit("bad-1", "com.example.bad")
	badPrioID := submit("badprio-1", "com.example.badprio")

	var tasks []contracts.Task
	deadline := time.Now().Add(60 * time.Second)
	for {
		tasks = allTasks(t, e.ledger(), "default")
		ended := 0
		for _, task := range tasks {
			if task.State.Terminal() {
				ended++
			}
		}
		if len(tasks) == 2*n+2 && ended == len(tasks) {
			break
		}
		require.True(t, time.Now().Before(deadline), "chain did not end: %d tasks, %d ended", len(tasks), ended)
		time.Sleep(100 * time.Millisecond)
	}
	byID := map[string]contracts.Task{}
	for _, task := range tasks {
		byID[task.ID] = task
	}
	children := 0
	for _, task := range tasks {
		switch task.Function {
		case "first":
			require.Equal(t, contracts.StateSucceeded, task.State, "%+v", task)
			require.Empty(t, task.Parent)
		case "second":
			children++
			require.Equal(t, contracts.StateSucceeded, task.State, "%+v", task)
			i, ok := parents[task.Parent]
			require.True(t, ok, "child %s names parent %q", task.ID, task.Parent)
			require.Equal(t, fmt.Sprintf("job-%d.next", i), task.Event.ID)
			require.Equal(t, "/fn/first", task.Event.Source)
		}
	}
	require.Equal(t, n, children)

	for id, why := range map[string]string{
		badID:     "invalid reply event",
		badPrioID: "invalid reply event: priority: must be an integer from 0 to 9",
	} {
		task := byID[id]
		require.NotEqual(t, contracts.StateSucceeded, task.State, "%+v", task)
		require.Equal(t, contracts.ReasonNonRetryable, task.Reason, "%+v", task)
		require.Equal(t, 1, task.Attempts)
		require.Contains(t, task.Error, why)
	}

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, calls, n, "each child ran once")
	seen := map[string]bool{}
	for _, c := range calls {
		require.False(t, seen[c.id], "child event %s ran twice", c.id)
		seen[c.id] = true
		var i int
		_, err := fmt.Sscanf(c.id, "job-%d.next", &i)
		require.NoError(t, err)
		require.Equal(t, i, parents[c.parent], "the child event's parenttask names its parent")
		require.Equal(t, "1", c.depth)
		require.JSONEq(t, fmt.Sprintf(`{"job":%d}`, i), c.data)
	}
}
