package ui

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// pageNames are the templates of whole pages; each is parsed with
// layout.html.
var pageNames = []string{
	"login.html", "error.html", "overview.html", "tasks.html", "task.html", "dlq.html", "lanes.html", "triggers.html", "pauses.html",
}

var funcs = template.FuncMap{
	// at turns a time.Time or *time.Time into a time.Time (zero for nil).
	"at": func(v any) time.Time {
		switch t := v.(type) {
		case time.Time:
			return t
		case *time.Time:
			if t != nil {
				return *t
			}
		}
		return time.Time{}
	},
	"ms": func(v *int64) string {
		if v == nil {
			return "—"
		}
		return strconv.FormatInt(*v, 10) + " ms"
	},
	"pretty":      prettyJSON,
	"cancellable": cancellable,
	"states":      func() []contracts.State { return contracts.States },
}

func parsePages() map[string]*template.Template {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name))
	}
	return out
}

// view is what every page template gets.
type view struct {
	Title   string
	Session *session
	Nav     string
	// Tenants are the tenants an admin can choose among.
	Tenants []string
	// Scope is the tenant the page shows ("" for all, admins).
	Scope string
	// Flash is a fixed message after an action.
	Flash string
	Data  map[string]any
}

// flashes are the messages an action's redirect may name (?done=): fixed
// text, never text from the request.
var flashes = map[string]string{
	"cancelled":       "Task cancelled.",
	"redriven":        "Task redriven: it is queued again with a fresh attempt budget.",
	"purged":          "Task purged.",
	"not-cancellable": "That task cannot be cancelled now: only queued, scheduled, retrying or paused tasks can.",
	"not-dead":        "That task is not in the dead-letter queue any more.",
	"not-found":       "No such task.",
	"pinned":          "Tenant pinned.",
	"paused":          "Pause created: the matching waiting tasks are paused, and so are those that become ready while it is in force.",
	"resumed":         "Pause resumed: the tasks it held (and no other pause holds) wait to run again.",
	"pause-not-found": "No such pause: it was resumed already.",
}

// render writes page name with status; with ?partial=1 only its "live"
// block (the overview's self-refresh).
func (u *UI) render(w http.ResponseWriter, r *http.Request, s *session, status int, name, title string, data map[string]any) {
	t := u.pages[name]
	v := view{Title: title, Session: s, Nav: name, Flash: flashes[r.FormValue("done")], Data: data}
	if s != nil {
		v.Scope = u.scope(r, s)
		if s.Admin {
			v.Tenants = u.cfg.Tenants
		}
	}
	var buf bytes.Buffer
	exec := "layout"
	if r.FormValue("partial") == "1" && t.Lookup("live") != nil {
		exec = "live"
	}
	if err := t.ExecuteTemplate(&buf, exec, v); err != nil {
		u.cfg.Logger.ErrorContext(r.Context(), "dashboard: rendering "+name, "error", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// prettyJSON indents raw JSON for display (the template escapes it).
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

func cancellable(s contracts.State) bool {
	switch s {
	case contracts.StateQueued, contracts.StateScheduled, contracts.StateRetrying, contracts.StatePaused:
		return true
	}
	return false
}
