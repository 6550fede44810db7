package dispatcher

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
)

func TestLeaseKeeperAbortCancelsOnlyThatTask(t *testing.T) {
	t.Parallel()
	k := newLeaseKeeper(nil, 15*time.Second, nil, slog.Default())
	var cancelled []string
	a := ledger.Lease{Tenant: "t", ID: "a", Function: "f", Owner: "o", Attempt: 2}
	b := ledger.Lease{Tenant: "t", ID: "b", Function: "f", Owner: "o", Attempt: 1}
	otherTenant := ledger.Lease{Tenant: "u", ID: "a", Function: "f", Owner: "o", Attempt: 1}
	lostA := k.Hold(a, func() { cancelled = append(cancelled, "a") })
	lostB := k.Hold(b, func() { cancelled = append(cancelled, "b") })
	lostU := k.Hold(otherTenant, func() { cancelled = append(cancelled, "u/a") })

	require.True(t, k.Abort("t", "a"))
	require.Equal(t, []string{"a"}, cancelled)
	require.True(t, lostA.Load(), "the attempt's outcome is discarded")
	require.False(t, lostB.Load())
	require.False(t, lostU.Load())
	require.True(t, k.Abort("t", "a"), "still held until released")
	require.Equal(t, []string{"a"}, cancelled, "cancelled once")
	k.Release(a)
	require.False(t, k.Abort("t", "a"))
	require.False(t, k.Abort("t", "zzz"))
}
