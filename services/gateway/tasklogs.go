package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/tasktoken"
)

// maxLogBodyBytes bounds a POST /v1/tasks/{id}/logs body: the most lines
// an append keeps, each at its longest, with room for JSON escaping.
const maxLogBodyBytes = 2 * ledger.LogLinesMax * ledger.LogMessageMaxBytes

// handleTaskLog answers the tenant's task log: {"entries": [...],
// "last_seq": n} in time order; with ?after=<seq>, only the entries whose
// seq is above it (400 when after is not a seq). 404 when the tenant has
// no such task.
func (g *Gateway) handleTaskLog(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	var after int64
	if s, ok := r.URL.Query()["after"]; ok {
		n, err := strconv.ParseInt(s[0], 10, 64)
		if err != nil || n < 0 || len(s) > 1 {
			WriteError(w, http.StatusBadRequest, "after: want the seq of a log entry (an integer, 0 or more; last_seq of the previous read), got "+strconv.Quote(strings.Join(s, ",")))
			return
		}
		after = n
	}
	entries, last, err := g.cfg.Ledger.LogAfter(r.Context(), tenant, r.PathValue("id"), after)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "task not found")
	case err != nil:
		g.ledgerUnavailable(w, r, "reading task log", err)
	default:
		WriteJSON(w, http.StatusOK, contracts.TaskLog{Entries: entries, LastSeq: last})
	}
}

// handleWriteTaskLog appends a function's lines to its task's log. The
// credential is the attempt's task token (header Tasklane-Task-Token of the
// call), never an API key: 401 for a missing, malformed, forged or expired
// token, 403 for a token of another task, 404 when the task is gone,
// 204 when the lines are in.
func (g *Gateway) handleWriteTaskLog(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane-task"`)
		WriteError(w, http.StatusUnauthorized, "a task token is required (the Tasklane-Task-Token header of the attempt, as Authorization: Bearer)")
		return
	}
	c, err := g.tokens.Verify(r.Context(), tok, time.Now())
	switch {
	case errors.Is(err, tasktoken.ErrExpired):
		WriteError(w, http.StatusUnauthorized, "task token expired (it is valid until the attempt's deadline)")
		return
	case errors.Is(err, tasktoken.ErrMalformed), errors.Is(err, tasktoken.ErrBadSignature):
		w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane-task"`)
		WriteError(w, http.StatusUnauthorized, "not a valid task token")
		return
	case err != nil:
		g.ledgerUnavailable(w, r, "verifying a task token", err)
		return
	}
	id := r.PathValue("id")
	if c.Task != id {
		WriteError(w, http.StatusForbidden, "this task token is for another task")
		return
	}
	var body contracts.LogLines
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxLogBodyBytes))
	if err := dec.Decode(&body); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			WriteError(w, http.StatusRequestEntityTooLarge, "body larger than "+strconv.Itoa(maxLogBodyBytes)+" bytes")
			return
		}
		WriteError(w, http.StatusBadRequest, `body: expected {"lines": ["..."]}: `+err.Error())
		return
	}
	if len(body.Lines) == 0 {
		WriteError(w, http.StatusBadRequest, "lines: at least one line")
		return
	}
	if len(body.Lines) > ledger.LogLinesMax {
		WriteError(w, http.StatusBadRequest, "lines: at most "+strconv.Itoa(ledger.LogLinesMax)+" per request")
		return
	}
	now := time.Now()
	entries := make([]contracts.LogEntry, len(body.Lines))
	for i, ln := range body.Lines {
		entries[i] = contracts.LogEntry{At: now, Kind: contracts.LogLine, Attempt: c.Attempt, Message: ln}
	}
	err = g.cfg.Ledger.AppendLog(r.Context(), c.Tenant, id, entries...)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		WriteError(w, http.StatusNotFound, "task not found")
	case err != nil:
		g.ledgerUnavailable(w, r, "writing task log", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
