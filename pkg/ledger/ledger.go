// Package ledger is the task ledger in Redis: task records, the dedup index,
// the delay set (retry backoffs, delayed tasks and publish guards), leases and
// the results outbox. Every state change is one Lua script, so a record, its
// indexes and its side entries never disagree; scripts fence on the attempt
// number, so a dispatcher that lost its lease cannot overwrite the outcome of
// the one that took over.
package ledger

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
)

// PrefixDefault prefixes every ledger key unless Config.Prefix says otherwise.
const PrefixDefault = config.KeyPrefixDefault

// OutboxMaxLen bounds the outbox stream (approximately). Entries are
// consumed within moments; the bound only protects Redis when no notifier
// runs for a long time.
const OutboxMaxLen = 1_000_000

// ErrNotFound is returned for a task the tenant does not have.
var ErrNotFound = errors.New("task not found")

// Config configures a Ledger.
type Config struct {
	// Redis is the client; the ledger never closes it.
	Redis redis.UniversalClient
	// Retention keeps terminal task records this long. Default
	// config.RetentionDefault (or DedupWindow when that is longer).
	Retention time.Duration
	// DedupWindow remembers (tenant, source, id) this long. Default
	// config.DedupWindowDefault (or the retentions when shorter).
	DedupWindow time.Duration
	// DeadRetention keeps dead-lettered tasks this long. Default
	// config.DeadRetentionDefault.
	DeadRetention time.Duration
	// PublishGuard is how long after acceptance the scheduler republishes a
	// task whose gateway died before the broker confirmed it. Default
	// config.PublishGuardDefault.
	PublishGuard time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Prefix starts every key, so that several deployments (or tests) can
	// share one Redis database. Default PrefixDefault.
	Prefix string
	// Partitions selects the key layout (layout.go): 0, the legacy layout
	// of one Redis; P (1..PartitionsMax), the partitioned layout, tenants
	// spread over P partitions by a hash of their id. Fixed for the life of
	// a deployment: a tenant's keys move when it changes.
	Partitions int
	// TenantQuota returns a tenant's cap on running attempts (0: none), and
	// Limited whether a function's running attempts are capped (a
	// concurrency or an adaptive limit): when an attempt ends, they decide
	// whether to put a tenant parked at its quota back to work and to wake
	// the dispatchers. Default nil: no quotas, no limits.
	TenantQuota func(tenant string) int
	Limited     func(function string) bool
	// WaitReplicas (redis.wait_replicas), when positive, makes every
	// Create answer only after its writes reached this many replicas of
	// their master (Redis WAIT, replicas.go), or fail with
	// ErrNotReplicated after WaitTimeout (default WaitTimeoutDefault).
	// Default 0: no WAIT.
	WaitReplicas int
	WaitTimeout  time.Duration
}

func (l *Ledger) quota(tenant string) int {
	if l.cfg.TenantQuota == nil {
		return 0
	}
	return l.cfg.TenantQuota(tenant)
}

func (l *Ledger) limited(function string) string {
	if l.cfg.Limited != nil && l.cfg.Limited(function) {
		return "1"
	}
	return "0"
}

// Ledger reads and writes task state in Redis.
type Ledger struct {
	rdb   redis.UniversalClient
	cfg   Config
	batch *batcher
}

// New returns a ledger over cfg.Redis.
func New(cfg Config) *Ledger {
	// The defaults are the config file's (one source of truth), with its
	// rule: a task outlives its dedup entry.
	cfg.Retention = cmp.Or(cfg.Retention, max(config.RetentionDefault.Std(), cfg.DedupWindow))
	cfg.DeadRetention = cmp.Or(cfg.DeadRetention, max(config.DeadRetentionDefault.Std(), cfg.DedupWindow))
	cfg.DedupWindow = cmp.Or(cfg.DedupWindow, min(config.DedupWindowDefault.Std(), cfg.Retention, cfg.DeadRetention))
	cfg.PublishGuard = cmp.Or(cfg.PublishGuard, config.PublishGuardDefault.Std())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Prefix = cmp.Or(cfg.Prefix, PrefixDefault)
	cfg.Partitions = min(max(cfg.Partitions, 0), PartitionsMax)
	l := &Ledger{rdb: cfg.Redis, cfg: cfg}
	cfg.WaitTimeout = cmp.Or(cfg.WaitTimeout, WaitTimeoutDefault)
	l.batch = newBatcher(cfg.Redis, l.LoadScripts, cfg.WaitReplicas, cfg.WaitTimeout)
	return l
}

