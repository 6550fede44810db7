package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Dispatch takes only what it may run (decision 0012). A lane delivery is
// admitted into its function's ready queue (Admit) and acknowledged; a
// dispatcher with free workers takes tasks from the ready queue by capacity
// (Take): the function's limit, its priority bands, fairness between
// tenants, the tenant's quota and rate. Nothing over a limit is claimed,
// deferred and republished; it waits in place, in order, with its priority.
//
// Ready queue layout, in the function's slot ({f:<function>}):
//
//	<p>:{f:<fn>}:ready:<band>           zset: tenants with ready tasks in the band, score = starts served (round robin)
//	<p>:{f:<fn>}:ready:<band>:<tenant>  zset: the tenant's ready task ids, score = ready µs - priority x 60 s
//	<p>:{f:<fn>}:state                  hash: n_<band> (ready entries), pass_<band> and vt (band stride
//	                                    scheduling), limit and sat (adaptive concurrency)
//	<p>:{f:<fn>}:inflight               zset: running "<tenant>/<id>", score = lease end µs
//
// and in the tenant's slot:
//
//	<p>:{<tenant>}:inflight             zset: the tenant's running ids, score = lease end µs (its quota)
//	<p>:{<tenant>}:parked               set: "<fn>\n<ring>" of the bands parked while the tenant is at its quota
//
// A tenant at its quota leaves the round robin of each band it was found
// waiting in ("parked"); its tasks keep their place (and their count in
// n_<band>), and the next attempt of the tenant that ends puts it back.
// Every change that may let a waiting task start (a task ready in a band
// whose round robin was empty, a slot freed in a limited function, a
// tenant unparked) publishes the function's name on the wake channel,
// which every dispatcher listens to.

// luaUnpark puts a tenant back into the round robin of every band it was
// parked in, and wakes the functions concerned.
const luaUnpark = `
local function unpark(parked, tenant, wake)
  for _, m in ipairs(redis.call('SMEMBERS', parked)) do
    local nl = string.find(m, '\n', 1, true)
    local fn, ring = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
    if redis.call('ZCARD', ring .. ':' .. tenant) > 0 then
      local top = redis.call('ZRANGE', ring, 0, 0, 'WITHSCORES')
      redis.call('ZADD', ring, 'NX', top[2] or 0, tenant)
      redis.call('PUBLISH', wake, fn)
    end
  end
  redis.call('DEL', parked)
end
`

// luaReleased frees a finished attempt's slots: the tenant's (unparking
// the tenant when it drops below its quota, or has none: a tenant parked
// before its quota was removed must not stay parked) and, for a limited
// function with tasks ready, wakes the dispatchers.
const luaReleased = luaUnpark + `
local function released(tinflight, parked, id, tenant, quota, now, wake, fn, state, limited)
  redis.call('ZREM', tinflight, id)
  if quota > 0 then
    redis.call('ZREMRANGEBYSCORE', tinflight, '-inf', '(' .. now)
    if redis.call('ZCARD', tinflight) < quota then unpark(parked, tenant, wake) end
  else
    unpark(parked, tenant, wake)
  end
  if limited == '1' then
    local n = redis.call('HMGET', state, 'n_high', 'n_normal', 'n_low')
    if tonumber(n[1] or '0') + tonumber(n[2] or '0') + tonumber(n[3] or '0') > 0 then
      redis.call('PUBLISH', wake, fn)
    end
  end
end
`

