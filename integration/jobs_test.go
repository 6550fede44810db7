//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/services/tasklane"
)

// jobsConfig has two tenants and a function nothing runs (the stacks of
// these tests run no dispatcher: tasks stay where the test puts them).
const jobsConfig = `
server: {bulk_sync_max: %d}
tenants:
  - {id: acme, api_keys: ["key-acme-jobs"]}
  - {id: other, api_keys: ["key-other-jobs"]}
functions:
  - {name: slow, events: [com.example.jobs], endpoint: "builtin:noop"}
`

// submitMany submits n events of batch b for tenant acme, in batch
// requests of at most 1000.
func (e *env) submitMany(batch string, n int) []string {
	var ids []string
	for len(ids) < n {
		ids = append(ids, e.submitGrouped("key-acme-jobs", "com.example.jobs", fmt.Sprintf("%s-%d", batch, len(ids)), min(1000, n-len(ids)))...)
	}
	return ids
}

// acceptedJob checks a 202 answer and returns its job.
func acceptedJob(t *testing.T, status int, body []byte) contracts.Job {
	t.Helper()
	require.Equal(t, http.StatusAccepted, status, "%s", body)
	var a contracts.JobAccepted
	require.NoError(t, json.Unmarshal(body, &a))
	require.Equal(t, contracts.JobRunning, a.Job.State)
	return a.Job
}

// waitJobEnd polls GET /v1/jobs/{id} until the job ends.
func (e *env) waitJobEnd(id string, within time.Duration) contracts.Job {
	t := e.t
	t.Helper()
	var j contracts.Job
	eventually(t, within, "job "+id+" ends", func() bool {
		status, body := e.get("/v1/jobs/"+id, "key-acme-jobs")
		require.Equal(t, http.StatusOK, status, "%s", body)
		require.NoError(t, json.Unmarshal(body, &j))
		return j.State != contracts.JobRunning
	})
	return j
}

// cancelledOnce checks every task ended cancelled with exactly one
// cancelled entry in the results outbox (nothing runs the notifier here).
func (e *env) cancelledOnce(ids []string) {
	t := e.t
	t.Helper()
	require.Equal(t, map[contracts.State]int{contracts.StateCancelled: len(ids)}, e.statesOf("acme", ids))
	entries, err := e.rdb.XRange(context.Background(), e.ledger().OutboxStream("acme"), "-", "+").Result()
	require.NoError(t, err)
	n := map[string]int{}
	for _, m := range entries {
		if m.Values["state"] == string(contracts.StateCancelled) {
			n[m.Values["id"].(string)]++
		}
	}
	for _, id := range ids {
		require.Equal(t, 1, n[id], "task %s has one cancelled result", id)
	}
}

