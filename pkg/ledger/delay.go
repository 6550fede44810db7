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
// partition and guardsPerCall guards, in one round trip. A guard that
// names its lane also appends the task's "published" log entry in the
// same call (the task and its partition's delay set share a slot in the
// partitioned layout; in the legacy one, one Redis serves every key).
func (l *Ledger) DropGuards(ctx context.Context, guards []Guard) error {
	var calls []*scriptCall
	byPart := map[int][]any{}
	var parts []int
	for _, g := range guards {
		k := l.partition(g.Tenant)
		if _, ok := byPart[k]; !ok {
			parts = append(parts, k)
		}
		task, lk, entry := "", "", ""
		if g.Lane != "" {
			task, lk = l.taskKey(g.Tenant, g.ID), l.logKey(g.Tenant, g.ID)
			entry = l.encodeLog(contracts.LogEntry{At: g.At, Kind: contracts.LogPublished, Message: "published to lane " + g.Lane})
		}
		byPart[k] = append(byPart[k], Member(g.Tenant, g.ID), g.Score, task, lk, entry)
	}
	for _, k := range parts {
		for chunk := range slices.Chunk(byPart[k], dropGuardArgs*guardsPerCall) {
			calls = append(calls, call(dropGuardsScript, []string{l.delayKeyAt(k)}, chunk...))
		}
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return fmt.Errorf("dropping publish guards: %w", err)
	}
	return nil
}

// dropGuardArgs is the number of dropGuardsScript arguments per guard.
const dropGuardArgs = 5

// dropGuards drops publish guards that still have the score the caller
// set (as forget) and appends each confirmed task's "published" log entry
// (as AppendLog: only while the record exists, the log expiring with it).
// One call per guard batch, where a separate append per task was one more
// script call per task.
// KEYS: 1 delay. ARGV: per guard member, score, task hash ("": no entry),
// log key, entry. Returns how many guards it dropped.
var dropGuardsScript = redis.NewScript(luaLog + `
local n = 0
for i = 1, #ARGV, 5 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i+1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
  local h = ARGV[i+2]
  if h ~= '' and redis.call('EXISTS', h) == 1 then
    logpush(h, ARGV[i+3], {ARGV[i+4]})
    local ttl = redis.call('PTTL', h)
    if ttl > 0 then redis.call('PEXPIRE', ARGV[i+3], ttl) end
  end
end
return n
`)

// Defer asks the scheduler to put the task back on a lane at due, without
// changing its state: used for a delivery that found the task busy.
func (l *Ledger) Defer(ctx context.Context, tenant, id string, due time.Time) error {
	if err := l.rdb.ZAdd(ctx, l.DelayKey(tenant), redis.Z{Score: float64(us(due)), Member: Member(tenant, id)}).Err(); err != nil {
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

// TakeDue takes up to max tasks whose delay passed from each partition's
// delay set. Each stays in the delay set with its score moved regard into
// the future, so a scheduler that dies before admitting it gives the task
// back instead of losing it. With partitions, one round trip finds the
// partitions with something due (a ZRANGEBYSCORE each: little work for an
// empty one) and one more takes from those.
func (l *Ledger) TakeDue(ctx context.Context, max int, regard time.Duration) ([]Due, error) {
	now := l.cfg.Now()
	score := us(now.Add(regard))
	members, err := l.takeDue(ctx, us(now), max, score)
	if err != nil || len(members) == 0 {
		return nil, err
	}
	out := make([]Due, 0, len(members))
	cmds := make([]*redis.SliceCmd, 0, len(members))
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range members {
			tenant, id, ok := ParseMember(m.member)
			if !ok {
				p.ZRem(ctx, m.key, m.member)
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
	if err := l.run(ctx, forgetScript, []string{l.DelayKey(d.Tenant)}, Member(d.Tenant, d.ID), d.Score).Err(); err != nil {
		return fmt.Errorf("dropping delay entry of %s: %w", d.ID, err)
	}
	return nil
}

// dueMember is a member TakeDue took and the delay set it is in.
type dueMember struct{ key, member string }

// takeDue runs the due script on every partition's delay set that has a
// member due at now (all of them, without asking first, in the legacy
// layout's one set).
func (l *Ledger) takeDue(ctx context.Context, now int64, max int, score int64) ([]dueMember, error) {
	keys := l.DelayKeys()
	if l.Partitioned() {
		due, err := l.dueKeys(ctx, keys, now)
		if err != nil {
			return nil, err
		}
		keys = due
	}
	calls := make([]*scriptCall, len(keys))
	for i, key := range keys {
		calls[i] = call(dueScript, []string{key}, now, max, score)
	}
	if len(calls) == 0 {
		return nil, nil
	}
	if err := l.batch.exec(ctx, calls...); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("taking due tasks: %w", err)
	}
	var out []dueMember
	for i, c := range calls {
		ms, err := c.cmd.StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("taking due tasks: %w", err)
		}
		for _, m := range ms {
			out = append(out, dueMember{key: keys[i], member: m})
		}
	}
	return out, nil
}

// dueKeys returns those of keys (delay sets) with a member due at now.
func (l *Ledger) dueKeys(ctx context.Context, keys []string, now int64) ([]string, error) {
	cmds := make([]*redis.StringSliceCmd, len(keys))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, key := range keys {
			cmds[i] = p.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now, 10), Count: 1})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("finding due tasks: %w", err)
	}
	var due []string
	for i, c := range cmds {
		if len(c.Val()) > 0 {
			due = append(due, keys[i])
		}
	}
	return due, nil
}
