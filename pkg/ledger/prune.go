package ledger

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Records expire on their own (a TTL from the end of the task); their
// entries in the tenant's all-index and state indexes do not. Prune drops
// the entries of records that are gone, so the indexes hold about as many
// tasks as the ledger does, not every task ever made.

// prunedKey counts the tenant's ended tasks whose index entries Prune
// dropped.
func (l *Ledger) prunedKey(tenant string) string { return l.tenantPrefix(tenant) + "pruned" }

// PruneCursor is where a tenant's pruning goes on from: "" starts at the
// oldest entry.
type PruneCursor string

// pruneScript drops the index entries of up to ARGV[5] tasks, oldest first
// from score ARGV[3], created before ARGV[4], whose record is gone. Only
// entries older than the shortest retention are looked at: a record
// expires at the earliest that long after it was created. Returns {dropped,
// next cursor}: "" once the scan reached the cutoff (the next scan starts
// over), else the last score seen (inclusive, so ties are not skipped;
// exclusive when a whole page had that score, so a page of live records
// cannot hold the scan in place).
// The entries it drops from the terminal-state indexes are added to the
// tenant's pruned counter (KEYS[2]), so Backlogs' Ended stays a count of
// every task that ended, which backpressure's drain rate is the growth of.
// KEYS: 1 all-index, 2 the tenant's pruned counter. ARGV: 1 state-index
// prefix, 2 task-key prefix, 3 from score, 4 cutoff µs, 5 max.
var pruneScript = redis.NewScript(`
local STATES = {` + luaStrings(stateNames()) + `}
local ENDED = {}
for _, s in ipairs({` + luaStrings(endedStateNames()) + `}) do ENDED[s] = true end
local max = tonumber(ARGV[5])
local z = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '(' .. ARGV[4], 'WITHSCORES', 'LIMIT', 0, max)
local dropped, ended = 0, 0
for i = 1, #z, 2 do
  local id = z[i]
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    for _, s in ipairs(STATES) do
      if redis.call('ZREM', ARGV[1] .. s, id) == 1 and ENDED[s] then ended = ended + 1 end
    end
    dropped = dropped + 1
  end
end
if ended > 0 then redis.call('INCRBY', KEYS[2], ended) end
if #z / 2 < max then return {dropped, ''} end
local last = z[#z]
if z[2] == last then return {dropped, '(' .. last} end
return {dropped, last}
`)

func endedStateNames() []string {
	out := make([]string, len(endedStates))
	for i, s := range endedStates {
		out[i] = string(s)
	}
	return out
}

func stateNames() []string {
	out := make([]string, len(contracts.States))
	for i, s := range contracts.States {
		out[i] = string(s)
	}
	return out
}

// Prune drops, from tenant's task indexes, the entries of up to max tasks
// whose records expired, scanning from cursor, and returns how many it
// dropped and where the next call goes on. Entries of records that still
// exist (dead tasks, long-delayed ones) stay.
func (l *Ledger) Prune(ctx context.Context, tenant string, cursor PruneCursor, max int) (int, PruneCursor, error) {
	from := string(cursor)
	if from == "" {
		from = "-inf"
	}
	cutoff := us(l.cfg.Now().Add(-min(l.cfg.Retention, l.cfg.DeadRetention)))
	res, err := l.run(ctx, pruneScript, []string{l.allKey(tenant), l.prunedKey(tenant)},
		l.statePrefix(tenant), l.tenantPrefix(tenant)+"task:", from, strconv.FormatInt(cutoff, 10), max).Slice()
	if err != nil {
		return 0, cursor, fmt.Errorf("pruning the task indexes of tenant %s: %w", tenant, err)
	}
	n, _ := res[0].(int64)
	next, _ := res[1].(string)
	return int(n), PruneCursor(next), nil
}
