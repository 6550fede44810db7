package ledger

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// Hash fields of a task record. Times are Unix microseconds; wait_ms and
// run_ms are milliseconds.
const (
	fID           = "id"
	fTenant       = "tenant"
	fFunction     = "function"
	fEventID      = "ev_id"
	fEventSource  = "ev_source"
	fEventType    = "ev_type"
	fEventSubject = "ev_subject"
	fState        = "state"
	fAttempts     = "attempts"
	fPriority     = "priority"
	fCreated      = "created"
	fScheduled    = "scheduled"
	fStarted      = "started"
	fFinished     = "finished"
	fWaitMS       = "wait_ms"
	fRunMS        = "run_ms"
	fError        = "error"
	fResult       = "result"
	fMessage      = "env"
	fLease        = "lease"
	fExpires      = "expires"
	fReason       = "reason"
	fRedrives     = "redrives"
	fParent       = "parent"
	fBatch        = "batch"
	// The scripts of control.go also keep, on a paused task, held_by (the
	// pauses holding it, "," separated) and paused_from (the waiting state
	// it was paused from).
)

// FieldTraceParent is the task record's hash field (copied into its results
// outbox entry) holding the W3C traceparent of the task's trace, when it
// was traced.
const FieldTraceParent = "tp"

// recordFields are the hash fields a finished task keeps (decision 0019):
// every field RecordFromFields reads, and the trace parent its result event
// continues. They are also the fields of a results outbox entry. Fields
// only a waiting or running task needs (the stored message, lease, owner,
// expiry, rate slot, pause marks) are not among them.
var recordFields = []string{
	fID, fTenant, fFunction, fEventID, fEventSource, fEventType, fEventSubject, fParent,
	fState, fAttempts, fPriority, fBatch, fCreated, fScheduled, fStarted, fFinished,
	fWaitMS, fRunMS, fError, fResult, fReason, fRedrives, FieldTraceParent,
}

// luaStrings renders names as the items of a Lua table constructor.
func luaStrings(names []string) string {
	return "'" + strings.Join(names, "', '") + "'"
}

// RecordFromFields builds a task record from its hash fields (as stored in
// the ledger, and as copied into results outbox entries).
func RecordFromFields(h map[string]string) contracts.Task {
	t := contracts.Task{
		ID:       h[fID],
		Tenant:   h[fTenant],
		Function: h[fFunction],
		Event: contracts.EventRef{
			ID: h[fEventID], Source: h[fEventSource], Type: h[fEventType], Subject: h[fEventSubject],
		},
		Parent:      h[fParent],
		State:       contracts.State(h[fState]),
		Attempts:    atoi(h[fAttempts]),
		Priority:    atoi(h[fPriority]),
		Batch:       h[fBatch],
		ScheduledAt: usTime(h[fScheduled]),
		StartedAt:   usTime(h[fStarted]),
		FinishedAt:  usTime(h[fFinished]),
		QueueWaitMS: msInt(h[fWaitMS]),
		RunMS:       msInt(h[fRunMS]),
		Error:       h[fError],
		Reason:      contracts.Reason(h[fReason]),
		Redrives:    atoi(h[fRedrives]),
	}
	if c := usTime(h[fCreated]); c != nil {
		t.CreatedAt = *c
	}
	if r := h[fResult]; r != "" && json.Valid([]byte(r)) {
		t.Result = json.RawMessage(r)
	}
	return t
}

// RecordFromValues is RecordFromFields for a Redis stream entry's values.
func RecordFromValues(v map[string]any) contracts.Task {
	h := make(map[string]string, len(v))
	for k, x := range v {
		if s, ok := x.(string); ok {
			h[k] = s
		}
	}
	return RecordFromFields(h)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func msInt(s string) *int64 { return parseInt(s) }

func parseInt(s string) *int64 {
	if s == "" {
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

func usTime(s string) *time.Time {
	n := parseInt(s)
	if n == nil {
		return nil
	}
	t := time.UnixMicro(*n).UTC()
	return &t
}
