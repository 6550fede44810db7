package ledger

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Task control: pauses, resume, cancel by selector (decision 0013).
//
// Keys, in the tenant's slot:
//
//	<p>:{t}:pauses           hash: active pause id -> its selector (JSON, times in µs)
//	<p>:{t}:pauses:resuming  hash: pauses being resumed, same values
//	<p>:{t}:pauses:n         hash: pause id -> tasks it has paused
//
// A paused task's record names the pauses holding it (held_by, ","
// separated) and the waiting state it was paused from (paused_from). A
// pause is applied twice: when it is created, to the tasks waiting then
// (a scan of the state indexes in bounded steps), and by Admit to every
// task about to enter a ready queue afterwards. Resume releases the tasks
// no other pause holds, in bounded steps.

// controlStep bounds the index entries one pause, resume or cancel step
// looks at, so that no script holds Redis for long.
const controlStep = 500

// ErrPauseNotFound is returned for a pause the tenant does not have.
var ErrPauseNotFound = errors.New("pause not found")

// AbortChannel is the Pub/Sub channel a cancel of a running task publishes
// "<tenant>/<id>" on: the dispatcher running it aborts the attempt.
func (l *Ledger) AbortChannel() string { return l.cfg.Prefix + ":abort" }

func (l *Ledger) pausesKey(tenant string) string   { return l.tenantPrefix(tenant) + "pauses" }
func (l *Ledger) resumingKey(tenant string) string { return l.tenantPrefix(tenant) + "pauses:resuming" }
func (l *Ledger) pauseCountKey(tenant string) string {
	return l.tenantPrefix(tenant) + "pauses:n"
}

// storedPause is a pause as the scripts read it.
type storedPause struct {
	ID            string `json:"id"`
	Function      string `json:"function,omitempty"`
	Type          string `json:"type,omitempty"`
	Source        string `json:"source,omitempty"`
	SubjectPrefix string `json:"subject_prefix,omitempty"`
	Batch         string `json:"batch,omitempty"`
	State         string `json:"state,omitempty"`
	After         *int64 `json:"after,omitempty"`
	Before        *int64 `json:"before,omitempty"`
	Created       int64  `json:"created"`
}

func toStored(id string, s contracts.Selector, created time.Time) storedPause {
	p := storedPause{ID: id, Function: s.Function, Type: s.Type, Source: s.Source, SubjectPrefix: s.SubjectPrefix,
		Batch: s.Batch, State: string(s.State), Created: us(created)}
	if s.CreatedAfter != nil {
		n := us(*s.CreatedAfter)
		p.After = &n
	}
	if s.CreatedBefore != nil {
		n := us(*s.CreatedBefore)
		p.Before = &n
	}
	return p
}

func (p storedPause) pause(n int, resuming bool) contracts.Pause {
	s := contracts.Selector{Function: p.Function, Type: p.Type, Source: p.Source, SubjectPrefix: p.SubjectPrefix,
		Batch: p.Batch, State: contracts.State(p.State)}
	if p.After != nil {
		t := time.UnixMicro(*p.After).UTC()
		s.CreatedAfter = &t
	}
	if p.Before != nil {
		t := time.UnixMicro(*p.Before).UTC()
		s.CreatedBefore = &t
	}
	return contracts.Pause{ID: p.ID, Selector: s, CreatedAt: time.UnixMicro(p.Created).UTC(), Paused: n, Resuming: resuming}
}

// Matches reports whether task t matches selector s. For a paused task,
// a state in s is compared with the state it was paused from when
// pausedFrom is given.
func Matches(s contracts.Selector, t *contracts.Task) bool {
	switch {
	case s.Function != "" && s.Function != t.Function,
		s.Type != "" && s.Type != t.Event.Type,
		s.Source != "" && s.Source != t.Event.Source,
		s.SubjectPrefix != "" && !strings.HasPrefix(t.Event.Subject, s.SubjectPrefix),
		s.Batch != "" && s.Batch != t.Batch,
		s.State != "" && s.State != t.State,
		s.CreatedAfter != nil && us(t.CreatedAt) < us(*s.CreatedAfter),
		s.CreatedBefore != nil && us(t.CreatedAt) >= us(*s.CreatedBefore):
		return false
	}
	return true
}

