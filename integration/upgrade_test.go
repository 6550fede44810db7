//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// upgradeLongRun is how long a long task of the upgrade drill runs: well
// above a lane delivery or a lease renewal, below drain_timeout.
const upgradeLongRun = 15 * time.Second

// TestIntegrationRollingUpgrade is the rolling-upgrade drill of
// docs/upgrade.md: two dispatcher processes are replaced one by one (a new
// process started, then the old one sent SIGTERM and waited for) while
// long tasks (15 s; dispatcher.drain_timeout 30s) and a stream of short
// ones run. Each old process holds at least one long task when it is
// stopped (max_running 5, six long tasks running across two processes).
// Pass: nothing lost or stuck, nothing run twice (so nothing succeeded
// twice), no call's request ended before the function answered, and each
// stop waited for its long tasks.
func TestIntegrationRollingUpgrade(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runRollingUpgrade(t, driver) })
	}
}

func runRollingUpgrade(t *testing.T, driver string) {
	const longPerWave = 6
	c := newChecker(t, 0)
	var longRunning, longDone, interrupted atomic.Int64
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.executions[r.Header.Get(contracts.HeaderTaskID)]++
		c.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/long") {
			longRunning.Add(1)
			defer longRunning.Add(-1)
			select {
			case <-time.After(upgradeLongRun): // the function's own work
				longDone.Add(1)
			case <-r.Context().Done():
				interrupted.Add(1)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(fn.Close)
	e := newStack(t, driver, fmt.Sprintf(`
dispatcher: {drain_timeout: 30s, max_running: 5}
functions:
  - {name: long, events: [com.example.long], endpoint: %q, timeout: 40s}
  - {name: short, events: [com.example.short], endpoint: %q}
subscriptions:
  - {name: results, sink: %q}
`, fn.URL+"/long", fn.URL+"/short", c.sink.URL))
	old := []*proc{e.spawn("dispatcher"), e.spawn("dispatcher")}
	e.start("gateway", "scheduler", "notifier")

	submit := func(typ string, ids ...string) error {
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i, id := range ids {
			if i > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"specversion":"1.0","id":%q,"source":"/upgrade","type":%q}`, id, typ)
		}
		buf.WriteByte(']')
		resp, err := http.Post(e.app.URL()+"/v1/events", "application/cloudevents-batch+json", &buf)
		if err != nil {
			return fmt.Errorf("submitting: %w", err)
		}
		defer resp.Body.Close()
		var sr contracts.SubmitResponse
		if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil || resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("submit answered %d: %v", resp.StatusCode, err)
		}
		for _, task := range sr.Tasks {
			c.accept(task.ID)
		}
		return nil
	}
	wave := 0
	longWave := func() {
		wave++
		ids := make([]string, longPerWave)
		for i := range ids {
			ids[i] = fmt.Sprintf("long-%d-%d", wave, i)
		}
		require.NoError(t, submit("com.example.long", ids...))
		waitOrDump(t, e, 20*time.Second, func() bool { return longRunning.Load() == longPerWave },
			"wave %d: %d long tasks running", wave, longPerWave)
	}

	// Short tasks flow through the whole upgrade.
	stopShort := make(chan struct{})
	var shortWG sync.WaitGroup
	stopShorts := sync.OnceFunc(func() { close(stopShort); shortWG.Wait() })
	t.Cleanup(stopShorts) // before the stack stops, when the test fails early
	shortWG.Add(1)
	go func() {
		defer shortWG.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stopShort:
				return
			case <-tick.C:
			}
			ids := make([]string, 5)
			for i := range ids {
				ids[i] = fmt.Sprintf("short-%d-%d", n, i)
			}
			if err := submit("com.example.short", ids...); err != nil {
				t.Error(err)
				return
			}
		}
	}()

	// The drill: for each dispatcher, start its replacement, then SIGTERM
	// it and wait for it to exit. Each holds a long task when stopped (at
	// most max_running of the six are in one process), so its drain lasts
	// until that task ends.
	for i, p := range old {
		longWave()
		e.spawn("dispatcher")
		began := time.Now()
		p.stop()
		drained := time.Since(began)
		t.Logf("%s: dispatcher %d drained in %v", driver, i+1, drained.Round(time.Millisecond))
		require.Greater(t, drained, upgradeLongRun/2, "the stop waited for a long task")
	}
	stopShorts()

	waitOrDump(t, e, 60*time.Second, func() bool { return c.finished() == c.total() }, "every task finished")
	testkit.Eventually(t, 30*time.Second, e.outboxDrained, "results outbox drained")
	v := c.check(t, e, "default")
	t.Logf("%s: rolling upgrade of %d dispatchers; %s; long tasks completed %d", driver, len(old), v, longDone.Load())
	require.Zero(t, v.Lost, "lost")
	require.Zero(t, v.Stuck, "stuck")
	require.Zero(t, v.Unexpected, "unexpected")
	require.Zero(t, v.DuplicateSuccesses, "duplicate successes")
	require.Zero(t, v.DuplicateExecutions, "a drained attempt is never run again")
	require.Zero(t, interrupted.Load(), "no call was interrupted")
	require.EqualValues(t, len(old)*longPerWave, longDone.Load(), "every long task ran to its end once")
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, rs := range c.results {
		for _, r := range rs {
			require.Equal(t, contracts.StateSucceeded, r.state, "task %s", id)
		}
	}
}

// waitOrDump polls cond until it holds; after within it logs the tasks of
// tenant default that have not ended and how many tasks are in each state,
// and fails with msg.
func waitOrDump(t *testing.T, e *env, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			states := map[string]int{}
			for _, task := range allTasks(t, e.ledger(), "default") {
				k := task.Function + "/" + string(task.State)
				states[k]++
				if !task.State.Terminal() && states[k] <= 5 {
					t.Logf("not ended: %+v", task)
				}
			}
			t.Fatalf("not within %v: "+msg+"; tasks by function/state: %v", append(append([]any{within}, args...), states)...)
		}
		time.Sleep(50 * time.Millisecond) // polling, with the deadline above
	}
}
