package ledger_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// Tests of the dispatch path: Admit, Take and Unpark (dispatch.go), and
// the released step of Finish and Retry, against real Redis with the
// ledger's clock under the test's control.

// takeLease is the lease of the attempts the tests start.
const takeLease = 30 * time.Second

// setupDispatch is setup with tenant quotas (as Finish and Retry see them)
// and the functions whose running attempts are capped.
func setupDispatch(t *testing.T, quotas map[string]int, limited ...string) *bundle {
	t.Helper()
	return setupLayout(t, testkit.LedgerPartitions(), quotas, limited...)
}

// setupLayout is setupDispatch with the ledger's partitions (0: the
// legacy key layout).
func setupLayout(t *testing.T, partitions int, quotas map[string]int, limited ...string) *bundle {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	b := &bundle{now: time.Now().Truncate(time.Millisecond)}
	b.l = ledger.New(ledger.Config{
		Redis: rdb, Prefix: prefix, Partitions: partitions, PublishGuard: 30 * time.Second,
		Now:         func() time.Time { b.mu.Lock(); defer b.mu.Unlock(); return b.now },
		TenantQuota: func(tenant string) int { return quotas[tenant] },
		Limited:     func(fn string) bool { return slices.Contains(limited, fn) },
	})
	return b
}

// record creates one task of fn for tenant at priority and returns its id;
// mod may set a due or expiry time.
func (b *bundle) record(t *testing.T, tenant, fn string, priority int, mod ...func(*ledger.EventTasks)) string {
	t.Helper()
	require.Contains(t, testTenants, tenant)
	id := testkit.UniqueName("task")
	ev := ledger.EventTasks{
		Tenant: tenant, Event: contracts.EventRef{ID: testkit.UniqueName("ev"), Source: "/test", Type: "t"},
		Tasks: []ledger.NewTask{{ID: id, Function: fn, Priority: priority, Message: []byte("m-" + id)}},
	}
	for _, m := range mod {
		m(&ev)
	}
	_, err := b.l.Create(context.Background(), []ledger.EventTasks{ev})
	require.NoError(t, err)
	return id
}

func (b *bundle) admit(t *testing.T, tenant, id, fn string, priority int) ledger.Admission {
	t.Helper()
	a, err := b.l.Admit(context.Background(), ledger.TaskRef{Tenant: tenant, ID: id, Function: fn, Priority: priority})
	require.NoError(t, err)
	return a
}

// ready records and admits n tasks, 1 ms apart, and returns their ids.
func (b *bundle) ready(t *testing.T, tenant, fn string, priority, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		b.advance(time.Millisecond)
		ids[i] = b.record(t, tenant, fn, priority)
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, tenant, ids[i], fn, priority).Verdict)
	}
	return ids
}

func (b *bundle) take(t *testing.T, fn string, n int, lim ledger.TakeLimits) ledger.Taken {
	t.Helper()
	tk, err := b.l.Take(context.Background(), fn, "d1", n, takeLease, lim)
	require.NoError(t, err)
	b.checkCounts(t, fn)
	return tk
}

func (b *bundle) finish(t *testing.T, fn string, s ledger.Started) {
	t.Helper()
	ok, err := b.l.Finish(context.Background(), s.Tenant, s.ID, fn, s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok, "finishing %s", s.ID)
}

func (b *bundle) fnPrefix(fn string) string { return strings.TrimSuffix(b.l.FnStateKey(fn), "state") }

// queued returns the ready entries of tenant in fn's band.
func (b *bundle) queued(t *testing.T, fn string, band ledger.Band, tenant string) []string {
	t.Helper()
	ids, err := b.l.Redis().ZRange(context.Background(), b.fnPrefix(fn)+"ready:"+string(band)+":"+tenant, 0, -1).Result()
	require.NoError(t, err)
	return ids
}

// inRing says whether tenant is in the round robin of fn's band.
func (b *bundle) inRing(t *testing.T, fn string, band ledger.Band, tenant string) bool {
	t.Helper()
	err := b.l.Redis().ZScore(context.Background(), b.fnPrefix(fn)+"ready:"+string(band), tenant).Err()
	if errors.Is(err, redis.Nil) {
		return false
	}
	require.NoError(t, err)
	return true
}

// count returns n_<band> of fn's state.
func (b *bundle) count(t *testing.T, fn string, band ledger.Band) int {
	t.Helper()
	s, err := b.l.Redis().HGet(context.Background(), b.l.FnStateKey(fn), "n_"+string(band)).Result()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	require.NoError(t, err)
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// testTenants are the tenants these tests use (checkCounts reads their
// queues; a SCAN of a shared Redis would be slow).
var testTenants = []string{"a", "b", "c"}

// checkCounts checks that each n_<band> of fn is the number of entries in
// the band's tenant queues, in one round trip.
func (b *bundle) checkCounts(t *testing.T, fn string) {
	t.Helper()
	ctx := context.Background()
	var state *redis.SliceCmd
	cards := map[ledger.Band][]*redis.IntCmd{}
	_, err := b.l.Redis().Pipelined(ctx, func(p redis.Pipeliner) error {
		state = p.HMGet(ctx, b.l.FnStateKey(fn), "n_high", "n_normal", "n_low")
		for _, band := range ledger.Bands {
			for _, tenant := range testTenants {
				cards[band] = append(cards[band], p.ZCard(ctx, b.fnPrefix(fn)+"ready:"+string(band)+":"+tenant))
			}
		}
		return nil
	})
	require.NoError(t, err)
	for i, band := range ledger.Bands {
		sum := int64(0)
		for _, c := range cards[band] {
			sum += c.Val()
		}
		n := 0
		if v, ok := state.Val()[i].(string); ok {
			n, err = strconv.Atoi(v)
			require.NoError(t, err)
		}
		require.GreaterOrEqual(t, n, 0, "n_%s of %s", band, fn)
		require.EqualValues(t, sum, n, "n_%s of %s against its queues", band, fn)
	}
}

func (b *bundle) stateOf(t *testing.T, tenant, id string) contracts.State {
	t.Helper()
	task, err := b.l.Get(context.Background(), tenant, id)
	require.NoError(t, err)
	return task.State
}

func (b *bundle) delayed(t *testing.T, tenant, id string) (time.Time, bool) {
	t.Helper()
	s, err := b.l.Redis().ZScore(context.Background(), b.l.DelayKey(tenant), ledger.Member(tenant, id)).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false
	}
	require.NoError(t, err)
	return time.UnixMicro(int64(s)), true
}

