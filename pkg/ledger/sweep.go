package ledger

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
	"github.com/tasklane/tasklane/contracts"
)

// The reservation sweep (decision 0017, "Ownership of the partitioned
// sets"): in the partitioned layout nothing on the dispatch path trims a
// function's in-flight set, and a member past its score is a reservation
// whose start never came (a take.f whose dispatcher died, a refused ref
// whose requeue.f was lost) or an attempt whose function-side release or
// renewal was lost. The scheduler sweeps them: each is looked up in its
// task's partition and repaired in the function's slot.

// sweepBatch bounds the members one sweep takes per function.
const sweepBatch = 100

// sweepFScript repairs members of a function's in-flight set that still
// have the score the caller read: "ready" puts the task back in its ready
// queue (luaReady) and drops the member, "move" moves the member (and its
// inflight:nh twin) to the attempt's lease end, "drop" drops it; and it
// drops members of inflight:nh past their score that have no twin.
// KEYS: 1 function state, 2 function in-flight set, 3 inflight:nh
// ARGV: 1 function key prefix, 2 wake channel, 3 function, 4 now µs, then
// per member: action, tenant, id, score read, band or lease end µs, queue
// score
// Returns how many members it repaired.
var sweepFScript = newSplitScript(luaReady + `
local S, I, NH = KEYS[1], KEYS[2], KEYS[3]
local n = 0
-- inflight:nh members past their score without their in-flight twin (a
-- release that did not reach inflight:nh) are dropped.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', NH, '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)) do
  if not redis.call('ZSCORE', I, m) then
    redis.call('ZREM', NH, m)
    n = n + 1
  end
end
for i = 5, #ARGV, 6 do
  local act, tenant, id, s = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local member = tenant .. '/' .. id
  if act == 'move' then
    local cur = redis.call('ZSCORE', I, member)
    if cur and tonumber(cur) == tonumber(s) then
      redis.call('ZADD', I, 'XX', ARGV[i+4], member)
      redis.call('ZADD', NH, 'XX', ARGV[i+4], member)
      n = n + 1
    end
  elseif unreserve(I, NH, member, s) then
    if act == 'ready' then ready(S, ARGV[1], ARGV[i+4], tenant, id, ARGV[i+5], '0', ARGV[2], ARGV[3]) end
    n = n + 1
  end
end
return n
`)

// SweepReservations repairs the members of each function's in-flight set
// past their score (up to sweepBatch per function): a task still queued
// (its start never came) goes back into its ready queue, a running one
// whose lease is later has its score moved to the lease end, and any
// other (ended, missing, waiting for a retry, running with its lease
// past: its lease-takeover entry handles it) is dropped. Each repair
// applies only if the member still has the score read, so a take or a
// renewal meanwhile wins. It returns how many it repaired; the legacy
// layout has nothing to sweep (take trims expired members).
func (l *Ledger) SweepReservations(ctx context.Context, functions []string) (int, error) {
	if !l.Partitioned() || len(functions) == 0 {
		return 0, nil
	}
	now := l.cfg.Now()
	past := make([]*redis.ZSliceCmd, len(functions))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, fn := range functions {
			past[i] = p.ZRangeByScoreWithScores(ctx, l.inflightKey(fn),
				&redis.ZRangeBy{Min: "-inf", Max: "(" + strconv.FormatInt(us(now), 10), Count: sweepBatch})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("finding past reservations: %w", err)
	}
	type member struct {
		fn, tenant, id string
		score          float64
		rec            *redis.SliceCmd
	}
	var ms []*member
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, fn := range functions {
			for _, z := range past[i].Val() {
				tenant, id, ok := ParseMember(fmt.Sprint(z.Member))
				if !ok {
					continue
				}
				m := &member{fn: fn, tenant: tenant, id: id, score: z.Score}
				m.rec = p.HMGet(ctx, l.taskKey(tenant, id), fState, fLease, fPriority)
				ms = append(ms, m)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading tasks of past reservations: %w", err)
	}
	args := map[string][]any{}
	for _, m := range ms {
		v := m.rec.Val()
		state, _ := v[0].(string)
		ls, _ := v[1].(string)
		ps, _ := v[2].(string)
		lease, _ := strconv.ParseInt(ls, 10, 64)
		prio, _ := strconv.Atoi(ps)
		score := strconv.FormatFloat(m.score, 'f', 0, 64)
		var op []any
		switch {
		case state == string(contracts.StateQueued):
			op = []any{"ready", m.tenant, m.id, score, string(BandOf(prio)), queueScore(now, prio)}
		case state == string(contracts.StateRunning) && lease > us(now):
			op = []any{"move", m.tenant, m.id, score, lease, 0}
		default:
			op = []any{"drop", m.tenant, m.id, score, "", 0}
		}
		args[m.fn] = append(args[m.fn], op...)
	}
	calls := make([]*scriptCall, len(functions))
	for i, fn := range functions {
		calls[i] = call(l.script(sweepFScript), []string{l.fnStateKey(fn), l.inflightKey(fn), l.inflightNHKey(fn)},
			append([]any{l.fnPrefix(fn), l.WakeChannel(), fn, us(now)}, args[fn]...)...)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return 0, fmt.Errorf("sweeping reservations: %w", err)
	}
	n := 0
	for _, c := range calls {
		k, _ := c.cmd.Int()
		n += k
	}
	return n, nil
}
