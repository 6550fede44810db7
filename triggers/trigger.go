package triggers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/oklog/ulid/v2"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ingest"
)

// Submitter takes a tenant's events into Tasklane. [*ingest.Ingester]
// implements it: Submit returns without error only once every task is
// durable, and resubmitting an event (same source and id) is deduplicated.
type Submitter interface {
	Submit(ctx context.Context, tenant string, events []*event.Event) ([]contracts.SubmittedTask, error)
}

// Trigger is one configured trigger.
//
// Start is called once and returns once the trigger runs (its background
// work continues until Stop). Stop is called at most once, after Start; it
// stops taking new work, waits for a submission in flight, releases what
// the trigger holds (its lock) and returns. Status may be called at any
// time, from any goroutine.
type Trigger interface {
	// Name is the trigger's configured name.
	Name() string
	// Kind is "cron", "http" or "objectstore".
	Kind() string
	// Start starts the trigger.
	Start(ctx context.Context) error
	// Stop stops it; ctx bounds the wait for work in flight.
	Stop(ctx context.Context) error
	// Status is what this process knows of the trigger now.
	Status() Status
}

// Hook is a trigger that takes HTTP requests: an HTTP webhook, or an
// object-store trigger in notify mode. The services layer serves it at
// /hooks/<Path>.
type Hook interface {
	Trigger
	http.Handler
	// Path is the hook path, without surrounding slashes.
	Path() string
}

// States of a trigger, as Status and the trigger listing report them.
const (
	// StateRunning: the trigger fires (it holds its lock, or serves its
	// hook).
	StateRunning = "running"
	// StateStandby: another replica holds the trigger's lock; this one
	// takes over if it goes away.
	StateStandby = "standby"
	// StateFailing: the trigger runs, but its last attempt failed (see
	// LastError).
	StateFailing = "failing"
	// StateStopped: no process runs the trigger (no fresh heartbeat), or
	// it was stopped.
	StateStopped = "stopped"
)

// Status is the state of a trigger.
type Status struct {
	// Name is the trigger's name.
	Name string `json:"name"`
	// Kind is "cron", "http" or "objectstore".
	Kind string `json:"kind"`
	// State is running, standby, failing or stopped.
	State string `json:"state"`
	// LastFire is when the trigger last submitted an event.
	LastFire time.Time `json:"last_fire,omitzero"`
	// LastEventID is the id of the last event submitted.
	LastEventID string `json:"last_event_id,omitempty"`
	// NextFire is the next scheduled fire (cron) or poll (object store).
	NextFire time.Time `json:"next_fire,omitzero"`
	// Fires counts the events this process submitted.
	Fires int64 `json:"fires"`
	// LastError is the last failure, cleared by the next success.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Env is what every trigger needs from its process.
type Env struct {
	// Submitter takes the events. Required.
	Submitter Submitter
	// Store keeps the cluster-visible state and the locks. Required.
	Store *Store
	// Owner identifies this process in locks and state. Default
	// [NewOwnerID].
	Owner string
	// Logger receives the trigger's log lines. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// WithDefaults returns env with its defaults applied.
func (env Env) WithDefaults() Env {
	if env.Owner == "" {
		env.Owner = NewOwnerID()
	}
	if env.Logger == nil {
		env.Logger = slog.Default()
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	return env
}

// Validate reports a missing dependency.
func (env Env) Validate() error {
	var errs []error
	if env.Submitter == nil {
		errs = append(errs, errors.New("triggers.Env.Submitter: missing"))
	}
	if env.Store == nil {
		errs = append(errs, errors.New("triggers.Env.Store: missing"))
	}
	return errors.Join(errs...)
}

// NewOwnerID names this process: "<host>:<pid>:<random>".
func NewOwnerID() string {
	host, _ := os.Hostname()
	id := strings.ToLower(ulid.Make().String())
	return host + ":" + strconv.Itoa(os.Getpid()) + ":" + id[len(id)-6:]
}

// IsPermanent reports whether a submission failed for good: the ingest path
// refused the events (invalid, or no function takes their type), so sending
// them again would fail again. Other failures (the ledger did not answer, a
// cancelled context) are worth retrying with the same event ids.
func IsPermanent(err error) bool {
	var ie *ingest.Error
	return errors.As(err, &ie) && ie.Status >= 400 && ie.Status < 500
}

// SubmitTimeout bounds one submission. Submissions run on a context that
// Stop does not cancel, so a stopping trigger finishes what it started.
const SubmitTimeout = 30 * time.Second

// CheckpointTimeout bounds one write of a trigger's progress (a cron
// cursor, an object-store checkpoint chunk). Like submissions, these writes
// are not cancelled by Stop.
const CheckpointTimeout = 10 * time.Second

// Submit sends events through env's Submitter, detached from ctx's
// cancellation and bounded by SubmitTimeout.
func (env Env) Submit(ctx context.Context, tenant string, events []*event.Event) ([]contracts.SubmittedTask, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), SubmitTimeout)
	defer cancel()
	tasks, err := env.Submitter.Submit(sctx, tenant, events)
	if err != nil {
		return nil, fmt.Errorf("submitting %d events: %w", len(events), err)
	}
	return tasks, nil
}

// Tracker keeps a trigger's in-process Status. Safe for concurrent use.
type Tracker struct {
	mu       sync.Mutex
	st       Status
	failures uint64 // failures recorded, for Succeeded
}

// NewTracker starts a Status for the trigger name of kind.
func NewTracker(name, kind string) *Tracker {
	return &Tracker{st: Status{Name: name, Kind: kind, State: StateStopped}}
}

// Status returns a copy of the status.
func (t *Tracker) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// SetState sets the state; a failing trigger stays failing until Fired or
// Succeeded.
func (t *Tracker) SetState(state string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if state == StateRunning && t.st.LastError != "" {
		state = StateFailing
	}
	t.st.State = state
}

// SetNext sets the next fire.
func (t *Tracker) SetNext(next time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.NextFire = next
}

// Fired records n events submitted at at, the last with id lastID, and
// clears the last error.
func (t *Tracker) Fired(at time.Time, lastID string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.LastFire, t.st.LastEventID = at, lastID
	t.st.Fires += int64(n)
	t.st.LastError, t.st.LastErrorAt = "", time.Time{}
	if t.st.State == StateFailing {
		t.st.State = StateRunning
	}
}

// Failures counts the failures recorded so far; pass it to Succeeded
// after the attempt.
func (t *Tracker) Failures() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures
}

// Succeeded records that an attempt begun when Failures was mark succeeded
// (even if it submitted nothing): unless a failure was recorded since mark,
// it clears the last error, and a failing trigger is running again. It
// reports whether there was an error to clear.
func (t *Tracker) Succeeded(mark uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failures != mark || t.st.LastError == "" {
		return false
	}
	t.st.LastError, t.st.LastErrorAt = "", time.Time{}
	if t.st.State == StateFailing {
		t.st.State = StateRunning
	}
	return true
}

// Failed records err at at.
func (t *Tracker) Failed(at time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures++
	t.st.LastError, t.st.LastErrorAt = err.Error(), at
	if t.st.State == StateRunning {
		t.st.State = StateFailing
	}
}