// wakes subscribes to the wake channel.
func (b *bundle) wakes(t *testing.T) <-chan *redis.Message {
	t.Helper()
	ps := b.l.Redis().Subscribe(context.Background(), b.l.WakeChannel())
	t.Cleanup(func() { _ = ps.Close() })
	_, err := ps.Receive(context.Background()) // the subscription is live
	require.NoError(t, err)
	return ps.Channel()
}

// wakesSoFar returns the functions woken since the last call: it publishes
// a marker and collects what arrives before it (one connection delivers
// in order).
func (b *bundle) wakesSoFar(t *testing.T, ch <-chan *redis.Message) []string {
	t.Helper()
	const marker = "\x00marker"
	require.NoError(t, b.l.Redis().Publish(context.Background(), b.l.WakeChannel(), marker).Err())
	var got []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if m.Payload == marker {
				return got
			}
			got = append(got, m.Payload)
		case <-timeout:
			t.Fatalf("the marker never arrived; woken so far: %v", got)
		}
	}
}

func tenantsOf(tk ledger.Taken) []string {
	out := make([]string, len(tk.Tasks))
	for i, s := range tk.Tasks {
		out[i] = s.Tenant
	}
	return out
}

func TestAdmitVerdicts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("admitted then ready", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		id := b.record(t, "a", "f", 5)
		_, guarded := b.delayed(t, "a", id)
		require.True(t, guarded, "a new task has a publish guard")
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
		_, guarded = b.delayed(t, "a", id)
		require.False(t, guarded, "a ready task needs no publish guard")
		require.Equal(t, ledger.AdmitReady, b.admit(t, "a", id, "f", 5).Verdict, "a duplicate delivery")
		require.Equal(t, []string{id}, b.queued(t, "f", ledger.BandNormal, "a"))
		require.Equal(t, 1, b.count(t, "f", ledger.BandNormal))
		require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"))
		require.Equal(t, contracts.StateQueued, b.stateOf(t, "a", id))
		b.checkCounts(t, "f")
	})

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		require.Equal(t, ledger.AdmitMissing, b.admit(t, "a", "nope", "f", 5).Verdict)
		b.checkCounts(t, "f")
	})

	t.Run("done", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		cancelled := b.record(t, "a", "f", 5)
		_, err := b.l.Cancel(ctx, "a", cancelled)
		require.NoError(t, err)
		a := b.admit(t, "a", cancelled, "f", 5)
		require.Equal(t, ledger.AdmitDone, a.Verdict)
		require.Equal(t, "cancelled", a.State)

		ids := b.ready(t, "a", "f", 5, 1)
		tk := b.take(t, "f", 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		b.finish(t, "f", tk.Tasks[0])
		a = b.admit(t, "a", ids[0], "f", 5)
		require.Equal(t, ledger.AdmitDone, a.Verdict)
		require.Equal(t, "succeeded", a.State)
		require.Empty(t, b.queued(t, "f", ledger.BandNormal, "a"))
		b.checkCounts(t, "f")
	})

	t.Run("paused", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		id := b.record(t, "a", "f", 5)
		require.NoError(t, b.l.Redis().HSet(ctx, b.taskKey("a", id), "state", "paused").Err())
		require.Equal(t, ledger.AdmitPaused, b.admit(t, "a", id, "f", 5).Verdict)
		require.Empty(t, b.queued(t, "f", ledger.BandNormal, "a"))
	})

	t.Run("busy", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		id := b.ready(t, "a", "f", 5, 1)[0]
		tk := b.take(t, "f", 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		b.advance(takeLease - time.Second)
		a := b.admit(t, "a", id, "f", 5)
		require.Equal(t, ledger.AdmitBusy, a.Verdict)
		require.Equal(t, tk.LeaseUntil.UnixMicro(), a.LeaseUntil.UnixMicro())
		require.Equal(t, contracts.StateRunning, b.stateOf(t, "a", id))
		require.Empty(t, b.queued(t, "f", ledger.BandNormal, "a"))
		b.checkCounts(t, "f")
	})

	t.Run("takeover", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		id := b.ready(t, "a", "f", 5, 1)[0]
		tk := b.take(t, "f", 1, ledger.TakeLimits{Concurrency: 1})
		require.Len(t, tk.Tasks, 1)
		old := tk.Tasks[0]
		require.Equal(t, 1, old.Attempt)

		b.advance(takeLease + time.Second) // its dispatcher died
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
		require.Equal(t, contracts.StateQueued, b.stateOf(t, "a", id))
		ok, err := b.l.Finish(ctx, "a", id, "f", old.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
		require.NoError(t, err)
		require.False(t, ok, "the old attempt's outcome is refused")
		lost, err := b.l.Renew(ctx, takeLease, ledger.Lease{Tenant: "a", ID: id, Function: "f", Owner: "d1", Attempt: old.Attempt})
		require.NoError(t, err)
		require.Len(t, lost, 1, "the old attempt's lease cannot be renewed")

		tk = b.take(t, "f", 1, ledger.TakeLimits{Concurrency: 1})
		require.Len(t, tk.Tasks, 1, "the dead attempt's slot is free")
		require.Equal(t, id, tk.Tasks[0].ID)
		require.Equal(t, 2, tk.Tasks[0].Attempt)
		b.finish(t, "f", tk.Tasks[0])
	})

	t.Run("early", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		id := b.ready(t, "a", "f", 5, 1)[0]
		tk := b.take(t, "f", 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		due := b.now.Add(5 * time.Second)
		ok, err := b.l.Retry(ctx, "a", id, "f", ledger.Fence{Attempt: 1}, due, "boom", false)
		require.NoError(t, err)
		require.True(t, ok)
		a := b.admit(t, "a", id, "f", 5)
		require.Equal(t, ledger.AdmitEarly, a.Verdict, "a stale delivery does not skip a backoff")
		require.Equal(t, due.UnixMicro(), a.Due.UnixMicro())
		require.Equal(t, contracts.StateRetrying, b.stateOf(t, "a", id))
		at, ok := b.delayed(t, "a", id)
		require.True(t, ok)
		require.Equal(t, due.UnixMicro(), at.UnixMicro(), "the delay set keeps its due entry")

		b.advance(4*time.Second + 500*time.Millisecond) // within a second of due
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
		require.Equal(t, contracts.StateQueued, b.stateOf(t, "a", id))
		_, ok = b.delayed(t, "a", id)
		require.False(t, ok, "a ready task has no due entry")
		tk = b.take(t, "f", 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, 2, tk.Tasks[0].Attempt)

		scheduled := b.record(t, "a", "f", 5, func(ev *ledger.EventTasks) { ev.DueAt = b.now.Add(time.Minute) })
		a = b.admit(t, "a", scheduled, "f", 5)
		require.Equal(t, ledger.AdmitEarly, a.Verdict)
		require.Equal(t, b.now.Add(time.Minute).UnixMicro(), a.Due.UnixMicro())
		require.Equal(t, contracts.StateScheduled, b.stateOf(t, "a", scheduled))
		b.checkCounts(t, "f")
	})

	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		exp := b.now.Add(time.Second)
		id := b.record(t, "a", "f", 5, func(ev *ledger.EventTasks) { ev.ExpiresAt = &exp })
		b.advance(2 * time.Second)
		require.Equal(t, ledger.AdmitExpired, b.admit(t, "a", id, "f", 5).Verdict)
		require.Equal(t, contracts.StateExpired, b.stateOf(t, "a", id))
		_, ok := b.delayed(t, "a", id)
		require.False(t, ok)
		n, err := b.l.Redis().ZCard(ctx, b.l.ExpiryKey("a")).Result()
		require.NoError(t, err)
		require.Zero(t, n)
		require.Empty(t, b.queued(t, "f", ledger.BandNormal, "a"))
		entries, err := b.l.Redis().XLen(ctx, b.l.OutboxStream("a")).Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, entries, "its result event")
		require.Equal(t, ledger.AdmitDone, b.admit(t, "a", id, "f", 5).Verdict)
		b.checkCounts(t, "f")
	})
}

