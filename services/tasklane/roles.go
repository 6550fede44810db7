package tasklane

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/dispatcher"
	"github.com/tasklane/tasklane/services/gateway"
	"github.com/tasklane/tasklane/services/notifier"
	"github.com/tasklane/tasklane/services/scheduler"
)

// ingester is the process's one Ingester, made on first use.
func (a *App) ingester() *ingest.Ingester {
	if a.ing != nil {
		return a.ing
	}
	cfg := a.cfg
	var admit ingest.Admitter
	if a.admit != nil {
		admit = a.admit
	}
	a.ing = ingest.New(ingest.Config{
		Ledger:    a.ledger,
		Publisher: a.driver.Publisher(),
		Router:    a.table,
		Subscribers: func(tenant, eventType string) []string {
			fns := cfg.FunctionsFor(tenant, eventType)
			names := make([]string, len(fns))
			for i, f := range fns {
				names[i] = f.Name
			}
			return names
		},
		MaxEventBytes: cfg.Server.MaxEventBytes,
		Metrics:       a.metrics,
		Logger:        a.logger.With("component", "ingest"),
		Observe:       a.observe,
		Admission:     admit,
	})
	return a.ing
}

func (a *App) keyring() (*auth.Keyring, error) {
	if len(a.cfg.Tenants) == 0 {
		return auth.Open(config.DefaultTenant), nil
	}
	keys := map[string][]string{}
	for _, t := range a.cfg.Tenants {
		keys[t.ID] = t.APIKeys
	}
	return auth.NewKeyring(keys)
}

// tenantQuotas are the tenants' configured limits as GET /v1/functions
// shows them.
func tenantQuotas(tenants []config.Tenant) map[string]contracts.TenantQuota {
	out := make(map[string]contracts.TenantQuota, len(tenants))
	for _, t := range tenants {
		q := contracts.TenantQuota{Concurrency: t.Concurrency, Rate: t.Rate, MaxBacklog: t.MaxBacklog}
		if t.Rate > 0 {
			q.Burst = config.BurstFor(t.Rate, t.Burst)
		}
		out[t.ID] = q
	}
	return out
}

// startGateway makes the gateway's /v1 routes and runs its bulk jobs
// with ctx.
func (a *App) startGateway(ctx context.Context) {
	gw := gateway.New(gateway.Config{
		Keyring:  a.keys,
		Ingester: a.ingester(),
		Ledger:   a.ledger,
		Metrics:  a.metrics,
		Logger:   a.logger.With("component", "gateway"),
		FunctionExists: func(name string) bool {
			for _, f := range a.cfg.Functions {
				if f.Name == name {
					return true
				}
			}
			return false
		},
		Functions: ledger.FunctionSpecs(a.cfg.Functions),
		Quotas:    tenantQuotas(a.cfg.Tenants),
		Limits: gateway.Limits{
			MaxEventBytes:  a.cfg.Server.MaxEventBytes,
			MaxBatchBytes:  a.cfg.Server.MaxBatchBytes,
			MaxBatchEvents: a.cfg.Server.MaxBatchEvents,
		},
		BulkSyncMax: a.cfg.Server.BulkSyncMax,
	})
	a.goRun("jobs", func() error { gw.RunJobs(ctx); return nil })
	inner := http.NewServeMux()
	gw.Register(inner)
	a.trigAPI = gateway.NewTriggers(gateway.TriggersConfig{
		Keyring: a.keys, States: a.trigStore, Logger: a.logger,
		Specs: func() []config.Trigger { return *a.trigSpecs.Load() },
	})
	a.trigAPI.Register(inner)
	a.api = inner
	a.startUI()
}

// whenReady answers 503 until Redis and the broker answer, the lanes are
// declared and the roles run.
func (a *App) whenReady(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-a.ready:
			h.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			gateway.WriteError(w, http.StatusServiceUnavailable, "not ready: "+a.status.summary()+" (see /readyz)")
		}
	})
}

func (a *App) observe(tenant string, tasks int) {
	if a.report != nil {
		a.report.Observe(tenant, tasks)
	}
	if a.admit != nil {
		a.admit.Observe(tenant, tasks)
	}
}

