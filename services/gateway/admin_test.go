package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/routing"
)

// fakeRouting is the routing store, the broker's lane depths and the
// controller's pin, answering what a test sets.
type fakeRouting struct {
	snap    routing.Snapshot
	loadErr error
	log     []routing.Change
	logErr  error
	depths  map[string]broker.LaneDepth

	mu     sync.Mutex
	pinned []string // "<tenant> <dedicated>" per Pin call
	pinErr error

	stats    []ledger.FunctionStat
	statsErr error
	asked    []ledger.FunctionSpec // the specs of the last FunctionStats call
}

func (f *fakeRouting) FunctionStats(_ context.Context, fns []ledger.FunctionSpec) ([]ledger.FunctionStat, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = fns
	return f.stats, f.statsErr
}

func (f *fakeRouting) Load(context.Context) (routing.Snapshot, error) { return f.snap, f.loadErr }

func (f *fakeRouting) Log(_ context.Context, n int) ([]routing.Change, error) {
	if n != routingLogLength {
		return nil, errors.New("unexpected log length")
	}
	return f.log, f.logErr
}

func (f *fakeRouting) Depths(context.Context, ...string) (map[string]broker.LaneDepth, error) {
	return f.depths, nil
}

func (f *fakeRouting) Pin(_ context.Context, tenant string, dedicated bool) (routing.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pinErr != nil {
		return routing.Change{}, f.pinErr
	}
	f.pinned = append(f.pinned, tenant+" "+map[bool]string{true: "dedicated", false: "shared"}[dedicated])
	return routing.Change{Version: 8, At: time.Date(2026, 2, 11, 10, 3, 14, 902e6, time.UTC), Tenant: tenant, Action: "split",
		Lane: routing.DedicatedLaneName(tenant), Reason: "pinned by an operator", Pinned: true}, nil
}

func newTestAdmin(t *testing.T, kr *auth.Keyring, f *fakeRouting, tenants []string, dflt string, fns ...ledger.FunctionSpec) http.Handler {
	t.Helper()
	st, err := routing.NewStatic(3, 2)
	require.NoError(t, err)
	mux := http.NewServeMux()
	NewAdmin(AdminConfig{
		Keyring: kr, Store: f, Table: routing.NewDynamic(st, nil), Lanes: f, Pinner: f,
		Tenants: tenants, DefaultTenant: dflt, Stats: f, Functions: fns,
	}).Register(mux)
	return mux
}