// admit puts a waiting task into its function's ready queue, or, asked to
// (ARGV[13] "1": the caller has a free worker for it), starts it at once
// when nothing of its function waits ahead of it and every limit allows a
// start: the fast start, the same start take makes (luaStart), without the
// ready-queue entry, the round robin and the take.
// A task that an active pause matches is paused instead (control.go).
// KEYS: 1 task hash, 2 delay, 3 outbox, 4 expiry set, 5 function state,
// 6 tenant parked set, 7 tenant pauses, 8 pause counts, 9 function
// in-flight set, 10 function rate state
// ARGV: 1 now µs, 2 state-index prefix, 3 id, 4 delay member, 5 retention
// ms, 6 outbox max length, 7 priority, 8 band, 9 wake channel, 10 function,
// 11 function key prefix, 12 tenant, 13 "1" to start it if it may,
// and for that: 14 lease-until µs, 15 owner, 16 concurrency (0: none),
// 17 adaptive min (0: not adaptive), 18 reserved-high share, 19 ledger
// prefix, 20 function emission interval µs (0: no rate), 21 function burst,
// 22 tenant quota (0: none), 23 tenant emission interval µs, 24 tenant burst,
// 25 partitions (luaPartitions)
// Returns {verdict, detail}: admitted, ready (already there), done/state,
// missing, paused, expired, busy/lease-until µs, early/due µs, no/state;
// or {started, "", tenant, id, attempt, throttles, wait µs, redrives, env}.
var admitScript = redis.NewScript(luaTerminate + luaPausedBy + luaHold + luaGCRA + luaTenantPrefix + luaStart + `
` + luaAdmitHead + `local bands = {high = 1, normal = 2, low = 3}
local band = bands[ARGV[8]]
if ARGV[13] == '1' and not f[4] then
  -- The fast start. Nothing of the function may wait ahead of the task:
  -- its band and the higher ones are empty (n_<band> counts every entry,
  -- a parked tenant's too, so the task is not in the queue either); under
  -- a limit every band is, so that a start on delivery never takes a slot
  -- the band stride owes a waiting task of a lower band. Then the checks
  -- take makes: the limit and the high-band reservation, the tenant's
  -- quota, the function's rate and the tenant's. A task with a reserved
  -- rate turn (rate_slot) goes the ready-queue way.
  local S = KEYS[5]
  local limit = fnlimit(S, tonumber(ARGV[16]), tonumber(ARGV[17]))
  local sv = redis.call('HMGET', S, 'n_high', 'n_normal', 'n_low')
  local ok = true
  for b = 1, 3 do
    if (b <= band or limit > 0) and tonumber(sv[b] or '0') > 0 then ok = false end
  end
  if ok and limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. ARGV[1])
    if redis.call('ZCARD', KEYS[9]) >= limit then
      ok = false
    elseif band > 1 then
      local reserved = math.floor(limit * tonumber(ARGV[18]))
      if reserved > 0 and nonhighs(KEYS[9], ARGV[19], tonumber(ARGV[25])) >= limit - reserved then ok = false end
    end
  end
  local tp = string.sub(ARGV[2], 1, -4)
  local quota = tonumber(ARGV[22])
  if ok and tenantfull(tp, quota, ARGV[1]) then ok = false end
  local fint, fburst = tonumber(ARGV[20]), tonumber(ARGV[21])
  if ok and fint > 0 and gcra(KEYS[10], fint, fburst, now) > 0 then ok = false end
  local tint = tonumber(ARGV[23])
  if ok and tint > 0 then
    local w, tat = gcra(tp .. 'rate', tint, tonumber(ARGV[24]), now)
    if w > 0 then ok = false else settat(tp .. 'rate', tat, now) end
  end
  if ok then
    local c = {now = now, nowstr = ARGV[1], lease = ARGV[14], owner = ARGV[15], finflight = KEYS[9], delay = KEYS[2],
      expiry = KEYS[4], ratekey = KEYS[10], fint = fint, fburst = fburst}
    local out = {'started', ''}
    begin(c, h, f, st, ARGV[12], ARGV[3], tp, quota, entries, out)
    return out
  end
end
local ring = ARGV[11] .. 'ready:' .. ARGV[8]
local q = ring .. ':' .. ARGV[12]
local verdict = 'ready'
if redis.call('ZADD', q, 'NX', now - tonumber(ARGV[7]) * 60000000, ARGV[3]) == 1 then
  verdict = 'admitted'
  redis.call('HINCRBY', KEYS[5], 'n_' .. ARGV[8], 1)
  if redis.call('ZCARD', q) == 1 and redis.call('SISMEMBER', KEYS[6], ARGV[10] .. '\n' .. ring) == 0 then
    -- The tenant joins the band's round robin at the least served score,
    -- so a tenant that was idle banks no credit.
    local top = redis.call('ZRANGE', ring, 0, 0, 'WITHSCORES')
    redis.call('ZADD', ring, 'NX', top[2] or 0, ARGV[12])
    -- A band with no startable tenant before: the dispatchers may be idle
    -- (nothing ready, only parked tenants, or the band held back while
    -- this one may start), so wake them.
    if #top == 0 then redis.call('PUBLISH', ARGV[9], ARGV[10]) end
  end
end
if verdict == 'admitted' then
  entries[#entries+1] = logentry(ARGV[1], 'admitted', 0, 'ready in the ' .. ARGV[8] .. ' band of ' .. ARGV[10])
  logpush(h, logkey(ARGV[2], ARGV[3]), entries)
end
` + luaAdmitQueued + `-- In the ready queue, the task needs no publish guard or due entry.
redis.call('ZREM', KEYS[2], ARGV[4])
return {verdict, ''}
`)

