package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/jobs"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// Bulk calls too large for a request (decision 0016): a cancel by selector
// or a DLQ redrive or purge that is not a dry run and matches more than
// Config.BulkSyncMax tasks is answered 202 with a job, run in the
// background by this gateway's runner in steps of jobStep matches; its
// state is in Redis, so any gateway answers GET /v1/jobs/{id}, and one
// whose gateway stops is resumed by another from its last step's cursor.

// jobStepMax bounds the matches one step of a job handles.
const jobStepMax = 1000

// registerJobs mounts GET /v1/jobs/{id}.
func (g *Gateway) registerJobs(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/jobs/{id}", g.handleGetJob)
}

func (g *Gateway) newJobRunner() *jobs.Runner {
	return jobs.NewRunner(jobs.RunnerConfig{
		Store: jobs.NewStore(g.cfg.Ledger.Redis(), g.cfg.Ledger.KeyPrefix(), 0),
		Steps: map[contracts.JobKind]jobs.Step{
			contracts.JobCancel:     g.cancelStep,
			contracts.JobDLQRedrive: g.dlqStep(g.cfg.Ledger.RedriveAll),
			contracts.JobDLQPurge:   g.dlqStep(g.cfg.Ledger.PurgeAll),
		},
		Logger:    g.cfg.Logger.With("component", "jobs"),
		Lease:     g.cfg.JobLease,
		PerTenant: g.cfg.JobsPerTenant,
	})
}

// RunJobs resumes the jobs other gateways stopped running, until ctx
// ends; then it stops this gateway's jobs after their current step and
// hands them to the others (released leases).
func (g *Gateway) RunJobs(ctx context.Context) {
	if g.jobs != nil {
		g.jobs.Run(ctx)
	}
}

// jobStep is how many matches one step of a job handles: a tenth of the
// synchronous bound, at most jobStepMax (1000 by default).
func (g *Gateway) jobStep() int { return max(1, min(jobStepMax, g.cfg.BulkSyncMax/10)) }

// startJob answers 202 with a job of kind running req; 429 when the
// tenant runs its maximum of jobs already.
func (g *Gateway) startJob(w http.ResponseWriter, r *http.Request, tenant string, kind contracts.JobKind, req any) {
	body, err := json.Marshal(req)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "encoding the job's request: "+err.Error())
		return
	}
	j, err := g.jobs.Start(r.Context(), tenant, kind, body)
	switch {
	case errors.Is(err, jobs.ErrTooMany):
		w.Header().Set("Retry-After", "10")
		WriteError(w, http.StatusTooManyRequests, fmt.Sprintf("too many running jobs: a tenant runs at most %d bulk jobs at once; wait for one to end (GET /v1/jobs/{id})", g.jobsPerTenant()))
	case err != nil:
		g.ledgerUnavailable(w, r, "starting a job", err)
	default:
		w.Header().Set("Location", "/v1/jobs/"+j.ID)
		WriteJSON(w, http.StatusAccepted, contracts.JobAccepted{Job: j})
	}
}

func (g *Gateway) jobsPerTenant() int {
	if g.cfg.JobsPerTenant > 0 {
		return g.cfg.JobsPerTenant
	}
	return jobs.PerTenantDefault
}

func (g *Gateway) handleGetJob(w http.ResponseWriter, r *http.Request) {
	tenant, ok := g.tenant(w, r)
	if !ok {
		return
	}
	rec, err := g.jobs.Store().Get(r.Context(), tenant, r.PathValue("id"))
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		WriteError(w, http.StatusNotFound, "job not found")
	case err != nil:
		g.ledgerUnavailable(w, r, "reading job", err)
	default:
		WriteJSON(w, http.StatusOK, rec.Job)
	}
}

// stepCursor is where a job's next step starts: a running job with no
// cursor has not finished a step yet, and starts where its call said.
func stepCursor(j *jobs.Record, callCursor string) string {
	if j.Cursor == "" {
		return callCursor
	}
	return j.Cursor
}

// cancelStep cancels the next jobStep matches of a cancel job. A call
// with a limit ends when the job has matched that many, with the cursor
// to continue from as the job's next_cursor.
func (g *Gateway) cancelStep(ctx context.Context, j *jobs.Record) (jobs.StepResult, error) {
	var req contracts.CancelRequest
	if err := json.Unmarshal(j.Request, &req); err != nil {
		return jobs.StepResult{}, fmt.Errorf("%w: decoding the job's request: %w", jobs.ErrPermanent, err)
	}
	step := contracts.CancelRequest{Selector: req.Selector, Limit: g.jobStep(), Cursor: stepCursor(j, req.Cursor)}
	if req.Limit > 0 {
		step.Limit = min(step.Limit, req.Limit-j.Matched)
		if step.Limit <= 0 {
			return jobs.StepResult{NextCursor: step.Cursor}, nil
		}
	}
	res, err := g.cfg.Ledger.CancelMatching(ctx, j.Tenant, step)
	if errors.Is(err, ledger.ErrBadControlCursor) {
		return jobs.StepResult{}, fmt.Errorf("%w: cursor: not a cursor this API returned", jobs.ErrPermanent)
	}
	if err != nil {
		return jobs.StepResult{}, err
	}
	out := jobs.StepResult{Matched: res.Matched, Done: res.Cancelled, Cursor: res.NextCursor}
	if req.Limit > 0 && j.Matched+res.Matched >= req.Limit && res.NextCursor != "" {
		out.Cursor, out.NextCursor = "", res.NextCursor
	}
	return out, nil
}

// dlqStep redrives or purges (op) the next step of a DLQ job's matches.
func (g *Gateway) dlqStep(op func(context.Context, string, ledger.ListFilter, bool) (contracts.DLQResult, error)) jobs.Step {
	return func(ctx context.Context, j *jobs.Record) (jobs.StepResult, error) {
		var req contracts.DLQFilter
		if err := json.Unmarshal(j.Request, &req); err != nil {
			return jobs.StepResult{}, fmt.Errorf("%w: decoding the job's request: %w", jobs.ErrPermanent, err)
		}
		f := dlqListFilter(req)
		f.Limit, f.Cursor = min(g.jobStep(), contracts.DLQStepMax), stepCursor(j, "")
		res, err := op(ctx, j.Tenant, f, false)
		if errors.Is(err, ledger.ErrBadCursor) {
			return jobs.StepResult{}, fmt.Errorf("%w: cursor: not one this call answered", jobs.ErrPermanent)
		}
		if err != nil {
			return jobs.StepResult{}, err
		}
		return jobs.StepResult{Matched: res.Matched, Done: res.Done, Cursor: res.NextCursor}, nil
	}
}
