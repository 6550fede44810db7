package ledger

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The release side of the partitioned layout (decision 0017, phase 2):
// what ends, extends or directly starts an attempt, split into a step in
// the task's partition slot ("<name>.t") and a step in its function's slot
// ("<name>.f"), each one script of one slot. The tenant step goes first and
// holds the fence (attempt and redrives); the function step follows only
// when it succeeded, so a refused tenant step changes nothing of the
// function. The legacy layout keeps its one-script calls (ledger.go,
// claim.go, control.go, dispatch.go branch here when l.Partitioned()).
//
// On a cluster (a go-redis ClusterClient) every script starts with "#!lua"
// (Redis 7's shebang, no flags): a key of another slot that a script
// builds in Lua instead of declaring it then fails on whatever node the
// slots are, not only on another node. On one Redis the same scripts run
// without it: a single Redis checks no slots, and the embedded Redis of dev
// mode and -short tests (gopher-lua) cannot compile a shebang. Keys a
// script builds from the task's tenant prefix (its log, its state indexes)
// are of its partition's slot.

// splitScript is a script of the partitioned layout in both forms.
type splitScript struct{ plain, shebang *redis.Script }

func newSplitScript(src string) splitScript {
	return splitScript{plain: redis.NewScript(src), shebang: redis.NewScript("#!lua\n" + src)}
}

// script is s as l runs it: with the shebang on a cluster.
func (l *Ledger) script(s splitScript) *redis.Script {
	if _, cluster := l.rdb.(*redis.ClusterClient); cluster {
		return s.shebang
	}
	return s.plain
}

// luaFreed is the tenant side of an attempt's end: it frees the attempt's
// place in its tenant's in-flight set (id; "" for none) and, when the
// tenant is below its quota (0: none, so a tenant parked before its quota
// was removed does not stay parked), reads and clears its parked set,
// returning the members ("<fn>\n<ring>") whose rings unpark.f puts the
// tenant back in. A crash before unpark.f ran would leave the tenant out
// of those rings with nothing to say so: the cleared members are kept in
// the tenant's unparking set, scored by now, and returned once more (and
// dropped) by the first such step after cutoff (now - unparkGrace): the
// next end of one of the tenant's attempts, or the scheduler's UnparkAll.
// unpark.f is idempotent: sent twice, at worst it puts back a tenant parked
// again meanwhile, which the next take finds at its quota and parks.
const luaFreed = `
local function freed(tinflight, parked, unparking, id, quota, now, cutoff)
  if id ~= '' then redis.call('ZREM', tinflight, id) end
  if quota > 0 then
    redis.call('ZREMRANGEBYSCORE', tinflight, '-inf', '(' .. now)
    if redis.call('ZCARD', tinflight) >= quota then return {} end
  end
  local m = redis.call('ZRANGEBYSCORE', unparking, '-inf', '(' .. cutoff)
  if #m > 0 then redis.call('ZREMRANGEBYSCORE', unparking, '-inf', '(' .. cutoff) end
  local cleared = redis.call('SMEMBERS', parked)
  if #cleared > 0 then
    redis.call('DEL', parked)
    for _, v in ipairs(cleared) do
      redis.call('ZADD', unparking, now, v)
      m[#m+1] = v
    end
  end
  return m
end
local function append(out, list)
  for _, v in ipairs(list) do out[#out+1] = v end
  return out
end
`

// finishTScript is finish's tenant step: a running attempt to a terminal
// state, its lease entry out of the delay set, its tenant slot freed.
// KEYS: 1 task hash, 2 outbox, 3 delay, 4 tenant in-flight set, 5 tenant
// parked set, 6 tenant unparking set
// ARGV: 1 attempt, 2 state, 3 now µs, 4 error, 5 result, 6 state-index
// prefix, 7 id, 8 retention ms, 9 outbox max length, 10 delay member,
// 11 reason, 12 tenant quota, 13 redrives (with the attempt, the fence),
// 14 unparking cutoff µs, 15.. log entries
// Returns {"0"} when fenced off, else {"1", the attempt's lease end µs
// (release.f's fence), parked members to unpark...}.
var finishTScript = newSplitScript(luaTerminate + luaEndAttempt + luaFreed + `
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'attempts', 'attempt_started', 'redrives', 'lease')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or (f[4] or '0') ~= ARGV[13] then return {'0'} end
redis.call('ZREM', KEYS[3], ARGV[10])
local out = append({'1', f[5] or '0'}, freed(KEYS[4], KEYS[5], KEYS[6], ARGV[7], tonumber(ARGV[12]), ARGV[3], ARGV[14]))
endattempt(h, f[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[11], ARGV[6], ARGV[7], ARGV[8], ARGV[9], KEYS[2], {unpack(ARGV, 15)})
return out
`)

