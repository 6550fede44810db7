package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Admit in the partitioned layout (decision 0017): admit.t in the task's
// partition (its state, expiry, pauses), admit.f in the function's slot
// (the ready queue), then a conditional forget of the delay entry and the
// "admitted" log entry in the partition (one pipeline). admit.t does not
// drop the task's delay entry but pushes it a publish guard ahead, and the
// forget drops it only if it still has that score, so a crash at any
// point leaves the task reachable: the lane redelivers it or the
// scheduler admits it again when the entry comes due (admit.f is
// idempotent), and a lease-takeover entry written meanwhile (same member)
// is never dropped. No fast start: AdmitOrStart admits.

// admitTScript is admit's part in the task's partition: luaAdmitHead's
// verdicts, the takeover's log entry, the task queued, its delay entry
// pushed to ARGV[7].
// KEYS: 1 task hash, 2 delay, 3 outbox, 4 expiry set, 5 tenant parked set,
// 6 queued state index, 7 tenant pauses, 8 pause counts
// ARGV: 1 now µs, 2 state-index prefix, 3 id, 4 delay member, 5 retention
// ms, 6 outbox max length, 7 guard score µs, 8 parked member ("<fn>\n<ring>")
// Returns admit's {verdict, detail} for a task not to be admitted, else
// {"queue", guard score, "1" when the tenant is parked in the band}.
var admitTScript = newSplitScript(luaTerminate + luaPausedBy + luaHold + luaStartHelpers + luaAdmitHead + `
if #entries > 0 then logpush(h, logkey(ARGV[2], ARGV[3]), entries) end
` + luaAdmitQueued + `
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[4])
return {'queue', ARGV[7], tostring(redis.call('SISMEMBER', KEYS[5], ARGV[8]))}
`)

// admitFScript is admit's part in the function's slot: the task into its
// ready queue (luaReady).
// KEYS: 1 function state. ARGV: 1 function key prefix, 2 band, 3 tenant,
// 4 id, 5 queue score, 6 "1" when the tenant is parked in the band, 7 wake
// channel, 8 function. Returns admitted, or ready (it was there).
var admitFScript = newSplitScript(luaReady + `
if ready(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]) == 1 then return 'admitted' end
return 'ready'
`)

// queueScore is a ready-queue score: ready µs - priority x 60 s.
func queueScore(now time.Time, priority int) int64 { return us(now) - int64(priority)*60_000_000 }

// admitSplit admits refs in the partitioned layout, each step one
// pipeline (through the batcher for one ref).
func (l *Ledger) admitSplit(ctx context.Context, refs []TaskRef) ([]Admission, error) {
	now := l.cfg.Now()
	guard := us(now.Add(l.cfg.PublishGuard))
	out := make([]Admission, len(refs))
	tcalls := make([]*scriptCall, len(refs))
	for i, t := range refs {
		tcalls[i] = l.admitTCall(t, now, guard)
	}
	err := l.send(ctx, tcalls)
	var fcalls []*scriptCall
	var queued []int
	for i, c := range tcalls {
		res, cerr := c.cmd.StringSlice()
		if cerr != nil || len(res) < 2 {
			err = errors.Join(err, cerr)
			continue
		}
		out[i] = admission(res)
		if res[0] != "queue" || len(res) < 3 {
			continue
		}
		t := refs[i]
		queued = append(queued, i)
		fcalls = append(fcalls, call(l.script(admitFScript), []string{l.fnStateKey(t.Function)},
			l.fnPrefix(t.Function), string(BandOf(t.Priority)), t.Tenant, t.ID, queueScore(now, t.Priority), res[2],
			l.WakeChannel(), t.Function))
	}
	if len(fcalls) == 0 {
		return out, err
	}
	ferr := l.send(ctx, fcalls)
	var last []*scriptCall
	for j, c := range fcalls {
		v, cerr := c.cmd.Text()
		if cerr != nil {
			// Not in the ready queue, perhaps: the delay entry stays, the
			// scheduler admits it again.
			out[queued[j]] = Admission{}
			continue
		}
		t := refs[queued[j]]
		out[queued[j]].Verdict = AdmitVerdict(v)
		last = append(last, call(forgetScript, []string{l.DelayKey(t.Tenant)}, Member(t.Tenant, t.ID), guard))
		if v == string(AdmitAdmitted) {
			last = append(last, call(appendLogScript, []string{l.taskKey(t.Tenant, t.ID), l.logKey(t.Tenant, t.ID)},
				l.encodeLog(contracts.LogEntry{At: now, Kind: contracts.LogAdmitted,
					Message: "ready in the " + string(BandOf(t.Priority)) + " band of " + t.Function})))
		}
	}
	// The last step's failure leaves the delay entry: the scheduler
	// admits the task again (a no-op), then drops it.
	if lerr := l.batch.exec(ctx, last...); lerr != nil {
		err = errors.Join(err, lerr)
	}
	return out, errors.Join(err, ferr)
}

// admitTCall is t's admit.t call at now, its delay entry pushed to guard.
func (l *Ledger) admitTCall(t TaskRef, now time.Time, guard int64) *scriptCall {
	ring := l.fnPrefix(t.Function) + "ready:" + string(BandOf(t.Priority))
	return call(l.script(admitTScript), []string{l.taskKey(t.Tenant, t.ID), l.DelayKey(t.Tenant), l.OutboxStream(t.Tenant),
		l.ExpiryKey(t.Tenant), l.parkedKey(t.Tenant), l.stateKey(t.Tenant, contracts.StateQueued), l.pausesKey(t.Tenant), l.pauseCountKey(t.Tenant)},
		us(now), l.statePrefix(t.Tenant), t.ID, Member(t.Tenant, t.ID), l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		guard, t.Function+"\n"+ring)
}

// admission reads admit's (and admit.t's) verdict.
func admission(res []string) Admission {
	a := Admission{Verdict: AdmitVerdict(res[0])}
	switch a.Verdict {
	case AdmitBusy:
		a.LeaseUntil = microTime(res[1])
	case AdmitEarly:
		a.Due = microTime(res[1])
	case AdmitDone, AdmitNo:
		a.State = res[1]
	}
	return a
}

// send runs calls in one pipeline; a single call goes through the
// batcher, to share a pipeline with concurrent callers.
func (l *Ledger) send(ctx context.Context, calls []*scriptCall) error {
	if len(calls) != 1 {
		return l.batch.exec(ctx, calls...)
	}
	c := calls[0]
	c.cmd = l.batch.eval(ctx, c.script, c.keys, c.args...)
	if err := c.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

// admitOne is Admit in the partitioned layout.
func (l *Ledger) admitOne(ctx context.Context, t TaskRef) (Admission, error) {
	as, err := l.admitSplit(ctx, []TaskRef{t})
	if err != nil {
		return Admission{}, fmt.Errorf("admitting task %s: %w", t.ID, err)
	}
	return as[0], nil
}
