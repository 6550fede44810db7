package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// failType is taken by a function that writes a log line with its task
// token and answers 400: its tasks end dead (non-retryable).
const failType = "com.example.fail"

// devClient starts what `tasklane dev` starts, with a failing function
// added, and returns a client of it.
func devClient(t *testing.T) *client.Client {
	t.Helper()
	var cp atomic.Pointer[client.Client]
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, tok := r.Header.Get(contracts.HeaderTaskID), r.Header.Get(contracts.HeaderTaskToken)
		if c := cp.Load(); c != nil && tok != "" && id != "" {
			_ = c.WriteTaskLog(r.Context(), id, tok, []string{"failing on purpose"})
		}
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "no")
	}))
	t.Cleanup(fn.Close)
	c := startDevWith(t, config.Function{Name: "fail", Events: []string{failType}, Endpoint: fn.URL})
	cp.Store(c)
	return c
}

// startDevWith starts the dev app (embedded store, a free port) with fn
// added to its functions, stopped at the test's end, and a client of it.
func startDevWith(t *testing.T, fn config.Function) *client.Client {
	t.Helper()
	cfg := tasklane.DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Functions = append(cfg.Functions, fn)
	cfg = cfg.WithDefaults()
	stop, err := tasklane.UseEmbeddedStore(cfg)
	require.NoError(t, err)
	t.Cleanup(stop)
	app, err := tasklane.Start(t.Context(), cfg, tasklane.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, app.Shutdown(context.Background())) })
	c, err := client.New(app.URL(), client.Options{})
	require.NoError(t, err)
	return c
}

