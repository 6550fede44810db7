package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tasklane.yaml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	return path
}

func runServe(t *testing.T, args ...string) error {
	t.Helper()
	cmd := NewCommand(nil, &bytes.Buffer{}, &bytes.Buffer{})
	cmd.SetArgs(append([]string{"serve"}, args...))
	return cmd.Execute()
}

// serve refuses a config without functions (an empty file is a valid
// config: every field takes its default), naming the file, before it
// connects to anything.
func TestServeRefusesAConfigWithoutFunctions(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{"", "tenants: [{id: acme, api_keys: [acme-dev-key]}]\n"} {
		path := writeConfig(t, doc)
		err := runServe(t, "--config", path, "--insecure-no-auth")
		require.Error(t, err)
		require.Contains(t, err.Error(), path+": functions: no functions configured")
	}
}

// serve refuses a config without tenants (an API without authentication)
// unless --insecure-no-auth is given.
func TestServeRefusesNoTenantsWithoutInsecureNoAuth(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "server: {addr: \"127.0.0.1:0\"}\n"+
		"functions: [{name: echo, events: [com.example.echo], endpoint: \"builtin:echo\"}]\n")
	err := runServe(t, "--config", path)
	require.Error(t, err)
	require.Contains(t, err.Error(), path+": tenants: no tenants configured")
	require.Contains(t, err.Error(), "--insecure-no-auth")
	require.NotContains(t, err.Error(), "functions")
}

// dev listens on this machine only unless told otherwise: without
// --config, with a --config that sets no server.addr, and --addr or the
// file's server.addr win.
func TestDevListensOnLoopbackByDefault(t *testing.T) {
	t.Parallel()
	cfg, err := devConfig("", "")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", cfg.Server.Addr)

	fn := "functions: [{name: echo, events: [com.example.echo], endpoint: \"builtin:echo\"}]\n"
	noAddr := writeConfig(t, fn)
	cfg, err = devConfig(noAddr, "")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", cfg.Server.Addr)
	require.Equal(t, "echo", cfg.Functions[0].Name, "the file's config")

	cfg, err = devConfig(noAddr, ":9999")
	require.NoError(t, err)
	require.Equal(t, ":9999", cfg.Server.Addr)

	withAddr := writeConfig(t, "server: {addr: \"0.0.0.0:9090\"}\n"+fn)
	cfg, err = devConfig(withAddr, "")
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:9090", cfg.Server.Addr, "an address the file names is the user's choice")
}

// config validate does not refuse what serve refuses without
// --insecure-no-auth: an API without authentication is legal (dev).
func TestConfigValidateAcceptsNoTenants(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "functions: [{name: echo, events: [com.example.echo], endpoint: \"builtin:echo\"}]\n")
	cmd := NewCommand(nil, &bytes.Buffer{}, &bytes.Buffer{})
	cmd.SetArgs([]string{"config", "validate", path})
	require.NoError(t, cmd.Execute())
}
