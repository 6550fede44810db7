package middleware_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/sdk"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// startTask creates a task of fn in l, admits it and takes it, as a
// starter does; it returns the started attempt.
func startTask(t *testing.T, l *ledger.Ledger, fn string) ledger.Started {
	t.Helper()
	ctx := context.Background()
	msg := createTask(t, l, fn)
	a, err := l.Admit(ctx, ledger.TaskRef{Tenant: "acme", ID: msg.UUID, Function: fn})
	require.NoError(t, err)
	require.Equal(t, ledger.AdmitAdmitted, a.Verdict)
	tk, err := l.Take(ctx, fn, "test", 1, within, ledger.TakeLimits{})
	require.NoError(t, err)
	require.Len(t, tk.Tasks, 1)
	return tk.Tasks[0]
}

// RetryClassify records the outcome Run left in the Delivery by its class.
// Each case starts a task, delivers a message for it over gochannel
// through a middleware that sets the started attempt's Delivery (as the
// starter does), RetryClassify, and a stand-in for Run that leaves the
// case's outcome.
func TestRetryClassifyRecordsOutcomeByClass(t *testing.T) {
	t.Parallel()
	hour := func(int) time.Duration { return time.Hour }
	adaptive := &config.Adaptive{Min: 1, Max: 10, Timeouts: true}
	for name, c := range map[string]struct {
		fn       middleware.Function
		out      executor.Outcome
		timedOut bool
		lost     bool
		state    contracts.State
		reason   contracts.Reason
		// due bounds when a retry is due, from now.
		dueMin, dueMax time.Duration
		// throttled is the adaptive limit's count of throttled answers.
		throttled int64
	}{
		"succeeded": {
			fn:  middleware.Function{MaxAttempts: 3, Backoff: hour},
			out: executor.Outcome{Class: executor.Succeeded, Result: []byte(`"ok"`)}, state: contracts.StateSucceeded,
		},
		"retryable with attempts left waits its jittered backoff": {
			fn: middleware.Function{MaxAttempts: 3, Backoff: hour},
			out: executor.Outcome{Class: executor.Retryable, Err: "HTTP 500: boom", Status: 500,
				Lines: []sdk.LogLine{{Text: "one"}, {Text: "two"}}},
			state:  contracts.StateRetrying,
			dueMin: 29 * time.Minute, dueMax: time.Hour + time.Minute,
		},
		"throttled waits its Retry-After": {
			fn:  middleware.Function{MaxAttempts: 3, Backoff: hour},
			out: executor.Outcome{Class: executor.Throttled, Err: "429", RetryAfter: 5 * time.Second}, state: contracts.StateRetrying,
			dueMin: 4 * time.Second, dueMax: time.Minute,
		},
		"throttled on the last attempt is refunded within MaxThrottled": {
			fn:  middleware.Function{MaxAttempts: 1, MaxThrottled: 1, Backoff: hour},
			out: executor.Outcome{Class: executor.Throttled, Err: "429"}, state: contracts.StateRetrying,
			dueMin: 29 * time.Minute, dueMax: time.Hour + time.Minute,
		},
		"retryable on the last attempt is dead-lettered": {
			fn:  middleware.Function{MaxAttempts: 1, DeadLetter: true, Backoff: hour},
			out: executor.Outcome{Class: executor.Retryable, Err: "500"}, state: contracts.StateDead, reason: contracts.ReasonAttemptsExhausted,
		},
		"non-retryable fails at once": {
			fn:  middleware.Function{MaxAttempts: 3, Backoff: hour},
			out: executor.Outcome{Class: executor.NonRetryable, Err: "400"}, state: contracts.StateFailed, reason: contracts.ReasonNonRetryable,
		},
		"a lost lease discards the outcome": {
			fn:  middleware.Function{MaxAttempts: 3, Backoff: hour},
			out: executor.Outcome{Class: executor.Succeeded}, lost: true, state: contracts.StateRunning,
		},
		"an adaptive function's throttled answer is fed back": {
			fn:  middleware.Function{MaxAttempts: 3, Backoff: hour, Adaptive: adaptive},
			out: executor.Outcome{Class: executor.Throttled, Err: "429", RetryAfter: time.Minute}, state: contracts.StateRetrying,
			dueMin: 59 * time.Second, dueMax: 2 * time.Minute, throttled: 1,
		},
		"an adaptive function's timeout counts as throttled when it says so": {
			fn:  middleware.Function{MaxAttempts: 3, Backoff: hour, Adaptive: adaptive},
			out: executor.Outcome{Class: executor.Retryable, Err: "timeout"}, timedOut: true, state: contracts.StateRetrying,
			dueMin: 29 * time.Minute, dueMax: time.Hour + time.Minute, throttled: 1,
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ps, l := chantest.New(t), newLedger(t)
			fn := c.fn
			fn.Name = testkit.UniqueName("fn")
			st := startTask(t, l, fn.Name)
			setDelivery := func(h message.HandlerFunc) message.HandlerFunc {
				return func(msg *message.Message) ([]*message.Message, error) {
					msg.SetContext(middleware.WithDelivery(msg.Context(), &middleware.Delivery{
						Ref:      taskRef(st, fn.Name),
						Function: fn,
						Claim:    ledger.Claim{Verdict: ledger.VerdictRun, Attempt: st.Attempt, Throttles: st.Throttles},
					}))
					return h(msg)
				}
			}
			run := func(h message.HandlerFunc) message.HandlerFunc {
				return func(msg *message.Message) ([]*message.Message, error) {
					d := middleware.DeliveryFrom(msg.Context())
					d.Outcome, d.Ran, d.TimedOut, d.LeaseLost = c.out, true, c.timedOut, c.lost
					// The function writes its lines while it runs.
					d.Outcome.Lines = slices.Clone(c.out.Lines)
					for i := range d.Outcome.Lines {
						d.Outcome.Lines[i].At = time.Now()
					}
					if c.lost {
						return nil, nil
					}
					return h(msg)
				}
			}
			errs := make(chan error, 10)
			m := metrics.New()
			topic, _ := route(t, ps, func(*message.Message) error { return nil },
				probe(errs), setDelivery, middleware.RetryClassify(l, m, testkit.Logger(t, slog.LevelInfo)), run)

			now := time.Now()
			require.NoError(t, ps.Publish(topic, message.NewMessage(st.ID, nil)))
			require.NoError(t, receive(t, errs))
			require.True(t, ps.WaitSettled(t, st.ID, 1, within)[0].Acked)
			task := state(t, l, st.ID)
			require.Equal(t, c.state, task.State)
			require.Equal(t, c.reason, task.Reason)
			if c.state == contracts.StateSucceeded {
				require.JSONEq(t, `"ok"`, string(task.Result))
			}
			if c.dueMax > 0 {
				score, err := l.Redis().ZScore(context.Background(), l.DelayKey("acme"), ledger.Member("acme", st.ID)).Result()
				require.NoError(t, err, "a retry waits in the delay set")
				due := time.UnixMicro(int64(score))
				require.WithinRange(t, due, now.Add(c.dueMin), now.Add(c.dueMax))
			}
			checkAttemptLog(t, l, st, c.out, c.lost, c.state)
			stats, err := l.FunctionStats(context.Background(), []ledger.FunctionSpec{{Name: fn.Name, Adaptive: ledger.AdaptiveOf(fn.Adaptive)}})
			require.NoError(t, err)
			require.Equal(t, c.throttled, stats[0].ThrottledLastMinute)
			// A retry is counted by the answer's class; nothing else is.
			retries := 0.0
			if c.state == contracts.StateRetrying {
				retries = 1
			}
			var counted dto.Metric
			require.NoError(t, m.Retries.WithLabelValues(fn.Name, string(c.out.Class)).Write(&counted))
			require.InDelta(t, retries, counted.GetCounter().GetValue(), 0)
		})
	}
}

