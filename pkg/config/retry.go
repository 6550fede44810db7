package config

import "time"

// Retry is a function's retry policy.
type Retry struct {
	// MaxAttempts counts the first attempt. Default 3, range 1..100.
	MaxAttempts int `yaml:"max_attempts"`
	// InitialBackoff is the delay before the second attempt. Default 1s.
	InitialBackoff Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the exponential backoff. Default 5m, or InitialBackoff
	// when that is larger; at least InitialBackoff.
	MaxBackoff Duration `yaml:"max_backoff"`
	// MaxThrottled is how many throttled answers (429, 503) a task may get
	// without them counting as attempts; beyond it each counts. Default 20,
	// range 0..1000.
	MaxThrottled *int `yaml:"max_throttled"`
}

// Throttled returns MaxThrottled with its default applied.
func (r Retry) Throttled() int {
	if r.MaxThrottled == nil {
		return MaxThrottledDefault
	}
	return *r.MaxThrottled
}

// Backoff returns the delay before attempt+1 after attempt (1-based) failed:
// min(MaxBackoff, InitialBackoff * 2^(attempt-1)), without jitter (callers add
// it). An attempt below 1 counts as 1.
func (r Retry) Backoff(attempt int) time.Duration {
	initial, limit := r.InitialBackoff.Std(), r.MaxBackoff.Std()
	if initial <= 0 || limit <= 0 {
		return max(0, min(initial, limit))
	}
	d := initial
	for i := 1; i < attempt && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}
