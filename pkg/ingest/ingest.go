// Package ingest turns accepted CloudEvents into durable tasks: it validates
// them, reads Tasklane's extension attributes, records one task per
// subscribed function in the ledger and publishes each to its lane. The HTTP
// gateway and the triggers both submit through it, so every way in gets the
// same validation, dedup, limits and routing.
//
// Durability rule: Submit returns without error only when every task is in
// the ledger and either confirmed by the broker or sitting in the ledger's
// durable delay set (delayed tasks, and tasks whose publish failed, which the
// scheduler publishes when due).
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/telemetry"
)

// MaxDelay bounds delay and deliverat: a task further out is refused.
const MaxDelay = 365 * 24 * time.Hour

// Event bounds. An event's attributes and extensions travel in the headers
// of its lane message (and of every HTTP call of its function), where
// brokers and HTTP servers have limits of their own far below the body's,
// so they are bounded with the data, not only the body.
const (
	// MaxEventBytesDefault is the default Config.MaxEventBytes (the
	// config's server.max_event_bytes default).
	MaxEventBytesDefault = 64 << 10
	// MaxExtensions bounds the extension attributes of one event.
	MaxExtensions = 100
	// MaxExtensionNameBytes bounds an extension attribute's name
	// (CloudEvents advises at most 20 characters; a broker header name is
	// at most 255 bytes).
	MaxExtensionNameBytes = 64
)

// publishTimeout bounds one broker publish.
const publishTimeout = 10 * time.Second

// republishAfter is when the scheduler retries a publish that failed.
const republishAfter = time.Second

// Error is a submission problem with the HTTP status that answers it.
type Error struct {
	Status int
	Msg    string
	// NoSubscriber is set when the error is that no function subscribes
	// to the event's type (422).
	NoSubscriber bool
}

func (e *Error) Error() string { return e.Msg }

func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Router picks a lane for a tenant's task.
type Router interface {
	LaneFor(tenant, key string) string
}

// SubscribersFunc names the functions that take events of eventType from
// tenant.
type SubscribersFunc func(tenant, eventType string) []string

