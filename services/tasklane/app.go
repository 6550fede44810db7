// Package tasklane assembles Tasklane's roles into one process: app.go
// starts and stops the process (listening first, connecting in the
// background: startup.go), roles.go builds each role from the config. The
// command line is package cli (cmd/tasklane is a thin main around cli.Main;
// Go programs that register their own handlers, package sdk, call cli.Main
// with their registry).
package tasklane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/redisconn"
	"github.com/tasklane/tasklane/pkg/sdk"
	"github.com/tasklane/tasklane/pkg/telemetry"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/dispatcher"
	"github.com/tasklane/tasklane/services/gateway"
	"github.com/tasklane/tasklane/services/notifier"
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
	// StartupTimeout bounds waiting for the dispatcher's and notifier's
	// consumers to run once Redis and the broker answer (waiting for those
	// is unbounded: Launch retries until Shutdown). Default 30s.
	StartupTimeout time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ (for profiling; off
	// by default because profiles reveal internals).
	Pprof bool
	// Getenv reads the secrets and credentials triggers name, and the
	// standard OTEL_* variables. Default os.Getenv.
	Getenv func(string) string
	// TraceStdout, when set, receives every span as JSON (tasklane dev
	// --trace-stdout), whether or not an OTLP endpoint is configured.
	TraceStdout io.Writer
}

// App is a running Tasklane process.
type App struct {
	cfg *config.Config
	// redisOpts are the options of the one Redis, clusterOpts those of
	// the Redis Cluster (redis.cluster): one of the two is set.
	redisOpts   *redis.Options
	clusterOpts *redis.ClusterOptions
	opts        Options
	logger      *slog.Logger
	rdb         redis.UniversalClient // made by Launch; it connects on first use
	ledger      *ledger.Ledger
	metrics     *metrics.Metrics
	table       *routing.Dynamic
	store       *routing.Store
	report      *routing.Reporter
	admit       *admission.Admitter            // backpressure at ingest; nil without limits or an ingester
	keys        *auth.Keyring                  // the gateway's; nil without the gateway role
	adminKeys   *auth.Keyring                  // the operator API's; nil when it is off
	fns         map[string]dispatcher.Function // nil without the dispatcher role

	tracing *telemetry.Provider // flushed last at shutdown

	ln            net.Listener
	server        *http.Server
	metricsLn     net.Listener // server.metrics_addr; nil when not set
	metricsServer *http.Server

	// ready is closed once Redis and the broker answer, the lanes are
	// declared and the roles run. failed is closed (with startErr set) when
	// the start-up gave up on an error no retry fixes; startDone when the
	// start-up goroutine has returned. status says what the start-up waits
	// for, for /readyz.
	ready       chan struct{}
	failed      chan struct{}
	startErr    error
	startDone   chan struct{}
	startCancel context.CancelFunc
	status      startStatus

	// Set by the start-up goroutine before ready is closed: read them only
	// after ready is closed (or from what that goroutine starts), or after
	// startDone is closed.
	driver broker.Driver
	ctrl   *routing.Controller
	api    http.Handler // the gateway's /v1 routes
	admin  http.Handler // the operator API's routes
	disp   *dispatcher.Dispatcher
	notif  *notifier.Notifier
	ing    *ingest.Ingester // shared by the gateway and the triggers; nil without them

	// adminAPI, trigAPI and ui: the operator API, the trigger list and the
	// dashboard (services/ui), which shows what the first two answer.
	adminAPI *gateway.Admin
	trigAPI  *gateway.Triggers
	ui       http.Handler

	trigStore *triggers.Store
	trigSpecs atomic.Pointer[[]config.Trigger] // as of the last (re)load
	// trigMu orders the start-up's first apply of the triggers against
	// reloads; trig is nil without the gateway and triggers roles, and
	// until the start-up has made it.
	trigMu sync.Mutex
	trig   *triggerSet

	cancel   context.CancelFunc
	stopOnce sync.Once
	stopErr  error
	wg       sync.WaitGroup
	errMu    sync.Mutex
	errs     []error
}

