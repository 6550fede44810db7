package dispatcher_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher"
)

// holdTake is a Redis hook that holds back the reply of the first take
// of function fn that started a task, until release is closed: the take
// has run in Redis, its reply is on its way.
type holdTake struct {
	fn      string
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (h *holdTake) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *holdTake) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *holdTake) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.started(cmds) {
			h.once.Do(func() {
				close(h.held)
				<-h.release
			})
		}
		return err
	}
}

// started reports whether cmds carry a take of fn (its rate key is among
// the keys) that started a task.
func (h *holdTake) started(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		for _, a := range c.Args() {
			// The rate key of either key layout.
			if s, ok := a.(string); ok && (strings.HasSuffix(s, ":fn:"+h.fn+":rate") || strings.HasSuffix(s, ":{f:"+h.fn+"}:rate")) {
				cmd, ok := c.(interface{ Slice() ([]any, error) })
				if !ok {
					return false
				}
				res, err := cmd.Slice()
				return err == nil && len(res) > 4
			}
		}
	}
	return false
}

// A take on the wire when Stop begins is not dropped: the tasks it
// started are this process's, and they run (and Stop drains them) instead
// of sitting "running" with no attempt until their leases end. The same
// holds for a start on delivery (ledger.AdmitOrStart, whose keys name the
// rate key too): fast says which of the two the test holds.
func TestDispatcherStopDuringTakeRunsWhatItTook(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "take", true: "start on delivery"}[fast], func(t *testing.T) {
			t.Parallel()
			if fast {
				skipNoFastStart(t)
			}
			stopDuringStart(t, fast)
		})
	}
}

func stopDuringStart(t *testing.T, fast bool) {
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	hook := &holdTake{fn: fnName, held: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(hook)
	b := setup(t, options{exec: execFunc(succeed), ledger: l, noFastStart: !fast})
	id := b.submit(t)
	select {
	case <-hook.held:
	case <-time.After(within):
		t.Fatal("no take of the task")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.d.Stop() }()
	sctx := dispatcher.StartersContext(b.d)
	require.NotNil(t, sctx)
	<-sctx.Done() // Stop began: the starters are told to stop
	// Stop must wait for the take on the wire (it started a task of this
	// process): if it returns first, the task is left running with no
	// attempt until its lease ends. (A bounded look for something that
	// must not happen, not a synchronisation.)
	select {
	case err := <-stopped:
		require.NoError(t, err)
		close(hook.release)
		t.Fatalf("Stop returned while a take was on the wire; its task is %s", b.state(t, id))
	case <-time.After(time.Second):
	}
	close(hook.release)
	require.NoError(t, <-stopped)
	testkit.Eventually(t, within, func() bool { return b.state(t, id) == contracts.StateSucceeded },
		"the task the take started ran (it is %s)", b.state(t, id))
	var started dto.Metric
	require.NoError(t, b.m.Deliveries.WithLabelValues(string(ledger.AdmitStarted)).Write(&started))
	require.Equal(t, fast, started.GetCounter().GetValue() == 1, "started on delivery")
}
