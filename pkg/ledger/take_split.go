package ledger

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"time"
)

// Take in the partitioned layout (decision 0017, "Scripts: which split
// how"): a function's ready queues and in-flight set are in its slot, each
// task's record and its tenant's sets in its partition's, so a take is two
// phases. take.f, in the function's slot, picks ready refs under the
// function's limit, bands, round robin and rate, and reserves each (a
// member of the in-flight set scored by the lease end the start will
// give it); start.t, one call per partition involved (one pipeline), checks
// each task and starts it or refuses it; requeue.f gives the refused refs'
// reservations back.

// takeRounds bounds the take.f/start.t rounds of one Take (takeSplit).
const takeRounds = 3

// takeFScript reserves up to ARGV[3] of a function's ready refs: take's
// bands, round robin and limits without reading any task record. A ref
// whose member is in flight under a live score is reserved over it: the
// member keeps counting once, its score grows to the reservation's end,
// and the ref goes to start.t, which alone knows whether the task is
// queued (the member is an ended attempt's whose release.f is late) or
// not (a stale ref). The function's rate turn is taken at the
// reservation, and is not given back if start.t refuses the task.
// KEYS: 1 function state, 2 function in-flight set, 3 its normal and low
// band subset (inflight:nh), 4 function rate state
// ARGV: 1 now µs, 2 reservation end µs (the lease end of the starts),
// 3 how many, 4 concurrency (0: none), 5 adaptive min (0: not adaptive),
// 6 reserved-high share, 7 function key prefix, 8 function emission
// interval µs (0: no rate), 9 function burst
// Returns {status, wait µs, then per reserved ref: tenant, id, band, queue
// score, the live member's score it reserved over ("" for none)}; status
// as take's.
var takeFScript = newSplitScript(luaGCRA + luaStartHelpers + luaBands + `
local now = tonumber(ARGV[1])
local S, I, NH, R = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local want = tonumber(ARGV[3])
local limit = fnlimit(S, tonumber(ARGV[4]), tonumber(ARGV[5]))
-- Members past their score are the reservation sweep's: not counted.
local inflight = redis.call('ZCOUNT', I, ARGV[1], '+inf')
local reserved = 0
if limit > 0 then reserved = math.floor(limit * tonumber(ARGV[6])) end
-- With slots reserved for the high band, count the normal and low bands'
-- live members; one whose in-flight twin is gone (a release that did not
-- reach inflight:nh) is dropped.
local nonhigh = 0
if reserved > 0 then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', NH, ARGV[1], '+inf')) do
    local s = redis.call('ZSCORE', I, m)
    if s and tonumber(s) >= now then nonhigh = nonhigh + 1 else redis.call('ZREM', NH, m) end
  end
end
local FP = ARGV[7]
local fint, fburst = tonumber(ARGV[8]), tonumber(ARGV[9])
local b = bandstate(S)
local function open(i) return i == 1 or limit == 0 or nonhigh < limit - reserved end
local out = {}
local taken, status, wait, steps = 0, 'empty', 0, 0
while true do
  if taken >= want then status = 'done'; break end
  steps = steps + 1
  if steps > want * 4 + 32 then status = 'more'; break end
  if limit > 0 and inflight >= limit then status = 'limit'; break end
  local best, held = nextband(b, open)
  if best == nil then
    if held then status = 'limit' end
    break
  end
  if fint > 0 then
    local w = gcra(R, fint, fburst, now)
    if w > 0 then status = 'rate'; wait = w; break end
  end
  local tenant, id, score = popref(b, FP, best)
  if id then
    local member = tenant .. '/' .. id
    local cur = redis.call('ZSCORE', I, member)
    local prev = ''
    if fint > 0 then
      local _, tat = gcra(R, fint, fburst, now)
      settat(R, tat, now)
    end
    if cur and tonumber(cur) >= now then
      -- A live member: an ended attempt whose release.f is on its way
      -- (the task is queued again), a start or claim in flight, or a
      -- running attempt (a stale ref). It counts already; start.t tells
      -- which. Its score grows to the lease (release.f's fence keeps a
      -- member scored past the lease it ended); requeue.f gives it back.
      prev = cur
      redis.call('ZADD', I, 'GT', ARGV[2], member)
      redis.call('ZADD', NH, 'XX', 'GT', ARGV[2], member)
    else
      redis.call('ZADD', I, ARGV[2], member)
      if best > 1 then
        redis.call('ZADD', NH, ARGV[2], member)
        nonhigh = nonhigh + 1
      else
        redis.call('ZREM', NH, member)
      end
      inflight = inflight + 1
    end
    taken = taken + 1
    out[#out+1] = tenant
    out[#out+1] = id
    out[#out+1] = BANDS[best]
    out[#out+1] = score
    out[#out+1] = prev
  end
end
savebands(S, b)
if limit > 0 and (inflight >= limit or nonhigh >= limit - reserved) and b.n[1] + b.n[2] + b.n[3] > 0 then
  redis.call('HSET', S, 'sat', '1')
end
local res = {status, tostring(math.ceil(wait))}
for _, v in ipairs(out) do res[#res+1] = v end
return res
`)