// taskKey is the record of a task (tests that set a state by hand).
func (b *bundle) taskKey(tenant, id string) string {
	return b.l.TaskKey(tenant, id)
}

// bandsOf maps ids to their band.
func bandsOf(m map[string]ledger.Band, band ledger.Band, ids []string) {
	for _, id := range ids {
		m[id] = band
	}
}

// takeOneByOne takes n times one task and returns the band of each start.
func (b *bundle) takeOneByOne(t *testing.T, fn string, n int, bands map[string]ledger.Band) []ledger.Band {
	t.Helper()
	var out []ledger.Band
	for range n {
		tk := b.take(t, fn, 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, ledger.TakeDone, tk.Status)
		out = append(out, bands[tk.Tasks[0].ID])
	}
	return out
}

func countBand(seq []ledger.Band, band ledger.Band) int {
	n := 0
	for _, b := range seq {
		if b == band {
			n++
		}
	}
	return n
}

func TestTakeBandStride(t *testing.T) {
	t.Parallel()

	t.Run("high and low", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 0, 70))
		bandsOf(bands, ledger.BandHigh, b.ready(t, "a", "f", 9, 70))
		seq := b.takeOneByOne(t, "f", 70, bands)
		require.Equal(t, 60, countBand(seq, ledger.BandHigh), "%v", seq)
		require.Equal(t, 10, countBand(seq, ledger.BandLow), "%v", seq)
		for i := 0; i+7 <= len(seq); i++ {
			require.Equal(t, 1, countBand(seq[i:i+7], ledger.BandLow), "every 7 starts hold one low: %v", seq)
		}
		require.Equal(t, 10, b.count(t, "f", ledger.BandHigh))
		require.Equal(t, 60, b.count(t, "f", ledger.BandLow))
	})

	t.Run("high and low in one take", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 1, 70))
		bandsOf(bands, ledger.BandHigh, b.ready(t, "a", "f", 8, 70))
		tk := b.take(t, "f", 70, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 70)
		n := 0
		for _, s := range tk.Tasks {
			if bands[s.ID] == ledger.BandLow {
				n++
			}
		}
		require.Equal(t, 10, n)
	})

	t.Run("three bands", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 2, 100))
		bandsOf(bands, ledger.BandNormal, b.ready(t, "a", "f", 4, 100))
		bandsOf(bands, ledger.BandHigh, b.ready(t, "a", "f", 7, 100))
		seq := b.takeOneByOne(t, "f", 100, bands)
		for i := 0; i < len(seq); i += 10 {
			w := seq[i : i+10]
			require.Equal(t, []int{6, 3, 1}, []int{countBand(w, ledger.BandHigh), countBand(w, ledger.BandNormal), countBand(w, ledger.BandLow)}, "starts %d-%d: %v", i, i+9, seq)
		}
	})

	t.Run("a band alone", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 0, 20))
		seq := b.takeOneByOne(t, "f", 20, bands)
		require.Equal(t, 20, countBand(seq, ledger.BandLow))
		tk := b.take(t, "f", 1, ledger.TakeLimits{})
		require.Empty(t, tk.Tasks)
		require.Equal(t, ledger.TakeEmpty, tk.Status)
	})

	t.Run("no banked credit", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandHigh, b.ready(t, "a", "f", 9, 60))
		require.Equal(t, 30, countBand(b.takeOneByOne(t, "f", 30, bands), ledger.BandHigh))
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 0, 10))
		seq := b.takeOneByOne(t, "f", 14, bands)
		require.Equal(t, 1, countBand(seq[:7], ledger.BandLow), "the low band comes back without credit: %v", seq)
		require.Equal(t, 2, countBand(seq, ledger.BandLow), "%v", seq)
	})
}

