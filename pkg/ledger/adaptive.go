package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/config"
)

// Adaptive concurrency (AIMD). A function with adaptive parameters has a
// cluster-wide limit stored in its control state (fnStateKey, field
// "limit"); the take script starts no more than that many of its attempts
// at once (capped by the function's static concurrency when set). Feedback,
// called after each answer, moves the limit: down by Decrease (the product
// rounded up, at least one less) as soon as
// throttled answers (429, 503) pass both ErrorCount and ErrorRate in the
// interval (at most once per interval), up by Increase at the end of an
// interval in which the function ran at its limit with tasks ready (field
// "sat", set by take) and was not throttled.
//
// The adaptive fields of the control state (the take script owns "sat",
// "vt" and "pass_*"):
//
//	limit    the current limit (absent: Min)
//	sat      "1": take found the function at its limit with tasks ready
//	         since the last update (Feedback reads and clears it)
//	a_ws     start of the current interval, µs
//	a_n      answers in the current interval
//	a_t      throttled answers in the current interval
//	a_pn     answers in the previous interval (for the rate)
//	a_pt     throttled answers in the previous interval
//	a_dec    when the limit was last decreased, µs
//	t_min    the minute (Unix µs / 60 s) t_cur counts
//	t_cur    throttled answers in minute t_min
//	t_prev   throttled answers in minute t_min - 1
//
// Throttled answers in the last minute are approximate: the current
// minute's count plus the previous minute's weighted by the share of it
// still within the last 60 s (a sliding-window estimate, as rate limiters
// use), rounded.

// Adaptive are a function's AIMD parameters, as the ledger applies them.
// Zero fields take the config defaults (config.Adaptive*Default); Min is at
// least 1 and Max at least Min.
type Adaptive struct {
	// Min is the lowest and first limit.
	Min int
	// Max is the highest limit.
	Max int
	// Increase is added after an interval at the limit with a backlog and
	// no throttled answer.
	Increase int
	// Interval is the control period: at most one update per interval.
	Interval time.Duration
	// Decrease multiplies the limit after an interval whose throttled
	// answers passed both ErrorRate and ErrorCount; in (0, 1).
	Decrease float64
	// ErrorRate is the share of throttled answers in an interval that,
	// with ErrorCount, decreases the limit.
	ErrorRate float64
	// ErrorCount is the number of throttled answers in an interval that,
	// with ErrorRate, decreases the limit.
	ErrorCount int
}

// AdaptiveOf maps a function's config (nil: not adaptive) to the ledger's
// parameters.
func AdaptiveOf(c *config.Adaptive) *Adaptive {
	if c == nil {
		return nil
	}
	return &Adaptive{
		Min: c.Min, Max: c.Max, Increase: c.Increase, Interval: c.Interval.Std(),
		Decrease: c.Decrease, ErrorRate: c.ErrorRate, ErrorCount: c.ErrorCount,
	}
}

// withDefaults fills zero or out-of-range fields.
func (a Adaptive) withDefaults() Adaptive {
	a.Min = max(a.Min, 1)
	a.Max = max(a.Max, a.Min)
	a.Increase = max(a.Increase, config.AdaptiveIncreaseDefault)
	a.Interval = cmp.Or(max(a.Interval, 0), config.AdaptiveIntervalDefault.Std())
	if !(a.Decrease > 0 && a.Decrease < 1) {
		a.Decrease = config.AdaptiveDecreaseDefault
	}
	if !(a.ErrorRate > 0 && a.ErrorRate <= 1) {
		a.ErrorRate = config.AdaptiveErrorRateDefault
	}
	a.ErrorCount = cmp.Or(max(a.ErrorCount, 0), config.AdaptiveErrorCountDefault)
	return a
}

// minuteUS is the width of a throttled-per-minute bucket.
const minuteUS = int64(time.Minute / time.Microsecond)

