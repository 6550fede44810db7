package contracts

import (
	"errors"
	"fmt"
	"time"
)

// Selector picks a tenant's tasks for a pause or a cancel: every field given
// must match, and at least one besides State must be given.
type Selector struct {
	// Function is the function's name.
	Function string `json:"function,omitempty"`
	// Type and Source are the event's type and source attributes.
	Type   string `json:"type,omitempty"`
	Source string `json:"source,omitempty"`
	// SubjectPrefix matches events whose subject starts with it.
	SubjectPrefix string `json:"subject_prefix,omitempty"`
	// Batch is the event's batch extension attribute.
	Batch string `json:"batch,omitempty"`
	// State narrows the selection to tasks in that state.
	State State `json:"state,omitempty"`
	// CreatedAfter and CreatedBefore bound created_at: at or after the one,
	// before the other.
	CreatedAfter  *time.Time `json:"created_after,omitempty"`
	CreatedBefore *time.Time `json:"created_before,omitempty"`
}

// ErrEmptySelector is returned by Selector.Validate for a selector with no
// field besides state.
var ErrEmptySelector = errors.New("selector: give at least one of function, type, source, subject_prefix, batch, created_after, created_before")

// Validate checks that s selects something narrower than a whole state and
// that its state, if any, is one of states.
func (s Selector) Validate(states ...State) error {
	if s.Function == "" && s.Type == "" && s.Source == "" && s.SubjectPrefix == "" && s.Batch == "" &&
		s.CreatedAfter == nil && s.CreatedBefore == nil {
		return ErrEmptySelector
	}
	if s.State != "" {
		ok := false
		for _, st := range states {
			ok = ok || st == s.State
		}
		if !ok {
			return fmt.Errorf("state: %q cannot be selected here (one of %v)", s.State, states)
		}
	}
	if s.CreatedAfter != nil && s.CreatedBefore != nil && !s.CreatedAfter.Before(*s.CreatedBefore) {
		return errors.New("created_after: must be before created_before")
	}
	return nil
}

// PausableStates are the states a pause holds tasks in (and a pause
// selector's state may name).
var PausableStates = []State{StateQueued, StateScheduled, StateRetrying}

// CancellableStates are the states a cancel ends tasks in.
var CancellableStates = []State{StateQueued, StateScheduled, StateRetrying, StatePaused, StateRunning}

// Pause holds the tasks its selector matches while it exists: the body of
// 201 to POST /v1/pauses and the entries of GET /v1/pauses.
type Pause struct {
	// ID names the pause (DELETE /v1/pauses/{id} resumes).
	ID string `json:"id"`
	// Selector is what the pause holds.
	Selector Selector `json:"selector"`
	// CreatedAt is when the pause was created.
	CreatedAt time.Time `json:"created_at"`
	// Paused counts the tasks the pause has paused: at creation, the
	// waiting tasks it found; listed, also those that matched since.
	Paused int `json:"paused"`
	// Resuming is true while a resume is under way (or was interrupted:
	// DELETE again finishes it). A resuming pause holds no new task.
	Resuming bool `json:"resuming,omitempty"`
}

// PauseList is the body of GET /v1/pauses.
type PauseList struct {
	// Pauses lists the tenant's pauses, oldest first.
	Pauses []Pause `json:"pauses"`
}

// ResumeResponse is the body of 200 to DELETE /v1/pauses/{id}.
type ResumeResponse struct {
	// Resumed counts the tasks released: held by no other pause, they
	// wait to run again.
	Resumed int `json:"resumed"`
}

// CancelRequest is the body of POST /v1/tasks/cancel: a selector, and
// whether only to count.
type CancelRequest struct {
	Selector
	// DryRun counts the matching tasks and cancels none.
	DryRun bool `json:"dry_run,omitempty"`
	// Limit, when positive, stops after that many matching tasks and
	// answers a NextCursor to continue from (progress for large
	// selections); 0 processes the whole selection.
	Limit int `json:"limit,omitempty"`
	// Cursor continues a limited call.
	Cursor string `json:"cursor,omitempty"`
}

// CancelResponse is the body of 200 to POST /v1/tasks/cancel.
type CancelResponse struct {
	// Matched counts the tasks the selector matched in a cancellable state
	// (queued, scheduled, retrying, paused, running).
	Matched int `json:"matched"`
	// Cancelled counts those this call ended cancelled (0 for a dry run).
	Cancelled int `json:"cancelled"`
	// NextCursor is set when a Limit stopped the call before the end of
	// the selection.
	NextCursor string `json:"next_cursor,omitempty"`
}