func TestTakeOrderWithinBand(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	p7 := b.ready(t, "a", "f", 7, 1)[0]
	p9a := b.ready(t, "a", "f", 9, 1)[0]
	p8 := b.ready(t, "a", "f", 8, 1)[0]
	p9b := b.ready(t, "a", "f", 9, 1)[0]
	tk := b.take(t, "f", 10, ledger.TakeLimits{})
	var got []string
	for _, s := range tk.Tasks {
		got = append(got, s.ID)
	}
	require.Equal(t, []string{p9a, p9b, p8, p7}, got, "higher priority first, then first ready")
	require.Equal(t, ledger.TakeEmpty, tk.Status)
	for _, s := range tk.Tasks {
		require.Equal(t, 1, s.Attempt)
		require.Equal(t, "m-"+s.ID, string(s.Message))
	}

	// Aging: each priority step is worth a minute of waiting.
	old := b.ready(t, "a", "f", 7, 1)[0]
	b.advance(2*time.Minute + time.Second)
	fresh := b.ready(t, "a", "f", 9, 1)[0]
	tk = b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, old, tk.Tasks[0].ID, "a priority 7 task ready for over 2 minutes goes before a fresh 9")
	require.Equal(t, fresh, b.take(t, "f", 1, ledger.TakeLimits{}).Tasks[0].ID)
}

func TestTakeTenantRoundRobin(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	b.ready(t, "a", "f", 5, 100)
	b.ready(t, "b", "f", 5, 3)
	var first []string
	for range 6 {
		tk := b.take(t, "f", 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		first = append(first, tk.Tasks[0].Tenant)
	}
	require.Equal(t, 3, countTenant(first, "b"), "b's 3 tasks start within the first 6: %v", first)

	tk := b.take(t, "f", 20, ledger.TakeLimits{})
	require.Equal(t, 20, countTenant(tenantsOf(tk), "a"))

	// A tenant that was idle joins at the least served score: it banks no
	// credit for the starts it did not ask for, and is not starved either.
	b.ready(t, "c", "f", 5, 4)
	tk = b.take(t, "f", 8, ledger.TakeLimits{})
	got := tenantsOf(tk)
	require.Equal(t, 4, countTenant(got, "c"), "%v", got)
	for i := 1; i < len(got); i++ {
		require.False(t, got[i] == "c" && got[i-1] == "c", "c alternates with a: %v", got)
	}
}

func countTenant(seq []string, tenant string) int {
	n := 0
	for _, s := range seq {
		if s == tenant {
			n++
		}
	}
	return n
}

func (b *bundle) sat(t *testing.T, fn string) bool {
	t.Helper()
	s, err := b.l.Redis().HGet(context.Background(), b.l.FnStateKey(fn), "sat").Result()
	if errors.Is(err, redis.Nil) {
		return false
	}
	require.NoError(t, err)
	return s == "1"
}

func TestTakeFunctionLimit(t *testing.T) {
	t.Parallel()

	t.Run("static", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		b.ready(t, "a", "f", 5, 10)
		lim := ledger.TakeLimits{Concurrency: 3}
		tk := b.take(t, "f", 10, lim)
		require.Len(t, tk.Tasks, 3)
		require.Equal(t, ledger.TakeLimit, tk.Status)
		require.True(t, b.sat(t, "f"), "at the limit with tasks ready")
		tk2 := b.take(t, "f", 10, lim)
		require.Empty(t, tk2.Tasks)
		require.Equal(t, ledger.TakeLimit, tk2.Status)
		b.finish(t, "f", tk.Tasks[0])
		tk2 = b.take(t, "f", 10, lim)
		require.Len(t, tk2.Tasks, 1)
		require.Equal(t, ledger.TakeLimit, tk2.Status)
		require.Equal(t, 6, b.count(t, "f", ledger.BandNormal))
	})

	t.Run("below the limit", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		b.ready(t, "a", "f", 5, 3)
		tk := b.take(t, "f", 10, ledger.TakeLimits{Concurrency: 10})
		require.Len(t, tk.Tasks, 3)
		require.Equal(t, ledger.TakeEmpty, tk.Status)
		require.False(t, b.sat(t, "f"))
	})

	t.Run("adaptive", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name             string
			stored           string
			min, concurrency int
			want             int
		}{
			{name: "no limit yet: min", stored: "", min: 2, want: 2},
			{name: "stored", stored: "5", min: 2, want: 5},
			{name: "capped by concurrency", stored: "50", min: 2, concurrency: 4, want: 4},
			{name: "at least min", stored: "1", min: 3, want: 3},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				b := setupDispatch(t, nil, "f")
				if c.stored != "" {
					b.setState(t, "f", "limit", c.stored)
				}
				b.ready(t, "a", "f", 5, 20)
				tk := b.take(t, "f", 20, ledger.TakeLimits{AdaptiveMin: c.min, Concurrency: c.concurrency})
				require.Len(t, tk.Tasks, c.want)
				require.Equal(t, ledger.TakeLimit, tk.Status)
				require.True(t, b.sat(t, "f"))
			})
		}
	})

	// The reservation holds back the normal and low bands from the high
	// band's slots, not from their own: while high and low both wait at a
	// saturated limit, low still gets its 1 in 7 of the starts, in the
	// slots high does not reserve.
	t.Run("reserved high keeps the stride for the rest", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandHigh, b.ready(t, "a", "f", 9, 60))
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 0, 20))
		lim := ledger.TakeLimits{Concurrency: 4, ReservedHigh: 0.5}
		running := b.take(t, "f", 4, lim).Tasks
		require.Len(t, running, 4)
		lows := 0
		for range 56 {
			b.finish(t, "f", running[0])
			running = running[1:]
			tk := b.take(t, "f", 1, lim)
			require.Len(t, tk.Tasks, 1)
			running = append(running, tk.Tasks...)
			if bands[tk.Tasks[0].ID] == ledger.BandLow {
				lows++
			}
			nonHigh := 0
			for _, r := range running {
				if bands[r.ID] != ledger.BandHigh {
					nonHigh++
				}
			}
			require.LessOrEqual(t, nonHigh, 2, "low never takes the reserved slots")
		}
		require.GreaterOrEqual(t, lows, 7, "low gets about 1 in 7 of 56 starts")
	})

	t.Run("reserved high", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		bands := map[string]ledger.Band{}
		bandsOf(bands, ledger.BandNormal, b.ready(t, "a", "f", 5, 20))
		bandsOf(bands, ledger.BandLow, b.ready(t, "a", "f", 0, 5))
		lim := ledger.TakeLimits{Concurrency: 10, ReservedHigh: 0.2}
		tk := b.take(t, "f", 20, lim)
		require.Len(t, tk.Tasks, 8, "normal and low leave the reserved 2 slots")
		require.Equal(t, ledger.TakeLimit, tk.Status)
		require.True(t, b.sat(t, "f"))

		bandsOf(bands, ledger.BandHigh, b.ready(t, "a", "f", 7, 5))
		tk = b.take(t, "f", 20, lim)
		require.Len(t, tk.Tasks, 2, "high uses the last 2")
		for _, s := range tk.Tasks {
			require.Equal(t, ledger.BandHigh, bands[s.ID])
		}
		require.Equal(t, ledger.TakeLimit, tk.Status)
		tk = b.take(t, "f", 20, lim)
		require.Empty(t, tk.Tasks)
		require.Equal(t, ledger.TakeLimit, tk.Status)
	})

	t.Run("rate", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		b.ready(t, "a", "f", 5, 5)
		lim := ledger.TakeLimits{Rate: 2, Burst: 1}
		tk := b.take(t, "f", 5, lim)
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, ledger.TakeRate, tk.Status)
		require.Equal(t, 500*time.Millisecond, tk.Wait)
		b.advance(200 * time.Millisecond)
		tk = b.take(t, "f", 5, lim)
		require.Empty(t, tk.Tasks)
		require.Equal(t, ledger.TakeRate, tk.Status)
		require.Equal(t, 300*time.Millisecond, tk.Wait)
		b.advance(300 * time.Millisecond)
		tk = b.take(t, "f", 5, lim)
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, ledger.TakeRate, tk.Status)
		require.Equal(t, 3, b.count(t, "f", ledger.BandNormal), "tasks over the rate stay ready")
	})

	t.Run("ended leases free their slots", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		b.ready(t, "a", "f", 5, 5)
		lim := ledger.TakeLimits{Concurrency: 2}
		tk := b.take(t, "f", 5, lim)
		require.Len(t, tk.Tasks, 2)
		b.advance(takeLease - time.Second)
		require.Empty(t, b.take(t, "f", 5, lim).Tasks)
		b.advance(2 * time.Second)
		tk = b.take(t, "f", 5, lim)
		require.Len(t, tk.Tasks, 2, "attempts past their lease hold no slot")
	})
}

