package routing

import (
	"context"
	"time"

	"github.com/tasklane/tasklane/pkg/broker"
)

// FollowEveryDefault is how often every process reloads the routing table
// and the lane backlogs.
const FollowEveryDefault = 500 * time.Millisecond

// Loader reads the routing table (*Store).
type Loader interface {
	Load(ctx context.Context) (Snapshot, error)
}

// LaneDepths reports lanes' backlogs (broker.Driver).
type LaneDepths interface {
	Depths(ctx context.Context, lanes ...string) (map[string]broker.LaneDepth, error)
}

// FollowConfig configures [Dynamic.Follow].
type FollowConfig struct {
	// Store holds the routing table the controllers change.
	Store Loader
	// Lanes reports the lanes' backlogs, which LaneFor weighs.
	Lanes LaneDepths
	// Every is the time between refreshes. Default FollowEveryDefault.
	Every time.Duration
	// OnLanes, when set, is called after every refresh with the table's
	// lanes, retiring ones included (a dispatcher consumes them).
	OnLanes func(ctx context.Context, lanes []string)
}

// Follow keeps d fresh until ctx ends: every cfg.Every it installs the
// store's table if it is newer (telling OnChange listeners), records the
// lanes' backlogs, and calls OnLanes. A read that fails leaves what d has
// until the next one.
func (d *Dynamic) Follow(ctx context.Context, cfg FollowConfig) {
	if cfg.Every <= 0 {
		cfg.Every = FollowEveryDefault
	}
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if snap, err := cfg.Store.Load(ctx); err == nil {
			d.Update(snap)
		}
		lanes := d.Lanes()
		if depths, err := cfg.Lanes.Depths(ctx, lanes...); err == nil {
			backlog := make(map[string]int64, len(depths))
			for lane, dep := range depths {
				backlog[lane] = dep.Backlog
			}
			d.SetDepths(backlog)
		}
		if cfg.OnLanes != nil {
			cfg.OnLanes(ctx, lanes)
		}
	}
}