// Redis returns the client the ledger uses.
func (l *Ledger) Redis() redis.UniversalClient { return l.rdb }

// KeyPrefix starts every key of the ledger (and of what keeps its own
// keys beside it, such as bulk jobs).
func (l *Ledger) KeyPrefix() string { return l.cfg.Prefix }

func (l *Ledger) taskKey(tenant, id string) string { return l.tenantPrefix(tenant) + "task:" + id }
func (l *Ledger) allKey(tenant string) string      { return l.tenantPrefix(tenant) + "tasks" }
func (l *Ledger) statePrefix(tenant string) string { return l.tenantPrefix(tenant) + "st:" }
func (l *Ledger) stateKey(tenant string, s contracts.State) string {
	return l.statePrefix(tenant) + string(s)
}

// dedupKey remembers the tasks made from one (source, id) for the dedup
// window. The name is as short as it can be (decision 0019): "d:" and 128
// bits of the SHA-256 of source and id, base64url, where the previous
// release used "dedup:" and the whole hash in hex (legacyDedupKey).
func (l *Ledger) dedupKey(tenant, source, id string) string {
	return l.tenantPrefix(tenant) + "d:" + shortHash(source+"\x00"+id)
}

// legacyDedupKey is the previous release's dedupKey. Create and the event
// listing still read it, so that events accepted before an upgrade are
// deduplicated for the rest of their window. No release before wrote the
// partitioned layout, so there it is dedupKey (nothing more to read).
func (l *Ledger) legacyDedupKey(tenant, source, id string) string {
	if l.Partitioned() {
		return l.dedupKey(tenant, source, id)
	}
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return l.tenantPrefix(tenant) + "dedup:" + hex.EncodeToString(sum[:])
}

// eventKey indexes the tasks made from events with one id, whatever their
// source, for as long as the dedup window remembers them ("e:" and a short
// hash, as dedupKey).
func (l *Ledger) eventKey(tenant, id string) string {
	return l.tenantPrefix(tenant) + "e:" + shortHash(id)
}

// legacyEventKey is the previous release's eventKey, listed when no event
// with that id came since the upgrade (eventKey in the partitioned
// layout, as legacyDedupKey).
func (l *Ledger) legacyEventKey(tenant, id string) string {
	if l.Partitioned() {
		return l.eventKey(tenant, id)
	}
	sum := sha256.Sum256([]byte(id))
	return l.tenantPrefix(tenant) + "evid:" + hex.EncodeToString(sum[:])
}

// shortHash is 128 bits of s's SHA-256 in unpadded base64url: 22
// characters, collision-free for any number of events a ledger holds.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// Member is the delay-set member of a task.
func Member(tenant, id string) string { return tenant + "/" + id }

// ParseMember splits a delay-set member.
func ParseMember(m string) (tenant, id string, ok bool) { return strings.Cut(m, "/") }

// us is the ledger's time unit: Unix microseconds, for times, leases and
// delay-set scores (exact in a float64 score for centuries).
func us(t time.Time) int64 { return t.UnixMicro() }

// NewTask is one task the gateway records.
type NewTask struct {
	ID       string
	Function string
	Priority int
	// Message is the lane message as taskmsg.Encode stored it.
	Message []byte
	// TraceParent is the W3C traceparent of the task's trace, kept in the
	// record (FieldTraceParent) so that its result event continues it.
	// Empty while tracing is off.
	TraceParent string
}

// EventTasks is the set of tasks made from one event.
type EventTasks struct {
	Tenant string
	Event  contracts.EventRef
	Tasks  []NewTask
	// Batch is the event's batch extension attribute ("" when none).
	Batch string
	// DueAt delays the tasks (state scheduled) when after now.
	DueAt time.Time
	// ExpiresAt, when set, ends the tasks as expired if they have not
	// started by then. Any time counts, the Unix epoch, times before it and
	// the zero time included (those tasks end expired at once); nil is no
	// expiry.
	ExpiresAt *time.Time
	// Parent is the task whose reply event this is (task chaining); empty
	// for a submitted event.
	Parent string
}

