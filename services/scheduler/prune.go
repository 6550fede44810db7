package scheduler

import (
	"context"
	"time"

	"github.com/tasklane/tasklane/pkg/ledger"
)

// PruneEveryDefault is how often the task indexes are pruned of expired
// records.
const PruneEveryDefault = 10 * time.Second

// Pruning bounds: one script call looks at pruneBatch index entries, and
// one round at most pruneRoundMax per tenant, so a backlog of expired
// entries (after an upgrade, or a long stop) is worked off over several
// rounds without holding Redis; the cursor carries over.
const (
	pruneBatch    = 500
	pruneRoundMax = 20_000
)

// startPruning drops index entries of expired records every PruneEvery
// until ctx ends, when Config.Tenants is set; the function it returns
// waits for that.
func (s *Scheduler) startPruning(ctx context.Context) (wait func()) {
	if s.cfg.Tenants == nil {
		return func() {}
	}
	every := s.cfg.PruneEvery
	if every <= 0 {
		every = PruneEveryDefault
	}
	cursors := map[string]ledger.PruneCursor{}
	return tick(ctx, every, func() { s.Prune(ctx, cursors) })
}

// Prune runs one pruning round over every tenant, going on from cursors
// (updated), and returns how many index entries it dropped.
func (s *Scheduler) Prune(ctx context.Context, cursors map[string]ledger.PruneCursor) int {
	total := 0
	for _, tenant := range s.cfg.Tenants() {
		for seen := 0; seen < pruneRoundMax; seen += pruneBatch {
			n, next, err := s.cfg.Ledger.Prune(ctx, tenant, cursors[tenant], pruneBatch)
			if err != nil {
				if ctx.Err() == nil {
					s.cfg.Logger.Warn("pruning task indexes", "tenant", tenant, "error", err)
				}
				return total
			}
			total += n
			cursors[tenant] = next
			if next == "" {
				break // reached the entries too young to have expired
			}
		}
	}
	return total
}