// abortWait bounds how long Start waits for the start-up to stop when it
// gives up. A variable so that a test of that bound need not wait 5s.
var abortWait = 5 * time.Second

// Start is [Launch], then waits until the app is ready: it returns once
// Redis and the broker answer, the lanes are declared and every role runs.
// It waits as long as ctx allows (the start-up retries what a retry can
// fix); when ctx ends first, or the start-up fails, the app is shut down and
// the error returned.
func Start(ctx context.Context, cfg *config.Config, opts Options) (*App, error) {
	a, err := Launch(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := a.WaitReady(ctx); err != nil {
		// Bounded: an AMQP dial heeds no cancellation (Shutdown leaves it).
		sctx, cancel := context.WithTimeout(context.Background(), abortWait)
		defer cancel()
		_ = a.Shutdown(sctx)
		return nil, err
	}
	return a, nil
}

// Launch checks what the config alone decides (an error there ends it),
// listens on server.addr (and server.metrics_addr), and returns: /healthz
// and /readyz answer from then on. Connecting to Redis and the broker,
// declaring the lanes and starting the roles go on in the background, each
// connection retried with backoff (one log line per retry naming the
// service, its URL without password, and the cause) until it works or the
// app is shut down; /readyz says what is missing meanwhile, and the /v1 and
// /hooks routes answer 503. Ready is closed when the app is ready; Failed
// when the start-up gave up on an error no retry fixes.
func Launch(ctx context.Context, cfg *config.Config, opts Options) (*App, error) {
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
	a := &App{
		cfg: cfg, opts: opts, logger: opts.Logger, metrics: metrics.New(),
		ready: make(chan struct{}), failed: make(chan struct{}), startDone: make(chan struct{}),
	}
	specs := slices.Clone(cfg.Triggers)
	a.trigSpecs.Store(&specs)
	if err := a.configure(); err != nil {
		if a.rdb != nil {
			_ = a.rdb.Close()
		}
		return nil, err
	}
	tracing, err := telemetry.Setup(ctx, a.telemetryConfig())
	if err != nil {
		_ = a.rdb.Close()
		return nil, fmt.Errorf("setting up tracing (telemetry): %w", err)
	}
	a.tracing = tracing
	launched := false
	defer func() {
		if !launched {
			_ = tracing.Shutdown(context.Background())
		}
	}()
	mux := http.NewServeMux()
	if err := a.registerProbes(mux); err != nil {
		_ = a.rdb.Close()
		return nil, err
	}
	if err := a.registerAdmin(mux); err != nil {
		_ = a.rdb.Close()
		return nil, err
	}
	if opts.Roles[RoleGateway] {
		registerOpenAPI(mux)
		a.registerUI(mux)
		// Ingest waits for the lanes: a publish to a missing queue is lost.
		mux.Handle("/v1/", telemetry.Handler(a.whenReady(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.api.ServeHTTP(w, r)
		}))))
	}
	if opts.Roles[RoleGateway] || opts.Roles[RoleTriggers] {
		mux.Handle(config.HookPathPrefix, telemetry.Handler(a.whenReady(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.trig.ServeHTTP(w, r)
		}))))
	}
	if err := a.listen(mux); err != nil {
		_ = a.rdb.Close()
		return nil, err
	}

	launched = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	startCtx, startCancel := context.WithCancel(runCtx)
	a.startCancel = startCancel
	a.serve()
	a.logger.Info("listening", "addr", a.Addr(), "metrics_addr", a.metricsAddr(), "roles", roleList(opts.Roles))
	go func() {
		defer close(a.startDone)
		if err := a.startUp(startCtx, runCtx); err != nil && startCtx.Err() == nil {
			a.logger.Error("start-up failed", "error", err)
			a.startErr = err
			close(a.failed)
		}
	}()
	return a, nil
}

