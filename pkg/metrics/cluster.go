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
	// OldestAge is how long its oldest ready task has waited (0: none
	// ready).
	OldestAge time.Duration
	// Backlog counts its ready tasks by tenant.
	Backlog map[string]float64
}

// Cluster is one read of the cluster-wide levels.
type Cluster struct {
	Functions []FunctionLevel
	// Tasks counts tasks by tenant, then state (non-terminal states and
	// dead).
	Tasks map[string]map[string]float64
	// Lanes is each lane's backlog in the broker.
	Lanes map[string]float64
}

// ClusterFunc reads the cluster-wide levels (from the ledger and the
// broker, at scrape time).
type ClusterFunc func(ctx context.Context) (Cluster, error)

// ClusterScrapeTimeoutDefault bounds one read of the cluster levels.
const ClusterScrapeTimeoutDefault = 2 * time.Second

// The cluster-wide gauges' names, for dashboards, autoscalers and their
// tests.
const (
	BacklogTasks         = Namespace + "_backlog_tasks"
	OldestTaskAgeSeconds = Namespace + "_oldest_task_age_seconds"
	FunctionLimit        = Namespace + "_function_limit"
	FunctionWaiting      = Namespace + "_function_waiting"
	Tasks                = Namespace + "_tasks"
	LaneBacklog          = Namespace + "_lane_backlog"
)

// clusterCollector reports the cluster-wide gauges from one read per
// scrape, only while exporting says so. A read that fails or takes longer
// than its timeout reports none of them (the rest of the scrape goes on).
type clusterCollector struct {
	read      ClusterFunc
	exporting func() bool
	timeout   time.Duration

	limit, waiting, backlog, oldest, tasks, lanes *prometheus.Desc
}

// WatchCluster registers the cluster-wide gauges, read by read at scrape
// time within timeout (0: ClusterScrapeTimeoutDefault), and reported only
// while exporting returns true (nil: always). One process of the cluster
// should export them, or sums over processes multiply them. Call it once.
//
//   - tasklane_backlog_tasks{tenant,function}: ready tasks
//   - tasklane_oldest_task_age_seconds{function}: wait of the oldest ready task
//   - tasklane_function_limit{function}: the function's limit (0: none)
//   - tasklane_function_waiting{function}: its ready tasks, all tenants
//   - tasklane_tasks{tenant,state}: tasks by state (not terminal, and dead)
//   - tasklane_lane_backlog{lane}: messages waiting in each lane
func (m *Metrics) WatchCluster(read ClusterFunc, exporting func() bool, timeout time.Duration) {
	if timeout <= 0 {
		timeout = ClusterScrapeTimeoutDefault
	}
	if exporting == nil {
		exporting = func() bool { return true }
	}
	m.Registry.MustRegister(&clusterCollector{
		read: read, exporting: exporting, timeout: timeout,
		limit: prometheus.NewDesc(FunctionLimit,
			"Attempts of the function that may run at once across the cluster: its adaptive (AIMD) limit, else its concurrency; 0 is no limit.",
			[]string{"function"}, nil),
		waiting: prometheus.NewDesc(FunctionWaiting,
			"Tasks of the function ready to start, all priority bands and tenants, across the cluster.",
			[]string{"function"}, nil),
		backlog: prometheus.NewDesc(BacklogTasks,
			"Tasks ready to start and waiting for a slot, by tenant and function, across the cluster (the ledger's ready queues).",
			[]string{"tenant", "function"}, nil),
		oldest: prometheus.NewDesc(OldestTaskAgeSeconds,
			"How long the oldest task ready to start has waited since it became ready (0 when none is ready).",
			[]string{"function"}, nil),
		tasks: prometheus.NewDesc(Tasks,
			"Tasks by tenant and state across the cluster: queued (in a lane or ready), scheduled, retrying, running, paused, and dead (the dead-letter queue).",
			[]string{"tenant", "state"}, nil),
		lanes: prometheus.NewDesc(LaneBacklog,
			"Messages waiting in each lane of the broker (ingested, not yet admitted to a ready queue).",
			[]string{"lane"}, nil),
	})
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.limit, c.waiting, c.backlog, c.oldest, c.tasks, c.lanes} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.exporting() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cl, err := c.read(ctx)
	if err != nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, f := range cl.Functions {
		gauge(c.limit, f.Limit, f.Function)
		gauge(c.waiting, f.Waiting, f.Function)
		gauge(c.oldest, f.OldestAge.Seconds(), f.Function)
		for tenant, n := range f.Backlog {
			gauge(c.backlog, n, tenant, f.Function)
		}
	}
	for tenant, states := range cl.Tasks {
		for state, n := range states {
			gauge(c.tasks, n, tenant, state)
		}
	}
	for lane, n := range cl.Lanes {
		gauge(c.lanes, n, lane)
	}
}
