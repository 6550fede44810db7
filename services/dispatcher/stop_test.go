package dispatcher_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
)

// Stop is a normal end: it logs no error. (Stop stops every consumer, then
// closes the router; Watermill, noticing the consumers gone first, used to
// log "All handlers stopped" as an error with a stack trace, depending on
// timing, hence the rounds; TestRouterLoggerDemotesAllStopped checks the
// demotion itself, whatever the timing.)
func TestDispatcherStopLogsNoError(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	var logs testkit.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for range 30 {
		d, err := dispatcher.New(dispatcher.Config{
			Broker: chantest.New(t), Lanes: []string{testkit.UniqueName("lane"), testkit.UniqueName("lane")},
			ConsumersPerLane: 4, Ledger: l, Metrics: metrics.New(), Logger: logger,
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- d.Run(ctx) }()
		<-d.Running()
		require.NoError(t, d.Stop())
		require.NoError(t, <-ran)
		cancel()
	}
	require.NotContains(t, logs.String(), "level=ERROR")
}

// Once Stop has begun, Watermill's "All handlers stopped" is logged at
// Debug; before, it stays an error (the consumers died).
func TestRouterLoggerDemotesAllStopped(t *testing.T) {
	t.Parallel()
	var logs testkit.SyncBuffer
	var stopping atomic.Bool
	l := dispatcher.RouterLogger(watermill.NewSlogLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))), &stopping)
	l.Error(dispatcher.RouterAllStopped, nil, nil)
	before := logs.String()
	require.Contains(t, before, "level=ERROR")
	stopping.Store(true)
	l.With(watermill.LogFields{"k": "v"}).Error(dispatcher.RouterAllStopped, nil, nil)
	after := strings.TrimPrefix(logs.String(), before)
	require.NotContains(t, after, "level=ERROR")
	require.Contains(t, after, "level=DEBUG")
}
