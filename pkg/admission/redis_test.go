package admission_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// Against the real ledger: once a tenant's queued tasks reach its limit,
// the running admitter refuses it within a refresh or two, and not its
// neighbour; the refusal is counted.
func TestAdmitterRunOnLedger(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	m := metrics.New()
	a := admission.New(admission.Config{
		Backlogs: l, Tenants: []string{"a", "b"}, Metrics: m,
		Limits: admission.Limits{Tenant: map[string]int64{"a": 5, "b": 5}},
		Every:  20 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var events []ledger.EventTasks
	for i := range 5 {
		events = append(events, ledger.EventTasks{
			Tenant: "a", Event: contracts.EventRef{ID: fmt.Sprint("e", i), Source: "/t", Type: "t"},
			Tasks: []ledger.NewTask{{ID: testkit.UniqueName("task"), Function: "f", Message: []byte("m")}},
		})
	}
	_, err := l.Create(context.Background(), events)
	require.NoError(t, err)

	testkit.Eventually(t, 5*time.Second, func() bool { return a.Admit("a") != nil }, "a is refused")
	var refused *admission.RefusedError
	require.ErrorAs(t, a.Admit("a"), &refused)
	require.EqualValues(t, 5, refused.Backlog)
	require.NoError(t, a.Admit("b"))

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Regexp(t, `tasklane_admission_refusals_total\{reason="tenant_backlog",tenant="a"\} [1-9]`, rec.Body.String())
	require.NotContains(t, rec.Body.String(), `tenant="b"`)
}
