// Package scheduler puts tasks into their functions' ready queues when the
// ledger's delay set says they are due: retry backoffs, delayed tasks,
// tasks waiting for their tenant's rate, leases of dead dispatchers, and
// publish guards of tasks whose gateway died before the broker confirmed
// them. It also puts tenants parked at their quota back to work when their
// attempts ended without a finish (see [Config.Quotas]), and on the
// partitioned layout sweeps the functions' in-flight sets (see
// [Config.Functions]). It also ends
// waiting tasks whose ttl passed, even while they sit in a backed-up lane,
// and, configured with a [Trim], trims acknowledged entries of Redis
// streams. Configured with Tenants, it drops the index entries of task
// records that expired.
//
// Several schedulers may run at once: taking due entries is atomic in Redis
// and moves them a guard interval into the future, so a scheduler that dies
// after taking them gives them back instead of losing them.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// expiryScanEvery is how often waiting tasks past their ttl are ended,
// wherever they wait; a task that reaches a dispatcher first is ended there.
const expiryScanEvery = time.Second

// Config configures a Scheduler.
type Config struct {
	Ledger  *ledger.Ledger
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Quotas are the tenants' caps on running attempts (0: none); each
	// second the scheduler puts those below it back to work (an attempt
	// whose dispatcher died frees its slot only when its lease ends), and
	// those without one, in case they were parked before their quota was
	// removed.
	Quotas map[string]int
	// Configured reports whether a function is configured. A due task of a
	// function that is not (the configuration changed under it) can never
	// run: it ends dead, non-retryable, instead of waiting in a ready queue
	// no dispatcher takes. Default nil: every function is.
	Configured func(function string) bool
	// Functions are the configured functions: on the partitioned layout,
	// each second the scheduler sweeps their in-flight sets of
	// reservations and attempts past their score
	// (ledger.SweepReservations). Default nil: none.
	Functions func() []string
	// Trim, when set, has the scheduler trim Redis streams of what every
	// consumer group is done with (trim.go).
	Trim *Trim
	// Tenants, when set, lists the tenants whose task indexes the
	// scheduler prunes of expired records every PruneEvery (prune.go).
	Tenants func() []string
	// PruneEvery is the time between prunings. Default PruneEveryDefault.
	PruneEvery time.Duration
	// Interval between scans of the delay set. Default 25ms: a deferred
	// task (rate limit, retry, delay) starts at most this late.
	Interval time.Duration
	// Batch is how many due tasks one scan takes. Default 500.
	Batch int
	// Guard is how long a taken entry stays hidden from other schedulers.
	// Default config.PublishGuardDefault.
	Guard time.Duration
	// Concurrency bounds parallel admissions. Default 32.
	Concurrency int
}

// Scheduler moves due tasks to lanes.
type Scheduler struct{ cfg Config }

// New returns a scheduler.
func New(cfg Config) *Scheduler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "scheduler")
	if cfg.Interval <= 0 {
		cfg.Interval = 25 * time.Millisecond
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Guard <= 0 {
		cfg.Guard = config.PublishGuardDefault.Std()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	return &Scheduler{cfg: cfg}
}

// Run scans until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	waitTrimming := s.startTrimming(ctx)
	defer waitTrimming()
	waitPruning := s.startPruning(ctx)
	defer waitPruning()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	lastExpiry := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if time.Since(lastExpiry) >= expiryScanEvery {
			lastExpiry = time.Now()
			if _, err := s.cfg.Ledger.ExpireDue(ctx, 1000); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("expiring tasks past their ttl", "error", err)
			}
			if err := s.cfg.Ledger.UnparkAll(ctx, s.cfg.Quotas); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("unparking tenants", "error", err)
			}
			if s.cfg.Functions != nil {
				if _, err := s.cfg.Ledger.SweepReservations(ctx, s.cfg.Functions()); err != nil && ctx.Err() == nil {
					s.cfg.Logger.Warn("sweeping reservations", "error", err)
				}
			}
		}
		for {
			n, err := s.Tick(ctx)
			if err != nil {
				if ctx.Err() == nil { // else stopping: not a problem
					s.cfg.Logger.Warn("moving due tasks", "error", err)
				}
				break
			}
			if n < s.cfg.Batch {
				break
			}
		}
	}
}

// Tick moves one batch of due tasks and returns how many it took.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	due, err := s.cfg.Ledger.TakeDue(ctx, s.cfg.Batch, s.cfg.Guard)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, d := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.move(ctx, d); err != nil {
				// The entry keeps its guard score and comes back then.
				s.cfg.Logger.Warn("requeueing task", "task", d.ID, "tenant", d.Tenant, "error", err)
			}
		}()
	}
	wg.Wait()
	return len(due), nil
}

func (s *Scheduler) move(ctx context.Context, d ledger.Due) error {
	switch {
	case d.Message == nil || d.State.Terminal():
		return s.cfg.Ledger.Forget(ctx, d)
	case !d.LeaseUntil.IsZero() && d.LeaseUntil.After(time.Now()):
		// Still held by a live dispatcher: look again when the lease ends.
		return s.cfg.Ledger.Defer(ctx, d.Tenant, d.ID, d.LeaseUntil.Add(time.Second))
	}
	if s.cfg.Configured != nil && d.Function != "" && !s.cfg.Configured(d.Function) {
		err := s.cfg.Ledger.Abandon(ctx, d.Tenant, d.ID, contracts.StateDead, contracts.ReasonNonRetryable,
			fmt.Sprintf("function %q is not configured", d.Function))
		if err == nil || errors.Is(err, ledger.ErrNotAbandoned) || errors.Is(err, ledger.ErrNotFound) {
			return nil
		}
		return err
	}
	// Due tasks go straight into their function's ready queue: a task is
	// published to a lane once, at ingest.
	a, err := s.cfg.Ledger.Admit(ctx, ledger.TaskRef{Tenant: d.Tenant, ID: d.ID, Function: d.Function, Priority: d.Priority})
	if err != nil {
		return err
	}
	switch a.Verdict {
	case ledger.AdmitAdmitted:
		s.cfg.Metrics.Requeued.Inc()
	case ledger.AdmitBusy:
		return s.cfg.Ledger.Defer(ctx, d.Tenant, d.ID, a.LeaseUntil.Add(time.Second))
	case ledger.AdmitEarly:
		// Rescheduled meanwhile: its new entry stands.
	case ledger.AdmitReady, ledger.AdmitExpired:
	default:
		return s.cfg.Ledger.Forget(ctx, d)
	}
	return nil
}
