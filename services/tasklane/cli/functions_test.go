package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

func TestPrintFunctions(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	printFunctions(&b, &contracts.FunctionsView{Functions: []contracts.FunctionView{
		{Name: "resize", Limit: 12, Adaptive: true, Running: 12, Waiting: 340, Ready: contracts.ReadyBands{High: 4, Normal: 300, Low: 36}, ThrottledLastMinute: 3},
		{Name: "billing", Limit: 2, Concurrency: 2, Running: 1},
		{Name: "echo"},
	}})
	require.Equal(t, ""+
		"FUNCTION  LIMIT      RUNNING  WAITING  HIGH  NORMAL  LOW  THROTTLED/MIN\n"+
		"resize    12 (aimd)  12       340      4     300     36   3\n"+
		"billing   2          1        0        0     0       0    0\n"+
		"echo      unlimited  0        0        0     0       0    0\n", b.String())

	b.Reset()
	printFunctions(&b, &contracts.FunctionsView{})
	require.Equal(t, "no functions configured\n", b.String())
}

func TestPrintTenantFunctions(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	printTenantFunctions(&b, &contracts.TenantFunctionsView{
		Tenant: "acme", Quota: contracts.TenantQuota{Concurrency: 5, Running: 3, Rate: 2.5, Burst: 3, MaxBacklog: 1000, Backlog: 40},
		Functions: []contracts.TenantFunctionView{
			{Name: "resize", Limit: 12, Adaptive: true, Running: 3, Waiting: 40, Ready: contracts.ReadyBands{High: 4, Normal: 30, Low: 6}},
			{Name: "echo"},
		},
	})
	require.Equal(t, ""+
		"tenant acme: running 3 (limit 5), backlog 40 (limit 1000), rate 2.5/s burst 3\n\n"+
		"FUNCTION  LIMIT      RUNNING  WAITING  HIGH  NORMAL  LOW\n"+
		"resize    12 (aimd)  3        40       4     30      6\n"+
		"echo      unlimited  0        0        0     0       0\n", b.String())

	b.Reset()
	printTenantFunctions(&b, &contracts.TenantFunctionsView{Tenant: "other"})
	require.Equal(t, "tenant other: running 0 (no limit), backlog 0 (no limit), no rate limit\n\nno functions take this tenant's events\n", b.String())
}

// `functions list` shows an admin key every tenant's numbers and a
// tenant's key its own (the admin route answers 401 to it).
func TestFunctionsListByKey(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/admin/functions" && key == "Bearer admin-key":
			_, _ = io.WriteString(w, `{"functions":[{"name":"resize","limit":4,"running":3,"waiting":9,"ready":{"normal":9},"throttled_last_minute":1}]}`)
		case r.URL.Path == "/v1/functions" && key == "Bearer acme-key":
			_, _ = io.WriteString(w, `{"tenant":"acme","quota":{"concurrency":2,"running":1},"functions":[{"name":"resize","limit":4,"running":1,"waiting":2,"ready":{"normal":2}}]}`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"unknown API key"}`)
		}
	}))
	t.Cleanup(srv.Close)
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := Run(nil, append(args, "--server", srv.URL), &out, &errOut)
		return out.String(), errOut.String(), code
	}

	out, _, code := run("functions", "list", "--key", "admin-key")
	require.Equal(t, ExitOK, code)
	require.Contains(t, out, "THROTTLED/MIN")
	require.Contains(t, out, "resize    4      3        9")

	out, _, code = run("functions", "list", "--key", "acme-key")
	require.Equal(t, ExitOK, code)
	require.Contains(t, out, "tenant acme: running 1 (limit 2)")
	require.Contains(t, out, "resize    4      1        2")
	require.NotContains(t, out, "THROTTLED")

	out, _, code = run("functions", "list", "--key", "acme-key", "--json")
	require.Equal(t, ExitOK, code)
	var v contracts.TenantFunctionsView
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	require.Equal(t, "acme", v.Tenant)
	require.EqualValues(t, 1, v.Functions[0].Running)

	_, errOut, code := run("functions", "list", "--key", "wrong-key")
	require.Equal(t, ExitError, code)
	require.Contains(t, errOut, "neither an admin key nor a tenant's key")
}
