package tasklane

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// getNoRedirect sends GET url and answers the status, Location and body,
// not following redirects.
func getNoRedirect(t *testing.T, url string) (int, string, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// A gateway serves the dashboard at /ui/: with tenants it asks for a key
// first; in dev it is open and shows the configured functions and the
// triggers with their state.
func TestGatewayServesTheDashboard(t *testing.T) {
	t.Run("with tenants", func(t *testing.T) {
		app := startEmbedded(t, withTenant)
		status, loc, _ := getNoRedirect(t, app.URL()+"/ui")
		require.Equal(t, http.StatusTemporaryRedirect, status)
		require.Equal(t, "/ui/", loc)
		status, loc, _ = getNoRedirect(t, app.URL()+"/ui/")
		require.Equal(t, http.StatusSeeOther, status)
		require.Equal(t, "/ui/login", loc)
		status, _, body := getNoRedirect(t, app.URL()+"/ui/login")
		require.Equal(t, http.StatusOK, status)
		require.Contains(t, body, `<form method="post" action="/ui/login"`)
		require.NotContains(t, body, testTenantKey)
	})
	t.Run("dev", func(t *testing.T) {
		app := devApp(t, devTriggers)
		status, _, body := getNoRedirect(t, app.URL()+"/ui/")
		require.Equal(t, http.StatusOK, status, body)
		require.Contains(t, body, `<tr data-function="echo">`)
		status, _, body = getNoRedirect(t, app.URL()+"/ui/triggers")
		require.Equal(t, http.StatusOK, status, body)
		for _, name := range []string{"tick", "signup"} {
			require.Contains(t, body, "<th scope=\"row\">"+name+"</th>")
		}
		status, _, body = getNoRedirect(t, app.URL()+"/ui/lanes")
		require.Equal(t, http.StatusOK, status, body)
		require.True(t, strings.Contains(body, "tasklane.lane.shared.00"), "dev is open to admin pages: the lanes show")
		status, _, _ = getNoRedirect(t, app.URL()+"/ui/static/app.js")
		require.Equal(t, http.StatusOK, status)
	})
}
