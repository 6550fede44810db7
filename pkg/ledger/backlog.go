package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Backlog is one tenant's task counts as its state indexes hold them.
type Backlog struct {
	// Tenant is the tenant counted.
	Tenant string
	// Waiting is the tenant's backlog: its tasks that have not started
	// and that nothing but capacity or a pause keeps (queued, including
	// retries whose backoff has passed, and paused). Scheduled tasks
	// before their time and retries inside their backoff do not count.
	Waiting int64
	// Ended counts the entries of the tenant's terminal-state indexes
	// (succeeded, failed, dead, cancelled, expired) plus those Prune
	// dropped once their records expired, so its growth between two reads
	// is the tasks that ended meanwhile: the tenant's drain rate. It may
	// shrink (a redrive or purge of dead tasks); treat a decrease as
	// unknown.
	Ended int64
}

// waitingStates are the states a tenant's backlog counts. A retry whose
// backoff has passed is admitted back as queued; one still inside it
// (retrying) waits for its time, not for capacity, like a scheduled task.
var waitingStates = []contracts.State{contracts.StateQueued, contracts.StatePaused}

// endedStates are the terminal states Backlog.Ended counts.
var endedStates = []contracts.State{
	contracts.StateSucceeded, contracts.StateFailed, contracts.StateDead,
	contracts.StateCancelled, contracts.StateExpired,
}

// Backlogs reads the backlog of each tenant, in order, in one pipelined
// round trip (ZCARD of each counted state index; O(1) each).
func (l *Ledger) Backlogs(ctx context.Context, tenants []string) ([]Backlog, error) {
	if len(tenants) == 0 {
		return nil, nil
	}
	waiting := make([][]*redis.IntCmd, len(tenants))
	ended := make([][]*redis.IntCmd, len(tenants))
	pruned := make([]*redis.StringCmd, len(tenants))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tenants {
			pruned[i] = p.Get(ctx, l.prunedKey(t))
			for _, s := range waitingStates {
				waiting[i] = append(waiting[i], p.ZCard(ctx, l.stateKey(t, s)))
			}
			for _, s := range endedStates {
				ended[i] = append(ended[i], p.ZCard(ctx, l.stateKey(t, s)))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading backlogs of %d tenants: %w", len(tenants), err)
	}
	out := make([]Backlog, len(tenants))
	for i, t := range tenants {
		out[i].Tenant = t
		for _, c := range waiting[i] {
			out[i].Waiting += c.Val()
		}
		for _, c := range ended[i] {
			out[i].Ended += c.Val()
		}
		if n, err := pruned[i].Int64(); err == nil {
			out[i].Ended += n
		}
	}
	return out, nil
}