// Config configures an Ingester.
type Config struct {
	Ledger      *ledger.Ledger
	Publisher   message.Publisher
	Router      Router
	Subscribers SubscribersFunc
	Metrics     *metrics.Metrics
	Logger      *slog.Logger
	// Observe, when set, is told how many tasks each tenant submitted (the
	// routing controller's heavy-hitter measurement).
	Observe func(tenant string, tasks int)
	// Admission, when set, may refuse a tenant's submission before anything
	// is read or written (backpressure): Submit then returns its error
	// as is (an *admission.RefusedError).
	Admission Admitter
	// PublishConcurrency bounds parallel broker publishes per Submit.
	// Default 64.
	PublishConcurrency int
	// MaxEventBytes bounds each event's size as EventSize measures it
	// (every attribute and extension, name and value, plus the data); a
	// larger event is refused with 413. Default MaxEventBytesDefault.
	MaxEventBytes int64
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Admitter admits or refuses a tenant's submission; *admission.Admitter
// implements it.
type Admitter interface {
	Admit(tenant string) error
}

// Ingester submits events.
type Ingester struct {
	cfg    Config
	guards *guardDropper
}

// New returns an Ingester. Close it when no more Submits come.
func New(cfg Config) *Ingester {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PublishConcurrency <= 0 {
		cfg.PublishConcurrency = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = MaxEventBytesDefault
	}
	return &Ingester{cfg: cfg, guards: newGuardDropper(cfg.Ledger, cfg.Logger)}
}

// WithMaxEventBytes returns an Ingester that bounds each event by n bytes
// (as Config.MaxEventBytes) and shares everything else with in: the gateway
// and the triggers each apply server.max_event_bytes this way. n <= 0
// keeps in's bound. Close only the Ingester New returned.
func (in *Ingester) WithMaxEventBytes(n int64) *Ingester {
	out := *in
	if n > 0 {
		out.cfg.MaxEventBytes = n
	}
	return &out
}

// Close drops the publish guards still queued and stops the goroutine that
// drops them. A Submit after Close still works (it drops its guards itself).
func (in *Ingester) Close() { in.guards.close() }

// Submit makes tasks of events for tenant. A submission refused by
// Config.Admission returns its error (an *admission.RefusedError), nothing
// recorded. Every event is checked before anything is written: one bad event refuses the whole submission (400 or
// 422, naming the event's index when there are several), so a client can
// fix and resend it whole; dedup makes resending what was accepted harmless.
func (in *Ingester) Submit(ctx context.Context, tenant string, events []*event.Event) ([]contracts.SubmittedTask, error) {
	return in.submit(ctx, tenant, events, nil)
}

// Parent is the task whose reply event SubmitReply chains.
type Parent struct {
	// TaskID is the parent task's id.
	TaskID string
	// Event is the event the parent task was made from (its chaindepth
	// extension, if any, gives the parent's depth).
	Event *event.Event
}

// SubmitReply submits e, the CloudEvent a function replied with, as a new
// event of tenant chained from parent: the same validation, dedup (on e's
// source and id: a re-run of the parent that replies with the same event
// finds the same tasks), limits and routing as Submit. The new tasks'
// records name the parent, and the event carries the parenttask and
// chaindepth extensions; a chain deeper than contracts.MaxChainDepth is
// refused (422). Errors are Submit's.
func (in *Ingester) SubmitReply(ctx context.Context, tenant string, parent Parent, e *event.Event) ([]contracts.SubmittedTask, error) {
	depth := 1
	if parent.Event != nil {
		if d, ok := toInt(parent.Event.Extensions()[contracts.ExtChainDepth]); ok && d > 0 {
			depth = int(min(d, contracts.MaxChainDepth)) + 1
		}
	}
	if depth > contracts.MaxChainDepth {
		return nil, errorf(http.StatusUnprocessableEntity, "chain too deep: the reply would be the %d-th event of its chain; the limit is %d", depth, contracts.MaxChainDepth)
	}
	return in.submit(ctx, tenant, []*event.Event{e}, &chained{parent: parent.TaskID, depth: depth})
}

// chained is what a chained event records of its parent.
type chained struct {
	parent string
	depth  int
}

func (in *Ingester) submit(ctx context.Context, tenant string, events []*event.Event, chain *chained) ([]contracts.SubmittedTask, error) {
	if len(events) == 0 {
		return nil, errorf(http.StatusBadRequest, "no events")
	}
	// Backpressure first: a refused submission (a batch whole) costs no
	// validation and nothing is recorded.
	if in.cfg.Admission != nil {
		if err := in.cfg.Admission.Admit(tenant); err != nil {
			return nil, err
		}
	}
	now := in.cfg.Now()
	batch := make([]ledger.EventTasks, len(events))
	msgs := make([][]*message.Message, len(events))
	var spans eventSpans
	if telemetry.Enabled() {
		spans = make(eventSpans, len(events))
		defer spans.end()
	}
	for i, e := range events {
		ectx := ctx
		if spans != nil {
			ectx, spans[i] = startIngestSpan(ctx, tenant, e)
		}
		et, m, err := in.prepare(ectx, tenant, e, now, chain)
		if err != nil {
			if len(events) > 1 {
				err.Msg = fmt.Sprintf("events[%d]: %s", i, err.Msg)
			}
			spans.fail(err.Msg)
			return nil, err
		}
		batch[i], msgs[i] = et, m
	}
	createStart := time.Now()
	created, err := in.cfg.Ledger.Create(ctx, batch)
	spans.child("ledger create", createStart, err, attribute.Int("tasklane.batch_events", len(events)))
	if err != nil {
		in.cfg.Logger.ErrorContext(ctx, "recording tasks", "tenant", tenant, "error", err)
		if errors.Is(err, ledger.ErrNotReplicated) {
			// Recorded on the master, with publish guards: the tasks run
			// unless a failover loses them, and a retry gets them from
			// dedup. Not confirmed, so not a 202.
			spans.fail("the task ledger's replicas did not confirm the tasks")
			return nil, errorf(http.StatusServiceUnavailable, "the task ledger's replicas did not confirm the tasks in time (redis.wait_replicas): they are recorded but could be lost in a Redis failover; retry with the same event ids (they are deduplicated)")
		}
		spans.fail("the task ledger did not answer")
		// The pipeline may have been applied in part, or whole with the
		// answer lost: the outcome is unknown, and retrying with the same
		// event ids is safe because they are deduplicated.
		return nil, errorf(http.StatusServiceUnavailable, "the task ledger did not answer: the tasks may or may not be recorded; retry with the same event ids (they are deduplicated)")
	}
	var toPublish []*message.Message
	var guard int64
	var out []contracts.SubmittedTask
	for i, c := range created {
		out = append(out, c.Tasks...)
		if c.Duplicate {
			in.cfg.Metrics.TasksDuplicate.WithLabelValues(tenant).Inc()
			continue
		}
		for _, t := range c.Tasks {
			in.cfg.Metrics.TasksAccepted.WithLabelValues(tenant, t.Function).Inc()
		}
		if in.cfg.Observe != nil {
			in.cfg.Observe(tenant, len(c.Tasks))
		}
		if batch[i].DueAt.After(now) {
			continue // the scheduler publishes it when due
		}
		toPublish = append(toPublish, msgs[i]...)
		guard = c.GuardScore
	}
	if tooLarge := in.publish(ctx, tenant, guard, toPublish); len(tooLarge) > 0 {
		// CheckSize passed in prepare, so the broker's limit changed (a
		// reconnection negotiated a smaller frame_max): the scheduler ends
		// these tasks (they are in the delay set), the client hears 413.
		return nil, errorf(http.StatusRequestEntityTooLarge, "the broker refused the lane message of task %s for its size (%v): its attributes and extensions are too large; the task ends without running", tooLarge[0].id, tooLarge[0].err)
	}
	return out, nil
}

// prepare validates one event and builds its tasks. While tracing is on,
// each task's stored message carries ctx's trace context (the event's
// ingest span) and the time it is due.
func (in *Ingester) prepare(ctx context.Context, tenant string, e *event.Event, now time.Time, chain *chained) (ledger.EventTasks, []*message.Message, *Error) {
	// Chain attributes come from the platform only: a client's are dropped
	// (before the size check, which then counts the platform's).
	e.SetExtension(contracts.ExtParentTask, nil)
	e.SetExtension(contracts.ExtChainDepth, nil)
	if chain != nil {
		e.SetExtension(contracts.ExtParentTask, chain.parent)
		e.SetExtension(contracts.ExtChainDepth, chain.depth)
	}
	if perr := in.checkSize(e); perr != nil {
		return ledger.EventTasks{}, nil, perr
	}
	if err := e.Validate(); err != nil {
		return ledger.EventTasks{}, nil, errorf(http.StatusBadRequest, "invalid event: %s", describeValidation(err))
	}
	if perr := checkStrings(e); perr != nil {
		return ledger.EventTasks{}, nil, perr
	}
	trimAttributes(e)
	// The tenant comes from the credential only.
	e.SetExtension(contracts.ExtTenantID, tenant)
	ext := e.Extensions()
	prio, perr := intExt(ext, contracts.ExtPriority, 0, contracts.MaxPriority)
	if perr != nil {
		return ledger.EventTasks{}, nil, perr
	}
	due, perr := dueAt(ext, now)
	if perr != nil {
		return ledger.EventTasks{}, nil, perr
	}
	expires, perr := expiresAt(ext, now)
	if perr != nil {
		return ledger.EventTasks{}, nil, perr
	}
	batch, perr := batchExt(ext)
	if perr != nil {
		return ledger.EventTasks{}, nil, perr
	}
	fns := in.cfg.Subscribers(tenant, e.Type())
	if len(fns) == 0 {
		perr := errorf(http.StatusUnprocessableEntity, "type: no function subscribes to type %q", e.Type())
		perr.NoSubscriber = true
		return ledger.EventTasks{}, nil, perr
	}
	et := ledger.EventTasks{
		Tenant:    tenant,
		Event:     contracts.EventRef{ID: e.ID(), Source: e.Source(), Type: e.Type(), Subject: e.Subject()},
		Batch:     batch,
		DueAt:     due,
		ExpiresAt: expires,
	}
	if chain != nil {
		et.Parent = chain.parent
	}
	msgs := make([]*message.Message, 0, len(fns))
	var traceparent, tracestate, dueUS string
	if telemetry.Enabled() {
		traceparent, tracestate = telemetry.Inject(ctx)
		d := now
		if due.After(now) {
			d = due
		}
		dueUS = strconv.FormatInt(d.UnixMicro(), 10)
	}
	for _, fn := range fns {
		id := ulid.Make().String()
		msg, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: tenant, Function: fn, Priority: prio}, e)
		if err != nil {
			return ledger.EventTasks{}, nil, errorf(http.StatusBadRequest, "invalid event: %v", err)
		}
		if traceparent != "" {
			msg.Metadata.Set(taskmsg.KeyTraceParent, traceparent)
			if tracestate != "" {
				msg.Metadata.Set(taskmsg.KeyTraceState, tracestate)
			}
			msg.Metadata.Set(taskmsg.KeyDue, dueUS)
		}
		// Refused now, nothing recorded: a lane message the broker refuses
		// could never be published.
		if err := broker.CheckSize(in.cfg.Publisher, msg); err != nil {
			return ledger.EventTasks{}, nil, errorf(http.StatusRequestEntityTooLarge, "event: its attributes and extensions do not fit in a broker message: %v", err)
		}
		stored, err := taskmsg.Encode(msg)
		if err != nil {
			return ledger.EventTasks{}, nil, errorf(http.StatusBadRequest, "invalid event: %v", err)
		}
		et.Tasks = append(et.Tasks, ledger.NewTask{ID: id, Function: fn, Priority: prio, Message: stored, TraceParent: traceparent})
		msgs = append(msgs, msg)
	}
	return et, msgs, nil
}

