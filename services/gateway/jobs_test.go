package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/jobs"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// submitMany submits n events of source src in one batch.
func (b *apiBundle) submitMany(t *testing.T, src string, n int) {
	t.Helper()
	evs := make([]string, n)
	for i := range evs {
		evs[i] = ce(fmt.Sprintf("%s-%d", src, i), src, "one", "")
	}
	b.submit(t, ctBatch, "["+strings.Join(evs, ",")+"]")
}

// accepted reads a 202's job and checks its Location.
func accepted(t *testing.T, w *httptest.ResponseRecorder) contracts.Job {
	t.Helper()
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	var a contracts.JobAccepted
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &a))
	require.Equal(t, "/v1/jobs/"+a.Job.ID, w.Header().Get("Location"))
	require.Equal(t, contracts.JobRunning, a.Job.State)
	return a.Job
}

func waitJob(t *testing.T, h http.Handler, id string) contracts.Job {
	t.Helper()
	var j contracts.Job
	testkit.Eventually(t, 10*time.Second, func() bool {
		w := serve(h, "GET", "/v1/jobs/"+id, keyAcme, "")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &j))
		return j.State != contracts.JobRunning
	}, "job %s ends", id)
	return j
}

// A cancel by selector matching more than BulkSyncMax answers 202 with a
// job that cancels them all; at or below it the call stays synchronous,
// and a dry run always is. Another tenant does not see the job.
func TestCancelOverTheBoundRunsAsAJob(t *testing.T) {
	t.Parallel()
	b := setupAPIWith(t, func(c *Config) { c.BulkSyncMax = 5 })
	b.submitMany(t, "/small", 5)
	b.submitMany(t, "/big", 23)

	w := serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/small"}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.JSONEq(t, `{"matched":5,"cancelled":5}`, w.Body.String())
	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big","dry_run":true}`)
	require.JSONEq(t, `{"matched":23,"cancelled":0}`, w.Body.String())
	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big","limit":2}`)
	require.JSONEq(t, `{"matched":2,"cancelled":2,"next_cursor":"`+nextCursor(t, w.Body.Bytes())+`"}`, w.Body.String(), "a step within the bound stays synchronous")

	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big"}`)
	j := accepted(t, w)
	require.Equal(t, contracts.JobCancel, j.Kind)
	require.Equal(t, http.StatusNotFound, serve(b.h, "GET", "/v1/jobs/"+j.ID, keyOther, "").Code)
	require.Equal(t, http.StatusNotFound, serve(b.h, "GET", "/v1/jobs/nope", keyAcme, "").Code)
	got := waitJob(t, b.h, j.ID)
	require.Equal(t, contracts.JobSucceeded, got.State, got.Error)
	require.Equal(t, 21, got.Matched)
	require.Equal(t, 21, got.Done)
	require.NotNil(t, got.FinishedAt)
	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big","dry_run":true}`)
	require.JSONEq(t, `{"matched":0,"cancelled":0}`, w.Body.String())
}

// A limit above the bound is a job too, that stops at the limit and
// answers where to continue.
func TestCancelJobWithALimitAnswersTheCursor(t *testing.T) {
	t.Parallel()
	b := setupAPIWith(t, func(c *Config) { c.BulkSyncMax = 5 })
	b.submitMany(t, "/big", 20)
	w := serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big","limit":12}`)
	j := waitJob(t, b.h, accepted(t, w).ID)
	require.Equal(t, 12, j.Done)
	require.NotEmpty(t, j.NextCursor)
	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big","limit":100,"cursor":"`+j.NextCursor+`"}`)
	j = waitJob(t, b.h, accepted(t, w).ID)
	require.Equal(t, 8, j.Done)
	require.Empty(t, j.NextCursor)
}

// DLQ redrive and purge over the bound are jobs.
func TestDLQBulkOverTheBoundRunsAsAJob(t *testing.T) {
	t.Parallel()
	b := setupAPIWith(t, func(c *Config) { c.BulkSyncMax = 3 })
	ctx := context.Background()
	for i := range 9 {
		b.deadTask(t, ctx, ce(fmt.Sprintf("d-%d", i), "/a", "one", ""))
	}
	w := serve(b.h, "POST", "/v1/dlq/redrive", keyAcme, `{"dry_run":true}`)
	require.JSONEq(t, `{"matched":9,"done":0,"dry_run":true}`, w.Body.String())
	w = serve(b.h, "POST", "/v1/dlq/redrive", keyAcme, `{}`)
	j := accepted(t, w)
	require.Equal(t, contracts.JobDLQRedrive, j.Kind)
	got := waitJob(t, b.h, j.ID)
	require.Equal(t, contracts.JobSucceeded, got.State, got.Error)
	require.Equal(t, 9, got.Done)
	w = serve(b.h, "GET", "/v1/dlq", keyAcme, "")
	require.Empty(t, listIDs(t, w))
}

// A tenant runs a bounded number of jobs at once: 429 above it.
func TestJobsPerTenantAnswer429(t *testing.T) {
	t.Parallel()
	b := setupAPIWith(t, func(c *Config) { c.BulkSyncMax, c.JobsPerTenant = 1, 1 })
	// A job that cannot end: its cursor is refused only when its step
	// runs, so hold the tenant's one place with a running record.
	store := jobs.NewStore(b.l.Redis(), b.l.KeyPrefix(), 0)
	_, err := store.Create(context.Background(), "acme", contracts.JobCancel, []byte(`{}`), "elsewhere",
		time.Now(), time.Now().Add(time.Hour), 1)
	require.NoError(t, err)
	b.submitMany(t, "/big", 3)
	w := serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/big"}`)
	require.Equal(t, http.StatusTooManyRequests, w.Code, w.Body.String())
	require.NotEmpty(t, w.Header().Get("Retry-After"))
}

func nextCursor(t *testing.T, body []byte) string {
	t.Helper()
	var r contracts.CancelResponse
	require.NoError(t, json.Unmarshal(body, &r))
	return r.NextCursor
}
