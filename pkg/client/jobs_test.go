package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// jobServer answers a bulk call with 202 and a job that is read running
// twice, then ends in final.
func jobServer(t *testing.T, final contracts.Job) *client.Client {
	t.Helper()
	var reads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			w.Header().Set("Location", "/v1/jobs/j1")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(contracts.JobAccepted{Job: contracts.Job{ID: "j1", Kind: final.Kind, State: contracts.JobRunning}})
		case r.URL.Path == "/v1/jobs/j1":
			j := final
			if n := reads.Add(1); n <= 2 {
				j.State, j.Matched, j.Done = contracts.JobRunning, int(n)*10, int(n)*10
			}
			_ = json.NewEncoder(w).Encode(j)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.Options{})
	require.NoError(t, err)
	return c
}

// A bulk call answered 202 waits for its job, reporting progress, and
// answers the job's totals.
func TestBulkCallWaitsForItsJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := jobServer(t, contracts.Job{ID: "j1", Kind: contracts.JobCancel, State: contracts.JobSucceeded, Matched: 30, Done: 29})
	var seen []int
	r, err := c.CancelMatching(ctx, contracts.CancelRequest{Selector: contracts.Selector{Batch: "b"}},
		client.OnProgress(func(j contracts.Job) { seen = append(seen, j.Done) }), client.PollInterval(time.Millisecond, 5*time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, &contracts.CancelResponse{Matched: 30, Cancelled: 29}, r)
	require.Equal(t, []int{10, 20}, seen)

	c = jobServer(t, contracts.Job{ID: "j1", Kind: contracts.JobDLQRedrive, State: contracts.JobSucceeded, Matched: 30, Done: 30})
	d, err := c.RedriveDLQMatching(ctx, contracts.DLQFilter{}, client.PollInterval(time.Millisecond, time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, 30, d.Done)
}

// A failed job is an error wrapping ErrJobFailed, with the job's error.
func TestBulkCallOfAFailedJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := jobServer(t, contracts.Job{ID: "j1", Kind: contracts.JobDLQPurge, State: contracts.JobFailed, Matched: 5, Done: 3, Error: "redis down"})
	_, err := c.PurgeDLQMatching(ctx, contracts.DLQFilter{}, client.PollInterval(time.Millisecond, time.Millisecond))
	require.True(t, errors.Is(err, client.ErrJobFailed), "%v", err)
	require.ErrorContains(t, err, "redis down")
	j, err := c.Job(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, contracts.JobFailed, j.State)
	require.Equal(t, "redis down", j.Error)
}
