package ui

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// batchMax bounds the batch a pause form names.
const batchMax = 256

// pauseRow is a pause with the tenant it belongs to.
type pauseRow struct {
	Tenant string
	contracts.Pause
}

func (u *UI) handlePauses(w http.ResponseWriter, r *http.Request, s *session) {
	u.showPauses(w, r, s, http.StatusOK, "")
}

// showPauses renders the pauses in force of the session's tenant, or for an
// admin of the tenant picked (every tenant when none is), with formErr, when
// set, saying why the pause form was refused.
func (u *UI) showPauses(w http.ResponseWriter, r *http.Request, s *session, status int, formErr string) {
	tenants := []string{u.scope(r, s)}
	if tenants[0] == "" {
		tenants = u.tenantsOf(s)
	}
	var rows []pauseRow
	for _, tenant := range tenants {
		ps, err := u.cfg.Ledger.Pauses(r.Context(), tenant)
		if err != nil {
			u.unavailable(w, r, s, "listing pauses", err)
			return
		}
		for _, p := range ps {
			rows = append(rows, pauseRow{Tenant: tenant, Pause: p})
		}
	}
	u.render(w, r, s, status, "pauses.html", "Pauses", map[string]any{
		"Pauses": rows, "Tenant": u.oneTenant(r, s), "Functions": u.functionNames(), "Error": formErr,
		"Kind": r.PostFormValue("kind"), "Function": r.PostFormValue("function"), "Batch": r.PostFormValue("batch"),
	})
}

// handleCreatePause pauses a configured function or a batch of the
// session's tenant (an admin's picked one).
func (u *UI) handleCreatePause(w http.ResponseWriter, r *http.Request, s *session) {
	tenant := u.oneTenant(r, s)
	var sel contracts.Selector
	switch r.PostFormValue("kind") {
	case "function":
		sel.Function = r.PostFormValue("function")
		if !slices.Contains(u.functionNames(), sel.Function) {
			u.showPauses(w, r, s, http.StatusBadRequest, "Choose one of the configured functions.")
			return
		}
	case "batch":
		sel.Batch = strings.TrimSpace(r.PostFormValue("batch"))
		if sel.Batch == "" || len(sel.Batch) > batchMax {
			u.showPauses(w, r, s, http.StatusBadRequest, "Give the batch to pause (at most 256 bytes).")
			return
		}
	default:
		u.showPauses(w, r, s, http.StatusBadRequest, "Choose what to pause: a function or a batch.")
		return
	}
	if err := sel.Validate(contracts.PausableStates...); err != nil {
		u.showPauses(w, r, s, http.StatusBadRequest, "That pause is not valid.")
		return
	}
	p, err := u.cfg.Ledger.CreatePause(r.Context(), tenant, sel)
	if err != nil {
		u.unavailable(w, r, s, "creating a pause", err)
		return
	}
	u.cfg.Logger.InfoContext(r.Context(), "dashboard: pause created", "tenant", tenant, "pause", p.ID, "paused", p.Paused)
	u.backToPauses(w, r, s, tenant, "paused")
}

// handleResume resumes a pause of the session's tenant (an admin's
// named one).
func (u *UI) handleResume(w http.ResponseWriter, r *http.Request, s *session) {
	tenant := u.oneTenant(r, s)
	n, err := u.cfg.Ledger.Resume(r.Context(), tenant, r.PathValue("id"))
	switch {
	case errors.Is(err, ledger.ErrPauseNotFound):
		u.backToPauses(w, r, s, tenant, "pause-not-found")
	case err != nil:
		u.unavailable(w, r, s, "resuming a pause", err)
	default:
		u.cfg.Logger.InfoContext(r.Context(), "dashboard: pause resumed", "tenant", tenant, "pause", r.PathValue("id"), "resumed", n)
		u.backToPauses(w, r, s, tenant, "resumed")
	}
}

func (u *UI) backToPauses(w http.ResponseWriter, r *http.Request, s *session, tenant, done string) {
	v := url.Values{"done": {done}}
	if s.Admin {
		v.Set("tenant", tenant)
	}
	http.Redirect(w, r, "/ui/pauses?"+v.Encode(), http.StatusSeeOther)
}
