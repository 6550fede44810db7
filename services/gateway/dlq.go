package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// registerDLQ mounts the dead-letter queue API: list, show, redrive and
// purge, one task or all matching a filter (with a dry run that counts).
func (g *Gateway) registerDLQ(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/dlq", g.handleDLQList)
	mux.HandleFunc("GET /v1/dlq/{id}", g.handleDLQShow)
	mux.HandleFunc("POST /v1/dlq/{id}/redrive", g.handleDLQRedriveOne)
	mux.HandleFunc("DELETE /v1/dlq/{id}", g.handleDLQPurgeOne)
	mux.HandleFunc("POST /v1/dlq/redrive", g.handleDLQBulk(true))
	mux.HandleFunc("POST /v1/dlq/purge", g.handleDLQBulk(false))
}

func (g *Gateway) handleDLQList(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f, msg := dlqFilter(q)
	if msg != "" {
		WriteError(w, http.StatusBadRequest, msg)
		return
	}
	f.Cursor = q.Get("cursor")
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

// dlqFilter reads function, reason, since and until.
func dlqFilter(q url.Values) (ledger.ListFilter, string) {
	f := ledger.ListFilter{State: contracts.StateDead, Function: q.Get("function"), Reason: contracts.Reason(q.Get("reason"))}
	if msg := checkReason(f.Reason); msg != "" {
		return f, msg
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.FinishedSince}, {"until", &f.FinishedUntil}} {
		if s := q.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return f, p.name + ": must be an RFC 3339 time, got " + strconv.Quote(s)
			}
			*p.dst = t
		}
	}
	return f, ""
}

func checkReason(r contracts.Reason) string {
	switch r {
	case "", contracts.ReasonNonRetryable, contracts.ReasonAttemptsExhausted:
		return ""
	}
	return "reason: unknown reason " + strconv.Quote(string(r)) + " (non_retryable or attempts_exhausted)"
}

// handleDLQShow answers a dead task's record with its event's data (which
// the task API leaves out), decoded from the stored lane message.
func (g *Gateway) handleDLQShow(w http.ResponseWriter, r *http.Request) {
	g.showTask(w, r, func(t *contracts.Task) string {
		if t.State != contracts.StateDead {
			return "task is not in the dead-letter queue: it is " + string(t.State)
		}
		return ""
	}, g.addEventData)
}

// addEventData sets t's EventData from its stored message. A message that
// cannot be read leaves the record without data (logged): the record is
// still worth showing.
func (g *Gateway) addEventData(ctx context.Context, tenant string, t *contracts.Task) {
	stored, err := g.cfg.Ledger.Message(ctx, tenant, t.ID)
	if err != nil {
		g.cfg.Logger.WarnContext(ctx, "reading a dead task's message", "task", t.ID, "error", err)
		return
	}
	msg, err := taskmsg.Decode(stored)
	if err != nil {
		g.cfg.Logger.WarnContext(ctx, "decoding a dead task's message", "task", t.ID, "error", err)
		return
	}
	_, e, err := taskmsg.Parse(msg)
	if err != nil {
		g.cfg.Logger.WarnContext(ctx, "decoding a dead task's event", "task", t.ID, "error", err)
		return
	}
	t.EventData, t.EventDataEncoding, t.EventDataBytes = eventData(e.DataContentType(), e.Data())
}

