// Package ui serves Tasklane's dashboard at /ui/: server-rendered pages
// (html/template, assets embedded with go:embed, nothing loaded from
// outside the server) over the task ledger, for the tenant or admin key a
// browser signed in with.
//
// A sign-in exchanges a key for an opaque session id in an HttpOnly,
// SameSite=Strict cookie; the server keeps the session's identity (tenant
// or admin), never the key. Every POST carries the session's CSRF token.
// A tenant sees only its own tasks; an admin sees every tenant and the
// lanes and routing. With no tenants configured (dev) the dashboard is open,
// as the API is. See docs/decisions/0015-dashboard.md.
package ui

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/ledger"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Ledger is what the dashboard reads and changes of the task ledger
// (*ledger.Ledger).
type Ledger interface {
	List(ctx context.Context, tenant string, f ledger.ListFilter) (contracts.TaskList, error)
	Get(ctx context.Context, tenant, id string) (*contracts.Task, error)
	Message(ctx context.Context, tenant, id string) ([]byte, error)
	Cancel(ctx context.Context, tenant, id string) (*contracts.Task, error)
	Redrive(ctx context.Context, tenant, id string) error
	Purge(ctx context.Context, tenant, id string) error
	RedriveAll(ctx context.Context, tenant string, f ledger.ListFilter, dryRun bool) (contracts.DLQResult, error)
	PurgeAll(ctx context.Context, tenant string, f ledger.ListFilter, dryRun bool) (contracts.DLQResult, error)
	FunctionStats(ctx context.Context, fns []ledger.FunctionSpec) ([]ledger.FunctionStat, error)
	Log(ctx context.Context, tenant, id string) ([]contracts.LogEntry, error)
	CreatePause(ctx context.Context, tenant string, sel contracts.Selector) (contracts.Pause, error)
	Pauses(ctx context.Context, tenant string) ([]contracts.Pause, error)
	Resume(ctx context.Context, tenant, id string) (int, error)
}

// Config configures the dashboard.
type Config struct {
	// Keyring authenticates tenant keys (open: every visitor is its tenant).
	Keyring *auth.Keyring
	// AdminKeyring authenticates admin keys; nil: no admin sign-in. Open
	// (dev): every visitor is an admin too.
	AdminKeyring *auth.Keyring
	Ledger       Ledger
	// Functions are the configured functions, in config order.
	Functions []ledger.FunctionSpec
	// Tenants are the configured tenants' ids (dev: the default tenant).
	Tenants []string
	// Routing, when set, answers the admin's lanes and routing page
	// (gateway.Admin.RoutingView).
	Routing func(ctx context.Context) (contracts.RoutingView, error)
	// Pin, when set, pins a tenant to a dedicated lane or to its shared
	// shard (routing.Controller.Pin).
	Pin func(ctx context.Context, tenant string, dedicated bool) error
	// Triggers, when set, lists a tenant's triggers with their state
	// (gateway.Triggers.Views).
	Triggers func(ctx context.Context, tenant string) ([]contracts.TriggerView, error)
	// SessionTTL bounds a session's idle time (default 8h).
	SessionTTL time.Duration
	// Refresh is how often the overview updates itself (default 5s).
	Refresh time.Duration
	Logger  *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// UI is the dashboard.
type UI struct {
	cfg      Config
	sessions *sessions
	pages    map[string]*template.Template
}

// Prefix is the path the dashboard is served under.
const Prefix = "/ui/"

// New returns the dashboard.
func New(cfg Config) *UI {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if len(cfg.Tenants) == 0 && cfg.Keyring != nil && cfg.Keyring.IsOpen() {
		if t, err := cfg.Keyring.Tenant(""); err == nil {
			cfg.Tenants = []string{t}
		}
	}
	return &UI{cfg: cfg, sessions: newSessions(cfg.SessionTTL, cfg.Now), pages: parsePages()}
}

// Register mounts the dashboard's routes under Prefix on mux.
func (u *UI) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/login", u.handleLoginForm)
	mux.HandleFunc("POST /ui/login", u.handleLogin)
	mux.HandleFunc("POST /ui/logout", u.post(u.handleLogout))
	mux.HandleFunc("GET /ui/{$}", u.page(u.handleOverview))
	mux.HandleFunc("GET /ui/tasks", u.page(u.handleTasks))
	mux.HandleFunc("GET /ui/tasks/{id}", u.page(u.handleTask))
	mux.HandleFunc("POST /ui/tasks/{id}/{action}", u.post(u.handleTaskAction))
	mux.HandleFunc("GET /ui/dlq", u.page(u.handleDLQ))
	mux.HandleFunc("POST /ui/dlq", u.post(u.handleDLQBulk))
	mux.HandleFunc("GET /ui/lanes", u.page(u.admin(u.handleLanes)))
	mux.HandleFunc("POST /ui/lanes/pin", u.post(u.admin(u.handlePin)))
	mux.HandleFunc("GET /ui/triggers", u.page(u.handleTriggers))
	mux.HandleFunc("GET /ui/pauses", u.page(u.handlePauses))
	mux.HandleFunc("POST /ui/pauses", u.post(u.handleCreatePause))
	mux.HandleFunc("POST /ui/pauses/{id}/resume", u.post(u.handleResume))
}

