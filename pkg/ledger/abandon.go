package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// ErrNotAbandoned is returned by Abandon for a task it left alone: one that
// ended meanwhile, is paused, or runs under a live lease.
var ErrNotAbandoned = errors.New("task not abandoned")

// Abandon ends a task that cannot be put back on a lane, ever (the broker
// refuses its message for its size), with state (dead, or failed for a
// function without dead-lettering), reason and errMsg, and its result event.
// It applies to a task waiting in the delay set (queued, scheduled,
// retrying) or running under a lease that ended (its dispatcher died);
// otherwise it returns ErrNotAbandoned and changes nothing.
func (l *Ledger) Abandon(ctx context.Context, tenant, id string, state contracts.State, reason contracts.Reason, errMsg string) error {
	if state != contracts.StateDead && state != contracts.StateFailed {
		return fmt.Errorf("abandoning task %s: state %s is neither dead nor failed", id, state)
	}
	retention := l.cfg.Retention
	if state == contracts.StateDead {
		retention = l.cfg.DeadRetention
	}
	res, err := l.run(ctx, abandonScript, []string{l.taskKey(tenant, id), l.OutboxStream(tenant), l.DelayKey(tenant), l.ExpiryKey(tenant)},
		string(state), us(l.cfg.Now()), errMsg, l.statePrefix(tenant), id,
		retention.Milliseconds(), OutboxMaxLen, Member(tenant, id), string(reason)).StringSlice()
	if err != nil {
		return fmt.Errorf("abandoning task %s: %w", id, err)
	}
	switch {
	case res[0] == "ok":
		return nil
	case res[1] == "":
		return ErrNotFound
	}
	return fmt.Errorf("%w: %s is %s", ErrNotAbandoned, id, res[1])
}

// abandon ends a task that is waiting, or running under an ended lease, as
// dead or failed with a reason, and drops its delay and expiry entries.
// KEYS: 1 task hash, 2 outbox, 3 delay, 4 expiry set
// ARGV: 1 state, 2 now µs, 3 error, 4 state-index prefix, 5 id, 6 retention
// ms, 7 outbox max length, 8 delay member, 9 reason
// Returns {"ok", to} or {"no", current state} ("" when missing).
var abandonScript = redis.NewScript(luaTerminate + `
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return {'no', ''} end
if st == 'running' then
  local lease = tonumber(redis.call('HGET', h, 'lease') or '0')
  if lease > tonumber(ARGV[2]) then return {'no', st} end
elseif st ~= 'queued' and st ~= 'scheduled' and st ~= 'retrying' then
  return {'no', st}
end
redis.call('ZREM', KEYS[3], ARGV[8])
redis.call('ZREM', KEYS[4], ARGV[8])
if ARGV[9] ~= '' then redis.call('HSET', h, 'reason', ARGV[9]) end
terminate(h, KEYS[2], ARGV[4], ARGV[5], st, ARGV[1], ARGV[2], ARGV[3], ARGV[6], ARGV[7])
return {'ok', ARGV[1]}
`)
