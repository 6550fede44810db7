// Package scheduler puts tasks back on their lanes when the ledger's delay
// set says they are due: retry backoffs, delayed tasks, tasks deferred by a
// limit or a busy delivery, leases of dead dispatchers, and publish guards of
// tasks whose gateway died before the broker confirmed them. It also ends
// waiting tasks whose ttl passed, even while they sit in a backed-up lane,
// and, configured with a [Trim], trims acknowledged entries of Redis
// streams.
//
// Several schedulers may run at once: taking due entries is atomic in Redis
// and moves them a guard interval into the future, so a scheduler that dies
// after taking them gives them back instead of losing them.
package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// retryPublishAfter is when a task whose publish failed is tried again.
const retryPublishAfter = time.Second

// expiryScanEvery is how often waiting tasks past their ttl are ended,
// wherever they wait; a task that reaches a dispatcher first is ended there.
const expiryScanEvery = time.Second

// Config configures a Scheduler.
type Config struct {
	Ledger    *ledger.Ledger
	Publisher message.Publisher
	Router    ingest.Router
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	// Trim, when set, has the scheduler trim Redis streams of what every
	// consumer group is done with (trim.go).
	Trim *Trim
	// Interval between scans of the delay set. Default 25ms: a deferred
	// task (rate limit, retry, delay) starts at most this late.
	Interval time.Duration
	// Batch is how many due tasks one scan takes. Default 500.
	Batch int
	// Guard is how long a taken entry stays hidden from other schedulers.
	// Default config.PublishGuardDefault.
	Guard time.Duration
	// Concurrency bounds parallel publishes. Default 32.
	Concurrency int
	// DeadLetter reports whether a function keeps tasks that failed for
	// good in the dead-letter queue (state dead) rather than ending them
	// failed. Default nil: every function does (the config's default).
	DeadLetter func(function string) bool
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
	msg, err := taskmsg.Decode(d.Message)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg.SetContext(pctx)
	if err := s.cfg.Publisher.Publish(s.cfg.Router.LaneFor(d.Tenant, d.ID), msg); err != nil {
		if errors.Is(err, broker.ErrTooLarge) {
			return s.abandon(ctx, d, msg, err)
		}
		// Try again soon, not a whole guard later: the broker is likely
		// down, and tasks should move as soon as it is back.
		if derr := s.cfg.Ledger.Defer(ctx, d.Tenant, d.ID, time.Now().Add(retryPublishAfter)); derr != nil {
			return errors.Join(err, derr)
		}
		return err
	}
	s.cfg.Metrics.Requeued.Inc()
	return s.cfg.Ledger.Requeued(ctx, d)
}

// abandon ends a task whose lane message the broker refuses for its size:
// no retry can publish it (and RabbitMQ would close the connection every
// time), so it ends dead (failed without dead-lettering), non-retryable,
// with one result event, instead of coming back every second.
func (s *Scheduler) abandon(ctx context.Context, d ledger.Due, msg *message.Message, cause error) error {
	fn := msg.Metadata.Get(taskmsg.KeyFunction)
	state := contracts.StateDead
	if s.cfg.DeadLetter != nil && !s.cfg.DeadLetter(fn) {
		state = contracts.StateFailed
	}
	why := "not published: the broker refuses its lane message (" + cause.Error() + "); the event's attributes and extensions are too large"
	err := s.cfg.Ledger.Abandon(ctx, d.Tenant, d.ID, state, contracts.ReasonNonRetryable, why)
	switch {
	case err == nil:
		s.cfg.Logger.Warn("ending task: its lane message is too large for the broker", "task", d.ID, "tenant", d.Tenant, "function", fn, "state", state, "error", cause)
		return nil
	case errors.Is(err, ledger.ErrNotAbandoned), errors.Is(err, ledger.ErrNotFound):
		// It ended, or another dispatcher holds it, meanwhile: its own
		// path decides.
		return nil
	}
	return err
}
