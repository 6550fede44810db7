package tasklane

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

const (
	testAdminKey  = "admin-key-0123456789"
	testTenantKey = "acme-key-0123456789"
)

// startEmbedded starts the gateway role on the embedded store with cfg's
// server and tenants; it is shut down when the test ends.
func startEmbedded(t *testing.T, edit func(*config.Config)) *App {
	t.Helper()
	cfg := DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	edit(cfg)
	require.NoError(t, cfg.Validate())
	stop, err := UseEmbeddedStore(cfg)
	require.NoError(t, err)
	t.Cleanup(stop)
	roles, err := ParseRoles(RoleGateway)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := Start(ctx, cfg, Options{Logger: quietLogger(), Roles: roles})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, app.Shutdown(context.Background())) })
	return app
}

func withTenant(c *config.Config) {
	c.Tenants = []config.Tenant{{ID: "acme", APIKeys: []string{testTenantKey}}}
}

// get sends GET url with key as a Bearer key (none when empty).
func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// /metrics shows every tenant's id and volume: with tenants configured it
// needs an admin key on server.addr, and is off there without admin keys;
// server.metrics_addr serves it without a key. /healthz and /readyz are
// always open.
func TestMetricsNeedAnAdminKeyWithTenants(t *testing.T) {
	type call struct {
		path, key string
		want      int
	}
	probesOpen := []call{{"/healthz", "", 200}, {"/readyz", "", 200}}
	tests := []struct {
		name     string
		edit     func(*config.Config)
		calls    []call
		internal []call // on server.metrics_addr
	}{
		{
			name:  "DevWithoutTenantsIsOpen",
			edit:  func(*config.Config) {},
			calls: append([]call{{"/metrics", "", 200}}, probesOpen...),
		},
		{
			name: "TenantsAndAdminKeys",
			edit: func(c *config.Config) { withTenant(c); c.Server.AdminKeys = []string{testAdminKey} },
			calls: append([]call{
				{"/metrics", "", 401},
				{"/metrics", "wrong-key-0123456789", 401},
				{"/metrics", testTenantKey, 401},
				{"/metrics", testAdminKey, 200},
			}, probesOpen...),
		},
		{
			name:  "TenantsWithoutAdminKeysIsOff",
			edit:  withTenant,
			calls: append([]call{{"/metrics", "", 403}, {"/metrics", testTenantKey, 403}}, probesOpen...),
		},
		{
			name:  "MetricsAddrNeedsNoKey",
			edit:  func(c *config.Config) { withTenant(c); c.Server.MetricsAddr = "127.0.0.1:0" },
			calls: append([]call{{"/metrics", "", 403}}, probesOpen...),
			internal: []call{
				{"/metrics", "", 200}, {"/healthz", "", 200}, {"/readyz", "", 200},
				{"/v1/tasks", testTenantKey, 404}, // only the probes and metrics there
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := startEmbedded(t, tt.edit)
			for _, c := range tt.calls {
				status, body := get(t, app.URL()+c.path, c.key)
				require.Equal(t, c.want, status, "GET %s (key %q): %s", c.path, c.key, body)
				if c.path == "/metrics" && status == http.StatusOK {
					require.Contains(t, body, "tasklane_")
				}
			}
			if tt.internal == nil {
				require.Empty(t, app.metricsAddr())
				return
			}
			base := "http://" + app.metricsAddr()
			for _, c := range tt.internal {
				status, body := get(t, base+c.path, c.key)
				require.Equal(t, c.want, status, "GET %s on metrics_addr: %s", c.path, body)
				if c.path == "/metrics" {
					require.Contains(t, body, "tasklane_")
				}
			}
		})
	}
}

