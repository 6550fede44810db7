// Package gateway serves Tasklane's HTTP API: CloudEvents ingest
// (POST /v1/events in binary, structured and batch mode) and the task API
// (GET /v1/tasks, also by event: ?event_id=&source=, or by ?batch=; GET /v1/tasks/{id};
// the task log GET /v1/tasks/{id}/logs, and POST for a function's lines
// with its task token), the tenant's functions (GET /v1/functions: limits,
// its running and waiting tasks, its quota), task control (pauses, resume, cancel by selector:
// control.go), and the jobs bulk calls too large for a request run in
// (GET /v1/jobs/{id}: jobs.go). Every request is scoped to the tenant
// its API key names; another tenant's task id answers 404.
//
// [Triggers] serves the tenant's trigger list (GET /v1/triggers), and
// [Admin] the operator API for admin keys (/v1/admin/routing).
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/httpjson"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/jobs"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/tasktoken"
)

// Limits bound request sizes. Zero fields take pkg/config's defaults.
type Limits struct {
	// MaxEventBytes bounds a binary or structured request body, each event
	// of a batch, and each event whole (attributes, extensions and data, as
	// ingest.EventSize measures it; the gateway's ingester applies it).
	// Default config.MaxEventBytesDefault.
	MaxEventBytes int64
	// MaxBatchBytes bounds a batch request body. Default
	// config.MaxBatchBytesDefault.
	MaxBatchBytes int64
	// MaxBatchEvents bounds the events in one batch. Default
	// config.MaxBatchEventsDefault.
	MaxBatchEvents int
}

// Config configures the gateway.
type Config struct {
	Keyring  *auth.Keyring
	Ingester *ingest.Ingester
	Ledger   *ledger.Ledger
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
	Limits   Limits
	// FunctionExists says whether a function is configured: a pause or
	// cancel of one that is not answers 422. Nil accepts any name.
	FunctionExists func(name string) bool
	// BulkSyncMax is how many matching tasks a bulk call (cancel by
	// selector, DLQ redrive and purge) handles in the request; a larger
	// selection is answered 202 with a job (jobs.go). Default
	// contracts.BulkSyncMaxDefault.
	BulkSyncMax int
	// JobLease is a job's lease (default jobs.LeaseDefault): a job whose
	// gateway stopped is resumed by another within about this long.
	JobLease time.Duration
	// JobsPerTenant bounds a tenant's running jobs (default
	// jobs.PerTenantDefault); a bulk call over it answers 429.
	JobsPerTenant int
	// Functions are the configured functions, in config order (GET
	// /v1/functions shows each tenant those its events reach).
	Functions []ledger.FunctionSpec
	// Quotas are the tenants' configured limits (running and backlog
	// unset), as GET /v1/functions shows them; a tenant without an entry
	// has none.
	Quotas map[string]contracts.TenantQuota
}

// Gateway is the HTTP API.
type Gateway struct {
	cfg Config
	// tokens verifies task tokens (POST /v1/tasks/{id}/logs).
	tokens *tasktoken.Keys
	// jobs runs the bulk calls too large for a request.
	jobs *jobs.Runner
}

// New returns a gateway.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Limits.MaxEventBytes <= 0 {
		cfg.Limits.MaxEventBytes = config.MaxEventBytesDefault
	}
	if cfg.Limits.MaxBatchBytes <= 0 {
		cfg.Limits.MaxBatchBytes = config.MaxBatchBytesDefault
	}
	if cfg.Limits.MaxBatchEvents <= 0 {
		cfg.Limits.MaxBatchEvents = config.MaxBatchEventsDefault
	}
	if cfg.Ingester != nil {
		cfg.Ingester = cfg.Ingester.WithMaxEventBytes(cfg.Limits.MaxEventBytes)
	}
	if cfg.BulkSyncMax <= 0 {
		cfg.BulkSyncMax = contracts.BulkSyncMaxDefault
	}
	g := &Gateway{cfg: cfg}
	if cfg.Ledger != nil {
		g.tokens = tasktoken.NewKeys(cfg.Ledger.TokenSecret)
		g.jobs = g.newJobRunner()
	}
	return g
}

// Register mounts the API routes on mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/events", g.handleEvents)
	mux.HandleFunc("GET /v1/tasks/{id}", g.handleGetTask)
	mux.HandleFunc("GET /v1/tasks", g.handleListTasks)
	mux.HandleFunc("DELETE /v1/tasks/{id}", g.handleCancelTask)
	mux.HandleFunc("GET /v1/tasks/{id}/logs", g.handleTaskLog)
	mux.HandleFunc("POST /v1/tasks/{id}/logs", g.handleWriteTaskLog)
	mux.HandleFunc(FunctionsRoute, g.handleFunctions)
	g.registerDLQ(mux)
	g.registerControl(mux)
	g.registerJobs(mux)
}