// maxBatchLen bounds the batch extension attribute.
const maxBatchLen = 256

// batchExt reads the batch extension attribute: a string, "" when absent.
func batchExt(ext map[string]any) (string, *Error) {
	v, ok := ext[contracts.ExtBatch]
	if !ok {
		return "", nil
	}
	s, err := types.Format(v)
	if err != nil || s == "" {
		return "", errorf(http.StatusBadRequest, "%s: a non-empty string", contracts.ExtBatch)
	}
	if len(s) > maxBatchLen {
		return "", errorf(http.StatusBadRequest, "%s: at most %d bytes", contracts.ExtBatch, maxBatchLen)
	}
	return s, nil
}

// publish sends tasks to their lanes concurrently. A task the broker did not
// confirm stays in the delay set and is retried by the scheduler shortly;
// it is durable either way, so the submission still succeeds. It returns
// the tasks the broker refused for their size (and why): those are due at
// once, for the scheduler to end them.
func (in *Ingester) publish(ctx context.Context, tenant string, guard int64, msgs []*message.Message) []tooLargeTask {
	if len(msgs) == 0 {
		return nil
	}
	// The client going away must not abandon publishes half done.
	ctx = context.WithoutCancel(ctx)
	traced := telemetry.Enabled()
	sem := make(chan struct{}, in.cfg.PublishConcurrency)
	var mu sync.Mutex
	var failed []string
	var confirmed []ledger.Guard
	var tooLarge []tooLargeTask
	var wg sync.WaitGroup
	for _, m := range msgs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := m.Metadata.Get(taskmsg.KeyTaskID)
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			defer cancel()
			lane := in.cfg.Router.LaneFor(tenant, id)
			var span trace.Span
			if traced {
				pctx, span = startPublishSpan(pctx, tenant, lane, m)
			}
			m.SetContext(pctx)
			err := in.cfg.Publisher.Publish(lane, m)
			if span != nil {
				endSpan(span, err)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, broker.ErrTooLarge):
				tooLarge = append(tooLarge, tooLargeTask{id: id, err: err})
				in.cfg.Logger.WarnContext(ctx, "publishing task: too large for the broker; the scheduler ends it", "task", id, "error", err)
				return
			case err != nil:
				failed = append(failed, id)
				in.cfg.Logger.WarnContext(ctx, "publishing task; the scheduler will retry", "task", id, "error", err)
				return
			}
			// The task's log records the lane (with the guard's drop).
			confirmed = append(confirmed, ledger.Guard{Tenant: tenant, ID: id, Score: guard, Lane: lane, At: in.cfg.Now()})
		}()
	}
	wg.Wait()
	if len(confirmed) > 0 {
		in.guards.add(ctx, confirmed)
	}
	for _, id := range failed {
		if err := in.cfg.Ledger.Defer(ctx, tenant, id, in.cfg.Now().Add(republishAfter)); err != nil {
			in.cfg.Logger.WarnContext(ctx, "rescheduling unpublished task; its publish guard stays", "task", id, "error", err)
		}
	}
	for _, t := range tooLarge {
		if err := in.cfg.Ledger.Defer(ctx, tenant, t.id, in.cfg.Now()); err != nil {
			in.cfg.Logger.WarnContext(ctx, "handing a task too large to publish to the scheduler; its publish guard stays", "task", t.id, "error", err)
		}
	}
	return tooLarge
}