// luaSelect is the selector match of the scripts (Matches in Lua): s is a
// decoded storedPause, the rest the task's fields (false when absent).
const luaSelect = `
local function selmatch(s, fn, typ, src, subj, batch, created, st)
  if s['function'] and s['function'] ~= fn then return false end
  if s.type and s.type ~= typ then return false end
  if s.source and s.source ~= src then return false end
  if s.subject_prefix and string.sub(subj or '', 1, #s.subject_prefix) ~= s.subject_prefix then return false end
  if s.batch and s.batch ~= batch then return false end
  if s.state and s.state ~= st then return false end
  created = tonumber(created) or 0
  if s.after and created < s.after then return false end
  if s.before and created >= s.before then return false end
  return true
end
`

// luaHold pauses a task for the pauses pids (or adds them to those holding
// it already) and counts it for each pause newly holding it. st is the
// task's state, from the waiting state it leaves. Returns how many pauses
// newly hold it.
const luaHold = `
local function hold(h, sprefix, id, st, from, pids, counts)
  local held = ''
  if st == 'paused' then held = redis.call('HGET', h, 'held_by') or '' end
  local n = 0
  for _, pid in ipairs(pids) do
    if not string.find(',' .. held .. ',', ',' .. pid .. ',', 1, true) then
      if held == '' then held = pid else held = held .. ',' .. pid end
      redis.call('HINCRBY', counts, pid, 1)
      n = n + 1
    end
  end
  if st ~= 'paused' then
    local created = redis.call('HGET', h, 'created')
    redis.call('HSET', h, 'state', 'paused', 'paused_from', from)
    redis.call('HDEL', h, 'lease', 'owner')
    redis.call('ZREM', sprefix .. st, id)
    redis.call('ZADD', sprefix .. 'paused', created, id)
  end
  if n > 0 then redis.call('HSET', h, 'held_by', held) end
  return n
end
`

// luaPausedBy returns the active pauses that match a task about to become
// ready, or nil: one HGETALL of an empty hash when there are none.
const luaPausedBy = luaSelect + `
local function pausedby(pauses, h, st)
  local all = redis.call('HGETALL', pauses)
  if #all == 0 then return nil end
  local f = redis.call('HMGET', h, 'function', 'ev_type', 'ev_source', 'ev_subject', 'batch', 'created')
  local ids = {}
  for i = 1, #all, 2 do
    local ok, s = pcall(cjson.decode, all[i+1])
    if ok and selmatch(s, f[1], f[2], f[3], f[4], f[5], f[6], st) then ids[#ids+1] = all[i] end
  end
  if #ids == 0 then return nil end
  return ids
end
`

// luaPage reads up to n entries of a state index after the cursor (score
// cs, member cm; cm "" starts at score cs), below maxs: entries with the
// cursor's score come in member order, so the ones at or before cm are
// skipped, whatever left the index meanwhile. Members compare byte by
// byte, as Redis orders them (Lua's <= follows the server's locale).
const luaPage = `
local function bytele(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end
local function page(key, cs, cm, maxs, n)
  local skip = 0
  if cm ~= '' then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, cs, cs)) do
      if bytele(m, cm) then skip = skip + 1 end
    end
  end
  return redis.call('ZRANGEBYSCORE', key, cs, maxs, 'WITHSCORES', 'LIMIT', skip, n)
end
`

// pageScript answers one page of a state index (luaPage).
// KEYS: 1 index. ARGV: 1 cursor score, 2 cursor member, 3 max score, 4 n.
var pageScript = redis.NewScript(luaPage + `
return page(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
`)

