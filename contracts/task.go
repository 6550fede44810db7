package contracts

import (
	"encoding/json"
	"time"
)

// State is where a task is in its life. See ARCHITECTURE.md for the state
// machine.
type State string

// Task states.
const (
	// StateScheduled waits for its delay or deliverat time.
	StateScheduled State = "scheduled"
	// StateQueued sits on a lane, waiting for a dispatcher.
	StateQueued State = "queued"
	// StateRunning is held by a dispatcher that is calling the function.
	StateRunning State = "running"
	// StateRetrying failed an attempt and waits for its backoff to pass.
	StateRetrying State = "retrying"
	// StateSucceeded is terminal: an attempt succeeded.
	StateSucceeded State = "succeeded"
	// StateFailed is terminal: the task failed and was not dead-lettered.
	StateFailed State = "failed"
	// StateDead is terminal: the task failed and is kept in the dead-letter
	// queue.
	StateDead State = "dead"
	// StateCancelled is terminal: the task was cancelled.
	StateCancelled State = "cancelled"
	// StateExpired is terminal: the task's TTL passed before it started.
	StateExpired State = "expired"
	// StatePaused is held back by an operator and resumes later.
	StatePaused State = "paused"
)

// States lists every state, in life order.
var States = []State{
	StateScheduled, StateQueued, StateRunning, StateRetrying, StatePaused,
	StateSucceeded, StateFailed, StateDead, StateCancelled, StateExpired,
}

// Terminal reports whether a task in state s has ended for good.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateDead, StateCancelled, StateExpired:
		return true
	}
	return false
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	for _, v := range States {
		if v == s {
			return true
		}
	}
	return false
}

// ResultType is the CloudEvent type of the result event for terminal state s.
func (s State) ResultType() string { return ResultTypePrefix + string(s) }

// Reason says why a task ended unsuccessfully.
type Reason string

// Reasons.
const (
	// ReasonNonRetryable: an attempt failed in a way retrying cannot fix
	// (HTTP 4xx other than 408/429, sdk.Permanent).
	ReasonNonRetryable Reason = "non_retryable"
	// ReasonAttemptsExhausted: the last allowed attempt failed.
	ReasonAttemptsExhausted Reason = "attempts_exhausted"
)

// EventRef identifies the CloudEvent a task was made from.
type EventRef struct {
	// ID is the event's id attribute.
	ID string `json:"id"`
	// Source is the event's source attribute.
	Source string `json:"source"`
	// Type is the event's type attribute.
	Type string `json:"type"`
	// Subject is the event's subject attribute, if it had one.
	Subject string `json:"subject,omitempty"`
}

// Task is the task record: what GET /v1/tasks/{id} returns and what the data
// of a result event holds.
type Task struct {
	// ID is the task id, unique across tenants.
	ID string `json:"id"`
	// Tenant owns the task; it came from the submitting credential.
	Tenant string `json:"tenant"`
	// Function is the name of the function that runs the task.
	Function string `json:"function"`
	// Event identifies the CloudEvent the task was made from.
	Event EventRef `json:"event"`
	// Parent is the id of the task whose reply event this task was made
	// from (task chaining); empty for a submitted event.
	Parent string `json:"parent_task_id,omitempty"`
	// State is where the task is now.
	State State `json:"state"`
	// Attempts counts the attempts started so far.
	Attempts int `json:"attempts"`
	// Priority is 0 (lowest) to 9 (highest).
	Priority int `json:"priority"`
	// Batch is the event's batch extension attribute, if it had one.
	Batch string `json:"batch,omitempty"`
	// CreatedAt is when the gateway accepted the task.
	CreatedAt time.Time `json:"created_at"`
	// ScheduledAt is when the task became due (equal to CreatedAt unless it
	// was delayed).
	ScheduledAt *time.Time `json:"scheduled_at,omitempty"`
	// StartedAt is when the first attempt started.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// FinishedAt is when the task reached its terminal state.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// QueueWaitMS is the time from due to first start, in milliseconds.
	QueueWaitMS *int64 `json:"queue_wait_ms,omitempty"`
	// RunMS is the duration of the last attempt, in milliseconds.
	RunMS *int64 `json:"run_ms,omitempty"`
	// Error describes the last failed attempt, if any.
	Error string `json:"error,omitempty"`
	// Reason says why a dead or failed task ended unsuccessfully.
	Reason Reason `json:"reason,omitempty"`
	// Redrives counts how often the task was redriven out of the dead-letter
	// queue.
	Redrives int `json:"redrives,omitempty"`
	// Result is the body of the successful answer (bounded): JSON as it was
	// when the body was JSON, otherwise a JSON string.
	Result json.RawMessage `json:"result,omitempty"`
	// EventData is the data of the event the task was made from, given only
	// by the dead-letter queue's show (GET /v1/dlq/{id}): the JSON value when
	// the data is JSON, otherwise a JSON string (base64 when
	// EventDataEncoding says so). Data over EventDataMax bytes is left out;
	// EventDataBytes still gives its size.
	EventData json.RawMessage `json:"event_data,omitempty"`
	// EventDataEncoding is "base64" when EventData is the base64 of bytes
	// that are not UTF-8 text.
	EventDataEncoding string `json:"event_data_encoding,omitempty"`
	// EventDataBytes is the size of the event data in bytes.
	EventDataBytes int `json:"event_data_bytes,omitempty"`
}

