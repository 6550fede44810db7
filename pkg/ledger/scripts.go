package ledger

import "github.com/redis/go-redis/v9"

// Every state change of a task is one Lua script, so that the record, the
// state indexes, the delay set and the results outbox change together.
//
// Key layout (tenant-scoped keys carry a {tenant} hash tag):
//
//	tl:{t}:task:<id>       hash: the task record (see fields.go) and the stored message
//	tl:{t}:tasks           zset: every task id, score = created µs
//	tl:{t}:st:<state>      zset: task ids in that state, score = created µs
//	tl:{t}:dedup:<sha256>  string: the task ids made from one (source, id), expires after the dedup window
//	tl:delay               zset: "<tenant>/<id>" due to be (re)published, score = due µs
//	tl:outbox              stream: one entry per terminal transition (the results outbox)

// create records the tasks made from one event unless the event was seen.
// KEYS: 1 dedup, 2 all-index, 3 state-index, 4 delay, 5.. task hashes
// ARGV: 1 dedup ttl ms, 2 created µs, 3 delay score, 4 tenant, 5 ids (comma
// separated), then per task: id, n, n field/value strings.
var createScript = redis.NewScript(`
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[1])
local i = 6
local k = 5
while i <= #ARGV do
  local id = ARGV[i]
  local n = tonumber(ARGV[i+1])
  redis.call('HSET', KEYS[k], unpack(ARGV, i+2, i+1+n))
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('ZADD', KEYS[3], ARGV[2], id)
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4] .. '/' .. id)
  i = i + 2 + n
  k = k + 1
end
return false
`)

// claim moves a task to running for one attempt.
// KEYS: 1 task hash, 2 delay
// ARGV: 1 now µs, 2 lease-until µs, 3 owner, 4 state-index prefix, 5 id, 6 delay member
// Returns {verdict, detail}: run/attempt, busy/lease-until, done/state,
// missing/"", paused/"".
var claimScript = redis.NewScript(`
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return {'missing', ''} end
if st == 'succeeded' or st == 'failed' or st == 'dead' or st == 'cancelled' or st == 'expired' then
  return {'done', st}
end
if st == 'paused' then return {'paused', ''} end
local now = tonumber(ARGV[1])
if st == 'running' then
  local lease = tonumber(redis.call('HGET', h, 'lease') or '0')
  if lease > now then return {'busy', tostring(lease)} end
end
local attempt = redis.call('HINCRBY', h, 'attempts', 1)
redis.call('HSET', h, 'state', 'running', 'lease', ARGV[2], 'owner', ARGV[3], 'attempt_started', ARGV[1])
if not redis.call('HGET', h, 'started') then
  local due = tonumber(redis.call('HGET', h, 'scheduled') or redis.call('HGET', h, 'created'))
  local wait = now - due
  if wait < 0 then wait = 0 end
  redis.call('HSET', h, 'started', ARGV[1], 'wait_ms', math.floor(wait / 1000))
end
local created = redis.call('HGET', h, 'created')
redis.call('ZREM', ARGV[4] .. st, ARGV[5])
redis.call('ZADD', ARGV[4] .. 'running', created, ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[6])
return {'run', tostring(attempt)}
`)

// renew extends the lease of a running attempt.
// KEYS: 1 task hash. ARGV: 1 attempt, 2 owner, 3 lease-until µs.
var renewScript = redis.NewScript(`
local h = KEYS[1]
if redis.call('HGET', h, 'state') ~= 'running' or redis.call('HGET', h, 'attempts') ~= ARGV[1]
   or redis.call('HGET', h, 'owner') ~= ARGV[2] then return 0 end
redis.call('HSET', h, 'lease', ARGV[3])
return 1
`)

// finish moves a running attempt to a terminal state and appends the record
// to the results outbox.
// KEYS: 1 task hash, 2 outbox
// ARGV: 1 attempt, 2 state, 3 now µs, 4 error, 5 result, 6 state-index prefix,
// 7 id, 8 retention ms, 9 outbox max length
var finishScript = redis.NewScript(`
local h = KEYS[1]
if redis.call('HGET', h, 'state') ~= 'running' or redis.call('HGET', h, 'attempts') ~= ARGV[1] then
  return 0
end
local started = tonumber(redis.call('HGET', h, 'attempt_started') or ARGV[3])
redis.call('HSET', h, 'state', ARGV[2], 'finished', ARGV[3], 'run_ms', math.floor((tonumber(ARGV[3]) - started) / 1000))
if ARGV[4] ~= '' then redis.call('HSET', h, 'error', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', h, 'result', ARGV[5]) end
redis.call('HDEL', h, 'lease', 'owner')
local created = redis.call('HGET', h, 'created')
redis.call('ZREM', ARGV[6] .. 'running', ARGV[7])
redis.call('ZADD', ARGV[6] .. ARGV[2], created, ARGV[7])
redis.call('PEXPIRE', h, ARGV[8])
local f = redis.call('HGETALL', h)
local out = {}
for i = 1, #f, 2 do
  if f[i] ~= 'env' then
    out[#out+1] = f[i]
    out[#out+1] = f[i+1]
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', unpack(out))
return 1
`)

// retry moves a running attempt to retrying and schedules the next one.
// KEYS: 1 task hash, 2 delay
// ARGV: 1 attempt, 2 due µs, 3 error, 4 state-index prefix, 5 id, 6 delay member
var retryScript = redis.NewScript(`
local h = KEYS[1]
if redis.call('HGET', h, 'state') ~= 'running' or redis.call('HGET', h, 'attempts') ~= ARGV[1] then
  return 0
end
redis.call('HSET', h, 'state', 'retrying', 'error', ARGV[3], 'scheduled', ARGV[2])
redis.call('HDEL', h, 'lease', 'owner')
local created = redis.call('HGET', h, 'created')
redis.call('ZREM', ARGV[4] .. 'running', ARGV[5])
redis.call('ZADD', ARGV[4] .. 'retrying', created, ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
return 1
`)

// due takes up to ARGV[2] members of the delay set due at ARGV[1] and pushes
// their score to ARGV[3], so that a scheduler that dies after taking them
// gives them back when that time passes.
// KEYS: 1 delay. ARGV: 1 now µs, 2 max, 3 re-guard µs.
var dueScript = redis.NewScript(`
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, v in ipairs(m) do redis.call('ZADD', KEYS[1], ARGV[3], v) end
return m
`)

// requeued is called after a due task was published to its lane: it drops
// the delay entry (unless someone rescheduled it meanwhile) and marks a
// waiting task queued.
// KEYS: 1 delay, 2 task hash. ARGV: 1 member, 2 re-guard µs, 3 prefix, 4 id.
var requeuedScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
local st = redis.call('HGET', KEYS[2], 'state')
if st == 'retrying' or st == 'scheduled' then
  local created = redis.call('HGET', KEYS[2], 'created')
  redis.call('HSET', KEYS[2], 'state', 'queued')
  redis.call('ZREM', ARGV[3] .. st, ARGV[4])
  redis.call('ZADD', ARGV[3] .. 'queued', created, ARGV[4])
end
return 1
`)

// forget drops a delay entry if it still has the score the caller set.
// KEYS: 1 delay. ARGV: 1 member, 2 score.
var forgetScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`)
