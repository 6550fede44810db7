package triggers

import (
	"context"
	"log/slog"
	"time"
)

// Elected is the loop of a trigger that one replica evaluates at a time
// (cron schedules, object-store polls). Every replica runs it; the one that
// takes Lock calls Acquired once (to load its cursor or checkpoint, which
// may have moved while another replica held the lock), then Step
// repeatedly, renewing the lock and writing a heartbeat in between. The
// others stand by and try to take the lock every Retry.
type Elected struct {
	// Lock elects the replica. Required.
	Lock *Lock
	// Reporter records state and failures. Required.
	Reporter *Reporter
	// Logger receives lock changes. Required.
	Logger *slog.Logger
	// Retry is the wait between attempts to take the lock, and after an
	// Acquired error. Default 1s.
	Retry time.Duration
	// Acquired is called after the lock is taken, before the first Step;
	// after an error it is called again (Retry later), the lock kept.
	// Required.
	Acquired func(ctx context.Context) error
	// Step does the work due and returns how long to wait before the next
	// call; the loop renews the lock and writes heartbeats in between
	// without calling it. Required.
	Step func(ctx context.Context) time.Duration
}

// Run loops until ctx ends, then releases the lock.
func (e *Elected) Run(ctx context.Context) {
	retry := e.Retry
	if retry <= 0 {
		retry = time.Second
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Lock.Release(rctx); err != nil {
			e.Logger.Warn("releasing the trigger lock", "error", err)
		}
		e.Reporter.SetState(StateStopped)
	}()
	var (
		ready     bool      // Acquired succeeded under the current token
		stepAt    time.Time // when the work Step said it has next is due
		token     string
		nextBeat  time.Time
		lastState string
		lastNext  time.Time
	)
	for ctx.Err() == nil {
		wait := retry
		mark := e.Reporter.Failures()
		if e.Lock.Token() != "" && time.Now().After(e.Lock.RenewAt()) {
			if _, err := e.Lock.Renew(ctx); err != nil {
				e.Logger.WarnContext(ctx, "renewing the trigger lock", "error", err)
			}
		}
		if !e.Lock.Held() {
			if token != "" {
				e.Logger.WarnContext(ctx, "lost the trigger lock; standing by", "token", token)
				token = ""
			}
			ok, err := e.Lock.Acquire(ctx)
			switch {
			case err != nil:
				e.Reporter.Failed(ctx, "taking the trigger lock", err)
			case ok:
				token = e.Lock.Token()
				e.Logger.InfoContext(ctx, "took the trigger lock", "token", token)
			}
		}
		if !e.Lock.Held() {
			ready = false
			e.Reporter.Succeeded(ctx, mark) // the lock answered
			e.Reporter.SetState(StateStandby)
			sleep(ctx, wait)
			continue
		}
		if t := e.Lock.Token(); !ready || t != token {
			token = t
			if err := e.Acquired(ctx); err != nil {
				e.Reporter.Failed(ctx, "loading trigger progress", err)
				sleep(ctx, wait)
				continue
			}
			ready, nextBeat, stepAt = true, time.Time{}, time.Time{}
		}
		// A wake-up to renew the lock or beat the heart does not step:
		// a step does the work due, and a poller would list its bucket at
		// the renewal rate; a step with nothing due would clear the
		// failure of the step before, though nothing was retried.
		if !time.Now().Before(stepAt) {
			stepAt = time.Now().Add(e.step(ctx))
			if ctx.Err() == nil {
				// A step that recorded no failure clears an earlier one,
				// though it may have had nothing to submit.
				e.Reporter.Succeeded(ctx, mark)
			}
		}
		e.Reporter.SetState(StateRunning)
		// The store shows the next fire: write it when it moves, not only
		// with the periodic heartbeat.
		if st := e.Reporter.Status(); time.Now().After(nextBeat) || st.State != lastState || !st.NextFire.Equal(lastNext) {
			e.Reporter.Heartbeat(ctx)
			nextBeat, lastState, lastNext = time.Now().Add(HeartbeatEvery), st.State, st.NextFire
		}
		wait = min(time.Until(stepAt), time.Until(e.Lock.RenewAt()), time.Until(nextBeat))
		sleep(ctx, wait)
	}
}

// step calls Step, renewing the lock meanwhile: a step may outlast the
// lock's TTL (a long listing, a slow submission). The renewals are not
// cancelled with ctx: a step that is stopping still finishes its
// submission and checkpoint under the lock.
func (e *Elected) step(ctx context.Context) time.Duration {
	stop := make(chan struct{})
	renewed := make(chan struct{})
	rctx := context.WithoutCancel(ctx)
	go func() {
		defer close(renewed)
		t := time.NewTicker(e.Lock.TTL() / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := e.renew(rctx); err != nil {
					e.Logger.WarnContext(ctx, "renewing the trigger lock", "error", err)
				}
			}
		}
	}()
	defer func() { close(stop); <-renewed }()
	return e.Step(ctx)
}

// renew renews the lock, bounded by its TTL.
func (e *Elected) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.Lock.TTL())
	defer cancel()
	_, err := e.Lock.Renew(ctx)
	return err
}

// sleep waits d (at least a millisecond) or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(max(d, time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
