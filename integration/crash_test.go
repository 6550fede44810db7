//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationDispatcherKill9 runs the dispatcher as its own process and
// kills it with SIGKILL at random moments, at least five times, while 10,000
// tasks of a 0-50 ms function flow through; the gateway, scheduler and
// notifier run in the test process. Pass: nothing lost, no task succeeds
// twice, nothing stuck, nothing unexpected, and every task is terminal
// within 30 s of the last kill with default settings (lease_ttl 15s).
func TestIntegrationDispatcherKill9(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runKill9(t, driver) })
	}
}

func runKill9(t *testing.T, driver string) {
	const total, batch = 10000, 50
	c := newChecker(t, 50*time.Millisecond)
	e := newStack(t, driver, fmt.Sprintf(`
functions:
  - name: work
    events: [com.example.work]
    endpoint: %q
subscriptions:
  - name: results
    sink: %q
`, c.fn.URL, c.sink.URL))
	disp := e.spawn("dispatcher")
	e.start("gateway", "scheduler", "notifier")

	// Submit at about 1,000 tasks/s in batches.
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for start := 0; start < total; start += batch {
			<-tick.C
			var buf bytes.Buffer
			buf.WriteByte('[')
			for n := start; n < start+batch; n++ {
				if n > start {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `{"specversion":"1.0","id":"k-%d","source":"/kill9","type":"com.example.work","data":{"n":%d}}`, n, n)
			}
			buf.WriteByte(']')
			resp, err := http.Post(e.app.URL()+"/v1/events", "application/cloudevents-batch+json", &buf)
			if err != nil {
				t.Errorf("submitting: %v", err)
				return
			}
			var sr contracts.SubmitResponse
			err = json.NewDecoder(resp.Body).Decode(&sr)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusAccepted {
				t.Errorf("submit answered %d: %v", resp.StatusCode, err)
				return
			}
			for _, task := range sr.Tasks {
				c.accept(task.ID)
			}
		}
	}()

	// Kill the dispatcher at random moments while work flows.
	kills := 0
	var lastKill time.Time
	for kills < 5 || !isClosed(submitted) {
		time.Sleep(500*time.Millisecond + rand.N(1500*time.Millisecond)) // a random moment, not synchronisation
		disp.kill()
		lastKill = time.Now()
		kills++
		disp.start()
	}
	<-submitted

	var recovered time.Duration
	testkit.Eventually(t, 60*time.Second, func() bool {
		if c.finished() < c.total() {
			return false
		}
		recovered = time.Since(lastKill)
		return true
	}, "every accepted task finished after the last kill (%d of %d)", c.finished(), c.total())
	testkit.Eventually(t, 30*time.Second, e.outboxDrained, "results outbox drained")

	v := c.check(t, e, "default")
	t.Logf("%s: %d kills; %s; all terminal %.1fs after the last kill", driver, kills, v, recovered.Seconds())
	require.Equal(t, total, v.Accepted)
	require.Zero(t, v.Lost, "lost")
	require.Zero(t, v.DuplicateSuccesses, "duplicate successes")
	require.Zero(t, v.Stuck, "stuck")
	require.Zero(t, v.Unexpected, "unexpected")
	require.Zero(t, v.DuplicateResults, "duplicate result events")
	require.LessOrEqual(t, recovered, 30*time.Second, "recovery after the last kill")
	disp.stop()
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
