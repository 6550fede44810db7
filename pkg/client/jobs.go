package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// Job returns the tenant's job id: a bulk call the server runs in the
// background (GET /v1/jobs/{id}).
func (c *Client) Job(ctx context.Context, id string) (*contracts.Job, error) {
	return do[contracts.Job](ctx, c, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, nil, nil)
}

// WaitOption changes how a bulk call waits for its job.
type WaitOption func(*waitOptions)

type waitOptions struct {
	progress func(contracts.Job)
	poll     time.Duration
	maxPoll  time.Duration
}

// OnProgress calls f with the job each time it is read while it runs
// (a bulk call answered with a job, or Wait).
func OnProgress(f func(contracts.Job)) WaitOption {
	return func(o *waitOptions) { o.progress = f }
}

// PollInterval sets the first wait between reads of a job (default
// 250ms), doubled after each read up to max (default 5s).
func PollInterval(first, max time.Duration) WaitOption {
	return func(o *waitOptions) { o.poll, o.maxPoll = first, max }
}

// ErrJobFailed is returned (wrapped, with the job's error) by Wait and the
// bulk calls for a job that failed.
var ErrJobFailed = errors.New("job failed")

// Wait reads the job id until it ends, with a growing pause between
// reads, and returns it; a failed job is returned with an error wrapping
// ErrJobFailed.
func (c *Client) Wait(ctx context.Context, id string, opts ...WaitOption) (*contracts.Job, error) {
	o := waitOptions{poll: 250 * time.Millisecond, maxPoll: 5 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	wait := o.poll
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return nil, err
		}
		switch j.State {
		case contracts.JobSucceeded:
			return j, nil
		case contracts.JobFailed:
			return j, fmt.Errorf("%w: job %s: %s (%d of %d matched done)", ErrJobFailed, j.ID, j.Error, j.Done, j.Matched)
		}
		if o.progress != nil {
			o.progress(*j)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return j, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, o.maxPoll)
	}
}

// bulk posts req to path: a 200 is decoded as a T, a 202's job is waited
// for and its totals made a T by fromJob.
func bulk[T any](ctx context.Context, c *Client, path string, req any, opts []WaitOption, fromJob func(*contracts.Job) *T) (*T, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	status, b, err := c.send(ctx, http.MethodPost, path, nil, jsonHeader(), body)
	if err != nil {
		return nil, err
	}
	if status == http.StatusAccepted {
		var a contracts.JobAccepted
		if err := json.Unmarshal(b, &a); err != nil || a.Job.ID == "" {
			return nil, fmt.Errorf("POST %s: answer 202 is not a job: %s", path, b)
		}
		j, err := c.Wait(ctx, a.Job.ID, opts...)
		if err != nil {
			return nil, err
		}
		return fromJob(j), nil
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("POST %s: answer %d is not the JSON expected: %w", path, status, err)
	}
	return &out, nil
}