// retryTScript is retry's tenant step: a running attempt to retrying, the
// next one due in the delay set, its tenant slot freed.
// KEYS: 1 task hash, 2 delay, 3 tenant in-flight set, 4 tenant parked set,
// 5 tenant unparking set
// ARGV: 1 attempt, 2 due µs, 3 error, 4 state-index prefix, 5 id, 6 delay
// member, 7 "1" to refund the attempt, 8 tenant quota, 9 now µs,
// 10 redrives (with the attempt, the fence), 11 unparking cutoff µs,
// 12.. log entries
// Returns {"0"} when fenced off, else {"1", the attempt's lease end µs
// (release.f's fence), parked members to unpark...}.
var retryTScript = newSplitScript(luaLog + luaRetrying + luaFreed + `
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'attempts', 'redrives', 'lease')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or (f[3] or '0') ~= ARGV[10] then return {'0'} end
local out = append({'1', f[4] or '0'}, freed(KEYS[3], KEYS[4], KEYS[5], ARGV[5], tonumber(ARGV[8]), ARGV[9], ARGV[11]))
retrying(h, ARGV[4], ARGV[5], ARGV[2], ARGV[3], KEYS[2], ARGV[6], ARGV[7], {unpack(ARGV, 12)})
return out
`)

// cancelTScript is cancel's tenant step: a waiting, paused or running task
// to cancelled, with its result event; a running attempt's tenant slot is
// freed and its dispatcher told to abort it (the abort channel).
// KEYS: 1 task hash, 2 outbox, 3 delay, 4 expiry set, 5 tenant in-flight
// set, 6 tenant parked set, 7 tenant unparking set
// ARGV: 1 now µs, 2 error, 3 state-index prefix, 4 id, 5 retention ms,
// 6 outbox max length, 7 delay member, 8 tenant quota, 9 abort channel,
// 10 "1" to cancel only if it is in state ARGV[11], 12 unparking cutoff µs
// Returns {"ok", state it was in, and for a running one its lease end µs
// (release.f's fence) and the parked members to unpark...} or {"no",
// current state} ("" when missing).
var cancelTScript = newSplitScript(luaTerminate + luaFreed + `
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return {'no', ''} end
if ARGV[10] == '1' and st ~= ARGV[11] then return {'no', st} end
if st == 'running' then
  redis.call('ZREM', KEYS[3], ARGV[7])
  local out = append({'ok', st, redis.call('HGET', h, 'lease') or '0'}, freed(KEYS[5], KEYS[6], KEYS[7], ARGV[4], tonumber(ARGV[8]), ARGV[1], ARGV[12]))
  local started = tonumber(redis.call('HGET', h, 'attempt_started') or ARGV[1])
  redis.call('HSET', h, 'run_ms', math.floor((tonumber(ARGV[1]) - started) / 1000))
  terminate(h, KEYS[2], ARGV[3], ARGV[4], 'running', 'cancelled', ARGV[1], ARGV[2], ARGV[5], ARGV[6])
  redis.call('PUBLISH', ARGV[9], ARGV[7])
  return out
end
if st ~= 'queued' and st ~= 'scheduled' and st ~= 'retrying' and st ~= 'paused' then return {'no', st} end
redis.call('ZREM', KEYS[3], ARGV[7])
redis.call('ZREM', KEYS[4], ARGV[7])
redis.call('HDEL', h, 'held_by', 'paused_from')
terminate(h, KEYS[2], ARGV[3], ARGV[4], st, 'cancelled', ARGV[1], ARGV[2], ARGV[5], ARGV[6])
return {'ok', st}
`)