func serve(h http.Handler, method, path, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAdminKeys(t *testing.T) {
	t.Parallel()
	kr, err := auth.NewKeyring(map[string][]string{"admin": {"admin-key-1"}})
	require.NoError(t, err)
	f := &fakeRouting{}
	for _, route := range AdminRoutes {
		method, path, _ := strings.Cut(route, " ")
		t.Run(route, func(t *testing.T) {
			off := serve(newTestAdmin(t, nil, f, []string{"acme"}, ""), method, path, "admin-key-1", `{}`)
			require.Equal(t, http.StatusForbidden, off.Code)
			require.Equal(t, `{"error":"the admin API is off: set server.admin_keys"}`+"\n", off.Body.String())

			h := newTestAdmin(t, kr, f, []string{"acme"}, "")
			for _, key := range []string{"", "tenant-key"} {
				w := serve(h, method, path, key, `{}`)
				require.Equal(t, http.StatusUnauthorized, w.Code, key)
				require.Equal(t, `Bearer realm="tasklane-admin"`, w.Header().Get("WWW-Authenticate"))
				require.Contains(t, w.Body.String(), `{"error":`)
			}
		})
	}
	require.Empty(t, f.pinned, "nothing pinned without an admin key")
}

func TestAdminRouting(t *testing.T) {
	t.Parallel()
	st, err := routing.NewStatic(3, 2)
	require.NoError(t, err)
	shared := st.Lanes()
	f := &fakeRouting{
		snap: routing.Snapshot{
			Version:   4,
			Dedicated: map[string]string{"zeta": routing.DedicatedLaneName("zeta")},
			Pinned:    map[string]bool{"acme": true},
			Retiring:  map[string]time.Time{routing.DedicatedLaneName("old"): time.Now()},
		},
		depths: map[string]broker.LaneDepth{shared[0]: {Backlog: 12, Consumers: 4}, routing.DedicatedLaneName("zeta"): {Backlog: 3, Consumers: 1}},
		log: []routing.Change{{Version: 4, At: time.Date(2026, 2, 11, 10, 3, 14, 902e6, time.UTC), Tenant: "zeta", Action: "split",
			Lane: routing.DedicatedLaneName("zeta"), Reason: "hot"}},
	}
	h := newTestAdmin(t, auth.Open("admin"), f, []string{"globex", "acme"}, "")
	w := serve(h, http.MethodGet, "/v1/admin/routing", "", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	shard := func(tenant string) string { s := st.Shard(tenant); return `["` + s[0] + `","` + s[1] + `"]` }
	want := `{"version":4,"lanes":[` +
		`{"name":"` + shared[0] + `","kind":"shared","backlog":12,"consumers":4},` +
		`{"name":"` + shared[1] + `","kind":"shared","backlog":0,"consumers":0},` +
		`{"name":"` + shared[2] + `","kind":"shared","backlog":0,"consumers":0},` +
		`{"name":"tasklane.lane.tenant.old","kind":"retiring","backlog":0,"consumers":0},` +
		`{"name":"tasklane.lane.tenant.zeta","kind":"dedicated","backlog":3,"consumers":1}],` +
		`"tenants":[` +
		`{"tenant":"acme","shard":` + shard("acme") + `,"pinned":true},` +
		`{"tenant":"globex","shard":` + shard("globex") + `},` +
		`{"tenant":"zeta","shard":` + shard("zeta") + `,"dedicated":"tasklane.lane.tenant.zeta"}],` +
		`"changes":[{"version":4,"at":"2026-02-11T10:03:14.902Z","tenant":"zeta","action":"split","lane":"tasklane.lane.tenant.zeta","reason":"hot"}]}` + "\n"
	require.Equal(t, want, w.Body.String())

	f.loadErr = errors.New("redis down")
	w = serve(h, http.MethodGet, "/v1/admin/routing", "", "")
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, `{"error":"routing table unavailable"}`+"\n", w.Body.String())
	f.loadErr, f.logErr = nil, errors.New("redis down")
	w = serve(h, http.MethodGet, "/v1/admin/routing", "", "")
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, `{"error":"routing log unavailable"}`+"\n", w.Body.String())
}

