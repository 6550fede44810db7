//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationDelaysTTLAndCancel: delayed tasks (delay, deliverat) wait
// in state scheduled, survive a kill -9 of the scheduler/dispatcher/notifier
// process, and start within a second of their time; a waiting task can be
// cancelled and never runs; a task whose ttl passes before it starts ends
// expired, whether it waits in the delay set or in a lane nobody consumes.
func TestIntegrationDelaysTTLAndCancel(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runDelaysTTLAndCancel(t, driver) })
	}
}

func runDelaysTTLAndCancel(t *testing.T, driver string) {
	c := newChecker(t, 0)
	e := newStack(t, driver, fmt.Sprintf(`
functions:
  - {name: work, events: [com.example.work], endpoint: %q}
subscriptions:
  - {name: results, sink: %q}
`, c.fn.URL, c.sink.URL))
	workers := e.spawn("scheduler", "dispatcher", "notifier")
	e.start("gateway")

	submit := func(id string, ext map[string]string) string {
		h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/delay", "Ce-Type": "com.example.work"}
		for k, v := range ext {
			h["Ce-"+k] = v
		}
		status, body := e.post("/v1/events", "", "", h, nil)
		require.Equal(t, http.StatusAccepted, status, "%s", body)
		var sr contracts.SubmitResponse
		require.NoError(t, json.Unmarshal(body, &sr))
		c.accept(sr.Tasks[0].ID)
		return sr.Tasks[0].ID
	}
	var delayed, cancelled, expiredDelayed []string
	for i := range 10 {
		delayed = append(delayed, submit(fmt.Sprintf("delay-%d", i), map[string]string{"Delay": "3"}))
		delayed = append(delayed, submit(fmt.Sprintf("at-%d", i), map[string]string{"Deliverat": time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339)}))
	}
	for i := range 3 {
		cancelled = append(cancelled, submit(fmt.Sprintf("cancel-%d", i), map[string]string{"Delay": "3"}))
		expiredDelayed = append(expiredDelayed, submit(fmt.Sprintf("ttl-%d", i), map[string]string{"Delay": "4", "Ttl": "2"}))
	}
	ctx := context.Background()
	for _, id := range delayed {
		task, err := e.ledger().Get(ctx, "default", id)
		require.NoError(t, err)
		require.Equal(t, contracts.StateScheduled, task.State)
	}
	for _, id := range cancelled {
		status, body := e.deleteTask(id)
		require.Equal(t, http.StatusOK, status, "%s", body)
	}

	// Every worker role dies before the tasks are due and comes back.
	workers.kill()
	// Meanwhile, queued tasks with a short ttl pile up in a lane nobody reads.
	var expiredQueued []string
	for i := range 3 {
		expiredQueued = append(expiredQueued, submit(fmt.Sprintf("q-%d", i), map[string]string{"Ttl": "1"}))
	}
	time.Sleep(1500 * time.Millisecond) // the outage
	workers.start()

	testkit.Eventually(t, 30*time.Second, func() bool { return c.finished() == c.total() }, "every task finished")
	state := func(id string) *contracts.Task {
		task, err := e.ledger().Get(ctx, "default", id)
		require.NoError(t, err)
		return task
	}
	var worst time.Duration
	for _, id := range delayed {
		task := state(id)
		require.Equal(t, contracts.StateSucceeded, task.State, id)
		late := task.StartedAt.Sub(*task.ScheduledAt)
		require.GreaterOrEqual(t, late, time.Duration(0), "%s started before its time", id)
		require.LessOrEqual(t, late, time.Second, "%s started %v after its time", id, late)
		worst = max(worst, late)
	}
	for _, id := range cancelled {
		require.Equal(t, contracts.StateCancelled, state(id).State)
	}
	for _, id := range append(expiredDelayed, expiredQueued...) {
		task := state(id)
		require.Equal(t, contracts.StateExpired, task.State, id)
		require.Zero(t, task.Attempts)
	}
	v := c.check(t, e, "default")
	require.Zero(t, v.Lost)
	// The notifier was killed -9 too: a result it sent but had not yet
	// acknowledged is sent again (at least once, same event), so only
	// conflicting outcomes are wrong here.
	require.Zero(t, v.ConflictingResults)
	require.Equal(t, len(delayed), v.Executions, "only the delayed tasks ran, once each")
	t.Logf("%s: %d delayed tasks started at most %v after their time; %s", driver, len(delayed), worst.Round(time.Millisecond), v)
	workers.stop()
}
