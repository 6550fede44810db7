package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/routing"
)

// The operator API's routes, as Admin.Register mounts them.
const (
	AdminRoutingRoute   = "GET /v1/admin/routing"
	AdminPinRoute       = "POST /v1/admin/routing/pin"
	AdminFunctionsRoute = "GET /v1/admin/functions"
)

// AdminRoutes lists the operator API's routes.
var AdminRoutes = []string{AdminRoutingRoute, AdminPinRoute, AdminFunctionsRoute}

// RoutingStore is what the admin API reads of the routing table in Redis
// (*routing.Store).
type RoutingStore interface {
	Load(ctx context.Context) (routing.Snapshot, error)
	Log(ctx context.Context, n int) ([]routing.Change, error)
}

// RoutingTable is the process's routing table (*routing.Dynamic).
type RoutingTable interface {
	Update(routing.Snapshot)
	Lanes() []string
	SharedShard(tenant string) []string
}

// LaneDepths reports lanes' backlogs and consumers (broker.Driver).
type LaneDepths interface {
	Depths(ctx context.Context, lanes ...string) (map[string]broker.LaneDepth, error)
}

// Pinner pins a tenant to a dedicated lane or to its shared shard
// (*routing.Controller).
type Pinner interface {
	Pin(ctx context.Context, tenant string, dedicated bool) (routing.Change, error)
}

// FunctionStats reads functions' flow-control state (*ledger.Ledger).
type FunctionStats interface {
	FunctionStats(ctx context.Context, fns []ledger.FunctionSpec) ([]ledger.FunctionStat, error)
}

// AdminConfig configures the operator API.
type AdminConfig struct {
	// Keyring authenticates admin keys; nil turns the API off (403).
	Keyring *auth.Keyring
	Store   RoutingStore
	Table   RoutingTable
	Lanes   LaneDepths
	Pinner  Pinner
	// Tenants are the configured tenants' ids: a pin names one of them.
	Tenants []string
	// DefaultTenant, when set (no tenants configured, dev), is the tenant
	// a pin naming none pins.
	DefaultTenant string
	// Stats reads the functions' limits and queues for GET
	// /v1/admin/functions.
	Stats FunctionStats
	// Functions are the configured functions, in config order.
	Functions []ledger.FunctionSpec
}

// routingLogLength is how many recent changes GET /v1/admin/routing shows.
const routingLogLength = 50

// pinBodyLimit bounds the body of POST /v1/admin/routing/pin.
const pinBodyLimit = 4 << 10

// Admin serves the operator API: the routing table (GET
// /v1/admin/routing), pinning a tenant (POST /v1/admin/routing/pin) and the
// functions' flow control (GET /v1/admin/functions), for admin keys.
type Admin struct{ cfg AdminConfig }

// NewAdmin returns the operator API.
func NewAdmin(cfg AdminConfig) *Admin { return &Admin{cfg: cfg} }

// Register mounts the operator API's routes (AdminRoutes) on mux.
func (a *Admin) Register(mux *http.ServeMux) {
	mux.HandleFunc(AdminRoutingRoute, a.guard(a.handleRouting))
	mux.HandleFunc(AdminPinRoute, a.guard(a.handlePin))
	mux.HandleFunc(AdminFunctionsRoute, a.guard(a.handleFunctions))
}

// guard lets admin keys through: 403 when the API is off, 401 without a
// valid key.
func (a *Admin) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Keyring == nil {
			WriteError(w, http.StatusForbidden, "the admin API is off: set server.admin_keys")
			return
		}
		if _, err := a.cfg.Keyring.Authenticate(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane-admin"`)
			WriteError(w, http.StatusUnauthorized, err.Error())
			return
		}
		h(w, r)
	}
}

func (a *Admin) handleRouting(w http.ResponseWriter, r *http.Request) {
	view, err := a.RoutingView(r.Context())
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, view)
}

