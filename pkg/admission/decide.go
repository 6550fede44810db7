// Package admission is backpressure at ingest: it refuses a tenant's
// submissions while its backlog (waiting tasks: queued or paused) is at
// its tenants[].max_backlog, and, while all tenants' backlog is above
// admission.max_backlog, refuses the heaviest recent submitters first, each
// with a probability from its share of the routing's sample-and-hold
// estimates, so that a light tenant is almost never refused.
//
// The decision ([Decide]) is a pure function of the limits and a
// [Snapshot]; an [Admitter] keeps the snapshot fresh in the background (one
// pipelined read of every tenant's backlog, every 250 ms by default), so
// admitting a submission never reads Redis. A refusal is a
// [*RefusedError], which the gateway answers 429 with Retry-After and the
// triggers recognise (a cron fire waits and retries).
package admission

import (
	"fmt"
	"math"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// Retry-After bounds and the default when no drain rate is known.
const (
	// RetryAfterMin is the shortest Retry-After of a refusal.
	RetryAfterMin = time.Second
	// RetryAfterMax is the longest Retry-After of a refusal.
	RetryAfterMax = 60 * time.Second
	// RetryAfterDefault is the Retry-After of a refusal while the backlog
	// does not drain (or its drain rate is not known yet).
	RetryAfterDefault = 2 * time.Second
)

// RefusedError is a submission refused by backpressure. Nothing of the
// submission was recorded (a batch is refused whole): retry it, with the
// same event ids, after RetryAfter.
type RefusedError struct {
	// Tenant is the tenant refused.
	Tenant string
	// Reason is contracts.RefusedTenantBacklog or
	// contracts.RefusedGlobalBacklog.
	Reason string
	// Backlog is the waiting tasks that refused it: the tenant's
	// (RefusedTenantBacklog) or all tenants' (RefusedGlobalBacklog).
	Backlog int64
	// Limit is the limit Backlog reached.
	Limit int64
	// RetryAfter is when a retry may be accepted, in whole seconds between
	// RetryAfterMin and RetryAfterMax.
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string {
	if e.Reason == contracts.RefusedGlobalBacklog {
		return fmt.Sprintf("backlog: %d tasks wait across all tenants, above admission.max_backlog %d; tenant %s, among the heaviest recent submitters, is refused: retry after %s",
			e.Backlog, e.Limit, e.Tenant, e.RetryAfter)
	}
	return fmt.Sprintf("backlog: tenant %s has %d tasks waiting (queued or paused), at its max_backlog %d: retry after %s",
		e.Tenant, e.Backlog, e.Limit, e.RetryAfter)
}

// RetryAfterSeconds is RetryAfter in whole seconds, for the header.
func (e *RefusedError) RetryAfterSeconds() int { return int(e.RetryAfter / time.Second) }

// Response is the JSON body of the refusal's 429.
func (e *RefusedError) Response() contracts.ErrorResponse {
	return contracts.ErrorResponse{Error: e.Error(), Tenant: e.Tenant, Backlog: e.Backlog, Limit: e.Limit, Reason: e.Reason}
}

// Limits are the backlog limits; zero is no limit.
type Limits struct {
	// Tenant is each tenant's max_backlog.
	Tenant map[string]int64
	// Global is admission.max_backlog: all tenants' backlog.
	Global int64
}

// Enabled reports whether any limit is set.
func (l Limits) Enabled() bool {
	if l.Global > 0 {
		return true
	}
	for _, n := range l.Tenant {
		if n > 0 {
			return true
		}
	}
	return false
}

// Snapshot is what admission knows of the backlogs at one moment.
type Snapshot struct {
	// Backlog is each tenant's waiting tasks.
	Backlog map[string]int64
	// Drain is each tenant's tasks ending per second, recently; 0 when
	// not known.
	Drain map[string]float64
	// Total is all tenants' backlog, TotalDrain their drain.
	Total      int64
	TotalDrain float64
	// Shares are the tenants' shares of recent submissions (the
	// heavy-hitter estimates); only read when Total is above the global
	// limit.
	Shares map[string]float64
}

// Decide says whether tenant's submission is refused, given the limits
// and snapshot s: with tenant's backlog at its limit, always; with all
// tenants' backlog above the global limit, when u (uniform in [0, 1)) is
// below RefuseProbability. It returns nil to admit.
func Decide(l Limits, s Snapshot, tenant string, u float64) *RefusedError {
	if lim := l.Tenant[tenant]; lim > 0 && s.Backlog[tenant] >= lim {
		b := s.Backlog[tenant]
		return &RefusedError{Tenant: tenant, Reason: contracts.RefusedTenantBacklog, Backlog: b, Limit: lim,
			RetryAfter: RetryAfter(b-lim+1, s.Drain[tenant])}
	}
	if l.Global > 0 && s.Total > l.Global && u < RefuseProbability(s.Shares, tenant) {
		return &RefusedError{Tenant: tenant, Reason: contracts.RefusedGlobalBacklog, Backlog: s.Total, Limit: l.Global,
			RetryAfter: RetryAfter(s.Total-l.Global, s.TotalDrain)}
	}
	return nil
}

// RefuseProbability is the chance that tenant is refused over the global
// limit: its share over the largest share, so the heaviest tenant is always
// refused, one with half its share half the time, and a tenant without a
// share (not a heavy hitter) never.
func RefuseProbability(shares map[string]float64, tenant string) float64 {
	var top float64
	for _, s := range shares {
		top = max(top, s)
	}
	if top <= 0 {
		return 0
	}
	return min(1, max(0, shares[tenant]/top))
}

// RetryAfter is how long excess waiting tasks take to drain at drain tasks
// a second, in whole seconds within [RetryAfterMin, RetryAfterMax];
// RetryAfterDefault when drain is not positive.
func RetryAfter(excess int64, drain float64) time.Duration {
	if drain <= 0 || math.IsNaN(drain) || math.IsInf(drain, 0) {
		return RetryAfterDefault
	}
	secs := math.Ceil(float64(max(excess, 1)) / drain)
	d := time.Duration(min(secs, RetryAfterMax.Seconds())) * time.Second
	return min(max(d, RetryAfterMin), RetryAfterMax)
}
