package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// backlogFScript reads one function's ready queues in the partitioned
// layout, where the records are in their partitions: for each tenant its
// ready entries (ZCARD of the three bands) and the first five refs of
// each non-empty queue, whose records the caller reads.
// KEYS: 1 function state (for the slot). ARGV: 1 function key prefix, then
// tenants.
// Returns {count of tenant 1, ..., count of tenant n, then per ref: tenant,
// band, id, queue score}, each queue's refs in line order.
var backlogFScript = newSplitScript(`
local FP = ARGV[1]
local bands = {'high', 'normal', 'low'}
local out, refs = {}, {}
for i = 2, #ARGV do
  local tenant = ARGV[i]
  local n = 0
  for _, b in ipairs(bands) do
    local q = FP .. 'ready:' .. b .. ':' .. tenant
    local c = redis.call('ZCARD', q)
    if c > 0 then
      n = n + c
      local top = redis.call('ZRANGE', q, 0, 4, 'WITHSCORES')
      for j = 1, #top, 2 do
        refs[#refs + 1] = tenant
        refs[#refs + 1] = b
        refs[#refs + 1] = top[j]
        refs[#refs + 1] = top[j + 1]
      end
    end
  end
  out[#out + 1] = tostring(n)
end
for _, v in ipairs(refs) do out[#out + 1] = v end
return out
`)

// readyQueuesSplit is ReadyQueues in the partitioned layout: backlog.f
// per function (one pipeline), then the records of the refs it returned
// (one pipeline of HMGETs, split by node on a cluster); the oldest is
// computed as backlogScript does.
func (l *Ledger) readyQueuesSplit(ctx context.Context, functions, tenants []string) ([]FunctionBacklog, error) {
	calls := make([]*scriptCall, len(functions))
	for i, fn := range functions {
		args := make([]any, 0, 1+len(tenants))
		args = append(args, l.fnPrefix(fn))
		for _, t := range tenants {
			args = append(args, t)
		}
		calls[i] = call(l.script(backlogFScript), []string{l.fnStateKey(fn)}, args...)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return nil, fmt.Errorf("reading ready queues: %w", err)
	}
	type ref struct{ tenant, band, id, score string }
	refs := make([][]ref, len(functions))
	out := make([]FunctionBacklog, len(functions))
	for i, fn := range functions {
		res, err := calls[i].cmd.StringSlice()
		if err != nil || len(res) < len(tenants) || (len(res)-len(tenants))%4 != 0 {
			return nil, fmt.Errorf("reading ready queues of %s: %w (%d values)", fn, err, len(res))
		}
		out[i] = FunctionBacklog{Function: fn, Tenants: make(map[string]int64, len(tenants))}
		for j, t := range tenants {
			out[i].Tenants[t], _ = strconv.ParseInt(res[j], 10, 64)
		}
		for j := len(tenants); j < len(res); j += 4 {
			refs[i] = append(refs[i], ref{res[j], res[j+1], res[j+2], res[j+3]})
		}
	}
	cmds := make([][]*redis.SliceCmd, len(functions))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range functions {
			for _, r := range refs[i] {
				cmds[i] = append(cmds[i], p.HMGet(ctx, l.taskKey(r.tenant, r.id), fState, fPriority))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading ready tasks: %w", err)
	}
	for i := range functions {
		var oldest int64
		done := map[[2]string]bool{} // queues whose first queued task was found
		for j, r := range refs[i] {
			q := [2]string{r.tenant, r.band}
			v := cmds[i][j].Val()
			if done[q] || len(v) < 2 || v[0] != "queued" {
				continue
			}
			done[q] = true
			score, _ := strconv.ParseFloat(r.score, 64)
			prio := 0
			if s, ok := v[1].(string); ok {
				prio, _ = strconv.Atoi(s)
			}
			if ready := int64(score) + int64(prio)*60_000_000; oldest == 0 || ready < oldest {
				oldest = ready
			}
		}
		if oldest > 0 {
			out[i].Oldest = time.UnixMicro(oldest)
		}
	}
	return out, nil
}
