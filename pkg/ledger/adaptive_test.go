package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
)

// aimd are the parameters of most tests: limits 2..10, halved on
// throttling, one step up per saturated interval.
var aimd = ledger.Adaptive{Min: 2, Max: 10, Increase: 1, Interval: time.Second, Decrease: 0.5, ErrorRate: 0.1, ErrorCount: 5}

// answers records n answers of fn, the first throttled of them throttled,
// within the current interval, and returns the last limit.
func (b *bundle) answers(t *testing.T, fn string, a ledger.Adaptive, concurrency, n, throttled int) int {
	t.Helper()
	limit := 0
	for i := range n {
		var err error
		// The throttled answers are spread evenly, the last one last.
		thr := (i+1)*throttled/n > i*throttled/n
		limit, err = b.l.Feedback(context.Background(), fn, a, concurrency, thr)
		require.NoError(t, err)
	}
	return limit
}

// nextInterval ends the interval: the next answer (not throttled) applies
// the update; it returns the limit after it.
func (b *bundle) nextInterval(t *testing.T, fn string, a ledger.Adaptive, concurrency int) int {
	t.Helper()
	b.advance(a.Interval)
	return b.answers(t, fn, a, concurrency, 1, 0)
}

func (b *bundle) setState(t *testing.T, fn string, kv ...any) {
	t.Helper()
	require.NoError(t, b.l.Redis().HSet(context.Background(), b.l.FnStateKey(fn), kv...).Err())
}

// saturate plays the take script: the function ran at its limit with
// tasks ready.
func (b *bundle) saturate(t *testing.T, fn string) { b.setState(t, fn, "sat", "1") }

func TestFeedbackStartsAtMin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := []ledger.FunctionSpec{{Name: "f", Adaptive: &aimd}}
	st, err := b.l.FunctionStats(context.Background(), spec)
	require.NoError(t, err)
	require.Equal(t, 2, st[0].Limit, "before any answer")
	require.Equal(t, 2, b.answers(t, "f", aimd, 0, 3, 0))
	require.Equal(t, 2, b.nextInterval(t, "f", aimd, 0), "no increase without a backlog at the limit")
	st, err = b.l.FunctionStats(context.Background(), spec)
	require.NoError(t, err)
	require.Equal(t, 2, st[0].Limit)
	require.True(t, st[0].Adaptive)
}

func TestFeedbackDecreaseNeedsBothThresholds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name               string
		answers, throttled int
		errorCount         int
		errorRate          float64
		want               int
	}{
		{name: "count below", answers: 10, throttled: 4, errorCount: 5, errorRate: 0.1, want: 10},
		{name: "rate below", answers: 100, throttled: 5, errorCount: 5, errorRate: 0.1, want: 10},
		{name: "both reached", answers: 20, throttled: 6, errorCount: 5, errorRate: 0.1, want: 5},
		{name: "both exactly", answers: 50, throttled: 5, errorCount: 5, errorRate: 0.1, want: 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			a := aimd
			a.ErrorCount, a.ErrorRate = c.errorCount, c.errorRate
			b.setState(t, "f", "limit", 10)
			// Saturated too: a throttled interval never increases.
			b.saturate(t, "f")
			// A decrease applies as soon as both thresholds are passed,
			// not at the end of the interval.
			require.Equal(t, c.want, b.answers(t, "f", a, 0, c.answers, c.throttled))
			require.Equal(t, c.want, b.nextInterval(t, "f", a, 0), "one update only")
		})
	}
}

func TestFeedbackOneDecreasePerInterval(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setState(t, "f", "limit", 10)
	// A burst of throttled answers (the attempts already running above a
	// lowered limit answer throttled too): the limit is halved once.
	require.Equal(t, 10, b.answers(t, "f", aimd, 0, 4, 4), "below the count")
	require.Equal(t, 5, b.answers(t, "f", aimd, 0, 30, 30))
	b.advance(500 * time.Millisecond)
	require.Equal(t, 5, b.answers(t, "f", aimd, 0, 10, 10), "still within the interval since the decrease")
	b.advance(500 * time.Millisecond)
	require.Equal(t, 3, b.answers(t, "f", aimd, 0, 10, 10), "ceil(5 x 0.5) = 3")
	b.advance(time.Second)
	require.Equal(t, 2, b.answers(t, "f", aimd, 0, 10, 10), "ceil(3 x 0.5) = 2")
	b.advance(time.Second)
	require.Equal(t, 2, b.answers(t, "f", aimd, 0, 10, 10), "never below min (ceil(2 x 0.5) = 1)")
}

