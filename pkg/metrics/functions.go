package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// FunctionLevel is one function's flow-control levels, cluster-wide.
type FunctionLevel struct {
	Function string
	// Limit is how many of its attempts may run at once (0: no limit).
	Limit float64
	// Waiting counts its tasks ready to start.
	Waiting float64
}

// FunctionLevelsFunc reads the configured functions' levels (from the
// ledger, at scrape time).
type FunctionLevelsFunc func(ctx context.Context) ([]FunctionLevel, error)

// FunctionScrapeTimeoutDefault bounds one read of the function levels.
const FunctionScrapeTimeoutDefault = time.Second

// functionCollector reports tasklane_function_limit and
// tasklane_function_waiting from one read per scrape. A read that fails or
// takes longer than its timeout reports neither (the rest of the scrape
// goes on).
type functionCollector struct {
	read           FunctionLevelsFunc
	timeout        time.Duration
	limit, waiting *prometheus.Desc
}

// WatchFunctions registers the cluster-wide function gauges, read by read
// at scrape time within timeout (0: FunctionScrapeTimeoutDefault):
// tasklane_function_limit{function} (0: no limit) and
// tasklane_function_waiting{function}. Call it once.
func (m *Metrics) WatchFunctions(read FunctionLevelsFunc, timeout time.Duration) {
	if timeout <= 0 {
		timeout = FunctionScrapeTimeoutDefault
	}
	m.Registry.MustRegister(&functionCollector{
		read: read, timeout: timeout,
		limit: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "function", "limit"),
			"Attempts of the function that may run at once across the cluster: its adaptive (AIMD) limit, else its concurrency; 0 is no limit.",
			[]string{"function"}, nil),
		waiting: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "function", "waiting"),
			"Tasks of the function ready to start, all priority bands, across the cluster.",
			[]string{"function"}, nil),
	})
}

func (c *functionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.limit
	ch <- c.waiting
}

func (c *functionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	levels, err := c.read(ctx)
	if err != nil {
		return
	}
	for _, l := range levels {
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, l.Limit, l.Function)
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, l.Waiting, l.Function)
	}
}
