package admission_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// fakeBacklogs answers what the test sets.
type fakeBacklogs struct {
	mu  sync.Mutex
	bs  map[string]ledger.Backlog
	err error
}

func (f *fakeBacklogs) set(tenant string, waiting, ended int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bs[tenant] = ledger.Backlog{Tenant: tenant, Waiting: waiting, Ended: ended}
}

func (f *fakeBacklogs) Backlogs(_ context.Context, tenants []string) ([]ledger.Backlog, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	out := make([]ledger.Backlog, len(tenants))
	for i, t := range tenants {
		out[i] = f.bs[t]
		out[i].Tenant = t
	}
	return out, nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestAdmitterTenantLimitAndDrain(t *testing.T) {
	ctx := context.Background()
	fb := &fakeBacklogs{bs: map[string]ledger.Backlog{}}
	clk := &clock{t: time.Unix(1000, 0)}
	a := admission.New(admission.Config{
		Backlogs: fb, Tenants: []string{"a", "b"},
		Limits: admission.Limits{Tenant: map[string]int64{"a": 100, "b": 100}},
		Now:    clk.now,
	})
	require.True(t, a.Enabled())
	require.NoError(t, a.Admit("a"), "nothing read yet: admitted")

	fb.set("a", 500, 0)
	fb.set("b", 10, 0)
	require.NoError(t, a.Refresh(ctx))
	err := a.Admit("a")
	var refused *admission.RefusedError
	require.ErrorAs(t, err, &refused)
	require.Equal(t, admission.RetryAfterDefault, refused.RetryAfter, "no drain measured yet")
	require.NoError(t, a.Admit("b"), "the neighbour is not refused")

	// 2 s later, 200 of a's tasks ended: it drains 100 a second, and 401
	// over its limit take 5 s.
	clk.t = clk.t.Add(2 * time.Second)
	fb.set("a", 500, 200)
	require.NoError(t, a.Refresh(ctx))
	require.ErrorAs(t, a.Admit("a"), &refused)
	require.Equal(t, 5*time.Second, refused.RetryAfter)

	// What this process accepted counts before the next read shows it.
	fb.set("b", 50, 0)
	require.NoError(t, a.Refresh(ctx))
	require.NoError(t, a.Admit("b"))
	a.Observe("b", 60)
	require.ErrorAs(t, a.Admit("b"), &refused)
	require.EqualValues(t, 110, refused.Backlog)
	fb.set("b", 110, 0) // the read now holds them: not counted twice
	require.NoError(t, a.Refresh(ctx))
	require.ErrorAs(t, a.Admit("b"), &refused)
	require.EqualValues(t, 110, refused.Backlog)

	// A snapshot older than MaxStale refuses nothing.
	fb.err = errors.New("redis down")
	clk.t = clk.t.Add(admission.MaxStaleDefault + time.Second)
	require.Error(t, a.Refresh(ctx))
	require.NoError(t, a.Admit("a"), "stale: admitted")
}

func TestAdmitterGlobalLimitUsesShares(t *testing.T) {
	ctx := context.Background()
	fb := &fakeBacklogs{bs: map[string]ledger.Backlog{}}
	fb.set("heavy", 800, 0)
	fb.set("light", 300, 0)
	shares := map[string]float64{"heavy": 0.9, "light": 0.01}
	calls := 0
	a := admission.New(admission.Config{
		Backlogs: fb, Tenants: []string{"heavy", "light"},
		Limits: admission.Limits{Global: 1000},
		Shares: func(context.Context) (map[string]float64, error) { calls++; return shares, nil },
		Rand:   func() float64 { return 0.5 },
	})
	require.NoError(t, a.Refresh(ctx))
	require.Equal(t, 1, calls)
	var refused *admission.RefusedError
	require.ErrorAs(t, a.Admit("heavy"), &refused)
	require.Equal(t, contracts.RefusedGlobalBacklog, refused.Reason)
	require.EqualValues(t, 1100, refused.Backlog)
	require.NoError(t, a.Admit("light"), "share 0.01/0.9 < 0.5")

	// Without estimates, the backlog shares stand in.
	shares = nil
	require.NoError(t, a.Refresh(ctx))
	require.ErrorAs(t, a.Admit("heavy"), &refused)
	require.NoError(t, a.Admit("light"), "300/800 < 0.5")

	// Under the global limit the shares are not read.
	fb.set("heavy", 100, 0)
	require.NoError(t, a.Refresh(ctx))
	require.Equal(t, 2, calls)
	require.NoError(t, a.Admit("heavy"))
}