// startTScript starts the reserved refs of one partition: per ref, a task
// no longer queued is stale, one past its ttl ends expired, one whose
// tenant is at its quota is refused (the tenant parked in the ref's
// band), one over its tenant's rate waits for its turn in the delay set,
// and the others start (luaBeginTask: the function's side was taken by
// take.f). A call after the reservations' end refuses every ref ("late"):
// the reservation sweep may have put them back in their ready queue.
// KEYS: 1 delay, 2 expiry set, 3 outbox, then one task hash per ref
// ARGV: 1 now µs, 2 lease end µs (the reservations' end), 3 owner,
// 4 retention ms, 5 outbox max length, 6 function, 7 function key prefix,
// 8 number of tenant limits k, then k x (tenant, quota, emission interval
// µs, burst), then per ref: tenant, id, band
// Returns per ref its verdict: "run" followed by tenant, id, attempt,
// throttles, wait µs, redrives, env; or late, stale, expired, quota, rate.
var startTScript = newSplitScript(luaTerminate + luaGCRA + luaStartHelpers + `
local function begin(c, h, f, from, tenant, id, tp, quota, entries, out)
  local member = tenant .. '/' .. id
` + luaBeginTask + `
local now = tonumber(ARGV[1])
local late = now > tonumber(ARGV[2])
local c = {now = now, nowstr = ARGV[1], lease = ARGV[2], owner = ARGV[3], delay = KEYS[1], expiry = KEYS[2]}
local fn, FP = ARGV[6], ARGV[7]
local tl = {}
local i = 9
for _ = 1, tonumber(ARGV[8]) do
  tl[ARGV[i]] = {tonumber(ARGV[i+1]), tonumber(ARGV[i+2]), tonumber(ARGV[i+3])}
  i = i + 4
end
local out = {}
for r = 4, #KEYS do
  local tenant, id, band = ARGV[i], ARGV[i+1], ARGV[i+2]
  i = i + 3
  local h = KEYS[r]
  local tp = string.sub(h, 1, #h - #id - 5)
  local member = tenant .. '/' .. id
  local lim = tl[tenant]
  local quota = 0
  if lim then quota = lim[1] end
  local f = nil
  if not late then
    f = redis.call('HMGET', h, 'state', 'expires', 'started', 'rate_slot', 'scheduled', 'created', 'throttles')
  end
  if late then
    out[#out+1] = 'late'
  elseif f[1] ~= 'queued' then
    out[#out+1] = 'stale'
  elseif tonumber(f[2]) and now > tonumber(f[2]) and not f[3] then
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', KEYS[2], member)
    terminate(h, KEYS[3], tp .. 'st:', id, 'queued', 'expired', ARGV[1], 'expired: its ttl passed before it started', ARGV[4], ARGV[5])
    out[#out+1] = 'expired'
  elseif tenantfull(tp, quota, ARGV[1]) then
    -- requeue.f takes the tenant out of the band's round robin; the next
    -- of its attempts to end puts it back (unpark).
    redis.call('SADD', tp .. 'parked', fn .. '\n' .. FP .. 'ready:' .. band)
    out[#out+1] = 'quota'
  else
` + luaTenantRate + `
    if tw > 0 then
      redis.call('ZADD', KEYS[1], now + tw, member)
      out[#out+1] = 'rate'
    else
      out[#out+1] = 'run'
      begin(c, h, f, 'queued', tenant, id, tp, quota, {}, out)
    end
  end
end
return out
`)

