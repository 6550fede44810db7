package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

func TestTelemetryBlock(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("tasklane.yaml", []byte(`telemetry:
  enabled: true
  endpoint: http://127.0.0.1:4318
  protocol: http/protobuf
  sample_ratio: 0.01
  service_name: tasklane-eu
`))
	require.NoError(t, err)
	tel := cfg.Telemetry
	require.NotNil(t, tel.Enabled)
	require.True(t, *tel.Enabled)
	require.Equal(t, "http://127.0.0.1:4318", tel.Endpoint)
	require.Equal(t, config.TelemetryHTTP, tel.Protocol)
	require.NotNil(t, tel.SampleRatio)
	require.InDelta(t, 0.01, *tel.SampleRatio, 1e-9)
	require.Equal(t, "tasklane-eu", tel.ServiceName)

	cfg, err = config.Parse("tasklane.yaml", nil)
	require.NoError(t, err)
	require.Nil(t, cfg.Telemetry.Enabled, "unset: the standard variables decide")
	require.Nil(t, cfg.Telemetry.SampleRatio)
}

func TestTelemetryBlockErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, yaml, want string }{
		{"Protocol", "telemetry:\n  protocol: http/json\n",
			`tasklane.yaml:2:13: telemetry.protocol: must be "http/protobuf" or "grpc", got "http/json"`},
		{"Ratio", "telemetry:\n  sample_ratio: 1.5\n",
			`tasklane.yaml:2:17: telemetry.sample_ratio: must be a share in [0, 1], got 1.5`},
		{"Endpoint", "telemetry:\n  endpoint: collector:4318\n",
			`tasklane.yaml:2:13: telemetry.endpoint: must be an http:// or https:// URL with a host, got "collector:4318"`},
		{"UnknownKey", "telemetry:\n  sampler: 0.5\n",
			`tasklane.yaml:2:3: telemetry.sampler: unknown key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse("tasklane.yaml", []byte(tt.yaml))
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}
