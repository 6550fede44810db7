package ledger

import "github.com/redis/go-redis/v9"

// Every state change of a task is one Lua script, so that the record, the
// state indexes, the delay set and the results outbox change together.
//
// Key layout (layout.go has both layouts; shown here is the legacy one,
// where tenant-scoped keys carry a {tenant} hash tag; the partitioned one
// writes "tl:{p<k>}:<t>:" for "tl:{t}:" and "tl:{p<k>}:delay" and so on
// for the shared sets):
//
//	tl:{t}:task:<id>       hash: the task record (see fields.go) and the stored message
//	tl:{t}:tasks           zset: every task id, score = created µs
//	tl:{t}:st:<state>      zset: task ids in that state, score = created µs
//	tl:{t}:d:<hash>        string: the task ids made from one (source, id), expires after the dedup window
//	                       (<hash>: 128 bits of SHA-256, base64url; the previous release's "dedup:<sha256 hex>" is still read)
//	tl:{t}:e:<hash>        zset: the task ids made from events with one id (any source), score = created µs,
//	                       entries and key expire after the dedup window (GET /v1/tasks?event_id=)
//	tl:{t}:log:<id>        list: the task's log (tasklog.go), expires with the task hash
//	tl:delay               zset: "<tenant>/<id>" due to be (re)published, score = due µs
//	tl:expiry              zset: "<tenant>/<id>" of waiting tasks with a ttl, score = expiry µs
//	tl:outbox              stream: one entry per terminal transition (the results outbox)

// create records the tasks made from one event unless the event was seen
// (its dedup key, or the previous release's name of it, is there).
// KEYS: 1 dedup, 2 all-index, 3 state-index, 4 delay, 5 expiry set,
// 6 event-id index, 7 legacy dedup (KEYS[1] again where there is none),
// 8.. task hashes
// ARGV: 1 dedup ttl ms, 2 created µs, 3 delay score, 4 tenant, 5 ids (comma
// separated), 6 expiry µs ("": none; any number is an expiry, 0 and
// negative ones included), then per task: id, n, n field/value
// strings, its log's "accepted" entry.
var createScript = redis.NewScript(luaLog + `
local existing = redis.call('GET', KEYS[1])
if not existing and KEYS[7] ~= KEYS[1] then existing = redis.call('GET', KEYS[7]) end
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[1])
local expires = ARGV[6]
local i = 7
local k = 8
while i <= #ARGV do
  local id = ARGV[i]
  local n = tonumber(ARGV[i+1])
  redis.call('HSET', KEYS[k], unpack(ARGV, i+2, i+1+n))
  logpush(KEYS[k], string.sub(KEYS[k], 1, #KEYS[k] - #id - 5) .. 'log:' .. id, {ARGV[i+2+n]})
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('ZADD', KEYS[6], ARGV[2], id)
  redis.call('ZADD', KEYS[3], ARGV[2], id)
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4] .. '/' .. id)
  if expires ~= '' then redis.call('ZADD', KEYS[5], expires, ARGV[4] .. '/' .. id) end
  i = i + 3 + n
  k = k + 1
end
if k > 8 then
  -- Every event with this id refreshes the index's ttl: drop what is older
  -- than the dedup window, or an id reused by many sources keeps growing.
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. string.format('%.0f', tonumber(ARGV[2]) - tonumber(ARGV[1]) * 1000))
  redis.call('PEXPIRE', KEYS[6], ARGV[1])
end
return false
`)

