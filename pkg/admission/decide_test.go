package admission_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
)

func TestDecideTenantBacklog(t *testing.T) {
	l := admission.Limits{Tenant: map[string]int64{"a": 100}}
	s := admission.Snapshot{Backlog: map[string]int64{"a": 99, "b": 10_000}, Drain: map[string]float64{"a": 10}}

	require.Nil(t, admission.Decide(l, s, "a", 0), "below its limit")
	require.Nil(t, admission.Decide(l, s, "b", 0), "b has no limit, whatever its backlog")

	s.Backlog["a"] = 150
	r := admission.Decide(l, s, "a", 0.999)
	require.NotNil(t, r)
	require.Equal(t, contracts.RefusedTenantBacklog, r.Reason)
	require.Equal(t, "a", r.Tenant)
	require.EqualValues(t, 150, r.Backlog)
	require.EqualValues(t, 100, r.Limit)
	// 51 tasks over at 10 a second: 6 s.
	require.Equal(t, 6*time.Second, r.RetryAfter)
	require.Contains(t, r.Error(), "backlog")
	require.Contains(t, r.Error(), "max_backlog 100")

	s.Backlog["a"] = 100
	require.NotNil(t, admission.Decide(l, s, "a", 0), "at its limit is refused")
}

func TestRetryAfterBounds(t *testing.T) {
	require.Equal(t, admission.RetryAfterDefault, admission.RetryAfter(500, 0), "no drain known")
	require.Equal(t, time.Second, admission.RetryAfter(1, 1000), "at least 1 s")
	require.Equal(t, 60*time.Second, admission.RetryAfter(1_000_000, 1), "at most 60 s")
	require.Equal(t, 3*time.Second, admission.RetryAfter(25, 10), "rounded up to whole seconds")
}

func TestRefuseProbability(t *testing.T) {
	shares := map[string]float64{"heavy": 0.6, "half": 0.3, "light": 0.006}
	require.InDelta(t, 1, admission.RefuseProbability(shares, "heavy"), 1e-9)
	require.InDelta(t, 0.5, admission.RefuseProbability(shares, "half"), 1e-9)
	require.InDelta(t, 0.01, admission.RefuseProbability(shares, "light"), 1e-9)
	require.Zero(t, admission.RefuseProbability(shares, "absent"), "not a heavy hitter: never refused")
	require.Zero(t, admission.RefuseProbability(nil, "heavy"), "no estimates: nobody")
}

// Over the global limit the heaviest tenant is refused first: always,
// while the others are refused in proportion to their share of it, and a
// light tenant almost never.
func TestDecideGlobalRefusesHeaviestFirst(t *testing.T) {
	l := admission.Limits{Global: 1000}
	s := admission.Snapshot{
		Backlog: map[string]int64{"heavy": 900, "mid": 150, "light": 5},
		Total:   1055, TotalDrain: 11,
		Shares: map[string]float64{"heavy": 0.8, "mid": 0.2, "light": 0.004},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 20_000
	refused := map[string]int{}
	for range n {
		for _, tenant := range []string{"heavy", "mid", "light"} {
			if r := admission.Decide(l, s, tenant, rng.Float64()); r != nil {
				require.Equal(t, contracts.RefusedGlobalBacklog, r.Reason)
				require.EqualValues(t, 1055, r.Backlog)
				require.EqualValues(t, 1000, r.Limit)
				require.Equal(t, 5*time.Second, r.RetryAfter, "55 over at 11 a second")
				refused[tenant]++
			}
		}
	}
	require.Equal(t, n, refused["heavy"], "the heaviest is always refused")
	require.InDelta(t, 0.25, float64(refused["mid"])/n, 0.02, "share/largest share = 0.25")
	require.Less(t, float64(refused["light"])/n, 0.01, "a light tenant is almost never refused")

	s.Total = 1000
	for _, tenant := range []string{"heavy", "mid", "light"} {
		require.Nil(t, admission.Decide(l, s, tenant, 0), "at the global limit, not above it: %s admitted", tenant)
	}
}

func TestLimitsEnabled(t *testing.T) {
	require.False(t, admission.Limits{}.Enabled())
	require.False(t, admission.Limits{Tenant: map[string]int64{"a": 0}}.Enabled())
	require.True(t, admission.Limits{Tenant: map[string]int64{"a": 1}}.Enabled())
	require.True(t, admission.Limits{Global: 1}.Enabled())
}