// The HTTP servers bound writes (server.write_timeout) and header size
// (server.max_header_bytes: 431 above it, so no oversized header reaches
// the broker).
func TestHTTPServerLimits(t *testing.T) {
	app := startEmbedded(t, func(c *config.Config) {
		c.Server.WriteTimeout = config.Duration(7 * time.Second)
		c.Server.MaxHeaderBytes = 8 << 10
		c.Server.MetricsAddr = "127.0.0.1:0"
	})
	for _, srv := range []*http.Server{app.server, app.metricsServer} {
		require.Equal(t, 7*time.Second, srv.WriteTimeout)
		require.Equal(t, 8<<10, srv.MaxHeaderBytes)
	}

	send := func(headerBytes int) int {
		req, err := http.NewRequest(http.MethodPost, app.URL()+"/v1/events", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("ce-id", strings.Repeat("x", headerBytes))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Go's server allows 4 KiB of slack above MaxHeaderBytes.
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, send(16<<10))
	require.NotEqual(t, http.StatusRequestHeaderFieldsTooLarge, send(4<<10))
}

// Shutdown while the start-up still waits for Redis and the broker stops it
// promptly, without a panic, and leaves no goroutine behind.
func TestShutdownWhileConnecting(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Redis.URL = "redis://" + closedAddr(t) + "/0"
	cfg.Broker.URL = "amqp://guest:secret-password@" + closedAddr(t) + "/"
	cfg.Server.MetricsAddr = "127.0.0.1:0"
	app, err := Launch(context.Background(), cfg, Options{Logger: quietLogger()})
	require.NoError(t, err)
	status, body := get(t, "http://"+app.metricsAddr()+"/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, status, body)

	status, body = get(t, app.URL()+"/healthz", "")
	require.Equal(t, http.StatusOK, status, body)
	// Redis and the broker are tried independently: each check names its
	// cause once its first try failed.
	var checks map[string]string
	testkit.Eventually(t, 10*time.Second, func() bool {
		status, body = get(t, app.URL()+"/readyz", "")
		checks = nil
		require.NoError(t, json.Unmarshal([]byte(body), &checks))
		return strings.Contains(checks["redis"], "connection refused") && strings.Contains(checks["broker"], "connection refused")
	}, "/readyz names each cause: %s", body)
	require.Equal(t, http.StatusServiceUnavailable, status)
	status, body = get(t, app.URL()+"/v1/tasks", "")
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, body, "not ready")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, app.Shutdown(ctx))
	select {
	case <-app.Ready():
		t.Fatal("ready after Shutdown")
	default:
	}
	for _, addr := range []string{app.Addr(), app.metricsAddr()} {
		_, err := net.DialTimeout("tcp", addr, time.Second)
		require.Error(t, err, "%s still listens after Shutdown", addr)
	}
	http.DefaultClient.CloseIdleConnections()
	testkit.Eventually(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= before },
		"goroutines back to %d (now %d)", before, runtime.NumGoroutine())
}

// closedAddr is a 127.0.0.1 address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// A stop while an AMQP dial hangs in its handshake (a broker address that
// accepts connections and never answers: the dial heeds no context, and
// its own timeout is 30s) returns promptly and closes the listener; what
// the start-up made is closed once the dial gives up.
func TestStartStopsWhileADialHangs(t *testing.T) {
	// Not parallel: it shortens the bound every Start reads. Still far
	// below the dial's own 30s, which is what the test tells apart.
	defer func(w time.Duration) { abortWait = w }(abortWait)
	abortWait = 100 * time.Millisecond
	before := runtime.NumGoroutine()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	cfg := DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Redis.URL = "redis://" + closedAddr(t) + "/0"
	cfg.Broker.URL = "amqp://guest:guest@" + silent.Addr().String() + "/"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Start(ctx, cfg, Options{Logger: quietLogger()})
		done <- err
	}()
	var conn net.Conn
	select {
	case conn = <-accepted: // the dial waits for the broker's greeting
	case <-time.After(10 * time.Second):
		t.Fatal("no AMQP dial within 10s")
	}
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Start still running 10s after its context ended")
	}
	// The dial gives up once the connection closes; then nothing is left.
	require.NoError(t, silent.Close())
	_ = conn.Close()
	for c := range accepted {
		_ = c.Close()
	}
	http.DefaultClient.CloseIdleConnections()
	testkit.Eventually(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= before },
		"goroutines back to %d (now %d)", before, runtime.NumGoroutine())
}