// redisClient makes the client of the ledger's Redis: of a Redis Cluster
// (redis.cluster, redis.url in go-redis's cluster form) or of one Redis.
// Either pool holds at least 128 connections (per node on a cluster):
// the batcher's pipelines, blocking reads and the roles' loops share it.
func (a *App) redisClient() error {
	const minPool = 128
	if a.cfg.Redis.Cluster {
		opt, err := redis.ParseClusterURL(a.cfg.Redis.URL)
		if err != nil {
			return fmt.Errorf("redis.url: %w", urlError(err))
		}
		opt.PoolSize = max(opt.PoolSize, minPool)
		opt.ClusterStateReloadInterval = redisconn.ClusterStateReload
		a.clusterOpts = opt
		a.rdb = redis.NewClusterClient(opt)
		return nil
	}
	opt, err := redis.ParseURL(a.cfg.Redis.URL)
	if err != nil {
		return fmt.Errorf("redis.url: %w", urlError(err))
	}
	opt.PoolSize = max(opt.PoolSize, minPool)
	a.redisOpts = opt
	a.rdb = redis.NewClient(opt)
	return nil
}

// configure makes what needs no connection: the Redis client (it connects
// on first use), the ledger, routing table and stores, the keyrings and the
// functions' executors. Its errors are config errors.
func (a *App) configure() error {
	cfg, opts := a.cfg, a.opts
	if opts.Roles[RoleGateway] || opts.Roles[RoleTriggers] {
		if err := cfg.CheckTriggerEnv(opts.Getenv); err != nil {
			return err
		}
	}
	if d := cfg.Broker.Driver; d != "" && d != broker.DriverAMQP && d != broker.DriverRedisStream {
		return fmt.Errorf("broker.driver: unknown driver %q (want %s or %s)", d, broker.DriverAMQP, broker.DriverRedisStream)
	}
	if err := a.redisClient(); err != nil {
		return err
	}
	if cfg.Broker.Driver != broker.DriverRedisStream {
		// Checked here, not by a connection attempt: no retry fixes it.
		urls := config.SplitURLs(cfg.Broker.URL)
		for i, u := range urls {
			if _, err := amqp.ParseURI(u); err != nil {
				if len(urls) == 1 {
					return fmt.Errorf("broker.url: %w", urlError(err))
				}
				return fmt.Errorf("broker.url: URL %d of %d (%s): %w", i+1, len(urls), config.RedactURL(u), urlError(err))
			}
		}
	}
	tenantQuota := quotas(cfg)
	a.ledger = ledger.New(ledger.Config{
		Redis:         a.rdb,
		Retention:     cfg.Ledger.Retention.Std(),
		DedupWindow:   cfg.Ledger.DedupWindow.Std(),
		DeadRetention: cfg.Ledger.DeadRetention.Std(),
		PublishGuard:  cfg.Ledger.PublishGuard.Std(),
		Prefix:        cfg.Ledger.KeyPrefix,
		Partitions:    cfg.LedgerPartitions(),
		TenantQuota:   func(tenant string) int { return tenantQuota[tenant] },
		Limited:       limitedFunctions(cfg),
		WaitReplicas:  cfg.Redis.WaitReplicas,
	})
	static, err := routing.NewStaticNamed(routing.NamesFor(cfg.Broker.Prefix), cfg.Lanes.Shared, cfg.Lanes.ShardSize)
	if err != nil {
		return err
	}
	var urgent []string
	for _, t := range cfg.Tenants {
		if t.LatencySensitive {
			urgent = append(urgent, t.ID)
		}
	}
	a.table = routing.NewDynamic(static, urgent)
	a.store = routing.NewStoreAt(a.rdb, a.ledger.RoutingKey())
	a.trigStore = triggers.NewStore(a.rdb, cfg.Ledger.KeyPrefix)
	// Dispatchers ingest too: a function's reply event is chained through
	// the same limits.
	if (opts.Roles[RoleGateway] || opts.Roles[RoleTriggers] || opts.Roles[RoleDispatcher]) && a.admissionLimits().Enabled() {
		a.admit = admission.New(admission.Config{
			Backlogs: a.ledger, Tenants: cfg.TenantIDs(), Limits: a.admissionLimits(),
			Shares: a.submissionShares, Metrics: a.metrics, Logger: a.logger.With("component", "admission"),
		})
	}
	if opts.Roles[RoleGateway] {
		a.report = routing.NewReporter(a.rdb, cfg.Ledger.KeyPrefix, cfg.Routing.Window.Std(), cfg.Routing.HotShare/2)
		if a.keys, err = a.keyring(); err != nil {
			return err
		}
		if a.keys.IsOpen() {
			a.logger.Warn("no tenants configured: the API accepts requests without a key, as tenant \"default\" (dev only)")
		}
	}
	if opts.Roles[RoleDispatcher] {
		if a.fns, err = a.functions(); err != nil {
			return err
		}
	}
	return nil
}