// luaReady puts task id of tenant into its function's ready queue in band
// with score, unless it is there (returns 1 when it put it): admit.f's,
// and requeue.f's and the sweep's for a task whose ref was taken but
// which did not start. The tenant joins the band's round robin at the
// least served score (an idle tenant banks no credit) unless parked
// ("1"); a band with no startable tenant before wakes the dispatchers.
const luaReady = `
local function ready(S, FP, band, tenant, id, score, parked, wake, fn)
  local ring = FP .. 'ready:' .. band
  local q = ring .. ':' .. tenant
  if redis.call('ZADD', q, 'NX', score, id) == 0 then return 0 end
  redis.call('HINCRBY', S, 'n_' .. band, 1)
  if redis.call('ZCARD', q) == 1 and parked ~= '1' then
    local top = redis.call('ZRANGE', ring, 0, 0, 'WITHSCORES')
    redis.call('ZADD', ring, 'NX', top[2] or 0, tenant)
    if #top == 0 then redis.call('PUBLISH', wake, fn) end
  end
  return 1
end

-- unreserve drops member's reservation if it still has score s (a
-- reservation taken over, moved or dropped meanwhile is not this
-- caller's): whether it dropped it.
local function unreserve(I, NH, member, s)
  local cur = redis.call('ZSCORE', I, member)
  if not cur or tonumber(cur) ~= tonumber(s) then return false end
  redis.call('ZREM', I, member)
  redis.call('ZREM', NH, member)
  return true
end
`

// requeueFScript gives back the reservations of refs start.t refused: a
// ref refused for its tenant's quota goes back to the head of the
// tenant's queue (its score) and the tenant leaves the band's round robin
// (start.t parked it); a late one goes back to its queue; the others
// (stale, expired, waiting for a rate turn) are dropped. Only
// reservations that still have the caller's score are touched; one
// take.f made over a live member gets that member's score back.
// KEYS: 1 function state, 2 function in-flight set, 3 inflight:nh
// ARGV: 1 reservation end µs, 2 function key prefix, 3 wake channel,
// 4 function, then per ref: verdict (quota, late, drop), tenant, id,
// band, queue score, the live member's score take.f reserved over ("")
var requeueFScript = newSplitScript(luaReady + `
local S, I, NH = KEYS[1], KEYS[2], KEYS[3]
local FP = ARGV[2]
for i = 5, #ARGV, 6 do
  local v, tenant, id, band, score, prev = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  local member = tenant .. '/' .. id
  local back
  if prev == '' then
    back = unreserve(I, NH, member, ARGV[1])
  else
    -- Reserved over a live member: the member is its owner's again.
    local cur = redis.call('ZSCORE', I, member)
    if cur and tonumber(cur) == tonumber(ARGV[1]) and tonumber(prev) < tonumber(cur) then
      redis.call('ZADD', I, 'XX', prev, member)
      redis.call('ZADD', NH, 'XX', prev, member)
    end
    back = true
  end
  if back and v == 'quota' then
    local ring = FP .. 'ready:' .. band
    if redis.call('ZADD', ring .. ':' .. tenant, 'NX', score, id) == 1 then
      redis.call('HINCRBY', S, 'n_' .. band, 1)
    end
    redis.call('ZREM', ring, tenant)
  elseif back and v == 'late' then
    ready(S, FP, band, tenant, id, score, '0', ARGV[3], ARGV[4])
  end
end
return 1
`)

// reparkTScript parks a tenant again after requeue.f took it out of a
// band's round robin: an attempt of the tenant that ended between start.t
// (which parked it) and requeue.f unparked it, and requeue.f's removal
// came after, leaving it neither in the round robin nor parked. It
// answers whether the tenant is below its quota, so that the caller
// unparks it.
// KEYS: 1 tenant in-flight set, 2 tenant parked set. ARGV: 1 now µs,
// 2 quota, then parked members ("<fn>\n<ring>").
// Returns 1 when the tenant is below its quota.
var reparkTScript = newSplitScript(`
redis.call('SADD', KEYS[2], unpack(ARGV, 3))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then return 1 end
return 0
`)

