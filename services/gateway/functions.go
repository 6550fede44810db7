package gateway

import (
	"net/http"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// FunctionsRoute is the tenant's view of its functions.
const FunctionsRoute = "GET /v1/functions"

// handleFunctions answers GET /v1/functions: the functions the tenant's
// events reach with their limits, the tenant's running and waiting tasks
// of each, and the tenant's quota and its use. It reads the same flow
// control state as GET /v1/admin/functions, counted for the tenant alone:
// no other tenant's number is in the answer.
func (g *Gateway) handleFunctions(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	var specs []ledger.FunctionSpec
	for _, f := range g.cfg.Functions {
		if f.Reaches(tenant) {
			specs = append(specs, f)
		}
	}
	ctx := r.Context()
	stats, err := g.cfg.Ledger.TenantFunctionStats(ctx, tenant, specs)
	if err != nil {
		g.ledgerUnavailable(w, r, "reading function stats", err)
		return
	}
	quota := g.cfg.Quotas[tenant]
	if quota.Running, err = g.cfg.Ledger.TenantRunning(ctx, tenant); err != nil {
		g.ledgerUnavailable(w, r, "reading function stats", err)
		return
	}
	backlogs, err := g.cfg.Ledger.Backlogs(ctx, []string{tenant})
	if err != nil {
		g.ledgerUnavailable(w, r, "reading function stats", err)
		return
	}
	quota.Backlog = backlogs[0].Waiting
	view := contracts.TenantFunctionsView{Tenant: tenant, Quota: quota, Functions: make([]contracts.TenantFunctionView, len(stats))}
	for i, s := range stats {
		view.Functions[i] = contracts.TenantFunctionView{
			Name: s.Name, Limit: s.Limit, Adaptive: s.Adaptive, Concurrency: s.Concurrency,
			Running: s.Running, Waiting: s.Waiting, Ready: readyBands(s),
		}
	}
	WriteJSON(w, http.StatusOK, view)
}

// readyBands is a stat's ready tasks per band, as both function views show
// them.
func readyBands(s ledger.FunctionStat) contracts.ReadyBands {
	return contracts.ReadyBands{High: s.Ready[ledger.BandHigh], Normal: s.Ready[ledger.BandNormal], Low: s.Ready[ledger.BandLow]}
}
