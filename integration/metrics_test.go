//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestIntegrationBacklogMetrics: with 60 tasks waiting on a one-at-a-time
// function, the cluster-wide backlog gauge reads between 30 and 60 and the
// oldest task's age grows; of two processes, one exports the cluster-wide
// gauges, so a sum over both is not doubled; /metrics passes
// `promtool check metrics` (when promtool is installed; CI installs it).
func TestIntegrationBacklogMetrics(t *testing.T) {
	gate := make(chan struct{})
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(fn.Close)
	t.Cleanup(func() { closeOnce(gate) })
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: single, events: [com.example.single], endpoint: %q, concurrency: 1, timeout: 5m}
`, fn.URL))
	e.start()
	second := startSecond(t, e)

	const n = 60
	var batch []string
	for i := range n {
		batch = append(batch, fmt.Sprintf(`{"specversion":"1.0","id":"m-%d","source":"/metrics","type":"com.example.single"}`, i))
	}
	status, body := e.post("/v1/events", "", "application/cloudevents-batch+json", nil, []byte("["+joinComma(batch)+"]"))
	require.Equal(t, http.StatusAccepted, status, "%s", body)

	const backlog = `tasklane_backlog_tasks{function="single",tenant="default"}`
	const age = `tasklane_oldest_task_age_seconds{function="single"}`
	urls := []string{e.app.URL(), second.URL()}
	var first float64
	testkit.Eventually(t, 30*time.Second, func() bool {
		v, ok := sumOver(t, urls, backlog)
		first = v
		return ok && v >= 30
	}, "the backlog gauge counts the waiting tasks")
	require.LessOrEqual(t, first, float64(n))

	// One process exports the cluster-wide gauges, the other none: a sum
	// over the processes is the cluster's figure, not twice it.
	exporters := 0
	for _, u := range urls {
		text := scrape(t, u)
		v, ok := gauge(text, "tasklane_cluster_exporter")
		require.True(t, ok)
		if v == 1 {
			exporters++
			_, ok = gauge(text, backlog)
			require.True(t, ok, "the exporter reports the backlog")
		} else {
			require.NotContains(t, text, "tasklane_backlog_tasks{", "a process that is not the exporter reports no backlog")
			require.NotContains(t, text, "tasklane_function_limit{")
		}
	}
	require.Equal(t, 1, exporters, "exactly one process exports the cluster-wide gauges")
	v, _ := sumOver(t, urls, `tasklane_function_limit{function="single"}`)
	require.InDelta(t, 1, v, 0, "the limit is not doubled")

	// The oldest waiting task's age grows while nothing starts.
	a1, ok := sumOver(t, urls, age)
	require.True(t, ok)
	testkit.Eventually(t, 10*time.Second, func() bool {
		a2, _ := sumOver(t, urls, age)
		return a2 >= a1+0.5
	}, "the oldest task's age grows (from %v)", a1)
	b2, _ := sumOver(t, urls, backlog)
	require.GreaterOrEqual(t, b2, float64(30))
	require.LessOrEqual(t, b2, float64(n))

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("promtool is not installed (CI installs Debian's prometheus package in .ci/run)")
			}
			t.Skip("promtool not installed (Debian: apt-get install prometheus)")
		}
		for _, u := range urls {
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(scrape(t, u))
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "promtool check metrics:\n%s", out)
		}
	})

	// Let the tasks run; the first attempt started, so queue waits are
	// observed.
	closeOnce(gate)
	testkit.Eventually(t, 60*time.Second, func() bool {
		v, _ := sumOver(t, urls, backlog)
		return v == 0
	}, "the backlog drains")
	testkit.Eventually(t, 10*time.Second, func() bool {
		var starts float64
		for _, u := range urls {
			c, _ := gauge(scrape(t, u), `tasklane_queue_wait_seconds_count{function="single"}`)
			starts += c
		}
		return starts == n
	}, "a queue wait is observed at every start")
}

// startSecond starts a second process (every role) of e's cluster.
func startSecond(t *testing.T, e *env) *tasklane.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, e.cfg, tasklane.Options{Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		require.NoError(t, app.Shutdown(sctx))
	})
	return app
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// scrape returns base's /metrics.
func scrape(t *testing.T, base string) string {
	t.Helper()
	r, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", b)
	return string(b)
}

// gauge finds series (name{labels} as exposed) in a scrape.
func gauge(text, series string) (float64, bool) {
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// sumOver sums series over the processes at urls; ok when one had it.
func sumOver(t *testing.T, urls []string, series string) (float64, bool) {
	t.Helper()
	sum, found := 0.0, false
	for _, u := range urls {
		if v, ok := gauge(scrape(t, u), series); ok {
			sum += v
			found = true
		}
	}
	return sum, found
}
