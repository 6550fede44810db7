package ledger

import "github.com/redis/go-redis/v9"

// Key names for tests that play the take script's part.

func (l *Ledger) FnStateKey(function string) string  { return l.fnStateKey(function) }
func (l *Ledger) InflightKey(function string) string { return l.inflightKey(function) }
func (l *Ledger) LogKey(tenant, id string) string    { return l.logKey(tenant, id) }
func (l *Ledger) TaskKey(tenant, id string) string   { return l.taskKey(tenant, id) }

// Scripts are the ledger's scripts by name, for the slot audit.
var Scripts = map[string]*redis.Script{
	"create": createScript, "claim": claimScript, "end": endScript, "redrive": redriveScript,
	"purge": purgeScript, "renew": renewScript, "finish": finishScript, "retry": retryScript,
	"due": dueScript, "forget": forgetScript, "abandon": abandonScript, "admit": admitScript,
	"take": takeScript, "unpark": unparkScript, "adaptive": adaptiveScript, "backlog": backlogScript,
	"appendlog": appendLogScript, "page": pageScript, "pausestep": pauseStepScript,
	"resumestep": resumeStepScript, "resumebegin": resumeBeginScript, "cancel": cancelScript,
}