// TestIntegrationBulkJobs: with bulk_sync_max lowered to 50, a cancel by
// selector of 300 tasks answers 202 with a job that reaches succeeded,
// every task cancelled exactly once; another tenant does not see the job;
// at the bound the call stays synchronous. A DLQ redrive of 120 dead
// tasks is a job too, each task redriven exactly once.
func TestIntegrationBulkJobs(t *testing.T) {
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(jobsConfig, 50))
	e.start(tasklane.RoleGateway)
	ctx := context.Background()

	small := e.submitGrouped("key-acme-jobs", "com.example.jobs", "small", 50)
	status, body := e.post("/v1/tasks/cancel", "key-acme-jobs", "application/json", nil, []byte(`{"batch":"small"}`))
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.JSONEq(t, `{"matched":50,"cancelled":50}`, string(body))
	e.cancelledOnce(small)

	big := e.submitGrouped("key-acme-jobs", "com.example.jobs", "big", 300)
	status, body = e.post("/v1/tasks/cancel", "key-acme-jobs", "application/json", nil, []byte(`{"batch":"big"}`))
	j := acceptedJob(t, status, body)
	require.Equal(t, contracts.JobCancel, j.Kind)
	status, _ = e.get("/v1/jobs/"+j.ID, "key-other-jobs")
	require.Equal(t, http.StatusNotFound, status, "another tenant's job")
	j = e.waitJobEnd(j.ID, 60*time.Second)
	require.Equal(t, contracts.JobSucceeded, j.State, j.Error)
	require.Equal(t, 300, j.Matched)
	require.Equal(t, 300, j.Done)
	e.cancelledOnce(append(small, big...))

	// Dead tasks, made so directly in the ledger.
	dead := e.submitGrouped("key-acme-jobs", "com.example.jobs", "dead", 120)
	led := e.ledger()
	for _, id := range dead {
		cl, err := led.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "slow", Owner: "test", Lease: time.Minute})
		require.NoError(t, err)
		require.Equal(t, ledger.VerdictRun, cl.Verdict)
		ok, err := led.Finish(ctx, "acme", id, "slow", cl.Fence(), ledger.Outcome{State: contracts.StateDead, Error: "HTTP 400", Reason: contracts.ReasonNonRetryable})
		require.NoError(t, err)
		require.True(t, ok)
	}
	status, body = e.post("/v1/dlq/redrive", "key-acme-jobs", "application/json", nil, []byte(`{"function":"slow"}`))
	j = acceptedJob(t, status, body)
	require.Equal(t, contracts.JobDLQRedrive, j.Kind)
	j = e.waitJobEnd(j.ID, 60*time.Second)
	require.Equal(t, contracts.JobSucceeded, j.State, j.Error)
	require.Equal(t, 120, j.Done)
	for _, id := range dead {
		task, err := led.Get(ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, 1, task.Redrives, "task %s redriven once", id)
		require.NotEqual(t, contracts.StateDead, task.State)
	}
}

// TestIntegrationBulkJobResumedAfterGatewayKill: a cancel job of 3000
// tasks runs in a gateway process killed (SIGKILL) mid-job; the
// in-process gateway takes it over when its lease expires and finishes
// it: succeeded, resumed, every task cancelled exactly once.
func TestIntegrationBulkJobResumedAfterGatewayKill(t *testing.T) {
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(jobsConfig, 20))
	e.start(tasklane.RoleGateway)
	ids := e.submitMany("kill", 3000)

	// A second gateway, in a process of its own on a known port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	doc := e.doc
	e.doc = strings.Replace(doc, `addr: "127.0.0.1:0"`, fmt.Sprintf("addr: %q", addr), 1)
	p := e.spawn(tasklane.RoleGateway)
	e.doc = doc

	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/tasks/cancel", strings.NewReader(`{"type":"com.example.jobs"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer key-acme-jobs")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var a contracts.JobAccepted
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&a))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	// Killed once it has done part of the work (read through the other
	// gateway: any gateway answers for any job).
	eventually(t, 30*time.Second, "the job makes progress", func() bool {
		status, body := e.get("/v1/jobs/"+a.Job.ID, "key-acme-jobs")
		require.Equal(t, http.StatusOK, status, "%s", body)
		var j contracts.Job
		require.NoError(t, json.Unmarshal(body, &j))
		require.Equal(t, contracts.JobRunning, j.State, "the job must not end before the kill: %+v", j)
		return j.Done >= 200
	})
	p.kill()
	status, body := e.get("/v1/jobs/"+a.Job.ID, "key-acme-jobs")
	require.Equal(t, http.StatusOK, status)
	var mid contracts.Job
	require.NoError(t, json.Unmarshal(body, &mid))
	require.Equal(t, contracts.JobRunning, mid.State)
	require.Less(t, mid.Done, len(ids), "killed mid-job")

	j := e.waitJobEnd(a.Job.ID, 90*time.Second)
	require.Equal(t, contracts.JobSucceeded, j.State, j.Error)
	require.GreaterOrEqual(t, j.Resumed, 1)
	require.LessOrEqual(t, j.Done, len(ids))
	e.cancelledOnce(ids)
}
