package routing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// totalField holds a window's total units in a report.
const totalField = "_total"

// Reporter measures one gateway's ingest stream with sample-and-hold and
// publishes, at the end of every window, the tenants above its share and the
// window's total to Redis, where the controller adds up all gateways.
type Reporter struct {
	rdb    redis.UniversalClient
	prefix string
	window time.Duration
	share  float64

	mu  sync.Mutex
	sah *SampleAndHold
	rng *rand.Rand
}

// NewReporter reports tenants above share of each window.
func NewReporter(rdb redis.UniversalClient, prefix string, window time.Duration, share float64) *Reporter {
	r := &Reporter{rdb: rdb, prefix: prefix, window: window, share: share, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	r.sah = NewSampleAndHold(share, 100, 20, r.rng)
	return r
}

// Observe counts n tasks submitted by tenant.
func (r *Reporter) Observe(tenant string, n int) {
	r.mu.Lock()
	r.sah.Observe(tenant, int64(n))
	r.mu.Unlock()
}

func reportKey(prefix string, index int64) string {
	return prefix + ":hh:" + strconv.FormatInt(index, 10)
}

// WindowIndex numbers windows since the epoch.
func WindowIndex(t time.Time, window time.Duration) int64 { return t.UnixNano() / int64(window) }

// Run publishes a report at the end of every window until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	for {
		now := time.Now()
		next := time.Unix(0, (WindowIndex(now, r.window)+1)*int64(r.window))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		_ = r.Flush(ctx, WindowIndex(next, r.window)-1)
	}
}

// Flush ends the current window and adds its report to window index.
func (r *Reporter) Flush(ctx context.Context, index int64) error {
	r.mu.Lock()
	hh, total := r.sah.EndWindow()
	// Size the next window's sampling by this one's traffic.
	r.sah = NewSampleAndHold(r.share, max(total, 100), 20, r.rng)
	r.mu.Unlock()
	if total == 0 {
		return nil
	}
	key := reportKey(r.prefix, index)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, key, totalField, total)
		for _, h := range hh {
			p.HIncrBy(ctx, key, h.Tenant, h.Count)
		}
		p.Expire(ctx, key, 20*r.window)
		return nil
	})
	if err != nil {
		return fmt.Errorf("publishing heavy-hitter report: %w", err)
	}
	return nil
}

// Report is one window's heavy hitters over every gateway.
type Report struct {
	Total  int64
	Counts map[string]int64
}

// Share is tenant's share of the window.
func (r Report) Share(tenant string) float64 {
	if r.Total == 0 {
		return 0
	}
	return float64(r.Counts[tenant]) / float64(r.Total)
}

// ReadReport reads window index's report.
func ReadReport(ctx context.Context, rdb redis.UniversalClient, prefix string, index int64) (Report, error) {
	h, err := rdb.HGetAll(ctx, reportKey(prefix, index)).Result()
	if err != nil {
		return Report{}, fmt.Errorf("reading heavy-hitter report: %w", err)
	}
	r := Report{Counts: map[string]int64{}}
	for k, v := range h {
		n, _ := strconv.ParseInt(v, 10, 64)
		if k == totalField {
			r.Total = n
		} else {
			r.Counts[k] = n
		}
	}
	return r, nil
}