func TestTenantQuota(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quotas := map[string]int{"a": 1}
	lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Concurrency: 1}}}

	// parked starts a's first task and b's three; a is left parked with two.
	parked := func(t *testing.T, b *bundle) ledger.Started {
		t.Helper()
		b.ready(t, "a", "f", 5, 3)
		b.ready(t, "b", "f", 5, 3)
		tk := b.take(t, "f", 6, lim)
		require.Equal(t, 1, countTenant(tenantsOf(tk), "a"), "%v", tenantsOf(tk))
		require.Equal(t, 3, countTenant(tenantsOf(tk), "b"), "other tenants keep starting: %v", tenantsOf(tk))
		require.Equal(t, 1, tk.Parked)
		require.Len(t, b.queued(t, "f", ledger.BandNormal, "a"), 2, "its tasks stay")
		require.Equal(t, 2, b.count(t, "f", ledger.BandNormal))
		require.False(t, b.inRing(t, "f", ledger.BandNormal, "a"), "it left the round robin")
		tk2 := b.take(t, "f", 6, lim)
		require.Empty(t, tk2.Tasks)
		require.Equal(t, ledger.TakeEmpty, tk2.Status)
		require.Equal(t, 2, b.count(t, "f", ledger.BandNormal), "a parked tenant's tasks are still counted")
		for _, s := range tk.Tasks {
			if s.Tenant == "a" {
				return s
			}
		}
		panic("unreachable")
	}

	t.Run("finish unparks", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, quotas)
		s := parked(t, b)
		// A new task of the parked tenant waits with the others.
		b.ready(t, "a", "f", 5, 1)
		require.False(t, b.inRing(t, "f", ledger.BandNormal, "a"))
		require.Empty(t, b.take(t, "f", 6, lim).Tasks)

		b.finish(t, "f", s)
		require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"))
		tk := b.take(t, "f", 6, lim)
		require.Equal(t, []string{"a"}, tenantsOf(tk), "one start under its quota")
		require.Equal(t, 1, tk.Parked)
		require.Equal(t, 2, b.count(t, "f", ledger.BandNormal))

		b.finish(t, "f", tk.Tasks[0])
		tk = b.take(t, "f", 6, lim)
		require.Equal(t, []string{"a"}, tenantsOf(tk))
		b.finish(t, "f", tk.Tasks[0])
		tk = b.take(t, "f", 6, lim)
		require.Equal(t, []string{"a"}, tenantsOf(tk), "every task of the parked tenant starts in the end")
		require.Equal(t, 0, b.count(t, "f", ledger.BandNormal))
	})

	t.Run("retry unparks", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, quotas)
		s := parked(t, b)
		ok, err := b.l.Retry(ctx, "a", s.ID, "f", s.Fence(), b.now.Add(time.Minute), "boom", false)
		require.NoError(t, err)
		require.True(t, ok)
		require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"))
		tk := b.take(t, "f", 6, lim)
		require.Equal(t, []string{"a"}, tenantsOf(tk))
	})

	t.Run("unpark sweep", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, quotas)
		parked(t, b)
		require.NoError(t, b.l.Unpark(ctx, "a", 1))
		require.False(t, b.inRing(t, "f", ledger.BandNormal, "a"), "its attempt still holds a live lease")
		require.Empty(t, b.take(t, "f", 6, lim).Tasks)

		b.advance(takeLease + time.Second) // its dispatcher died
		ch := b.wakes(t)
		require.NoError(t, b.l.Unpark(ctx, "a", 1))
		require.True(t, b.inRing(t, "f", ledger.BandNormal, "a"))
		require.Equal(t, []string{"f"}, b.wakesSoFar(t, ch))
		tk := b.take(t, "f", 6, lim)
		require.Contains(t, tenantsOf(tk), "a")
	})

	t.Run("two functions", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, quotas)
		b.ready(t, "a", "f1", 5, 2)
		b.ready(t, "a", "f2", 8, 2)
		tk := b.take(t, "f1", 2, lim)
		require.Len(t, tk.Tasks, 1)
		require.Equal(t, 1, tk.Parked)
		tk2 := b.take(t, "f2", 2, lim)
		require.Empty(t, tk2.Tasks, "the tenant's quota spans its functions")
		require.Equal(t, 1, tk2.Parked)
		require.False(t, b.inRing(t, "f2", ledger.BandHigh, "a"))

		ch := b.wakes(t)
		b.finish(t, "f1", tk.Tasks[0])
		woken := b.wakesSoFar(t, ch)
		require.ElementsMatch(t, []string{"f1", "f2"}, woken)
		require.True(t, b.inRing(t, "f1", ledger.BandNormal, "a"))
		require.True(t, b.inRing(t, "f2", ledger.BandHigh, "a"))
		tk2 = b.take(t, "f2", 2, lim)
		require.Len(t, tk2.Tasks, 1)
		require.Len(t, b.take(t, "f1", 2, lim).Tasks, 0, "at its quota again")
		b.checkCounts(t, "f1")
		b.checkCounts(t, "f2")
	})
}