// adaptiveScript records one answer of a function and applies the AIMD
// update when the interval ended (see the comment at the top of this file).
// KEYS: 1 the function's control state
// ARGV: 1 now µs, 2 interval µs, 3 min, 4 max, 5 increase, 6 decrease,
// 7 error rate, 8 error count, 9 static concurrency (0: none),
// 10 throttled ("1" or "0"), 11 minute width µs
// Returns the limit after the call.
var adaptiveScript = redis.NewScript(`
local k = KEYS[1]
local now = tonumber(ARGV[1])
local iv = tonumber(ARGV[2])
local mn, mx, inc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local dec, rate, count = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local conc = tonumber(ARGV[9])
local thr = ARGV[10] == '1'
local width = tonumber(ARGV[11])
local v = redis.call('HMGET', k, 'limit', 'a_ws', 'a_n', 'a_t', 'sat', 't_min', 't_cur', 'a_dec', 'a_pn', 'a_pt')
local limit = tonumber(v[1]) or mn
local ws = tonumber(v[2])
local n, t = tonumber(v[3]) or 0, tonumber(v[4]) or 0
local lastdec = tonumber(v[8]) or 0
-- The previous interval's answers smooth the rate seen early in one.
local pn, pt = tonumber(v[9]) or 0, tonumber(v[10]) or 0
-- At most one decrease per interval: the attempts already running above
-- a lowered limit answer throttled too, and must not lower it again. The
-- product is rounded up (but always at least 1 below the limit): rounding
-- down would hold a small limit a whole step under the capacity (the
-- limit probing 5 over a capacity of 4 would fall to 3, not 4).
local function decrease()
  limit = math.max(mn, math.min(limit - 1, math.ceil(limit * dec)))
  lastdec = now
  ws, n, t, pn, pt = now, 0, 0, 0, 0
  redis.call('HDEL', k, 'sat')
end
if ws == nil then
  ws = now
elseif now >= ws + iv then
  if t >= count and t / n >= rate and now >= lastdec + iv then
    decrease()
  elseif v[5] == '1' and t == 0 then
    local top = mx
    if conc > 0 then top = math.min(top, conc) end
    if limit < top then limit = math.min(top, limit + inc) end
  end
  if ws ~= now then pn, pt = n, t end
  if now >= ws + 2 * iv then pn, pt = 0, 0 end
  ws, n, t = now, 0, 0
  redis.call('HDEL', k, 'sat')
end
-- Min and max may have changed in the configuration since the limit was
-- stored.
if limit < mn then limit = mn end
if limit > mx then limit = mx end
n = n + 1
if thr then
  t = t + 1
  -- Throttled answers past both thresholds lower the limit at once, not
  -- at the end of the interval: each one is a call the function refused.
  if t >= count and (t + pt) / (n + pn) >= rate and now >= lastdec + iv then decrease() end
  local m = math.floor(now / width)
  local tm = tonumber(v[6])
  if tm ~= m then
    local prev = 0
    if tm == m - 1 then prev = tonumber(v[7]) or 0 end
    redis.call('HSET', k, 't_min', m, 't_cur', 0, 't_prev', prev)
  end
  redis.call('HINCRBY', k, 't_cur', 1)
end
redis.call('HSET', k, 'limit', limit, 'a_ws', string.format('%.0f', ws), 'a_n', n, 'a_t', t, 'a_pn', pn, 'a_pt', pt,
  'a_dec', string.format('%.0f', lastdec))
return limit
`)

