package routing

import (
	"hash/fnv"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DedicatedLanePrefix prefixes every tenant's dedicated lane under the
// default broker prefix; Names.DedicatedPrefix gives it for any prefix.
const DedicatedLanePrefix = "tasklane.lane.tenant."

// DedicatedLaneName is tenant's dedicated lane under the default broker
// prefix; Names.Dedicated gives it for any prefix.
func DedicatedLaneName(tenant string) string { return Names{}.Dedicated(tenant) }

// Snapshot is one version of the routing table: which tenants have a
// dedicated lane.
type Snapshot struct {
	Version int64
	// Dedicated maps a tenant to its dedicated lane.
	Dedicated map[string]string
	// Pinned tenants are placed by an operator; the controller leaves them.
	Pinned map[string]bool
	// Retiring maps a dedicated lane whose tenant was merged back to when:
	// nothing is routed to it, but dispatchers consume it until the
	// controller deletes it, empty, a grace period later.
	Retiring map[string]time.Time
}

func (s Snapshot) clone() Snapshot {
	c := Snapshot{Version: s.Version, Dedicated: maps.Clone(s.Dedicated), Pinned: maps.Clone(s.Pinned), Retiring: maps.Clone(s.Retiring)}
	if c.Dedicated == nil {
		c.Dedicated = map[string]string{}
	}
	if c.Pinned == nil {
		c.Pinned = map[string]bool{}
	}
	if c.Retiring == nil {
		c.Retiring = map[string]time.Time{}
	}
	return c
}

// Dynamic is the table gateways, schedulers and dispatchers use: shuffle
// shards over the shared lanes, dedicated lanes for hot tenants (updated
// from the store), and within a shard the lane with the least backlog.
type Dynamic struct {
	static *Static
	// urgent tenants go to the least-backlogged shared lane of all, not
	// just of their shard.
	urgent map[string]bool

	// sent counts the tasks this process routed to each shared lane since
	// the last SetDepths: polled depths are up to a poll old, and a burst
	// routed on a stale depth alone would pile onto the lane that looked
	// empty, with its neighbours' tasks behind it.
	sent map[string]*atomic.Int64

	mu       sync.RWMutex
	snap     Snapshot
	depth    map[string]int64
	onChange []func(added, removed []string)
}

// NewDynamic builds a table over static with no dedicated lanes yet.
// latencySensitive tenants are kept off lanes with backlog.
func NewDynamic(static *Static, latencySensitive []string) *Dynamic {
	u := map[string]bool{}
	for _, t := range latencySensitive {
		u[t] = true
	}
	sent := make(map[string]*atomic.Int64, len(static.lanes))
	for _, lane := range static.lanes {
		sent[lane] = new(atomic.Int64)
	}
	return &Dynamic{static: static, urgent: u, sent: sent, snap: Snapshot{}.clone(), depth: map[string]int64{}}
}

// LaneFor picks the lane for one task of tenant.
func (d *Dynamic) LaneFor(tenant, key string) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if lane, ok := d.snap.Dedicated[tenant]; ok {
		return lane
	}
	candidates := d.static.Shard(tenant)
	if d.urgent[tenant] {
		candidates = d.static.lanes
	}
	// The least backlog (last polled depth plus what this process sent
	// since) wins; ties are broken by the key so a tenant's tasks still
	// spread.
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	start := int(h.Sum32() % uint32(len(candidates)))
	best := candidates[start]
	bestBacklog := d.backlog(best)
	for i := 1; i < len(candidates); i++ {
		lane := candidates[(start+i)%len(candidates)]
		if b := d.backlog(lane); b < bestBacklog {
			best, bestBacklog = lane, b
		}
	}
	d.sent[best].Add(1)
	return best
}

// backlog estimates a shared lane's backlog; d.mu is held.
func (d *Dynamic) backlog(lane string) int64 {
	return d.depth[lane] + d.sent[lane].Load()
}

// Shard returns tenant's lanes: its dedicated lane, or its shared shard.
func (d *Dynamic) Shard(tenant string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if lane, ok := d.snap.Dedicated[tenant]; ok {
		return []string{lane}
	}
	return d.static.Shard(tenant)
}

// SharedShard returns tenant's shared shard, dedicated lane or not.
func (d *Dynamic) SharedShard(tenant string) []string { return d.static.Shard(tenant) }

// Lanes lists the shared lanes and every dedicated lane, retiring ones
// included: the lanes to declare and consume.
func (d *Dynamic) Lanes() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append(d.static.Lanes(), d.dedicatedLanes()...)
}

// SharedLanes lists the shared lanes.
func (d *Dynamic) SharedLanes() []string { return d.static.Lanes() }

// Names returns how the table names its lanes.
func (d *Dynamic) Names() Names { return d.static.Names() }

// dedicatedLanes lists the dedicated lanes in use or retiring; d.mu is
// held.
func (d *Dynamic) dedicatedLanes() []string {
	lanes := slices.Collect(maps.Values(d.snap.Dedicated))
	for lane := range d.snap.Retiring {
		if !slices.Contains(lanes, lane) {
			lanes = append(lanes, lane)
		}
	}
	slices.Sort(lanes)
	return lanes
}

// Snapshot returns the table's current version.
func (d *Dynamic) Snapshot() Snapshot {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.snap.clone()
}

// OnChange registers f to learn of dedicated lanes added and removed.
func (d *Dynamic) OnChange(f func(added, removed []string)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onChange = append(d.onChange, f)
}

// Update installs s if it is newer, and tells OnChange listeners.
func (d *Dynamic) Update(s Snapshot) {
	d.mu.Lock()
	if s.Version <= d.snap.Version && d.snap.Version != 0 {
		d.mu.Unlock()
		return
	}
	before := d.dedicatedLanes()
	d.snap = s.clone()
	after := d.dedicatedLanes()
	listeners := slices.Clone(d.onChange)
	d.mu.Unlock()
	added, removed := diff(before, after), diff(after, before)
	if len(added)+len(removed) == 0 {
		return
	}
	for _, f := range listeners {
		f(added, removed)
	}
}

// diff lists what b has and a lacks.
func diff(a, b []string) []string {
	var out []string
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, x)
		}
	}
	return out
}

// SetDepths records lane backlogs, polled from the broker; what was sent
// before the poll is in them.
func (d *Dynamic) SetDepths(depths map[string]int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.depth = maps.Clone(depths)
	for _, n := range d.sent {
		n.Store(0)
	}
}

// Depths returns the last recorded lane backlogs.
func (d *Dynamic) Depths() map[string]int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return maps.Clone(d.depth)
}
