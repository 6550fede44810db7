package ledger

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Key names for tests that play the take script's part.

func (l *Ledger) FnStateKey(function string) string  { return l.fnStateKey(function) }
func (l *Ledger) InflightKey(function string) string { return l.inflightKey(function) }
func (l *Ledger) InflightNHKey(function string) string {
	return l.inflightNHKey(function)
}
func (l *Ledger) LogKey(tenant, id string) string  { return l.logKey(tenant, id) }
func (l *Ledger) TaskKey(tenant, id string) string { return l.taskKey(tenant, id) }
func (l *Ledger) AllKey(tenant string) string      { return l.allKey(tenant) }
func (l *Ledger) StateKey(tenant string, s contracts.State) string {
	return l.stateKey(tenant, s)
}

// LuaTenantPrefix is the scripts' tenantPrefix, DelayKey, OutboxStream and
// ExpiryKey (tprefix, tshared), for the test that holds them to the Go
// ones.
const LuaTenantPrefix = luaTenantPrefix

// Scripts are the ledger's scripts by name, for the slot audit.
var Scripts = map[string]*redis.Script{
	"create": createScript, "claim": claimScript, "end": endScript, "redrive": redriveScript,
	"purge": purgeScript, "renew": renewScript, "finish": finishScript, "retry": retryScript,
	"due": dueScript, "forget": forgetScript, "dropguards": dropGuardsScript, "abandon": abandonScript, "admit": admitScript,
	"take": takeScript, "unpark": unparkScript, "adaptive": adaptiveScript, "backlog": backlogScript,
	"appendlog": appendLogScript, "page": pageScript, "pausestep": pauseStepScript,
	"resumestep": resumeStepScript, "resumebegin": resumeBeginScript, "cancel": cancelScript,
	"prune": pruneScript, "listpage": listPageScript, "forgetevent": forgetEventScript,
}

// TakeFOnly runs take.f alone (a take whose dispatcher died before the
// starts): it reserves up to n of function's refs until now+lease.
func (l *Ledger) TakeFOnly(ctx context.Context, function string, n int, lease time.Duration) (int, error) {
	now := l.cfg.Now()
	refs, _, _, err := l.takeF(ctx, function, now, now.Add(lease), n, TakeLimits{})
	return len(refs), err
}

// AdmitTOnly runs admit.t alone (an admit whose caller died before
// admit.f): it returns admit.t's verdict.
func (l *Ledger) AdmitTOnly(ctx context.Context, t TaskRef) (string, error) {
	now := l.cfg.Now()
	c := l.admitTCall(t, now, us(now.Add(l.cfg.PublishGuard)))
	res, err := l.run(ctx, c.script, c.keys, c.args...).StringSlice()
	if err != nil {
		return "", err
	}
	return res[0], nil
}