// tooLargeTask is a task whose lane message the broker refused for its size.
type tooLargeTask struct {
	id  string
	err error
}

// EventSize is what an event weighs against Config.MaxEventBytes: the name
// and value of every attribute it has (specversion, id, source, type,
// subject, time, datacontenttype, dataschema) and of every extension, plus
// its data bytes. Names count as the attribute names, not as the "ce-"
// headers or JSON keys that carried them, so an event weighs the same in
// every content mode and from a trigger.
func EventSize(e *event.Event) int64 {
	n := int64(len(e.Data()))
	attr := func(name, v string) {
		if v != "" {
			n += int64(len(name) + len(v))
		}
	}
	attr("specversion", e.SpecVersion())
	attr("id", e.ID())
	attr("source", e.Source())
	attr("type", e.Type())
	attr("subject", e.Subject())
	attr("datacontenttype", e.DataContentType())
	attr("dataschema", e.DataSchema())
	if t := e.Time(); !t.IsZero() {
		attr("time", t.Format(time.RFC3339Nano))
	}
	for name, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		n += int64(len(name) + len(s))
	}
	return n
}

// checkSize refuses an event with more than MaxExtensions extensions, an
// extension name over MaxExtensionNameBytes, or over MaxEventBytes in all
// (413, naming the limit).
func (in *Ingester) checkSize(e *event.Event) *Error {
	ext := e.Extensions()
	if len(ext) > MaxExtensions {
		return errorf(http.StatusRequestEntityTooLarge, "event has %d extension attributes; the limit is %d", len(ext), MaxExtensions)
	}
	for name := range ext {
		if len(name) > MaxExtensionNameBytes {
			return errorf(http.StatusRequestEntityTooLarge, "extension %.20q...: a name of %d bytes exceeds the limit of %d bytes", name, len(name), MaxExtensionNameBytes)
		}
	}
	if n := EventSize(e); n > in.cfg.MaxEventBytes {
		return errorf(http.StatusRequestEntityTooLarge, "event of %d bytes (attributes, extensions and data) exceeds the limit of %d bytes (server.max_event_bytes)", n, in.cfg.MaxEventBytes)
	}
	return nil
}

