package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tasklane/tasklane/contracts"
)

// Defaults of RunnerConfig.
const (
	// LeaseDefault is how long a runner's claim on a job lasts without a
	// step renewing it: a job whose gateway stopped is resumed by another
	// within about this long.
	LeaseDefault = 15 * time.Second
	// PerTenantDefault bounds the jobs one tenant runs at once.
	PerTenantDefault = 4
	// MaxStepErrorsDefault is how many steps in a row may fail (each
	// retried after a backoff) before the job fails.
	MaxStepErrorsDefault = 5
	// MaxResumesDefault is how many times a job is taken over before it
	// is failed instead: a job that keeps stopping its gateway is not
	// handed on to the next one forever.
	MaxResumesDefault = 5
)

// ErrPermanent marks a step error no retry fixes (a bad cursor): the job
// fails at once.
var ErrPermanent = errors.New("permanent")

// StepResult is what one step of a job did.
type StepResult struct {
	// Matched and Done are the step's counts, added to the job's.
	Matched, Done int
	// Cursor is where the next step starts; "" ends the job.
	Cursor string
	// NextCursor, set on the last step, is the job's answer cursor: its
	// call's limit stopped it before the end of the selection.
	NextCursor string
}

// Step runs one bounded step of a job from j.Cursor (j.Matched counts
// what the steps before matched).
type Step func(ctx context.Context, j *Record) (StepResult, error)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Store *Store
	// Steps runs each kind of job.
	Steps  map[contracts.JobKind]Step
	Logger *slog.Logger
	// Lease is the claim a step renews (default LeaseDefault); the
	// runner looks for expired ones every Lease/3.
	Lease time.Duration
	// PerTenant bounds a tenant's running jobs (default PerTenantDefault).
	PerTenant int
	// MaxStepErrors and MaxResumes default to MaxStepErrorsDefault and
	// MaxResumesDefault.
	MaxStepErrors, MaxResumes int
	// Backoff is the first wait after a failed step, doubled each time
	// (default 200ms).
	Backoff time.Duration
}

// Runner runs jobs in this process and resumes those other runners
// stopped running.
type Runner struct {
	cfg   RunnerConfig
	owner string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRunner returns a runner. Its jobs run until Run's context ends (or
// for good when Run is never called).
func NewRunner(cfg RunnerConfig) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lease <= 0 {
		cfg.Lease = LeaseDefault
	}
	if cfg.PerTenant <= 0 {
		cfg.PerTenant = PerTenantDefault
	}
	if cfg.MaxStepErrors <= 0 {
		cfg.MaxStepErrors = MaxStepErrorsDefault
	}
	if cfg.MaxResumes <= 0 {
		cfg.MaxResumes = MaxResumesDefault
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 200 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, owner: ulid.Make().String(), ctx: ctx, cancel: cancel}
}

// Store is the runner's job store.
func (r *Runner) Store() *Store { return r.cfg.Store }

// Start records a job of kind for tenant and runs it in the background.
// ErrTooMany when the tenant runs its maximum already.
func (r *Runner) Start(ctx context.Context, tenant string, kind contracts.JobKind, request []byte) (contracts.Job, error) {
	if r.cfg.Steps[kind] == nil {
		return contracts.Job{}, fmt.Errorf("no step for jobs of kind %q", kind)
	}
	now := time.Now()
	rec, err := r.cfg.Store.Create(ctx, tenant, kind, request, r.owner, now, now.Add(r.cfg.Lease), r.cfg.PerTenant)
	if err != nil {
		return contracts.Job{}, err
	}
	r.cfg.Logger.InfoContext(ctx, "job started", "tenant", tenant, "job", rec.ID, "kind", kind)
	r.launch(rec)
	return rec.Job, nil
}

func (r *Runner) launch(rec Record) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(r.ctx, &rec)
	}()
}