// unparkTScript is unpark's tenant step: a tenant below its quota (0:
// none) leaves its parked set.
// KEYS: 1 tenant in-flight set, 2 tenant parked set, 3 tenant unparking
// set. ARGV: 1 now µs, 2 quota, 3 unparking cutoff µs. Returns the parked
// members to unpark (none at the quota).
var unparkTScript = newSplitScript(luaFreed + `
return freed(KEYS[1], KEYS[2], KEYS[3], '', tonumber(ARGV[2]), ARGV[1], ARGV[3])
`)

// releaseFScript is the function side of an attempt's end (or of a
// reservation given back): the member leaves the function's in-flight set
// and its non-high subset, and a limited function with tasks ready wakes
// the dispatchers (a slot is free). It is fenced by the lease end of the
// attempt (or reservation) it ends: a member scored later is the next
// attempt's (started, or reserved, after this one ended: its lease ends
// later), which a late release.f must leave alone.
// KEYS: 1 function in-flight set, 2 its non-high subset, 3 function state
// ARGV: 1 member, 2 wake channel, 3 function, 4 "1" for a limited
// function, 5 the lease end µs it ends
var releaseFScript = newSplitScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) > tonumber(ARGV[5]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[4] == '1' then
  local n = redis.call('HMGET', KEYS[3], 'n_high', 'n_normal', 'n_low')
  if tonumber(n[1] or '0') + tonumber(n[2] or '0') + tonumber(n[3] or '0') > 0 then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
end
return 1
`)

// unparkFScript puts a tenant back into the round robin of one function's
// bands it was parked in, where its queue is not empty, at the least
// served score (no banked credit), and wakes the function's dispatchers.
// KEYS: pairs of a band's ring and the tenant's queue in it (ring ..
// ":" .. tenant). ARGV: 1 tenant, 2 wake channel, 3 function.
// Returns 1 when it put the tenant back anywhere.
var unparkFScript = newSplitScript(`
local back = 0
for i = 1, #KEYS, 2 do
  if redis.call('ZCARD', KEYS[i+1]) > 0 then
    local top = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    redis.call('ZADD', KEYS[i], 'NX', top[2] or 0, ARGV[1])
    back = 1
  end
end
if back == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return back
`)

// renewTScript is renew's tenant step: the lease of a running attempt, its
// delay-set entry and its place in the tenant's in-flight set (put back
// for a tenant with a quota: a trim may have dropped it after the lease
// ended, and an attempt that goes on must count).
// KEYS: 1 task hash, 2 delay, 3 tenant in-flight set
// ARGV: 1 attempt, 2 owner, 3 lease-until µs, 4 delay member, 5 id, 6 "1"
// when the tenant has a quota, 7 redrives (the fence). Returns 1, or 0 for
// a lost lease.
var renewTScript = newSplitScript(`
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'attempts', 'owner', 'redrives')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or (f[4] or '0') ~= ARGV[7] then return 0 end
redis.call('HSET', h, 'lease', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
else
  redis.call('ZADD', KEYS[3], 'XX', ARGV[3], ARGV[5])
end
return 1
`)

// renewFScript is renew's function step, for a lease renew.t extended: the
// member's score in the function's in-flight set (put back if the sweep
// removed it) and, where it is one, in the non-high subset.
// KEYS: 1 function in-flight set, 2 its non-high subset. ARGV: 1
// lease-until µs, 2 member.
var renewFScript = newSplitScript(`
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
return 1
`)

// reserveFScript is a direct claim's function step, before claim.t: under
// a concurrency limit it reserves the task's slot (a member scored by the
// lease's end; one whose score passed counts as gone: nothing trims the
// set in this layout), and it takes the task's turn in the function's rate
// (a turn to come when the rate makes it wait: it is the task's).
// KEYS: 1 function in-flight set, 2 its non-high subset, 3 function rate
// state
// ARGV: 1 now µs, 2 lease-until µs, 3 member, 4 concurrency (0: none),
// 5 emission interval µs (0: no rate, or the task holds a turn already),
// 6 burst, 7 "1" for a task of the normal or low band
// Returns {"concurrency"} at the limit (nothing reserved or taken), else
// {"ok", the rate's wait µs, "1" when it reserved the slot}.
var reserveFScript = newSplitScript(luaGCRA + `
local now = tonumber(ARGV[1])
local conc = tonumber(ARGV[4])
local mine = '0'
if conc > 0 then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[3])
  if not s or tonumber(s) < now then
    if redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf') >= conc then return {'concurrency'} end
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
    if ARGV[7] == '1' then
      redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
    else
      redis.call('ZREM', KEYS[2], ARGV[3])
    end
    mine = '1'
  else
    -- Another's live member (an ended attempt whose release.f is late, a
    -- claim in flight): its score grows to this lease, so that the late
    -- release.f, fenced by its own lease, leaves the attempt this claim
    -- may start its place.
    redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[3])
    redis.call('ZADD', KEYS[2], 'XX', 'GT', ARGV[2], ARGV[3])
  end
