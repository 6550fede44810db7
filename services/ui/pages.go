package ui

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

func (u *UI) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w)
	u.render(w, r, u.sessions.fromRequest(r), http.StatusOK, "login.html", "Sign in", map[string]any{
		"AdminKeys": u.cfg.AdminKeyring != nil && !u.cfg.AdminKeyring.IsOpen(),
	})
}

// handleLogin exchanges a key for a session. The key is neither logged nor
// kept: the session holds the tenant (or admin) it names.
func (u *UI) handleLogin(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w)
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if !sameOrigin(r) {
		http.Error(w, "request refused: it did not come from the sign-in page", http.StatusForbidden)
		return
	}
	tenant, admin, err := u.signIn(strings.TrimSpace(r.PostFormValue("key")))
	if err != nil {
		u.render(w, r, nil, http.StatusUnauthorized, "login.html", "Sign in", map[string]any{
			"Error":     "That key was not accepted.",
			"AdminKeys": u.cfg.AdminKeyring != nil && !u.cfg.AdminKeyring.IsOpen(),
		})
		return
	}
	u.sessions.end(w, r)
	u.sessions.start(w, r, tenant, admin, false)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (u *UI) handleLogout(w http.ResponseWriter, r *http.Request, _ *session) {
	u.sessions.end(w, r)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// oneTenant is the tenant a page of one tenant's tasks shows: the scope,
// or for an admin who named none the first tenant.
func (u *UI) oneTenant(r *http.Request, s *session) string {
	if t := u.scope(r, s); t != "" {
		return t
	}
	if len(u.cfg.Tenants) > 0 {
		return u.cfg.Tenants[0]
	}
	return ""
}

// withins are the time windows the filters offer.
var withins = map[string]time.Duration{"15m": 15 * time.Minute, "1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour}

// pageSize is how many tasks a listing page shows.
const pageSize = 100

func (u *UI) handleTasks(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	tenant := u.oneTenant(r, s)
	f := ledger.ListFilter{State: contracts.State(q.Get("state")), Function: q.Get("function"), Cursor: q.Get("cursor"), Limit: pageSize,
		Batch: strings.TrimSpace(q.Get("batch"))}
	if f.State != "" && !f.State.Valid() {
		f.State = ""
	}
	typ := strings.TrimSpace(q.Get("type"))
	within := withins[q.Get("within")]
	list, err := u.cfg.Ledger.List(r.Context(), tenant, f)
	if errors.Is(err, ledger.ErrBadCursor) {
		f.Cursor = ""
		list, err = u.cfg.Ledger.List(r.Context(), tenant, f)
	}
	if err != nil {
		u.unavailable(w, r, s, "listing tasks", err)
		return
	}
	tasks := list.Tasks[:0]
	next := list.NextCursor
	since := u.cfg.Now().Add(-within)
	for _, t := range list.Tasks {
		if within > 0 && t.CreatedAt.Before(since) {
			next = "" // newest first: the rest are older still
			break
		}
		if typ != "" && t.Event.Type != typ {
			continue
		}
		tasks = append(tasks, t)
	}
	var nextURL string
	if next != "" {
		nq := url.Values{}
		for _, k := range []string{"state", "function", "type", "batch", "within", "tenant"} {
			if v := q.Get(k); v != "" {
				nq.Set(k, v)
			}
		}
		nq.Set("cursor", next)
		nextURL = "/ui/tasks?" + nq.Encode()
	}
	u.render(w, r, s, http.StatusOK, "tasks.html", "Tasks", map[string]any{
		"Tasks": tasks, "Next": nextURL, "Tenant": tenant, "Functions": u.functionNames(),
		"State": string(f.State), "Function": f.Function, "Type": typ, "Batch": f.Batch, "Within": q.Get("within"),
	})
}

func (u *UI) functionNames() []string {
	out := make([]string, len(u.cfg.Functions))
	for i, f := range u.cfg.Functions {
		out[i] = f.Name
	}
	return out
}

// findTask reads task id of the session's tenant; an admin who names no
// tenant finds it in whichever tenant has it.
func (u *UI) findTask(r *http.Request, s *session, id string) (*contracts.Task, error) {
	tenants := []string{u.scope(r, s)}
	if tenants[0] == "" {
		tenants = u.tenantsOf(s)
	}
	for _, tenant := range tenants {
		t, err := u.cfg.Ledger.Get(r.Context(), tenant, id)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		return t, err
	}
	return nil, ledger.ErrNotFound
}

func (u *UI) handleTask(w http.ResponseWriter, r *http.Request, s *session) {
	t, err := u.findTask(r, s, r.PathValue("id"))
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		u.render(w, r, s, http.StatusNotFound, "error.html", "Task not found", map[string]any{
			"Message": "No task with that id.",
		})
		return
	case err != nil:
		u.unavailable(w, r, s, "reading a task", err)
		return
	}
	data, dataNote := u.eventData(r, t)
	logs, err := u.cfg.Ledger.Log(r.Context(), t.Tenant, t.ID)
	logNote := ""
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		logNote = "The task's log is no longer stored."
	case err != nil:
		u.cfg.Logger.ErrorContext(r.Context(), "dashboard: reading a task's log", "error", err)
		logNote = "The task's log could not be read: reload to try again."
	case len(logs) == 0:
		logNote = "The log has no entries."
	}
	u.render(w, r, s, http.StatusOK, "task.html", "Task "+t.ID, map[string]any{
		"Task": t, "EventData": data, "EventDataNote": dataNote, "Timeline": timeline(t), "Log": logs, "LogNote": logNote,
	})
}

