package contracts

// Result event types: every task ends with exactly one of these.
const (
	// TypeTaskSucceeded is emitted when an attempt answered 2xx (or a Go
	// handler returned nil).
	TypeTaskSucceeded = "io.tasklane.task.succeeded"
	// TypeTaskFailed is emitted when a task ended unsuccessfully and is not
	// kept in the dead-letter queue.
	TypeTaskFailed = "io.tasklane.task.failed"
	// TypeTaskDead is emitted when a task ended unsuccessfully and was kept in
	// the dead-letter queue.
	TypeTaskDead = "io.tasklane.task.dead"
	// TypeTaskExpired is emitted when a task's TTL passed before it started.
	TypeTaskExpired = "io.tasklane.task.expired"
	// TypeTaskCancelled is emitted when a task was cancelled before it ended.
	TypeTaskCancelled = "io.tasklane.task.cancelled"
)

// ResultTypePrefix prefixes every result event type; the outcome follows it.
const ResultTypePrefix = "io.tasklane.task."

// ResultSourcePrefix prefixes the source of a result event; the function name
// follows it.
const ResultSourcePrefix = "tasklane/functions/"

// ResultsExchange is the RabbitMQ topic exchange (or, on the redisstream
// driver, the stream) that carries every result event under the default
// broker prefix ("tasklane"; config broker.prefix). The routing key is
// "<tenant>.<function>.<outcome>". ResultsExchangeFor names it for any
// prefix.
const ResultsExchange = "tasklane.results"

// ResultsExchangeFor is the results exchange (or stream) of a deployment
// whose broker prefix (config broker.prefix) is prefix: "<prefix>.results".
// An empty prefix means the default, giving ResultsExchange.
func ResultsExchangeFor(prefix string) string {
	if prefix == "" {
		return ResultsExchange
	}
	return prefix + ".results"
}

// Extension attributes read on submission.
const (
	// ExtPriority is the task priority, 0 (lowest) to 9 (highest). Default 0.
	ExtPriority = "priority"
	// ExtDelay defers the task by this many seconds.
	ExtDelay = "delay"
	// ExtDeliverAt defers the task until this RFC 3339 time.
	ExtDeliverAt = "deliverat"
	// ExtTTL drops the task as expired if it has not started within this many
	// seconds of submission.
	ExtTTL = "ttl"
	// ExtExpiresAt drops the task as expired if it has not started by this
	// RFC 3339 time.
	ExtExpiresAt = "expiresat"
	// ExtTraceParent and ExtTraceState carry W3C trace context.
	ExtTraceParent = "traceparent"
	// ExtTraceState carries W3C trace state.
	ExtTraceState = "tracestate"
	// ExtBatch groups tasks: a string a producer sets to select them later
	// (GET /v1/tasks?batch=, pause and cancel selectors).
	ExtBatch = "batch"
	// ExtTenantID is set by the platform from the credential. A value sent by
	// a client is overwritten; it never selects a tenant.
	ExtTenantID = "tenantid"
	// ExtParentTask is set by the platform on an event chained from a
	// function's reply: the id of the task whose reply it was. A value sent
	// by a client is dropped.
	ExtParentTask = "parenttask"
	// ExtChainDepth is set by the platform on a chained event: how many
	// replies led to it (1 for the reply of a submitted event's task). A
	// value sent by a client is dropped.
	ExtChainDepth = "chaindepth"
)

// MaxChainDepth bounds a chain: a reply that would make an event deeper
// fails its task (non-retryable).
const MaxChainDepth = 16

// Headers sent with every call to an HTTP function, besides the CloudEvent
// itself in binary mode.
const (
	// HeaderTaskID names the task being run.
	HeaderTaskID = "Tasklane-Task-Id"
	// HeaderAttempt is the 1-based attempt number.
	HeaderAttempt = "Tasklane-Attempt"
	// HeaderDeadline is the RFC 3339 time after which the attempt counts as
	// timed out.
	HeaderDeadline = "Tasklane-Deadline"
	// HeaderTaskToken carries a token scoped to this task and attempt,
	// valid until the attempt's deadline: the function may send it as
	// "Authorization: Bearer <token>" to POST /v1/tasks/{id}/logs, and to
	// nothing else.
	HeaderTaskToken = "Tasklane-Task-Token"
)

// MaxPriority is the highest priority an event may ask for.
const MaxPriority = 9