// Created is the ledger's answer for one EventTasks.
type Created struct {
	// Duplicate is true when the event was seen within the dedup window;
	// Tasks then lists the tasks made the first time.
	Duplicate bool
	Tasks     []contracts.SubmittedTask
	// GuardScore is the delay-set score of the publish guards written for
	// new tasks; pass it to Enqueued once the broker confirmed them.
	GuardScore int64
}

// Create records each event's tasks in one round trip, or finds the tasks
// recorded for it before. Each new task also gets a publish guard in the
// delay set: if the caller dies before Enqueued, the scheduler publishes it.
func (l *Ledger) Create(ctx context.Context, events []EventTasks) ([]Created, error) {
	now := l.cfg.Now()
	guard := us(now.Add(l.cfg.PublishGuard))
	keys := make([][]string, len(events))
	args := make([][]any, len(events))
	for i, ev := range events {
		state, score := contracts.StateQueued, guard
		scheduled := now
		if ev.DueAt.After(now) {
			state, score, scheduled = contracts.StateScheduled, us(ev.DueAt), ev.DueAt
		}
		ids := make([]string, len(ev.Tasks))
		evKeys := []string{l.dedupKey(ev.Tenant, ev.Event.Source, ev.Event.ID), l.allKey(ev.Tenant), l.stateKey(ev.Tenant, state), l.DelayKey(ev.Tenant), l.ExpiryKey(ev.Tenant), l.eventKey(ev.Tenant, ev.Event.ID),
			l.legacyDedupKey(ev.Tenant, ev.Event.Source, ev.Event.ID)}
		for j, t := range ev.Tasks {
			ids[j] = t.ID
			evKeys = append(evKeys, l.taskKey(ev.Tenant, t.ID))
		}
		expires := "" // no expiry
		if ev.ExpiresAt != nil {
			expires = strconv.FormatInt(us(*ev.ExpiresAt), 10)
		}
		evArgs := []any{l.cfg.DedupWindow.Milliseconds(), us(now), score, ev.Tenant, strings.Join(ids, ","), expires}
		for _, t := range ev.Tasks {
			f := []any{
				fID, t.ID, fTenant, ev.Tenant, fFunction, t.Function,
				fEventID, ev.Event.ID, fEventSource, ev.Event.Source, fEventType, ev.Event.Type,
				fState, string(state), fAttempts, 0, fPriority, t.Priority,
				fCreated, us(now), fScheduled, us(scheduled), fMessage, t.Message,
			}
			if ev.Event.Subject != "" {
				f = append(f, fEventSubject, ev.Event.Subject)
			}
			if t.TraceParent != "" {
				f = append(f, FieldTraceParent, t.TraceParent)
			}
			if ev.Batch != "" {
				f = append(f, fBatch, ev.Batch)
			}
			if ev.ExpiresAt != nil {
				f = append(f, fExpires, expires)
			}
			if ev.Parent != "" {
				f = append(f, fParent, ev.Parent)
			}
			evArgs = append(evArgs, t.ID, len(f))
			evArgs = append(evArgs, f...)
			evArgs = append(evArgs, l.encodeLog(contracts.LogEntry{At: now, Kind: contracts.LogAccepted, Message: acceptedMessage(ev, t, state)}))
		}
		keys[i], args[i] = evKeys, evArgs
	}
	cmds := make([]*redis.Cmd, len(events))
	var err error
	if len(events) == 1 {
		// A single event (most requests) shares a round trip with other
		// requests' creates and the dispatchers' claims.
		cmds[0] = l.batch.eval(ctx, createScript, keys[0], args[0]...)
		err = cmds[0].Err()
	} else {
		calls := make([]*scriptCall, len(events))
		for i := range events {
			calls[i] = call(createScript, keys[i], args[i]...)
		}
		err = l.batch.exec(ctx, calls...)
		for i, c := range calls {
			cmds[i] = c.cmd
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("recording tasks: %w", err)
	}
	out := make([]Created, len(events))
	var dups []int
	for i, c := range cmds {
		existing, err := c.Text()
		switch {
		case errors.Is(err, redis.Nil):
			ev := events[i]
			state := contracts.StateQueued
			if ev.DueAt.After(now) {
				state = contracts.StateScheduled
			}
			out[i].GuardScore = guard
			for _, t := range ev.Tasks {
				out[i].Tasks = append(out[i].Tasks, contracts.SubmittedTask{
					ID: t.ID, EventID: ev.Event.ID, Function: t.Function, State: state,
				})
			}
		case err != nil:
			return nil, fmt.Errorf("recording tasks: %w", err)
		default:
			out[i].Duplicate = true
			for _, id := range strings.Split(existing, ",") {
				out[i].Tasks = append(out[i].Tasks, contracts.SubmittedTask{ID: id, EventID: events[i].Event.ID, Duplicate: true})
			}
			dups = append(dups, i)
		}
	}
	if len(dups) > 0 {
		if err := l.fillDuplicates(ctx, events, out, dups); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// acceptedMessage is a new task's first log entry.
func acceptedMessage(ev EventTasks, t NewTask, state contracts.State) string {
	m := fmt.Sprintf("accepted from event %s of %s for %s, priority %d", ev.Event.ID, ev.Event.Source, t.Function, t.Priority)
	if state == contracts.StateScheduled {
		m += ", scheduled for " + ev.DueAt.UTC().Format(time.RFC3339Nano)
	}
	if ev.ExpiresAt != nil {
		m += ", expires at " + ev.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// fillDuplicates reads the function and state of tasks found by dedup.
func (l *Ledger) fillDuplicates(ctx context.Context, events []EventTasks, out []Created, idx []int) error {
	type ref struct{ i, j int }
	var refs []ref
	var cmds []*redis.SliceCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range idx {
			for j, t := range out[i].Tasks {
				refs = append(refs, ref{i, j})
				cmds = append(cmds, p.HMGet(ctx, l.taskKey(events[i].Tenant, t.ID), fFunction, fState))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading duplicate tasks: %w", err)
	}
	for k, c := range cmds {
		v := c.Val()
		t := &out[refs[k].i].Tasks[refs[k].j]
		if s, ok := v[0].(string); ok {
			t.Function = s
		}
		if s, ok := v[1].(string); ok {
			t.State = contracts.State(s)
		}
	}
	return nil
}

// Lease identifies one running attempt.
type Lease struct {
	Tenant, ID, Function, Owner string
	Attempt                     int
	// Redrives is the record's redrive count when the attempt started (see
	// Fence).
	Redrives int
}

// Fence names one attempt of a task for the calls that end or extend it
// (Finish, Retry, Renew): they apply only while the task is running that
// attempt. The attempt number alone does not name it: a redrive gives the
// task a fresh attempt budget, so its numbers start again from 1, and a
// worker still holding an attempt from before the task was dead-lettered
// would hold the number of the new run's attempt. Redrives, the record's
// redrive count (field "redrives", raised by each redrive and never
// lowered; absent, so 0, on a record never redriven, as on every record
// written before the fence had it), tells the runs apart.
type Fence struct {
	Attempt, Redrives int
}

// Renew extends running attempts' leases to now+lease in one round trip. It
// returns the leases that were lost (the task moved on without this owner).
func (l *Ledger) Renew(ctx context.Context, lease time.Duration, leases ...Lease) ([]Lease, error) {
	until := us(l.cfg.Now().Add(lease))
	if l.Partitioned() {
		return l.renewSplit(ctx, until, leases)
	}
	calls := make([]*scriptCall, len(leases))
	for i, ls := range leases {
		calls[i] = call(renewScript, []string{l.taskKey(ls.Tenant, ls.ID), l.DelayKey(ls.Tenant), l.inflightKey(ls.Function), l.tenantInflightKey(ls.Tenant)},
			ls.Attempt, ls.Owner, until, Member(ls.Tenant, ls.ID), ls.ID, flag(l.quota(ls.Tenant) > 0), ls.Redrives)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return nil, fmt.Errorf("renewing leases: %w", err)
	}
	var lost []Lease
	for i, c := range calls {
		if n, _ := c.cmd.Int(); n == 0 {
			lost = append(lost, leases[i])
		}
	}
	return lost, nil
}

// Outcome is how an attempt ended a task.
type Outcome struct {
	State  contracts.State
	Error  string
	Result []byte
	// Reason says why a dead or failed task ended unsuccessfully.
	Reason contracts.Reason
	// Log is appended to the task's log (the attempt's lines and its end)
	// before its terminal entry, in the same script call.
	Log []contracts.LogEntry
}

// Finish records the terminal outcome of a running attempt and appends the
// record to the results outbox, atomically. It returns false when the
// attempt no longer holds the task (fenced off). Dead tasks are kept for
// DeadRetention, others for Retention.
func (l *Ledger) Finish(ctx context.Context, tenant, id, function string, at Fence, o Outcome) (bool, error) {
	if !o.State.Terminal() {
		return false, fmt.Errorf("finishing task %s: state %s is not terminal", id, o.State)
	}
	retention := l.cfg.Retention
	if o.State == contracts.StateDead {
		retention = l.cfg.DeadRetention
	}
	if l.Partitioned() {
		return l.finishSplit(ctx, tenant, id, function, at, o, retention)
	}
	args := []any{at.Attempt, string(o.State), us(l.cfg.Now()), o.Error, o.Result, l.statePrefix(tenant), id,
		retention.Milliseconds(), OutboxMaxLen, Member(tenant, id), string(o.Reason),
		l.quota(tenant), l.WakeChannel(), function, l.limited(function), tenant, at.Redrives}
	n, err := l.batch.eval(ctx, finishScript,
		[]string{l.taskKey(tenant, id), l.OutboxStream(tenant), l.DelayKey(tenant), l.inflightKey(function),
			l.tenantInflightKey(tenant), l.parkedKey(tenant), l.fnStateKey(function)},
		append(args, l.encodeLogs(o.Log)...)...).Int()
	if err != nil {
		return false, fmt.Errorf("finishing task %s: %w", id, err)
	}
	return n == 1, nil
}

// ErrNotCancellable is returned by Cancel for a task already ended; the
// error says how.
var ErrNotCancellable = errors.New("task cannot be cancelled")

// Cancel ends a task that has not ended (queued, scheduled, retrying,
// paused or running) as cancelled, with its result event. A running
// attempt is aborted: its dispatcher is told on the abort channel (and
// finds the lease lost at its next renewal at the latest), and its outcome
// is refused.
func (l *Ledger) Cancel(ctx context.Context, tenant, id string) (*contracts.Task, error) {
	for range 3 {
		f, err := l.rdb.HMGet(ctx, l.taskKey(tenant, id), fFunction, fState).Result()
		if err != nil {
			return nil, fmt.Errorf("cancelling task %s: %w", id, err)
		}
		fn, _ := f[0].(string)
		st, _ := f[1].(string)
		if st == "" {
			return nil, ErrNotFound
		}
		// Only in the state read: the function named the keys.
		c := l.cancelCall(tenant, id, fn, contracts.State(st))
		if err := l.batch.exec(ctx, c); err != nil {
			return nil, fmt.Errorf("cancelling task %s: %w", id, err)
		}
		res, err := c.cmd.StringSlice()
		if err != nil {
			return nil, fmt.Errorf("cancelling task %s: %w", id, err)
		}
		if l.Partitioned() {
			l.cancelled(ctx, tenant, []string{id}, []string{fn}, []*scriptCall{c})
		}
		switch {
		case res[0] == "ok":
			return l.Get(ctx, tenant, id)
		case res[1] == "":
			return nil, ErrNotFound
		case contracts.State(res[1]).Terminal():
			return nil, fmt.Errorf("%w: it is %s", ErrNotCancellable, res[1])
		}
		// It moved on meanwhile (started, retried): read it again.
	}
	return nil, fmt.Errorf("cancelling task %s: its state keeps changing", id)
}

// ExpireDue ends as expired up to max waiting tasks whose ttl passed,
// wherever they wait (a lane, the delay set), and returns how many it
// ended. Tasks that started meanwhile are left alone. Every partition's
// expiry set is read in one round trip; at most max entries are handled.
func (l *Ledger) ExpireDue(ctx context.Context, max int) (int, error) {
	now := l.cfg.Now()
	keys := l.ExpiryKeys()
	reads := make([]*redis.StringSliceCmd, len(keys))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, key := range keys {
			reads[k] = p.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(us(now), 10), Count: int64(max)})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading expired tasks: %w", err)
	}
	ended, seen := 0, 0
	for k, r := range reads {
		for _, m := range r.Val() {
			if seen++; seen > max {
				return ended, nil
			}
			tenant, id, ok := ParseMember(m)
			if !ok {
				l.rdb.ZRem(ctx, keys[k], m)
				continue
			}
			res, err := l.run(ctx, endScript, []string{l.taskKey(tenant, id), l.OutboxStream(tenant), l.DelayKey(tenant), l.ExpiryKey(tenant)},
				string(contracts.StateExpired), us(now), "expired: its ttl passed before it started", l.statePrefix(tenant), id,
				l.cfg.Retention.Milliseconds(), OutboxMaxLen, m).StringSlice()
			if err != nil {
				return ended, fmt.Errorf("expiring task %s: %w", id, err)
			}
			if res[0] == "ok" {
				ended++
			}
		}
	}
	return ended, nil
}

// Retry records a failed attempt and schedules the next one at due. It
// returns false when the attempt no longer holds the task.
//
// refund gives the attempt back (a throttled answer within the function's
// allowance): the next attempt has the same number. log is appended to the
// task's log in the same script call (the attempt's lines, its end, the
// retry).
func (l *Ledger) Retry(ctx context.Context, tenant, id, function string, at Fence, due time.Time, errMsg string, refund bool, log ...contracts.LogEntry) (bool, error) {
	flag := "0"
	if refund {
		flag = "1"
	}
	if l.Partitioned() {
		return l.retrySplit(ctx, tenant, id, function, at, due, errMsg, refund, l.encodeLogs(log))
	}
	args := []any{at.Attempt, us(due), errMsg, l.statePrefix(tenant), id, Member(tenant, id), flag,
		l.quota(tenant), l.WakeChannel(), function, l.limited(function), tenant, us(l.cfg.Now()), at.Redrives}
	n, err := l.batch.eval(ctx, retryScript,
		[]string{l.taskKey(tenant, id), l.DelayKey(tenant), l.inflightKey(function),
			l.tenantInflightKey(tenant), l.parkedKey(tenant), l.fnStateKey(function)},
		append(args, l.encodeLogs(log)...)...).Int()
	if err != nil {
		return false, fmt.Errorf("scheduling retry of task %s: %w", id, err)
	}
	return n == 1, nil
}

// Get returns one of tenant's tasks.
func (l *Ledger) Get(ctx context.Context, tenant, id string) (*contracts.Task, error) {
	h, err := l.rdb.HGetAll(ctx, l.taskKey(tenant, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading task %s: %w", id, err)
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	t := RecordFromFields(h)
	return &t, nil
}

// Message returns the stored lane message of a task.
func (l *Ledger) Message(ctx context.Context, tenant, id string) ([]byte, error) {
	b, err := l.rdb.HGet(ctx, l.taskKey(tenant, id), fMessage).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading message of task %s: %w", id, err)
	}
	return b, nil
}

// LoadScripts loads every ledger script into Redis.
func (l *Ledger) LoadScripts(ctx context.Context) error {
	for _, s := range []*redis.Script{createScript, claimScript, endScript, redriveScript, purgeScript, forgetEventScript, renewScript, finishScript, retryScript, dueScript, forgetScript, dropGuardsScript, abandonScript, admitScript, takeScript, unparkScript, adaptiveScript, backlogScript, appendLogScript,
		pageScript, pauseStepScript, resumeStepScript, resumeBeginScript, cancelScript, pruneScript, listPageScript} {
		if err := s.Load(ctx, l.rdb).Err(); err != nil {
			return fmt.Errorf("loading ledger scripts: %w", err)
		}
	}
	if err := l.loadSplitScripts(ctx); err != nil {
		return err
	}
	if !l.Partitioned() {
		return nil
	}
	for _, s := range partitionedScripts {
		if err := l.script(s).Load(ctx, l.rdb).Err(); err != nil {
			return fmt.Errorf("loading ledger scripts: %w", err)
		}
	}
	return nil
}

// partitionedScripts are the scripts of the partitioned layout only.
var partitionedScripts = []splitScript{takeFScript, startTScript, requeueFScript, reparkTScript, admitTScript, admitFScript,
	backlogFScript, sweepFScript}

// flag is a script's boolean argument: "1" or "0".
func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Fence is the fence of the started attempt.
func (s Started) Fence() Fence { return Fence{Attempt: s.Attempt, Redrives: s.Redrives} }

// Fence is the fence of the claimed attempt.
func (c Claim) Fence() Fence { return Fence{Attempt: c.Attempt, Redrives: c.Redrives} }
