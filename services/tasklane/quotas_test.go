package tasklane

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

// The scheduler sweeps every tenant, with or without a quota: one parked
// before its quota was removed would otherwise stay parked.
func TestQuotasListEveryTenant(t *testing.T) {
	cfg := &config.Config{Tenants: []config.Tenant{{ID: "capped", Concurrency: 3}, {ID: "free"}}}
	require.Equal(t, map[string]int{"capped": 3, "free": 0}, quotas(cfg))
}
