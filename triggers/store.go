package triggers

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// HeartbeatEvery is how often a running trigger refreshes its state in the
// store; a state older than StaleAfter means no process runs the trigger.
const (
	HeartbeatEvery = 5 * time.Second
	StaleAfter     = 3 * HeartbeatEvery
)

// Store keeps triggers' cluster-visible state, locks, cursors and
// checkpoints in Redis under "<prefix>:trigger:{<name>}:".
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewStore returns a Store over rdb; prefix is the ledger's key prefix.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix}
}

// Redis returns the store's client.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Key names one of trigger name's keys, e.g. Key("nightly", "lock").
func (s *Store) Key(name, part string) string {
	return s.prefix + ":trigger:{" + name + "}:" + part
}

// Record is a trigger's state as stored.
type Record struct {
	// State is what the last heartbeat said: running or failing.
	State string
	// Owner is the process that wrote the last heartbeat.
	Owner string
	// Heartbeat is when it was written.
	Heartbeat time.Time
	// LastFire, LastEventID: the last submission.
	LastFire    time.Time
	LastEventID string
	// NextFire is the next scheduled fire or poll, when the trigger has one.
	NextFire time.Time
	// Fires counts the events submitted, by every process.
	Fires int64
	// LastError and LastErrorAt: the last failure, cleared by a success.
	LastError   string
	LastErrorAt time.Time
}

// Fresh reports whether a process ran the trigger recently.
func (r Record) Fresh(now time.Time) bool {
	return !r.Heartbeat.IsZero() && now.Sub(r.Heartbeat) < StaleAfter
}

const (
	fState       = "state"
	fOwner       = "owner"
	fHeartbeat   = "heartbeat"
	fLastFire    = "last_fire"
	fLastEventID = "last_event_id"
	fNextFire    = "next_fire"
	fFires       = "fires"
	fLastError   = "last_error"
	fLastErrorAt = "last_error_at"
)

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func parseMS(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

// Heartbeat records that owner runs trigger name in state, with its next
// fire (zero: none).
func (s *Store) Heartbeat(ctx context.Context, name, owner, state string, next, now time.Time) error {
	err := s.rdb.HSet(ctx, s.Key(name, "state"), fState, state, fOwner, owner, fHeartbeat, ms(now), fNextFire, ms(next)).Err()
	if err != nil {
		return fmt.Errorf("recording heartbeat of trigger %s: %w", name, err)
	}
	return nil
}

// Fired records n events submitted at at, the last with id lastID.
func (s *Store) Fired(ctx context.Context, name, lastID string, n int, at time.Time) error {
	key := s.Key(name, "state")
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, fLastFire, ms(at), fLastEventID, lastID)
		p.HIncrBy(ctx, key, fFires, int64(n))
		p.HDel(ctx, key, fLastError, fLastErrorAt)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording fire of trigger %s: %w", name, err)
	}
	return nil
}

// Failed records a failure of trigger name.
func (s *Store) Failed(ctx context.Context, name string, cause error, at time.Time) error {
	err := s.rdb.HSet(ctx, s.Key(name, "state"), fLastError, cause.Error(), fLastErrorAt, ms(at)).Err()
	if err != nil {
		return fmt.Errorf("recording failure of trigger %s: %w", name, err)
	}
	return nil
}

// Succeeded clears the last failure of trigger name.
func (s *Store) Succeeded(ctx context.Context, name string) error {
	if err := s.rdb.HDel(ctx, s.Key(name, "state"), fLastError, fLastErrorAt).Err(); err != nil {
		return fmt.Errorf("clearing the failure of trigger %s: %w", name, err)
	}
	return nil
}

// Read returns the records of the named triggers; a trigger never run has
// a zero Record.
func (s *Store) Read(ctx context.Context, names ...string) (map[string]Record, error) {
	cmds := make([]*redis.MapStringStringCmd, len(names))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = p.HGetAll(ctx, s.Key(n, "state"))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading trigger state: %w", err)
	}
	out := make(map[string]Record, len(names))
	for i, n := range names {
		h := cmds[i].Val()
		fires, _ := strconv.ParseInt(h[fFires], 10, 64)
		out[n] = Record{
			State: h[fState], Owner: h[fOwner], Heartbeat: parseMS(h[fHeartbeat]),
			LastFire: parseMS(h[fLastFire]), LastEventID: h[fLastEventID], NextFire: parseMS(h[fNextFire]),
			Fires: fires, LastError: h[fLastError], LastErrorAt: parseMS(h[fLastErrorAt]),
		}
	}
	return out, nil
}