// handler is a page or action for a signed-in session.
type handler func(w http.ResponseWriter, r *http.Request, s *session)

// page runs h for a signed-in session (creating one in open mode);
// without one it sends the browser to the sign-in form.
func (u *UI) page(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w)
		s := u.current(w, r)
		if s == nil {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		h(w, r, s)
	}
}

// post runs h for a signed-in session whose request carries its CSRF token
// and comes from this origin.
func (u *UI) post(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w)
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		s := u.sessions.fromRequest(r) // a POST never starts a session
		switch {
		case s == nil:
			http.Error(w, "sign in first (or reload the page: the session ended)", http.StatusUnauthorized)
		case !sameOrigin(r) || !s.checkCSRF(r.PostFormValue("csrf")):
			http.Error(w, "request refused: it did not come from a dashboard page (CSRF)", http.StatusForbidden)
		default:
			h(w, r, s)
		}
	}
}

// admin runs h for admin sessions only: 403 for a tenant.
func (u *UI) admin(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if !s.Admin {
			u.render(w, r, s, http.StatusForbidden, "error.html", "Not allowed", map[string]any{
				"Message": "This page is for admins: sign in with an admin key.",
			})
			return
		}
		h(w, r, s)
	}
}

// current returns the request's session, or in open mode a new one.
func (u *UI) current(w http.ResponseWriter, r *http.Request) *session {
	if s := u.sessions.fromRequest(r); s != nil {
		return s
	}
	if u.cfg.Keyring == nil || !u.cfg.Keyring.IsOpen() {
		return nil
	}
	tenant, _ := u.cfg.Keyring.Tenant("")
	admin := u.cfg.AdminKeyring != nil && u.cfg.AdminKeyring.IsOpen()
	return u.sessions.start(w, r, tenant, admin, true)
}

// signIn returns who key belongs to: an admin (checked first) or a tenant.
func (u *UI) signIn(key string) (tenant string, admin bool, err error) {
	if key == "" {
		return "", false, auth.ErrNoKey
	}
	if u.cfg.AdminKeyring != nil && !u.cfg.AdminKeyring.IsOpen() {
		if _, err := u.cfg.AdminKeyring.Tenant(key); err == nil {
			return "", true, nil
		}
	}
	if u.cfg.Keyring != nil && !u.cfg.Keyring.IsOpen() {
		if t, err := u.cfg.Keyring.Tenant(key); err == nil {
			return t, false, nil
		}
	}
	return "", false, auth.ErrBadKey
}

// scope is the tenant a page shows: the session's own, or for an admin the
// one the query or form names ("" when it names none or an unknown one).
func (u *UI) scope(r *http.Request, s *session) string {
	if !s.Admin {
		return s.Tenant
	}
	t := r.FormValue("tenant")
	if slices.Contains(u.cfg.Tenants, t) {
		return t
	}
	if s.Tenant != "" {
		return s.Tenant
	}
	return ""
}

// tenantsOf lists the tenants whose data a session may see: its own, or
// every tenant for an admin.
func (u *UI) tenantsOf(s *session) []string {
	if s.Admin {
		return u.cfg.Tenants
	}
	return []string{s.Tenant}
}

func secureHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// sameOrigin reports whether a POST came from this origin, as far as the
// browser says (Sec-Fetch-Site, else Origin); requests that say neither
// (old browsers, tools) still need the CSRF token.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin" || site == "none"
	}
	if o := r.Header.Get("Origin"); o != "" {
		// The host only: behind a proxy that ends TLS the scheme differs.
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

// unavailable logs err and shows an error page (503).
func (u *UI) unavailable(w http.ResponseWriter, r *http.Request, s *session, what string, err error) {
	u.cfg.Logger.ErrorContext(r.Context(), "dashboard: "+what, "error", err)
	u.render(w, r, s, http.StatusServiceUnavailable, "error.html", "Unavailable", map[string]any{
		"Message": "The task ledger did not answer (" + what + "). Try again shortly.",
	})
}
