package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Take: a dispatcher with free workers starts tasks from a function's ready
// queue by capacity (see dispatch.go for the queue's layout).

// take starts up to ARGV[4] of a function's ready tasks under its limits.
// KEYS: 1 function state, 2 function in-flight set, 3 function rate state,
// in the legacy layout 4 delay, 5 outbox, 6 expiry set (in the partitioned
// one, each task's partition's are built from the ledger prefix)
// ARGV: 1 now µs, 2 lease-until µs, 3 owner, 4 how many, 5 concurrency
// (0: none), 6 adaptive min (0: not adaptive), 7 reserved-high share,
// 8 ledger prefix, 9 function key prefix, 10 retention ms, 11 outbox max
// length, 12 function emission interval µs (0: no rate), 13 function
// burst, 14 function, 15 partitions (luaPartitions), 16 number of tenant
// limits k, then k x (tenant, quota, emission interval µs, burst)
// Returns {status, wait µs, expired, parked, then per started task: tenant,
// id, attempt, throttles, wait µs, redrives, env}. status says why it stopped: done
// (it started as many as asked), empty, limit, rate (wait µs until the
// function's rate allows a start), more (call again).
var takeScript = redis.NewScript(luaTerminate + luaGCRA + luaTenantPrefix + luaStart + luaBands + `
local now = tonumber(ARGV[1])
local S = KEYS[1]
local want = tonumber(ARGV[4])
local limit = fnlimit(S, tonumber(ARGV[5]), tonumber(ARGV[6]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
local inflight = redis.call('ZCARD', KEYS[2])
local reserved = 0
if limit > 0 then reserved = math.floor(limit * tonumber(ARGV[7])) end
local P, FP, fn, parts = ARGV[8], ARGV[9], ARGV[14], tonumber(ARGV[15])
-- With slots reserved for the high band, the normal and low bands share
-- the others: count their running attempts.
local nonhigh = 0
if reserved > 0 then nonhigh = nonhighs(KEYS[2], P, parts) end
local fint, fburst = tonumber(ARGV[12]), tonumber(ARGV[13])
local c = {now = now, nowstr = ARGV[1], lease = ARGV[2], owner = ARGV[3], finflight = KEYS[2],
  ratekey = KEYS[3], fint = fint, fburst = fburst}
local tl = {}
local i = 17
for _ = 1, tonumber(ARGV[16]) do
  tl[ARGV[i]] = {tonumber(ARGV[i+1]), tonumber(ARGV[i+2]), tonumber(ARGV[i+3])}
  i = i + 4
end
local b = bandstate(S)
-- The normal and low bands share the slots the high band's reservation
-- leaves.
local function open(i) return i == 1 or limit == 0 or nonhigh < limit - reserved end
local out = {}
local started, expired, parked, status, wait = 0, 0, 0, 'empty', 0
local steps = 0
while true do
  if started >= want then status = 'done'; break end
  steps = steps + 1
  if steps > want * 4 + 32 then status = 'more'; break end
  if limit > 0 and inflight >= limit then status = 'limit'; break end
  local best, held = nextband(b, open)
  if best == nil then
    if held then status = 'limit' end
    break
  end
  if fint > 0 then
    local w = gcra(KEYS[3], fint, fburst, now)
    if w > 0 then status = 'rate'; wait = w; break end
  end
  local tenant, id, score, q, ring = popref(b, FP, best)
  if id then
    local tp = tprefix(P, parts, tenant)
    local delay, outbox, expiry = tshared(P, parts, tenant, KEYS[4], KEYS[5], KEYS[6])
    c.delay, c.expiry = delay, expiry
    local h = tp .. 'task:' .. id
    local member = tenant .. '/' .. id
    local lim = tl[tenant]
    local quota = 0
    if lim then quota = lim[1] end
    -- Anything but queued is a stale entry (cancelled, expired, started
    -- through another entry): dropped.
    -- One read of the fields the start needs (not the message: a stale
    -- entry does not start).
    local f = redis.call('HMGET', h, 'state', 'expires', 'started', 'rate_slot', 'scheduled', 'created', 'throttles')
    if f[1] == 'queued' then
      local expires = tonumber(f[2])
      local full = tenantfull(tp, quota, ARGV[1])
      if expires and now > expires and not f[3] then
        redis.call('ZREM', delay, member)
        redis.call('ZREM', expiry, member)
        terminate(h, outbox, tp .. 'st:', id, 'queued', 'expired', ARGV[1], 'expired: its ttl passed before it started', ARGV[10], ARGV[11])
        expired = expired + 1
      elseif full then
        -- The tenant is at its quota: its queue keeps its place and
        -- leaves the round robin until one of its attempts ends.
        redis.call('ZADD', q, score, id)
        redis.call('ZREM', ring, tenant)
        redis.call('SADD', tp .. 'parked', fn .. '\n' .. ring)
        b.n[best] = b.n[best] + 1
        parked = parked + 1
      else
        -- The tenant's rate: a task over it is given its turn (a
        -- reserved slot in the tenant's GCRA timeline) and waits for it
        -- in the delay set; when it comes back it starts unchecked.
` + luaTenantRate + `        if tw > 0 then
          redis.call('ZADD', delay, now + tw, member)
        else
          begin(c, h, f, 'queued', tenant, id, tp, quota, {}, out)
          inflight = inflight + 1
          if best > 1 then nonhigh = nonhigh + 1 end
          started = started + 1
        end
      end
    end
  end
end
savebands(S, b)
if limit > 0 and (inflight >= limit or nonhigh >= limit - reserved) and b.n[1] + b.n[2] + b.n[3] > 0 then
  redis.call('HSET', S, 'sat', '1')
end
local res = {status, tostring(math.ceil(wait)), tostring(expired), tostring(parked)}
for _, v in ipairs(out) do res[#res+1] = v end
return res
`)