// pauseStepScript applies a pause to one page of a state index.
// KEYS: 1 index (st:<state>), 2 pauses, 3 pause counts
// ARGV: 1 pause id, 2 cursor score, 3 cursor member, 4 n, 5 task key
// prefix, 6 state-index prefix, 7 the index's state, 8 max score
// Returns {held, last score, last member, "more"|"done"}; {"gone"} when
// the pause is no longer active.
var pauseStepScript = redis.NewScript(luaSelect + luaHold + luaPage + `
local p = redis.call('HGET', KEYS[2], ARGV[1])
if not p then return {'gone'} end
local sel = cjson.decode(p)
local n = tonumber(ARGV[4])
local res = page(KEYS[1], ARGV[2], ARGV[3], ARGV[8], n)
local held, ls, lm = 0, ARGV[2], ARGV[3]
for i = 1, #res, 2 do
  local id = res[i]
  ls, lm = res[i+1], id
  local h = ARGV[5] .. id
  local f = redis.call('HMGET', h, 'function', 'ev_type', 'ev_source', 'ev_subject', 'batch', 'created', 'state', 'paused_from')
  local st = f[7]
  if st == ARGV[7] then
    local mst = st
    if st == 'paused' then mst = f[8] end
    if selmatch(sel, f[1], f[2], f[3], f[4], f[5], f[6], mst) then
      held = held + hold(h, ARGV[6], id, st, st, {ARGV[1]}, KEYS[3])
    end
  end
end
local more = 'done'
if #res / 2 >= n then more = 'more' end
return {tostring(held), ls, lm, more}
`)

// resumeStepScript releases the tasks of one page of the paused index
// that the pause holds: those no other pause holds go back to the state
// they were paused from when it is still ahead (a delay, a backoff), else
// to queued with a guard in the delay set (the caller admits them; if it
// dies first, the scheduler does).
// KEYS: 1 paused index, 2 delay
// ARGV: 1 pause id, 2 cursor score, 3 cursor member, 4 n, 5 task key
// prefix, 6 state-index prefix, 7 now µs, 8 guard µs, 9 tenant
// Returns {released, last score, last member, "more"|"done", then per task
// to admit: id, function, priority}.
var resumeStepScript = redis.NewScript(luaPage + `
local n = tonumber(ARGV[4])
local res = page(KEYS[1], ARGV[2], ARGV[3], '+inf', n)
local released, ls, lm = 0, ARGV[2], ARGV[3]
local out = {}
local now = tonumber(ARGV[7])
for i = 1, #res, 2 do
  local id = res[i]
  ls, lm = res[i+1], id
  local h = ARGV[5] .. id
  local f = redis.call('HMGET', h, 'state', 'held_by', 'paused_from', 'scheduled', 'created', 'function', 'priority')
  if f[1] == 'paused' and f[2] then
    local rest, found = {}, false
    for pid in string.gmatch(f[2], '[^,]+') do
      if pid == ARGV[1] then found = true else rest[#rest+1] = pid end
    end
    if found and #rest > 0 then
      redis.call('HSET', h, 'held_by', table.concat(rest, ','))
    elseif found then
      released = released + 1
      redis.call('HDEL', h, 'held_by', 'paused_from')
      redis.call('ZREM', ARGV[6] .. 'paused', id)
      local member = ARGV[9] .. '/' .. id
      local due = tonumber(f[4] or '0')
      if (f[3] == 'scheduled' or f[3] == 'retrying') and due > now + 1000000 then
        redis.call('HSET', h, 'state', f[3])
        redis.call('ZADD', ARGV[6] .. f[3], f[5], id)
        redis.call('ZADD', KEYS[2], due, member)
      else
        redis.call('HSET', h, 'state', 'queued')
        redis.call('ZADD', ARGV[6] .. 'queued', f[5], id)
        redis.call('ZADD', KEYS[2], ARGV[8], member)
        out[#out+1] = id
        out[#out+1] = f[6] or ''
        out[#out+1] = f[7] or '0'
      end
    end
  end
end
local more = 'done'
if #res / 2 >= n then more = 'more' end
local r = {tostring(released), ls, lm, more}
for _, v in ipairs(out) do r[#r+1] = v end
return r
`)

// resumeBeginScript moves a pause from the active pauses to the resuming
// ones (no new task matches it from then on).
// KEYS: 1 pauses, 2 resuming. ARGV: 1 pause id.
// Returns 1, or 0 when the tenant has no such pause.
var resumeBeginScript = redis.NewScript(`
local p = redis.call('HGET', KEYS[1], ARGV[1])
if p then
  redis.call('HSET', KEYS[2], ARGV[1], p)
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
return 0
`)

