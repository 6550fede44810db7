package metrics_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/metrics"
)

func TestWatchCluster(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	var fail error
	var deadline time.Duration
	var exporting atomic.Bool
	exporting.Store(true)
	m.WatchCluster(func(ctx context.Context) (metrics.Cluster, error) {
		d, ok := ctx.Deadline()
		require.True(t, ok, "the read is bounded")
		deadline = time.Until(d)
		return metrics.Cluster{
			Functions: []metrics.FunctionLevel{
				{Function: "resize", Limit: 12, Waiting: 340, OldestAge: 1500 * time.Millisecond,
					Backlog: map[string]float64{"acme": 300, "globex": 40}},
				{Function: "echo", Backlog: map[string]float64{"acme": 0}},
			},
			Tasks: map[string]map[string]float64{"acme": {"queued": 301, "dead": 2}},
			Lanes: map[string]float64{"shared-0": 7},
		}, fail
	}, exporting.Load, 0)
	require.Equal(t, map[string]float64{
		`tasklane_function_limit{function="echo"}`:                  0,
		`tasklane_function_limit{function="resize"}`:                12,
		`tasklane_function_waiting{function="echo"}`:                0,
		`tasklane_function_waiting{function="resize"}`:              340,
		`tasklane_oldest_task_age_seconds{function="echo"}`:         0,
		`tasklane_oldest_task_age_seconds{function="resize"}`:       1.5,
		`tasklane_backlog_tasks{function="echo",tenant="acme"}`:     0,
		`tasklane_backlog_tasks{function="resize",tenant="acme"}`:   300,
		`tasklane_backlog_tasks{function="resize",tenant="globex"}`: 40,
		`tasklane_tasks{state="dead",tenant="acme"}`:                2,
		`tasklane_tasks{state="queued",tenant="acme"}`:              301,
		`tasklane_lane_backlog{lane="shared-0"}`:                    7,
	}, gather(t, m))
	require.Positive(t, deadline)
	require.LessOrEqual(t, deadline, metrics.ClusterScrapeTimeoutDefault)

	exporting.Store(false)
	require.Empty(t, gather(t, m), "a process that is not the exporter reports none")

	exporting.Store(true)
	fail = errors.New("redis down")
	require.Empty(t, gather(t, m), "a failed read leaves the gauges out, the scrape goes on")
}

// clusterGauges are the names WatchCluster reports.
var clusterGauges = map[string]bool{
	metrics.BacklogTasks: true, metrics.OldestTaskAgeSeconds: true, metrics.FunctionLimit: true,
	metrics.FunctionWaiting: true, metrics.Tasks: true, metrics.LaneBacklog: true,
}

// gather returns the cluster gauges: "name{labels}" to value.
func gather(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if !clusterGauges[mf.GetName()] {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = mt.GetGauge().GetValue()
		}
	}
	return out
}
