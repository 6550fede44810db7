package routing

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSampleAndHoldSimulation runs seeded windows of Zipf-like traffic over
// 2,000 tenants with planted tenants at fixed shares, threshold 2%, O = 20.
func TestSampleAndHoldSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: 6 million samples take tens of seconds under -race (make test runs it)")
	}
	t.Parallel()
	const (
		share    = 0.02
		window   = 20_000
		windows  = 300
		tenants  = 2000
		oversamp = 20.0
	)
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.2, 10, tenants-1)
	planted := map[string]float64{"double": 2 * share, "at": share, "half": share / 2, "tenth": share / 10}
	var plantedTotal float64
	for _, s := range planted {
		plantedTotal += s
	}
	caught := map[string]int{}
	maxHeld := 0
	for range windows {
		s := NewSampleAndHold(share, window, oversamp, rng)
		for range window {
			r := rng.Float64()
			tenant := ""
			acc := 0.0
			for name, sh := range planted {
				acc += sh
				if r < acc && tenant == "" {
					tenant = name
				}
			}
			if tenant == "" {
				// The rest spreads over the background, none of it heavy:
				// the Zipf head is capped well below the threshold.
				tenant = fmt.Sprintf("t%d", zipf.Uint64()+uint64(rng.IntN(50))*tenants)
			}
			s.Observe(tenant, 1)
		}
		maxHeld = max(maxHeld, s.Held())
		hh, total := s.EndWindow()
		require.EqualValues(t, window, total)
		for _, h := range hh {
			caught[h.Tenant]++
		}
	}
	// 2x the threshold: missed with probability ~ (1-p)^(2T) ~ e^-40.
	require.Equal(t, windows, caught["double"], "a tenant at twice the threshold is always caught")
	// Below half of it: counts never overestimate, so never reported.
	require.Zero(t, caught["half"])
	require.Zero(t, caught["tenth"])
	for name, n := range caught {
		if _, ok := planted[name]; !ok {
			require.Zero(t, n, "background tenant %s reported", name)
		}
	}
	// At exactly the threshold the count is short by ~T/O, so it is
	// reported about half the time (the true share fluctuates around T).
	require.Greater(t, caught["at"], windows/10)
	// Memory: O/share entries expected; allow the 4-sigma margin.
	bound := oversamp/share + 4*math.Sqrt(oversamp/share)
	require.LessOrEqual(t, float64(maxHeld), bound, "table size")
	t.Logf("caught: %v of %d windows; max held %d (bound %.0f)", caught, windows, maxHeld, bound)
}

func TestSampleAndHoldMissProbability(t *testing.T) {
	t.Parallel()
	s := NewSampleAndHold(0.01, 100_000, 20, rand.New(rand.NewPCG(1, 1)))
	require.InDelta(t, math.Exp(-20), s.MissProbability(), 1e-9)
}