// Run looks for jobs whose runner stopped (their lease expired) every
// Lease/3 and resumes them here, until ctx ends; then it stops this
// runner's jobs after their current step, releases their leases (another
// runner resumes them at once) and returns.
func (r *Runner) Run(ctx context.Context) {
	defer func() {
		r.cancel()
		r.wg.Wait()
	}()
	t := time.NewTicker(r.cfg.Lease / 3)
	defer t.Stop()
	for {
		r.Sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep takes over the jobs whose lease has expired and runs them here.
func (r *Runner) Sweep(ctx context.Context) {
	now := time.Now()
	expired, err := r.cfg.Store.Expired(ctx, now, 100)
	if err != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.WarnContext(ctx, "looking for stopped jobs", "error", err)
		}
		return
	}
	for _, e := range expired {
		rec, ok, err := r.cfg.Store.Takeover(ctx, e[0], e[1], r.owner, now, now.Add(r.cfg.Lease))
		if err != nil {
			r.cfg.Logger.WarnContext(ctx, "taking a stopped job over", "tenant", e[0], "job", e[1], "error", err)
			continue
		}
		if !ok {
			continue
		}
		r.cfg.Logger.InfoContext(ctx, "job resumed", "tenant", rec.Tenant, "job", rec.ID, "kind", rec.Kind,
			"matched", rec.Matched, "done", rec.Done, "resumed", rec.Resumed)
		r.launch(rec)
	}
}

// run works through rec step by step, saving its progress (and renewing
// the lease) after each. A step that fails is retried after a backoff
// (counted in Errors) up to MaxStepErrors times in a row.
func (r *Runner) run(ctx context.Context, rec *Record) {
	log := r.cfg.Logger.With("tenant", rec.Tenant, "job", rec.ID, "kind", rec.Kind)
	// Ending and releasing run even when ctx has ended.
	bg := context.WithoutCancel(ctx)
	finish := func(state contracts.JobState) {
		if err := r.cfg.Store.Finish(bg, rec, state, time.Now()); err != nil {
			log.Warn("ending job", "error", err)
			return
		}
		log.Info("job ended", "state", state, "matched", rec.Matched, "done", rec.Done, "errors", rec.Errors, "error", rec.Error)
	}
	if rec.Resumed > r.cfg.MaxResumes {
		rec.Error = fmt.Sprintf("interrupted %d times (its gateway stopped mid-way each time); ended after %d done", rec.Resumed, rec.Done)
		finish(contracts.JobFailed)
		return
	}
	step := r.cfg.Steps[rec.Kind]
	if step == nil {
		rec.Error = fmt.Sprintf("unknown kind of job %q", rec.Kind)
		finish(contracts.JobFailed)
		return
	}
	failed, wait := 0, r.cfg.Backoff
	for {
		if ctx.Err() != nil {
			if err := r.cfg.Store.Release(bg, rec); err != nil {
				log.Warn("releasing job", "error", err)
			}
			return
		}
		res, err := step(ctx, rec)
		if err != nil {
			if ctx.Err() != nil {
				continue // released above
			}
			failed++
			rec.Errors++
			if failed >= r.cfg.MaxStepErrors || errors.Is(err, ErrPermanent) {
				rec.Error = err.Error()
				finish(contracts.JobFailed)
				return
			}
			log.Warn("job step failed; retrying", "error", err, "in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait + rand.N(wait/2+1)):
			}
			wait = min(2*wait, 10*time.Second)
		} else {
			failed, wait = 0, r.cfg.Backoff
			rec.Matched += res.Matched
			rec.Done += res.Done
			rec.Cursor = res.Cursor
			if res.Cursor == "" {
				rec.NextCursor = res.NextCursor
				finish(contracts.JobSucceeded)
				return
			}
		}
		if err := r.cfg.Store.Progress(bg, rec, time.Now().Add(r.cfg.Lease)); err != nil {
			if errors.Is(err, ErrLeaseLost) {
				log.Warn("job taken over by another gateway; stopping here")
				return
			}
			log.Warn("saving job progress", "error", err)
		}
	}
}
