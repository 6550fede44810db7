// Package sdk is how Go programs run their own task handlers inside
// Tasklane: register a HandlerFunc under a name, point a function's endpoint
// at "go:<name>", and start Tasklane with the registry:
//
//	reg := sdk.NewRegistry()
//	reg.Handle("resize", func(ctx context.Context, t sdk.Task) ([]byte, error) {
//		img, err := fetch(ctx, t.Event.Data())
//		if errors.Is(err, errNotAnImage) {
//			return nil, sdk.Permanent(err) // dead-lettered at once
//		}
//		...
//	})
//	cli.Main(reg) // github.com/tasklane/tasklane/services/tasklane/cli
//
// A handler returns its result bytes (stored as the task's result) or an
// error. A plain error is retryable; wrap it with Permanent to stop retrying,
// or with Throttled to back off and slow the function down. A handler that
// calls Reply before returning nil chains a new event (task chaining).
//
// A handler writes lines to its task's log (GET /v1/tasks/{id}/logs)
// through the logger in its context:
//
//	sdk.Logger(ctx).Info("resized", "width", w)
//	sdk.Logf(ctx, "fetched %d bytes", n)
package sdk

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Task is what a handler receives.
type Task struct {
	// ID is the task id.
	ID string
	// Tenant owns the task.
	Tenant string
	// Function is the configured function name.
	Function string
	// Attempt is 1 for the first attempt.
	Attempt int
	// Deadline is when the attempt times out (also the context's deadline).
	Deadline time.Time
	// Event is the submitted CloudEvent.
	Event *event.Event
}

// HandlerFunc runs one attempt of a task.
type HandlerFunc func(ctx context.Context, t Task) ([]byte, error)

// Registry maps handler names to handlers. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	handlers map[string]HandlerFunc
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{handlers: map[string]HandlerFunc{}} }

// Handle registers h under name; a function whose endpoint is "go:<name>"
// runs it. Registering a name twice panics: it is a programming error.
func (r *Registry) Handle(name string, h HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[name]; dup {
		panic(fmt.Sprintf("sdk: handler %q registered twice", name))
	}
	r.handlers[name] = h
}

// Lookup returns the handler registered under name.
func (r *Registry) Lookup(name string) (HandlerFunc, bool) {
	if r == nil {
		return nil, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	h, ok := r.handlers[name]
	return h, ok
}

// Names lists the registered names, sorted.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.handlers))
	for n := range r.handlers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// PermanentError marks a failure that retrying cannot fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as non-retryable: the task is dead-lettered at once.
func Permanent(err error) error {
	if err == nil {
		err = errors.New("permanent failure")
	}
	return &PermanentError{Err: err}
}

// ThrottledError asks Tasklane to back off.
type ThrottledError struct {
	Err error
	// RetryAfter is how long to wait; zero means the function's backoff.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string { return "throttled: " + e.Err.Error() }
func (e *ThrottledError) Unwrap() error { return e.Err }

// Throttled marks err as a throttling answer (like HTTP 429): the task is
// retried after retryAfter (or the backoff when zero).
func Throttled(err error, retryAfter time.Duration) error {
	if err == nil {
		err = errors.New("throttled")
	}
	return &ThrottledError{Err: err, RetryAfter: retryAfter}
}

// replyKey is the context key of an attempt's reply slot.
type replyKey struct{}

// replySlot holds the event a handler replied with.
type replySlot struct {
	mu sync.Mutex
	e  *event.Event
}

// Reply makes e the attempt's reply event: when the handler then returns
// nil, Tasklane submits e as a new event of the task's tenant (the same
// validation, dedup on e's source and id, and limits as a submitted event)
// before it records the task's success, and the new tasks name this task
// as their parent. Give the reply a stable id (derived from the task's
// event, say), so that a re-run of the task replies with the same event and
// chains nothing twice. A later Reply replaces an earlier one; a reply
// Tasklane refuses as invalid fails the task (non-retryable). ctx must be
// the handler's context.
func Reply(ctx context.Context, e *event.Event) error {
	slot, ok := ctx.Value(replyKey{}).(*replySlot)
	if !ok {
		return errors.New("sdk: Reply outside a Tasklane handler's context")
	}
	if e == nil {
		return errors.New("sdk: Reply with a nil event")
	}
	slot.mu.Lock()
	defer slot.mu.Unlock()
	slot.e = e
	return nil
}

// CollectReply returns a context in which a handler may call Reply, and a
// function that returns the event it replied with (nil if none). Tasklane's
// executor calls it; handlers do not.
func CollectReply(ctx context.Context) (context.Context, func() *event.Event) {
	slot := &replySlot{}
	return context.WithValue(ctx, replyKey{}, slot), func() *event.Event {
		slot.mu.Lock()
		defer slot.mu.Unlock()
		return slot.e
	}
}