func TestAdminPin(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		tenants    []string
		dflt       string
		pinErr     error
		status     int
		answer     string // the whole body, when set
		pinned     string
	}{
		{name: "dedicated", body: `{"tenant":"acme","dedicated":true}`, tenants: []string{"acme"}, status: http.StatusOK,
			answer: `{"version":8,"at":"2026-02-11T10:03:14.902Z","tenant":"acme","action":"split","lane":"tasklane.lane.tenant.acme","reason":"pinned by an operator","pinned":true}`,
			pinned: "acme dedicated"},
		{name: "shared", body: `{"tenant":"acme"}`, tenants: []string{"acme"}, status: http.StatusOK, pinned: "acme shared"},
		{name: "dev names the default tenant", body: `{"dedicated":true}`, tenants: []string{"default"}, dflt: "default", status: http.StatusOK, pinned: "default dedicated"},
		{name: "no tenant", body: `{"dedicated":true}`, tenants: []string{"default"}, status: http.StatusNotFound,
			answer: `{"error":"tenant: no tenant \"\" is configured"}`},
		{name: "unknown tenant", body: `{"tenant":"globex","dedicated":true}`, tenants: []string{"acme"}, status: http.StatusNotFound,
			answer: `{"error":"tenant: no tenant \"globex\" is configured"}`},
		{name: "unknown field", body: `{"tenant":"acme","lane":"x"}`, tenants: []string{"acme"}, status: http.StatusBadRequest,
			answer: `{"error":"body: want {\"tenant\": \"...\", \"dedicated\": true|false}: json: unknown field \"lane\""}`},
		{name: "too large", body: `{"tenant":"` + strings.Repeat("a", pinBodyLimit) + `"}`, tenants: []string{"acme"}, status: http.StatusBadRequest,
			answer: `{"error":"body: want {\"tenant\": \"...\", \"dedicated\": true|false}: http: request body too large"}`},
		{name: "conflict", body: `{"tenant":"acme"}`, tenants: []string{"acme"}, pinErr: routing.ErrConflict, status: http.StatusConflict,
			answer: `{"error":"the routing table kept changing; try again"}`},
		{name: "cap", body: `{"tenant":"acme","dedicated":true}`, tenants: []string{"acme"}, pinErr: errors.New("dedicated lanes are at their cap (2)"),
			status: http.StatusServiceUnavailable, answer: `{"error":"dedicated lanes are at their cap (2)"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRouting{pinErr: c.pinErr}
			w := serve(newTestAdmin(t, auth.Open("admin"), f, c.tenants, c.dflt), http.MethodPost, "/v1/admin/routing/pin", "", c.body)
			require.Equal(t, c.status, w.Code, w.Body.String())
			if c.answer != "" {
				require.Equal(t, c.answer+"\n", w.Body.String())
			}
			if c.pinned != "" {
				require.Equal(t, []string{c.pinned}, f.pinned)
			} else {
				require.Empty(t, f.pinned)
			}
		})
	}
}

func TestAdminFunctions(t *testing.T) {
	t.Parallel()
	kr, err := auth.NewKeyring(map[string][]string{"admin": {"admin-key-1"}})
	require.NoError(t, err)
	specs := []ledger.FunctionSpec{
		{Name: "resize", Adaptive: &ledger.Adaptive{Min: 1, Max: 64}},
		{Name: "billing", Concurrency: 2},
	}
	f := &fakeRouting{stats: []ledger.FunctionStat{
		{Name: "resize", Limit: 12, Adaptive: true, Running: 12, Waiting: 340, ThrottledLastMinute: 3,
			Ready: map[ledger.Band]int64{ledger.BandHigh: 4, ledger.BandNormal: 300, ledger.BandLow: 36}},
		{Name: "billing", Limit: 2, Concurrency: 2, Running: 1, Ready: map[ledger.Band]int64{}},
	}}
	h := newTestAdmin(t, kr, f, []string{"acme"}, "", specs...)

	// A tenant's key is not an admin key.
	w := serve(h, http.MethodGet, "/v1/admin/functions", "acme-key", "")
	require.Equal(t, http.StatusUnauthorized, w.Code, w.Body.String())
	require.Nil(t, f.asked, "nothing read without an admin key")

	w = serve(h, http.MethodGet, "/v1/admin/functions", "admin-key-1", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	require.Equal(t, `{"functions":[`+
		`{"name":"resize","limit":12,"adaptive":true,"concurrency":0,"running":12,"waiting":340,"ready":{"high":4,"normal":300,"low":36},"throttled_last_minute":3},`+
		`{"name":"billing","limit":2,"adaptive":false,"concurrency":2,"running":1,"waiting":0,"ready":{"high":0,"normal":0,"low":0},"throttled_last_minute":0}]}`+"\n",
		w.Body.String())
	require.Equal(t, specs, f.asked, "the configured functions")

	f.stats = nil
	w = serve(newTestAdmin(t, kr, f, []string{"acme"}, ""), http.MethodGet, "/v1/admin/functions", "admin-key-1", "")
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, `{"functions":[]}`+"\n", w.Body.String(), "no functions: an empty list, not null")

	f.statsErr = errors.New("redis down")
	w = serve(h, http.MethodGet, "/v1/admin/functions", "admin-key-1", "")
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, `{"error":"function stats unavailable"}`+"\n", w.Body.String())
}
