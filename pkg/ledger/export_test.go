package ledger

// Key names for tests that play the take script's part.

func (l *Ledger) FnStateKey(function string) string  { return l.fnStateKey(function) }
func (l *Ledger) InflightKey(function string) string { return l.inflightKey(function) }
func (l *Ledger) LogKey(tenant, id string) string    { return l.logKey(tenant, id) }
func (l *Ledger) TaskKey(tenant, id string) string   { return l.taskKey(tenant, id) }