// contextT shortens signatures of ledger operations taken as values.
type contextT = context.Context

// ledgerUnavailable logs err and answers 503.
func (g *Gateway) ledgerUnavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	g.cfg.Logger.ErrorContext(r.Context(), what, "error", err)
	WriteError(w, http.StatusServiceUnavailable, "task ledger unavailable")
}

// writeList answers one page of tasks.
func (g *Gateway) writeList(w http.ResponseWriter, r *http.Request, tenant string, f ledger.ListFilter) {
	list, err := g.cfg.Ledger.List(r.Context(), tenant, f)
	switch {
	case errors.Is(err, ledger.ErrBadCursor):
		WriteError(w, http.StatusBadRequest, "cursor: not a cursor this API returned")
	case err != nil:
		g.ledgerUnavailable(w, r, "listing tasks", err)
	default:
		if list.Tasks == nil {
			list.Tasks = []contracts.Task{}
		}
		WriteJSON(w, http.StatusOK, list)
	}
}

// WriteError answers with status and {"error": msg}; WriteJSON with status
// and v as JSON; WriteRefused a submission refused by backpressure (429).
var (
	WriteError   = httpjson.Error
	WriteJSON    = httpjson.Write
	WriteRefused = httpjson.Refused
)

func (g *Gateway) tenant(w http.ResponseWriter, r *http.Request) (string, bool) {
	t, err := g.cfg.Keyring.Authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane"`)
		WriteError(w, http.StatusUnauthorized, err.Error())
		return "", false
	}
	return t, true
}

func (g *Gateway) handleGetTask(w http.ResponseWriter, r *http.Request) { g.showTask(w, r, nil, nil) }

// showTask answers the tenant's task {id}; notFound, when set, may still
// turn it away with a 404 and its reason; extend, when set, adds to the
// record before it is answered.
func (g *Gateway) showTask(w http.ResponseWriter, r *http.Request, notFound func(*contracts.Task) string, extend func(context.Context, string, *contracts.Task)) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	t, err := g.cfg.Ledger.Get(r.Context(), tenant, r.PathValue("id"))
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "task not found")
	case err != nil:
		g.ledgerUnavailable(w, r, "reading task", err)
	case notFound != nil && notFound(t) != "":
		WriteError(w, http.StatusNotFound, notFound(t))
	default:
		if extend != nil {
			extend(r.Context(), tenant, t)
		}
		WriteJSON(w, http.StatusOK, t)
	}
}

func (g *Gateway) handleListTasks(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := ledger.ListFilter{State: contracts.State(q.Get("state")), Function: q.Get("function"), Cursor: q.Get("cursor"),
		EventID: q.Get("event_id"), EventSource: q.Get("source"), Batch: q.Get("batch")}
	if f.State != "" && !f.State.Valid() {
		WriteError(w, http.StatusBadRequest, "state: unknown state "+strconv.Quote(string(f.State)))
		return
	}
	switch {
	case f.EventSource != "" && f.EventID == "":
		WriteError(w, http.StatusBadRequest, "source: only with event_id (an event is found by its id, or by source and id)")
		return
	case f.EventSource != "" && f.Cursor != "":
		WriteError(w, http.StatusBadRequest, "cursor: not used with event_id and source (the answer is one page)")
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > ledger.ListLimitMax {
			WriteError(w, http.StatusBadRequest, "limit: must be an integer from 1 to "+strconv.Itoa(ledger.ListLimitMax))
			return
		}
		f.Limit = n
	}
	g.writeList(w, r, tenant, f)
}

// handleCancelTask cancels a task that has not ended (a running attempt is
// aborted): 200 with the cancelled record; 409 when it already ended; 404
// when the tenant has no such task.
func (g *Gateway) handleCancelTask(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	t, err := g.cfg.Ledger.Cancel(r.Context(), tenant, r.PathValue("id"))
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "task not found")
	case errors.Is(err, ledger.ErrNotCancellable):
		WriteError(w, http.StatusConflict, err.Error()+" (only tasks that have not ended can be cancelled)")
	case err != nil:
		g.ledgerUnavailable(w, r, "cancelling task", err)
	default:
		WriteJSON(w, http.StatusOK, t)
	}
}
