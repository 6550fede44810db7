package contracts

import "time"

// Lane kinds in a [LaneView].
const (
	// LaneShared is one of the shared lanes every tenant's shuffle shard
	// draws from.
	LaneShared = "shared"
	// LaneDedicated is a hot (or pinned) tenant's own lane.
	LaneDedicated = "dedicated"
	// LaneRetiring is a dedicated lane whose tenant was merged back:
	// nothing is routed to it, and it is deleted once empty.
	LaneRetiring = "retiring"
)

// Routing change actions, in [RoutingChange.Action].
const (
	// ActionSplit moved a tenant to a dedicated lane.
	ActionSplit = "split"
	// ActionMerge moved a tenant back to its shared shard; its lane retires.
	ActionMerge = "merge"
	// ActionDelete deleted a retired lane, empty.
	ActionDelete = "delete"
)

// RoutingView is the body of a 200 answer to GET /v1/admin/routing (an
// admin key): the routing table with its lanes, the tenants' placement and
// the recent changes.
type RoutingView struct {
	// Version is the routing table's version; every change adds one.
	Version int64 `json:"version"`
	// Lanes lists the shared lanes, then the dedicated and retiring ones.
	Lanes []LaneView `json:"lanes"`
	// Tenants lists the configured tenants, and any other tenant with a
	// dedicated lane, sorted by id.
	Tenants []TenantPlacement `json:"tenants"`
	// Changes are the recent splits, merges and deletes, newest first.
	Changes []RoutingChange `json:"changes"`
}

// LaneView is one lane's state.
type LaneView struct {
	Name string `json:"name"`
	// Kind is LaneShared, LaneDedicated or LaneRetiring.
	Kind string `json:"kind"`
	// Backlog and Consumers are as the broker reports them (0 for a lane
	// it does not know).
	Backlog   int64 `json:"backlog"`
	Consumers int   `json:"consumers"`
}

// TenantPlacement says where a tenant's tasks go.
type TenantPlacement struct {
	Tenant string `json:"tenant"`
	// Shard is the tenant's shared shard, dedicated lane or not.
	Shard []string `json:"shard"`
	// Dedicated is its dedicated lane, when it has one: its tasks go there.
	Dedicated string `json:"dedicated,omitempty"`
	// Pinned says an operator placed it; the controller leaves it.
	Pinned bool `json:"pinned,omitempty"`
}

// RoutingChange is one change of the routing table: an entry of
// RoutingView.Changes, and the body of a 200 answer to POST
// /v1/admin/routing/pin.
type RoutingChange struct {
	// Version is the table version the change made.
	Version int64     `json:"version"`
	At      time.Time `json:"at"`
	// Tenant is the tenant moved; empty for a delete.
	Tenant string `json:"tenant"`
	// Action is ActionSplit, ActionMerge or ActionDelete.
	Action string `json:"action"`
	// Lane is the dedicated lane split to, merged from or deleted.
	Lane string `json:"lane,omitempty"`
	// Reason says why, for people: do not parse it.
	Reason string `json:"reason"`
	// Pinned says an operator made the change and pinned the tenant.
	Pinned bool `json:"pinned,omitempty"`
}

// PinRequest is the body of POST /v1/admin/routing/pin.
type PinRequest struct {
	// Tenant to pin; without tenants configured (dev), empty names the
	// default tenant.
	Tenant string `json:"tenant"`
	// Dedicated pins the tenant to a dedicated lane (true) or to its
	// shared shard (false).
	Dedicated bool `json:"dedicated"`
}
