package triggers_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/triggerstest"
)

func TestLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := triggerstest.Store(t)
	a := store.Lock("nightly", "a", 300*time.Millisecond)
	b := store.Lock("nightly", "b", 300*time.Millisecond)
	state := store.Key("nightly", "cron")

	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, a.Held())
	require.Equal(t, "a#1", a.Token())
	require.Equal(t, "a#1", store.Redis().Get(ctx, a.Key()).Val())

	ok, err = b.Acquire(ctx)
	require.NoError(t, err)
	require.False(t, ok, "the lock is taken")
	require.False(t, b.Held())
	require.ErrorIs(t, b.HashUpdate(ctx, state, []string{"cursor", "b"}, nil), triggers.ErrLockLost)

	require.NoError(t, a.HashUpdate(ctx, state, []string{"cursor", "a1", "spec", "x"}, nil))
	ok, err = a.Renew(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	// a stops renewing: once its key expires, b takes the lock with a
	// higher fencing number, and a's writes no longer apply.
	testkit.Eventually(t, 5*time.Second, func() bool {
		ok, err := b.Acquire(ctx)
		require.NoError(t, err)
		return ok
	}, "b takes the expired lock")
	require.Equal(t, "b#2", b.Token())
	require.ErrorIs(t, a.HashUpdate(ctx, state, []string{"cursor", "a2"}, nil), triggers.ErrLockLost)
	require.False(t, a.Held(), "a forgets a lost token")
	ok, err = a.Renew(ctx)
	require.NoError(t, err)
	require.False(t, ok)

	require.NoError(t, b.HashUpdate(ctx, state, []string{"cursor", "b1"}, []string{"spec"}))
	require.Equal(t, map[string]string{"cursor": "b1"}, store.Redis().HGetAll(ctx, state).Val())

	// Releasing a lock one does not hold changes nothing; the holder's
	// release frees it at once.
	require.NoError(t, a.Release(ctx))
	require.Equal(t, "b#2", store.Redis().Get(ctx, b.Key()).Val())
	require.NoError(t, b.Release(ctx))
	require.Zero(t, store.Redis().Exists(ctx, b.Key()).Val())
	ok, err = a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "a#3", a.Token())
}

func TestStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := triggerstest.Store(t)
	now := time.Now().UTC().Truncate(time.Millisecond)

	recs, err := store.Read(ctx, "never")
	require.NoError(t, err)
	require.Equal(t, triggers.Record{}, recs["never"])
	require.False(t, recs["never"].Fresh(now))

	require.NoError(t, store.Heartbeat(ctx, "t", "host:1:abc", triggers.StateRunning, now.Add(time.Minute), now))
	require.NoError(t, store.Fired(ctx, "t", "t/1", 2, now))
	require.NoError(t, store.Failed(ctx, "t", errors.New("boom"), now))
	recs, err = store.Read(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, triggers.Record{
		State: "running", Owner: "host:1:abc", Heartbeat: now, LastFire: now, LastEventID: "t/1",
		NextFire: now.Add(time.Minute), Fires: 2, LastError: "boom", LastErrorAt: now,
	}, recs["t"])
	require.True(t, recs["t"].Fresh(now))
	require.False(t, recs["t"].Fresh(now.Add(triggers.StaleAfter)))

	// A fire clears the last error and adds up.
	require.NoError(t, store.Fired(ctx, "t", "t/2", 1, now))
	recs, err = store.Read(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, int64(3), recs["t"].Fires)
	require.Empty(t, recs["t"].LastError)

	// So does a success without a fire.
	require.NoError(t, store.Failed(ctx, "t", errors.New("boom"), now))
	require.NoError(t, store.Succeeded(ctx, "t"))
	recs, err = store.Read(ctx, "t")
	require.NoError(t, err)
	require.Empty(t, recs["t"].LastError)
	require.True(t, recs["t"].LastErrorAt.IsZero())
	require.Equal(t, int64(3), recs["t"].Fires)
}

func TestIsPermanent(t *testing.T) {
	t.Parallel()
	require.True(t, triggers.IsPermanent(&ingest.Error{Status: 422, Msg: "no function"}))
	require.True(t, triggers.IsPermanent(errors.Join(errors.New("x"), &ingest.Error{Status: 400})))
	require.False(t, triggers.IsPermanent(&ingest.Error{Status: 503}))
	require.False(t, triggers.IsPermanent(context.Canceled))
}

