package tasklane

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/gateway"
)

// RoutingView is the answer of GET /v1/admin/routing.
type RoutingView struct {
	Version int64             `json:"version"`
	Lanes   []LaneView        `json:"lanes"`
	Tenants []TenantPlacement `json:"tenants"`
	// Changes are the recent splits and merges, newest first.
	Changes []routing.Change `json:"changes"`
}

// LaneView is one lane's state.
type LaneView struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"` // shared, dedicated or retiring (merged, deleted once empty)
	Backlog   int64  `json:"backlog"`
	Consumers int    `json:"consumers"`
}

// TenantPlacement says where a tenant's tasks go.
type TenantPlacement struct {
	Tenant    string   `json:"tenant"`
	Shard     []string `json:"shard"`
	Dedicated string   `json:"dedicated,omitempty"`
	Pinned    bool     `json:"pinned,omitempty"`
}

// PinRequest is the body of POST /v1/admin/routing/pin.
type PinRequest struct {
	Tenant string `json:"tenant"`
	// Dedicated pins the tenant to a dedicated lane (true) or to its
	// shared shard (false).
	Dedicated bool `json:"dedicated"`
}

// adminKeyring: server.admin_keys; with none configured and no tenants
// (dev), the admin API is open like the rest; with tenants but no admin
// keys it is closed.
func (a *App) adminKeyring() (*auth.Keyring, error) {
	if len(a.cfg.Server.AdminKeys) > 0 {
		return auth.NewKeyring(map[string][]string{"admin": a.cfg.Server.AdminKeys})
	}
	if len(a.cfg.Tenants) == 0 {
		return auth.Open("admin"), nil
	}
	return nil, nil
}

// registerAdmin mounts the operator API on every process.
func (a *App) registerAdmin(mux *http.ServeMux) error {
	kr, err := a.adminKeyring()
	if err != nil {
		return err
	}
	admin := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if kr == nil {
				gateway.WriteError(w, http.StatusForbidden, "the admin API is off: set server.admin_keys")
				return
			}
			if _, err := kr.Authenticate(r); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane-admin"`)
				gateway.WriteError(w, http.StatusUnauthorized, err.Error())
				return
			}
			h(w, r)
		}
	}
	mux.Handle("GET /v1/admin/routing", a.whenReady(admin(a.handleRouting)))
	mux.Handle("POST /v1/admin/routing/pin", a.whenReady(admin(a.handlePin)))
	return nil
}

func (a *App) handleRouting(w http.ResponseWriter, r *http.Request) {
	snap, err := a.store.Load(r.Context())
	if err != nil {
		gateway.WriteError(w, http.StatusServiceUnavailable, "routing table unavailable")
		return
	}
	a.table.Update(snap)
	view := RoutingView{Version: snap.Version}
	lanes := a.table.Lanes()
	depths, _ := a.driver.Depths(r.Context(), lanes...)
	for _, lane := range lanes {
		kind := "shared"
		if strings.HasPrefix(lane, routing.DedicatedLanePrefix) {
			kind = "dedicated"
		}
		if _, ok := snap.Retiring[lane]; ok {
			kind = "retiring"
		}
		d := depths[lane]
		view.Lanes = append(view.Lanes, LaneView{Name: lane, Kind: kind, Backlog: d.Backlog, Consumers: d.Consumers})
	}
	tenants := a.cfg.TenantIDs()
	for t := range snap.Dedicated {
		if !slices.Contains(tenants, t) {
			tenants = append(tenants, t)
		}
	}
	slices.Sort(tenants)
	for _, t := range tenants {
		view.Tenants = append(view.Tenants, TenantPlacement{
			Tenant: t, Shard: a.table.SharedShard(t), Dedicated: snap.Dedicated[t], Pinned: snap.Pinned[t],
		})
	}
	if view.Changes, err = a.store.Log(r.Context(), 50); err != nil {
		gateway.WriteError(w, http.StatusServiceUnavailable, "routing log unavailable")
		return
	}
	gateway.WriteJSON(w, http.StatusOK, view)
}

func (a *App) handlePin(w http.ResponseWriter, r *http.Request) {
	var req PinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		gateway.WriteError(w, http.StatusBadRequest, `body: want {"tenant": "...", "dedicated": true|false}: `+err.Error())
		return
	}
	if req.Tenant == "" && len(a.cfg.Tenants) == 0 {
		req.Tenant = config.DefaultTenant
	}
	if !slices.Contains(a.cfg.TenantIDs(), req.Tenant) {
		gateway.WriteError(w, http.StatusNotFound, "tenant: no tenant "+strconv.Quote(req.Tenant)+" is configured")
		return
	}
	ch, err := a.ctrl.Pin(r.Context(), req.Tenant, req.Dedicated)
	switch {
	case errors.Is(err, routing.ErrConflict):
		gateway.WriteError(w, http.StatusConflict, "the routing table kept changing; try again")
	case err != nil:
		gateway.WriteError(w, http.StatusServiceUnavailable, err.Error())
	default:
		gateway.WriteJSON(w, http.StatusOK, ch)
	}
}