// cancelScript ends a waiting, paused or running task as cancelled, with
// its result event. A running attempt's slots are freed and its
// dispatcher told to abort it (the abort channel); its outcome is fenced
// off, the task being no longer running.
// KEYS: 1 task hash, 2 outbox, 3 delay, 4 expiry set, 5 function
// in-flight set, 6 tenant in-flight set, 7 tenant parked set, 8 function
// state
// ARGV: 1 now µs, 2 error, 3 state-index prefix, 4 id, 5 retention ms,
// 6 outbox max length, 7 delay member, 8 tenant quota, 9 wake channel,
// 10 function, 11 "1" for a limited function, 12 tenant, 13 abort channel,
// 14 "1" to cancel only if it is in state ARGV[15]
// Returns {"ok", state it was in} or {"no", current state} ("" when
// missing).
var cancelScript = redis.NewScript(luaTerminate + luaReleased + `
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return {'no', ''} end
if ARGV[14] == '1' and st ~= ARGV[15] then return {'no', st} end
if st == 'running' then
  redis.call('ZREM', KEYS[3], ARGV[7])
  redis.call('ZREM', KEYS[5], ARGV[7])
  released(KEYS[6], KEYS[7], ARGV[4], ARGV[12], tonumber(ARGV[8]), ARGV[1], ARGV[9], ARGV[10], KEYS[8], ARGV[11])
  local started = tonumber(redis.call('HGET', h, 'attempt_started') or ARGV[1])
  redis.call('HSET', h, 'run_ms', math.floor((tonumber(ARGV[1]) - started) / 1000))
  terminate(h, KEYS[2], ARGV[3], ARGV[4], 'running', 'cancelled', ARGV[1], ARGV[2], ARGV[5], ARGV[6])
  redis.call('PUBLISH', ARGV[13], ARGV[7])
  return {'ok', st}
end
if st ~= 'queued' and st ~= 'scheduled' and st ~= 'retrying' and st ~= 'paused' then return {'no', st} end
redis.call('ZREM', KEYS[3], ARGV[7])
redis.call('ZREM', KEYS[4], ARGV[7])
redis.call('HDEL', h, 'held_by', 'paused_from')
terminate(h, KEYS[2], ARGV[3], ARGV[4], st, 'cancelled', ARGV[1], ARGV[2], ARGV[5], ARGV[6])
return {'ok', st}
`)

// maxScore is the exclusive upper score bound of a selector's scan.
func maxScore(s contracts.Selector) string {
	if s.CreatedBefore != nil {
		return "(" + strconv.FormatInt(us(*s.CreatedBefore), 10)
	}
	return "+inf"
}

// minScore is the inclusive lower score bound of a selector's scan.
func minScore(s contracts.Selector) string {
	if s.CreatedAfter != nil {
		return strconv.FormatInt(us(*s.CreatedAfter), 10)
	}
	return "-inf"
}

// CreatePause records a pause of the tenant's tasks that sel matches and
// pauses those waiting now (queued, scheduled, retrying), in bounded
// steps; Admit pauses those that become ready while it exists.
func (l *Ledger) CreatePause(ctx context.Context, tenant string, sel contracts.Selector) (contracts.Pause, error) {
	now := l.cfg.Now()
	sp := toStored(ulid.Make().String(), sel, now)
	b, err := json.Marshal(sp)
	if err != nil {
		return contracts.Pause{}, fmt.Errorf("encoding pause: %w", err)
	}
	if err := l.rdb.HSet(ctx, l.pausesKey(tenant), sp.ID, b).Err(); err != nil {
		return contracts.Pause{}, fmt.Errorf("recording pause: %w", err)
	}
	states := contracts.PausableStates
	if sel.State != "" {
		states = []contracts.State{sel.State}
	}
	// Tasks already paused by another pause are held by this one too, so
	// that they stay paused until both are gone.
	states = append(slices.Clone(states), contracts.StatePaused)
	held := 0
	for _, st := range states {
		cs, cm := minScore(sel), ""
		for {
			res, err := l.run(ctx, pauseStepScript,
				[]string{l.stateKey(tenant, st), l.pausesKey(tenant), l.pauseCountKey(tenant)},
				sp.ID, cs, cm, controlStep, l.tenantPrefix(tenant)+"task:", l.statePrefix(tenant), string(st), maxScore(sel)).StringSlice()
			if err != nil {
				return contracts.Pause{}, fmt.Errorf("pausing tasks: %w", err)
			}
			if res[0] == "gone" {
				// Resumed while it was being applied.
				return sp.pause(held, true), nil
			}
			n, _ := strconv.Atoi(res[0])
			held += n
			cs, cm = res[1], res[2]
			if res[3] != "more" {
				break
			}
		}
	}
	return sp.pause(held, false), nil
}

