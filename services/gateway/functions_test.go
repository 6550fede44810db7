package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// GET /v1/functions shows a tenant the functions its events reach, with
// the function's limit and the tenant's own running and waiting counts:
// another tenant's tasks of the same function do not show.
func TestTenantFunctions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	kr, err := auth.NewKeyring(map[string][]string{"acme": {keyAcme}, "other": {keyOther}})
	require.NoError(t, err)
	mux := http.NewServeMux()
	New(Config{Keyring: kr, Ledger: l, Logger: testkit.Logger(t, 0),
		Functions: []ledger.FunctionSpec{
			{Name: "resize", Adaptive: &ledger.Adaptive{Min: 2, Max: 64}, Concurrency: 10},
			{Name: "billing", Concurrency: 3, Tenants: []string{"other"}},
			{Name: "echo"},
		},
		Quotas: map[string]contracts.TenantQuota{"acme": {Concurrency: 5, Rate: 2.5, Burst: 3, MaxBacklog: 1000}},
	}).Register(mux)

	// acme runs 2 resize attempts and has 3 ready (high 1, low 2); other
	// runs 1 resize and 1 billing and has 4 resize tasks ready.
	lease := float64(time.Now().Add(time.Minute).UnixMicro())
	now := float64(time.Now().UnixMicro())
	fn := func(name string) string { return prefix + ":{f:" + name + "}:" }
	zadd := func(key string, members ...string) {
		for _, m := range members {
			require.NoError(t, rdb.ZAdd(ctx, key, redis.Z{Score: lease, Member: m}).Err())
		}
	}
	zadd(fn("resize")+"inflight", "acme/r1", "acme/r2", "other/r3")
	zadd(fn("billing")+"inflight", "other/b1")
	zadd(l.TenantKeyPrefix("acme")+"inflight", "r1", "r2")
	zadd(l.TenantKeyPrefix("other")+"inflight", "r3", "b1")
	require.NoError(t, rdb.ZAdd(ctx, l.TenantKeyPrefix("acme")+"inflight", redis.Z{Score: now - 1e6, Member: "lapsed"}).Err())
	zadd(fn("resize")+"ready:high:acme", "r4")
	zadd(fn("resize")+"ready:low:acme", "r5", "r6")
	zadd(fn("resize")+"ready:normal:other", "r7", "r8", "r9", "r10")
	require.NoError(t, rdb.HSet(ctx, fn("resize")+"state", "limit", 7, "n_high", 1, "n_normal", 4, "n_low", 2).Err())

	get := func(key string) contracts.TenantFunctionsView {
		t.Helper()
		w := serve(mux, http.MethodGet, "/v1/functions", key, "")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		var v contracts.TenantFunctionsView
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &v))
		return v
	}
	require.Equal(t, contracts.TenantFunctionsView{
		Tenant: "acme",
		Quota:  contracts.TenantQuota{Concurrency: 5, Running: 2, Rate: 2.5, Burst: 3, MaxBacklog: 1000},
		Functions: []contracts.TenantFunctionView{
			{Name: "resize", Limit: 7, Adaptive: true, Concurrency: 10, Running: 2, Waiting: 3, Ready: contracts.ReadyBands{High: 1, Low: 2}},
			{Name: "echo"},
		},
	}, get(keyAcme), "acme's counts only; billing does not take acme's events")
	require.Equal(t, contracts.TenantFunctionsView{
		Tenant: "other",
		Quota:  contracts.TenantQuota{Running: 2},
		Functions: []contracts.TenantFunctionView{
			{Name: "resize", Limit: 7, Adaptive: true, Concurrency: 10, Running: 1, Waiting: 4, Ready: contracts.ReadyBands{Normal: 4}},
			{Name: "billing", Limit: 3, Concurrency: 3, Running: 1},
			{Name: "echo"},
		},
	}, get(keyOther), "a tenant without a quota: zero limits, its own use")

	w := serve(mux, http.MethodGet, "/v1/functions", "", "")
	require.Equal(t, http.StatusUnauthorized, w.Code)
	require.JSONEq(t, `{"error": "missing API key: send Authorization: Bearer <key>"}`, w.Body.String())
	require.Equal(t, http.StatusUnauthorized, serve(mux, http.MethodGet, "/v1/functions", "not-a-key-0123456789", "").Code)
}