// checkAttemptLog checks what the attempt added to its task's log: the
// function's lines, its end (status, run time), then the retry or the
// terminal state; nothing when its lease was lost.
func checkAttemptLog(t *testing.T, l *ledger.Ledger, st ledger.Started, out executor.Outcome, lost bool, state contracts.State) {
	t.Helper()
	log, err := l.Log(context.Background(), "acme", st.ID)
	require.NoError(t, err)
	i := slices.IndexFunc(log, func(e contracts.LogEntry) bool { return e.Kind == contracts.LogStarted })
	require.GreaterOrEqual(t, i, 0, "the take logged the start")
	after := log[i+1:]
	if lost {
		require.Empty(t, after, "a discarded outcome logs nothing")
		return
	}
	require.Len(t, after, len(out.Lines)+2)
	for j, ln := range out.Lines {
		require.Equal(t, contracts.LogLine, after[j].Kind)
		require.Equal(t, ln.Text, after[j].Message)
		require.Equal(t, st.Attempt, after[j].Attempt)
	}
	end := after[len(out.Lines)]
	require.Equal(t, contracts.LogEnded, end.Kind)
	require.Equal(t, st.Attempt, end.Attempt)
	require.Equal(t, out.Status, end.Status)
	require.NotNil(t, end.DurationMS)
	require.Contains(t, end.Message, string(out.Class))
	last := after[len(after)-1]
	switch {
	case state == contracts.StateRetrying && out.Class == executor.Throttled:
		require.Equal(t, contracts.LogThrottled, last.Kind)
	case state == contracts.StateRetrying:
		require.Equal(t, contracts.LogRetry, last.Kind)
		require.Contains(t, last.Message, "retry scheduled for")
	default:
		require.Equal(t, contracts.LogKind(state), last.Kind)
	}
}

// RetryClassify after a Run that found no Delivery passes the error on.
func TestRetryClassifyWithoutDelivery(t *testing.T) {
	t.Parallel()
	h := middleware.RetryClassify(newLedger(t), metrics.New(), testkit.Logger(t, slog.LevelInfo))(func(*message.Message) ([]*message.Message, error) {
		return nil, nil
	})
	_, err := h(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, middleware.ErrNoDelivery)
}

// taskRef is the reference of a started task of fn.
func taskRef(st ledger.Started, fn string) taskmsg.Ref {
	return taskmsg.Ref{TaskID: st.ID, Tenant: st.Tenant, Function: fn}
}