func TestTenantRate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupDispatch(t, nil)
	lim := ledger.TakeLimits{Tenants: map[string]ledger.TenantLimits{"a": {Rate: 1, Burst: 1}}}
	ids := b.ready(t, "a", "f", 5, 3)
	start := b.now
	tk := b.take(t, "f", 3, lim)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, ids[0], tk.Tasks[0].ID)
	require.Equal(t, ledger.TakeEmpty, tk.Status)
	require.Equal(t, 0, b.count(t, "f", ledger.BandNormal))
	for i, id := range ids[1:] {
		at, ok := b.delayed(t, "a", id)
		require.True(t, ok, "over its tenant's rate: in the delay set")
		require.Equal(t, start.Add(time.Duration(i+1)*time.Second).UnixMicro(), at.UnixMicro(), "at its reserved slot")
		require.Equal(t, contracts.StateQueued, b.stateOf(t, "a", id))
	}

	// admitDue plays the scheduler: it admits what is due.
	admitDue := func() []string {
		due, err := b.l.TakeDue(ctx, 10, 30*time.Second)
		require.NoError(t, err)
		var got []string
		for _, d := range due {
			got = append(got, d.ID)
			require.Equal(t, ledger.AdmitAdmitted, b.admit(t, d.Tenant, d.ID, d.Function, d.Priority).Verdict)
		}
		return got
	}

	b.advance(time.Second)
	require.Equal(t, []string{ids[1]}, admitDue())
	// The third arrives early (a duplicate delivery): it goes back to wait
	// for its slot.
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", ids[2], "f", 5).Verdict)
	tk = b.take(t, "f", 3, lim)
	require.Len(t, tk.Tasks, 1, "the task starts at its slot without being checked again")
	require.Equal(t, ids[1], tk.Tasks[0].ID)
	at, ok := b.delayed(t, "a", ids[2])
	require.True(t, ok)
	require.Equal(t, start.Add(2*time.Second).UnixMicro(), at.UnixMicro(), "the early one keeps its slot")

	b.advance(time.Second)
	require.Equal(t, []string{ids[2]}, admitDue())
	tk = b.take(t, "f", 3, lim)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, ids[2], tk.Tasks[0].ID)

	// The timeline was kept: a new task waits for the next slot.
	late := b.ready(t, "a", "f", 5, 1)[0]
	require.Empty(t, b.take(t, "f", 3, lim).Tasks)
	at, ok = b.delayed(t, "a", late)
	require.True(t, ok)
	require.Equal(t, start.Add(3*time.Second).UnixMicro(), at.UnixMicro())
}

func TestTakeDropsStaleEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupDispatch(t, nil)
	ids := b.ready(t, "a", "f", 5, 2)
	_, err := b.l.Cancel(ctx, "a", ids[0])
	require.NoError(t, err)
	tk := b.take(t, "f", 5, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, ids[1], tk.Tasks[0].ID)
	require.Equal(t, 0, b.count(t, "f", ledger.BandNormal))

	only := b.ready(t, "a", "f", 5, 1)[0]
	_, err = b.l.Cancel(ctx, "a", only)
	require.NoError(t, err)
	tk = b.take(t, "f", 5, ledger.TakeLimits{})
	require.Empty(t, tk.Tasks, "nothing started")
	require.Equal(t, ledger.TakeEmpty, tk.Status)
	require.Equal(t, 0, b.count(t, "f", ledger.BandNormal))
	require.Equal(t, contracts.StateCancelled, b.stateOf(t, "a", only))
}

func TestTakeStopsEarlyOnManyStaleEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupDispatch(t, nil)
	stale := b.ready(t, "a", "f", 5, 50)
	live := b.ready(t, "a", "f", 5, 1)[0]
	for _, id := range stale {
		_, err := b.l.Cancel(ctx, "a", id)
		require.NoError(t, err)
	}
	tk := b.take(t, "f", 1, ledger.TakeLimits{})
	require.Empty(t, tk.Tasks)
	require.Equal(t, ledger.TakeMore, tk.Status, "one call does bounded work")
	// The legacy take drops up to 36 stale entries a call, the partitioned
	// one's take.f a round's worth (takeRounds x n).
	for range 20 {
		if tk = b.take(t, "f", 1, ledger.TakeLimits{}); len(tk.Tasks) > 0 {
			break
		}
		require.Equal(t, ledger.TakeMore, tk.Status)
	}
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, live, tk.Tasks[0].ID)
	require.Equal(t, 0, b.count(t, "f", ledger.BandNormal))
}

func TestTakeAfterThrottledRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupDispatch(t, nil)
	id := b.ready(t, "a", "f", 5, 1)[0]
	tk := b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	ok, err := b.l.Retry(ctx, "a", id, "f", ledger.Fence{Attempt: 1}, b.now, "429", true)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
	tk = b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, 1, tk.Tasks[0].Attempt, "a throttled answer gives its attempt back")
	require.Equal(t, 1, tk.Tasks[0].Throttles)
}

// TestTakeAndFinishRecordTheAttempt checks what Take and Finish read from
// and write to the task record (both read it in one HMGET): the message,
// attempt and throttles Take returns, the first start's queue wait kept
// across a retry, the state index, and the run time Finish records.
func TestTakeAndFinishRecordTheAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupDispatch(t, nil)
	id := b.record(t, "a", "f", 5)
	b.advance(40 * time.Millisecond)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
	tk := b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	require.Equal(t, ledger.Started{Tenant: "a", ID: id, Attempt: 1, Wait: 40 * time.Millisecond, Message: []byte("m-" + id)}, s)
	running, err := b.l.List(ctx, "a", ledger.ListFilter{State: contracts.StateRunning})
	require.NoError(t, err)
	require.Len(t, running.Tasks, 1)
	require.Equal(t, id, running.Tasks[0].ID)

	b.advance(10 * time.Millisecond)
	ok, err := b.l.Retry(ctx, "a", id, "f", ledger.Fence{Attempt: 1}, b.now, "boom", false)
	require.NoError(t, err)
	require.True(t, ok)
	b.advance(5 * time.Millisecond)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
	tk = b.take(t, "f", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, 2, tk.Tasks[0].Attempt)
	b.advance(25 * time.Millisecond)
	ok, err = b.l.Finish(ctx, "a", id, "f", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.False(t, ok, "an old attempt's outcome is refused")
	b.finish(t, "f", tk.Tasks[0])

	task, err := b.l.Get(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, task.State)
	require.Equal(t, 2, task.Attempts)
	require.EqualValues(t, 40, *task.QueueWaitMS, "the queue wait is the first start's")
	require.EqualValues(t, 25, *task.RunMS, "the run time is the last attempt's")
	running, err = b.l.List(ctx, "a", ledger.ListFilter{State: contracts.StateRunning})
	require.NoError(t, err)
	require.Empty(t, running.Tasks)
}

func TestTakeExpires(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	exp := b.now.Add(time.Second)
	id := b.record(t, "a", "f", 5, func(ev *ledger.EventTasks) { ev.ExpiresAt = &exp })
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f", 5).Verdict)
	keep := b.ready(t, "a", "f", 5, 1)[0]
	b.advance(2 * time.Second)
	tk := b.take(t, "f", 5, ledger.TakeLimits{})
	require.Equal(t, 1, tk.Expired)
	require.Len(t, tk.Tasks, 1)
	require.Equal(t, keep, tk.Tasks[0].ID)
	require.Equal(t, contracts.StateExpired, b.stateOf(t, "a", id))
	_, ok := b.delayed(t, "a", id)
	require.False(t, ok)
}

func TestWake(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("admitted into an empty function", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		ch := b.wakes(t)
		b.ready(t, "a", "f", 5, 1)
		require.Equal(t, []string{"f"}, b.wakesSoFar(t, ch))
		b.ready(t, "a", "f", 5, 1)
		b.ready(t, "b", "f", 5, 1)
		require.Empty(t, b.wakesSoFar(t, ch), "the function had tasks ready")
		tk := b.take(t, "f", 5, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 3)
		b.ready(t, "a", "f", 5, 1)
		require.Equal(t, []string{"f"}, b.wakesSoFar(t, ch), "empty again")
	})

	t.Run("a band that was empty", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		b.ready(t, "a", "f", 5, 10)
		lim := ledger.TakeLimits{Concurrency: 5, ReservedHigh: 0.4}
		require.Len(t, b.take(t, "f", 10, lim).Tasks, 3)
		ch := b.wakes(t)
		b.ready(t, "a", "f", 9, 1)
		require.Equal(t, []string{"f"}, b.wakesSoFar(t, ch), "a high task may start in the reserved slots")
		require.Len(t, b.take(t, "f", 10, lim).Tasks, 1)
	})

	t.Run("a limited function's attempt ends", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil, "f")
		b.ready(t, "a", "f", 5, 3)
		tk := b.take(t, "f", 3, ledger.TakeLimits{Concurrency: 2})
		require.Len(t, tk.Tasks, 2)
		ch := b.wakes(t)
		b.finish(t, "f", tk.Tasks[0])
		require.Equal(t, []string{"f"}, b.wakesSoFar(t, ch))
		ok, err := b.l.Retry(ctx, "a", tk.Tasks[1].ID, "f", tk.Tasks[1].Fence(), b.now.Add(time.Minute), "boom", false)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, []string{"f"}, b.wakesSoFar(t, ch))

		tk = b.take(t, "f", 3, ledger.TakeLimits{Concurrency: 2})
		require.Len(t, tk.Tasks, 1)
		b.finish(t, "f", tk.Tasks[0])
		require.Empty(t, b.wakesSoFar(t, ch), "nothing is ready")
	})

	t.Run("an unlimited function's attempt ends", func(t *testing.T) {
		t.Parallel()
		b := setupDispatch(t, nil)
		b.ready(t, "a", "f", 5, 3)
		tk := b.take(t, "f", 1, ledger.TakeLimits{})
		require.Len(t, tk.Tasks, 1)
		ch := b.wakes(t)
		b.finish(t, "f", tk.Tasks[0])
		require.Empty(t, b.wakesSoFar(t, ch), "no limit held anything")
	})
}

