package ledger

import "github.com/tasklane/tasklane/contracts"

// Key names for tests that play the take script's part.

func (l *Ledger) FnStateKey(function string) string  { return l.fnStateKey(function) }
func (l *Ledger) InflightKey(function string) string { return l.inflightKey(function) }
func (l *Ledger) LogKey(tenant, id string) string    { return l.logKey(tenant, id) }
func (l *Ledger) TaskKey(tenant, id string) string   { return l.taskKey(tenant, id) }
func (l *Ledger) AllKey(tenant string) string        { return l.allKey(tenant) }
func (l *Ledger) StateKey(tenant string, s contracts.State) string {
	return l.stateKey(tenant, s)
}