// Feedback records one answer of function's attempt (throttled: a 429 or
// 503, or what the caller counts as such) and returns the function's
// adaptive limit after it. A throttled answer that brings the interval's
// throttled answers to a.ErrorCount, and to a.ErrorRate of its answers
// (with the previous interval's, so that the first answers of an interval
// are not a rate of their own), decreases the limit at once, at most once
// per interval. The first answer after an interval ended increases it when
// the take script found the function at its limit with tasks ready and no
// answer of the interval was throttled. The limit stays within [a.Min, a.Max], and an
// increase never passes concurrency when it is above 0. The call goes
// through the ledger's group commit, so it shares a round trip with other
// script calls.
func (l *Ledger) Feedback(ctx context.Context, function string, a Adaptive, concurrency int, throttled bool) (int, error) {
	a = a.withDefaults()
	flag := "0"
	if throttled {
		flag = "1"
	}
	n, err := l.batch.eval(ctx, adaptiveScript, []string{l.fnStateKey(function)},
		us(l.cfg.Now()), a.Interval.Microseconds(), a.Min, a.Max, a.Increase,
		strconv.FormatFloat(a.Decrease, 'g', -1, 64), strconv.FormatFloat(a.ErrorRate, 'g', -1, 64),
		a.ErrorCount, max(concurrency, 0), flag, minuteUS).Int()
	if err != nil {
		return 0, fmt.Errorf("recording the answer of function %s: %w", function, err)
	}
	return n, nil
}

// FunctionSpec is what FunctionStats needs of a configured function.
type FunctionSpec struct {
	Name string
	// Tenants, when set, are the only tenants whose events reach the
	// function (functions[].tenants).
	Tenants []string
	// Concurrency is the static limit (0: none).
	Concurrency int
	// Adaptive, when set, makes the limit adaptive.
	Adaptive *Adaptive
}

// FunctionSpecs maps the configured functions.
func FunctionSpecs(fns []config.Function) []FunctionSpec {
	out := make([]FunctionSpec, len(fns))
	for i, f := range fns {
		out[i] = FunctionSpec{Name: f.Name, Tenants: f.Tenants, Concurrency: f.Concurrency, Adaptive: AdaptiveOf(f.Adaptive)}
	}
	return out
}

// Reaches says whether tenant's events reach the function.
func (f FunctionSpec) Reaches(tenant string) bool {
	return len(f.Tenants) == 0 || slices.Contains(f.Tenants, tenant)
}

// FunctionStat is a function's flow-control state, cluster-wide (or one
// tenant's share of it, from TenantFunctionStats).
type FunctionStat struct {
	Name string
	// Limit is the limit the take script applies now: for an adaptive
	// function its stored limit (Min before the first update) capped by
	// Concurrency; else Concurrency. 0 is no limit.
	Limit int
	// Adaptive says the limit adapts (AIMD).
	Adaptive bool
	// Concurrency is the static limit (0: none).
	Concurrency int
	// Running counts the attempts in flight (live leases).
	Running int64
	// Waiting counts the tasks ready to start, all bands.
	Waiting int64
	// Ready counts the tasks ready to start per band.
	Ready map[Band]int64
	// ThrottledLastMinute approximates the throttled answers of the last
	// 60 s (see Feedback).
	ThrottledLastMinute int64
}

// FunctionStats reads the flow-control state of fns in one round trip.
func (l *Ledger) FunctionStats(ctx context.Context, fns []FunctionSpec) ([]FunctionStat, error) {
	return l.functionStats(ctx, fns, "")
}

// TenantFunctionStats reads fns' flow-control state as tenant sees it, in
// one round trip: each function's limit (the function's, shared by every
// tenant), and tenant's own running attempts and ready tasks of it; never
// other tenants' counts (ThrottledLastMinute, which counts every tenant's
// answers, stays 0).
func (l *Ledger) TenantFunctionStats(ctx context.Context, tenant string, fns []FunctionSpec) ([]FunctionStat, error) {
	return l.functionStats(ctx, fns, tenant)
}

