package routing

import (
	"hash/fnv"
	"maps"
	"slices"
	"sync"
)

// DedicatedLanePrefix prefixes every tenant's dedicated lane.
const DedicatedLanePrefix = "tasklane.lane.tenant."

// DedicatedLaneName is tenant's dedicated lane.
func DedicatedLaneName(tenant string) string { return DedicatedLanePrefix + tenant }

// Snapshot is one version of the routing table: which tenants have a
// dedicated lane.
type Snapshot struct {
	Version int64
	// Dedicated maps a tenant to its dedicated lane.
	Dedicated map[string]string
	// Pinned tenants are placed by an operator; the controller leaves them.
	Pinned map[string]bool
}

// Dynamic is the table gateways, schedulers and dispatchers use: shuffle
// shards over the shared lanes, dedicated lanes for hot tenants (updated
// from the store), and within a shard the lane with the least backlog.
type Dynamic struct {
	static *Static
	// urgent tenants go to the least-backlogged shared lane of all, not
	// just of their shard.
	urgent map[string]bool

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
	return &Dynamic{static: static, urgent: u, snap: Snapshot{Dedicated: map[string]string{}, Pinned: map[string]bool{}}, depth: map[string]int64{}}
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
	// The least backlog wins; ties (no depth known yet, or equal) are
	// broken by the key so a tenant's tasks still spread.
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	start := int(h.Sum32() % uint32(len(candidates)))
	best := candidates[start]
	for i := 1; i < len(candidates); i++ {
		lane := candidates[(start+i)%len(candidates)]
		if d.depth[lane] < d.depth[best] {
			best = lane
		}
	}
	return best
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

// Lanes lists the shared lanes and every dedicated lane.
func (d *Dynamic) Lanes() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append(d.static.Lanes(), d.dedicatedLanes()...)
}

// SharedLanes lists the shared lanes.
func (d *Dynamic) SharedLanes() []string { return d.static.Lanes() }

func (d *Dynamic) dedicatedLanes() []string {
	return slices.Sorted(maps.Values(d.snap.Dedicated))
}

// Snapshot returns the table's current version.
func (d *Dynamic) Snapshot() Snapshot {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return Snapshot{Version: d.snap.Version, Dedicated: maps.Clone(d.snap.Dedicated), Pinned: maps.Clone(d.snap.Pinned)}
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
	d.snap = Snapshot{Version: s.Version, Dedicated: maps.Clone(s.Dedicated), Pinned: maps.Clone(s.Pinned)}
	if d.snap.Dedicated == nil {
		d.snap.Dedicated = map[string]string{}
	}
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

// SetDepths records lane backlogs.
func (d *Dynamic) SetDepths(depths map[string]int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.depth = maps.Clone(depths)
}

// Depths returns the last recorded lane backlogs.
func (d *Dynamic) Depths() map[string]int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return maps.Clone(d.depth)
}
