package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tasklane/tasklane/contracts"
)

// The delay set: publish guards of new tasks, retry backoffs, delayed
// tasks, and leases (a running task's entry is its lease end). The
// scheduler takes what is due and admits it into its ready queue.

// Guard is a publish guard: the delay-set entry written for a new task so
// that the scheduler publishes it if its publish is never confirmed.
type Guard struct {
	Tenant, ID string
	// Score is the GuardScore that Create returned.
	Score int64
	// Lane, when set, is the lane the task was published to: the task's
	// log records it (at At), in the same round trip.
	Lane string
	At   time.Time
}

// guardsPerCall bounds the guards dropped by one script call, so that no
// single call holds Redis for long.
const guardsPerCall = 512

// Enqueued drops the publish guards of tasks the broker confirmed. A guard
// that was replaced meanwhile (a fast dispatcher already scheduled a retry)
// is left alone.
func (l *Ledger) Enqueued(ctx context.Context, tenant string, guardScore int64, ids ...string) error {
	guards := make([]Guard, len(ids))
	for i, id := range ids {
		guards[i] = Guard{Tenant: tenant, ID: id, Score: guardScore}
	}
	return l.DropGuards(ctx, guards)
}

// DropGuards is Enqueued for guards of any tenants: one script call per
// guardsPerCall guards, in one round trip.
func (l *Ledger) DropGuards(ctx context.Context, guards []Guard) error {
	var calls []*scriptCall
	for chunk := range slices.Chunk(guards, guardsPerCall) {
		args := make([]any, 0, 2*len(chunk))
		for _, g := range chunk {
			args = append(args, Member(g.Tenant, g.ID), g.Score)
		}
		calls = append(calls, call(forgetScript, []string{l.DelayKey()}, args...))
	}
	for _, g := range guards {
		if g.Lane != "" {
			calls = append(calls, call(appendLogScript, []string{l.taskKey(g.Tenant, g.ID), l.logKey(g.Tenant, g.ID)},
				l.encodeLog(contracts.LogEntry{At: g.At, Kind: contracts.LogPublished, Message: "published to lane " + g.Lane})))
		}
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return fmt.Errorf("dropping publish guards: %w", err)
	}
	return nil
}

// Defer asks the scheduler to put the task back on a lane at due, without
// changing its state: used for a delivery that found the task busy.
func (l *Ledger) Defer(ctx context.Context, tenant, id string, due time.Time) error {
	if err := l.rdb.ZAdd(ctx, l.DelayKey(), redis.Z{Score: float64(us(due)), Member: Member(tenant, id)}).Err(); err != nil {
		return fmt.Errorf("deferring task %s: %w", id, err)
	}
	return nil
}

// Due is a task the scheduler must put back on a lane.
type Due struct {
	Tenant, ID string
	// Score is the re-guard score written by TakeDue; pass it to Forget.
	Score int64
	// State is the task's state; Message the stored lane message (nil when
	// the record is gone).
	State   contracts.State
	Message []byte
	// LeaseUntil is set for a running task.
	LeaseUntil time.Time
	// Function and Priority place the task in a ready queue.
	Function string
	Priority int
}

// TakeDue takes up to max tasks whose delay passed. Each stays in the delay
// set with its score moved regard into the future, so a scheduler that dies
// before admitting it gives the task back instead of losing it.
func (l *Ledger) TakeDue(ctx context.Context, max int, regard time.Duration) ([]Due, error) {
	now := l.cfg.Now()
	score := us(now.Add(regard))
	members, err := l.run(ctx, dueScript, []string{l.DelayKey()}, us(now), max, score).StringSlice()
	if err != nil || len(members) == 0 {
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("taking due tasks: %w", err)
		}
		return nil, nil
	}
	out := make([]Due, 0, len(members))
	cmds := make([]*redis.SliceCmd, 0, len(members))
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range members {
			tenant, id, ok := ParseMember(m)
			if !ok {
				p.ZRem(ctx, l.DelayKey(), m)
				continue
			}
			out = append(out, Due{Tenant: tenant, ID: id, Score: score})
			cmds = append(cmds, p.HMGet(ctx, l.taskKey(tenant, id), fState, fMessage, fLease, fFunction, fPriority))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading due tasks: %w", err)
	}
	for i, c := range cmds {
		v := c.Val()
		if s, ok := v[0].(string); ok {
			out[i].State = contracts.State(s)
		}
		if s, ok := v[1].(string); ok {
			out[i].Message = []byte(s)
		}
		if s, ok := v[2].(string); ok {
			n, _ := strconv.ParseInt(s, 10, 64)
			out[i].LeaseUntil = time.UnixMicro(n)
		}
		if s, ok := v[3].(string); ok {
			out[i].Function = s
		}
		if s, ok := v[4].(string); ok {
			out[i].Priority, _ = strconv.Atoi(s)
		}
	}
	return out, nil
}

// Forget drops a due task's delay entry (its record is gone or terminal).
func (l *Ledger) Forget(ctx context.Context, d Due) error {
	if err := l.run(ctx, forgetScript, []string{l.DelayKey()}, Member(d.Tenant, d.ID), d.Score).Err(); err != nil {
		return fmt.Errorf("dropping delay entry of %s: %w", d.ID, err)
	}
	return nil
}
