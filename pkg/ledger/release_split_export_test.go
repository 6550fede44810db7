package ledger

// The split scripts (decision 0017's phase 2) by name, for the slot audit (which
// runs on one Redis: their forms without the shebang).
func init() {
	for name, s := range map[string]splitScript{
		"finish.t": finishTScript, "retry.t": retryTScript, "cancel.t": cancelTScript, "unpark.t": unparkTScript,
		"release.f": releaseFScript, "unpark.f": unparkFScript, "renew.t": renewTScript, "renew.f": renewFScript,
		"reserve.f": reserveFScript, "claim.t": claimTScript,
		"take.f": takeFScript, "start.t": startTScript, "requeue.f": requeueFScript, "admit.t": admitTScript,
		"admit.f": admitFScript, "backlog.f": backlogFScript, "sweep.f": sweepFScript, "repark.t": reparkTScript,
	} {
		Scripts[name] = s.plain
	}
}

// ScriptHash is the hash of the ledger's script name as the slot audit
// names it (the form without the shebang), for tests that drop its calls.
func ScriptHash(name string) string { return Scripts[name].Hash() }
