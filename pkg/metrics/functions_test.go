package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/metrics"
)

func TestWatchFunctions(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	var fail error
	var deadline time.Duration
	m.WatchFunctions(func(ctx context.Context) ([]metrics.FunctionLevel, error) {
		d, ok := ctx.Deadline()
		require.True(t, ok, "the read is bounded")
		deadline = time.Until(d)
		return []metrics.FunctionLevel{{Function: "resize", Limit: 12, Waiting: 340}, {Function: "echo"}}, fail
	}, 0)
	require.Equal(t, map[string]float64{
		`tasklane_function_limit{function="echo"}`:     0,
		`tasklane_function_limit{function="resize"}`:   12,
		`tasklane_function_waiting{function="echo"}`:   0,
		`tasklane_function_waiting{function="resize"}`: 340,
	}, gather(t, m))
	require.Positive(t, deadline)
	require.LessOrEqual(t, deadline, metrics.FunctionScrapeTimeoutDefault)

	fail = errors.New("redis down")
	require.Empty(t, gather(t, m), "a failed read leaves the gauges out, the scrape goes on")
}

// gather returns the function gauges: "name{labels}" to value.
func gather(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "tasklane_function_") {
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
