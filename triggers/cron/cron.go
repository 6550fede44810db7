// Package cron is the cron trigger: it fires events on a schedule (standard
// 5-field expressions, descriptors such as @hourly and "@every 30s", IANA
// time zones) with github.com/robfig/cron/v3 computing the fire times.
//
// One replica evaluates a schedule at a time (a [triggers.Lock]); it keeps
// a cursor, the last scheduled time it handled, in Redis, written only
// while it holds the lock. Each fire is one event whose id is
// "<trigger>/<scheduled time, RFC 3339 UTC>": a fire submitted twice (by a
// replica that lost the lock while submitting, or after a crash between
// submitting and moving the cursor) is deduplicated by the ingest path.
//
// Fires found late — after downtime, or while the lock changed hands — are
// fired late when they are at most Grace (30s) late. Older ones are
// "missed": the skip policy drops them, catch_up fires the most recent
// MaxCatchUp of them and drops the rest.
//
// Fires refused by backpressure (the tenant's backlog at its max_backlog)
// are not missed: they are held and submitted again, oldest first, however
// late they get, after the refusal's Retry-After (at least RetryEvery,
// doubling while refusals go on, at most BackpressureWaitMax). The cursor
// does not move past a held fire, so a replica that takes over resubmits
// it too (under its own grace).
package cron

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/triggers"
)

// Defaults of Config.
const (
	// GraceDefault is the default Config.Grace.
	GraceDefault = 30 * time.Second
	// RetryEveryDefault is the default Config.RetryEvery.
	RetryEveryDefault = time.Second
	// BackpressureWaitMax bounds the wait between submissions of fires
	// refused by backpressure.
	BackpressureWaitMax = 30 * time.Second
	// maxSteps bounds the fire times walked in one evaluation.
	maxSteps = 2_000_000
	// maxFiresPerSubmit bounds the fires one submission carries; the rest
	// wait for the next.
	maxFiresPerSubmit = 100
)

// Config configures a cron trigger.
type Config struct {
	// Name is the trigger's name. Required.
	Name string
	// Tenant owns the events. Required.
	Tenant string
	// Schedule is the cron expression or descriptor. Required.
	Schedule string
	// Timezone is the IANA zone of the expression. Default UTC.
	Timezone string
	// Missed is config.MissedSkip (default) or config.MissedCatchUp.
	Missed string
	// MaxCatchUp bounds the missed fires made up with catch_up. Default 10.
	MaxCatchUp int
	// EventType and EventSource are the events' type and source. Required.
	EventType string
	// EventSource: see EventType.
	EventSource string
	// Grace is how late a fire may be found and still fire under the skip
	// policy. Default 30s.
	Grace time.Duration
	// LockTTL is the lock's time to live. Default triggers.LockTTLDefault.
	LockTTL time.Duration
	// RetryEvery is the wait after a failed submission or Redis error, and
	// between attempts of a standby replica to take the lock. Default 1s.
	RetryEvery time.Duration
}

// Fire is the data of a cron event (JSON).
type Fire struct {
	// Trigger is the trigger's name.
	Trigger string `json:"trigger"`
	// Schedule is its schedule as configured.
	Schedule string `json:"schedule"`
	// Timezone is the zone the schedule is read in.
	Timezone string `json:"timezone"`
	// ScheduledTime is the fire's scheduled time (RFC 3339, in Timezone).
	ScheduledTime string `json:"scheduled_time"`
}

// Cron is a running cron trigger.
type Cron struct {
	cfg   Config
	env   triggers.Env
	sched *Schedule
	lock  *triggers.Lock
	rep   *triggers.Reporter
	key   string // cursor hash

	// held are fires refused by backpressure (oldest first), submitted
	// again whatever their age; refusals counts consecutive refusals for
	// the backoff. Only the elected loop's goroutine uses them.
	held      []time.Time
	heldUntil time.Time // no resubmission before
	refusals  int

	triggers.Background
}

