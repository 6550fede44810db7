package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// A direct claim of one task by id, with its limits checked in the same
// script. Dispatch no longer claims this way (a task starts through Take,
// dispatch.go); the call stays for callers that hold a task id, and the
// ledger's tests use it to put a task in the running state. In the
// partitioned layout it is two steps, reserve.f and claim.t
// (release_split.go), with the same verdicts.

// Verdict is the ledger's answer to a claim.
type Verdict string

// Claim verdicts.
const (
	// VerdictRun: the caller holds the lease for Attempt and must run it.
	VerdictRun Verdict = "run"
	// VerdictBusy: another dispatcher holds a live lease until LeaseUntil.
	VerdictBusy Verdict = "busy"
	// VerdictDone: the task is terminal; the delivery is a duplicate.
	VerdictDone Verdict = "done"
	// VerdictMissing: no record (expired, or never written).
	VerdictMissing Verdict = "missing"
	// VerdictPaused: the task is paused and will be requeued on resume.
	VerdictPaused Verdict = "paused"
	// VerdictExpired: the task's TTL passed before it started; the claim
	// ended it as expired.
	VerdictExpired Verdict = "expired"
	// VerdictThrottled: starting it now would exceed a limit; try again
	// after Wait.
	VerdictThrottled Verdict = "throttled"
)

// Claim is the result of claiming a task.
type Claim struct {
	Verdict Verdict
	Attempt int
	// Redrives is the record's redrive count (with Attempt, the fence:
	// Fence).
	Redrives int
	// Throttles counts the throttled answers that did not use an attempt.
	Throttles  int
	LeaseUntil time.Time
	State      contracts.State
	// Wait and Limit are set for VerdictThrottled: how long until the task
	// may start, and which limit held it (concurrency, rate, tenant_rate).
	Wait  time.Duration
	Limit string
}

// Limits bound how fast and how widely a task may start. Zero means none.
type Limits struct {
	// Concurrency caps the function's running attempts across the cluster.
	Concurrency int
	// Rate caps the function's attempt starts per second; Burst of them may
	// start at once.
	Rate  float64
	Burst int
	// TenantRate and TenantBurst do the same for the tenant, across its
	// functions.
	TenantRate  float64
	TenantBurst int
	// ConcurrencyWait is how long a task at the concurrency limit waits
	// before it is tried again. Default 250ms.
	ConcurrencyWait time.Duration
}

// ClaimRequest asks to run the next attempt of a task.
type ClaimRequest struct {
	Tenant, ID, Function, Owner string
	// Lease is how long the attempt holds the task without renewal.
	Lease  time.Duration
	Limits Limits
}

func interval(rate float64) int64 {
	if rate <= 0 {
		return 0
	}
	return int64(float64(time.Second/time.Microsecond) / rate)
}

// Claim asks to run the next attempt of a task, holding a lease until
// now+lease. Only one caller at a time gets VerdictRun; a task already
// terminal is never run again; a task over a limit gets VerdictThrottled
// and the wait.
func (l *Ledger) Claim(ctx context.Context, r ClaimRequest) (Claim, error) {
	now := l.cfg.Now()
	lim := r.Limits
	wait := lim.ConcurrencyWait
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	if l.Partitioned() {
		res, err := l.claimSplit(ctx, r, now, wait)
		if err != nil {
			return Claim{}, fmt.Errorf("claiming task %s: %w", r.ID, err)
		}
		return claimFrom(res, now, r.Lease), nil
	}
	res, err := l.batch.eval(ctx, claimScript, []string{
		l.taskKey(r.Tenant, r.ID), l.DelayKey(r.Tenant), l.OutboxStream(r.Tenant),
		l.inflightKey(r.Function), l.fnRateKey(r.Function), l.tenantPrefix(r.Tenant) + "rate",
		l.ExpiryKey(r.Tenant),
	},
		us(now), us(now.Add(r.Lease)), r.Owner, l.statePrefix(r.Tenant), r.ID, Member(r.Tenant, r.ID),
		l.cfg.Retention.Milliseconds(), OutboxMaxLen,
		lim.Concurrency, interval(lim.Rate), max(lim.Burst, 1), interval(lim.TenantRate), max(lim.TenantBurst, 1),
		wait.Microseconds()).StringSlice()
	if err != nil {
		return Claim{}, fmt.Errorf("claiming task %s: %w", r.ID, err)
	}
	return claimFrom(res, now, r.Lease), nil
}

// claimFrom reads claim's answer res (of a claim at now for lease).
func claimFrom(res []string, now time.Time, lease time.Duration) Claim {
	c := Claim{Verdict: Verdict(res[0])}
	switch c.Verdict {
	case VerdictRun:
		c.Attempt, _ = strconv.Atoi(res[1])
		c.Throttles, _ = strconv.Atoi(res[2])
		c.Redrives, _ = strconv.Atoi(res[3])
		c.LeaseUntil = now.Add(lease)
	case VerdictBusy:
		n, _ := strconv.ParseInt(res[1], 10, 64)
		c.LeaseUntil = time.UnixMicro(n)
	case VerdictDone:
		c.State = contracts.State(res[1])
	case VerdictThrottled:
		n, _ := strconv.ParseFloat(res[1], 64)
		c.Wait = time.Duration(n) * time.Microsecond
		c.Limit = res[2]
	}
	return c
}
