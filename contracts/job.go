package contracts

import "time"

// BulkSyncMaxDefault is how many matching tasks a bulk call (POST
// /v1/tasks/cancel, /v1/dlq/redrive, /v1/dlq/purge) handles in the
// request itself; a selection larger than that is answered 202 with a Job
// that works through it in the background (server.bulk_sync_max).
const BulkSyncMaxDefault = 10000

// JobKind names what a job does.
type JobKind string

// The kinds of job.
const (
	JobCancel     JobKind = "cancel"
	JobDLQRedrive JobKind = "dlq_redrive"
	JobDLQPurge   JobKind = "dlq_purge"
)

// JobState is where a job is.
type JobState string

// The states of a job: running until it has worked through its selection
// (succeeded) or given up (failed, with Error).
const (
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
)

// Job is a bulk task operation running in the background: the answer to
// GET /v1/jobs/{id}, and in JobAccepted the 202 answer of a bulk call
// whose selection is larger than the synchronous bound.
type Job struct {
	// ID names the job (GET /v1/jobs/{id}).
	ID string `json:"id"`
	// Kind is what it does: cancel, dlq_redrive or dlq_purge.
	Kind JobKind `json:"kind"`
	// State is running, succeeded or failed.
	State JobState `json:"state"`
	// Matched counts the tasks matched so far; Done those changed
	// (cancelled, redriven, purged). A task that another call changed
	// first is matched, not done.
	Matched int `json:"matched"`
	Done    int `json:"done"`
	// Errors counts the steps that failed and were retried.
	Errors int `json:"errors"`
	// Resumed counts the times another gateway (or the same one after a
	// restart) took the job over from one that stopped mid-way.
	Resumed int `json:"resumed,omitempty"`
	// StartedAt is when the job was accepted; FinishedAt when it ended.
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Error says why a failed job gave up.
	Error string `json:"error,omitempty"`
	// NextCursor is set when the call's limit stopped the job before the
	// end of the selection: continue with it as the cursor.
	NextCursor string `json:"next_cursor,omitempty"`
}

// JobAccepted is the body of 202 to a bulk call handed to a job; its
// Location header is /v1/jobs/{id}.
type JobAccepted struct {
	Job Job `json:"job"`
}
