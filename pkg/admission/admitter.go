package admission

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// Defaults of Config.
const (
	// EveryDefault is the default Config.Every.
	EveryDefault = 250 * time.Millisecond
	// MaxStaleDefault is the default Config.MaxStale.
	MaxStaleDefault = 5 * time.Second
	// DrainWindowDefault is the default Config.DrainWindow.
	DrainWindowDefault = 5 * time.Second
)

// BacklogReader reads tenants' backlogs in one round trip;
// [*ledger.Ledger] implements it.
type BacklogReader interface {
	Backlogs(ctx context.Context, tenants []string) ([]ledger.Backlog, error)
}

// Config configures an Admitter.
type Config struct {
	// Backlogs reads the backlogs. Required.
	Backlogs BacklogReader
	// Tenants are the tenants counted (every configured tenant: the global
	// limit is on their sum). Required.
	Tenants []string
	// Limits are the limits.
	Limits Limits
	// Shares, when set, reads the tenants' shares of recent submissions
	// (the routing's heavy-hitter report of the last finished window). It
	// is called on a refresh only while all tenants' backlog is above the
	// global limit. When it is nil or holds no tenant, the tenants' shares
	// of the backlog stand in.
	Shares func(ctx context.Context) (map[string]float64, error)
	// Every is how often the backlogs are read. Default EveryDefault.
	Every time.Duration
	// MaxStale bounds how old a snapshot may be and still refuse: past it
	// (Redis does not answer), everything is admitted, and ingest itself
	// answers what it can. Default MaxStaleDefault.
	MaxStale time.Duration
	// DrainWindow is how far back drain rates are measured. Default
	// DrainWindowDefault.
	DrainWindow time.Duration
	// Metrics, when set, counts refusals.
	Metrics *metrics.Metrics
	// Logger receives refresh failures. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand draws uniform numbers in [0, 1). Default math/rand/v2.Float64.
	Rand func() float64
}

// sample is one refresh's reading of the tenants' ended counts.
type sample struct {
	at    time.Time
	ended map[string]int64
}

// Admitter admits or refuses submissions from a cached snapshot of the
// backlogs, refreshed by Run. Staleness is bounded: a decision uses a
// snapshot at most Every plus one Redis round trip old, to which the
// Admitter adds the tasks this process accepted since (Observe), so a
// burst through one process is counted before the next read; other
// processes' submissions are seen at the next read. A tenant may therefore
// overshoot its max_backlog by what all gateways accept in about Every.
// Safe for concurrent use.
type Admitter struct {
	cfg Config

	mu       sync.Mutex
	snap     Snapshot
	at       time.Time        // when snap was read; zero before the first read
	pending  map[string]int64 // tasks accepted here since the read began
	samples  []sample         // for drain rates, oldest first
	loggedAt time.Time
}

