package contracts

import "time"

// LogKind says what a task log entry records.
type LogKind string

// Task log entry kinds: what the platform did, and the lines the function
// wrote (LogLine).
const (
	// LogAccepted: the task was recorded from its event.
	LogAccepted LogKind = "accepted"
	// LogPublished: the task was published to a lane (the message names it).
	LogPublished LogKind = "published"
	// LogAdmitted: the task entered its function's ready queue (a task
	// started at once on delivery, its function having room, has none).
	LogAdmitted LogKind = "admitted"
	// LogTakenOver: the running attempt's lease ended without an outcome
	// (its dispatcher died); the task is ready again.
	LogTakenOver LogKind = "taken_over"
	// LogStarted: an attempt started; the message names the dispatcher.
	LogStarted LogKind = "started"
	// LogEnded: an attempt ended; Status and DurationMS are set when known.
	LogEnded LogKind = "ended"
	// LogRetry: the next attempt is scheduled (the message says when).
	LogRetry LogKind = "retry"
	// LogThrottled: the function answered throttled; the next attempt is
	// scheduled after its Retry-After.
	LogThrottled LogKind = "throttled"
	// LogLine: a line the function wrote (Go handlers through sdk.Logger,
	// HTTP functions through POST /v1/tasks/{id}/logs).
	LogLine LogKind = "line"
	// LogTruncated: earlier entries were dropped to keep the log bounded;
	// always the first entry when present.
	LogTruncated LogKind = "truncated"
	// LogRedriven: a dead task was put back to work.
	LogRedriven LogKind = "redriven"
	// LogDelivered: the result event was delivered (the message names the
	// sink).
	LogDelivered LogKind = "delivered"
)

// Terminal states are entries too: their kind is the state ("succeeded",
// "failed", "dead", "cancelled", "expired").

// LogEntry is one entry of a task's log.
type LogEntry struct {
	// Seq numbers the task's log entries in the order they were appended,
	// from 1; the same entry always has the same seq. GET
	// /v1/tasks/{id}/logs?after=<seq> returns the entries after it. A
	// truncation marker has the seq of the last entry it stands for. Zero
	// in entries not yet appended (what a dispatcher passes the ledger).
	Seq  int64     `json:"seq"`
	At   time.Time `json:"at"`
	Kind LogKind   `json:"kind"`
	// Attempt is the attempt the entry belongs to, where one applies.
	Attempt int    `json:"attempt,omitempty"`
	Message string `json:"message"`
	// Status is an attempt end's HTTP status (0: none, e.g. a timeout or a
	// Go handler).
	Status int `json:"status,omitempty"`
	// DurationMS is an attempt end's run time.
	DurationMS *int64 `json:"duration_ms,omitempty"`
}

// TaskLog is the answer of GET /v1/tasks/{id}/logs: entries in time order
// (with ?after=<seq>: those whose seq is above it).
type TaskLog struct {
	Entries []LogEntry `json:"entries"`
	// LastSeq is the seq of the log's newest entry when it was read (0:
	// none): pass it as after to get only what was appended since.
	LastSeq int64 `json:"last_seq"`
}

// LogLines is the body of POST /v1/tasks/{id}/logs.
type LogLines struct {
	Lines []string `json:"lines"`
}
