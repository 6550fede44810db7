package deploy_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestComposeTracingProfile: Jaeger runs only with the "tracing" profile,
// published on 127.0.0.1 only, and Tasklane's OTLP endpoint is empty (no
// tracing) unless OTEL_EXPORTER_OTLP_ENDPOINT is given.
func TestComposeTracingProfile(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var c struct {
		Services map[string]struct {
			Profiles    []string          `yaml:"profiles"`
			Ports       []string          `yaml:"ports"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(data, &c))
	j, ok := c.Services["jaeger"]
	require.True(t, ok, "a jaeger service")
	require.Equal(t, []string{"tracing"}, j.Profiles)
	require.NotEmpty(t, j.Ports)
	for _, p := range j.Ports {
		require.Regexp(t, `^127\.0\.0\.1:\d+:\d+$`, p)
	}
	require.Contains(t, j.Ports, "127.0.0.1:4318:4318", "OTLP/HTTP for Tasklane")
	for name, s := range c.Services {
		if name != "jaeger" {
			require.Empty(t, s.Profiles, "service %s runs without a profile", name)
		}
	}
	require.Equal(t, "${OTEL_EXPORTER_OTLP_ENDPOINT:-}", c.Services["tasklane"].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
}