// listen opens server.addr (and server.metrics_addr).
func (a *App) listen(mux *http.ServeMux) error {
	s := a.cfg.Server
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s (server.addr): %w", s.Addr, err)
	}
	a.ln = ln
	a.server = a.httpServer(mux)
	if s.MetricsAddr != "" {
		if a.metricsLn, err = net.Listen("tcp", s.MetricsAddr); err != nil {
			_ = ln.Close()
			return fmt.Errorf("listening on %s (server.metrics_addr): %w", s.MetricsAddr, err)
		}
		m := http.NewServeMux()
		a.registerInternal(m)
		a.metricsServer = a.httpServer(m)
	}
	return nil
}

// httpServer bounds every phase of a connection: reading the headers and
// the body, writing the response (server.write_timeout: no route streams or
// long-polls, so none needs a deadline of its own) and idling between
// requests; and the size of the headers (server.max_header_bytes, 431
// above it), which become AMQP headers and must fit in a broker frame.
func (a *App) httpServer(h http.Handler) *http.Server {
	s := a.cfg.Server
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      cmp.Or(s.WriteTimeout.Std(), config.WriteTimeoutDefault.Std()),
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    cmp.Or(s.MaxHeaderBytes, config.MaxHeaderBytesDefault),
		ErrorLog:          slog.NewLogLogger(a.logger.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// serve runs the HTTP servers until Shutdown.
func (a *App) serve() {
	for _, s := range []struct {
		name string
		srv  *http.Server
		ln   net.Listener
	}{{"http", a.server, a.ln}, {"metrics-http", a.metricsServer, a.metricsLn}} {
		if s.srv == nil {
			continue
		}
		a.goRun(s.name, func() error {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
}

// startUp connects (retrying until it works or ctx ends), declares the lanes
// and starts the roles with runCtx, then closes ready. Its error is one no
// retry fixes.
func (a *App) startUp(ctx, runCtx context.Context) error {
	if err := a.connect(ctx); err != nil {
		return err
	}
	a.ctrl = routing.NewController(routing.ControllerConfig{
		Store: a.store, Table: a.table, Lanes: a.driver, Redis: a.rdb, Prefix: a.cfg.Ledger.KeyPrefix, Logger: a.logger,
		Window: a.cfg.Routing.Window.Std(), HotShare: a.cfg.Routing.HotShare, HotBacklog: a.cfg.Routing.HotBacklog,
		Cooldown: a.cfg.Routing.Cooldown.Std(), MaxDedicated: a.cfg.Routing.MaxDedicated, LaneGrace: a.cfg.Routing.LaneGrace.Std(),
		OnChange: func(ch routing.Change) { a.metrics.RoutingChanges.WithLabelValues(ch.Action).Inc() },
	})
	a.startAdmin()
	if a.opts.Roles[RoleGateway] {
		a.startGateway(runCtx)
	}
	a.status.set(statusReady, "starting")
	if err := a.startWorkers(ctx, runCtx); err != nil {
		return err
	}
	if a.opts.Roles[RoleGateway] || a.opts.Roles[RoleTriggers] {
		// After the lanes are declared: triggers submit at once.
		a.trigMu.Lock()
		a.trig = newTriggerSet(triggers.Env{
			Submitter: a.ingester(), Store: a.trigStore, Logger: a.logger,
		}, a.opts.Roles, a.opts.Getenv, a.cfg.Server.MaxEventBytes, a.logger.With("component", "triggers"))
		err := a.trig.apply(runCtx, *a.trigSpecs.Load())
		a.trigMu.Unlock()
		if err != nil {
			return err
		}
	}
	a.status.set(statusReady, "ok")
	close(a.ready)
	a.logger.Info("tasklane started", "addr", a.Addr(), "roles", roleList(a.opts.Roles), "broker", a.driver.Name(), "lanes", len(a.table.Lanes()))
	return nil
}

// Ready is closed once the app is ready: Redis and the broker answered, the
// lanes are declared and every role runs.
func (a *App) Ready() <-chan struct{} { return a.ready }

// Failed is closed when the start-up gave up on an error no retry fixes
// (returned by WaitReady); the app stays up, not ready, until Shutdown.
func (a *App) Failed() <-chan struct{} { return a.failed }

// WaitReady waits until the app is ready (nil), the start-up failed (its
// error) or ctx ends.
func (a *App) WaitReady(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-a.failed:
		return a.startErr
	case <-ctx.Done():
		return fmt.Errorf("waiting for the app to be ready (%s): %w", a.status.summary(), ctx.Err())
	}
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
// connections; while the app is still starting, it stops the start-up
// first. When ctx ends before the start-up stops (an AMQP dial heeds no
// cancellation: at most its connection timeout), it stops serving and
// returns, and the rest is stopped and closed once the start-up returns.
func (a *App) Shutdown(ctx context.Context) error {
	a.startCancel()
	select {
	case <-a.startDone:
	case <-ctx.Done():
		for _, srv := range []*http.Server{a.server, a.metricsServer} {
			if srv != nil {
				_ = srv.Close()
			}
		}
		a.cancel()
		go func() {
			<-a.startDone
			_ = a.stop(context.Background())
		}()
		return fmt.Errorf("stopping the start-up: %w", ctx.Err())
	}
	return a.stop(ctx)
}

// stop is Shutdown once the start-up has returned; it runs once, and a
// second call returns the first one's error.
func (a *App) stop(ctx context.Context) error {
	a.stopOnce.Do(func() { a.stopErr = a.shutdown(ctx) })
	return a.stopErr
}

func (a *App) shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*http.Server{a.server, a.metricsServer} {
		if srv != nil {
			errs = append(errs, srv.Shutdown(ctx))
		}
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
	// Last: the spans of the drained attempts and results are flushed.
	errs = append(errs, a.tracing.Shutdown(ctx))
	a.errMu.Lock()
	errs = append(errs, a.errs...)
	a.errMu.Unlock()
	return errors.Join(errs...)
}

// telemetryConfig is the tracing the config and the process options ask
// for.
func (a *App) telemetryConfig() telemetry.Config {
	t := a.cfg.Telemetry
	return telemetry.Config{
		Enabled: t.Enabled, Endpoint: t.Endpoint, Protocol: t.Protocol, SampleRatio: t.SampleRatio,
		ServiceName: t.ServiceName, Stdout: a.opts.TraceStdout, Getenv: a.opts.Getenv,
	}
}

func (a *App) closeConnections() {
	if a.driver != nil {
		_ = a.driver.Close()
	}
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
}