// luaTenantRate is take's (and start.t's) tenant rate check of task h
// (fields f, tenant key prefix tp, tenant limits lim): tw is the wait
// until its turn (0: it may start now). A task over the rate is given its
// turn (rate_slot) and, when it comes back, starts unchecked.
const luaTenantRate = `          local tw = 0
          local slot = tonumber(f[4] or '0')
          if slot > 0 and now + 2000 < slot then
            tw = slot - now
          elseif slot > 0 then
            redis.call('HDEL', h, 'rate_slot')
          elseif lim and lim[2] > 0 then
            local w, tat = gcra(tp .. 'rate', lim[2], lim[3], now)
            if w > 0 then
              tat = math.max(tonumber(redis.call('GET', tp .. 'rate') or '0'), now) + lim[2]
              redis.call('HSET', h, 'rate_slot', now + w)
              tw = w
            end
            settat(tp .. 'rate', tat, now)
          end
`

// luaBands is how take and take.f pick the next ref of a function's ready
// queue: the bands by stride scheduling (weights 6, 3 and 1; a band back
// from empty starts at the current pass, so it banks no credit), tenants
// in round robin within a band (the least served first). One copy, so the
// two layouts pick alike.
const luaBands = `
local BANDS = {'high', 'normal', 'low'}
local STRIDE = {10, 20, 60}
-- bandstate reads the function's band counts and passes (state hash S).
local function bandstate(S)
  local sv = redis.call('HMGET', S, 'n_high', 'n_normal', 'n_low', 'pass_high', 'pass_normal', 'pass_low', 'vt')
  return {n = {tonumber(sv[1] or '0'), tonumber(sv[2] or '0'), tonumber(sv[3] or '0')},
    pass = {tonumber(sv[4] or '0'), tonumber(sv[5] or '0'), tonumber(sv[6] or '0')},
    vt = tonumber(sv[7] or '0'), drained = {false, false, false}}
end
-- nextband is the band the next start comes from (nil: none) among the
-- bands with entries and a startable tenant; open(i) says whether band i
-- may start now (held: a band with entries waits for it).
local function nextband(b, open)
  local best, held = nil, false
  for i = 1, 3 do
    if b.n[i] > 0 and not b.drained[i] then
      if open(i) then
        if b.pass[i] < b.vt then b.pass[i] = b.vt end
        if best == nil or b.pass[i] < b.pass[best] then best = i end
      else
        held = true
      end
    end
  end
  return best, held
end
-- popref pops the head ref of band i's least served tenant (FP: the
-- function's key prefix) and moves the tenant one turn on: tenant, id,
-- queue score, the tenant's queue and the band's ring. Nothing when every
-- tenant left in the band is parked (its tasks stay counted and start once
-- their tenant is back: the band is done for this call) or the tenant's
-- queue was empty.
local function popref(b, FP, i)
  local ring = FP .. 'ready:' .. BANDS[i]
  local top = redis.call('ZRANGE', ring, 0, 0, 'WITHSCORES')
  if #top == 0 then
    b.drained[i] = true
    return nil
  end
  local tenant, tscore = top[1], tonumber(top[2])
  local q = ring .. ':' .. tenant
  local popped = redis.call('ZPOPMIN', q)
  if #popped == 0 then
    redis.call('ZREM', ring, tenant)
    return nil
  end
  b.n[i] = b.n[i] - 1
  b.vt = b.pass[i]
  b.pass[i] = b.pass[i] + STRIDE[i]
  if redis.call('ZCARD', q) == 0 then
    redis.call('ZREM', ring, tenant)
  else
    redis.call('ZADD', ring, tscore + 1, tenant)
  end
  return tenant, popped[1], popped[2], q, ring
end
-- savebands writes the counts (never below 0) and passes back.
local function savebands(S, b)
  for i = 1, 3 do if b.n[i] < 0 then b.n[i] = 0 end end
  redis.call('HSET', S, 'n_high', b.n[1], 'n_normal', b.n[2], 'n_low', b.n[3],
    'pass_high', b.pass[1], 'pass_normal', b.pass[2], 'pass_low', b.pass[3], 'vt', b.vt)
end
`