// claim moves a task to running for one attempt. A task whose TTL passed
// before it started ends expired instead (with its result event). A task
// over its function's concurrency or rate limit, or its tenant's rate
// limit, is not started: the verdict says how long to wait.
// KEYS: 1 task hash, 2 delay, 3 outbox, 4 function in-flight set,
// 5 function rate state, 6 tenant rate state, 7 expiry set
// ARGV: 1 now µs, 2 lease-until µs, 3 owner, 4 state-index prefix, 5 id,
// 6 delay member, 7 retention ms, 8 outbox max length, 9 function
// concurrency (0: none), 10 function emission interval µs (0: no rate),
// 11 function burst, 12 tenant emission interval µs, 13 tenant burst,
// 14 wait µs when at the concurrency limit
// Returns {verdict, detail, ...}: run/attempt/throttles, busy/lease-until,
// done/state, missing, paused, expired, throttled/wait µs/limit.
var claimScript = redis.NewScript(luaTerminate + luaGCRA + luaClaimed + `

local h = KEYS[1]
local now = tonumber(ARGV[1])
local answer, st = claimhead(h, now, KEYS[2], KEYS[7], KEYS[3])
if answer then return answer end
local conc = tonumber(ARGV[9])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[1])
  if not redis.call('ZSCORE', KEYS[4], ARGV[6]) and redis.call('ZCARD', KEYS[4]) >= conc then
    return {'throttled', ARGV[14], 'concurrency'}
  end
end
-- Rate limits: a task over a rate is given its turn (a reserved slot in
-- the GCRA timeline, so later tasks queue behind it) and told to come back
-- then; when it does, it starts without being checked again.
local slot = tonumber(redis.call('HGET', h, 'rate_slot') or '0')
if slot > 0 and now + 2000 < slot then
  return {'throttled', tostring(math.ceil(slot - now)), 'rate'}
end
if slot > 0 then
  redis.call('HDEL', h, 'rate_slot')
else
  local fwait, ftat = gcra(KEYS[5], tonumber(ARGV[10]), tonumber(ARGV[11]), now)
  local twait, ttat = gcra(KEYS[6], tonumber(ARGV[12]), tonumber(ARGV[13]), now)
  if fwait > 0 or twait > 0 then
    -- Reserve the turn in each limit that has one.
    if ftat == 0 and tonumber(ARGV[10]) > 0 then
      ftat = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), now) + tonumber(ARGV[10])
    end
    if ttat == 0 and tonumber(ARGV[12]) > 0 then
      ttat = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), now) + tonumber(ARGV[12])
    end
    local wait = math.max(fwait, twait)
    redis.call('HSET', h, 'rate_slot', now + wait)
    local limit = 'rate'
    if twait > fwait then limit = 'tenant_rate' end
    if ftat > 0 then redis.call('SET', KEYS[5], ftat, 'PX', math.ceil((ftat - now) / 1000) + 1000) end
    if ttat > 0 then redis.call('SET', KEYS[6], ttat, 'PX', math.ceil((ttat - now) / 1000) + 1000) end
    return {'throttled', tostring(math.ceil(wait)), limit}
  end
  if ftat > 0 then redis.call('SET', KEYS[5], ftat, 'PX', math.ceil((ftat - now) / 1000) + 1000) end
  if ttat > 0 then redis.call('SET', KEYS[6], ttat, 'PX', math.ceil((ttat - now) / 1000) + 1000) end
end
if conc > 0 then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[6]) end
-- Once started, a task's ttl no longer applies.
redis.call('ZREM', KEYS[7], ARGV[6])
return claimed(h, st, now, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], KEYS[2], ARGV[6])
`)

