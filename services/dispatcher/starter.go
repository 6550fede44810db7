package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/telemetry"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// takeBatch bounds the tasks one take asks for.
const takeBatch = 64

// wakeFallback is how long an idle starter waits before it looks at its
// ready queue again without a wake: a lost wake (Pub/Sub is at-most-once)
// costs at most this much.
const wakeFallback = time.Second

// starter takes one function's ready tasks while this process has free
// workers and the function has room under its limits.
type starter struct {
	fn   Function
	lim  ledger.TakeLimits
	wake chan struct{}
}

func (s *starter) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// broadcast wakes everyone waiting on it once.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// newStarters builds a starter per function.
func (d *Dispatcher) newStarters() {
	d.starters = map[string]*starter{}
	for name, fn := range d.cfg.Functions {
		lim := ledger.TakeLimits{
			Concurrency: fn.Concurrency, Rate: fn.Rate, Burst: fn.Burst,
			ReservedHigh: d.cfg.ReservedHigh, Tenants: map[string]ledger.TenantLimits{},
		}
		if fn.Adaptive != nil {
			lim.AdaptiveMin = fn.Adaptive.Min
		}
		for id, t := range d.cfg.Tenants {
			if t.Concurrency > 0 || t.Rate > 0 {
				lim.Tenants[id] = ledger.TenantLimits{Concurrency: t.Concurrency, Rate: t.Rate, Burst: t.Burst}
			}
		}
		d.starters[name] = &starter{fn: fn, lim: lim, wake: make(chan struct{}, 1)}
	}
}

// runStarters runs every starter and the wake listener until ctx ends.
func (d *Dispatcher) runStarters(ctx context.Context) {
	d.startersWG.Add(1)
	go func() {
		defer d.startersWG.Done()
		d.listenWake(ctx)
	}()
	for _, s := range d.starters {
		d.startersWG.Add(1)
		go func() {
			defer d.startersWG.Done()
			d.startLoop(ctx, s)
		}()
	}
}

// listenWake relays the ledger's wake channel to the starters, and its
// abort channel (a cancelled running task, "<tenant>/<id>") to the lease
// keeper, which aborts the attempt if this process runs it. A message lost
// on the abort channel costs at most a lease renewal interval: the renewal
// finds the task no longer running and aborts the attempt then.
func (d *Dispatcher) listenWake(ctx context.Context) {
	abort := d.cfg.Ledger.AbortChannel()
	ps := d.cfg.Ledger.Redis().Subscribe(ctx, d.cfg.Ledger.WakeChannel(), abort)
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			if m.Channel == abort {
				if tenant, id, ok := ledger.ParseMember(m.Payload); ok && d.leases.Abort(tenant, id) {
					d.cfg.Logger.Info("attempt aborted: its task was cancelled", "task", id, "tenant", tenant)
				}
				continue
			}
			if s := d.starters[m.Payload]; s != nil {
				s.signal()
			}
		}
	}
}