// New returns an Admitter; run its Run to refresh it. Before the first
// refresh it admits everything.
func New(cfg Config) *Admitter {
	if cfg.Every <= 0 {
		cfg.Every = EveryDefault
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = MaxStaleDefault
	}
	if cfg.DrainWindow <= 0 {
		cfg.DrainWindow = DrainWindowDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Admitter{cfg: cfg, pending: map[string]int64{}}
}

// Enabled reports whether any limit is set (without one, Admit always
// admits and Run need not run).
func (a *Admitter) Enabled() bool { return a.cfg.Limits.Enabled() }

// Run refreshes the snapshot every Every until ctx ends.
func (a *Admitter) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Every)
	defer t.Stop()
	for {
		// A Redis that hangs must not hold the loop past MaxStale.
		rctx, cancel := context.WithTimeout(ctx, a.cfg.MaxStale)
		if err := a.Refresh(rctx); err != nil && ctx.Err() == nil {
			a.logFailure(ctx, err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logFailure logs a refresh failure at most every MaxStale.
func (a *Admitter) logFailure(ctx context.Context, err error) {
	now := a.cfg.Now()
	a.mu.Lock()
	quiet := now.Sub(a.loggedAt) < a.cfg.MaxStale
	if !quiet {
		a.loggedAt = now
	}
	a.mu.Unlock()
	if !quiet {
		a.cfg.Logger.WarnContext(ctx, "reading backlogs for admission; past max_stale everything is admitted", "error", err, "max_stale", a.cfg.MaxStale)
	}
}

// Refresh reads the backlogs once (one pipelined round trip, and the
// shares while over the global limit) and replaces the snapshot.
func (a *Admitter) Refresh(ctx context.Context) error {
	a.mu.Lock()
	started := make(map[string]int64, len(a.pending))
	for t, n := range a.pending {
		started[t] = n
	}
	a.mu.Unlock()

	bs, err := a.cfg.Backlogs.Backlogs(ctx, a.cfg.Tenants)
	if err != nil {
		return err
	}
	now := a.cfg.Now()
	snap := Snapshot{Backlog: make(map[string]int64, len(bs)), Drain: make(map[string]float64, len(bs))}
	ended := make(map[string]int64, len(bs))
	for _, b := range bs {
		snap.Backlog[b.Tenant] = b.Waiting
		snap.Total += b.Waiting
		ended[b.Tenant] = b.Ended
	}
	var shareErr error
	if g := a.cfg.Limits.Global; g > 0 && snap.Total > g {
		if a.cfg.Shares != nil {
			snap.Shares, shareErr = a.cfg.Shares(ctx)
		}
		if len(snap.Shares) == 0 {
			snap.Shares = backlogShares(snap.Backlog, snap.Total)
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.samples = append(a.samples, sample{at: now, ended: ended})
	for len(a.samples) > 2 && now.Sub(a.samples[1].at) >= a.cfg.DrainWindow {
		a.samples = a.samples[1:]
	}
	if old := a.samples[0]; now.Sub(old.at) > 0 {
		dt := now.Sub(old.at).Seconds()
		for t, n := range ended {
			prev, ok := old.ended[t]
			if d := n - prev; ok && d > 0 {
				snap.Drain[t] = float64(d) / dt
				snap.TotalDrain += float64(d) / dt
			}
		}
	}
	// What this process accepted before the read began is in the read.
	for t, n := range started {
		if a.pending[t] -= n; a.pending[t] <= 0 {
			delete(a.pending, t)
		}
	}
	a.snap, a.at = snap, now
	if shareErr != nil {
		return errors.Join(errors.New("reading submission shares; the backlog shares stand in"), shareErr)
	}
	return nil
}

// backlogShares are the tenants' shares of the backlog.
func backlogShares(backlog map[string]int64, total int64) map[string]float64 {
	if total <= 0 {
		return nil
	}
	out := make(map[string]float64, len(backlog))
	for t, n := range backlog {
		if n > 0 {
			out[t] = float64(n) / float64(total)
		}
	}
	return out
}

// Observe counts tasks this process accepted for tenant: they join its
// backlog until the next read shows them.
func (a *Admitter) Observe(tenant string, tasks int) {
	a.mu.Lock()
	a.pending[tenant] += int64(tasks)
	a.mu.Unlock()
}

// Admit returns nil to admit a submission of tenant, or a *RefusedError
// (counted in the metrics).
func (a *Admitter) Admit(tenant string) error {
	if !a.Enabled() {
		return nil
	}
	u := a.cfg.Rand()
	a.mu.Lock()
	if a.at.IsZero() || a.cfg.Now().Sub(a.at) > a.cfg.MaxStale {
		a.mu.Unlock()
		return nil
	}
	s := a.snap
	if len(a.pending) > 0 {
		s.Backlog = make(map[string]int64, len(a.snap.Backlog))
		for t, n := range a.snap.Backlog {
			s.Backlog[t] = n
		}
		for t, n := range a.pending {
			s.Backlog[t] += n
			s.Total += n
		}
	}
	a.mu.Unlock()
	refused := Decide(a.cfg.Limits, s, tenant, u)
	if refused == nil {
		return nil
	}
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.AdmissionRefusals.WithLabelValues(tenant, refused.Reason).Inc()
	}
	return refused
}

// Snapshot returns the current snapshot (for tests and views).
func (a *Admitter) Snapshot() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snap
}