// TenantRunning counts tenant's attempts in flight, all functions (live
// leases of its in-flight set, the one its quota bounds).
func (l *Ledger) TenantRunning(ctx context.Context, tenant string) (int64, error) {
	n, err := l.rdb.ZCount(ctx, l.tenantInflightKey(tenant), strconv.FormatInt(us(l.cfg.Now()), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("reading the running attempts of tenant %s: %w", tenant, err)
	}
	return n, nil
}

// tenantRunningScript counts a tenant's live members ("<tenant>/<id>") of
// a function's in-flight set, in Redis: only the count crosses the wire.
// The set holds the function's running attempts, so the cost is bounded by
// its limit (or by the dispatchers' slots). It is sent with EVAL in the
// stats' pipeline (a few hundred bytes, no script cache to reload).
// KEYS: 1 in-flight set. ARGV: 1 now µs, 2 "<tenant>/".
const tenantRunningLua = `
local n, p = 0, ARGV[2]
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  if string.sub(m, 1, #p) == p then n = n + 1 end
end
return n
`

// functionStats reads fns' flow-control state: cluster-wide when tenant is
// empty, else tenant's running and ready counts (see TenantFunctionStats).
func (l *Ledger) functionStats(ctx context.Context, fns []FunctionSpec, tenant string) ([]FunctionStat, error) {
	now := us(l.cfg.Now())
	type cmds struct {
		state         *redis.SliceCmd
		running       *redis.IntCmd
		tenantRunning *redis.Cmd
		ready         []*redis.IntCmd
	}
	cs := make([]cmds, len(fns))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, f := range fns {
			cs[i].state = p.HMGet(ctx, l.fnStateKey(f.Name), "limit", "t_min", "t_cur", "t_prev", "n_high", "n_normal", "n_low")
			if tenant == "" {
				cs[i].running = p.ZCount(ctx, l.inflightKey(f.Name), strconv.FormatInt(now, 10), "+inf")
				continue
			}
			cs[i].tenantRunning = p.Eval(ctx, tenantRunningLua, []string{l.inflightKey(f.Name)}, now, tenant+"/")
			for _, b := range Bands {
				cs[i].ready = append(cs[i].ready, p.ZCard(ctx, l.fnPrefix(f.Name)+"ready:"+string(b)+":"+tenant))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading function stats: %w", err)
	}
	out := make([]FunctionStat, len(fns))
	for i, f := range fns {
		st := FunctionStat{Name: f.Name, Adaptive: f.Adaptive != nil, Concurrency: f.Concurrency, Limit: f.Concurrency,
			Ready: make(map[Band]int64, len(Bands))}
		v := cs[i].state.Val()
		field := func(j int) (int64, bool) {
			s, ok := v[j].(string)
			if !ok {
				return 0, false
			}
			n, err := strconv.ParseInt(s, 10, 64)
			return n, err == nil
		}
		if f.Adaptive != nil {
			limit, ok := field(0)
			if !ok {
				limit = int64(max(f.Adaptive.Min, 1))
			}
			st.Limit = int(limit)
			if f.Concurrency > 0 {
				st.Limit = min(st.Limit, f.Concurrency)
			}
		}
		if tenant != "" {
			st.Running, _ = cs[i].tenantRunning.Int64()
			for j, b := range Bands {
				st.Ready[b] = cs[i].ready[j].Val()
				st.Waiting += st.Ready[b]
			}
			out[i] = st
			continue
		}
		st.Running = cs[i].running.Val()
		tm, _ := field(1)
		cur, _ := field(2)
		prev, _ := field(3)
		st.ThrottledLastMinute = throttledLastMinute(now, tm, cur, prev)
		for j, b := range Bands {
			// The ready entries counted by admit and take (entries of
			// tasks cancelled while ready count until a take drops them).
			st.Ready[b], _ = field(4 + j)
			st.Waiting += st.Ready[b]
		}
		out[i] = st
	}
	return out, nil
}

// throttledLastMinute estimates the throttled answers of the 60 s before
// now from the per-minute counts: minute tm counted cur, minute tm-1 prev.
func throttledLastMinute(now, tm, cur, prev int64) int64 {
	m := now / minuteUS
	switch tm {
	case m:
	case m - 1:
		cur, prev = 0, cur
	default:
		return 0
	}
	frac := float64(now%minuteUS) / float64(minuteUS)
	return cur + int64(math.Round(float64(prev)*(1-frac)))
}
