package ui

import (
	"net/http"
	"net/url"
	"slices"
)

func (u *UI) handleLanes(w http.ResponseWriter, r *http.Request, s *session) {
	if u.cfg.Routing == nil {
		u.render(w, r, s, http.StatusOK, "error.html", "Lanes and routing", map[string]any{
			"Message": "The routing table is not available in this process.",
		})
		return
	}
	view, err := u.cfg.Routing(r.Context())
	if err != nil {
		u.unavailable(w, r, s, "reading the routing table", err)
		return
	}
	u.render(w, r, s, http.StatusOK, "lanes.html", "Lanes and routing", map[string]any{
		"Routing": view, "CanPin": u.cfg.Pin != nil,
	})
}

// handlePin pins a configured tenant to a dedicated lane or its shard.
func (u *UI) handlePin(w http.ResponseWriter, r *http.Request, s *session) {
	tenant := r.PostFormValue("tenant")
	if u.cfg.Pin == nil || !slices.Contains(u.cfg.Tenants, tenant) {
		http.Error(w, "no such tenant, or pinning is off", http.StatusBadRequest)
		return
	}
	if err := u.cfg.Pin(r.Context(), tenant, r.PostFormValue("dedicated") == "true"); err != nil {
		u.unavailable(w, r, s, "pinning a tenant", err)
		return
	}
	http.Redirect(w, r, "/ui/lanes?"+url.Values{"done": {"pinned"}}.Encode(), http.StatusSeeOther)
}

// handleTriggers lists the triggers of the tenants the session sees.
func (u *UI) handleTriggers(w http.ResponseWriter, r *http.Request, s *session) {
	data := map[string]any{"Available": u.cfg.Triggers != nil}
	if u.cfg.Triggers != nil {
		var all []any
		for _, tenant := range u.tenantsOf(s) {
			views, err := u.cfg.Triggers(r.Context(), tenant)
			if err != nil {
				u.unavailable(w, r, s, "reading trigger state", err)
				return
			}
			for _, v := range views {
				all = append(all, v)
			}
		}
		data["Triggers"] = all
	}
	u.render(w, r, s, http.StatusOK, "triggers.html", "Triggers", data)
}
