package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// FunctionBacklog is one function's ready tasks by tenant, and how long
// its oldest ready task has waited.
type FunctionBacklog struct {
	Function string
	// Tenants maps each tenant asked about to its ready tasks (all bands).
	Tenants map[string]int64
	// Oldest is when the oldest task first in line in one of the
	// function's queues became ready; zero when nothing is ready.
	Oldest time.Time
}

// backlogScript reads one function's ready queues: for each tenant its
// ready entries (ZCARD of the three bands) and, over every queue, the
// earliest ready time of the first entry in line whose task is queued
// (among the first five: entries of tasks cancelled while ready stay until
// a take drops them), computed as score + priority x 60 s, the score being
// ready µs - priority x 60 s.
// ARGV: 1 function key prefix, 2 ledger prefix, 3 partitions
// (luaPartitions), then tenants.
// Returns {oldest ready µs or 0, count of tenant 1, count of tenant 2, ...}.
var backlogScript = redis.NewScript(luaTenantPrefix + `
local FP, P, parts = ARGV[1], ARGV[2], tonumber(ARGV[3])
local bands = {'high', 'normal', 'low'}
local out = {0}
local oldest = nil
for i = 4, #ARGV do
  local tenant = ARGV[i]
  local n = 0
  for _, b in ipairs(bands) do
    local q = FP .. 'ready:' .. b .. ':' .. tenant
    local c = redis.call('ZCARD', q)
    if c > 0 then
      n = n + c
      local top = redis.call('ZRANGE', q, 0, 4, 'WITHSCORES')
      for j = 1, #top, 2 do
        local t = redis.call('HMGET', tprefix(P, parts, tenant) .. 'task:' .. top[j], 'state', 'priority')
        if t[1] == 'queued' then
          local ready = tonumber(top[j + 1]) + tonumber(t[2] or '0') * 60000000
          if oldest == nil or ready < oldest then oldest = ready end
          break
        end
      end
    end
  end
  out[#out + 1] = n
end
if oldest then out[1] = oldest end
return out
`)

// ReadyQueues reads the ready queues of functions for tenants: one script
// per function, pipelined, each reading 3 x len(tenants) queues. Counts are
// ready entries (a task cancelled while ready counts until a take drops
// it); the oldest is that of the entries first in line, so within a band a
// task of lower priority than the first may have waited up to 4 minutes
// longer unnoticed.
func (l *Ledger) ReadyQueues(ctx context.Context, functions, tenants []string) ([]FunctionBacklog, error) {
	if l.Partitioned() {
		return l.readyQueuesSplit(ctx, functions, tenants)
	}
	calls := make([]*scriptCall, len(functions))
	for i, fn := range functions {
		args := make([]any, 0, 3+len(tenants))
		args = append(args, l.fnPrefix(fn), l.cfg.Prefix, l.luaPartitions())
		for _, t := range tenants {
			args = append(args, t)
		}
		calls[i] = call(backlogScript, []string{l.fnStateKey(fn)}, args...)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return nil, fmt.Errorf("reading ready queues: %w", err)
	}
	out := make([]FunctionBacklog, len(functions))
	for i, fn := range functions {
		res, err := calls[i].cmd.Int64Slice()
		if err != nil || len(res) != 1+len(tenants) {
			return nil, fmt.Errorf("reading ready queues of %s: %w (%d values)", fn, err, len(res))
		}
		b := FunctionBacklog{Function: fn, Tenants: make(map[string]int64, len(tenants))}
		if res[0] > 0 {
			b.Oldest = time.UnixMicro(res[0])
		}
		for j, t := range tenants {
			b.Tenants[t] = res[1+j]
		}
		out[i] = b
	}
	return out, nil
}

// CountedStates are the states TaskCounts reads: the non-terminal ones
// and dead (the dead-letter queue).
var CountedStates = []contracts.State{contracts.StateQueued, contracts.StateScheduled, contracts.StateRetrying,
	contracts.StateRunning, contracts.StatePaused, contracts.StateDead}

// TaskCounts reads each tenant's tasks in each of CountedStates (the
// ledger's state indexes), keyed tenant then state.
func (l *Ledger) TaskCounts(ctx context.Context, tenants []string) (map[string]map[contracts.State]int64, error) {
	cmds := make([][]*redis.IntCmd, len(tenants))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tenants {
			cmds[i] = make([]*redis.IntCmd, len(CountedStates))
			for j, s := range CountedStates {
				cmds[i][j] = p.ZCard(ctx, l.stateKey(t, s))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting tasks by state: %w", err)
	}
	out := make(map[string]map[contracts.State]int64, len(tenants))
	for i, t := range tenants {
		out[t] = make(map[contracts.State]int64, len(CountedStates))
		for j, s := range CountedStates {
			out[t][s] = cmds[i][j].Val()
		}
	}
	return out, nil
}