// luaClaimed is what claim and claim.t share: claimhead, and claimed,
// which starts the attempt a claim let through:
// task h (id, in state st; state indexes at prefix) runs under owner's
// lease until lease µs, whose end doubles as its delay-set entry (delay,
// member): if the dispatcher dies and stops renewing, the scheduler finds
// the task due when the lease ends and puts it back, and the next claim
// or take takes it over. Returns claim's "run" answer.
const luaClaimed = `
-- claimhead answers a claim of task h before any limit: missing, done,
-- paused, expired (its ttl passed before it started: ended, out of the
-- delay and expiry sets, with its result event in outbox) or busy (a live
-- lease). Otherwise it returns nil and the task's state. It reads the
-- shared ARGV of claim and claim.t: 4 state-index prefix, 5 id, 6 delay
-- member, 7 retention ms, 8 outbox max length.
local function claimhead(h, now, delay, expiry, outbox)
  local st = redis.call('HGET', h, 'state')
  if not st then return {'missing', ''} end
  if st == 'succeeded' or st == 'failed' or st == 'dead' or st == 'cancelled' or st == 'expired' then
    return {'done', st}
  end
  if st == 'paused' then return {'paused', ''} end
  -- A task has an expiry when the field is there, whatever its value: the
  -- epoch and times before it are expiries in the past, not "none".
  local expires = tonumber(redis.call('HGET', h, 'expires'))
  if expires and now > expires and st ~= 'running' and not redis.call('HGET', h, 'started') then
    redis.call('ZREM', delay, ARGV[6])
    redis.call('ZREM', expiry, ARGV[6])
    terminate(h, outbox, ARGV[4], ARGV[5], st, 'expired', ARGV[1], 'expired: its ttl passed before it started', ARGV[7], ARGV[8])
    return {'expired', ''}
  end
  if st == 'running' then
    -- The stored string, not tostring(): Lua prints a number this large as
    -- 1.7e+15, which the Go side cannot parse.
    local lease = redis.call('HGET', h, 'lease') or '0'
    if tonumber(lease) > now then return {'busy', lease} end
  end
  return nil, st
end
local function claimed(h, st, now, nowstr, lease, owner, prefix, id, delay, member)
  local attempt = redis.call('HINCRBY', h, 'attempts', 1)
  redis.call('HSET', h, 'state', 'running', 'lease', lease, 'owner', owner, 'attempt_started', nowstr)
  if not redis.call('HGET', h, 'started') then
    local due = tonumber(redis.call('HGET', h, 'scheduled') or redis.call('HGET', h, 'created'))
    local wait = now - due
    if wait < 0 then wait = 0 end
    redis.call('HSET', h, 'started', nowstr, 'wait_ms', math.floor(wait / 1000))
  end
  local created = redis.call('HGET', h, 'created')
  redis.call('ZREM', prefix .. st, id)
  redis.call('ZADD', prefix .. 'running', created, id)
  redis.call('ZADD', delay, lease, member)
  return {'run', tostring(attempt), redis.call('HGET', h, 'throttles') or '0', redis.call('HGET', h, 'redrives') or '0'}
end
`

// renew extends the lease of a running attempt, its delay-set entry and
// its place in the function's and (for a tenant with a quota) the
// tenant's in-flight sets. A renewal that comes after the lease ended, but
// before anyone took the task over, puts the attempt back in those sets: a
// take may have trimmed its entries meanwhile, and an attempt that goes on
// must count against the limits.
// KEYS: 1 task hash, 2 delay, 3 function in-flight set, 4 tenant in-flight
// set. ARGV: 1 attempt, 2 owner, 3 lease-until µs, 4 delay member, 5 id,
// 6 "1" when the tenant has a quota, 7 redrives (the fence: ledger.Fence).
var renewScript = redis.NewScript(`
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'attempts', 'owner', 'redrives')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or (f[4] or '0') ~= ARGV[7] then return 0 end
redis.call('HSET', h, 'lease', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
else
  redis.call('ZADD', KEYS[4], 'XX', ARGV[3], ARGV[5])
end
return 1
`)

// luaGCRA is the rate check shared by claim and take. GCRA: with emission
// interval T and burst B, a start is allowed when the theoretical arrival
// time (TAT) is at most (B-1)T ahead of now. gcra returns the wait (0 when
// allowed) and the TAT to store on success.
const luaGCRA = `
local function gcra(key, interval, burst, now)
  if interval <= 0 then return 0, 0 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allowat = tat + interval - burst * interval
  if now < allowat then return allowat - now, 0 end
  return 0, tat + interval
end
`