end
local fint, wait = tonumber(ARGV[5]), 0
if fint > 0 then
  local w, tat = gcra(KEYS[3], fint, tonumber(ARGV[6]), now)
  if w > 0 then tat = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), now) + fint end
  redis.call('SET', KEYS[3], tat, 'PX', math.ceil((tat - now) / 1000) + 1000)
  wait = w
end
return {'ok', tostring(math.ceil(wait)), mine}
`)

// claimTScript is a direct claim's tenant step, after reserve.f: the
// record's checks, then the limits in claim's order (the concurrency
// verdict reserve.f found, a reserved rate turn, the rates: the function's
// wait as reserve.f found it, the tenant's here), then the start.
// KEYS: 1 task hash, 2 delay, 3 outbox, 4 tenant rate state, 5 expiry set
// ARGV: 1 now µs, 2 lease-until µs, 3 owner, 4 state-index prefix, 5 id,
// 6 delay member, 7 retention ms, 8 outbox max length, 9 reserve.f's
// verdict ("ok", "concurrency"), 10 the function rate's wait µs,
// 11 tenant emission interval µs, 12 tenant burst, 13 wait µs when at the
// concurrency limit
// Returns claim's answers.
var claimTScript = newSplitScript(luaTerminate + luaGCRA + luaClaimed + `
local h = KEYS[1]
local now = tonumber(ARGV[1])
local answer, st = claimhead(h, now, KEYS[2], KEYS[5], KEYS[3])
if answer then return answer end
if ARGV[9] == 'concurrency' then return {'throttled', ARGV[13], 'concurrency'} end
local slot = tonumber(redis.call('HGET', h, 'rate_slot') or '0')
if slot > 0 and now + 2000 < slot then
  return {'throttled', tostring(math.ceil(slot - now)), 'rate'}
end
if slot > 0 then
  redis.call('HDEL', h, 'rate_slot')
else
  local fwait, tint = tonumber(ARGV[10]), tonumber(ARGV[11])
  local twait, ttat = gcra(KEYS[4], tint, tonumber(ARGV[12]), now)
  if fwait > 0 or twait > 0 then
    if ttat == 0 and tint > 0 then
      ttat = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now) + tint
    end
    local wait = math.max(fwait, twait)
    redis.call('HSET', h, 'rate_slot', now + wait)
    local limit = 'rate'
    if twait > fwait then limit = 'tenant_rate' end
    if ttat > 0 then redis.call('SET', KEYS[4], ttat, 'PX', math.ceil((ttat - now) / 1000) + 1000) end
    return {'throttled', tostring(math.ceil(wait)), limit}
  end
  if ttat > 0 then redis.call('SET', KEYS[4], ttat, 'PX', math.ceil((ttat - now) / 1000) + 1000) end
