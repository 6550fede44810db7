package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

// CheckServe refuses a config without functions always, and one without
// tenants unless no authentication is allowed; each error names the file.
func TestCheckServe(t *testing.T) {
	t.Parallel()
	const fn = "functions: [{name: echo, events: [com.example.echo], endpoint: \"builtin:echo\"}]\n"
	const tenants = "tenants: [{id: acme, api_keys: [acme-dev-key]}]\n"
	parse := func(doc string) *config.Config {
		t.Helper()
		c, err := config.Parse(file, []byte(doc))
		require.NoError(t, err, "a config without functions or tenants is valid")
		return c
	}

	empty := parse("")
	err := empty.CheckServe(true)
	require.EqualError(t, err, file+": functions: no functions configured: serve would run nothing (add a function, e.g. endpoint: \"builtin:echo\"; see examples/tasklane.yaml)")
	err = empty.CheckServe(false)
	require.ErrorContains(t, err, file+": functions: no functions configured")
	require.ErrorContains(t, err, file+": tenants: no tenants configured")
	require.ErrorContains(t, err, "--insecure-no-auth")

	open := parse(fn)
	require.NoError(t, open.CheckServe(true))
	require.EqualError(t, open.CheckServe(false), file+": tenants: "+config.NoTenantsWarning+
		"; add tenants with api_keys, or pass --insecure-no-auth to serve without authentication (development only)")

	require.NoError(t, parse(fn+tenants).CheckServe(false))
}

// IsSet tells a value written in the file from a default.
func TestIsSet(t *testing.T) {
	t.Parallel()
	c, err := config.Parse(file, []byte("server: {max_event_bytes: 1024}\n"))
	require.NoError(t, err)
	require.True(t, c.IsSet("server.max_event_bytes"))
	require.False(t, c.IsSet("server.addr"))
	require.Equal(t, config.AddrDefault, c.Server.Addr, "the default fills it")
	c, err = config.Parse(file, []byte("server: {addr: \":9999\"}\n"))
	require.NoError(t, err)
	require.True(t, c.IsSet("server.addr"))
	require.False(t, c.WithDefaults().IsSet("nope"))
}