// New returns a cron trigger; Start runs it.
func New(cfg Config, env triggers.Env) (*Cron, error) {
	env = env.WithDefaults()
	if cfg.Missed == "" {
		cfg.Missed = config.MissedDefault
	}
	if cfg.MaxCatchUp <= 0 {
		cfg.MaxCatchUp = config.MaxCatchUpDefault
	}
	if cfg.Grace <= 0 {
		cfg.Grace = GraceDefault
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = RetryEveryDefault
	}
	var errs []error
	if cfg.Name == "" || cfg.Tenant == "" || cfg.EventType == "" || cfg.EventSource == "" {
		errs = append(errs, errors.New("cron trigger: Name, Tenant, EventType and EventSource are required"))
	}
	if cfg.Missed != config.MissedSkip && cfg.Missed != config.MissedCatchUp {
		errs = append(errs, fmt.Errorf("cron trigger %s: invalid Missed %q", cfg.Name, cfg.Missed))
	}
	sched, err := ParseSchedule(cfg.Schedule, cfg.Timezone)
	if err != nil {
		errs = append(errs, fmt.Errorf("cron trigger %s: %w", cfg.Name, err))
	}
	errs = append(errs, env.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	env.Logger = env.Logger.With("component", "trigger", "trigger", cfg.Name, "kind", config.TriggerKindCron)
	return &Cron{
		cfg: cfg, env: env, sched: sched,
		lock: env.Store.Lock(cfg.Name, env.Owner, cfg.LockTTL),
		rep:  triggers.NewReporter(env, cfg.Name, config.TriggerKindCron),
		key:  env.Store.Key(cfg.Name, "cron"),

		Background: triggers.Background{What: "cron trigger " + cfg.Name},
	}, nil
}

// EventID is the id of trigger's fire scheduled at t.
func EventID(trigger string, t time.Time) string {
	return trigger + "/" + t.UTC().Format(time.RFC3339)
}

// Name is the trigger's name.
func (c *Cron) Name() string { return c.cfg.Name }

// Kind is "cron".
func (c *Cron) Kind() string { return config.TriggerKindCron }

// Status is the trigger's state in this process.
func (c *Cron) Status() triggers.Status { return c.rep.Status() }

// Schedule is the trigger's schedule.
func (c *Cron) Schedule() *Schedule { return c.sched }

// Start runs the schedule in the background: the replica that takes the
// lock fires, the others stand by. Stop stops firing, waits for a
// submission in flight and releases the lock, so another replica takes
// over at once.
func (c *Cron) Start(ctx context.Context) error {
	c.rep.SetState(triggers.StateStandby)
	c.Go(ctx, c.run)
	return nil
}

func (c *Cron) run(ctx context.Context) {
	var cursor time.Time
	el := &triggers.Elected{
		Lock: c.lock, Reporter: c.rep, Logger: c.env.Logger, Retry: c.cfg.RetryEvery,
		Acquired: func(ctx context.Context) error {
			var err error
			cursor, err = c.loadCursor(ctx)
			// What another holder fired meanwhile is not held any more.
			for len(c.held) > 0 && !c.held[0].After(cursor) {
				c.held = c.held[1:]
			}
			return err
		},
		Step: func(ctx context.Context) time.Duration {
			retryIn := c.fireDue(ctx, &cursor)
			next := c.sched.Next(cursor)
			c.rep.SetNext(next)
			wait := next.Sub(c.env.Now())
			if retryIn > 0 {
				wait = min(wait, retryIn)
			}
			if len(c.held) > 0 && retryIn > 0 {
				wait = retryIn // held fires are overdue: wait out the refusal
			}
			return wait
		},
	}
	el.Run(ctx)
}

// specKey identifies the schedule a stored cursor belongs to.
func (c *Cron) specKey() string { return c.cfg.Schedule + "|" + c.sched.Location().String() }

// loadCursor reads the cursor, starting it at now when there is none or it
// belongs to another schedule (a changed schedule does not catch up on the
// old one's times).
func (c *Cron) loadCursor(ctx context.Context) (time.Time, error) {
	h, err := c.env.Store.Redis().HGetAll(ctx, c.key).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading cursor: %w", err)
	}
	if h["spec"] == c.specKey() {
		if t, err := time.Parse(time.RFC3339Nano, h["cursor"]); err == nil {
			return t, nil
		}
	}
	now := c.env.Now()
	if err := c.saveCursor(ctx, now); err != nil {
		return time.Time{}, err
	}
	c.env.Logger.InfoContext(ctx, "starting the schedule", "schedule", c.cfg.Schedule, "timezone", c.sched.Location().String(), "next_fire", c.sched.Next(now))
	return now, nil
}

func (c *Cron) saveCursor(ctx context.Context, t time.Time) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), triggers.CheckpointTimeout)
	defer cancel()
	return c.lock.HashUpdate(wctx, c.key,
		[]string{"cursor", t.UTC().Format(time.RFC3339Nano), "spec", c.specKey()}, nil)
}

// plan lists the fires due after cursor at now: those at most Grace late,
// preceded under catch_up by the last MaxCatchUp missed ones. dropped
// counts the missed fires left out; skipTo is where the cursor may move
// past them.
func (c *Cron) plan(cursor, now time.Time) (fires []time.Time, dropped int, skipTo time.Time) {
	keep := 0
	if c.cfg.Missed == config.MissedCatchUp {
		keep = c.cfg.MaxCatchUp
	}
	deadline := now.Add(-c.cfg.Grace)
	from := c.sched.skipTo(cursor, deadline, keep)
	if from.After(cursor) {
		dropped = int(from.Sub(cursor) / c.sched.every)
		skipTo = from
	}
	var late []time.Time
	steps := 0
	for t := c.sched.Next(from); !t.IsZero() && !t.After(now); t = c.sched.Next(t) {
		if steps++; steps > maxSteps {
			break // resumes from here at the next evaluation
		}
		if !t.Before(deadline) {
			fires = append(fires, t)
			continue
		}
		late = append(late, t)
		if len(late) > keep {
			dropped++
			skipTo = late[0]
			late = late[1:]
		}
	}
	return append(late, fires...), dropped, skipTo
}

