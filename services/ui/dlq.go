package ui

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// dlqFilter reads the dead-letter filter of a query or form: function,
// reason and how recently the task died.
func (u *UI) dlqFilter(r *http.Request) (ledger.ListFilter, url.Values) {
	f := ledger.ListFilter{State: contracts.StateDead, Function: r.FormValue("function"), Limit: pageSize}
	switch reason := contracts.Reason(r.FormValue("reason")); reason {
	case contracts.ReasonNonRetryable, contracts.ReasonAttemptsExhausted:
		f.Reason = reason
	}
	within := r.FormValue("within")
	if d, ok := withins[within]; ok {
		f.FinishedSince = u.cfg.Now().Add(-d)
	} else {
		within = ""
	}
	kept := url.Values{}
	for k, v := range map[string]string{"function": f.Function, "reason": string(f.Reason), "within": within} {
		if v != "" {
			kept.Set(k, v)
		}
	}
	return f, kept
}

func (u *UI) handleDLQ(w http.ResponseWriter, r *http.Request, s *session) {
	u.showDLQ(w, r, s, nil)
}

// showDLQ renders the dead-letter page; bulk, when set, is the answer of
// a bulk action or its dry run.
func (u *UI) showDLQ(w http.ResponseWriter, r *http.Request, s *session, bulk map[string]any) {
	tenant := u.oneTenant(r, s)
	f, kept := u.dlqFilter(r)
	f.Cursor = r.URL.Query().Get("cursor")
	list, err := u.cfg.Ledger.List(r.Context(), tenant, f)
	if errors.Is(err, ledger.ErrBadCursor) {
		f.Cursor = ""
		list, err = u.cfg.Ledger.List(r.Context(), tenant, f)
	}
	if err != nil {
		u.unavailable(w, r, s, "listing dead tasks", err)
		return
	}
	var next string
	if list.NextCursor != "" {
		q := url.Values{}
		for k, v := range kept {
			q[k] = v
		}
		if s.Admin {
			q.Set("tenant", tenant)
		}
		q.Set("cursor", list.NextCursor)
		next = "/ui/dlq?" + q.Encode()
	}
	u.render(w, r, s, http.StatusOK, "dlq.html", "Dead letters", map[string]any{
		"Tasks": list.Tasks, "Next": next, "Tenant": tenant, "Functions": u.functionNames(),
		"Function": f.Function, "Reason": string(f.Reason), "Within": kept.Get("within"), "Bulk": bulk,
	})
}

// handleDLQBulk redrives or purges every dead task matching the filter:
// without confirm=1 a dry run that counts them and asks to confirm.
func (u *UI) handleDLQBulk(w http.ResponseWriter, r *http.Request, s *session) {
	tenant := u.oneTenant(r, s)
	f, _ := u.dlqFilter(r)
	f.Limit = 0
	op, verb := u.cfg.Ledger.PurgeAll, "purge"
	if r.PostFormValue("op") == "redrive" {
		op, verb = u.cfg.Ledger.RedriveAll, "redrive"
	}
	confirm := r.PostFormValue("confirm") == "1"
	res, err := op(r.Context(), tenant, f, !confirm)
	if err != nil {
		u.unavailable(w, r, s, "a bulk dead-letter action", err)
		return
	}
	u.showDLQ(w, r, s, map[string]any{"Op": verb, "Result": res})
}
