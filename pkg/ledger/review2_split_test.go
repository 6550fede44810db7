package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// Second review of the partitioned layout's take/admit side
// (take_split.go, admit_split.go, sweep.go).

// TestSplitTakeBehindALiveMemberLeavesNoTaskStuck: retry.t ended attempt 1
// and its release.f has not run yet when the retry, due at once, is
// admitted and taken. take.f finds the task's member live (attempt 1's)
// and must not drop the ref: the task is queued, admit's forget dropped
// its delay entry, and once release.f removes the member nothing (not the
// sweep, which looks at members past their score) would ever put it back.
// Attempt 2 starts, in that take or in the next.
func TestSplitTakeBehindALiveMemberLeavesNoTaskStuck(t *testing.T) {
	b := setupLayout(t, 4, nil, "fn")
	ctx := context.Background()
	id := b.ready(t, "a", "fn", 5, 1)[0]
	tk := b.take(t, "fn", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	s := tk.Tasks[0]
	var during ledger.Taken
	h := &interleave{hash: ledger.ScriptHash("release.f")}
	h.f = func() {
		require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "fn", 5).Verdict)
		b.advance(time.Millisecond)
		during = b.take(t, "fn", 1, ledger.TakeLimits{})
	}
	b.l.Redis().(*redis.Client).AddHook(h)
	ok, err := b.l.Retry(ctx, "a", s.ID, "fn", s.Fence(), b.now, "boom", false)
	require.NoError(t, err)
	require.True(t, ok)
	after := b.take(t, "fn", 1, ledger.TakeLimits{})
	require.Equal(t, 1, len(during.Tasks)+len(after.Tasks), "attempt 2 starts, beside attempt 1's late release or after it")
	require.Equal(t, contracts.StateRunning, b.stateOf(t, "a", id))
}
