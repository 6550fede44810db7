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

// TenantFunctionsView is the body of a 200 answer to GET /v1/functions (a
// tenant's key): the functions the tenant's events reach, with the
// tenant's own running and waiting tasks, and the tenant's quota. It holds
// no other tenant's numbers.
type TenantFunctionsView struct {
	// Tenant is the caller's tenant.
	Tenant string `json:"tenant"`
	// Quota is the tenant's quota and its use, across its functions.
	Quota TenantQuota `json:"quota"`
	// Functions lists the functions the tenant's events reach, in config
	// order.
	Functions []TenantFunctionView `json:"functions"`
}

// TenantQuota is a tenant's configured limits (tenants[]) and its use of
// them, cluster-wide. A zero limit is none.
type TenantQuota struct {
	// Concurrency bounds the tenant's running attempts, all functions.
	Concurrency int `json:"concurrency"`
	// Running counts the tenant's attempts in flight, all functions.
	Running int64 `json:"running"`
	// Rate caps the tenant's starts per second; Burst is how many may
	// start at once within it.
	Rate  float64 `json:"rate"`
	Burst int     `json:"burst"`
	// MaxBacklog is the backlog above which submissions answer 429.
	MaxBacklog int64 `json:"max_backlog"`
	// Backlog counts the tenant's tasks queued or waiting to retry (what
	// MaxBacklog bounds).
	Backlog int64 `json:"backlog"`
}

// TenantFunctionView is one function as a tenant sees it: the function's
// limit, shared by every tenant, and the tenant's own counts.
type TenantFunctionView struct {
	Name string `json:"name"`
	// Limit is how many of the function's attempts (all tenants') may run
	// at once now: the adaptive limit (capped by Concurrency when set) for
	// an adaptive function, else Concurrency; 0 is no limit.
	Limit int `json:"limit"`
	// Adaptive says the limit adapts to the function's answers (AIMD).
	Adaptive bool `json:"adaptive"`
	// Concurrency is the static limit (0: none).
	Concurrency int `json:"concurrency"`
	// Running counts the tenant's attempts of the function in flight.
	Running int64 `json:"running"`
	// Waiting counts the tenant's tasks of the function ready to start,
	// all bands.
	Waiting int64 `json:"waiting"`
	// Ready counts them per priority band.
	Ready ReadyBands `json:"ready"`
}