// repark runs repark.t for each tenant refused for its quota (one
// pipeline) and unparks those below it.
func (l *Ledger) repark(ctx context.Context, function string, refs []*takeRef, lim TakeLimits) error {
	members := map[string][]any{}
	var tenants []string
	for _, r := range refs {
		if r.verdict != "quota" {
			continue
		}
		if _, ok := members[r.tenant]; !ok {
			tenants = append(tenants, r.tenant)
		}
		members[r.tenant] = append(members[r.tenant], function+"\n"+l.fnPrefix(function)+"ready:"+r.band)
	}
	if len(tenants) == 0 {
		return nil
	}
	now := us(l.cfg.Now())
	calls := make([]*scriptCall, len(tenants))
	for i, t := range tenants {
		calls[i] = call(l.script(reparkTScript), []string{l.tenantInflightKey(t), l.parkedKey(t)},
			append([]any{now, lim.Tenants[t].Concurrency}, members[t]...)...)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return fmt.Errorf("parking tenants of %s: %w", function, err)
	}
	for i, t := range tenants {
		if n, _ := calls[i].cmd.Int(); n == 1 {
			if err := l.Unpark(ctx, t, lim.Tenants[t].Concurrency); err != nil {
				return err
			}
		}
	}
	return nil
}

// takeRef is a ref take.f reserved.
type takeRef struct {
	tenant, id, band, score string
	// prev is the score of the live member take.f reserved over ("").
	prev    string
	verdict string
}

// takeSplit is Take in the partitioned layout: take.f, start.t per
// partition, requeue.f for the refused (and repark.t for tenants refused
// for their quota), repeated (up to takeRounds) while
// fewer than n started and refs were refused (for a quota, or take.f
// reserved all it was asked for). Parked counts the tenants (and bands)
// parked, as take's does; a round that started fewer than take.f reserved
// ends TakeMore, not TakeDone.
// Every round's reservations end at the same lease end, the Taken's
// LeaseUntil. A start.t that failed leaves its refs reserved: the
// reservation sweep repairs them (decision 0017, "Crash cases"); once
// some tasks started, takeSplit returns them without the error (the
// caller must run them).
func (l *Ledger) takeSplit(ctx context.Context, function, owner string, n int, lease time.Duration, lim TakeLimits) (Taken, error) {
	now := l.cfg.Now()
	until := now.Add(lease)
	tk := Taken{LeaseUntil: until}
	for range takeRounds {
		refs, status, wait, err := l.takeF(ctx, function, now, until, n-len(tk.Tasks), lim)
		if err != nil {
			return l.takeFailed(tk, err)
		}
		tk.Status, tk.Wait = status, wait
		if len(refs) == 0 {
			break
		}
		started, serr := l.startT(ctx, function, owner, until, refs, lim)
		tk.Tasks = append(tk.Tasks, started...)
		parked := map[[2]string]bool{}
		for _, r := range refs {
			switch r.verdict {
			case "quota":
				parked[[2]string{r.tenant, r.band}] = true
			case "expired":
				tk.Expired++
			}
		}
		tk.Parked += len(parked)
		err = l.requeueF(ctx, function, until, refs)
		if err == nil && len(parked) > 0 {
			err = l.repark(ctx, function, refs, lim)
		}
		if err = cmp.Or(err, serr); err != nil {
			return l.takeFailed(tk, err)
		}
		// Another round while refs were refused and more may start: the
		// refused tenants are out of the round robin, stale refs dropped.
		if len(tk.Tasks) >= n || (len(parked) == 0 && status != TakeDone) {
			break
		}
	}
	if tk.Status == TakeDone && len(tk.Tasks) < n {
		tk.Status = TakeMore
	}
	return tk, nil
}

// takeFailed is Take's answer to err: the tasks started so far without
// it (their attempts must run), else the error.
func (l *Ledger) takeFailed(tk Taken, err error) (Taken, error) {
	if len(tk.Tasks) > 0 {
		tk.Status = TakeMore
		return tk, nil
	}
	return Taken{}, err
}