// RoutingView is the answer of GET /v1/admin/routing: the routing table,
// the lanes with their backlogs and consumers, every tenant's placement and
// the recent changes. The dashboard (services/ui) shows it to admins. Its
// errors are fit to show.
func (a *Admin) RoutingView(ctx context.Context) (contracts.RoutingView, error) {
	snap, err := a.cfg.Store.Load(ctx)
	if err != nil {
		return contracts.RoutingView{}, errors.New("routing table unavailable")
	}
	a.cfg.Table.Update(snap)
	view := contracts.RoutingView{Version: snap.Version}
	lanes := a.cfg.Table.Lanes()
	depths, _ := a.cfg.Lanes.Depths(ctx, lanes...)
	dedicated := make(map[string]bool, len(snap.Dedicated))
	for _, lane := range snap.Dedicated {
		dedicated[lane] = true
	}
	for _, lane := range lanes {
		kind := contracts.LaneShared
		if dedicated[lane] {
			kind = contracts.LaneDedicated
		}
		if _, ok := snap.Retiring[lane]; ok {
			kind = contracts.LaneRetiring
		}
		d := depths[lane]
		view.Lanes = append(view.Lanes, contracts.LaneView{Name: lane, Kind: kind, Backlog: d.Backlog, Consumers: d.Consumers})
	}
	tenants := slices.Clone(a.cfg.Tenants)
	for t := range snap.Dedicated {
		if !slices.Contains(tenants, t) {
			tenants = append(tenants, t)
		}
	}
	slices.Sort(tenants)
	for _, t := range tenants {
		view.Tenants = append(view.Tenants, contracts.TenantPlacement{
			Tenant: t, Shard: a.cfg.Table.SharedShard(t), Dedicated: snap.Dedicated[t], Pinned: snap.Pinned[t],
		})
	}
	if view.Changes, err = a.cfg.Store.Log(ctx, routingLogLength); err != nil {
		return contracts.RoutingView{}, errors.New("routing log unavailable")
	}
	return view, nil
}

func (a *Admin) handlePin(w http.ResponseWriter, r *http.Request) {
	var req contracts.PinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, pinBodyLimit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		WriteError(w, http.StatusBadRequest, `body: want {"tenant": "...", "dedicated": true|false}: `+err.Error())
		return
	}
	if req.Tenant == "" && a.cfg.DefaultTenant != "" {
		req.Tenant = a.cfg.DefaultTenant
	}
	if !slices.Contains(a.cfg.Tenants, req.Tenant) {
		WriteError(w, http.StatusNotFound, "tenant: no tenant "+strconv.Quote(req.Tenant)+" is configured")
		return
	}
	ch, err := a.cfg.Pinner.Pin(r.Context(), req.Tenant, req.Dedicated)
	switch {
	case errors.Is(err, routing.ErrConflict):
		WriteError(w, http.StatusConflict, "the routing table kept changing; try again")
	case err != nil:
		WriteError(w, http.StatusServiceUnavailable, err.Error())
	default:
		WriteJSON(w, http.StatusOK, ch)
	}
}

func (a *Admin) handleFunctions(w http.ResponseWriter, r *http.Request) {
	stats, err := a.cfg.Stats.FunctionStats(r.Context(), a.cfg.Functions)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "function stats unavailable")
		return
	}
	WriteJSON(w, http.StatusOK, functionsView(stats))
}

// functionsView is the answer of GET /v1/admin/functions for stats.
func functionsView(stats []ledger.FunctionStat) contracts.FunctionsView {
	view := contracts.FunctionsView{Functions: make([]contracts.FunctionView, len(stats))}
	for i, s := range stats {
		view.Functions[i] = contracts.FunctionView{
			Name: s.Name, Limit: s.Limit, Adaptive: s.Adaptive, Concurrency: s.Concurrency,
			Running: s.Running, Waiting: s.Waiting, ThrottledLastMinute: s.ThrottledLastMinute,
			Ready: readyBands(s),
		}
	}
	return view
}