// luaAdmitHead is admit's (and admit.t's) check of task h (KEYS: 1 task
// hash, 2 delay, 3 outbox, 4 expiry set, 7 tenant pauses, 8 pause counts;
// ARGV 1-6 as admit's): it returns the verdict of a task that is not to
// be admitted (missing, done, paused, expired, busy, early, no) and leaves
// st, f (admit's fields), now and entries (a takeover's log entry).
const luaAdmitHead = `local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'expires', 'started', 'rate_slot', 'scheduled', 'created', 'throttles')
local st = f[1]
if not st then return {'missing', ''} end
if st == 'succeeded' or st == 'failed' or st == 'dead' or st == 'cancelled' or st == 'expired' then
  return {'done', st}
end
if st == 'paused' then return {'paused', ''} end
local now = tonumber(ARGV[1])
local expires = tonumber(f[2])
if expires and now > expires and st ~= 'running' and not f[3] then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  terminate(h, KEYS[3], ARGV[2], ARGV[3], st, 'expired', ARGV[1], 'expired: its ttl passed before it started', ARGV[5], ARGV[6])
  return {'expired', ''}
end
if st == 'running' then
  local lease = redis.call('HGET', h, 'lease') or '0'
  if tonumber(lease) > now then return {'busy', lease} end
elseif st == 'scheduled' or st == 'retrying' then
  -- A stale delivery must not skip a backoff or a delay.
  local due = f[5] or '0'
  if tonumber(due) > now + 1000000 then return {'early', due} end
elseif st ~= 'queued' then
  return {'no', st}
end
local pids = pausedby(KEYS[7], h, 'queued')
if pids then
  -- Held by a pause: it waits, paused, for the resume (an entry already
  -- in the ready queue is dropped by take as stale).
  hold(h, ARGV[2], ARGV[3], st, 'queued', pids, KEYS[8])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {'paused', ''}
end
local entries = {}
if st == 'running' then
  local a = redis.call('HMGET', h, 'attempts', 'owner')
  entries[1] = logentry(ARGV[1], 'taken_over', a[1] or '0', 'the lease of ' .. (a[2] or '?') .. ' ended without an outcome')
end
`

// luaAdmitQueued moves an admitted task that is not queued (due, or taken
// over) to queued.
const luaAdmitQueued = `if st ~= 'queued' then
  -- Due (a retry, a delayed task) or taken over from a dead dispatcher.
  redis.call('HSET', h, 'state', 'queued')
  redis.call('HDEL', h, 'lease', 'owner')
  redis.call('ZREM', ARGV[2] .. st, ARGV[3])
  redis.call('ZADD', ARGV[2] .. 'queued', f[6], ARGV[3])
end
`

// luaStart is what admit's fast start and take share: the function's
// limit, the checks a start must pass, and the start itself. One copy, so
// a start on delivery and a start from the ready queue follow the same
// rules. It needs luaTenantPrefix before it.
const luaStart = luaStartHelpers + `
-- begin starts an attempt of task h (tenant, id; f its fields state,
-- expires, started, rate_slot, scheduled, created, throttles) that passed
-- every check, leaving state from: it takes the function's rate turn and
-- its in-flight slot (and the tenant's, with a quota), holds the task
-- under c.owner's lease, and logs entries and the start. It appends the
-- started task's tenant, id, attempt, throttles, wait µs, redrives and
-- env to out.
-- c: now, nowstr, lease, owner, finflight, delay, expiry, ratekey, fint,
-- fburst.
local function begin(c, h, f, from, tenant, id, tp, quota, entries, out)
  local member = tenant .. '/' .. id
` + luaBeginFunction + luaBeginTask

// luaBeginFunction is begin's part in the function's slot: the function's
// rate turn and in-flight slot (the partitioned layout's take takes them in
// take.f, before the start: take_split.go).
const luaBeginFunction = `  if c.fint > 0 then
    local _, tat = gcra(c.ratekey, c.fint, c.fburst, c.now)
    settat(c.ratekey, tat, c.now)
  end
  redis.call('ZADD', c.finflight, c.lease, member)
`