// admissionLimits are the backlog limits of the config.
func (a *App) admissionLimits() admission.Limits {
	l := admission.Limits{Tenant: map[string]int64{}, Global: a.cfg.Admission.MaxBacklog}
	for _, t := range a.cfg.Tenants {
		if t.MaxBacklog > 0 {
			l.Tenant[t.ID] = t.MaxBacklog
		}
	}
	return l
}

// submissionShares are the tenants' shares of the tasks submitted in the
// last finished heavy-hitter window, summed over every gateway (the report
// the routing controller reads; tenants under its threshold are absent).
// When the last window's report is not complete yet, the one before.
func (a *App) submissionShares(ctx context.Context) (map[string]float64, error) {
	window := a.cfg.Routing.Window.Std()
	last := routing.WindowIndex(time.Now(), window) - 1
	var report routing.Report
	for _, index := range []int64{last, last - 1} {
		var err error
		if report, err = routing.ReadReport(ctx, a.rdb, a.cfg.Ledger.KeyPrefix, index); err != nil {
			return nil, err
		}
		if report.Total > 0 {
			break
		}
	}
	shares := make(map[string]float64, len(report.Counts))
	for t := range report.Counts {
		shares[t] = report.Share(t)
	}
	return shares, nil
}

// startWorkers starts the roles with ctx; startCtx bounds waiting for them
// to run.
func (a *App) startWorkers(startCtx, ctx context.Context) error {
	if a.opts.Roles[RoleDispatcher] {
		var err error
		a.disp, err = dispatcher.New(dispatcher.Config{
			Broker:           a.driver,
			Lanes:            a.table.Lanes(),
			Quarantine:       broker.QuarantineTopicFor(a.cfg.Broker.Prefix),
			ConsumersPerLane: a.cfg.Dispatcher.ConsumersPerLane,
			Ledger:           a.ledger,
			Functions:        a.fns,
			Tenants:          a.tenantLimits(),
			Metrics:          a.metrics,
			Logger:           a.logger,
			LeaseTTL:         a.cfg.Dispatcher.LeaseTTL.Std(),
			DrainTimeout:     a.cfg.Dispatcher.DrainTimeout.Std(),
			MaxRunning:       a.cfg.Dispatcher.MaxRunning,
			ReservedHigh:     a.cfg.Dispatcher.ReservedHigh,
			Chainer:          a.ingester(),
		})
		if err != nil {
			return err
		}
		a.goRun("dispatcher", func() error { return a.disp.Run(ctx) })
		if err := waitRunning(startCtx, a.disp.Running(), a.opts.StartupTimeout, "dispatcher"); err != nil {
			return err
		}
	}
	// Every process keeps its routing table and lane backlogs fresh, and
	// the dispatcher's consumers matching the table.
	follow := routing.FollowConfig{Store: a.store, Lanes: a.driver}
	if a.disp != nil {
		follow.OnLanes = func(ctx context.Context, lanes []string) {
			a.disp.SetLanes(ctx, lanes, a.cfg.Routing.LaneGrace.Std()/2)
		}
	}
	a.goRun("routing", func() error { a.table.Follow(ctx, follow); return nil })
	if a.report != nil {
		a.goRun("heavy-hitters", func() error { a.report.Run(ctx); return nil })
	}
	if a.admit != nil {
		a.goRun("admission", func() error { a.admit.Run(ctx); return nil })
	}
	if a.opts.Roles[RoleController] {
		a.goRun("controller", func() error { a.ctrl.Run(ctx); return nil })
	}
	if a.opts.Roles[RoleScheduler] {
		// The scheduler processes elect the one that exports the
		// cluster-wide gauges; the first try is made now, so a lone
		// process exports them once ready.
		lock := a.newClusterExporterLock()
		a.tryClusterExporter(startCtx, lock, a.logger.With("component", "metrics").Warn)
		a.watchCluster(lock.Held)
		a.goRun("metrics-exporter", func() error { a.electClusterExporter(ctx, lock); return nil })
		s := scheduler.New(scheduler.Config{
			Ledger: a.ledger, Metrics: a.metrics, Logger: a.logger, Guard: a.cfg.Ledger.PublishGuard.Std(),
			Quotas:     quotas(a.cfg),
			Functions:  func() []string { return functionNames(a.cfg) },
			Configured: func(fn string) bool { return a.cfg.Function(fn) != nil },
			Trim:       &scheduler.Trim{Broker: a.driver, Lanes: a.table.Lanes},
			Tenants:    a.cfg.TenantIDs,
		})
		a.goRun("scheduler", func() error { return s.Run(ctx) })
	}
	if a.opts.Roles[RoleNotifier] {
		var err error
		a.notif, err = notifier.New(notifier.Config{
			Ledger:          a.ledger,
			Redis:           a.redisOpts,
			RedisCluster:    a.clusterOpts,
			ResultPublisher: a.driver.ResultPublisher(),
			ResultsExchange: contracts.ResultsExchangeFor(a.cfg.Broker.Prefix),
			Consumers:       a.cfg.Notifier.Consumers,
			SinkTimeout:     a.cfg.Notifier.SinkTimeout.Std(),
			SinkAttempts:    a.cfg.Notifier.SinkAttempts,
			SinkConcurrency: a.cfg.Notifier.SinkConcurrency,
			SinkBacklog:     a.cfg.Notifier.SinkBacklog,
			Subscriptions:   a.subscriptions(),
			Metrics:         a.metrics,
			Logger:          a.logger,
		})
		if err != nil {
			return err
		}
		a.goRun("notifier", func() error { return a.notif.Run(ctx) })
		if err := waitRunning(startCtx, a.notif.Running(), a.opts.StartupTimeout, "notifier"); err != nil {
			return err
		}
	}
	return nil
}

