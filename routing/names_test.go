package routing

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNamesDefaultKeepsTheDocumentedNames(t *testing.T) {
	for _, n := range []Names{{}, NamesFor(DefaultPrefix)} {
		require.Equal(t, SharedLanePrefix, n.SharedPrefix())
		require.Equal(t, DedicatedLanePrefix, n.DedicatedPrefix())
		require.Equal(t, "tasklane.lane.shared.07", n.Shared(7))
		require.Equal(t, "tasklane.lane.tenant.acme", n.Dedicated("acme"))
	}
	require.Equal(t, "tasklane.lane.shared.07", SharedLaneName(7))
	require.Equal(t, "tasklane.lane.tenant.acme", DedicatedLaneName("acme"))
}

func TestNamesPrefixed(t *testing.T) {
	n := NamesFor("blue")
	require.Equal(t, "blue.lane.shared.03", n.Shared(3))
	require.Equal(t, "blue.lane.tenant.acme", n.Dedicated("acme"))

	st, err := NewStaticNamed(n, 4, 2)
	require.NoError(t, err)
	require.Equal(t, []string{"blue.lane.shared.00", "blue.lane.shared.01", "blue.lane.shared.02", "blue.lane.shared.03"}, st.Lanes())
	// Shards depend on the tenant and the lane count, not on the names.
	def, err := NewStatic(4, 2)
	require.NoError(t, err)
	for _, tenant := range []string{"acme", "globex", "initech"} {
		for i, lane := range st.Shard(tenant) {
			require.Equal(t, def.Shard(tenant)[i][len(SharedLanePrefix):], lane[len(n.SharedPrefix()):])
		}
	}
	require.Equal(t, n, NewDynamic(st, nil).Names())
}