// takeF runs take.f for up to n refs.
func (l *Ledger) takeF(ctx context.Context, function string, now, until time.Time, n int, lim TakeLimits) ([]*takeRef, TakeStatus, time.Duration, error) {
	res, err := l.batch.eval(ctx, l.script(takeFScript),
		[]string{l.fnStateKey(function), l.inflightKey(function), l.inflightNHKey(function), l.fnRateKey(function)},
		us(now), us(until), n, lim.Concurrency, lim.AdaptiveMin, lim.ReservedHigh, l.fnPrefix(function),
		interval(lim.Rate), max(lim.Burst, 1)).StringSlice()
	if err != nil {
		return nil, "", 0, fmt.Errorf("taking tasks of %s: %w", function, err)
	}
	w, _ := strconv.ParseInt(res[1], 10, 64)
	var refs []*takeRef
	for i := 2; i+4 < len(res); i += 5 {
		refs = append(refs, &takeRef{tenant: res[i], id: res[i+1], band: res[i+2], score: res[i+3], prev: res[i+4]})
	}
	return refs, TakeStatus(res[0]), time.Duration(w) * time.Microsecond, nil
}

// startT runs start.t once per partition of refs, in one pipeline, sets
// each ref's verdict and returns the started tasks in refs' order. A
// partition whose call failed leaves its refs' verdicts empty (requeueF
// leaves their reservations to the sweep).
func (l *Ledger) startT(ctx context.Context, function, owner string, until time.Time, refs []*takeRef, lim TakeLimits) ([]Started, error) {
	byPart := map[int][]*takeRef{}
	var parts []int
	for _, r := range refs {
		k := l.partition(r.tenant)
		if _, ok := byPart[k]; !ok {
			parts = append(parts, k)
		}
		byPart[k] = append(byPart[k], r)
	}
	now := us(l.cfg.Now())
	calls := make([]*scriptCall, len(parts))
	for i, k := range parts {
		keys := []string{l.delayKeyAt(k), l.expiryKeyAt(k), l.outboxAt(k)}
		args := []any{now, us(until), owner, l.cfg.Retention.Milliseconds(), OutboxMaxLen, function, l.fnPrefix(function)}
		tenants := map[string]bool{}
		var targs []any
		for _, r := range byPart[k] {
			keys = append(keys, l.taskKey(r.tenant, r.id))
			if tl, ok := lim.Tenants[r.tenant]; ok && !tenants[r.tenant] {
				tenants[r.tenant] = true
				targs = append(targs, r.tenant, tl.Concurrency, interval(tl.Rate), max(tl.Burst, 1))
			}
		}
		args = append(append(args, len(tenants)), targs...)
		for _, r := range byPart[k] {
			args = append(args, r.tenant, r.id, r.band)
		}
		calls[i] = call(l.script(startTScript), keys, args...)
	}
	err := l.batch.exec(ctx, calls...)
	started := map[*takeRef]Started{}
	for i, k := range parts {
		res, cerr := calls[i].cmd.StringSlice()
		if cerr != nil {
			continue
		}
		j := 0
		for _, r := range byPart[k] {
			if j >= len(res) {
				break
			}
			r.verdict = res[j]
			j++
			if r.verdict == "run" && j+7 <= len(res) {
				started[r] = startedFrom(res[j : j+7])
				j += 7
			}
		}
	}
	out := make([]Started, 0, len(started))
	for _, r := range refs {
		if s, ok := started[r]; ok {
			out = append(out, s)
		}
	}
	if err != nil {
		return out, fmt.Errorf("starting tasks of %s: %w", function, err)
	}
	return out, nil
}

// requeueF gives back the reservations of the refs start.t refused.
func (l *Ledger) requeueF(ctx context.Context, function string, until time.Time, refs []*takeRef) error {
	args := []any{us(until), l.fnPrefix(function), l.WakeChannel(), function}
	for _, r := range refs {
		v := r.verdict
		switch v {
		case "run", "":
			continue
		case "quota", "late":
		default:
			v = "drop"
		}
		args = append(args, v, r.tenant, r.id, r.band, r.score, r.prev)
	}
	if len(args) == 4 {
		return nil
	}
	err := l.batch.eval(ctx, l.script(requeueFScript), []string{l.fnStateKey(function), l.inflightKey(function), l.inflightNHKey(function)},
		args...).Err()
	if err != nil {
		return fmt.Errorf("giving back reservations of %s: %w", function, err)
	}
	return nil
}
