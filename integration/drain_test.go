//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationGracefulDrain stops the dispatcher process with SIGTERM
// several times while 0-200 ms tasks flow: running attempts finish and are
// acknowledged before it exits, so nothing is lost and, unlike a kill,
// nothing runs twice.
func TestIntegrationGracefulDrain(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runGracefulDrain(t, driver) })
	}
}

func runGracefulDrain(t *testing.T, driver string) {
	const total, batch = 3000, 50
	c := newChecker(t, 200*time.Millisecond)
	e := newStack(t, driver, fmt.Sprintf(`
functions:
  - {name: work, events: [com.example.work], endpoint: %q}
subscriptions:
  - {name: results, sink: %q}
`, c.fn.URL, c.sink.URL))
	disp := e.spawn("dispatcher")
	e.start("gateway", "scheduler", "notifier")

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
				fmt.Fprintf(&buf, `{"specversion":"1.0","id":"d-%d","source":"/drain","type":"com.example.work"}`, n)
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
	stops := 0
	for stops < 3 || !isClosed(submitted) {
		time.Sleep(500 * time.Millisecond) // let work flow before the next stop
		began := time.Now()
		disp.stop()
		t.Logf("drained in %v", time.Since(began).Round(time.Millisecond))
		stops++
		disp.start()
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return c.finished() == c.total() }, "every task finished (%d of %d)", c.finished(), c.total())
	testkit.Eventually(t, 30*time.Second, e.outboxDrained, "results outbox drained")
	v := c.check(t, e, "default")
	t.Logf("%s: %d graceful stops; %s", driver, stops, v)
	require.Equal(t, total, v.Accepted)
	require.Zero(t, v.Lost)
	require.Zero(t, v.Stuck)
	require.Zero(t, v.DuplicateSuccesses)
	require.Zero(t, v.DuplicateExecutions, "a drained attempt is never run again")
	disp.stop()
}
