package cron_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/cron"
	"github.com/tasklane/tasklane/triggers/triggerstest"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err)
	return tm
}

// inBubble runs a test that waits for schedules on synctest's fake clock:
// time.Now, timers and sleeps (the trigger's loop, its lock, the test's
// polls) move only when every goroutine of the test waits, so "@every 1s"
// fires as often as on the wall clock, in order, without the test waiting
// seconds for it. Redis answers on the wall clock (the test waits for it as
// for any goroutine that is not blocked on the bubble's clock or channels);
// the lock's TTL there is renewed long before it could expire.
func inBubble(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	// The embedded Redis starts on first use and runs for the whole test
	// binary: started inside a bubble, its goroutines would belong to it.
	testkit.RedisURL()
	synctest.Test(t, f)
}

// eventually polls cond like testkit.Eventually, then lets the trigger's
// loop finish the step it is in (synctest.Wait returns once every goroutine
// of the bubble waits for the clock or a channel): on the fake clock the
// poll and a fire wake at the same instant, and a status read in between
// would see the submission without its outcome.
func eventually(t *testing.T, within time.Duration, cond func() bool, msg string) {
	t.Helper()
	testkit.Eventually(t, within, cond, "%s", msg)
	synctest.Wait()
}

func TestSchedule(t *testing.T) {
	t.Parallel()

	// @every is aligned to the Unix epoch, whatever time it starts from.
	s, err := cron.ParseSchedule("@every 15s", "")
	require.NoError(t, err)
	require.Equal(t, at(t, "2026-01-01T00:00:15Z"), s.Next(at(t, "2026-01-01T00:00:00Z")))
	require.Equal(t, at(t, "2026-01-01T00:00:15Z"), s.Next(at(t, "2026-01-01T00:00:14.999Z")))
	require.True(t, at(t, "2026-01-01T00:00:30Z").Equal(s.Next(at(t, "2026-01-01T09:00:15+09:00"))))

	// Expressions are read in the zone, across a DST change.
	s, err = cron.ParseSchedule("30 2 * * *", "Europe/Berlin")
	require.NoError(t, err)
	next := s.Next(at(t, "2026-03-28T12:00:00Z"))
	require.Equal(t, "2026-03-30T02:30:00+02:00", next.Format(time.RFC3339), "2:30 does not exist on 2026-03-29 in Berlin")

	_, err = cron.ParseSchedule("@every 1s", "Mars/Olympus")
	require.ErrorContains(t, err, `invalid time zone "Mars/Olympus"`)
	_, err = cron.ParseSchedule("@every 0.5s", "UTC")
	require.ErrorIs(t, err, config.ErrInvalidSchedule)

	require.Equal(t, "nightly/2026-01-01T02:00:00Z", cron.EventID("nightly", at(t, "2026-01-01T10:00:00+08:00")))
}

type fixture struct {
	store *triggers.Store
	sub   *triggerstest.Submitter
}

func newFixture(t *testing.T) *fixture {
	return &fixture{store: triggerstest.Store(t), sub: triggerstest.NewSubmitter()}
}

func (f *fixture) env(owner string, now func() time.Time) triggers.Env {
	return triggers.Env{Submitter: f.sub, Store: f.store, Owner: owner, Logger: slog.New(slog.DiscardHandler), Now: now}
}

func start(t *testing.T, cfg cron.Config, env triggers.Env) *cron.Cron {
	t.Helper()
	c, err := cron.New(cfg, env)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

func baseConfig(name, schedule string) cron.Config {
	return cron.Config{
		Name: name, Tenant: "acme", Schedule: schedule,
		EventType: "com.example.tick", EventSource: "/triggers/" + name,
		LockTTL: time.Second, RetryEvery: 20 * time.Millisecond,
	}
}

// secondsOf parses the scheduled times out of cron event ids.
func secondsOf(t *testing.T, name string, ids []string) []time.Time {
	t.Helper()
	out := make([]time.Time, len(ids))
	for i, id := range ids {
		ts, ok := cutPrefix(id, name+"/")
		require.True(t, ok, id)
		out[i] = at(t, ts)
	}
	return out
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) < len(p) || s[:len(p)] != p {
		return "", false
	}
	return s[len(p):], true
}

