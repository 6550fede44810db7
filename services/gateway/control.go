package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// maxControlBody bounds the body of a pause or a cancel by selector.
const maxControlBody = 64 << 10

// registerControl mounts task control: pauses and cancel by selector.
func (g *Gateway) registerControl(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/pauses", g.handleCreatePause)
	mux.HandleFunc("GET /v1/pauses", g.handleListPauses)
	mux.HandleFunc("DELETE /v1/pauses/{id}", g.handleResume)
	mux.HandleFunc("POST /v1/tasks/cancel", g.handleCancelMatching)
}

// decodeStrict reads a JSON body into v, refusing unknown fields and
// trailing data.
func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxControlBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("invalid body: trailing data after the JSON value")
	}
	return nil
}

// checkSelector answers 400 for a selector that is empty or names a state
// not among states, and 422 for a function that does not exist.
func (g *Gateway) checkSelector(w http.ResponseWriter, s contracts.Selector, states []contracts.State) bool {
	if err := s.Validate(states...); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return false
	}
	if s.Function != "" && g.cfg.FunctionExists != nil && !g.cfg.FunctionExists(s.Function) {
		WriteError(w, http.StatusUnprocessableEntity, fmt.Sprintf("function: no function %q", s.Function))
		return false
	}
	return true
}

func (g *Gateway) handleCreatePause(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	var sel contracts.Selector
	if err := decodeStrict(r, &sel); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !g.checkSelector(w, sel, contracts.PausableStates) {
		return
	}
	p, err := g.cfg.Ledger.CreatePause(r.Context(), tenant, sel)
	if err != nil {
		g.ledgerUnavailable(w, r, "creating pause", err)
		return
	}
	g.cfg.Logger.InfoContext(r.Context(), "pause created", "tenant", tenant, "pause", p.ID, "paused", p.Paused)
	WriteJSON(w, http.StatusCreated, p)
}

func (g *Gateway) handleListPauses(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	ps, err := g.cfg.Ledger.Pauses(r.Context(), tenant)
	if err != nil {
		g.ledgerUnavailable(w, r, "listing pauses", err)
		return
	}
	WriteJSON(w, http.StatusOK, contracts.PauseList{Pauses: ps})
}

func (g *Gateway) handleResume(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	n, err := g.cfg.Ledger.Resume(r.Context(), tenant, r.PathValue("id"))
	switch {
	case errors.Is(err, ledger.ErrPauseNotFound):
		WriteError(w, http.StatusNotFound, "pause not found")
	case err != nil:
		g.ledgerUnavailable(w, r, "resuming pause", err)
	default:
		g.cfg.Logger.InfoContext(r.Context(), "pause resumed", "tenant", tenant, "pause", r.PathValue("id"), "resumed", n)
		WriteJSON(w, http.StatusOK, contracts.ResumeResponse{Resumed: n})
	}
}

func (g *Gateway) handleCancelMatching(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	var req contracts.CancelRequest
	if err := decodeStrict(r, &req); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Limit < 0 {
		WriteError(w, http.StatusBadRequest, "limit: must not be negative")
		return
	}
	if !g.checkSelector(w, req.Selector, contracts.CancellableStates) {
		return
	}
	if !req.DryRun && (req.Limit == 0 || req.Limit > g.cfg.BulkSyncMax) {
		// Counted first (up to one past the bound): a larger selection
		// is handed to a job before any task is changed.
		probe := req
		probe.DryRun, probe.Limit = true, g.cfg.BulkSyncMax+1
		n, err := g.cfg.Ledger.CancelMatching(r.Context(), tenant, probe)
		if err == nil && n.Matched > g.cfg.BulkSyncMax {
			g.startJob(w, r, tenant, contracts.JobCancel, req)
			return
		}
		if err != nil && !errors.Is(err, ledger.ErrBadControlCursor) {
			g.ledgerUnavailable(w, r, "counting tasks to cancel", err)
			return
		}
	}
	res, err := g.cfg.Ledger.CancelMatching(r.Context(), tenant, req)
	switch {
	case errors.Is(err, ledger.ErrBadControlCursor):
		WriteError(w, http.StatusBadRequest, "cursor: not a cursor this API returned")
	case err != nil:
		g.ledgerUnavailable(w, r, "cancelling tasks", err)
	default:
		if !req.DryRun && res.Cancelled > 0 {
			g.cfg.Logger.InfoContext(r.Context(), "tasks cancelled by selector", "tenant", tenant, "cancelled", res.Cancelled)
		}
		WriteJSON(w, http.StatusOK, res)
	}
}
