package tasklane

import (
	"net/http"

	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/services/gateway"
)

// adminKeyring: server.admin_keys; with none configured and no tenants
// (dev), the admin API is open like the rest; with tenants but no admin
// keys it is closed (nil).
func (a *App) adminKeyring() (*auth.Keyring, error) {
	if len(a.cfg.Server.AdminKeys) > 0 {
		return auth.NewKeyring(map[string][]string{"admin": a.cfg.Server.AdminKeys})
	}
	if len(a.cfg.Tenants) == 0 {
		return auth.Open("admin"), nil
	}
	return nil, nil
}

// registerAdmin mounts the operator API (services/gateway) on every
// process. Its routes answer once the app is ready: the start-up makes the
// API, which needs the broker and the routing controller.
func (a *App) registerAdmin(mux *http.ServeMux) error {
	kr, err := a.adminKeyring()
	if err != nil {
		return err
	}
	a.adminKeys = kr
	h := a.whenReady(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.admin.ServeHTTP(w, r)
	}))
	for _, route := range gateway.AdminRoutes {
		mux.Handle(route, h)
	}
	return nil
}

// startAdmin makes the operator API, once the broker and the controller
// are.
func (a *App) startAdmin() {
	var dflt string
	if len(a.cfg.Tenants) == 0 {
		dflt = config.DefaultTenant
	}
	mux := http.NewServeMux()
	a.adminAPI = gateway.NewAdmin(gateway.AdminConfig{
		Keyring: a.adminKeys, Store: a.store, Table: a.table, Lanes: a.driver, Pinner: a.ctrl,
		Tenants: a.cfg.TenantIDs(), DefaultTenant: dflt,
		Stats: a.ledger, Functions: ledger.FunctionSpecs(a.cfg.Functions),
	})
	a.adminAPI.Register(mux)
	a.admin = mux
}
