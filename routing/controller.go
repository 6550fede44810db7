package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lanes is what the controller needs of the broker.
type Lanes interface {
	// DeclareLanes makes lanes exist; a dedicated lane is declared before
	// any tenant is routed to it (RabbitMQ drops a publish to a missing
	// queue).
	DeclareLanes(ctx context.Context, lanes ...string) error
	// DeleteLane removes an empty lane and says whether it did.
	DeleteLane(ctx context.Context, lane string) (bool, error)
}

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	Store  *Store
	Table  *Dynamic
	Lanes  Lanes
	Redis  redis.UniversalClient
	Prefix string
	Logger *slog.Logger
	// Window is the heavy-hitter window the gateways report on.
	Window time.Duration
	// HotShare and HotBacklog: a tenant with at least HotShare of the
	// window's tasks and at least HotBacklog tasks waiting in its shard's
	// lanes moves to a dedicated lane.
	HotShare   float64
	HotBacklog int64
	// Cooldown: a dedicated tenant below HotShare/2 with an empty lane for
	// this long moves back.
	Cooldown time.Duration
	// MaxDedicated caps the dedicated lanes.
	MaxDedicated int
	// LaneGrace is how long after a merge an emptied lane is kept before it
	// is deleted.
	LaneGrace time.Duration
	// OnChange, when set, is told of every change the controller made.
	OnChange func(Change)
}

// Controller moves hot tenants to dedicated lanes and back. Any number may
// run: every decision is a compare-and-set on the versioned table, so two
// controllers never both apply a decision to the same version.
type Controller struct {
	cfg ControllerConfig
	// mu serialises Step and Pin (and cool).
	mu   sync.Mutex
	cool map[string]time.Time
}

// NewController returns a controller.
func NewController(cfg ControllerConfig) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "controller")
	return &Controller{cfg: cfg, cool: map[string]time.Time{}}
}

// Run decides once per window, half a window after it ends (when every
// gateway has reported it), until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	for {
		now := time.Now()
		next := time.Unix(0, (WindowIndex(now, c.cfg.Window)+1)*int64(c.cfg.Window)+int64(c.cfg.Window/2))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		if err := c.Step(ctx, next); err != nil && !errors.Is(err, ErrConflict) {
			c.cfg.Logger.Warn("routing step", "error", err)
		}
	}
}

// Step looks at the last finished window and the lane backlogs and makes
// at most one change per tenant.
func (c *Controller) Step(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	report, err := ReadReport(ctx, c.cfg.Redis, c.cfg.Prefix, WindowIndex(now, c.cfg.Window)-1)
	if err != nil {
		return err
	}
	snap, err := c.cfg.Store.Load(ctx)
	if err != nil {
		return err
	}
	c.cfg.Table.Update(snap)
	depths := c.cfg.Table.Depths()

	// Splits: hottest first, within the cap.
	hot := slices.SortedFunc(maps.Keys(report.Counts), func(a, b string) int {
		return int(report.Counts[b] - report.Counts[a])
	})
	for _, tenant := range hot {
		share := report.Share(tenant)
		if share < c.cfg.HotShare || snap.Pinned[tenant] {
			continue
		}
		if _, ok := snap.Dedicated[tenant]; ok {
			continue
		}
		var backlog int64
		for _, lane := range c.cfg.Table.SharedShard(tenant) {
			backlog += depths[lane]
		}
		if backlog < c.cfg.HotBacklog {
			continue
		}
		if len(snap.Dedicated) >= c.cfg.MaxDedicated {
			c.cfg.Logger.Warn("hot tenant stays on shared lanes: dedicated lanes at their cap", "tenant", tenant, "cap", c.cfg.MaxDedicated)
			break
		}
		reason := fmt.Sprintf("%.0f%% of %d tasks in the last window, %d waiting in its shard", 100*share, report.Total, backlog)
		if snap, err = c.split(ctx, snap, tenant, reason, nil); err != nil {
			return err
		}
	}

	// Merges: cooled down and empty.
	for _, tenant := range slices.Sorted(maps.Keys(snap.Dedicated)) {
		lane := snap.Dedicated[tenant]
		if snap.Pinned[tenant] || report.Share(tenant) >= c.cfg.HotShare/2 || depths[lane] > 0 {
			delete(c.cool, tenant)
			continue
		}
		since, ok := c.cool[tenant]
		if !ok {
			c.cool[tenant] = now
			continue
		}
		if now.Sub(since) < c.cfg.Cooldown {
			continue
		}
		reason := fmt.Sprintf("below %.0f%% of tasks with an empty lane for %s", 50*c.cfg.HotShare, now.Sub(since).Round(time.Second))
		if snap, err = c.merge(ctx, snap, tenant, reason, nil, now); err != nil {
			return err
		}
		delete(c.cool, tenant)
	}

	// Deletes: lanes retired a grace period ago (gateways with an older
	// table may still route to them meanwhile), once empty. The retiring
	// list lives in the store, so a controller that restarts meanwhile
	// still deletes them, and a dispatcher that starts meanwhile consumes
	// them.
	for _, lane := range slices.Sorted(maps.Keys(snap.Retiring)) {
		if now.Sub(snap.Retiring[lane]) < c.cfg.LaneGrace {
			continue
		}
		deleted, err := c.cfg.Lanes.DeleteLane(ctx, lane)
		if err != nil {
			c.cfg.Logger.Warn("deleting a dedicated lane", "lane", lane, "error", err)
			continue
		}
		if !deleted {
			continue // not empty yet: dispatchers still consume it
		}
		ch := Change{Action: "delete", Lane: lane, Reason: fmt.Sprintf("retired %s ago and empty", now.Sub(snap.Retiring[lane]).Round(time.Second))}
		if _, err := c.cfg.Store.Apply(ctx, snap.Version, ch, nil); err != nil {
			return err // a conflict: the next step tries again
		}
		c.cfg.Logger.Info("deleted dedicated lane", "lane", lane)
		if c.cfg.OnChange != nil {
			c.cfg.OnChange(ch)
		}
		if snap, err = c.cfg.Store.Load(ctx); err != nil {
			return err
		}
		c.cfg.Table.Update(snap)
	}
	return nil
}

