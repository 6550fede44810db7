package client

import (
	"context"
	"fmt"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// Polling bounds of Follow, Watch and FollowLog.
const (
	// FollowIntervalDefault is the polling interval when none is given.
	FollowIntervalDefault = time.Second
	// FollowIntervalMin and FollowIntervalMax bound the interval: a
	// shorter or longer one is raised or lowered to them.
	FollowIntervalMin = 100 * time.Millisecond
	FollowIntervalMax = time.Minute
)

// followInterval is interval within the polling bounds (0: the default).
func followInterval(interval time.Duration) time.Duration {
	if interval <= 0 {
		return FollowIntervalDefault
	}
	return min(max(interval, FollowIntervalMin), FollowIntervalMax)
}

// Follow polls the task id every interval (0: FollowIntervalDefault,
// otherwise bounded by FollowIntervalMin and FollowIntervalMax) until it
// is terminal, and returns its terminal record. fn, when not nil, gets the
// first record read and each later one whose state or attempt count
// changed, the terminal one included; an error from fn ends Follow with
// it. Follow ends with ctx's error when ctx ends first, and with the
// error of a failed read (a 404 for an unknown task, or a task whose
// record the server no longer keeps).
func (c *Client) Follow(ctx context.Context, id string, interval time.Duration, fn func(*contracts.Task) error) (*contracts.Task, error) {
	interval = followInterval(interval)
	var last *contracts.Task
	for {
		t, err := c.GetTask(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("following task %s: %w", id, err)
		}
		if fn != nil && (last == nil || t.State != last.State || t.Attempts != last.Attempts) {
			if err := fn(t); err != nil {
				return t, err
			}
		}
		if t.State.Terminal() {
			return t, nil
		}
		last = t
		if err := sleep(ctx, interval); err != nil {
			return t, err
		}
	}
}

// TaskUpdate is one value of Watch's channel: a task record, or the error
// that ended the watch.
type TaskUpdate struct {
	Task *contracts.Task
	Err  error
}

// Watch is Follow with a channel: it sends each record Follow would give
// its callback, then closes the channel once the task is terminal. A read
// error is sent as a last update with Err set; the end of ctx closes the
// channel without one. The goroutine behind it ends with ctx: cancel ctx
// to stop watching early.
func (c *Client) Watch(ctx context.Context, id string, interval time.Duration) <-chan TaskUpdate {
	ch := make(chan TaskUpdate, 1)
	go func() {
		defer close(ch)
		send := func(t *contracts.Task) error {
			select {
			case ch <- TaskUpdate{Task: t}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if _, err := c.Follow(ctx, id, interval, send); err != nil && ctx.Err() == nil {
			select {
			case ch <- TaskUpdate{Err: err}:
			case <-ctx.Done():
			}
		}
	}()
	return ch
}

// FollowLog polls the task id's log every interval (bounded as Follow's)
// and gives fn each batch of entries appended since the previous poll (in
// time order within a batch), until the task is terminal (its last entries
// included); it returns the task's terminal record. Each poll asks for the
// entries after the last seq the previous one saw (TaskLogAfter), so no
// entry is given twice or skipped, however the function and the platform
// append meanwhile. The log keeps a bounded size: a poll that falls behind
// its bound gets the log's truncated entry first, saying entries were
// dropped. An error from fn ends FollowLog with it; ctx's end ends it with
// ctx's error.
func (c *Client) FollowLog(ctx context.Context, id string, interval time.Duration, fn func([]contracts.LogEntry) error) (*contracts.Task, error) {
	interval = followInterval(interval)
	var after int64
	for {
		// The state first: entries read after it include the terminal one.
		t, err := c.GetTask(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("following task %s: %w", id, err)
		}
		lg, err := c.TaskLogAfter(ctx, id, after)
		if err != nil {
			return nil, fmt.Errorf("following the log of task %s: %w", id, err)
		}
		if len(lg.Entries) > 0 {
			if err := fn(lg.Entries); err != nil {
				return t, err
			}
		}
		after = max(after, lg.LastSeq)
		if t.State.Terminal() {
			return t, nil
		}
		if err := sleep(ctx, interval); err != nil {
			return t, err
		}
	}
}

// sleep waits d, or returns ctx's error when ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
