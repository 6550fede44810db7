package routing

import (
	"math"
	"math/rand/v2"
)

// SampleAndHold finds the tenants that send more than a share of the
// traffic in a window, with memory bounded by the oversampling factor
// rather than by the number of tenants (Estan and Varghese, "New
// directions in traffic measurement and accounting", SIGCOMM 2002).
//
// Each unit of traffic of a tenant not yet held is sampled with probability
// p = O/T, where T = Share x Expected is the threshold; once held, every
// later unit of that tenant is counted. At the end of a window, held
// tenants with count >= T are reported. Counts never overestimate, so a
// tenant below the threshold is never reported. A tenant with 2T units is
// reported unless none of its first T units was sampled: probability
// (1-p)^T ~ e^-O, about 2e-9 for O = 20. A tenant at exactly T is
// reported only when sampled early (counts run about T/O short). The table
// holds O/Share tenants on average.
type SampleAndHold struct {
	threshold float64
	p         float64
	counts    map[string]int64
	total     int64
	rng       *rand.Rand
}

// HeavyHitter is a tenant reported at the end of a window.
type HeavyHitter struct {
	Tenant string
	// Count is the units counted after the tenant was first sampled: at
	// most its true count, short by about T/O.
	Count int64
}

// NewSampleAndHold detects tenants above share (0..1) of a window expected
// to carry about expected units, with oversampling factor oversample.
func NewSampleAndHold(share float64, expected int64, oversample float64, rng *rand.Rand) *SampleAndHold {
	t := max(1, share*float64(expected))
	return &SampleAndHold{threshold: t, p: min(1, oversample/t), counts: map[string]int64{}, rng: rng}
}

// Observe counts n units of tenant.
func (s *SampleAndHold) Observe(tenant string, n int64) {
	s.total += n
	if _, held := s.counts[tenant]; held {
		s.counts[tenant] += n
		return
	}
	// Sample the first of these n units that is picked: the units before
	// it go uncounted, like single units would.
	for i := int64(0); i < n; i++ {
		if s.rng.Float64() < s.p {
			s.counts[tenant] = n - i
			return
		}
	}
}

// Held is how many tenants the table holds now.
func (s *SampleAndHold) Held() int { return len(s.counts) }

// EndWindow reports the tenants at or above the threshold, with the window
// total, and starts a new window.
func (s *SampleAndHold) EndWindow() ([]HeavyHitter, int64) {
	var out []HeavyHitter
	for t, c := range s.counts {
		if float64(c) >= s.threshold {
			out = append(out, HeavyHitter{Tenant: t, Count: c})
		}
	}
	total := s.total
	s.counts, s.total = map[string]int64{}, 0
	return out, total
}

// MissProbability bounds the chance a tenant with twice the threshold's
// traffic is not reported: (1-p)^T.
func (s *SampleAndHold) MissProbability() float64 { return math.Pow(1-s.p, s.threshold) }