// luaTerminate is shared by every script that ends a task: it moves the
// task from state "from" to terminal state "to", indexes it, starts its
// retention clock (and its log's: the terminal entry is appended), and
// appends the record to the results outbox, so that the transition and its
// result event are one atomic step.
//
// The outbox entry is the record's fields named in RECORD (the fields
// RecordFromFields reads and the trace parent), read with one HMGET: never
// the stored lane message, which is most of a record's bytes. A task that
// ends anything but dead is then made compact (decision 0019): its hash is
// rewritten with only those fields (and a long log's dropped count), so
// the stored message and the fields only a waiting or running task needs
// are gone and Redis can keep the small hash listpack-encoded (dropping
// one field of a hash that grew past hash-max-listpack-value would leave it
// a hash table). A dead task keeps everything: a redrive publishes its stored
// message again.
var luaTerminate = luaLog + `
local RECORD = {` + luaStrings(recordFields) + `}
-- pre: log entries to append before the ending's (an attempt's lines and
-- end), in the same push; nil for none.
local function terminate(h, outbox, prefix, id, from, to, now, err, retention, maxlen, pre)
  if err ~= '' then
    redis.call('HSET', h, 'state', to, 'finished', now, 'error', err)
  else
    redis.call('HSET', h, 'state', to, 'finished', now)
  end
  -- One read of the record (the outbox entry, the log's message, the
  -- state index's score) and of the log's dropped count.
  local v = redis.call('HMGET', h, 'log_dropped', unpack(RECORD))
  local dropped = v[1]
  local out, rec = {}, {}
  for i = 1, #RECORD do
    local x = v[i + 1]
    if x then
      rec[RECORD[i]] = x
      out[#out+1] = RECORD[i]
      out[#out+1] = x
    end
  end
  -- The log says how the task ended and expires with the record.
  local lk = logkey(prefix, id)
  local msg, reason, att = to, rec.reason, '0'
  if to == 'dead' then msg = 'dead-lettered' end
  if reason and (to == 'dead' or to == 'failed') then msg = msg .. ' (' .. reason .. ')' end
  if err ~= '' and to ~= 'succeeded' then msg = msg .. ': ' .. err end
  if from == 'running' then att = rec.attempts or '0' end
  local entries = pre or {}
  entries[#entries+1] = now .. '|' .. to .. '|' .. att .. '|0||' .. msg
  dropped = logpush(h, lk, entries) or dropped
  redis.call('PEXPIRE', lk, retention)
  redis.call('ZREM', prefix .. from, id)
  redis.call('ZADD', prefix .. to, rec.created, id)
  if to == 'dead' then
    redis.call('HDEL', h, 'lease', 'owner')
  else
    redis.call('DEL', h)
    redis.call('HSET', h, unpack(out))
    if dropped then redis.call('HSET', h, 'log_dropped', dropped) end
  end
  redis.call('PEXPIRE', h, retention)
  redis.call('XADD', outbox, 'MAXLEN', '~', maxlen, '*', unpack(out))
end
`

// finish moves a running attempt to a terminal state and drops its lease
// entry from the delay set.
// KEYS: 1 task hash, 2 outbox, 3 delay, 4 function in-flight set, 5 tenant
// in-flight set, 6 tenant parked set, 7 function state
// ARGV: 1 attempt, 2 state, 3 now µs, 4 error, 5 result, 6 state-index prefix,
// 7 id, 8 retention ms, 9 outbox max length, 10 delay member, 11 reason,
// 12 tenant quota, 13 wake channel, 14 function, 15 "1" for a limited
// function, 16 tenant, 17 redrives (with the attempt, the fence:
// ledger.Fence), 18.. log entries (the attempt's lines and its end)
var finishScript = redis.NewScript(luaTerminate + luaEndAttempt + luaReleased + `
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'attempts', 'attempt_started', 'redrives')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or (f[4] or '0') ~= ARGV[17] then
  return 0
end
redis.call('ZREM', KEYS[3], ARGV[10])
redis.call('ZREM', KEYS[4], ARGV[10])
released(KEYS[5], KEYS[6], ARGV[7], ARGV[16], tonumber(ARGV[12]), ARGV[3], ARGV[13], ARGV[14], KEYS[7], ARGV[15])
endattempt(h, f[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[11], ARGV[6], ARGV[7], ARGV[8], ARGV[9], KEYS[2], {unpack(ARGV, 18)})
return 1
`)