func TestFeedbackIncrease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	key := b.l.FnStateKey("f")

	b.saturate(t, "f")
	require.Equal(t, 2, b.answers(t, "f", aimd, 0, 5, 0))
	require.Equal(t, 3, b.nextInterval(t, "f", aimd, 0), "saturated, not throttled: +1")
	sat, err := b.l.Redis().HExists(ctx, key, "sat").Result()
	require.NoError(t, err)
	require.False(t, sat, "the update clears sat")
	require.Equal(t, 3, b.nextInterval(t, "f", aimd, 0), "not saturated since: no increase")

	b.saturate(t, "f")
	b.answers(t, "f", aimd, 0, 10, 1)
	require.Equal(t, 3, b.nextInterval(t, "f", aimd, 0), "one throttled answer (below both thresholds): neither up nor down")

	b.setState(t, "f", "limit", 9)
	for _, want := range []int{10, 10} {
		b.saturate(t, "f")
		require.Equal(t, want, b.nextInterval(t, "f", aimd, 0), "never above max")
	}

	big := aimd
	big.Increase = 5
	b.setState(t, "f", "limit", 8)
	b.saturate(t, "f")
	require.Equal(t, 10, b.nextInterval(t, "f", big, 0), "an increase stops at max")

	b.setState(t, "f", "limit", 3)
	for _, want := range []int{4, 4} {
		b.saturate(t, "f")
		require.Equal(t, want, b.nextInterval(t, "f", aimd, 4), "never above the static concurrency")
	}
	st, err := b.l.FunctionStats(ctx, []ledger.FunctionSpec{{Name: "f", Concurrency: 3, Adaptive: &aimd}})
	require.NoError(t, err)
	require.Equal(t, 3, st[0].Limit, "the limit shown is the one take applies: capped by concurrency")
}

func TestFunctionStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	rdb := b.l.Redis()
	now := float64(b.now.UnixMicro())
	live := now + float64(10*time.Second/time.Microsecond)
	require.NoError(t, rdb.ZAdd(ctx, b.l.InflightKey("adaptive"),
		redis.Z{Score: live, Member: "acme/1"}, redis.Z{Score: live, Member: "acme/2"}, redis.Z{Score: now - 1e6, Member: "acme/dead"}).Err())
	for i, band := range ledger.Bands {
		b.setState(t, "adaptive", "n_"+string(band), i+1)
	}
	b.setState(t, "adaptive", "limit", 7)
	specs := []ledger.FunctionSpec{
		{Name: "adaptive", Adaptive: &aimd},
		{Name: "static", Concurrency: 5},
		{Name: "unlimited"},
	}
	st, err := b.l.FunctionStats(ctx, specs)
	require.NoError(t, err)
	require.Equal(t, []ledger.FunctionStat{
		{Name: "adaptive", Limit: 7, Adaptive: true, Running: 2, Waiting: 6,
			Ready: map[ledger.Band]int64{ledger.BandHigh: 1, ledger.BandNormal: 2, ledger.BandLow: 3}},
		{Name: "static", Limit: 5, Concurrency: 5, Ready: map[ledger.Band]int64{ledger.BandHigh: 0, ledger.BandNormal: 0, ledger.BandLow: 0}},
		{Name: "unlimited", Ready: map[ledger.Band]int64{ledger.BandHigh: 0, ledger.BandNormal: 0, ledger.BandLow: 0}},
	}, st)
}