end
redis.call('ZREM', KEYS[5], ARGV[6])
return claimed(h, st, now, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], KEYS[2], ARGV[6])
`)

// splitScripts are the scripts of this file.
var splitScripts = []splitScript{finishTScript, retryTScript, cancelTScript, unparkTScript, releaseFScript,
	unparkFScript, renewTScript, renewFScript, reserveFScript, claimTScript}

// loadSplitScripts loads the scripts of this file as l runs them (none in
// the legacy layout).
func (l *Ledger) loadSplitScripts(ctx context.Context) error {
	if !l.Partitioned() {
		return nil
	}
	for _, s := range splitScripts {
		if err := l.script(s).Load(ctx, l.rdb).Err(); err != nil {
			return fmt.Errorf("loading ledger scripts: %w", err)
		}
	}
	return nil
}

// releaseCall is release.f for tenant's task id of function, ending the
// attempt or reservation whose lease ends at lease (µs, as the record or
// the reservation has it).
func (l *Ledger) releaseCall(tenant, id, function, lease string) *scriptCall {
	return call(l.script(releaseFScript), []string{l.inflightKey(function), l.inflightNHKey(function), l.fnStateKey(function)},
		Member(tenant, id), l.WakeChannel(), function, l.limited(function), cmp.Or(lease, "0"))
}

// unparkCalls are the unpark.f calls that put tenant back into the rings
// of parked (its parked set's members "<fn>\n<ring>"), one per function. A
// member whose ring is not of its function's slot (not written by this
// ledger) is dropped rather than sent to fail on a cluster.
func (l *Ledger) unparkCalls(tenant string, parked []string) []*scriptCall {
	byFn := map[string][]string{}
	var order []string
	seen := map[string]bool{}
	for _, m := range parked {
		fn, ring, ok := strings.Cut(m, "\n")
		if !ok || !strings.HasPrefix(ring, l.fnPrefix(fn)) || seen[m] {
			continue
		}
		seen[m] = true
		if _, listed := byFn[fn]; !listed {
			order = append(order, fn)
		}
		byFn[fn] = append(byFn[fn], ring, ring+":"+tenant)
	}
	calls := make([]*scriptCall, len(order))
	for i, fn := range order {
		calls[i] = call(l.script(unparkFScript), byFn[fn], tenant, l.WakeChannel(), fn)
	}
	return calls
}

// unparkGrace is how long after a tenant step cleared parked members it
// takes a later one to send their unpark.f again (luaFreed): longer than
// the function step of an end takes, a crash aside.
const unparkGrace = 10 * time.Second

// parkKeys are the tenant's keys a tenant step that may unpark declares:
// its in-flight set, parked set and unparking set.
func (l *Ledger) parkKeys(tenant string) []string {
	return []string{l.tenantInflightKey(tenant), l.parkedKey(tenant), l.unparkingKey(tenant)}
}

// ended is the function side of the end of tenant's attempt of id, whose
// tenant step answered res (its lease end, then the parked members), in
// one pipeline. When it fails, the
// reservation is the sweep's (its score passes) and the parked members
// are sent again by a later tenant step (luaFreed).
func (l *Ledger) ended(ctx context.Context, tenant, id, function string, res []string) error {
	return l.batch.exec(ctx, append([]*scriptCall{l.releaseCall(tenant, id, function, res[0])}, l.unparkCalls(tenant, res[1:])...)...)
}

// finishSplit is Finish in the partitioned layout: finish.t, then release.f
// and the unpark.f calls together. When the tenant step succeeded and the
// function step failed, it answers true and the error: the task has
// ended; its function slot is freed by the sweep once its score passes.
func (l *Ledger) finishSplit(ctx context.Context, tenant, id, function string, at Fence, o Outcome, retention time.Duration) (bool, error) {
	now := l.cfg.Now()
	args := []any{at.Attempt, string(o.State), us(now), o.Error, o.Result, l.statePrefix(tenant), id,
		retention.Milliseconds(), OutboxMaxLen, Member(tenant, id), string(o.Reason), l.quota(tenant), at.Redrives,
		us(now.Add(-unparkGrace))}
	res, err := l.batch.eval(ctx, l.script(finishTScript),
		append([]string{l.taskKey(tenant, id), l.OutboxStream(tenant), l.DelayKey(tenant)}, l.parkKeys(tenant)...),
		append(args, l.encodeLogs(o.Log)...)...).StringSlice()
	if err != nil {
		return false, fmt.Errorf("finishing task %s: %w", id, err)
	}
	if res[0] != "1" {
		return false, nil
	}
	if err := l.ended(ctx, tenant, id, function, res[1:]); err != nil {
		return true, fmt.Errorf("finished task %s; releasing its slot of %s: %w", id, function, err)
	}
	return true, nil
}

// retrySplit is Retry in the partitioned layout (as finishSplit).
func (l *Ledger) retrySplit(ctx context.Context, tenant, id, function string, at Fence, due time.Time, errMsg string, refund bool, log []any) (bool, error) {
	now := l.cfg.Now()
	args := []any{at.Attempt, us(due), errMsg, l.statePrefix(tenant), id, Member(tenant, id), flag(refund),
		l.quota(tenant), us(now), at.Redrives, us(now.Add(-unparkGrace))}
	res, err := l.batch.eval(ctx, l.script(retryTScript),
		append([]string{l.taskKey(tenant, id), l.DelayKey(tenant)}, l.parkKeys(tenant)...),
		append(args, log...)...).StringSlice()
	if err != nil {
		return false, fmt.Errorf("scheduling retry of task %s: %w", id, err)
	}
	if res[0] != "1" {
		return false, nil
	}
	if err := l.ended(ctx, tenant, id, function, res[1:]); err != nil {
		return true, fmt.Errorf("scheduled retry of task %s; releasing its slot of %s: %w", id, function, err)
	}
	return true, nil
}

// cancelTCall is cancel.t for one of tenant's tasks; only in state when
// given.
func (l *Ledger) cancelTCall(tenant, id string, only string) *scriptCall {
	now := l.cfg.Now()
	return call(l.script(cancelTScript),
		append([]string{l.taskKey(tenant, id), l.OutboxStream(tenant), l.DelayKey(tenant), l.ExpiryKey(tenant)}, l.parkKeys(tenant)...),
		us(now), "cancelled by request", l.statePrefix(tenant), id, l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		Member(tenant, id), l.quota(tenant), l.AbortChannel(), flag(only != ""), only, us(now.Add(-unparkGrace)))
}

// cancelled is the function side of the cancels of tenant's tasks that
// cancel.t answered (calls, of ids, with functions fns): the running
// ones' release.f and unpark.f calls, in one pipeline. It is best effort:
// the tasks are cancelled (an error here would tell the caller they are
// not, and a second cancel answers ErrNotCancellable), and a lost function
// step is repaired as a lost finish's is: the reservation stops counting
// when its score passes, the unparking set sends its unpark.f again.
func (l *Ledger) cancelled(ctx context.Context, tenant string, ids, fns []string, calls []*scriptCall) {
	var fcalls []*scriptCall
	for i, c := range calls {
		res, _ := c.cmd.StringSlice()
		if len(res) < 2 || res[0] != "ok" || res[1] != "running" {
			continue
		}
		if len(res) < 3 {
			continue
		}
		fcalls = append(fcalls, l.releaseCall(tenant, ids[i], fns[i], res[2]))
		fcalls = append(fcalls, l.unparkCalls(tenant, res[3:])...)
	}
	_ = l.batch.exec(ctx, fcalls...)
}

// renewSplit is Renew in the partitioned layout: renew.t for every lease in
// one round trip, then renew.f for those it extended (a lost lease's
// reservation is not extended: the sweep or its finish removes it).
func (l *Ledger) renewSplit(ctx context.Context, until int64, leases []Lease) ([]Lease, error) {
	calls := make([]*scriptCall, len(leases))
	for i, ls := range leases {
		calls[i] = call(l.script(renewTScript), []string{l.taskKey(ls.Tenant, ls.ID), l.DelayKey(ls.Tenant), l.tenantInflightKey(ls.Tenant)},
			ls.Attempt, ls.Owner, until, Member(ls.Tenant, ls.ID), ls.ID, flag(l.quota(ls.Tenant) > 0), ls.Redrives)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return nil, fmt.Errorf("renewing leases: %w", err)
	}
	var lost []Lease
	var fcalls []*scriptCall
	for i, c := range calls {
		ls := leases[i]
		if n, _ := c.cmd.Int(); n == 0 {
			lost = append(lost, ls)
			continue
		}
		fcalls = append(fcalls, call(l.script(renewFScript), []string{l.inflightKey(ls.Function), l.inflightNHKey(ls.Function)},
			until, Member(ls.Tenant, ls.ID)))
	}
	if err := l.batch.exec(ctx, fcalls...); err != nil {
		return lost, fmt.Errorf("renewing reservations: %w", err)
	}
	return lost, nil
}

// unparkSplit is Unpark and UnparkAll in the partitioned layout: unpark.t
// for each tenant of quotas in one round trip, then the unpark.f calls of
// every function named in one.
func (l *Ledger) unparkSplit(ctx context.Context, quotas map[string]int) error {
	tenants := make([]string, 0, len(quotas))
	calls := make([]*scriptCall, 0, len(quotas))
	now := l.cfg.Now()
	for tenant, quota := range quotas {
		tenants = append(tenants, tenant)
		calls = append(calls, call(l.script(unparkTScript), l.parkKeys(tenant), us(now), quota, us(now.Add(-unparkGrace))))
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return err
	}
	var fcalls []*scriptCall
	for i, c := range calls {
		ms, _ := c.cmd.StringSlice()
		fcalls = append(fcalls, l.unparkCalls(tenants[i], ms)...)
	}
	return l.batch.exec(ctx, fcalls...)
}

// claimSplit is Claim in the partitioned layout: reserve.f (only under a
// concurrency limit or a function rate; a read of the record first tells
// it the task's band and whether it holds a rate turn), then claim.t; a
// reservation claim.t did not use is given back with release.f.
func (l *Ledger) claimSplit(ctx context.Context, r ClaimRequest, now time.Time, wait time.Duration) ([]string, error) {
	lim, member := r.Limits, Member(r.Tenant, r.ID)
	reserved, conc, fwait := false, "ok", "0"
	if lim.Concurrency > 0 || lim.Rate > 0 {
		f, err := l.rdb.HMGet(ctx, l.taskKey(r.Tenant, r.ID), fPriority, "rate_slot").Result()
		if err != nil {
			return nil, err
		}
		prio, _ := f[0].(string)
		p, _ := strconv.Atoi(prio)
		fint := interval(lim.Rate)
		if s, _ := f[1].(string); s != "" {
			fint = 0 // the task comes back for the turn it was given
		}
		res, err := l.run(ctx, l.script(reserveFScript), []string{l.inflightKey(r.Function), l.inflightNHKey(r.Function), l.fnRateKey(r.Function)},
			us(now), us(now.Add(r.Lease)), member, lim.Concurrency, fint, max(lim.Burst, 1), flag(p < 7)).StringSlice()
		if err != nil {
			return nil, err
		}
		conc = res[0]
		if conc == "ok" {
			fwait, reserved = res[1], res[2] == "1"
		}
	}
	res, err := l.batch.eval(ctx, l.script(claimTScript), []string{
		l.taskKey(r.Tenant, r.ID), l.DelayKey(r.Tenant), l.OutboxStream(r.Tenant), l.tenantPrefix(r.Tenant) + "rate", l.ExpiryKey(r.Tenant),
	},
		us(now), us(now.Add(r.Lease)), r.Owner, l.statePrefix(r.Tenant), r.ID, member, l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		conc, fwait, interval(lim.TenantRate), max(lim.TenantBurst, 1), wait.Microseconds()).StringSlice()
	// A lost reply leaves the reservation to the sweep: the task may have
	// started. So does busy: another attempt started between reserve.f and
	// claim.t (its reserve.f found this reservation and added none, or it
	// was running with no live member), and the member is its place.
	if reserved && err == nil && res[0] != string(VerdictRun) && res[0] != string(VerdictBusy) {
		if err := l.batch.exec(ctx, l.releaseCall(r.Tenant, r.ID, r.Function, strconv.FormatInt(us(now.Add(r.Lease)), 10))); err != nil {
			return nil, fmt.Errorf("giving back the reservation: %w", err)
		}
	}
	return res, err
}