// schedule plays a scheduler pass over the ledger's clock: what is due in
// the delay set is admitted (a lease that ended is taken over), and
// tenants whose attempts ended are unparked.
func (b *bundle) schedule(t *testing.T, quotas map[string]int) {
	t.Helper()
	ctx := context.Background()
	due, err := b.l.TakeDue(ctx, 1000, 30*time.Second)
	require.NoError(t, err)
	for _, d := range due {
		switch {
		case d.Message == nil || d.State.Terminal():
			require.NoError(t, b.l.Forget(ctx, d))
			continue
		case !d.LeaseUntil.IsZero() && d.LeaseUntil.After(b.now):
			require.NoError(t, b.l.Defer(ctx, d.Tenant, d.ID, d.LeaseUntil.Add(time.Second)))
			continue
		}
		a := b.admit(t, d.Tenant, d.ID, d.Function, d.Priority)
		switch a.Verdict {
		case ledger.AdmitBusy:
			require.NoError(t, b.l.Defer(ctx, d.Tenant, d.ID, a.LeaseUntil.Add(time.Second)))
		case ledger.AdmitAdmitted, ledger.AdmitReady, ledger.AdmitEarly:
		default:
			require.NoError(t, b.l.Forget(ctx, d))
		}
	}
	for tenant, q := range quotas {
		require.NoError(t, b.l.Unpark(ctx, tenant, q))
	}
}

// TestDispatchCountsHold drives random admissions, duplicates, takes under
// limits and quotas, finishes, retries, cancellations, dispatchers that
// die and scheduler passes, and checks after each step that the ready
// counts match the queues; then it drains the function: every task that
// was not cancelled succeeds in the end.
func TestDispatchCountsHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quotas := map[string]int{"a": 2, "b": 1}
	b := setupDispatch(t, quotas, "f")
	lim := ledger.TakeLimits{Concurrency: 6, ReservedHigh: 0.3, Tenants: map[string]ledger.TenantLimits{
		"a": {Concurrency: 2}, "b": {Concurrency: 1},
	}}
	rng := rand.New(rand.NewPCG(1, 2))
	type ref struct {
		tenant, id string
		priority   int
	}
	var tasks []ref
	running := map[string]ledger.Started{}
	parked, retried, died, takenOver := 0, 0, 0, 0
	// one running attempt, at random
	pick := func() (ledger.Started, bool) {
		for _, s := range running {
			return s, true
		}
		return ledger.Started{}, false
	}
	for range 800 {
		switch op := rng.IntN(10); {
		case op < 4:
			r := ref{tenant: testTenants[rng.IntN(len(testTenants))], priority: rng.IntN(10)}
			r.id = b.record(t, r.tenant, "f", r.priority)
			tasks = append(tasks, r)
			b.admit(t, r.tenant, r.id, "f", r.priority)
		case op == 4 && len(tasks) > 0:
			r := tasks[rng.IntN(len(tasks))]
			b.admit(t, r.tenant, r.id, "f", r.priority) // a duplicate or a late delivery
		case op < 7:
			tk := b.take(t, "f", 1+rng.IntN(4), lim) // checks the counts
			parked += tk.Parked
			for _, s := range tk.Tasks {
				running[s.ID] = s
			}
		case op == 7:
			s, ok := pick()
			if !ok {
				continue
			}
			delete(running, s.ID)
			if rng.IntN(3) == 0 {
				due := b.now.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
				ok, err := b.l.Retry(ctx, s.Tenant, s.ID, "f", s.Fence(), due, "boom", false)
				require.NoError(t, err)
				if ok {
					retried++
				}
			} else {
				ok, err := b.l.Finish(ctx, s.Tenant, s.ID, "f", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
				require.NoError(t, err)
				if !ok {
					takenOver++ // its lease ended and the scheduler took it over
				}
			}
		case op == 8 && rng.IntN(2) == 0:
			if s, ok := pick(); ok {
				delete(running, s.ID) // its dispatcher dies
				died++
			}
		case op == 8 && len(tasks) > 0:
			r := tasks[rng.IntN(len(tasks))]
			_, _ = b.l.Cancel(ctx, r.tenant, r.id) // only waiting tasks can be
		default:
			b.advance(time.Duration(rng.IntN(8000)) * time.Millisecond)
			b.schedule(t, quotas)
		}
		b.checkCounts(t, "f")
	}
	require.Positive(t, parked, "some takes parked a tenant")
	require.Positive(t, retried, "some attempts were retried")
	require.Positive(t, died, "some dispatchers died")
	require.Positive(t, takenOver, "some attempts were taken over")

	// Drain: finish whatever runs, let leases and backoffs pass, take again.
	for range 500 {
		for id, s := range running {
			_, err := b.l.Finish(ctx, s.Tenant, id, "f", s.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
			require.NoError(t, err)
			delete(running, id)
		}
		b.advance(takeLease + 2*time.Second)
		b.schedule(t, quotas)
		tk := b.take(t, "f", 50, lim)
		for _, s := range tk.Tasks {
			running[s.ID] = s
		}
		if len(tk.Tasks) == 0 {
			break
		}
	}
	for _, band := range ledger.Bands {
		require.Zero(t, b.count(t, "f", band), "band %s drained", band)
	}
	for _, r := range tasks {
		st := b.stateOf(t, r.tenant, r.id)
		require.True(t, st == contracts.StateSucceeded || st == contracts.StateCancelled, "task %s of %s is %s", r.id, r.tenant, st)
	}
}