func TestTenantFunctionStatsCountOnlyTheTenants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	rdb := b.l.Redis()
	now := float64(b.now.UnixMicro())
	live := now + float64(10*time.Second/time.Microsecond)
	require.NoError(t, rdb.ZAdd(ctx, b.l.InflightKey("f"),
		redis.Z{Score: live, Member: "acme/1"}, redis.Z{Score: live, Member: "acme/2"}, redis.Z{Score: now - 1e6, Member: "acme/dead"},
		redis.Z{Score: live, Member: "acme2/3"}, redis.Z{Score: live, Member: "other/4"}).Err())
	ready := func(band ledger.Band, tenant string, ids ...string) {
		for _, id := range ids {
			require.NoError(t, rdb.ZAdd(ctx, b.fnPrefix("f")+"ready:"+string(band)+":"+tenant, redis.Z{Score: now, Member: id}).Err())
		}
	}
	ready(ledger.BandHigh, "acme", "5")
	ready(ledger.BandLow, "acme", "6", "7")
	ready(ledger.BandNormal, "other", "8", "9", "10")
	b.setState(t, "f", "n_normal", 3)
	b.setState(t, "f", "n_high", 1)
	b.setState(t, "f", "n_low", 2)
	b.setState(t, "f", "limit", 4)
	specs := []ledger.FunctionSpec{{Name: "f", Adaptive: &aimd}, {Name: "idle", Concurrency: 2}}

	st, err := b.l.TenantFunctionStats(ctx, "acme", specs)
	require.NoError(t, err)
	require.Equal(t, []ledger.FunctionStat{
		{Name: "f", Limit: 4, Adaptive: true, Running: 2, Waiting: 3,
			Ready: map[ledger.Band]int64{ledger.BandHigh: 1, ledger.BandNormal: 0, ledger.BandLow: 2}},
		{Name: "idle", Limit: 2, Concurrency: 2, Ready: map[ledger.Band]int64{ledger.BandHigh: 0, ledger.BandNormal: 0, ledger.BandLow: 0}},
	}, st, "acme's own: not acme2's (a tenant whose name starts with acme), not other's, not a dead lease")

	st, err = b.l.TenantFunctionStats(ctx, "other", specs[:1])
	require.NoError(t, err)
	require.EqualValues(t, 1, st[0].Running)
	require.EqualValues(t, 3, st[0].Waiting)

	all, err := b.l.FunctionStats(ctx, specs[:1])
	require.NoError(t, err)
	require.EqualValues(t, 4, all[0].Running, "cluster-wide: every tenant's live leases")
}

func TestFunctionStatsThrottledLastMinute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.now = b.now.Truncate(time.Minute).Add(30 * time.Second)
	spec := []ledger.FunctionSpec{{Name: "f", Adaptive: &aimd}}
	throttled := func() int64 {
		t.Helper()
		st, err := b.l.FunctionStats(context.Background(), spec)
		require.NoError(t, err)
		return st[0].ThrottledLastMinute
	}
	b.answers(t, "f", aimd, 0, 10, 6)
	require.EqualValues(t, 6, throttled())
	b.advance(15 * time.Second)
	b.answers(t, "f", aimd, 0, 2, 2)
	require.EqualValues(t, 8, throttled())
	b.advance(45 * time.Second) // next minute, 30 s in: the last one counts half
	require.EqualValues(t, 4, throttled())
	b.answers(t, "f", aimd, 0, 1, 1)
	require.EqualValues(t, 5, throttled())
	b.advance(time.Minute)
	require.EqualValues(t, 1, throttled(), "0.5 x 1 rounds to 1, the minute before is gone")
	b.advance(time.Minute)
	require.EqualValues(t, 0, throttled())
}

// A decrease rounds the product up but always lowers the limit by at least
// one: with the default factor 0.7, a limit probing one over a capacity of
// 4 returns to 4, and a limit of 2 (above min 1) still falls to 1.
func TestFeedbackDecreaseRounding(t *testing.T) {
	t.Parallel()
	a := aimd
	a.Min, a.Max, a.Decrease = 1, 64, 0.7
	for _, c := range []struct{ from, want int }{{5, 4}, {9, 7}, {17, 12}, {2, 1}, {3, 2}, {1, 1}} {
		t.Run(fmt.Sprint(c.from), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.setState(t, "f", "limit", c.from)
			require.Equal(t, c.want, b.answers(t, "f", a, 0, 10, 10))
		})
	}
}
