package contracts

// FunctionsView is the body of a 200 answer to GET /v1/admin/functions (an
// admin key): every configured function's flow-control state, cluster-wide.
type FunctionsView struct {
	// Functions lists the configured functions in config order.
	Functions []FunctionView `json:"functions"`
}

// FunctionView is one function's flow-control state.
type FunctionView struct {
	Name string `json:"name"`
	// Limit is how many of its attempts may run at once now, across the
	// cluster: the adaptive limit (capped by Concurrency when set) for an
	// adaptive function, else Concurrency; 0 is no limit.
	Limit int `json:"limit"`
	// Adaptive says the limit adapts to the function's answers (AIMD).
	Adaptive bool `json:"adaptive"`
	// Concurrency is the static limit (functions[].concurrency; 0: none).
	Concurrency int `json:"concurrency"`
	// Running counts its attempts in flight (live leases).
	Running int64 `json:"running"`
	// Waiting counts its tasks ready to start, all bands.
	Waiting int64 `json:"waiting"`
	// Ready counts its tasks ready to start per priority band.
	Ready ReadyBands `json:"ready"`
	// ThrottledLastMinute approximates its throttled answers (429, 503) in
	// the last 60 s.
	ThrottledLastMinute int64 `json:"throttled_last_minute"`
}

// ReadyBands counts a function's ready tasks per priority band.
type ReadyBands struct {
	// High is priorities 7-9.
	High int64 `json:"high"`
	// Normal is priorities 3-6.
	Normal int64 `json:"normal"`
	// Low is priorities 0-2.
	Low int64 `json:"low"`
}
