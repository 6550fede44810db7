// Package dispatcher consumes the lanes with a Watermill router and runs
// each task's attempts through its function's executor.
//
// A lane delivery is admitted into its function's ready queue in the
// ledger and acknowledged (the router's admission chain: Decode, Poison,
// Dedup, Throttle, after the consumer's own middlewares). A starter per
// function takes ready tasks by capacity: as many as the process has free
// workers (MaxRunning) and the function has room under its limits
// (ledger.Take), and runs each attempt through the attempt chain
// (RetryClassify, Reply, Run) under a renewed lease. Nothing waits
// inside a consumer: retries go to the ledger's delay set, and the
// scheduler puts them back in the ready queue when due.
package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/tasktoken"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// Function is what the dispatcher needs to know of one function.
type Function = middleware.Function

// TenantLimit is a tenant's quota and rate limit (zero: none).
type TenantLimit struct {
	Concurrency int
	Rate        float64
	Burst       int
}

// Config configures a Dispatcher.
type Config struct {
	Broker broker.Driver
	Lanes  []string
	// Quarantine is where undecodable lane messages go
	// (broker.QuarantineTopicFor the broker prefix). Default
	// broker.QuarantineTopic.
	Quarantine string
	// ConsumersPerLane is the number of router handlers per lane: how many
	// of the lane's deliveries are admitted at once. Each is one
	// Subscribe call, which costs no broker consumer or channel (the
	// broker package's contract). Default config.ConsumersPerLaneDefault.
	ConsumersPerLane int
	Ledger           *ledger.Ledger
	Functions        map[string]Function
	Tenants          map[string]TenantLimit
	Metrics          *metrics.Metrics
	Logger           *slog.Logger
	// LeaseTTL is how long a running attempt's lease lasts without renewal;
	// it is renewed every LeaseTTL/3. A dispatcher that dies is taken over
	// after at most LeaseTTL. Default config.LeaseTTLDefault.
	LeaseTTL time.Duration
	// DrainTimeout bounds how long Stop waits for running attempts.
	// Default config.DrainTimeoutDefault.
	DrainTimeout time.Duration
	// Owner names this dispatcher in leases. Default host-pid-random.
	Owner string
	// ErrorBackoff is how long a consumer waits before nacking when the
	// ledger or broker failed, or the chain panicked. Default
	// ErrorBackoffDefault.
	ErrorBackoff time.Duration
	// MaxRunning bounds the attempts this process runs at once. Default
	// config.MaxRunningDefault.
	MaxRunning int
	// ReservedHigh is the share of a limited function's slots only the
	// high band may use.
	ReservedHigh float64
	// Chainer submits functions' reply events (task chaining): the
	// process's in-process ingest path. Nil leaves replies unchained.
	Chainer middleware.Chainer
}

// ErrorBackoffDefault is the default Config.ErrorBackoff. It is not a
// configuration key: an outage is what it waits out, not a tuning knob.
const ErrorBackoffDefault = time.Second

// Dispatcher runs the lane consumers.
type Dispatcher struct {
	cfg    Config
	router *message.Router
	// chain is the lane (admission) chain; attemptChain the attempt
	// chain, applied to attempt.
	chain        []middleware.Named
	attemptChain []middleware.Named
	attempt      message.HandlerFunc
	leases       *leaseKeeper
	tokens       *tasktoken.Keys
	started      chan struct{}
	done         chan struct{}
	runErr       error
	// runCtx is Run's context: dynamic handlers live as long as it.
	runCtx   context.Context
	stopOnce sync.Once

	// mu guards the consumer handlers of each lane, and when each lane
	// dropped out of the wanted set.
	mu       sync.Mutex
	lanes    map[string][]*message.Handler
	unwanted map[string]time.Time
	stopping bool
	// stopCalled is set when Stop begins (read by the router's logger).
	stopCalled *atomic.Bool

	starters     map[string]*starter
	startersWG   sync.WaitGroup
	startersCtx  context.Context
	stopStarters context.CancelFunc
	// workers holds a token per running attempt (MaxRunning of them).
	workers chan struct{}
	// freed fires when workers are released.
	freed broadcast
	// fastMu is held (read) while a lane delivery starts a task at once
	// (admit); Stop takes it to end those starts (fastClosed) before it
	// waits for the running attempts.
	fastMu     sync.RWMutex
	fastClosed bool
	// running counts the attempts in progress; attemptsCtx is theirs,
	// cancelled when a drain times out.
	running        sync.WaitGroup
	attemptsCtx    context.Context
	cancelAttempts context.CancelFunc
}

