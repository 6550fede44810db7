//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationDedup submits the same (source, id) 50 times at once:
// exactly one task is made, every answer names it, exactly one of them says
// it is new, and the function runs it exactly once.
func TestIntegrationDedup(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runDedup(t, driver) })
	}
}

func runDedup(t *testing.T, driver string) {
	c := newChecker(t, 20*time.Millisecond)
	e := startTasklane(t, driver, fmt.Sprintf(`
functions:
  - {name: work, events: [com.example.work], endpoint: %q}
subscriptions:
  - {name: all, sink: %q}
`, c.fn.URL, c.sink.URL))
	const copies = 50
	var wg sync.WaitGroup
	answers := make([]contracts.SubmittedTask, copies)
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body := e.post("/v1/events", "", "", map[string]string{
				"Ce-Specversion": "1.0", "Ce-Id": "same-event", "Ce-Source": "/dedup", "Ce-Type": "com.example.work",
			}, []byte(`{"n":1}`))
			if status != http.StatusAccepted {
				t.Errorf("copy %d: %d %s", i, status, body)
				return
			}
			var sr contracts.SubmitResponse
			if err := json.Unmarshal(body, &sr); err != nil || len(sr.Tasks) != 1 {
				t.Errorf("copy %d: %s", i, body)
				return
			}
			answers[i] = sr.Tasks[0]
		}()
	}
	wg.Wait()
	fresh := 0
	for _, a := range answers {
		require.Equal(t, answers[0].ID, a.ID, "every copy names the same task")
		if !a.Duplicate {
			fresh++
		}
	}
	require.Equal(t, 1, fresh, "exactly one copy made the task")
	c.accept(answers[0].ID)
	testkit.Eventually(t, 30*time.Second, func() bool { return c.finished() == 1 && e.outboxDrained() }, "the task finished")

	// Submitting it again later still finds the same task.
	status, body := e.post("/v1/events", "", "", map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": "same-event", "Ce-Source": "/dedup", "Ce-Type": "com.example.work",
	}, []byte(`{"n":1}`))
	require.Equal(t, http.StatusAccepted, status)
	require.Contains(t, string(body), `"duplicate":true`)
	require.Contains(t, string(body), `"state":"succeeded"`)

	v := c.check(t, e, "default")
	require.Equal(t, 1, v.Executions, "the function ran once")
	require.Zero(t, v.DuplicateResults)
}
