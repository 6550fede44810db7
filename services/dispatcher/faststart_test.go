package dispatcher_test

import (
	"context"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// deliveries returns the deliveries counted with verdict.
func (b *bundle) deliveries(t *testing.T, verdict ledger.AdmitVerdict) int {
	t.Helper()
	var m dto.Metric
	require.NoError(t, b.m.Deliveries.WithLabelValues(string(verdict)).Write(&m))
	return int(m.GetCounter().GetValue())
}

func (b *bundle) logKinds(t *testing.T, id string) []contracts.LogKind {
	t.Helper()
	log, err := b.l.Log(context.Background(), tenant, id)
	require.NoError(t, err)
	var kinds []contracts.LogKind
	for _, e := range log {
		kinds = append(kinds, e.Kind)
	}
	return kinds
}

// skipNoFastStart skips a test of the start on delivery on the
// partitioned layout, which has none (ledger.AdmitOrStart admits there).
func skipNoFastStart(t *testing.T) {
	if testkit.LedgerPartitions() > 0 {
		t.Skip("the partitioned layout has no start on delivery")
	}
}

// A delivery whose function has room, with a worker free, starts in the
// admit step: it never waits in the ready queue for a take.
func TestDispatcherStartsOnDelivery(t *testing.T) {
	t.Parallel()
	skipNoFastStart(t)
	b := setup(t, options{exec: execFunc(succeed)})
	id := b.submit(t)
	testkit.Eventually(t, within, func() bool { return b.state(t, id) == contracts.StateSucceeded }, "succeeded")
	require.Equal(t, 1, b.deliveries(t, ledger.AdmitStarted))
	require.Zero(t, b.deliveries(t, ledger.AdmitAdmitted))
	require.NotContains(t, b.logKinds(t, id), contracts.LogAdmitted)
	ds := b.ps.WaitSettled(t, id, 1, within)
	require.True(t, ds[0].Acked)
}

// Without a free worker a delivery does not start on delivery, whatever
// room its function has: MaxRunning holds, and the task waits in its ready
// queue until the starter has a worker for it.
func TestDispatcherNoStartOnDeliveryWithoutAWorker(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseOnce)
	var mu sync.Mutex
	running, most := 0, 0
	b := setup(t, options{maxRunning: 1, exec: execFunc(func(ctx context.Context, r executor.Request) executor.Outcome {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return succeed(ctx, r)
	})})
	first := b.submit(t)
	testkit.Eventually(t, within, func() bool { return b.state(t, first) == contracts.StateRunning }, "the first task runs")
	// The first task may have started on delivery or through a take (a
	// starter's take in progress holds its worker): once its delivery is
	// counted, count from there.
	testkit.Eventually(t, within, func() bool {
		return b.deliveries(t, ledger.AdmitStarted)+b.deliveries(t, ledger.AdmitAdmitted) == 1
	}, "the first delivery is counted")
	started, admitted := b.deliveries(t, ledger.AdmitStarted), b.deliveries(t, ledger.AdmitAdmitted)
	second := b.submit(t)
	testkit.Eventually(t, within, func() bool { return b.deliveries(t, ledger.AdmitAdmitted) == admitted+1 }, "the second task is admitted")
	require.Equal(t, contracts.StateQueued, b.state(t, second))
	require.Equal(t, started, b.deliveries(t, ledger.AdmitStarted), "the second task did not start on delivery")
	releaseOnce()
	testkit.Eventually(t, 2*within, func() bool { return b.state(t, second) == contracts.StateSucceeded }, "the second task ran once a worker was free")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, most, "never more than MaxRunning attempts")
	require.Contains(t, b.logKinds(t, second), contracts.LogAdmitted)
}