// luaBeginTask is the rest of begin, in the task's slot: the tenant's
// in-flight slot, the record, the lease-takeover entry, the log.
const luaBeginTask = `  if quota > 0 then redis.call('ZADD', tp .. 'inflight', c.lease, id) end
  -- Once started, a task's ttl no longer applies.
  redis.call('ZREM', c.expiry, member)
  local attempt = redis.call('HINCRBY', h, 'attempts', 1)
  redis.call('HSET', h, 'state', 'running', 'lease', c.lease, 'owner', c.owner, 'attempt_started', c.nowstr)
  -- The wait since due (created, or a retry's or delay's time), returned
  -- for every start; stored on the first.
  local wt = c.now - tonumber(f[5] or f[6] or c.nowstr)
  if wt < 0 then wt = 0 end
  if not f[3] then
    redis.call('HSET', h, 'started', c.nowstr, 'wait_ms', math.floor(wt / 1000))
  end
  redis.call('ZREM', tp .. 'st:' .. from, id)
  redis.call('ZADD', tp .. 'st:running', f[6], id)
  -- The lease doubles as a delay-set entry: if this dispatcher dies, the
  -- scheduler finds the task due when the lease ends and puts it back in
  -- the ready queue.
  redis.call('ZADD', c.delay, c.lease, member)
  entries[#entries+1] = logentry(c.nowstr, 'started', attempt, 'attempt ' .. attempt .. ' started by ' .. c.owner)
  logpush(h, tp .. 'log:' .. id, entries)
  out[#out+1] = tenant
  out[#out+1] = id
  out[#out+1] = tostring(attempt)
  out[#out+1] = f[7] or '0'
  out[#out+1] = tostring(wt)
  out[#out+1] = redis.call('HGET', h, 'redrives') or '0'
  out[#out+1] = redis.call('HGET', h, 'env') or ''
end
`

// luaStartHelpers are luaStart's checks: the function's limit and its
// high-band count, the tenant's quota, log entries.
const luaStartHelpers = `
local function settat(key, tat, now)
  redis.call('SET', key, tat, 'PX', math.ceil((tat - now) / 1000) + 1000)
end

-- The function's limit (0: none): the static one, or the adaptive one
-- stored in its state, at least amin and at most the static one.
local function fnlimit(S, limit, amin)
  if amin <= 0 then return limit end
  local cur = tonumber(redis.call('HGET', S, 'limit') or '0')
  if cur < amin then cur = amin end
  if limit > 0 and cur > limit then cur = limit end
  return cur
end

-- The function's running attempts of the normal and low bands: one HGET
-- per attempt in flight, only while a high-band reservation applies.
local function nonhighs(inflight, P, parts)
  local c = 0
  for _, m in ipairs(redis.call('ZRANGE', inflight, 0, -1)) do
    local sl = string.find(m, '/', 1, true)
    local pr = redis.call('HGET', tprefix(P, parts, string.sub(m, 1, sl - 1)) .. 'task:' .. string.sub(m, sl + 1), 'priority')
    if tonumber(pr or '0') < 7 then c = c + 1 end
  end
  return c
end

-- Whether the tenant (key prefix tp) is at its quota (0: none).
local function tenantfull(tp, quota, nowstr)
  if quota <= 0 then return false end
  redis.call('ZREMRANGEBYSCORE', tp .. 'inflight', '-inf', '(' .. nowstr)
  return redis.call('ZCARD', tp .. 'inflight') >= quota
end

local function logentry(at, kind, attempt, msg)
  return at .. '|' .. kind .. '|' .. attempt .. '|0||' .. msg
end
`