// Reporter writes a trigger's progress to both its in-process Tracker and
// the Store, logging (not failing on) store errors: state is for display.
type Reporter struct {
	*Tracker
	env  Env
	name string
}

// NewReporter returns a Reporter for trigger name of kind.
func NewReporter(env Env, name, kind string) *Reporter {
	return &Reporter{Tracker: NewTracker(name, kind), env: env, name: name}
}

// Fired records n events submitted now, the last with id lastID.
func (r *Reporter) Fired(ctx context.Context, lastID string, n int) {
	now := r.env.Now()
	r.Tracker.Fired(now, lastID, n)
	if err := r.env.Store.Fired(context.WithoutCancel(ctx), r.name, lastID, n, now); err != nil {
		r.env.Logger.WarnContext(ctx, "recording trigger state", "error", err)
	}
}

// Failed records and logs err.
func (r *Reporter) Failed(ctx context.Context, msg string, err error) {
	now := r.env.Now()
	r.env.Logger.WarnContext(ctx, msg, "error", err)
	r.Tracker.Failed(now, err)
	if serr := r.env.Store.Failed(context.WithoutCancel(ctx), r.name, err, now); serr != nil {
		r.env.Logger.WarnContext(ctx, "recording trigger state", "error", serr)
	}
}

// Succeeded records that an attempt begun when Failures was mark succeeded
// (see Tracker.Succeeded), clearing the last error in the store too.
func (r *Reporter) Succeeded(ctx context.Context, mark uint64) {
	if !r.Tracker.Succeeded(mark) {
		return
	}
	if err := r.env.Store.Succeeded(context.WithoutCancel(ctx), r.name); err != nil {
		r.env.Logger.WarnContext(ctx, "recording trigger state", "error", err)
	}
}

// Heartbeat writes the current state to the store.
func (r *Reporter) Heartbeat(ctx context.Context) {
	st := r.Status()
	if err := r.env.Store.Heartbeat(ctx, r.name, r.env.Owner, st.State, st.NextFire, r.env.Now()); err != nil && ctx.Err() == nil {
		r.env.Logger.WarnContext(ctx, "recording trigger heartbeat", "error", err)
	}
}

// Background is the life of a trigger's background work: one goroutine
// from Go until Stop. Triggers embed it.
type Background struct {
	// What names the trigger in Stop's error, e.g. "cron trigger nightly".
	What string

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Go runs work in a goroutine, on a context that ctx's cancellation does
// not end (Stop does).
func (b *Background) Go(ctx context.Context, work func(context.Context)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	b.done = done
	go func() {
		defer close(done)
		work(ctx)
	}()
}

// Stop ends the work's context and waits for it to return; ctx bounds the
// wait. After Stop, Stopped is true.
func (b *Background) Stop(ctx context.Context) error {
	b.mu.Lock()
	cancel, done := b.cancel, b.done
	b.cancel = nil
	b.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping %s: %w", b.What, ctx.Err())
	}
}

// Stopped reports whether the work is not running (never started, or
// stopped).
func (b *Background) Stopped() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cancel == nil
}

// HookLife is the life of a trigger that serves requests: running, with a
// heartbeat every HeartbeatEvery (every replica serving it keeps it
// fresh), from Start until Stop; requests after Stop are answered 503
// (Stopped). Requests in flight finish: the HTTP server drains them. Hooks
// embed it and set Rep and What.
type HookLife struct {
	Background
	// Rep reports the hook's state.
	Rep *Reporter
}

// Start marks the trigger running and keeps its heartbeat until Stop.
func (h *HookLife) Start(ctx context.Context) error {
	h.Rep.SetState(StateRunning)
	h.Go(ctx, func(ctx context.Context) {
		defer h.Rep.SetState(StateStopped)
		t := time.NewTicker(HeartbeatEvery)
		defer t.Stop()
		for {
			h.Rep.Heartbeat(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}