// TestElectedRecovers: a trigger that failed once and then steps without
// error (a quiet bucket, no fire due) is running again, its last error
// cleared here and in the store; a failure during a step is kept.
func TestElectedRecovers(t *testing.T) {
	t.Parallel()
	store := triggerstest.Store(t)
	env := triggers.Env{Submitter: triggerstest.NewSubmitter(), Store: store, Owner: "r", Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
	rep := triggers.NewReporter(env, "quiet", "objectstore")
	var steps atomic.Int64
	var failAgain atomic.Bool
	el := &triggers.Elected{
		Lock: store.Lock("quiet", env.Owner, 3*time.Second), Reporter: rep, Logger: env.Logger,
		Retry:    10 * time.Millisecond,
		Acquired: func(context.Context) error { return nil },
		Step: func(ctx context.Context) time.Duration {
			if n := steps.Add(1); n == 1 || failAgain.Load() {
				rep.Failed(ctx, "polling", errors.New("listing: connection reset"))
			}
			return 10 * time.Millisecond
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); el.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testkit.Eventually(t, 5*time.Second, func() bool { return steps.Load() >= 3 }, "steps after the failure")
	st := rep.Status()
	require.Equal(t, triggers.StateRunning, st.State)
	require.Empty(t, st.LastError)
	testkit.Eventually(t, 5*time.Second, func() bool {
		recs, err := store.Read(context.Background(), "quiet")
		require.NoError(t, err)
		return recs["quiet"].LastError == "" && recs["quiet"].State == triggers.StateRunning
	}, "the store shows the trigger running, without error")

	failAgain.Store(true)
	testkit.Eventually(t, 5*time.Second, func() bool {
		st := rep.Status()
		return st.State == triggers.StateFailing && st.LastError != ""
	}, "a step that fails leaves the trigger failing")
}

// TestElectedStoppingStepKeepsLock: a step still running when the loop is
// stopped (a submission finishing, its checkpoint) keeps the lock renewed
// until it returns, however longer than the TTL it takes, so no other
// replica steps meanwhile; the lock is released after it.
func TestElectedStoppingStepKeepsLock(t *testing.T) {
	t.Parallel()
	store := triggerstest.Store(t)
	env := triggers.Env{Submitter: triggerstest.NewSubmitter(), Store: store, Owner: "a", Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
	const ttl = 600 * time.Millisecond
	entered, finish := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	el := &triggers.Elected{
		Lock: store.Lock("slow", "a", ttl), Reporter: triggers.NewReporter(env, "slow", "cron"), Logger: env.Logger,
		Retry:    10 * time.Millisecond,
		Acquired: func(context.Context) error { return nil },
		Step: func(ctx context.Context) time.Duration {
			if once.CompareAndSwap(false, true) {
				close(entered)
				<-ctx.Done()
				<-finish // still working after the stop
			}
			return 10 * time.Millisecond
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); el.Run(ctx) }()
	<-entered
	cancel()

	other := store.Lock("slow", "b", ttl)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(4 * ttl); time.Now().Before(deadline); <-tick.C {
		ok, err := other.Acquire(context.Background())
		require.NoError(t, err)
		require.False(t, ok, "the lock expired under the stopping step")
	}
	close(finish)
	<-done
	ok, err := other.Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok, "released once the step returned")
	require.NoError(t, other.Release(context.Background()))
}

// TestElected runs the loop on three replicas: exactly one steps at a time,
// and stopping it hands over to another.
func TestElected(t *testing.T) {
	t.Parallel()
	store := triggerstest.Store(t)
	env := triggers.Env{Submitter: triggerstest.NewSubmitter(), Store: store, Logger: slog.New(slog.DiscardHandler)}.WithDefaults()

	// A long TTL: a starved renewal (-race, loaded machine) does not let
	// another replica take over, and a takeover well within it can only be
	// the stopped leader's release.
	const electedTTL = 10 * time.Second
	var stepping atomic.Int32 // replicas inside Step at once
	var overlap atomic.Bool
	type replica struct {
		steps  atomic.Int64
		cancel context.CancelFunc
		done   chan struct{}
	}
	replicas := make([]*replica, 3)
	for i := range replicas {
		r := &replica{done: make(chan struct{})}
		replicas[i] = r
		renv := env
		renv.Owner = "r" + string(rune('0'+i))
		el := &triggers.Elected{
			Lock:     store.Lock("elected", renv.Owner, electedTTL),
			Reporter: triggers.NewReporter(renv, "elected", "cron"),
			Logger:   renv.Logger,
			Retry:    20 * time.Millisecond,
			Acquired: func(context.Context) error { return nil },
			Step: func(context.Context) time.Duration {
				if stepping.Add(1) > 1 {
					overlap.Store(true)
				}
				r.steps.Add(1)
				stepping.Add(-1)
				return 10 * time.Millisecond
			},
		}
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		go func() { defer close(r.done); el.Run(ctx) }()
	}
	defer func() {
		for _, r := range replicas {
			r.cancel()
			<-r.done
		}
	}()

	leader := func() int {
		owner, _, _ := strings.Cut(store.Redis().Get(context.Background(), store.Key("elected", "lock")).Val(), "#")
		return int(owner[len(owner)-1] - '0')
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		return store.Redis().Exists(context.Background(), store.Key("elected", "lock")).Val() == 1
	}, "a replica takes the lock")
	first := leader()
	testkit.Eventually(t, 5*time.Second, func() bool { return replicas[first].steps.Load() >= 5 }, "the leader steps")
	for i, r := range replicas {
		if i != first {
			require.Zero(t, r.steps.Load(), "replica %d stands by", i)
		}
	}

	// Stopping the leader releases the lock: another replica takes over
	// well within the lock's TTL (it retries every 20ms).
	replicas[first].cancel()
	<-replicas[first].done
	testkit.Eventually(t, electedTTL/2, func() bool {
		for i, r := range replicas {
			if i != first && r.steps.Load() > 0 {
				return true
			}
		}
		return false
	}, "another replica takes over")
	require.False(t, overlap.Load(), "two replicas stepped at once")

	// The new leader's heartbeat names it.
	testkit.Eventually(t, 5*time.Second, func() bool {
		recs, err := store.Read(context.Background(), "elected")
		require.NoError(t, err)
		return recs["elected"].State == triggers.StateRunning && recs["elected"].Owner == "r"+string(rune('0'+leader()))
	}, "the new leader's heartbeat")
	require.NotEqual(t, first, leader())
}

// TestElectedRenewalsDoNotStep: the loop wakes to renew the lock more often
// than the trigger has work due; such a wake-up renews and does not call
// Step. Before, every renewal called Step: a poller listed its bucket at
// the renewal rate instead of its poll interval, and a step with nothing
// due cleared the failure of the step before (a failing trigger showed
// running after the next renewal, though nothing was retried).
func TestElectedRenewalsDoNotStep(t *testing.T) {
	t.Parallel()
	store := triggerstest.Store(t)
	env := triggers.Env{Submitter: triggerstest.NewSubmitter(), Store: store, Owner: "r", Logger: slog.New(slog.DiscardHandler)}.WithDefaults()
	rep := triggers.NewReporter(env, "slowpoll", "objectstore")
	const ttl = 300 * time.Millisecond // renewed every 100 ms
	var steps atomic.Int64
	el := &triggers.Elected{
		Lock: store.Lock("slowpoll", env.Owner, ttl), Reporter: rep, Logger: env.Logger,
		Retry:    10 * time.Millisecond,
		Acquired: func(context.Context) error { return nil },
		Step: func(ctx context.Context) time.Duration {
			if steps.Add(1) == 1 {
				rep.Failed(ctx, "polling", errors.New("listing: connection reset"))
			}
			return time.Minute // the next poll
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); el.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Count renewals from the lock's TTL going back up.
	lockKey := store.Key("slowpoll", "lock")
	renewals, last := 0, time.Duration(0)
	testkit.Eventually(t, 10*time.Second, func() bool {
		pttl := store.Redis().PTTL(context.Background(), lockKey).Val()
		if pttl > last && last > 0 {
			renewals++
		}
		last = pttl
		return renewals >= 3
	}, "three renewals of the lock")
	require.Equal(t, int64(1), steps.Load(), "renewals called Step")
	st := rep.Status()
	require.Equal(t, triggers.StateFailing, st.State)
	require.Equal(t, "listing: connection reset", st.LastError)
}