// EventDataMax bounds the event data a dead-letter show includes.
const EventDataMax = 64 << 10

// SubmittedTask is one entry of the 202 answer to POST /v1/events.
type SubmittedTask struct {
	// ID is the task id.
	ID string `json:"id"`
	// EventID is the id attribute of the event the task was made from.
	EventID string `json:"event_id"`
	// Function names the function that will run the task.
	Function string `json:"function"`
	// State is the task's state when the answer was written.
	State State `json:"state"`
	// Duplicate is true when the event had been submitted before and this
	// entry names the task made then.
	Duplicate bool `json:"duplicate"`
}

// SubmitResponse is the body of a 202 answer to POST /v1/events.
type SubmitResponse struct {
	// Tasks lists one entry per (event, subscribed function).
	Tasks []SubmittedTask `json:"tasks"`
}

// TaskList is the body of GET /v1/tasks.
type TaskList struct {
	// Tasks is one page of task records, newest first.
	Tasks []Task `json:"tasks"`
	// NextCursor fetches the next page; empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	// Error names the problem and, where there is one, the offending
	// attribute or field.
	Error string `json:"error"`
	// Tenant, Backlog, Limit and Reason are set on a 429 of backpressure
	// at ingest: the tenant refused, the backlog that refused it (waiting
	// tasks: the tenant's, or all tenants' for reason global_backlog) and
	// the limit it reached (tenants[].max_backlog or
	// admission.max_backlog).
	Tenant  string `json:"tenant,omitempty"`
	Backlog int64  `json:"backlog,omitempty"`
	Limit   int64  `json:"limit,omitempty"`
	// Reason is tenant_backlog or global_backlog (see Backlog).
	Reason string `json:"reason,omitempty"`
}

// Reasons of a backpressure refusal (ErrorResponse.Reason).
const (
	// RefusedTenantBacklog: the tenant's backlog reached its
	// tenants[].max_backlog.
	RefusedTenantBacklog = "tenant_backlog"
	// RefusedGlobalBacklog: all tenants' backlog is above
	// admission.max_backlog, and the tenant was refused with a probability
	// from its share of recent submissions.
	RefusedGlobalBacklog = "global_backlog"
)

// DLQFilter selects dead-lettered tasks for a bulk redrive or purge
// (POST /v1/dlq/redrive, POST /v1/dlq/purge). Empty fields match all.
type DLQFilter struct {
	// Function keeps tasks of this function.
	Function string `json:"function,omitempty"`
	// Reason keeps tasks dead-lettered for this reason.
	Reason Reason `json:"reason,omitempty"`
	// Since keeps tasks that died at or after this time.
	Since *time.Time `json:"since,omitempty"`
	// Until keeps tasks that died before this time.
	Until *time.Time `json:"until,omitempty"`
	// DryRun counts the matching tasks and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Limit, when above 0, makes the call one step: it handles at most
	// this many matching tasks (up to DLQStepMax) and answers NextCursor
	// when more may remain. 0 handles the whole selection in one call.
	Limit int `json:"limit,omitempty"`
	// Cursor continues a stepped call: the NextCursor of the step before,
	// with the same filter. It is opaque (the place of the last dead task
	// the walk passed), so a task a step redrove that dies again before
	// the walk ends is not met a second time.
	Cursor string `json:"cursor,omitempty"`
}

// DLQStepMax bounds DLQFilter.Limit.
const DLQStepMax = 500

// DLQResult is the answer to a bulk redrive or purge.
type DLQResult struct {
	// Matched counts the dead tasks that matched the filter.
	Matched int `json:"matched"`
	// Done counts those redriven or purged (0 on a dry run).
	Done int `json:"done"`
	// DryRun is true when nothing was changed.
	DryRun bool `json:"dry_run"`
	// NextCursor, set when a Limit stopped the call, continues it.
	NextCursor string `json:"next_cursor,omitempty"`
}
