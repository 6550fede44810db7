// Package metrics defines Tasklane's Prometheus metrics. Every process
// builds one Metrics and serves its registry on /metrics; the roles it runs
// fill in their part. Labels are bounded by configuration (tenants,
// functions, lanes, subscriptions): never task or event ids.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tasklane/tasklane/pkg/buildinfo"
)

// Namespace prefixes every metric.
const Namespace = "tasklane"

// Metrics holds every collector.
type Metrics struct {
	Registry *prometheus.Registry

	// Gateway.
	EventsReceived *prometheus.CounterVec // tenant, mode
	EventsRejected *prometheus.CounterVec // status
	TasksAccepted  *prometheus.CounterVec // tenant, function
	TasksDuplicate *prometheus.CounterVec // tenant
	IngestSeconds  *prometheus.HistogramVec
	// AdmissionRefusals counts submissions refused by backpressure
	// (gateway and triggers alike), by tenant and reason (tenant_backlog,
	// global_backlog).
	AdmissionRefusals *prometheus.CounterVec // tenant, reason

	// Dispatcher.
	Attempts  *prometheus.CounterVec   // function, class
	Outcomes  *prometheus.CounterVec   // tenant, function, outcome
	QueueWait *prometheus.HistogramVec // function
	// Retries counts attempts put back to wait for a retry (a backoff, or
	// a throttled answer's Retry-After), by the answer's class (retryable,
	// throttled).
	Retries      *prometheus.CounterVec   // function, class
	RunSeconds   *prometheus.HistogramVec // function
	InFlight     *prometheus.GaugeVec     // function
	Deliveries   *prometheus.CounterVec   // verdict (run, started, busy, done, missing)
	Quarantined  prometheus.Counter
	LeaseLost    prometheus.Counter
	LedgerErrors *prometheus.CounterVec // op

	// Scheduler.
	Requeued prometheus.Counter

	// Notifier.
	ResultsPublished *prometheus.CounterVec // result (ok, error)
	SinkDeliveries   *prometheus.CounterVec // subscription, result (ok, retry, dropped)

	// Routing controller.
	RoutingChanges *prometheus.CounterVec // action (split, merge, delete)

	// ClusterExporter is 1 in the one process that exports the
	// cluster-wide gauges (see WatchCluster), else 0.
	ClusterExporter prometheus.Gauge
}

var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// waitBuckets reach further than latencyBuckets: a task may wait an hour.
var waitBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// New registers every collector on a fresh registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{r}
	bi := buildinfo.Read()
	f.gauge("build_info", "Always 1: the version and VCS commit of the running binary.", "version", "commit").
		WithLabelValues(bi.Version, bi.Commit).Set(1)
	return &Metrics{
		Registry:       r,
		EventsReceived: f.counter("events_received_total", "CloudEvents received on the ingest API.", "tenant", "mode"),
		EventsRejected: f.counter("events_rejected_total", "Ingest requests answered with an error, by HTTP status.", "status"),
		TasksAccepted:  f.counter("tasks_accepted_total", "Tasks durably accepted (202).", "tenant", "function"),
		TasksDuplicate: f.counter("tasks_duplicate_total", "Submitted events found in the dedup window.", "tenant"),
		AdmissionRefusals: f.counter("admission_refusals_total", "Submissions refused by backpressure (429): the tenant's backlog at its max_backlog, or the global backlog over admission.max_backlog.",
			"tenant", "reason"),
		IngestSeconds: f.histogram("ingest_seconds", "Time to answer an ingest request, from body read to 202.",
			"mode"),
		Attempts: f.counter("attempts_total", "Attempts run, by outcome class.", "function", "class"),
		Outcomes: f.counter("tasks_finished_total", "Tasks that reached a terminal state.", "tenant", "function", "outcome"),
		QueueWait: f.histogramWith("queue_wait_seconds", "Time a task waited from due (created, or the time of its retry or delay) to an attempt's start, observed at every start.",
			waitBuckets, "function"),
		Retries: f.counter("retries_total", "Attempts answered retryable or throttled that were put back to wait for a retry (a backoff or the answer's Retry-After).",
			"function", "class"),
		RunSeconds:   f.histogram("run_seconds", "Duration of one attempt.", "function"),
		InFlight:     f.gauge("in_flight", "Attempts running in this process.", "function"),
		Deliveries:   f.counter("deliveries_total", "Lane deliveries, by ledger verdict.", "verdict"),
		Quarantined:  f.counter("quarantined_total", "Undecodable lane messages moved to the quarantine.").WithLabelValues(),
		LeaseLost:    f.counter("lease_lost_total", "Attempts whose lease was taken over before they ended.").WithLabelValues(),
		LedgerErrors: f.counter("ledger_errors_total", "Ledger operations that failed.", "op"),
		Requeued:     f.counter("requeued_total", "Tasks the scheduler put back in a ready queue (retries, delays, guards, takeovers).").WithLabelValues(),
		ResultsPublished: f.counter("results_published_total", "Result events published to the results exchange.",
			"result"),
		SinkDeliveries: f.counter("sink_deliveries_total", "Result event deliveries to subscription sinks.",
			"subscription", "result"),
		RoutingChanges: f.counter("routing_changes_total", "Routing table changes made by this process's controller.", "action"),
		ClusterExporter: f.gauge("cluster_exporter", "1 in the one process that exports the cluster-wide gauges (backlog, queue age, limits, tasks by state, lane backlog), else 0.").
			WithLabelValues(),
	}
}

type factory struct{ r *prometheus.Registry }

func (f factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.r.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, labels ...string) *prometheus.HistogramVec {
	return f.histogramWith(name, help, latencyBuckets, labels...)
}

func (f factory) histogramWith(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.r.MustRegister(h)
	return h
}
