package tasklane

import (
	"context"
	"net/http"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/services/ui"
)

// registerUI mounts the dashboard (services/ui) at /ui/ on a gateway. Its
// pages answer once the app is ready: they read the ledger, the routing
// table and the trigger state the start-up makes.
func (a *App) registerUI(mux *http.ServeMux) {
	h := a.whenReady(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.ui.ServeHTTP(w, r) }))
	mux.Handle(ui.Prefix, h) // ServeMux sends /ui to /ui/
}

// startUI makes the dashboard, after the operator API and the gateway.
func (a *App) startUI() {
	cfg := ui.Config{
		Keyring: a.keys, AdminKeyring: a.adminKeys, Ledger: a.ledger,
		Functions: ledger.FunctionSpecs(a.cfg.Functions), Tenants: a.cfg.TenantIDs(),
		Logger: a.logger.With("component", "ui"),
	}
	if a.adminAPI != nil {
		cfg.Routing = a.adminAPI.RoutingView
	}
	if a.ctrl != nil {
		cfg.Pin = func(ctx context.Context, tenant string, dedicated bool) error {
			_, err := a.ctrl.Pin(ctx, tenant, dedicated)
			return err
		}
	}
	if a.trigAPI != nil {
		cfg.Triggers = a.trigAPI.Views
	}
	mux := http.NewServeMux()
	ui.New(cfg).Register(mux)
	a.ui = mux
}