// Pauses lists the tenant's pauses, oldest first, with the tasks each has
// paused.
func (l *Ledger) Pauses(ctx context.Context, tenant string) ([]contracts.Pause, error) {
	var active, resuming *redis.MapStringStringCmd
	var counts *redis.MapStringStringCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		active = p.HGetAll(ctx, l.pausesKey(tenant))
		resuming = p.HGetAll(ctx, l.resumingKey(tenant))
		counts = p.HGetAll(ctx, l.pauseCountKey(tenant))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading pauses: %w", err)
	}
	out := []contracts.Pause{}
	for _, set := range []struct {
		m        map[string]string
		resuming bool
	}{{active.Val(), false}, {resuming.Val(), true}} {
		for _, v := range set.m {
			var sp storedPause
			if err := json.Unmarshal([]byte(v), &sp); err != nil {
				continue
			}
			n, _ := strconv.Atoi(counts.Val()[sp.ID])
			out = append(out, sp.pause(n, set.resuming))
		}
	}
	slices.SortFunc(out, func(a, b contracts.Pause) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Resume ends pause id: the tasks it holds that no other pause holds wait
// to run again (released in bounded steps; those due now are admitted to
// their ready queues, highest priority first in each step, where they
// start under their function's limits). It returns how many it released.
// An interrupted resume is finished by calling Resume again.
func (l *Ledger) Resume(ctx context.Context, tenant, id string) (int, error) {
	ok, err := l.run(ctx, resumeBeginScript, []string{l.pausesKey(tenant), l.resumingKey(tenant)}, id).Int()
	if err != nil {
		return 0, fmt.Errorf("resuming pause %s: %w", id, err)
	}
	if ok == 0 {
		return 0, ErrPauseNotFound
	}
	released := 0
	cs, cm := "-inf", ""
	for {
		now := l.cfg.Now()
		res, err := l.run(ctx, resumeStepScript, []string{l.stateKey(tenant, contracts.StatePaused), l.DelayKey(tenant)},
			id, cs, cm, controlStep, l.tenantPrefix(tenant)+"task:", l.statePrefix(tenant),
			us(now), us(now.Add(l.cfg.PublishGuard)), tenant).StringSlice()
		if err != nil {
			return released, fmt.Errorf("resuming pause %s: %w", id, err)
		}
		n, _ := strconv.Atoi(res[0])
		released += n
		cs, cm = res[1], res[2]
		var refs []TaskRef
		for i := 4; i+2 < len(res); i += 3 {
			p, _ := strconv.Atoi(res[i+2])
			refs = append(refs, TaskRef{Tenant: tenant, ID: res[i], Function: res[i+1], Priority: p})
		}
		if err := l.admitAll(ctx, refs); err != nil {
			return released, fmt.Errorf("resuming pause %s: %w", id, err)
		}
		if res[3] != "more" {
			break
		}
	}
	_, err = l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, l.resumingKey(tenant), id)
		p.HDel(ctx, l.pauseCountKey(tenant), id)
		return nil
	})
	if err != nil {
		return released, fmt.Errorf("dropping pause %s: %w", id, err)
	}
	return released, nil
}

// admitAll admits released tasks, highest priority first, in one round
// trip. A task not admitted keeps its guard in the delay set: the
// scheduler admits it.
func (l *Ledger) admitAll(ctx context.Context, refs []TaskRef) error {
	if len(refs) == 0 {
		return nil
	}
	slices.SortStableFunc(refs, func(a, b TaskRef) int { return b.Priority - a.Priority })
	if l.Partitioned() {
		_, err := l.admitSplit(ctx, refs)
		return err
	}
	now := l.cfg.Now()
	calls := make([]*scriptCall, len(refs))
	for i, t := range refs {
		calls[i] = call(admitScript, l.admitKeys(t), l.admitArgs(t, now)...)
	}
	return l.batch.exec(ctx, calls...)
}

// cancelFields are the fields a cancel by selector reads to match a task.
var cancelFields = []string{fFunction, fEventType, fEventSource, fEventSubject, fBatch, fCreated, fState}