// fireDue submits the fires due (first those held after a refusal by
// backpressure), moving the cursor past what was submitted (or refused for
// good) and past dropped missed fires. It returns how soon to try again
// (0: at the next fire).
func (c *Cron) fireDue(ctx context.Context, cursor *time.Time) (retryIn time.Duration) {
	now := c.env.Now()
	if len(c.held) > 0 && now.Before(c.heldUntil) {
		return c.heldUntil.Sub(now) // woken early (lock renewal, heartbeat)
	}
	from := *cursor
	if len(c.held) > 0 {
		from = c.held[len(c.held)-1]
	}
	fires, dropped, skipTo := c.plan(from, now)
	if dropped > 0 {
		c.env.Logger.WarnContext(ctx, "dropping missed fires", "missed", dropped, "policy", c.cfg.Missed,
			"max_catch_up", c.cfg.MaxCatchUp, "through", skipTo)
	}
	advance, wasHeld := skipTo, len(c.held) > 0
	if wasHeld {
		advance = time.Time{} // the cursor stays before the held fires
		fires = append(c.held, fires...)
		c.held = nil
	}
	var rest []time.Time
	if len(fires) > maxFiresPerSubmit {
		fires, rest = fires[:maxFiresPerSubmit], fires[maxFiresPerSubmit:]
	}
	if len(fires) > 0 {
		events := make([]*event.Event, len(fires))
		for i, t := range fires {
			events[i] = c.event(t)
		}
		_, err := c.env.Submit(ctx, c.cfg.Tenant, events)
		refused, isRefused := triggers.Refused(err)
		switch {
		case err == nil:
			c.rep.Fired(ctx, events[len(events)-1].ID(), len(events))
			advance, c.refusals = past(fires, rest, skipTo), 0
		case triggers.IsPermanent(err):
			c.rep.Failed(ctx, "firing: the events were refused; moving on", err)
			advance, c.refusals = past(fires, rest, skipTo), 0
		case isRefused:
			// Not missed: the fires wait and are submitted again.
			c.held = append(fires, rest...)
			rest = nil
			c.refusals++
			retryIn = c.backpressureWait(refused)
			c.heldUntil = now.Add(retryIn)
			c.rep.Failed(ctx, "firing: refused by backpressure; holding the fires, retrying with the same event ids",
				fmt.Errorf("refused by backpressure, holding %d fires, retrying in %s: %w", len(c.held), retryIn, err))
		default:
			c.rep.Failed(ctx, "firing: will retry with the same event ids", err)
			retryIn = c.cfg.RetryEvery
			if wasHeld { // fires held after a refusal stay held
				c.held = append(fires, rest...)
				c.heldUntil = now.Add(retryIn)
			}
			rest = nil // not held: planned again from the cursor
		}
	}
	if len(rest) > 0 {
		c.held = rest // submitted at once, before newer fires
		retryIn = time.Millisecond
	}
	if advance.After(*cursor) {
		if err := c.saveCursor(ctx, advance); err != nil {
			if !errors.Is(err, triggers.ErrLockLost) {
				c.rep.Failed(ctx, "moving the cron cursor", err)
				return c.cfg.RetryEvery
			}
			return 0
		}
		*cursor = advance
	}
	return retryIn
}

// past is where the cursor may move once fires were submitted (or refused
// for good): past the last of them, and past missed fires dropped after
// them (skipTo) unless fires remain to submit.
func past(fires, rest []time.Time, skipTo time.Time) time.Time {
	last := fires[len(fires)-1]
	if len(rest) == 0 && skipTo.After(last) {
		return skipTo
	}
	return last
}

// backpressureWait is the wait after a refusal by backpressure: the
// refusal's Retry-After, at least RetryEvery doubled for each refusal in a
// row after the first, at most BackpressureWaitMax.
func (c *Cron) backpressureWait(refused *admission.RefusedError) time.Duration {
	wait := c.cfg.RetryEvery << min(max(c.refusals-1, 0), 5)
	if refused != nil {
		wait = max(wait, refused.RetryAfter)
	}
	return min(wait, BackpressureWaitMax)
}

func (c *Cron) event(t time.Time) *event.Event {
	e := event.New()
	e.SetID(EventID(c.cfg.Name, t))
	e.SetSource(c.cfg.EventSource)
	e.SetType(c.cfg.EventType)
	e.SetTime(t)
	_ = e.SetData(event.ApplicationJSON, Fire{
		Trigger:       c.cfg.Name,
		Schedule:      c.cfg.Schedule,
		Timezone:      c.sched.Location().String(),
		ScheduledTime: t.In(c.sched.Location()).Format(time.RFC3339),
	})
	return &e
}