// requireConsecutive checks that times are whole seconds one after another.
func requireConsecutive(t *testing.T, times []time.Time) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		require.Equal(t, time.Second, times[i].Sub(times[i-1]), "gap or repeat between %s and %s", times[i-1], times[i])
	}
}

// TestCronReplicas runs "@every 1s" on two replicas: only the lock holder
// submits, each fire once, and stopping it hands over without a gap.
func TestCronReplicas(t *testing.T) {
	t.Parallel()
	inBubble(t, func(t *testing.T) {
		f := newFixture(t)
		cfg := baseConfig("tick", "@every 1s")
		// Long enough that a renewal starved under -race on a loaded machine
		// does not let the standby take over (and fire) while the holder runs;
		// the handover on Stop releases the lock, so it does not wait for it.
		cfg.LockTTL = 4 * time.Second
		a := start(t, cfg, f.env("a", nil))
		b := start(t, cfg, f.env("b", nil))

		eventually(t, 10*time.Second, func() bool { return f.sub.Len() >= 3 }, "three fires")
		holder, other := a, b
		if b.Status().State == triggers.StateRunning {
			holder, other = b, a
		}
		require.Equal(t, triggers.StateRunning, holder.Status().State)
		require.Equal(t, triggers.StateStandby, other.Status().State)
		require.Zero(t, other.Status().Fires, "the standby replica fires nothing")

		require.NoError(t, holder.Stop(context.Background()))
		require.Equal(t, triggers.StateStopped, holder.Status().State)
		n := f.sub.Len()
		eventually(t, 10*time.Second, func() bool { return f.sub.Len() >= n+3 }, "the other replica fires")
		require.Equal(t, triggers.StateRunning, other.Status().State)
		require.NoError(t, other.Stop(context.Background()))

		times := secondsOf(t, "tick", f.sub.IDs())
		requireConsecutive(t, times)
		require.Zero(t, f.sub.Duplicates(), "no fire was submitted twice")
		require.Equal(t, int64(f.sub.Len()), a.Status().Fires+b.Status().Fires)

		// Every event has the configured attributes and the fire as data.
		e := f.sub.Events()[0]
		require.Equal(t, "acme", e.Tenant)
		require.Equal(t, "com.example.tick", e.Event.Type())
		require.Equal(t, "/triggers/tick", e.Event.Source())
		require.True(t, times[0].Equal(e.Event.Time()))
		var fire cron.Fire
		require.NoError(t, json.Unmarshal(e.Event.Data(), &fire))
		require.Equal(t, cron.Fire{Trigger: "tick", Schedule: "@every 1s", Timezone: "UTC", ScheduledTime: times[0].Format(time.RFC3339)}, fire)

		recs, err := f.store.Read(context.Background(), "tick")
		require.NoError(t, err)
		require.Equal(t, int64(f.sub.Len()), recs["tick"].Fires)
		require.Equal(t, f.sub.IDs()[f.sub.Len()-1], recs["tick"].LastEventID)
	})
}

// seedCursor stores a cursor as a previous run would have.
func seedCursor(t *testing.T, f *fixture, name, schedule string, cursor time.Time) {
	t.Helper()
	require.NoError(t, f.store.Redis().HSet(context.Background(), f.store.Key(name, "cron"),
		"cursor", cursor.Format(time.RFC3339Nano), "spec", schedule+"|UTC").Err())
}

