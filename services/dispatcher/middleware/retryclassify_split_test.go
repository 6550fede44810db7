package middleware_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// dropRelease fails every pipeline carrying a release.f call (the
// function step of an attempt's end in the partitioned layout: keys the
// function's in-flight set, its non-high subset and its state), as a
// connection lost before it was sent would.
type dropRelease struct{}

func (dropRelease) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (dropRelease) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (dropRelease) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			a := c.Args()
			if c.Name() == "evalsha" && len(a) > 5 && strings.HasSuffix(a[3].(string), "}:inflight") &&
				strings.HasSuffix(a[4].(string), ":inflight:nh") && strings.HasSuffix(a[5].(string), "}:state") {
				err := errors.New("connection lost")
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// TestRetryClassifyKeepsAnEndWhoseFunctionStepFailed: in the partitioned
// layout Retry (and Finish) answer true and an error when the tenant step
// recorded the outcome and the function step failed (the ledger repairs
// that: decision 0017, "Order and fence"). The outcome is recorded: it is
// counted and fed back to an adaptive limit like any other, and the
// attempt is not reported as unrecorded.
func TestRetryClassifyKeepsAnEndWhoseFunctionStepFailed(t *testing.T) {
	l := newLedger(t)
	if !l.Partitioned() {
		t.Skip("the split release runs in the partitioned layout (TASKLANE_TEST_PARTITIONS)")
	}
	fn := middleware.Function{Name: testkit.UniqueName("fn"), MaxAttempts: 3, Backoff: func(int) time.Duration { return time.Hour },
		Adaptive: &config.Adaptive{Min: 1, Max: 10}}
	st := startTask(t, l, fn.Name)
	l.Redis().(*redis.Client).AddHook(dropRelease{})
	m := metrics.New()
	h := middleware.RetryClassify(l, m, testkit.Logger(t, slog.LevelInfo))(func(msg *message.Message) ([]*message.Message, error) {
		d := middleware.DeliveryFrom(msg.Context())
		d.Outcome, d.Ran = executor.Outcome{Class: executor.Throttled, Err: "429", RetryAfter: time.Minute}, true
		return nil, nil
	})
	msg := message.NewMessage(st.ID, nil)
	msg.SetContext(middleware.WithDelivery(context.Background(), &middleware.Delivery{
		Ref: taskRef(st, fn.Name), Function: fn,
		Claim: ledger.Claim{Verdict: ledger.VerdictRun, Attempt: st.Attempt, Throttles: st.Throttles, Redrives: st.Redrives},
	}))
	_, err := h(msg)
	require.Equal(t, contracts.StateRetrying, state(t, l, st.ID).State)
	require.NoError(t, err, "the retry was recorded")
	var counted dto.Metric
	require.NoError(t, m.Retries.WithLabelValues(fn.Name, string(executor.Throttled)).Write(&counted))
	require.InDelta(t, 1, counted.GetCounter().GetValue(), 0)
	stats, err := l.FunctionStats(context.Background(), []ledger.FunctionSpec{{Name: fn.Name, Adaptive: ledger.AdaptiveOf(fn.Adaptive)}})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats[0].ThrottledLastMinute, "the throttled answer is fed back")
}
