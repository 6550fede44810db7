// Package tasklane assembles Tasklane's roles into one process and holds
// the command line. cmd/tasklane is a thin main around Main; Go programs
// that register their own handlers (package sdk) call Main with their
// registry.
package tasklane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/sdk"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/dispatcher"
	"github.com/tasklane/tasklane/services/gateway"
	"github.com/tasklane/tasklane/services/notifier"
	"github.com/tasklane/tasklane/services/scheduler"
	"github.com/tasklane/tasklane/triggers"
)

// Role names, as --roles takes them.
const (
	RoleGateway    = "gateway"
	RoleDispatcher = "dispatcher"
	RoleController = "controller"
	RoleScheduler  = "scheduler"
	RoleTriggers   = "triggers"
	RoleNotifier   = "notifier"
)

// AllRoles lists every role.
var AllRoles = []string{RoleGateway, RoleDispatcher, RoleController, RoleScheduler, RoleTriggers, RoleNotifier}

// ParseRoles reads a --roles value; empty means all roles.
func ParseRoles(s string) (map[string]bool, error) {
	roles := map[string]bool{}
	if strings.TrimSpace(s) == "" {
		for _, r := range AllRoles {
			roles[r] = true
		}
		return roles, nil
	}
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		if !slices.Contains(AllRoles, r) {
			return nil, fmt.Errorf("unknown role %q (roles: %s)", r, strings.Join(AllRoles, ","))
		}
		roles[r] = true
	}
	return roles, nil
}