// TestCronMissedFires restarts a schedule after downtime, on a frozen clock:
// skip fires only what is within grace; catch_up also the most recent
// missed fires, up to max_catch_up.
func TestCronMissedFires(t *testing.T) {
	t.Parallel()
	now := at(t, "2026-01-01T05:00:20Z")
	clock := func() time.Time { return now }
	for _, tt := range []struct {
		missed string
		want   []string
	}{
		{config.MissedSkip, []string{"2026-01-01T05:00:00Z"}},
		{config.MissedCatchUp, []string{"2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z", "2026-01-01T05:00:00Z"}},
	} {
		t.Run(tt.missed, func(t *testing.T) {
			t.Parallel()
			inBubble(t, func(t *testing.T) {
				f := newFixture(t)
				cfg := baseConfig("hourly", "0 * * * *")
				cfg.Missed, cfg.MaxCatchUp = tt.missed, 2
				seedCursor(t, f, "hourly", "0 * * * *", at(t, "2026-01-01T00:00:00Z"))
				c := start(t, cfg, f.env("a", clock))
				eventually(t, 5*time.Second, func() bool { return f.sub.Len() == len(tt.want) }, "the fires")
				var want []string
				for _, w := range tt.want {
					want = append(want, "hourly/"+w)
				}
				require.Equal(t, want, f.sub.IDs())
				eventually(t, 5*time.Second, func() bool {
					return c.Status().NextFire.Equal(at(t, "2026-01-01T06:00:00Z"))
				}, "next fire")
				require.NoError(t, c.Stop(context.Background()))
				cursor := f.store.Redis().HGet(context.Background(), f.store.Key("hourly", "cron"), "cursor").Val()
				require.Equal(t, "2026-01-01T05:00:00Z", cursor)
			})
		})
	}
}

// TestCronChangedScheduleStartsFresh: a cursor of another schedule is not
// caught up on.
func TestCronChangedScheduleStartsFresh(t *testing.T) {
	t.Parallel()
	inBubble(t, func(t *testing.T) {
		now := at(t, "2026-01-01T05:00:20Z")
		f := newFixture(t)
		seedCursor(t, f, "hourly", "0 */2 * * *", at(t, "2026-01-01T00:00:00Z"))
		cfg := baseConfig("hourly", "0 * * * *")
		cfg.Missed = config.MissedCatchUp
		c := start(t, cfg, f.env("a", func() time.Time { return now }))
		eventually(t, 5*time.Second, func() bool { return !c.Status().NextFire.IsZero() }, "running")
		require.Zero(t, f.sub.Len())
		require.Equal(t, at(t, "2026-01-01T06:00:00Z"), c.Status().NextFire.UTC())
	})
}

// TestCronSubmitFailures: a transient failure is retried with the same ids
// (nothing lost, nothing doubled); a permanent one (no function takes the
// type) is recorded and skipped.
func TestCronSubmitFailures(t *testing.T) {
	t.Parallel()

	t.Run("Transient", func(t *testing.T) {
		t.Parallel()
		inBubble(t, func(t *testing.T) {
			f := newFixture(t)
			var failing atomic.Bool
			failing.Store(true)
			f.sub.FailFunc = func(string, []*event.Event) error {
				if failing.Load() {
					return &ingest.Error{Status: 503, Msg: "the task ledger did not answer"}
				}
				return nil
			}
			c := start(t, baseConfig("tick", "@every 1s"), f.env("a", nil))
			eventually(t, 10*time.Second, func() bool { return f.sub.Calls() >= 3 }, "attempts")
			require.Zero(t, f.sub.Len())
			require.Equal(t, triggers.StateFailing, c.Status().State)
			require.Contains(t, c.Status().LastError, "the task ledger did not answer")
			failing.Store(false)
			eventually(t, 10*time.Second, func() bool { return f.sub.Len() >= 3 }, "fires after recovery")
			require.NoError(t, c.Stop(context.Background()))
			requireConsecutive(t, secondsOf(t, "tick", f.sub.IDs()))
			require.Empty(t, c.Status().LastError)
		})
	})

	t.Run("Permanent", func(t *testing.T) {
		t.Parallel()
		inBubble(t, func(t *testing.T) {
			f := newFixture(t)
			var mu sync.Mutex
			tried := map[string]int{}
			f.sub.FailFunc = func(_ string, events []*event.Event) error {
				mu.Lock()
				defer mu.Unlock()
				for _, e := range events {
					tried[e.ID()]++
				}
				return &ingest.Error{Status: 422, Msg: `type: no function subscribes to type "com.example.tick"`}
			}
			cfg := baseConfig("tick", "@every 1s")
			// A step with nothing due (woken to renew the lock) clears the
			// last error: renewals far apart leave only the fires to wake
			// the loop, so the state is read as the last fire left it.
			cfg.LockTTL = time.Minute
			c := start(t, cfg, f.env("a", nil))
			eventually(t, 10*time.Second, func() bool { return f.sub.Calls() >= 3 }, "attempts")
			require.Equal(t, triggers.StateFailing, c.Status().State)
			require.NoError(t, c.Stop(context.Background()))
			mu.Lock()
			for id, n := range tried {
				require.Equal(t, 1, n, "a refused fire is not tried again: %s", id)
			}
			mu.Unlock()
			recs, err := f.store.Read(context.Background(), "tick")
			require.NoError(t, err)
			require.Contains(t, recs["tick"].LastError, "no function subscribes")
			require.Zero(t, f.sub.Len())
		})
	})
}