// unparkScript puts a tenant below its quota back into the round robin.
// KEYS: 1 tenant in-flight set, 2 tenant parked set. ARGV: 1 now µs,
// 2 quota, 3 tenant, 4 wake channel.
var unparkScript = redis.NewScript(luaUnpark + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
unpark(KEYS[2], ARGV[3], ARGV[4])
return 1
`)

// AdmitVerdict is the ledger's answer to Admit.
type AdmitVerdict string

// Admit verdicts.
const (
	// AdmitAdmitted: the task is now in its function's ready queue.
	AdmitAdmitted AdmitVerdict = "admitted"
	// AdmitReady: it already was (a duplicate delivery).
	AdmitReady AdmitVerdict = "ready"
	// AdmitDone: the task is terminal (a duplicate delivery).
	AdmitDone AdmitVerdict = "done"
	// AdmitMissing: no record.
	AdmitMissing AdmitVerdict = "missing"
	// AdmitPaused: the task is paused.
	AdmitPaused AdmitVerdict = "paused"
	// AdmitExpired: its ttl passed before it started; Admit ended it.
	AdmitExpired AdmitVerdict = "expired"
	// AdmitBusy: it runs under a live lease until LeaseUntil.
	AdmitBusy AdmitVerdict = "busy"
	// AdmitEarly: it waits for a retry backoff or a delay until Due; the
	// delay set has it.
	AdmitEarly AdmitVerdict = "early"
	// AdmitNo: any other state.
	AdmitNo AdmitVerdict = "no"
	// AdmitStarted: AdmitOrStart started it at once (Admission.Started).
	AdmitStarted AdmitVerdict = "started"
)

// Admission is the result of Admit.
type Admission struct {
	Verdict AdmitVerdict
	// LeaseUntil is set for AdmitBusy and AdmitStarted, Due for
	// AdmitEarly.
	LeaseUntil, Due time.Time
	// State is set for AdmitDone and AdmitNo.
	State string
	// Started is the attempt AdmitOrStart started (AdmitStarted): the
	// caller holds its lease and must run it.
	Started *Started
}

// TaskRef names a task and what its admission needs to know.
type TaskRef struct {
	Tenant, ID, Function string
	Priority             int
}

// Admit puts a waiting task (from a lane delivery, or due in the delay
// set) into its function's ready queue, in its priority's band. It is
// idempotent: a task already ready, running under a live lease or ended is
// left as it is. A task whose lease ended (its dispatcher died) is taken
// over: it is ready again, and the old attempt's outcome is refused.
func (l *Ledger) Admit(ctx context.Context, t TaskRef) (Admission, error) {
	return l.admit(ctx, t, nil)
}

// FastStart asks AdmitOrStart to start the task at once if it may: the
// lease's owner, its length, and the limits the function's tasks start
// under (those of Take).
type FastStart struct {
	Owner  string
	Lease  time.Duration
	Limits TakeLimits
}

// AdmitOrStart is Admit for a caller with a free worker: when nothing of
// the task's function waits ahead of it (its band and the higher ones are
// empty; every band, for a limited function) and every limit Take applies
// allows a start (the function's limit and high-band reservation, its
// rate, the tenant's quota and rate), it starts the task in the same step,
// without the ready-queue entry, the round robin and the take: the verdict
// is AdmitStarted, and Started is the attempt the caller now holds under
// the lease until LeaseUntil. Otherwise it does what Admit does. In the
// partitioned layout it always does what Admit does (no fast start: the
// task's partition and its function's slot are two scripts).
func (l *Ledger) AdmitOrStart(ctx context.Context, t TaskRef, fs FastStart) (Admission, error) {
	return l.admit(ctx, t, &fs)
}

func (l *Ledger) admit(ctx context.Context, t TaskRef, fs *FastStart) (Admission, error) {
	if l.Partitioned() {
		return l.admitOne(ctx, t) // two steps, no fast start (admit_split.go)
	}
	now := l.cfg.Now()
	res, err := l.batch.eval(ctx, admitScript, l.admitKeys(t), l.admitStartArgs(t, now, fs)...).StringSlice()
	if err != nil {
		return Admission{}, fmt.Errorf("admitting task %s: %w", t.ID, err)
	}
	a := admission(res)
	if a.Verdict == AdmitStarted {
		if fs == nil || len(res) < 9 {
			return Admission{}, fmt.Errorf("admitting task %s: the ledger answered %q", t.ID, res)
		}
		a.LeaseUntil = now.Add(fs.Lease)
		s := startedFrom(res[2:9])
		a.Started = &s
	}
	return a, nil
}

func (l *Ledger) admitKeys(t TaskRef) []string {
	return []string{l.taskKey(t.Tenant, t.ID), l.DelayKey(t.Tenant), l.OutboxStream(t.Tenant), l.ExpiryKey(t.Tenant), l.fnStateKey(t.Function),
		l.parkedKey(t.Tenant), l.pausesKey(t.Tenant), l.pauseCountKey(t.Tenant), l.inflightKey(t.Function), l.fnRateKey(t.Function)}
}

// admitArgs are admit's arguments without a fast start.
func (l *Ledger) admitArgs(t TaskRef, now time.Time) []any {
	return []any{us(now), l.statePrefix(t.Tenant), t.ID, Member(t.Tenant, t.ID), l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		t.Priority, string(BandOf(t.Priority)), l.WakeChannel(), t.Function, l.fnPrefix(t.Function), t.Tenant, "0"}
}

// admitStartArgs are admit's arguments with fs's fast start (nil: none).
func (l *Ledger) admitStartArgs(t TaskRef, now time.Time, fs *FastStart) []any {
	args := l.admitArgs(t, now)
	if fs == nil {
		return args
	}
	args[len(args)-1] = "1"
	lim, tl := fs.Limits, fs.Limits.Tenants[t.Tenant]
	return append(args, us(now.Add(fs.Lease)), fs.Owner, lim.Concurrency, lim.AdaptiveMin, lim.ReservedHigh,
		l.cfg.Prefix, interval(lim.Rate), max(lim.Burst, 1), tl.Concurrency, interval(tl.Rate), max(tl.Burst, 1), l.luaPartitions())
}

// startedFrom reads a started task from take's and admit's answer:
// tenant, id, attempt, throttles, wait µs, redrives, env.
func startedFrom(r []string) Started {
	s := Started{Tenant: r[0], ID: r[1], Message: []byte(r[6])}
	s.Attempt, _ = strconv.Atoi(r[2])
	s.Redrives, _ = strconv.Atoi(r[5])
	s.Throttles, _ = strconv.Atoi(r[3])
	wait, _ := strconv.ParseInt(r[4], 10, 64)
	s.Wait = time.Duration(wait) * time.Microsecond
	return s
}

func microTime(s string) time.Time {
	n, _ := strconv.ParseFloat(s, 64)
	return time.UnixMicro(int64(n))
}

// UnparkAll is Unpark for each tenant of quotas (its quota, 0: none) in
// one pipelined round trip: the scheduler's sweep.
func (l *Ledger) UnparkAll(ctx context.Context, quotas map[string]int) error {
	if l.Partitioned() {
		if err := l.unparkSplit(ctx, quotas); err != nil {
			return fmt.Errorf("unparking tenants: %w", err)
		}
		return nil
	}
	calls := make([]*scriptCall, 0, len(quotas))
	for tenant, quota := range quotas {
		calls = append(calls, call(unparkScript, []string{l.tenantInflightKey(tenant), l.parkedKey(tenant)},
			us(l.cfg.Now()), quota, tenant, l.WakeChannel()))
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return fmt.Errorf("unparking tenants: %w", err)
	}
	return nil
}

// Unpark puts a tenant back into the round robin of the functions it was
// parked in, if it is below quota (0: it has none, e.g. no longer): for
// attempts that ended without a finish (their dispatcher died and the
// lease ran out), and for a tenant whose quota was removed while it was
// parked.
func (l *Ledger) Unpark(ctx context.Context, tenant string, quota int) error {
	if l.Partitioned() {
		if err := l.unparkSplit(ctx, map[string]int{tenant: quota}); err != nil {
			return fmt.Errorf("unparking tenant %s: %w", tenant, err)
		}
		return nil
	}
	err := l.run(ctx, unparkScript, []string{l.tenantInflightKey(tenant), l.parkedKey(tenant)},
		us(l.cfg.Now()), quota, tenant, l.WakeChannel()).Err()
	if err != nil {
		return fmt.Errorf("unparking tenant %s: %w", tenant, err)
	}
	return nil
}

// Band is a priority band of a function's ready queue.
type Band string

// The bands: priorities 7-9, 3-6 and 0-2.
const (
	BandHigh   Band = "high"
	BandNormal Band = "normal"
	BandLow    Band = "low"
)

// Bands lists the bands, highest first.
var Bands = []Band{BandHigh, BandNormal, BandLow}

// BandOf returns the band of a priority (0-9).
func BandOf(priority int) Band {
	switch {
	case priority >= 7:
		return BandHigh
	case priority >= 3:
		return BandNormal
	default:
		return BandLow
	}
}