// split declares tenant's dedicated lane, then routes it there.
func (c *Controller) split(ctx context.Context, snap Snapshot, tenant, reason string, pin *bool) (Snapshot, error) {
	lane := c.cfg.Table.Names().Dedicated(tenant)
	if err := c.cfg.Lanes.DeclareLanes(ctx, lane); err != nil {
		return snap, fmt.Errorf("declaring %s: %w", lane, err)
	}
	return c.apply(ctx, snap, Change{Tenant: tenant, Action: "split", Lane: lane, Reason: reason}, pin)
}

func (c *Controller) merge(ctx context.Context, snap Snapshot, tenant, reason string, pin *bool, at time.Time) (Snapshot, error) {
	lane := snap.Dedicated[tenant]
	return c.apply(ctx, snap, Change{Tenant: tenant, Action: "merge", Lane: lane, Reason: reason, At: at.UTC()}, pin)
}

func (c *Controller) apply(ctx context.Context, snap Snapshot, ch Change, pin *bool) (Snapshot, error) {
	if pin != nil {
		ch.Pinned = *pin
	}
	if _, err := c.cfg.Store.Apply(ctx, snap.Version, ch, pin); err != nil {
		return snap, err
	}
	c.cfg.Logger.Info("routing change", "tenant", ch.Tenant, "action", ch.Action, "lane", ch.Lane, "reason", ch.Reason)
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(ch)
	}
	next, err := c.cfg.Store.Load(ctx)
	if err != nil {
		return snap, err
	}
	c.cfg.Table.Update(next)
	return next, nil
}

// Pin moves tenant to a dedicated lane (dedicated true) or back to its
// shared shard, and keeps it there: the controller leaves pinned tenants
// alone. Unpin hands it back to the controller.
func (c *Controller) Pin(ctx context.Context, tenant string, dedicated bool) (Change, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range 5 {
		snap, err := c.cfg.Store.Load(ctx)
		if err != nil {
			return Change{}, err
		}
		pin := true
		_, isDedicated := snap.Dedicated[tenant]
		switch {
		case dedicated && !isDedicated:
			if len(snap.Dedicated) >= c.cfg.MaxDedicated {
				return Change{}, fmt.Errorf("dedicated lanes are at their cap (%d)", c.cfg.MaxDedicated)
			}
			_, err = c.split(ctx, snap, tenant, "pinned by an operator", &pin)
		case !dedicated && isDedicated:
			_, err = c.merge(ctx, snap, tenant, "pinned by an operator", &pin, time.Now())
		default:
			action := "merge"
			if dedicated {
				action = "split"
			}
			ch := Change{Tenant: tenant, Action: action, Lane: snap.Dedicated[tenant], Reason: "pinned by an operator"}
			_, err = c.apply(ctx, snap, ch, &pin)
		}
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return Change{}, err
		}
		log, err := c.cfg.Store.Log(ctx, 1)
		if err != nil || len(log) == 0 {
			return Change{}, err
		}
		return log[0], nil
	}
	return Change{}, ErrConflict
}