// describeValidation renders the SDK's validation error, attributes sorted.
func describeValidation(err error) string {
	var ve event.ValidationError
	if errors.As(err, &ve) {
		parts := make([]string, 0, len(ve))
		for attr, e := range ve {
			parts = append(parts, attr+": "+e.Error())
		}
		sort.Strings(parts)
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

// checkStrings refuses attribute values CloudEvents disallows: invalid
// UTF-8 and control characters (U+0000-U+001F, U+007F-U+009F), and
// extension names other than ASCII letters and digits. Let through,
// invalid UTF-8 would be silently replaced in the stored task message (the
// function would see another id than the one deduplicated), and a control
// character cannot be sent in the binary-mode header of the function call.
func checkStrings(e *event.Event) *Error {
	attrs := map[string]string{
		"id": e.ID(), "source": e.Source(), "type": e.Type(), "subject": e.Subject(),
		"dataschema": e.DataSchema(), "datacontenttype": e.DataContentType(),
	}
	for name, v := range e.Extensions() {
		// The SDK checks the names of 1.0 events only.
		if name == "" || strings.ContainsFunc(name, func(r rune) bool { return !isASCIIAlnum(r) }) {
			return errorf(http.StatusBadRequest, "extension %q: a name is ASCII letters and digits only", name)
		}
		if s, err := types.Format(v); err == nil {
			attrs[name] = s
		}
	}
	names := slices.Sorted(maps.Keys(attrs))
	for _, name := range names {
		v := attrs[name]
		if !utf8.ValidString(v) {
			return errorf(http.StatusBadRequest, "%s: not valid UTF-8", name)
		}
		if i := strings.IndexFunc(v, unicode.IsControl); i >= 0 {
			return errorf(http.StatusBadRequest, "%s: control character %U not allowed", name, firstRune(v[i:]))
		}
	}
	return nil
}

// trimAttributes drops surrounding white space from the string attributes,
// as the SDK's setters and the HTTP binary binding do: otherwise a
// structured event's " a" would be recorded (and deduplicated) under another
// id than the "a" its function receives.
func trimAttributes(e *event.Event) {
	e.SetID(e.ID()) // not blank: validated
	e.SetType(e.Type())
	if s := e.Subject(); s != "" {
		e.SetSubject(s)
	}
	if ct := e.DataContentType(); ct != "" {
		e.SetDataContentType(ct)
	}
}

func isASCIIAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

func firstRune(s string) rune {
	r, _ := utf8.DecodeRuneInString(s)
	return r
}

func intExt(ext map[string]any, name string, lo, hi int64) (int, *Error) {
	v, ok := ext[name]
	if !ok {
		return 0, nil
	}
	n, ok := toInt(v)
	if !ok || n < lo || n > hi {
		return 0, errorf(http.StatusBadRequest, "%s: must be an integer from %d to %d, got %v", name, lo, hi, v)
	}
	return int(n), nil
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int32:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	}
	return 0, false
}

func timeExt(ext map[string]any, name string) (time.Time, bool, *Error) {
	v, ok := ext[name]
	if !ok {
		return time.Time{}, false, nil
	}
	if t, ok := v.(time.Time); ok {
		return t, true, nil
	}
	s, _ := v.(string)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, false, errorf(http.StatusBadRequest, "%s: must be an RFC 3339 time, got %v", name, v)
	}
	return t, true, nil
}