// eventData renders data for contracts.Task.EventData: the JSON value when
// the content type says JSON (or is absent) and the bytes are JSON, a JSON
// string for UTF-8 text, else the base64 of the bytes as a JSON string.
// Data over contracts.EventDataMax bytes is left out.
func eventData(contentType string, data []byte) (json.RawMessage, string, int) {
	if len(data) == 0 {
		return nil, "", 0
	}
	if len(data) > contracts.EventDataMax {
		return nil, "", len(data)
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if (contentType == "" || mt == "application/json" || strings.HasSuffix(mt, "+json")) && json.Valid(data) {
		return json.RawMessage(data), "", len(data)
	}
	if utf8.Valid(data) {
		b, _ := json.Marshal(string(data))
		return b, "", len(data)
	}
	b, _ := json.Marshal(base64.StdEncoding.EncodeToString(data))
	return b, "base64", len(data)
}

func (g *Gateway) handleDLQRedriveOne(w http.ResponseWriter, r *http.Request) {
	g.dlqOne(w, r, g.cfg.Ledger.Redrive, http.StatusAccepted)
}

func (g *Gateway) handleDLQPurgeOne(w http.ResponseWriter, r *http.Request) {
	g.dlqOne(w, r, g.cfg.Ledger.Purge, http.StatusNoContent)
}

// dlqOne redrives or purges one task: 404 unknown, 409 not dead.
func (g *Gateway) dlqOne(w http.ResponseWriter, r *http.Request, op func(ctx contextT, tenant, id string) error, okStatus int) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	err := op(r.Context(), tenant, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "task not found")
	case errors.Is(err, ledger.ErrNotDead):
		WriteError(w, http.StatusConflict, err.Error())
	case err != nil:
		g.ledgerUnavailable(w, r, "changing a dead-lettered task", err)
	case okStatus == http.StatusNoContent:
		w.WriteHeader(okStatus)
	default:
		t, err := g.cfg.Ledger.Get(r.Context(), tenant, id)
		if err != nil {
			g.ledgerUnavailable(w, r, "reading task", err)
			return
		}
		WriteJSON(w, okStatus, t)
	}
}

func (g *Gateway) handleDLQBulk(redrive bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := g.tenant(w, r)
		if !ok {
			return
		}
		var req contracts.DLQFilter
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			WriteError(w, http.StatusBadRequest, "body: want a JSON filter {function, reason, since, until, dry_run, limit, cursor}: "+err.Error())
			return
		}
		if req.Limit < 0 || req.Limit > contracts.DLQStepMax {
			WriteError(w, http.StatusBadRequest, "limit: must be an integer from 0 to "+strconv.Itoa(contracts.DLQStepMax))
			return
		}
		if req.Cursor != "" && req.Limit == 0 {
			WriteError(w, http.StatusBadRequest, "cursor: continues a stepped call; give limit too")
			return
		}
		if msg := checkReason(req.Reason); msg != "" {
			WriteError(w, http.StatusBadRequest, msg)
			return
		}
		f := dlqListFilter(req)
		if !req.DryRun && req.Limit == 0 {
			// Counted first (up to one past the bound): a larger
			// selection is handed to a job before any task is changed.
			n, err := g.cfg.Ledger.CountDead(r.Context(), tenant, f, g.cfg.BulkSyncMax)
			if err != nil {
				g.ledgerUnavailable(w, r, "counting dead tasks", err)
				return
			}
			if n > g.cfg.BulkSyncMax {
				kind := contracts.JobDLQPurge
				if redrive {
					kind = contracts.JobDLQRedrive
				}
				g.startJob(w, r, tenant, kind, req)
				return
			}
		}
		op := g.cfg.Ledger.PurgeAll
		if redrive {
			op = g.cfg.Ledger.RedriveAll
		}
		res, err := op(r.Context(), tenant, f, req.DryRun)
		if errors.Is(err, ledger.ErrBadCursor) {
			WriteError(w, http.StatusBadRequest, "cursor: not one this call answered")
			return
		}
		if err != nil {
			g.ledgerUnavailable(w, r, "bulk dead-letter operation", err)
			return
		}
		WriteJSON(w, http.StatusOK, res)
	}
}

// dlqListFilter is the ledger filter of a bulk DLQ call.
func dlqListFilter(req contracts.DLQFilter) ledger.ListFilter {
	f := ledger.ListFilter{Function: req.Function, Reason: req.Reason, Limit: req.Limit, Cursor: req.Cursor}
	if req.Since != nil {
		f.FinishedSince = *req.Since
	}
	if req.Until != nil {
		f.FinishedUntil = *req.Until
	}
	return f
}