// luaEndAttempt ends a running attempt (started at µs started) in
// terminal state to: finish's and finish.t's shared part. A success keeps
// no earlier attempt's error (the task log has the history); run time,
// reason and result are set in one HSET, and the attempt's log entries go
// in one push with the ending's. Needs luaTerminate before it.
const luaEndAttempt = `
local function endattempt(h, started, to, now, err, result, reason, prefix, id, retention, maxlen, outbox, entries)
  if to == 'succeeded' then redis.call('HDEL', h, 'error') end
  local set = {'run_ms', math.floor((tonumber(now) - tonumber(started or now)) / 1000)}
  if reason ~= '' then set[#set+1] = 'reason'; set[#set+1] = reason end
  if result ~= '' then set[#set+1] = 'result'; set[#set+1] = result end
  redis.call('HSET', h, unpack(set))
  terminate(h, outbox, prefix, id, 'running', to, now, err, retention, maxlen, entries)
end
`

// end moves a task that is not running (waiting in a lane, the delay set,
// or paused) to a terminal state: cancel, and expiry found by a scan.
// KEYS: 1 task hash, 2 outbox, 3 delay, 4 expiry set
// ARGV: 1 state, 2 now µs, 3 error, 4 state-index prefix, 5 id, 6 retention
// ms, 7 outbox max length, 8 delay member
// Returns {"ok", to} or {"no", current state} ("" when missing).
var endScript = redis.NewScript(luaTerminate + `
local h = KEYS[1]
redis.call('ZREM', KEYS[4], ARGV[8])
local st = redis.call('HGET', h, 'state')
if not st then return {'no', ''} end
if st ~= 'queued' and st ~= 'scheduled' and st ~= 'retrying' and st ~= 'paused' then return {'no', st} end
if redis.call('HGET', h, 'started') and ARGV[1] == 'expired' then return {'no', st} end
redis.call('ZREM', KEYS[3], ARGV[8])
terminate(h, KEYS[2], ARGV[4], ARGV[5], st, ARGV[1], ARGV[2], ARGV[3], ARGV[6], ARGV[7])
return {'ok', ARGV[1]}
`)

// retry moves a running attempt to retrying and schedules the next one.
// KEYS: 1 task hash, 2 delay, 3 function in-flight set, 4 tenant in-flight
// set, 5 tenant parked set, 6 function state
// ARGV: 1 attempt, 2 due µs, 3 error, 4 state-index prefix, 5 id, 6 delay
// member, 7 "1" to refund the attempt (a throttled answer), 8 tenant quota,
// 9 wake channel, 10 function, 11 "1" for a limited function, 12 tenant,
// 13 now µs, 14 redrives (with the attempt, the fence: ledger.Fence),
// 15.. log entries (the attempt's lines, its end, the retry)
var retryScript = redis.NewScript(luaLog + luaRetrying + luaReleased + `
local h = KEYS[1]
local f = redis.call('HMGET', h, 'state', 'attempts', 'redrives')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or (f[3] or '0') ~= ARGV[14] then
  return 0
end
released(KEYS[4], KEYS[5], ARGV[5], ARGV[12], tonumber(ARGV[8]), ARGV[13], ARGV[9], ARGV[10], KEYS[6], ARGV[11])
retrying(h, ARGV[4], ARGV[5], ARGV[2], ARGV[3], KEYS[2], ARGV[6], ARGV[7], {unpack(ARGV, 15)})
redis.call('ZREM', KEYS[3], ARGV[6])
return 1
`)

