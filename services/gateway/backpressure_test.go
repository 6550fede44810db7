package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// refuseAll refuses every submission, recording who asked.
type refuseAll struct{ tenants []string }

func (r *refuseAll) Admit(tenant string) error {
	r.tenants = append(r.tenants, tenant)
	return &admission.RefusedError{Tenant: tenant, Reason: contracts.RefusedGlobalBacklog, Backlog: 5001, Limit: 5000, RetryAfter: 3 * time.Second}
}

// A submission refused by backpressure answers 429 with Retry-After and
// the backlog, before anything is validated or recorded (the ingester
// has no ledger here: touching it would panic).
func TestEventsRefusedByBackpressure(t *testing.T) {
	t.Parallel()
	adm := &refuseAll{}
	ing := ingest.New(ingest.Config{Admission: adm})
	t.Cleanup(ing.Close)
	m := metrics.New()
	g := New(Config{Keyring: auth.Open("acme"), Ingester: ing, Metrics: m, Limits: testLimits})
	mux := http.NewServeMux()
	g.Register(mux)

	for _, c := range []struct{ contentType, body string }{
		{ctBatch, "[" + testEvent("a", "") + "," + testEvent("b", "") + "]"},
		{ctStructured, testEvent("c", "")},
	} {
		req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.contentType)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		require.Equal(t, http.StatusTooManyRequests, rec.Code, rec.Body.String())
		require.Equal(t, "3", rec.Header().Get("Retry-After"))
		var er contracts.ErrorResponse
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &er))
		require.Contains(t, er.Error, "backlog")
		require.Equal(t, contracts.ErrorResponse{Error: er.Error, Tenant: "acme", Backlog: 5001, Limit: 5000, Reason: contracts.RefusedGlobalBacklog}, er)
	}
	require.Equal(t, []string{"acme", "acme"}, adm.tenants, "asked once per request, a batch whole")
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), `tasklane_events_rejected_total{status="429"} 2`)
}