func waitRunning(ctx context.Context, ch <-chan struct{}, within time.Duration, what string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(within):
		return fmt.Errorf("%s did not start within %s (is the broker reachable?)", what, within)
	}
}

func (a *App) functions() (map[string]dispatcher.Function, error) {
	client := executor.NewHTTPClient()
	out := map[string]dispatcher.Function{}
	for _, f := range a.cfg.Functions {
		ex, err := executor.Resolve(f.Endpoint, executor.Options{
			Client: client, Registry: a.opts.Registry, MaxResultBytes: a.cfg.Dispatcher.MaxResultBytes,
		})
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", f.Name, err)
		}
		retry := f.Retry
		out[f.Name] = dispatcher.Function{
			Name: f.Name, Executor: ex, Timeout: f.Timeout.Std(),
			MaxAttempts: retry.MaxAttempts, Backoff: retry.Backoff,
			MaxThrottled: retry.Throttled(), DeadLetter: f.DeadLetters(),
			Concurrency: f.Concurrency, Rate: f.Rate, Burst: config.BurstFor(f.Rate, f.Burst),
			Adaptive: f.Adaptive,
		}
	}
	return out, nil
}

// limitedFunctions reports whether a function's running attempts are
// capped (a concurrency or an adaptive limit).
func limitedFunctions(cfg *config.Config) func(string) bool {
	limited := map[string]bool{}
	for _, f := range cfg.Functions {
		limited[f.Name] = f.Concurrency > 0 || f.Adaptive != nil
	}
	return func(function string) bool { return limited[function] }
}

// functionNames are the configured functions' names: the scheduler's
// reservation sweep, the cluster gauges.
func functionNames(cfg *config.Config) []string {
	specs := ledger.FunctionSpecs(cfg.Functions)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}

// quotas are every configured tenant's cap on running attempts (0: none):
// the ledger's, and the scheduler's unpark sweep (a tenant without one is
// swept too, in case it was parked before its quota was removed).
func quotas(cfg *config.Config) map[string]int {
	out := map[string]int{}
	for _, t := range cfg.Tenants {
		out[t.ID] = max(t.Concurrency, 0)
	}
	return out
}

func (a *App) tenantLimits() map[string]dispatcher.TenantLimit {
	out := map[string]dispatcher.TenantLimit{}
	for _, t := range a.cfg.Tenants {
		if t.Rate > 0 || t.Concurrency > 0 {
			out[t.ID] = dispatcher.TenantLimit{Concurrency: t.Concurrency, Rate: t.Rate, Burst: config.BurstFor(t.Rate, t.Burst)}
		}
	}
	return out
}

func (a *App) subscriptions() []notifier.Subscription {
	out := make([]notifier.Subscription, len(a.cfg.Subscriptions))
	for i, s := range a.cfg.Subscriptions {
		out[i] = notifier.Subscription{
			Name: s.Name, Sink: s.Sink,
			Types: s.Filter.Types, Tenants: s.Filter.Tenants, Functions: s.Filter.Functions,
		}
	}
	return out
}