// startLoop starts s's function's tasks as long as there are ready tasks,
// room under its limits and free workers; otherwise it waits for a wake,
// a freed worker, or the fallback.
func (d *Dispatcher) startLoop(ctx context.Context, s *starter) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		freed := d.freed.wait()
		status, wait := d.startBatch(ctx, s)
		var slots <-chan struct{}
		switch status {
		case ledger.TakeDone, ledger.TakeMore:
			if ctx.Err() != nil {
				return
			}
			continue
		case ledger.TakeRate:
			wait = min(wait, wakeFallback)
		case statusNoWorkers:
			slots = freed
			wait = wakeFallback
		case statusError:
			wait = d.cfg.ErrorBackoff
		default:
			wait = wakeFallback
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-slots:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// Statuses of startBatch besides the ledger's.
const (
	statusNoWorkers ledger.TakeStatus = "no-workers"
	statusError     ledger.TakeStatus = "error"
)

// startBatch takes up to the free workers' worth of s's ready tasks and
// starts an attempt for each.
func (d *Dispatcher) startBatch(ctx context.Context, s *starter) (ledger.TakeStatus, time.Duration) {
	n := 0
	for n < takeBatch {
		select {
		case d.workers <- struct{}{}:
			n++
			continue
		default:
		}
		break
	}
	if n == 0 {
		return statusNoWorkers, 0
	}
	if ctx.Err() != nil {
		d.releaseWorkers(n)
		return statusError, 0
	}
	// Once sent, a take runs to its answer even if Stop begins meanwhile:
	// the tasks it starts are this process's, and an answer dropped would
	// leave them running with no attempt until their leases end (Stop
	// waits for the starters, then drains what they started).
	tk, err := d.cfg.Ledger.Take(context.WithoutCancel(ctx), s.fn.Name, d.cfg.Owner, n, d.cfg.LeaseTTL, s.lim)
	if err != nil {
		d.releaseWorkers(n)
		if ctx.Err() == nil {
			d.cfg.Metrics.LedgerErrors.WithLabelValues("take").Inc()
			d.cfg.Logger.Warn("taking ready tasks", "function", s.fn.Name, "error", err)
		}
		return statusError, 0
	}
	d.releaseWorkers(n - len(tk.Tasks))
	if tk.Expired > 0 {
		d.cfg.Metrics.Deliveries.WithLabelValues("expired").Add(float64(tk.Expired))
	}
	for _, t := range tk.Tasks {
		d.launch(s, t, tk.LeaseUntil)
	}
	if tk.Status == ledger.TakeDone && len(tk.Tasks) < n {
		return ledger.TakeMore, 0
	}
	return tk.Status, tk.Wait
}

// launch runs a started attempt of s's function on a worker the caller
// took; the worker is released when the attempt ends.
func (d *Dispatcher) launch(s *starter, t ledger.Started, leaseUntil time.Time) {
	d.cfg.Metrics.Deliveries.WithLabelValues("run").Inc()
	d.cfg.Metrics.QueueWait.WithLabelValues(s.fn.Name).Observe(t.Wait.Seconds())
	d.running.Add(1)
	go func() {
		defer func() {
			d.releaseWorkers(1)
			d.running.Done()
			s.signal()
		}()
		d.run(s.fn, t, leaseUntil)
	}()
}

// admit is the lane chain's ledger call (Dedup). With a worker of this
// process free, it asks the ledger to start the task at once when its
// function has room and nothing waits ahead of it (ledger.AdmitOrStart),
// and runs the attempt it started; the worker stays taken until the
// attempt ends, so MaxRunning holds. Without a free worker, or once Stop
// began, it only admits: the task waits in its ready queue for a starter.
// So does it on the partitioned layout, which has no fast start.
func (d *Dispatcher) admit(ctx context.Context, t ledger.TaskRef) (ledger.Admission, error) {
	s := d.starters[t.Function]
	if s == nil || d.cfg.Ledger.Partitioned() || !d.takeWorker() {
		return d.cfg.Ledger.Admit(ctx, t)
	}
	d.fastMu.RLock()
	defer d.fastMu.RUnlock()
	if d.fastClosed {
		d.releaseWorkers(1)
		return d.cfg.Ledger.Admit(ctx, t)
	}
	// As with a take: once sent, the call runs to its answer, so that a
	// task it started is not left without its attempt.
	a, err := d.cfg.Ledger.AdmitOrStart(context.WithoutCancel(ctx), t,
		ledger.FastStart{Owner: d.cfg.Owner, Lease: d.cfg.LeaseTTL, Limits: s.lim})
	if err != nil || a.Verdict != ledger.AdmitStarted {
		d.releaseWorkers(1)
		return a, err
	}
	d.launch(s, *a.Started, a.LeaseUntil)
	return a, nil
}

// takeWorker takes a free worker, if there is one.
func (d *Dispatcher) takeWorker() bool {
	select {
	case d.workers <- struct{}{}:
		return true
	default:
		return false
	}
}

func (d *Dispatcher) releaseWorkers(n int) {
	for range n {
		<-d.workers
	}
	if n > 0 {
		d.freed.fire()
	}
}

// wake signals the starter of function, if this process runs it, to take
// at once (Throttle calls it for each admitted task).
func (d *Dispatcher) wake(function string) {
	if s := d.starters[function]; s != nil {
		s.signal()
	}
}

// run runs one started attempt through the attempt chain, which records
// its outcome. A panic is recovered: the attempt's lease runs out and the
// task is taken over.
func (d *Dispatcher) run(fn Function, t ledger.Started, leaseUntil time.Time) {
	ctx := d.attemptsCtx
	defer func() {
		if p := recover(); p != nil {
			d.cfg.Logger.Error("attempt panicked; its task is taken over when its lease ends", "task", t.ID, "tenant", t.Tenant, "function", fn.Name, "panic", fmt.Sprint(p))
		}
	}()
	del := &middleware.Delivery{Function: fn, Claim: ledger.Claim{Verdict: ledger.VerdictRun, Attempt: t.Attempt, Redrives: t.Redrives, Throttles: t.Throttles, LeaseUntil: leaseUntil}}
	msg, err := taskmsg.Decode(t.Message)
	if err == nil {
		del.Ref, del.Event, err = taskmsg.Parse(msg)
	}
	if err != nil {
		// A record whose stored message cannot be read can never run:
		// Run gives it a non-retryable outcome.
		del.Ref, del.Event, del.ParseErr = taskmsg.Ref{TaskID: t.ID, Tenant: t.Tenant, Function: fn.Name}, nil, err
	}
	if telemetry.Enabled() {
		var span trace.Span
		ctx, span = startAttempt(ctx, fn.Name, t, msg, del.Event)
		defer func() { endAttempt(span, del, err) }()
	}
	am := message.NewMessage(t.ID, nil)
	am.SetContext(middleware.WithDelivery(ctx, del))
	_, err = d.attempt(am)
	if err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("recording an attempt's outcome; the task is taken over when its lease ends", "task", t.ID, "tenant", t.Tenant, "function", fn.Name, "error", err)
	}
}
