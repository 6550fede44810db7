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
// KEYS: 1 all-index. ARGV: 1 state-index prefix, 2 task-key prefix, 3 from
// score, 4 cutoff µs, 5 max.
var pruneScript = redis.NewScript(`
local STATES = {` + luaStrings(stateNames()) + `}
local max = tonumber(ARGV[5])
local z = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '(' .. ARGV[4], 'WITHSCORES', 'LIMIT', 0, max)
local dropped = 0
for i = 1, #z, 2 do
  local id = z[i]
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    for _, s in ipairs(STATES) do redis.call('ZREM', ARGV[1] .. s, id) end
    dropped = dropped + 1
  end
end
if #z / 2 < max then return {dropped, ''} end
local last = z[#z]
if z[2] == last then return {dropped, '(' .. last} end
return {dropped, last}
`)

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
	res, err := l.run(ctx, pruneScript, []string{l.allKey(tenant)},
		l.statePrefix(tenant), l.tenantPrefix(tenant)+"task:", from, strconv.FormatInt(cutoff, 10), max).Slice()
	if err != nil {
		return 0, cursor, fmt.Errorf("pruning the task indexes of tenant %s: %w", tenant, err)
	}
	n, _ := res[0].(int64)
	next, _ := res[1].(string)
	return int(n), PruneCursor(next), nil
}