// eventData is the data of the event t was made from, for display, or a
// note saying why there is none.
func (u *UI) eventData(r *http.Request, t *contracts.Task) (string, string) {
	stored, err := u.cfg.Ledger.Message(r.Context(), t.Tenant, t.ID)
	if err != nil {
		if t.State.Terminal() && t.State != contracts.StateDead {
			// Decision 0019: a finished record keeps no event.
			return "", "A finished task does not keep its event (dead-lettered ones do); result sinks can archive the record."
		}
		return "", "The event is no longer stored."
	}
	msg, err := taskmsg.Decode(stored)
	if err != nil {
		return "", "The stored event could not be read."
	}
	_, e, err := taskmsg.Parse(msg)
	if err != nil {
		return "", "The stored event could not be read."
	}
	data := e.Data()
	switch {
	case len(data) == 0:
		return "", "The event has no data."
	case len(data) > contracts.EventDataMax:
		return "", "The event's data is too large to show here."
	}
	if !utf8.Valid(data) {
		return "", "The event's data is binary (" + strconv.Itoa(len(data)) + " bytes)."
	}
	return prettyJSON(data), ""
}

// step is one entry of a task's timeline.
type step struct {
	What string
	At   time.Time
}

func timeline(t *contracts.Task) []step {
	out := []step{{"Accepted", t.CreatedAt}}
	if t.ScheduledAt != nil && !t.ScheduledAt.Equal(t.CreatedAt) {
		out = append(out, step{"Due", *t.ScheduledAt})
	}
	if t.StartedAt != nil {
		out = append(out, step{"First attempt started", *t.StartedAt})
	}
	if t.FinishedAt != nil {
		out = append(out, step{"Ended: " + string(t.State), *t.FinishedAt})
	}
	slices.SortStableFunc(out, func(a, b step) int { return a.At.Compare(b.At) })
	return out
}

// handleTaskAction cancels, redrives or purges one task, with the API's
// semantics, and goes back to the task's page saying what happened.
func (u *UI) handleTaskAction(w http.ResponseWriter, r *http.Request, s *session) {
	id, action := r.PathValue("id"), r.PathValue("action")
	if action != "cancel" && action != "redrive" && action != "purge" {
		http.NotFound(w, r)
		return
	}
	t, err := u.findTask(r, s, id)
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		u.unavailable(w, r, s, "reading a task", err)
		return
	}
	back := func(done string) {
		v := url.Values{"done": {done}}
		if s.Admin && t != nil {
			v.Set("tenant", t.Tenant)
		}
		http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(id)+"?"+v.Encode(), http.StatusSeeOther)
	}
	if t == nil {
		back("not-found")
		return
	}
	switch action {
	case "cancel":
		_, err = u.cfg.Ledger.Cancel(r.Context(), t.Tenant, id)
		if errors.Is(err, ledger.ErrNotCancellable) {
			back("not-cancellable")
			return
		}
		if err == nil {
			back("cancelled")
			return
		}
	default: // redrive, purge
		op, done := u.cfg.Ledger.Redrive, "redriven"
		if action == "purge" {
			op, done = u.cfg.Ledger.Purge, "purged"
		}
		err = op(r.Context(), t.Tenant, id)
		switch {
		case errors.Is(err, ledger.ErrNotDead):
			back("not-dead")
			return
		case errors.Is(err, ledger.ErrNotFound):
			back("not-found")
			return
		case err == nil && done == "purged":
			v := url.Values{"done": {done}}
			if s.Admin {
				v.Set("tenant", t.Tenant)
			}
			http.Redirect(w, r, "/ui/dlq?"+v.Encode(), http.StatusSeeOther)
			return
		case err == nil:
			back(done)
			return
		}
	}
	u.unavailable(w, r, s, "changing a task", err)
}