// New builds the router; Run starts it.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "dispatcher")
	// Defaults are the configuration file's, so a Config built in Go and
	// one read from a file agree.
	if cfg.ConsumersPerLane <= 0 {
		cfg.ConsumersPerLane = config.ConsumersPerLaneDefault
	}
	if cfg.Quarantine == "" {
		cfg.Quarantine = broker.QuarantineTopic
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = config.LeaseTTLDefault.Std()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = config.DrainTimeoutDefault.Std()
	}
	if cfg.ErrorBackoff <= 0 {
		cfg.ErrorBackoff = ErrorBackoffDefault
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = config.MaxRunningDefault
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), watermill.NewShortUUID())
	}
	stopCalled := &atomic.Bool{}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.DrainTimeout},
		routerLogger{broker.WatermillLogger(cfg.Logger), stopCalled})
	if err != nil {
		return nil, fmt.Errorf("creating router: %w", err)
	}
	d := &Dispatcher{
		cfg:      cfg,
		router:   router,
		leases:   newLeaseKeeper(cfg.Ledger, cfg.LeaseTTL, cfg.Metrics, cfg.Logger),
		tokens:   tasktoken.NewKeys(cfg.Ledger.TokenSecret),
		started:  make(chan struct{}),
		workers:  make(chan struct{}, cfg.MaxRunning),
		done:     make(chan struct{}),
		lanes:    map[string][]*message.Handler{},
		unwanted: map[string]time.Time{},
	}
	d.stopCalled = stopCalled
	// Router-level middleware is configured before Run (Watermill reads the
	// list without a lock when handlers start).
	d.newStarters()
	d.chain = d.laneMiddlewares()
	for _, m := range d.chain {
		router.AddMiddleware(m.Middleware)
	}
	d.attemptChain = d.attemptMiddlewares()
	d.attempt = middleware.Chain(func(*message.Message) ([]*message.Message, error) { return nil, nil }, d.attemptChain...)
	for _, lane := range cfg.Lanes {
		d.addLane(lane)
	}
	return d, nil
}

// laneMiddlewares is the router's (admission) middleware chain, outermost
// first (the middleware package's doc says why this order).
func (d *Dispatcher) laneMiddlewares() []middleware.Named {
	cfg := d.cfg
	return []middleware.Named{
		{Name: "ErrorBackoff", Middleware: middleware.ErrorBackoff(cfg.ErrorBackoff, cfg.Logger)},
		{Name: "Recover", Middleware: middleware.Recover(cfg.Logger)},
		{Name: "Detach", Middleware: middleware.Detach()},
		{Name: "Decode", Middleware: middleware.Decode()},
		{Name: "Poison", Middleware: middleware.Poison(cfg.Broker.Publisher(), cfg.Quarantine, cfg.Metrics, cfg.Logger)},
		{Name: "Dedup", Middleware: middleware.DedupWith(cfg.Ledger, d.admit, d.configured, cfg.Metrics, cfg.Logger)},
		{Name: "Throttle", Middleware: middleware.Throttle(d.wake, cfg.Metrics)},
	}
}

// attemptMiddlewares is the chain each started attempt runs through,
// outermost first.
func (d *Dispatcher) attemptMiddlewares() []middleware.Named {
	cfg := d.cfg
	return []middleware.Named{
		{Name: "RetryClassify", Middleware: middleware.RetryClassify(cfg.Ledger, cfg.Metrics, cfg.Logger)},
		{Name: "Reply", Middleware: middleware.Reply(cfg.Chainer, cfg.Logger)},
		{Name: "Run", Middleware: middleware.Run(d.leases, cfg.Owner, d.tokens, cfg.Metrics, cfg.Logger)},
	}
}

// addLane registers the lane's consumer handlers (started by Run, or by
// RunHandlers on a running router). Callers hold mu or own d exclusively.
func (d *Dispatcher) addLane(lane string) {
	sub := d.cfg.Broker.Subscriber()
	for i := range d.cfg.ConsumersPerLane {
		h := d.router.AddConsumerHandler(fmt.Sprintf("%s#%d", lane, i), lane, sub, d.handle)
		d.lanes[lane] = append(d.lanes[lane], h)
	}
}

