// Package deploy_test checks docker-compose.yml (at the repository root) and
// the config it runs, examples/compose/tasklane.yaml, without a Docker
// engine: CI also runs `docker-compose -f docker-compose.yml config -q`.
package deploy_test

import (
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/tasklane/tasklane/pkg/config"
)

type composeFile struct {
	Services map[string]service `yaml:"services"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Restart     string            `yaml:"restart"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Ports       []any             `yaml:"ports"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var c composeFile
	require.NoError(t, yaml.Unmarshal(data, &c))
	require.NotEmpty(t, c.Services)
	return c
}

// TestComposeFile checks what docker-compose.yml promises: a healthcheck on
// tasklane through `tasklane health` (the image has no shell), a restart
// policy on every service, the stores not published beyond 127.0.0.1, and
// start-up ordering on health.
func TestComposeFile(t *testing.T) {
	c := loadCompose(t)

	tl, ok := c.Services["tasklane"]
	require.True(t, ok, "a tasklane service")
	require.NotNil(t, tl.Healthcheck, "tasklane has a healthcheck")
	require.Equal(t, []string{"CMD", "/usr/local/bin/tasklane", "health", "http://127.0.0.1:8080"}, tl.Healthcheck.Test)
	for _, dep := range []string{"rabbitmq", "redis"} {
		require.Equal(t, "service_healthy", tl.DependsOn[dep].Condition, "tasklane waits for %s", dep)
		require.NotNil(t, c.Services[dep].Healthcheck, "%s has a healthcheck", dep)
	}

	for name, s := range c.Services {
		require.Contains(t, []string{"always", "unless-stopped", "on-failure"}, s.Restart, "service %s: restart policy", name)
		for _, p := range s.Ports {
			short, ok := p.(string)
			require.True(t, ok, "service %s: port %v in the short syntax", name, p)
			if name == "rabbitmq" || name == "redis" || name == "minio" {
				// host_ip:host_port:container_port, host_ip 127.0.0.1 only.
				require.Regexp(t, `^127\.0\.0\.1:\d+:\d+$`, short, "service %s publishes %q beyond 127.0.0.1", name, short)
			}
		}
	}

	// The thumbnail service runs a binary of the tasklane image: the
	// Dockerfile must build it.
	th := c.Services["thumbnail"]
	require.Equal(t, tl.Image, th.Image)
	require.Equal(t, []string{"/usr/local/bin/thumbnail"}, th.Entrypoint)
	dockerfile, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	require.Contains(t, string(dockerfile), "-o /out/thumbnail ./examples/thumbnail")
	require.Contains(t, string(dockerfile), "COPY --from=build /out/tasklane /out/thumbnail /usr/local/bin/")
}

// TestComposeTasklaneConfig renders examples/compose/tasklane.yaml as the
// tasklane-config service does, with the documented default keys: it must
// be a valid config with a tenant (serve refuses to run without one), and
// every function endpoint, sink and MinIO webhook must name a service of
// the compose network.
func TestComposeTasklaneConfig(t *testing.T) {
	c := loadCompose(t)
	tmpl, err := os.ReadFile("../examples/compose/tasklane.yaml")
	require.NoError(t, err)
	env := c.Services["tasklane-config"].Environment
	rendered := regexp.MustCompile(`@([A-Z_]+)@`).ReplaceAllStringFunc(string(tmpl), func(m string) string {
		v, ok := env[strings.Trim(m, "@")]
		require.True(t, ok, "placeholder %s has no variable in the tasklane-config service", m)
		def := regexp.MustCompile(`^\$\{[A-Z_]+:-([^}]+)\}$`).FindStringSubmatch(v)
		require.NotNil(t, def, "%s=%q: want ${VAR:-default}", m, v)
		return def[1]
	})
	cfg, err := config.Parse("examples/compose/tasklane.yaml", []byte(rendered))
	require.NoError(t, err)
	require.NotEmpty(t, cfg.Tenants)
	require.NotEmpty(t, cfg.Tenants[0].APIKeys)
	require.NotEmpty(t, cfg.Server.AdminKeys)

	inCompose := func(what, raw string) {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		_, ok := c.Services[u.Hostname()]
		require.True(t, ok, "%s %s: host %q is not a compose service", what, raw, u.Hostname())
	}
	for _, f := range cfg.Functions {
		if strings.HasPrefix(f.Endpoint, "http") {
			inCompose("function "+f.Name, f.Endpoint)
		}
	}
	for _, s := range cfg.Subscriptions {
		inCompose("subscription "+s.Name, s.Sink)
	}

	// MinIO notifies the notify trigger's path, with the token it reads.
	minio := c.Services["minio"].Environment
	var hooks []string
	for _, tr := range cfg.Triggers {
		if tr.ObjectStore != nil && tr.ObjectStore.Mode == config.ObjectModeNotify {
			hooks = append(hooks, "http://tasklane:8080"+config.HookPathPrefix+tr.HookPath())
			require.Equal(t, minio["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_TASKLANE"], c.Services["tasklane"].Environment[tr.ObjectStore.TokenEnv])
		}
	}
	require.Equal(t, []string{minio["MINIO_NOTIFY_WEBHOOK_ENDPOINT_TASKLANE"]}, hooks)
}