func dueAt(ext map[string]any, now time.Time) (time.Time, *Error) {
	at, hasAt, err := timeExt(ext, contracts.ExtDeliverAt)
	if err != nil {
		return time.Time{}, err
	}
	_, hasDelay := ext[contracts.ExtDelay]
	if hasAt && hasDelay {
		return time.Time{}, errorf(http.StatusBadRequest, "delay, deliverat: give one of them, not both")
	}
	if hasDelay {
		secs, err := intExt(ext, contracts.ExtDelay, 0, int64(MaxDelay/time.Second))
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(time.Duration(secs) * time.Second), nil
	}
	if hasAt && at.Sub(now) > MaxDelay {
		return time.Time{}, errorf(http.StatusBadRequest, "deliverat: more than %s ahead", MaxDelay)
	}
	return at, nil
}

// expiresAt reads ttl (seconds from now, at least 1) or expiresat: the
// time after which a task that has not started ends expired; nil when
// neither is given. Any expiresat counts, the Unix epoch, earlier times and
// the zero time included: one in the past ends the task expired at once
// (with its result event), it never means "no expiry".
func expiresAt(ext map[string]any, now time.Time) (*time.Time, *Error) {
	at, hasAt, err := timeExt(ext, contracts.ExtExpiresAt)
	if err != nil {
		return nil, err
	}
	_, hasTTL := ext[contracts.ExtTTL]
	if hasAt && hasTTL {
		return nil, errorf(http.StatusBadRequest, "ttl, expiresat: give one of them, not both")
	}
	if hasTTL {
		secs, err := intExt(ext, contracts.ExtTTL, 1, int64(MaxDelay/time.Second))
		if err != nil {
			return nil, err
		}
		return new(now.Add(time.Duration(secs) * time.Second)), nil
	}
	if !hasAt {
		return nil, nil
	}
	return &at, nil
}
