package tasklane

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/triggers"
)

// clusterExporterLock names the Redis lock that elects the one process
// exporting the cluster-wide gauges (among the scheduler processes). The
// "#" keeps it apart from every trigger's lock: no trigger name has one.
const clusterExporterLock = "#metrics-exporter"

// clusterExporterTTL is the lock's TTL: a crashed exporter is replaced
// after at most this long (a process that stops releases it at once).
const clusterExporterTTL = 10 * time.Second

// watchCluster registers the cluster-wide gauges (backlog, oldest task
// age, function limits, tasks by state, lane backlogs), read from the
// ledger and the lane depths at scrape time and reported only while held
// says this process is the elected exporter: with N replicas, one exports
// them, so a sum over processes does not multiply them.
func (a *App) watchCluster(held func() bool) {
	specs := ledger.FunctionSpecs(a.cfg.Functions)
	names := functionNames(a.cfg)
	tenants := a.cfg.TenantIDs()
	a.metrics.WatchCluster(func(ctx context.Context) (metrics.Cluster, error) {
		stats, err := a.ledger.FunctionStats(ctx, specs)
		if err != nil {
			return metrics.Cluster{}, err
		}
		queues, err := a.ledger.ReadyQueues(ctx, names, tenants)
		if err != nil {
			return metrics.Cluster{}, err
		}
		counts, err := a.ledger.TaskCounts(ctx, tenants)
		if err != nil {
			return metrics.Cluster{}, err
		}
		now := time.Now()
		var out metrics.Cluster
		for i, s := range stats {
			fl := metrics.FunctionLevel{Function: s.Name, Limit: float64(s.Limit), Waiting: float64(s.Waiting),
				Backlog: make(map[string]float64, len(tenants))}
			if q := queues[i]; !q.Oldest.IsZero() {
				fl.OldestAge = max(now.Sub(q.Oldest), 0)
			}
			for t, n := range queues[i].Tenants {
				fl.Backlog[t] = float64(n)
			}
			out.Functions = append(out.Functions, fl)
		}
		out.Tasks = make(map[string]map[string]float64, len(counts))
		for t, states := range counts {
			out.Tasks[t] = make(map[string]float64, len(states))
			for s, n := range states {
				out.Tasks[t][string(s)] = float64(n)
			}
		}
		depths := a.table.Depths()
		out.Lanes = make(map[string]float64, len(depths))
		for lane, n := range depths {
			out.Lanes[lane] = float64(n)
		}
		return out, nil
	}, held, 0)
}

// newClusterExporterLock is this process's lock for the exporter election.
func (a *App) newClusterExporterLock() *triggers.Lock {
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), watermill.NewShortUUID())
	return a.trigStore.Lock(clusterExporterLock, owner, clusterExporterTTL)
}

// electClusterExporter takes the exporter lock when it is free and renews
// it while held, until ctx ends; then it releases it so another scheduler
// process takes over at once.
func (a *App) electClusterExporter(ctx context.Context, lock *triggers.Lock) {
	logger := a.logger.With("component", "metrics")
	defer func() {
		a.metrics.ClusterExporter.Set(0)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lock.Release(rctx); err != nil {
			logger.Warn("releasing the metrics exporter lock", "error", err)
		}
	}()
	retry := clusterExporterTTL / 5
	for {
		a.tryClusterExporter(ctx, lock, logger.Warn)
		wait := retry
		if lock.Held() {
			wait = time.Until(lock.RenewAt())
		}
		t := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// tryClusterExporter renews the lock if this process holds it, else tries
// to take it, and sets tasklane_cluster_exporter.
func (a *App) tryClusterExporter(ctx context.Context, lock *triggers.Lock, warn func(string, ...any)) {
	if lock.Token() != "" {
		if _, err := lock.Renew(ctx); err != nil && ctx.Err() == nil {
			warn("renewing the metrics exporter lock", "error", err)
		}
	}
	if !lock.Held() {
		if _, err := lock.Acquire(ctx); err != nil && ctx.Err() == nil {
			warn("taking the metrics exporter lock", "error", err)
		}
	}
	if lock.Held() {
		a.metrics.ClusterExporter.Set(1)
	} else {
		a.metrics.ClusterExporter.Set(0)
	}
}