// Options are the process-level choices outside the config file.
type Options struct {
	// Roles to run; nil means all.
	Roles map[string]bool
	// Registry holds the "go:" handlers.
	Registry *sdk.Registry
	// Logger receives every log line. Default slog.Default().
	Logger *slog.Logger
	// StartupTimeout bounds waiting for Redis and the broker. Default 30s.
	StartupTimeout time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ (for profiling; off
	// by default because profiles reveal internals).
	Pprof bool
	// Getenv reads the secrets and credentials triggers name. Default
	// os.Getenv.
	Getenv func(string) string
}

// App is a running Tasklane process.
type App struct {
	cfg       *config.Config
	redisOpts *redis.Options
	opts      Options
	logger    *slog.Logger
	rdb       *redis.Client
	driver    broker.Driver
	ledger    *ledger.Ledger
	metrics   *metrics.Metrics
	table     *routing.Dynamic
	store     *routing.Store
	ctrl      *routing.Controller
	report    *routing.Reporter

	ln     net.Listener
	server *http.Server
	ready  chan struct{}

	disp  *dispatcher.Dispatcher
	notif *notifier.Notifier
	ing   *ingest.Ingester // shared by the gateway and the triggers; nil without them

	trigStore *triggers.Store
	trigSpecs atomic.Pointer[[]config.Trigger] // as of the last (re)load
	trig      *triggerSet                      // nil without the gateway and triggers roles

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	errs   []error
}

// Start connects to Redis and the broker, declares the lanes, and starts
// the roles. It returns once the HTTP server listens and every consumer is
// subscribed; the gateway answers ingest only after the lanes exist.
func Start(ctx context.Context, cfg *config.Config, opts Options) (*App, error) {
	if opts.Roles == nil {
		opts.Roles, _ = ParseRoles("")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StartupTimeout <= 0 {
		opts.StartupTimeout = 30 * time.Second
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	a := &App{cfg: cfg, opts: opts, logger: opts.Logger, metrics: metrics.New(), ready: make(chan struct{})}
	specs := slices.Clone(cfg.Triggers)
	a.trigSpecs.Store(&specs)
	if opts.Roles[RoleGateway] || opts.Roles[RoleTriggers] {
		if err := cfg.CheckTriggerEnv(opts.Getenv); err != nil {
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok {
			if a.ing != nil {
				a.ing.Close()
			}
			a.closeConnections()
		}
	}()
	if err := a.connect(ctx); err != nil {
		return nil, err
	}
	static, err := routing.NewStatic(cfg.Lanes.Shared, cfg.Lanes.ShardSize)
	if err != nil {
		return nil, err
	}
	var urgent []string
	for _, t := range cfg.Tenants {
		if t.LatencySensitive {
			urgent = append(urgent, t.ID)
		}
	}
	a.table = routing.NewDynamic(static, urgent)
	a.store = routing.NewStore(a.rdb, cfg.Ledger.KeyPrefix)
	a.trigStore = triggers.NewStore(a.rdb, cfg.Ledger.KeyPrefix)
	snap, err := a.store.Load(ctx)
	if err != nil {
		return nil, err
	}
	a.table.Update(snap)
	a.ctrl = routing.NewController(routing.ControllerConfig{
		Store: a.store, Table: a.table, Lanes: a.driver, Redis: a.rdb, Prefix: cfg.Ledger.KeyPrefix, Logger: a.logger,
		Window: cfg.Routing.Window.Std(), HotShare: cfg.Routing.HotShare, HotBacklog: cfg.Routing.HotBacklog,
		Cooldown: cfg.Routing.Cooldown.Std(), MaxDedicated: cfg.Routing.MaxDedicated, LaneGrace: cfg.Routing.LaneGrace.Std(),
		OnChange: func(ch routing.Change) { a.metrics.RoutingChanges.WithLabelValues(ch.Action).Inc() },
	})
	if opts.Roles[RoleGateway] {
		a.report = routing.NewReporter(a.rdb, cfg.Ledger.KeyPrefix, cfg.Routing.Window.Std(), cfg.Routing.HotShare/2)
	}

	mux := http.NewServeMux()
	a.registerProbes(mux)
	if err := a.registerAdmin(mux); err != nil {
		return nil, err
	}
	if opts.Roles[RoleGateway] {
		if err := a.startGateway(mux); err != nil {
			return nil, err
		}
	}
	if opts.Roles[RoleGateway] || opts.Roles[RoleTriggers] {
		a.trig = newTriggerSet(triggers.Env{
			Submitter: a.ingester(), Store: a.trigStore, Logger: a.logger,
		}, opts.Roles, opts.Getenv, cfg.Server.MaxEventBytes, a.logger.With("component", "triggers"))
		mux.Handle(config.HookPathPrefix, a.whenReady(a.trig))
	}
	ln, err := net.Listen("tcp", cfg.Server.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Server.Addr, err)
	}
	a.ln = ln
	a.server = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.goRun("http", func() error {
		if err := a.server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if err := a.declareLanes(ctx); err != nil {
		_ = a.Shutdown(context.Background())
		return nil, err
	}
	if err := a.startWorkers(runCtx); err != nil {
		_ = a.Shutdown(context.Background())
		return nil, err
	}
	if a.trig != nil {
		// After the lanes are declared: triggers submit at once.
		if err := a.trig.apply(runCtx, cfg.Triggers); err != nil {
			_ = a.Shutdown(context.Background())
			return nil, err
		}
	}
	close(a.ready)
	ok = true
	a.logger.Info("tasklane started", "addr", a.Addr(), "roles", roleList(opts.Roles), "broker", a.driver.Name(), "lanes", len(a.table.Lanes()))
	return a, nil
}

func roleList(m map[string]bool) string {
	var out []string
	for _, r := range AllRoles {
		if m[r] {
			out = append(out, r)
		}
	}
	return strings.Join(out, ",")
}

func (a *App) connect(ctx context.Context) error {
	opt, err := redis.ParseURL(a.cfg.Redis.URL)
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	opt.PoolSize = max(opt.PoolSize, 128)
	a.redisOpts = opt
	a.rdb = redis.NewClient(opt)
	if err := retryUntil(ctx, a.opts.StartupTimeout, func() error { return a.rdb.Ping(ctx).Err() }); err != nil {
		return fmt.Errorf("connecting to Redis at %s: %w", opt.Addr, err)
	}
	a.ledger = ledger.New(ledger.Config{
		Redis:         a.rdb,
		Retention:     a.cfg.Ledger.Retention.Std(),
		DedupWindow:   a.cfg.Ledger.DedupWindow.Std(),
		DeadRetention: a.cfg.Ledger.DeadRetention.Std(),
		PublishGuard:  a.cfg.Ledger.PublishGuard.Std(),
		Prefix:        a.cfg.Ledger.KeyPrefix,
	})
	if err := a.ledger.LoadScripts(ctx); err != nil {
		return err
	}
	a.driver, err = broker.New(broker.Config{
		Driver:          a.cfg.Broker.Driver,
		AMQPURL:         a.cfg.Broker.URL,
		Redis:           a.redisOpts,
		PublishChannels: a.cfg.Broker.PublishChannels,
		QueueType:       a.cfg.Lanes.QueueType,
		ConsumerGroup:   a.cfg.Ledger.KeyPrefix + "-dispatchers",
		Logger:          a.logger,
	})
	if err != nil {
		return err
	}
	return nil
}

// declareLanes makes every lane exist before anything is routed to it.
func (a *App) declareLanes(ctx context.Context) error {
	err := retryUntil(ctx, a.opts.StartupTimeout, func() error {
		return a.driver.DeclareLanes(ctx, a.table.Lanes()...)
	})
	if err != nil {
		return fmt.Errorf("declaring lanes: %w", err)
	}
	return nil
}

func retryUntil(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	wait := 100 * time.Millisecond
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// ingester is the process's one Ingester, made on first use.
func (a *App) ingester() *ingest.Ingester {
	if a.ing != nil {
		return a.ing
	}
	cfg := a.cfg
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
		Metrics: a.metrics,
		Logger:  a.logger.With("component", "ingest"),
		Observe: a.observe,
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

func (a *App) startGateway(mux *http.ServeMux) error {
	kr, err := a.keyring()
	if err != nil {
		return err
	}
	if kr.IsOpen() {
		a.logger.Warn("no tenants configured: the API accepts requests without a key, as tenant \"default\" (dev only)")
	}
	gw := gateway.New(gateway.Config{
		Keyring:  kr,
		Ingester: a.ingester(),
		Ledger:   a.ledger,
		Metrics:  a.metrics,
		Logger:   a.logger.With("component", "gateway"),
		Limits: gateway.Limits{
			MaxEventBytes:  a.cfg.Server.MaxEventBytes,
			MaxBatchBytes:  a.cfg.Server.MaxBatchBytes,
			MaxBatchEvents: a.cfg.Server.MaxBatchEvents,
		},
	})
	// Ingest waits for the lanes: a publish to a missing queue is lost.
	inner := http.NewServeMux()
	gw.Register(inner)
	inner.HandleFunc("GET /v1/triggers", a.handleListTriggers(kr))
	mux.Handle("/v1/", a.whenReady(inner))
	return nil
}

// whenReady answers 503 until the lanes are declared and the roles run.
func (a *App) whenReady(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-a.ready:
			h.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			gateway.WriteError(w, http.StatusServiceUnavailable, "starting: lanes are not declared yet")
		}
	})
}

func (a *App) observe(tenant string, tasks int) {
	if a.report != nil {
		a.report.Observe(tenant, tasks)
	}
}

// watchEvery is how often every process reloads the routing table and the
// lane backlogs.
const watchEvery = 500 * time.Millisecond

// watchRouting keeps the routing table and lane backlogs fresh and the
// dispatcher's consumers matching the table.
func (a *App) watchRouting(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if snap, err := a.store.Load(ctx); err == nil {
			a.table.Update(snap)
		}
		lanes := a.table.Lanes()
		if depths, err := a.driver.Depths(ctx, lanes...); err == nil {
			backlog := make(map[string]int64, len(depths))
			for lane, d := range depths {
				backlog[lane] = d.Backlog
			}
			a.table.SetDepths(backlog)
		}
		if a.disp != nil {
			a.disp.SetLanes(ctx, lanes, a.cfg.Routing.LaneGrace.Std()/2)
		}
	}
}

func (a *App) startWorkers(ctx context.Context) error {
	if a.opts.Roles[RoleDispatcher] {
		fns, err := a.functions()
		if err != nil {
			return err
		}
		a.disp, err = dispatcher.New(dispatcher.Config{
			Broker:           a.driver,
			Lanes:            a.table.Lanes(),
			ConsumersPerLane: a.cfg.Dispatcher.ConsumersPerLane,
			Ledger:           a.ledger,
			Functions:        fns,
			Tenants:          a.tenantLimits(),
			Metrics:          a.metrics,
			Logger:           a.logger,
			LeaseTTL:         a.cfg.Dispatcher.LeaseTTL.Std(),
			DrainTimeout:     a.cfg.Dispatcher.DrainTimeout.Std(),
		})
		if err != nil {
			return err
		}
		a.goRun("dispatcher", func() error { return a.disp.Run(ctx) })
		if err := waitRunning(ctx, a.disp.Running(), a.opts.StartupTimeout, "dispatcher"); err != nil {
			return err
		}
	}
	a.goRun("routing", func() error { a.watchRouting(ctx); return nil })
	if a.report != nil {
		a.goRun("heavy-hitters", func() error { a.report.Run(ctx); return nil })
	}
	if a.opts.Roles[RoleController] {
		a.goRun("controller", func() error { a.ctrl.Run(ctx); return nil })
	}
	if a.opts.Roles[RoleScheduler] {
		s := scheduler.New(scheduler.Config{
			Ledger: a.ledger, Publisher: a.driver.Publisher(), Router: a.table,
			Metrics: a.metrics, Logger: a.logger, Guard: a.cfg.Ledger.PublishGuard.Std(),
		})
		a.goRun("scheduler", func() error { return s.Run(ctx) })
		a.goRun("janitor", func() error { a.janitor(ctx); return nil })
	}
	if a.opts.Roles[RoleNotifier] {
		var err error
		a.notif, err = notifier.New(notifier.Config{
			Ledger:          a.ledger,
			Redis:           a.redisOpts,
			ResultPublisher: a.driver.ResultPublisher(),
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
		if err := waitRunning(ctx, a.notif.Running(), a.opts.StartupTimeout, "notifier"); err != nil {
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
		}
	}
	return out, nil
}

// janitorEvery is how often acknowledged stream entries are trimmed.
const janitorEvery = 30 * time.Second

// janitor trims Redis streams of entries every consumer group is done with:
// the redisstream lanes and the results outbox. (Lanes are never trimmed by
// length: that would delete work nobody has done.)
func (a *App) janitor(ctx context.Context) {
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.driver.Trim(ctx, a.table.Lanes()...); err != nil {
			a.logger.Warn("trimming lanes", "error", err)
		}
		if _, err := broker.TrimAcked(ctx, a.rdb, a.ledger.OutboxStream()); err != nil {
			a.logger.Warn("trimming the results outbox", "error", err)
		}
	}
}

func (a *App) tenantLimits() map[string]dispatcher.TenantLimit {
	out := map[string]dispatcher.TenantLimit{}
	for _, t := range a.cfg.Tenants {
		if t.Rate > 0 {
			out[t.ID] = dispatcher.TenantLimit{Rate: t.Rate, Burst: config.BurstFor(t.Rate, t.Burst)}
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

func (a *App) goRun(name string, f func() error) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := f(); err != nil {
			a.logger.Error("role stopped with an error", "role", name, "error", err)
			a.errMu.Lock()
			a.errs = append(a.errs, fmt.Errorf("%s: %w", name, err))
			a.errMu.Unlock()
		}
	}()
}

// Addr is the address the HTTP server listens on.
func (a *App) Addr() string { return a.ln.Addr().String() }

// URL is the base URL of the HTTP server.
func (a *App) URL() string {
	host, port, _ := net.SplitHostPort(a.Addr())
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Ledger returns the process's ledger (tests and tools).
func (a *App) Ledger() *ledger.Ledger { return a.ledger }

// Shutdown stops taking work, drains running attempts, and closes
// connections. Safe to call once.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	if a.server != nil {
		errs = append(errs, a.server.Shutdown(ctx))
	}
	if a.trig != nil {
		errs = append(errs, a.trig.stop())
	}
	if a.ing != nil {
		a.ing.Close() // after the last Submit: the server and the triggers stopped
	}
	if a.disp != nil {
		errs = append(errs, a.disp.Stop())
	}
	if a.notif != nil {
		errs = append(errs, a.notif.Close())
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	a.closeConnections()
	a.errMu.Lock()
	errs = append(errs, a.errs...)
	a.errMu.Unlock()
	return errors.Join(errs...)
}

func (a *App) closeConnections() {
	if a.driver != nil {
		_ = a.driver.Close()
	}
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
}
