package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

// TestParseFlowControlErrors: the flow-control limits (adaptive
// concurrency, tenant quota and backlog, admission, dispatcher slots) reject
// what a user can write wrong, each with file:line:col and the field path.
// A zero written in the file is validated as written, not defaulted.
func TestParseFlowControlErrors(t *testing.T) {
	t.Parallel()

	adaptive := func(a string) string {
		return "functions:\n  - name: f\n    events: [t]\n    endpoint: \"builtin:noop\"\n    adaptive: " + a + "\n"
	}
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{name: "AdaptiveMinZero", yaml: adaptive("{min: 0, max: 10}"),
			want: `tasklane.yaml:5:21: functions[0].adaptive.min: must be at least 1, got 0`},
		{name: "AdaptiveMinNegative", yaml: adaptive("{min: -2, max: 10}"),
			want: `tasklane.yaml:5:21: functions[0].adaptive.min: must be at least 1, got -2`},
		{name: "AdaptiveMinAndMaxZero", yaml: adaptive("{min: 0, max: 0}"),
			want: `tasklane.yaml:5:21: functions[0].adaptive.min: must be at least 1, got 0
tasklane.yaml:5:29: functions[0].adaptive.max: must be between 1 and 100000, got 0`},
		{name: "AdaptiveMinAboveMax", yaml: adaptive("{min: 8, max: 4}"),
			want: `tasklane.yaml:5:29: functions[0].adaptive.max: must be at least adaptive.min (8), got 4`},
		{name: "AdaptiveMaxTooLarge", yaml: adaptive("{min: 1, max: 200000}"),
			want: `tasklane.yaml:5:29: functions[0].adaptive.max: must be between 1 and 100000, got 200000`},
		{name: "AdaptiveMissingBounds", yaml: adaptive("{increase: 2}"),
			want: `tasklane.yaml:5:15: functions[0].adaptive.min: missing (required)
tasklane.yaml:5:15: functions[0].adaptive.max: missing (required)`},
		{name: "AdaptiveEmpty", yaml: adaptive("{}"),
			want: `tasklane.yaml:5:15: functions[0].adaptive.min: missing (required)
tasklane.yaml:5:15: functions[0].adaptive.max: missing (required)`},
		{name: "AdaptiveIncreaseAboveMax", yaml: adaptive("{min: 1, max: 4, increase: 5}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.increase: must be at most adaptive.max (4), got 5`},
		{name: "AdaptiveIncreaseZero", yaml: adaptive("{min: 1, max: 4, increase: 0}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.increase: must be at least 1, got 0`},
		{name: "AdaptiveDecreaseOne", yaml: adaptive("{min: 1, max: 4, decrease: 1}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.decrease: must be a factor in (0, 1), got 1`},
		{name: "AdaptiveDecreaseZero", yaml: adaptive("{min: 1, max: 4, decrease: 0}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.decrease: must be a factor in (0, 1), got 0`},
		{name: "AdaptiveDecreaseNegative", yaml: adaptive("{min: 1, max: 4, decrease: -0.5}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.decrease: must be a factor in (0, 1), got -0.5`},
		{name: "AdaptiveErrorRateAboveOne", yaml: adaptive("{min: 1, max: 4, error_rate: 1.5}"),
			want: `tasklane.yaml:5:44: functions[0].adaptive.error_rate: must be a share in (0, 1], got 1.5`},
		{name: "AdaptiveErrorRateZero", yaml: adaptive("{min: 1, max: 4, error_rate: 0}"),
			want: `tasklane.yaml:5:44: functions[0].adaptive.error_rate: must be a share in (0, 1], got 0`},
		{name: "AdaptiveErrorCountZero", yaml: adaptive("{min: 1, max: 4, error_count: 0}"),
			want: `tasklane.yaml:5:45: functions[0].adaptive.error_count: must be between 1 and 1000000, got 0`},
		{name: "AdaptiveIntervalTooShort", yaml: adaptive("{min: 1, max: 4, interval: 1ms}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.interval: must be between 10ms and 1m, got 1ms`},
		{name: "AdaptiveIntervalTooLong", yaml: adaptive("{min: 1, max: 4, interval: 2m}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.interval: must be between 10ms and 1m, got 2m`},
		{name: "AdaptiveIntervalZero", yaml: adaptive("{min: 1, max: 4, interval: 0s}"),
			want: `tasklane.yaml:5:42: functions[0].adaptive.interval: must be between 10ms and 1m, got 0s`},
		{name: "AdaptiveUnknownKey", yaml: adaptive("{min: 1, max: 4, decrese: 0.5}"),
			want: `tasklane.yaml:5:32: functions[0].adaptive.decrese: unknown key (did you mean "decrease"?)`},
		{name: "FunctionConcurrencyNegative", yaml: "functions: [{name: f, events: [t], endpoint: \"builtin:noop\", concurrency: -1}]",
			want: `tasklane.yaml:1:75: functions[0].concurrency: must be 0 (no limit) or more, got -1`},
		{name: "TenantConcurrencyNegative", yaml: "tenants:\n  - {id: acme, api_keys: [acme-dev-key], concurrency: -4}\n",
			want: `tasklane.yaml:2:55: tenants[0].concurrency: must be 0 (no limit) or more, got -4`},
		{name: "TenantMaxBacklogNegative", yaml: "tenants:\n  - {id: acme, api_keys: [acme-dev-key], max_backlog: -1}\n",
			want: `tasklane.yaml:2:55: tenants[0].max_backlog: must be 0 (no limit) or more, got -1`},
		{name: "AdmissionMaxBacklogNegative", yaml: "admission:\n  max_backlog: -100\n",
			want: `tasklane.yaml:2:16: admission.max_backlog: must be 0 (no limit) or more, got -100`},
		{name: "MaxRunningNegative", yaml: "dispatcher: {max_running: -1}",
			want: `tasklane.yaml:1:27: dispatcher.max_running: must be between 1 and 10000, got -1`},
		{name: "MaxRunningExplicitZero", yaml: "dispatcher: {max_running: 0}",
			want: `tasklane.yaml:1:27: dispatcher.max_running: must be between 1 and 10000, got 0`},
		{name: "MaxRunningTooLarge", yaml: "dispatcher: {max_running: 20000}",
			want: `tasklane.yaml:1:27: dispatcher.max_running: must be between 1 and 10000, got 20000`},
		{name: "ReservedHighOne", yaml: "dispatcher: {reserved_high: 1}",
			want: `tasklane.yaml:1:29: dispatcher.reserved_high: must be a share in [0, 1) (0: none reserved), got 1`},
		{name: "ReservedHighNegative", yaml: "dispatcher: {reserved_high: -0.1}",
			want: `tasklane.yaml:1:29: dispatcher.reserved_high: must be a share in [0, 1) (0: none reserved), got -0.1`},
		{name: "ReservedHighNaN", yaml: "dispatcher: {reserved_high: .nan}",
			want: `tasklane.yaml:1:29: dispatcher.reserved_high: must be a share in [0, 1) (0: none reserved), got NaN`},
		{name: "SecondFunctionPath", yaml: `functions:
  - {name: a, events: [t], endpoint: "builtin:noop", adaptive: {min: 1, max: 2}}
  - {name: b, events: [t], endpoint: "builtin:noop", adaptive: {min: 3, max: 2}}
`, want: `tasklane.yaml:3:78: functions[1].adaptive.max: must be at least adaptive.min (3), got 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse(file, []byte(tt.yaml))
			require.Nil(t, cfg)
			require.EqualError(t, err, tt.want)
			for _, p := range problems(t, err) {
				require.Equal(t, file, p.File)
				require.Positive(t, p.Line)
			}
		})
	}
}

// TestParseFlowControlValid: the bounds themselves are valid.
func TestParseFlowControlValid(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse(file, []byte(`dispatcher: {max_running: 10000, reserved_high: 0.99}
admission: {max_backlog: 1000000}
tenants:
  - {id: acme, api_keys: [acme-dev-key], concurrency: 0, max_backlog: 0}
  - {id: globex, api_keys: [globex-dev-key], concurrency: 50, max_backlog: 5000}
functions:
  - name: f
    events: [t]
    endpoint: "builtin:noop"
    adaptive: {min: 100000, max: 100000, increase: 100000, interval: 10ms, decrease: 0.01, error_rate: 1, error_count: 1000000, timeouts: true}
  - name: g
    events: [t]
    endpoint: "builtin:noop"
    adaptive: {min: 1, max: 1, interval: 1m, decrease: 0.99, error_rate: 0.001, error_count: 1}
`))
	require.NoError(t, err)
	require.Equal(t, 10000, cfg.Dispatcher.MaxRunning)
	require.InDelta(t, 0.99, cfg.Dispatcher.ReservedHigh, 0)
	require.Equal(t, int64(1000000), cfg.Admission.MaxBacklog)
	require.Equal(t, 50, cfg.Tenants[1].Concurrency)
	require.Equal(t, int64(5000), cfg.Tenants[1].MaxBacklog)
	require.Equal(t, &config.Adaptive{
		Min: 100000, Max: 100000, Increase: 100000, Interval: config.Duration(10 * time.Millisecond),
		Decrease: 0.01, ErrorRate: 1, ErrorCount: 1000000, Timeouts: true,
	}, cfg.Functions[0].Adaptive)
	require.Equal(t, config.Duration(time.Minute), cfg.Functions[1].Adaptive.Interval)
}

// TestFlowControlDefaults: left out, the flow-control settings take their
// documented defaults; an adaptive block needs only min and max.
func TestFlowControlDefaults(t *testing.T) {
	t.Parallel()

	t.Run("Parse", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`tenants: [{id: acme, api_keys: [acme-dev-key]}]
functions:
  - {name: f, events: [t], endpoint: "builtin:noop", adaptive: {min: 2, max: 64}}
  - {name: g, events: [t], endpoint: "builtin:noop"}
`))
		require.NoError(t, err)
		require.Equal(t, &config.Adaptive{
			Min: 2, Max: 64, Increase: 1, Interval: config.Duration(time.Second),
			Decrease: 0.7, ErrorRate: 0.1, ErrorCount: 5,
		}, cfg.Functions[0].Adaptive)
		require.Nil(t, cfg.Functions[1].Adaptive, "no adaptive block: a static limit")
		require.Equal(t, 256, cfg.Dispatcher.MaxRunning)
		require.Zero(t, cfg.Dispatcher.ReservedHigh)
		require.Zero(t, cfg.Admission.MaxBacklog)
		require.Zero(t, cfg.Tenants[0].Concurrency)
		require.Zero(t, cfg.Tenants[0].MaxBacklog)
	})

	t.Run("Constants", func(t *testing.T) {
		t.Parallel()
		// The README and the doc comments state these values.
		require.Equal(t, 1, config.AdaptiveIncreaseDefault)
		require.Equal(t, config.Duration(time.Second), config.AdaptiveIntervalDefault)
		require.InDelta(t, 0.7, config.AdaptiveDecreaseDefault, 0)
		require.InDelta(t, 0.1, config.AdaptiveErrorRateDefault, 0)
		require.Equal(t, 5, config.AdaptiveErrorCountDefault)
		require.Equal(t, 256, config.MaxRunningDefault)
	})

	t.Run("GoBuilt", func(t *testing.T) {
		t.Parallel()
		in := &config.Config{Functions: []config.Function{{
			Name: "f", Events: []string{"t"}, Endpoint: config.EndpointNoop,
			Adaptive: &config.Adaptive{Min: 1, Max: 8},
		}}}
		out := in.WithDefaults()
		require.NoError(t, out.Validate())
		require.Equal(t, 1, out.Functions[0].Adaptive.Increase)
		require.Zero(t, in.Functions[0].Adaptive.Increase, "WithDefaults copies the adaptive block")
		require.NotSame(t, in.Functions[0].Adaptive, out.Functions[0].Adaptive)

		// In Go, a zero min or max is left out: required.
		in.Functions[0].Adaptive = &config.Adaptive{}
		require.EqualError(t, in.WithDefaults().Validate(), strings.Join([]string{
			`functions[0].adaptive.min: missing (required)`,
			`functions[0].adaptive.max: missing (required)`,
		}, "\n"))
	})
}

// TestParseExampleFileUncommented: the optional settings the example file
// shows commented out are valid as written once uncommented, and the
// commented adaptive block raises no warning next to the function's
// concurrency.
func TestParseExampleFileUncommented(t *testing.T) {
	t.Parallel()

	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "tasklane.yaml"))
	require.NoError(t, err)
	setting := regexp.MustCompile(`^(\s*)# (\s*[a-z_]+:)`)
	lines := strings.Split(string(data), "\n")
	uncommented := 0
	for i, l := range lines {
		if setting.MatchString(l) {
			lines[i] = setting.ReplaceAllString(l, "$1$2")
			uncommented++
		}
	}
	require.Greater(t, uncommented, 10, "the example shows its optional settings commented out")

	cfg, err := config.Parse(file, []byte(strings.Join(lines, "\n")))
	require.NoError(t, err)
	require.InDelta(t, 0.1, cfg.Dispatcher.ReservedHigh, 0)
	require.Equal(t, int64(100000), cfg.Admission.MaxBacklog)
	require.Equal(t, 100, cfg.Tenants[0].Concurrency)
	require.Equal(t, int64(10000), cfg.Tenants[0].MaxBacklog)
	thumb := cfg.Function("thumbnail")
	require.NotNil(t, thumb)
	require.Equal(t, &config.Adaptive{
		Min: 4, Max: 64, Increase: 1, Interval: config.Duration(time.Second),
		Decrease: 0.7, ErrorRate: 0.1, ErrorCount: 5,
	}, thumb.Adaptive)
	for _, w := range cfg.Warnings() {
		require.NotContains(t, w.Field, "adaptive", w.Error())
		require.NotContains(t, w.Field, "reserved_high", w.Error())
	}
}