// TestClientAgainstTheDevApp runs pkg/client's task calls against a dev
// app: submit with attributes, follow (callback, channel, log), list by
// batch, cancel by id and by selector, pauses, and the DLQ bulk calls in
// steps.
func TestClientAgainstTheDevApp(t *testing.T) {
	c := devClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	sr, err := c.Submit(ctx, client.Event{ID: "c-1", Source: "/client", Type: tasklane.DevEventType, DataContentType: "application/json",
		Data: []byte(`{"n":1}`), Extensions: map[string]string{contracts.ExtPriority: "7", contracts.ExtTTL: "3600", contracts.ExtBatch: "b-1"}})
	require.NoError(t, err)
	require.Len(t, sr.Tasks, 1)
	id := sr.Tasks[0].ID
	var seen []contracts.State
	task, err := c.Follow(ctx, id, 10*time.Millisecond, func(t *contracts.Task) error { seen = append(seen, t.State); return nil })
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, task.State)
	require.Equal(t, contracts.StateSucceeded, seen[len(seen)-1], "the callback gets the terminal record")
	require.Equal(t, 7, task.Priority)
	require.Equal(t, "b-1", task.Batch)
	var last client.TaskUpdate
	for u := range c.Watch(ctx, id, 0) {
		last = u
	}
	require.NoError(t, last.Err)
	require.Equal(t, contracts.StateSucceeded, last.Task.State)
	var kinds []contracts.LogKind
	_, err = c.FollowLog(ctx, id, 10*time.Millisecond, func(es []contracts.LogEntry) error {
		for _, e := range es {
			kinds = append(kinds, e.Kind)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, contracts.LogAccepted, kinds[0])
	require.Contains(t, kinds, contracts.LogKind(contracts.StateSucceeded))
	_, err = c.Follow(ctx, "01KH62FBSQY4E00SB1AA863NEG", 0, nil)
	require.Equal(t, http.StatusNotFound, client.StatusCode(err))

	// Delayed tasks: listed by batch, cancelled by id and by selector.
	for i := range 3 {
		_, err := c.Submit(ctx, client.Event{ID: "c-d" + strconv.Itoa(i), Source: "/client", Type: tasklane.DevEventType,
			Extensions: map[string]string{contracts.ExtDelay: "3600", contracts.ExtBatch: "b-2"}})
		require.NoError(t, err)
	}
	l, err := c.ListTasks(ctx, client.TaskFilter{Batch: "b-2"}, client.Page{})
	require.NoError(t, err)
	require.Len(t, l.Tasks, 3)
	for _, tk := range l.Tasks {
		require.Equal(t, contracts.StateScheduled, tk.State)
	}
	ct, err := c.CancelTask(ctx, l.Tasks[0].ID)
	require.NoError(t, err)
	require.Equal(t, contracts.StateCancelled, ct.State)
	p, err := c.Pause(ctx, contracts.Selector{Batch: "b-2"})
	require.NoError(t, err)
	ps, err := c.Pauses(ctx)
	require.NoError(t, err)
	require.Len(t, ps.Pauses, 1)
	require.Equal(t, p.ID, ps.Pauses[0].ID)
	_, err = c.Resume(ctx, p.ID)
	require.NoError(t, err)
	cr, err := c.CancelMatching(ctx, contracts.CancelRequest{Selector: contracts.Selector{Batch: "b-2"}})
	require.NoError(t, err)
	require.Equal(t, 2, cr.Cancelled)

	// Dead tasks: the function wrote a log line with its task token.
	const dead = 7
	evs := make([]client.Event, dead)
	for i := range evs {
		evs[i] = client.Event{ID: "c-f" + strconv.Itoa(i), Source: "/client", Type: failType}
	}
	sr, err = c.SubmitBatch(ctx, evs)
	require.NoError(t, err)
	require.Len(t, sr.Tasks, dead)
	for _, st := range sr.Tasks {
		task, err := c.Follow(ctx, st.ID, 10*time.Millisecond, nil)
		require.NoError(t, err)
		require.Equal(t, contracts.StateDead, task.State)
	}
	lg, err := c.TaskLog(ctx, sr.Tasks[0].ID)
	require.NoError(t, err)
	require.Condition(t, func() bool {
		for _, e := range lg.Entries {
			if e.Kind == contracts.LogLine && e.Message == "failing on purpose" {
				return true
			}
		}
		return false
	}, "the function's line is in the log: %+v", lg.Entries)

	// Steps of 3: each step answers a cursor while more may remain, and
	// the steps together handle every match once.
	steps := func(op func(context.Context, contracts.DLQFilter, ...client.WaitOption) (*contracts.DLQResult, error), f contracts.DLQFilter) (matched, done, calls int) {
		f.Limit = 3
		for {
			r, err := op(ctx, f)
			require.NoError(t, err)
			require.LessOrEqual(t, r.Matched, 3)
			matched, done, calls = matched+r.Matched, done+r.Done, calls+1
			if r.NextCursor == "" {
				return matched, done, calls
			}
			f.Cursor = r.NextCursor
		}
	}
	m, d, n := steps(c.PurgeDLQMatching, contracts.DLQFilter{Function: "fail", DryRun: true})
	require.Equal(t, [3]int{dead, 0}, [3]int{m, d, 0})
	require.GreaterOrEqual(t, n, 3)
	// The redrive steps while the function runs, and each step waits until
	// the tasks it redrove have died again: they are back in the dead
	// index, at their old places, behind the step cursor, when the next
	// step reads it. Each is still redriven once, and none is skipped.
	deadAgain := func() bool {
		for _, st := range sr.Tasks {
			task, err := c.GetTask(ctx, st.ID)
			require.NoError(t, err)
			if task.Redrives > 0 && task.State != contracts.StateDead {
				return false
			}
		}
		return true
	}
	f := contracts.DLQFilter{Function: "fail", Limit: 3}
	m, d = 0, 0
	for {
		r, err := c.RedriveDLQMatching(ctx, f)
		require.NoError(t, err)
		m, d = m+r.Matched, d+r.Done
		testkit.Eventually(t, 20*time.Second, deadAgain, "the tasks redriven so far dead again")
		if r.NextCursor == "" {
			break
		}
		f.Cursor = r.NextCursor
	}
	require.Equal(t, [2]int{dead, dead}, [2]int{m, d}, "each dead task redriven once")
	for _, st := range sr.Tasks {
		testkit.Eventually(t, 20*time.Second, func() bool {
			task, err := c.GetTask(ctx, st.ID)
			require.NoError(t, err)
			return task.State == contracts.StateDead && task.Redrives == 1
		}, "task %s dead again after one redrive", st.ID)
	}
	m, d, _ = steps(c.PurgeDLQMatching, contracts.DLQFilter{Function: "fail"})
	require.Equal(t, [2]int{dead, dead}, [2]int{m, d})
	dl, err := c.ListDLQ(ctx, contracts.DLQFilter{}, client.Page{})
	require.NoError(t, err)
	require.Empty(t, dl.Tasks)
	for _, f := range []contracts.DLQFilter{{Limit: 3, Cursor: "bad"}, {Limit: contracts.DLQStepMax + 1}, {Cursor: "1:0"}} {
		_, err = c.PurgeDLQMatching(ctx, f)
		require.Equal(t, http.StatusBadRequest, client.StatusCode(err), "%+v", f)
	}
}
