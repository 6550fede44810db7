package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a [time.Duration] written in YAML as a Go duration string such as
// "30s", "5m" or "168h". Negative durations are rejected when decoding.
type Duration time.Duration

// errInvalidDuration is returned by ParseDuration.
var errInvalidDuration = errors.New("invalid duration")

// ParseDuration parses a non-negative Go duration string ("30s", "1h30m").
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w %q (use e.g. 30s, 5m, 1h)", errInvalidDuration, s)
	}
	return Duration(d), nil
}

// Std returns d as a [time.Duration].
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d like [time.Duration.String] without zero trailing units:
// "5m" rather than "5m0s", "168h" rather than "168h0m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string, for callers decoding a Duration with
// the yaml package directly. [Parse] handles Duration itself.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: decoding duration: expected a string like 30s", n.Line)
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: decoding duration: %w", n.Line, err)
	}
	*d = v
	return nil
}