// TestCronBackpressure: fires refused by backpressure are held, not
// missed: refused for longer than the grace, every one still fires once
// the refusals stop, the first refused one included, without gaps; the
// resubmissions wait at least the refusal's Retry-After.
func TestCronBackpressure(t *testing.T) {
	t.Parallel()
	inBubble(t, func(t *testing.T) {
		f := newFixture(t)
		var mu sync.Mutex
		var first string
		var refusedAt []time.Time
		refusing := true
		f.sub.FailFunc = func(_ string, events []*event.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if first == "" {
				first = events[0].ID()
			}
			if !refusing {
				return nil
			}
			refusedAt = append(refusedAt, time.Now())
			return fmt.Errorf("submitting: %w", &admission.RefusedError{
				Tenant: "acme", Reason: contracts.RefusedTenantBacklog, Backlog: 12, Limit: 10, RetryAfter: time.Second,
			})
		}
		cfg := baseConfig("tick", "@every 1s")
		cfg.Grace = time.Second
		cfg.LockTTL = time.Minute // no renewal step clears the refusal's error (see Permanent)
		c := start(t, cfg, f.env("a", nil))
		eventually(t, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(refusedAt) >= 3
		}, "refused three times")
		require.Contains(t, c.Status().LastError, "refused by backpressure")
		require.Zero(t, f.sub.Len())
		mu.Lock()
		for i := 1; i < len(refusedAt); i++ {
			require.GreaterOrEqual(t, refusedAt[i].Sub(refusedAt[i-1]), time.Second-50*time.Millisecond,
				"a resubmission waits the refusal's Retry-After")
		}
		refusing = false
		mu.Unlock()
		eventually(t, 10*time.Second, func() bool { return f.sub.Len() >= 5 }, "the held fires and later ones")
		require.NoError(t, c.Stop(context.Background()))
		ids := f.sub.IDs()
		mu.Lock()
		require.Equal(t, first, ids[0], "the first refused fire fires, though far past the grace")
		mu.Unlock()
		requireConsecutive(t, secondsOf(t, "tick", ids))
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, err := cron.New(cron.Config{Name: "x", Schedule: "@every 1s"}, triggers.Env{})
	require.ErrorContains(t, err, "Name, Tenant, EventType and EventSource are required")
	require.ErrorContains(t, err, "triggers.Env.Submitter: missing")
	cfg := baseConfig("x", "61 * * * *")
	_, err = cron.New(cfg, f.env("a", nil))
	require.ErrorIs(t, err, config.ErrInvalidSchedule)
	cfg = baseConfig("x", "@hourly")
	cfg.Missed = "sometimes"
	_, err = cron.New(cfg, f.env("a", nil))
	require.ErrorContains(t, err, `invalid Missed "sometimes"`)
}