// cancelCall is the script call that cancels one of tenant's tasks of
// function; only in state when given.
func (l *Ledger) cancelCall(tenant, id, function string, only contracts.State) *scriptCall {
	if l.Partitioned() {
		return l.cancelTCall(tenant, id, string(only))
	}
	flag := "0"
	if only != "" {
		flag = "1"
	}
	return call(cancelScript,
		[]string{l.taskKey(tenant, id), l.OutboxStream(tenant), l.DelayKey(tenant), l.ExpiryKey(tenant), l.inflightKey(function),
			l.tenantInflightKey(tenant), l.parkedKey(tenant), l.fnStateKey(function)},
		us(l.cfg.Now()), "cancelled by request", l.statePrefix(tenant), id, l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		Member(tenant, id), l.quota(tenant), l.WakeChannel(), function, l.limited(function), tenant, l.AbortChannel(),
		flag, string(only))
}

// ErrBadControlCursor is returned by CancelMatching for a cursor it did
// not produce.
var ErrBadControlCursor = errors.New("invalid cursor")

// CancelMatching cancels the tenant's tasks that r's selector matches in a
// cancellable state (waiting, paused, running: a running attempt is
// aborted by its dispatcher), or only counts them for a dry run. It works
// through the state indexes in bounded steps; with r.Limit it stops after
// that many matches and answers a cursor to continue from.
func (l *Ledger) CancelMatching(ctx context.Context, tenant string, r contracts.CancelRequest) (contracts.CancelResponse, error) {
	var out contracts.CancelResponse
	states := contracts.CancellableStates
	if r.State != "" {
		states = []contracts.State{r.State}
	}
	si, cs, cm := 0, minScore(r.Selector), ""
	if r.Cursor != "" {
		parts := strings.SplitN(r.Cursor, "|", 3)
		if len(parts) != 3 {
			return out, ErrBadControlCursor
		}
		si = slices.Index(states, contracts.State(parts[0]))
		if si < 0 {
			return out, ErrBadControlCursor
		}
		cs, cm = parts[1], parts[2]
	}
	for ; si < len(states); si, cs, cm = si+1, minScore(r.Selector), "" {
		st := states[si]
		for {
			page, err := l.run(ctx, pageScript, []string{l.stateKey(tenant, st)}, cs, cm, maxScore(r.Selector), controlStep).StringSlice()
			if err != nil && !errors.Is(err, redis.Nil) {
				return out, fmt.Errorf("selecting tasks: %w", err)
			}
			ids := make([]string, 0, len(page)/2)
			for i := 0; i+1 < len(page); i += 2 {
				ids = append(ids, page[i])
			}
			cmds := make([]*redis.SliceCmd, len(ids))
			if _, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, id := range ids {
					cmds[i] = p.HMGet(ctx, l.taskKey(tenant, id), cancelFields...)
				}
				return nil
			}); err != nil {
				return out, fmt.Errorf("reading selected tasks: %w", err)
			}
			var calls []*scriptCall
			var cids, cfns []string
			for i, id := range ids {
				cs, cm = page[2*i+1], id
				h := map[string]string{}
				for j, v := range cmds[i].Val() {
					if s, ok := v.(string); ok {
						h[cancelFields[j]] = s
					}
				}
				t := RecordFromFields(h)
				if t.State != st || !Matches(r.Selector, &t) {
					continue
				}
				out.Matched++
				if !r.DryRun {
					calls = append(calls, l.cancelCall(tenant, id, t.Function, ""))
					cids, cfns = append(cids, id), append(cfns, t.Function)
				}
				if r.Limit > 0 && out.Matched >= r.Limit {
					out.NextCursor = string(st) + "|" + cs + "|" + cm
					break
				}
			}
			if len(calls) > 0 {
				if err := l.batch.exec(ctx, calls...); err != nil {
					return out, fmt.Errorf("cancelling tasks: %w", err)
				}
				if l.Partitioned() {
					l.cancelled(ctx, tenant, cids, cfns, calls)
				}
				for _, c := range calls {
					if res, _ := c.cmd.StringSlice(); len(res) > 0 && res[0] == "ok" {
						out.Cancelled++
					}
				}
			}
			if out.NextCursor != "" {
				return out, nil
			}
			if len(ids) < controlStep {
				break
			}
		}
	}
	return out, nil
}