// SetLanes makes the dispatcher consume exactly lanes (the routing
// table's, as it changes): a new dedicated lane gets its consumers at once;
// a lane no longer wanted keeps them for grace, and until it is empty, so
// tasks published to it just before a routing change still run. Shared
// lanes are never dropped, so the router always has handlers (Watermill
// closes a router whose last handler stops).
func (d *Dispatcher) SetLanes(ctx context.Context, lanes []string, grace time.Duration) {
	select {
	case <-d.started:
	default:
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return
	}
	want := map[string]bool{}
	added := false
	for _, lane := range lanes {
		want[lane] = true
		delete(d.unwanted, lane)
		if _, ok := d.lanes[lane]; !ok {
			d.cfg.Logger.Info("consuming a new lane", "lane", lane)
			d.addLane(lane)
			added = true
		}
	}
	if added {
		// Watermill starts the handlers added since the last call.
		if err := d.router.RunHandlers(d.runCtx); err != nil {
			d.cfg.Logger.Warn("starting lane consumers; will retry", "error", err)
		}
	}
	for lane, hs := range d.lanes {
		if want[lane] {
			continue
		}
		since, ok := d.unwanted[lane]
		if !ok {
			d.unwanted[lane] = time.Now()
			continue
		}
		if time.Since(since) < grace {
			continue
		}
		depths, err := d.cfg.Broker.Depths(ctx, lane)
		if err != nil || depths[lane].Backlog > 0 {
			continue
		}
		d.cfg.Logger.Info("no longer consuming a lane", "lane", lane)
		for _, h := range hs {
			stopStarted(h)
		}
		delete(d.lanes, lane)
		delete(d.unwanted, lane)
	}
}

// stopStarted stops h if it started (Watermill panics on stopping a handler
// that never started, e.g. whose Subscribe failed).
func stopStarted(h *message.Handler) {
	select {
	case <-h.Started():
		h.Stop()
	default:
	}
}

// Lanes lists the lanes the dispatcher consumes.
func (d *Dispatcher) Lanes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.lanes))
}

// Run consumes until ctx ends or Stop is called. Lanes must be declared.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.runCtx = ctx
	d.attemptsCtx, d.cancelAttempts = context.WithCancel(context.WithoutCancel(ctx))
	sctx, stop := context.WithCancel(ctx)
	d.mu.Lock()
	d.startersCtx, d.stopStarters = sctx, stop
	d.mu.Unlock()
	go d.leases.run(ctx)
	go func() {
		<-d.router.Running()
		d.runStarters(sctx)
		close(d.started)
	}()
	err := d.router.Run(ctx)
	d.runErr = err
	close(d.done)
	return err
}

// Running is closed once every consumer is subscribed and the starters
// run.
func (d *Dispatcher) Running() <-chan struct{} { return d.started }

// Stop drains: consumers stop taking deliveries, starters stop taking
// tasks, running attempts finish and record their outcomes (up to
// DrainTimeout), then the router closes. Attempts still running after the
// timeout are abandoned: their leases expire, and the scheduler puts their
// tasks back in the ready queue for another dispatcher.
func (d *Dispatcher) Stop() error {
	var err error
	d.stopOnce.Do(func() {
		d.stopCalled.Store(true)
		select {
		case <-d.started:
		default:
			err = d.router.Close()
			return
		}
		d.mu.Lock()
		d.stopping = true
		var handlers []*message.Handler
		for _, hs := range d.lanes {
			for _, h := range hs {
				select {
				case <-h.Started():
					handlers = append(handlers, h)
				default:
				}
			}
		}
		stopStarters := d.stopStarters
		d.mu.Unlock()
		deadline := time.After(d.cfg.DrainTimeout)
		stopStarters()
		d.fastMu.Lock()
		d.fastClosed = true
		d.fastMu.Unlock()
		for _, h := range handlers {
			h.Stop()
		}
		d.startersWG.Wait()
		drained := make(chan struct{})
		go func() {
			d.running.Wait()
			for _, h := range handlers {
				<-h.Stopped()
			}
			close(drained)
		}()
		select {
		case <-drained:
		case <-deadline:
			d.cfg.Logger.Warn("drain timeout: abandoning running attempts")
			d.cancelAttempts()
		}
		err = d.router.Close()
		<-d.done
		d.leases.stop()
		d.cancelAttempts()
	})
	return err
}

// routerAllStopped is what Watermill's router logs, as an error, when its
// last handler stops before it is closed.
const routerAllStopped = "All handlers stopped, closing router"

// routerLogger is the router's logger. Once Stop has begun it logs
// routerAllStopped at Debug: Stop stops every handler, then closes the
// router, and Watermill may notice the handlers gone first. Before Stop the
// line stays an error: the shared lanes' consumers never stop, so it means
// the consumers died.
type routerLogger struct {
	watermill.LoggerAdapter
	stopping *atomic.Bool
}

func (l routerLogger) Error(msg string, err error, fields watermill.LogFields) {
	if msg == routerAllStopped && l.stopping.Load() {
		l.Debug(msg, fields)
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l routerLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return routerLogger{l.LoggerAdapter.With(fields), l.stopping}
}

// configured reports whether this dispatcher runs function.
func (d *Dispatcher) configured(function string) bool {
	_, ok := d.cfg.Functions[function]
	return ok
}

// handle ends the admission chain: the delivery is acknowledged.
func (d *Dispatcher) handle(msg *message.Message) error {
	if middleware.DeliveryFrom(msg.Context()) == nil {
		return fmt.Errorf("handling message %s: %w", msg.UUID, middleware.ErrNoDelivery)
	}
	return nil
}