// luaRetrying moves running attempt h (id; state indexes at prefix) to
// retrying: its log entries, the error, the next attempt due at due in the
// delay set (delay, member), the attempt given back for a throttled answer
// within the allowance (refund "1"). Shared by retry and retry.t.
const luaRetrying = `
local function retrying(h, prefix, id, due, err, delay, member, refund, entries)
  logpush(h, logkey(prefix, id), entries)
  if refund == '1' then
    redis.call('HINCRBY', h, 'attempts', -1)
    redis.call('HINCRBY', h, 'throttles', 1)
  end
  redis.call('HSET', h, 'state', 'retrying', 'error', err, 'scheduled', due)
  redis.call('HDEL', h, 'lease', 'owner')
  local created = redis.call('HGET', h, 'created')
  redis.call('ZREM', prefix .. 'running', id)
  redis.call('ZADD', prefix .. 'retrying', created, id)
  redis.call('ZADD', delay, due, member)
end
`

// due takes up to ARGV[2] members of the delay set due at ARGV[1] and pushes
// their score to ARGV[3], so that a scheduler that dies after taking them
// gives them back when that time passes.
// KEYS: 1 delay. ARGV: 1 now µs, 2 max, 3 re-guard µs.
var dueScript = redis.NewScript(`
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, v in ipairs(m) do redis.call('ZADD', KEYS[1], ARGV[3], v) end
return m
`)

// forget drops delay entries that still have the score the caller set.
// KEYS: 1 delay. ARGV: member, score, member, score, ... Returns how many
// it dropped.
var forgetScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i+1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return n
`)

// redrive puts a dead task back to work: a fresh attempt budget, state
// queued, due now in the delay set (the scheduler publishes it).
// KEYS: 1 task hash, 2 delay. ARGV: 1 state-index prefix, 2 id, 3 delay
// member, 4 now µs. Returns {"ok", ""} or {"no", current state}.
var redriveScript = redis.NewScript(luaLog + `
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if st ~= 'dead' then return {'no', st or ''} end
redis.call('HSET', h, 'state', 'queued', 'attempts', 0, 'throttles', 0, 'scheduled', ARGV[4])
redis.call('HDEL', h, 'finished', 'reason', 'started', 'wait_ms', 'run_ms', 'attempt_started', 'lease', 'owner')
redis.call('HINCRBY', h, 'redrives', 1)
redis.call('PERSIST', h)
local lk = logkey(ARGV[1], ARGV[2])
redis.call('PERSIST', lk)
logone(h, lk, ARGV[4], 'redriven', 0, 'redriven from the dead-letter queue with a fresh attempt budget')
local created = redis.call('HGET', h, 'created')
redis.call('ZREM', ARGV[1] .. 'dead', ARGV[2])
redis.call('ZADD', ARGV[1] .. 'queued', created, ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return {'ok', ''}
`)

// purge deletes a dead task for good.
// KEYS: 1 task hash, 2 all-index. ARGV: 1 state-index prefix, 2 id.
// Returns {"ok", "", event source, event id, id} (for forgetEvent) or
// {"no", current state}.
var purgeScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'state', 'ev_source', 'ev_id')
if f[1] ~= 'dead' then return {'no', f[1] or ''} end
redis.call('DEL', KEYS[1], string.sub(ARGV[1], 1, -4) .. 'log:' .. ARGV[2])
redis.call('ZREM', ARGV[1] .. 'dead', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
return {'ok', '', f[2] or '', f[3] or '', ARGV[2]}
`)

// forgetEvent takes a purged task out of its event's dedup entries (the
// comma-separated ids of the event's tasks; an entry left empty is
// deleted, so the event makes new tasks) and event indexes. Its keys are
// hashes of the event's source and id, which a script cannot compute, so
// it runs after purge answered them.
// KEYS: 1 dedup, 2 legacy dedup, 3 event index, 4 legacy event index.
// ARGV: 1 task id.
var forgetEventScript = redis.NewScript(`
for k = 1, 2 do
  local v = redis.call('GET', KEYS[k])
  if v then
    local keep, dropped = {}, false
    for id in string.gmatch(v, '[^,]+') do
      if id == ARGV[1] then dropped = true else keep[#keep + 1] = id end
    end
    if dropped and #keep == 0 then
      redis.call('DEL', KEYS[k])
    elseif dropped then
      redis.call('SET', KEYS[k], table.concat(keep, ','), 'KEEPTTL')
    end
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
`)