// TakeLimits are the limits a function's tasks start under.
type TakeLimits struct {
	// Concurrency caps the function's running attempts (0: none); with
	// AdaptiveMin set it caps the adaptive limit.
	Concurrency int
	// AdaptiveMin, when positive, makes the limit the function's adaptive
	// one (stored in its state by Feedback), at least AdaptiveMin.
	AdaptiveMin int
	// ReservedHigh is the share of the limit only the high band may use.
	ReservedHigh float64
	// Rate and Burst cap the function's starts per second (0: none).
	Rate  float64
	Burst int
	// Tenants are the limits of tenants that have any.
	Tenants map[string]TenantLimits
}

// TenantLimits are a tenant's quota and rate.
type TenantLimits struct {
	// Concurrency caps the tenant's running attempts (0: none).
	Concurrency int
	// Rate and Burst cap its starts per second (0: none).
	Rate  float64
	Burst int
}

// TakeStatus says why Take stopped.
type TakeStatus string

// Take statuses.
const (
	// TakeDone: it started as many as asked.
	TakeDone TakeStatus = "done"
	// TakeEmpty: nothing (else) is ready.
	TakeEmpty TakeStatus = "empty"
	// TakeLimit: the function is at its limit (for what is ready).
	TakeLimit TakeStatus = "limit"
	// TakeRate: the function's rate allows the next start after Wait.
	TakeRate TakeStatus = "rate"
	// TakeMore: it stopped early; call again.
	TakeMore TakeStatus = "more"
)

// Started is a task Take started: the caller holds its lease.
type Started struct {
	Tenant, ID string
	Attempt    int
	// Redrives is the record's redrive count: with Attempt, the fence of
	// the calls that end the attempt (Fence).
	Redrives int
	// Throttles counts the throttled answers that did not use an attempt.
	Throttles int
	// Wait is how long the task waited from due (created, or the time of
	// its retry or delay) to this start.
	Wait time.Duration
	// Message is the stored lane message.
	Message []byte
}

// Taken is the result of Take.
type Taken struct {
	Status TakeStatus
	Wait   time.Duration
	// Expired and Parked count tasks ended for their ttl, and tasks left in
	// place because their tenant is at its quota.
	Expired, Parked int
	Tasks           []Started
	LeaseUntil      time.Time
}

// Take starts up to n of a function's ready tasks, holding each under a
// lease for owner until now+lease: the highest band first by weight (6, 3,
// 1), tenants in round robin within a band, each task's tenant under its
// quota and rate, the function under its limit and rate.
func (l *Ledger) Take(ctx context.Context, function, owner string, n int, lease time.Duration, lim TakeLimits) (Taken, error) {
	if l.Partitioned() {
		return l.takeSplit(ctx, function, owner, n, lease, lim)
	}
	now := l.cfg.Now()
	args := []any{us(now), us(now.Add(lease)), owner, n, lim.Concurrency, lim.AdaptiveMin, lim.ReservedHigh,
		l.cfg.Prefix, l.fnPrefix(function), l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		interval(lim.Rate), max(lim.Burst, 1), function, l.luaPartitions(), len(lim.Tenants)}
	for t, tl := range lim.Tenants {
		args = append(args, t, tl.Concurrency, interval(tl.Rate), max(tl.Burst, 1))
	}
	keys := []string{l.fnStateKey(function), l.inflightKey(function), l.fnRateKey(function)}
	if !l.Partitioned() {
		keys = append(keys, l.delayKeyAt(0), l.outboxAt(0), l.expiryKeyAt(0))
	}
	res, err := l.batch.eval(ctx, takeScript, keys, args...).StringSlice()
	if err != nil {
		return Taken{}, fmt.Errorf("taking tasks of %s: %w", function, err)
	}
	tk := Taken{Status: TakeStatus(res[0]), LeaseUntil: now.Add(lease)}
	w, _ := strconv.ParseInt(res[1], 10, 64)
	tk.Wait = time.Duration(w) * time.Microsecond
	tk.Expired, _ = strconv.Atoi(res[2])
	tk.Parked, _ = strconv.Atoi(res[3])
	for i := 4; i+6 < len(res); i += 7 {
		tk.Tasks = append(tk.Tasks, startedFrom(res[i:i+7]))
	}
	return tk, nil
}
