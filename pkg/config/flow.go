package config

// Flow control: a function's adaptive concurrency limit and the admission
// bound across tenants (the per-tenant and per-function limits are fields
// of Tenant, Function and Dispatcher).

// Adaptive tunes a function's AIMD concurrency limit.
type Adaptive struct {
	// Min is the lowest (and first) limit. Required, at least 1.
	Min int `yaml:"min"`
	// Max is the highest limit. Required, Min..100000.
	Max int `yaml:"max"`
	// Increase is added to the limit after an interval in which the
	// function had a backlog, ran at its limit and was not throttled.
	// Default 1, range 1..Max.
	Increase int `yaml:"increase"`
	// Interval is the control period. Default 1s, range 10ms..1m.
	Interval Duration `yaml:"interval"`
	// Decrease multiplies the limit after an interval whose throttled
	// answers passed both ErrorRate and ErrorCount. Default 0.7, range
	// (0, 1).
	Decrease float64 `yaml:"decrease"`
	// ErrorRate is the share of throttled answers in an interval that,
	// with ErrorCount, decreases the limit. Default 0.1, range (0, 1].
	ErrorRate float64 `yaml:"error_rate"`
	// ErrorCount is the number of throttled answers in an interval that,
	// with ErrorRate, decreases the limit. Default 5, range 1..1000000.
	ErrorCount int `yaml:"error_count"`
	// Timeouts counts attempts that timed out as throttled. Default false.
	Timeouts bool `yaml:"timeouts"`
}

// Admission bounds what the gateway accepts across all tenants.
type Admission struct {
	// MaxBacklog is the number of waiting tasks (all tenants) above which
	// submissions are refused with 429, the heaviest tenants first (with a
	// probability from each tenant's share of recent submissions). Default
	// 0: no global limit.
	MaxBacklog int64 `yaml:"max_backlog"`
}
