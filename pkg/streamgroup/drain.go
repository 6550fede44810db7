package streamgroup

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// drain waits for the held entries being handled, up to CloseTimeout, then
// cancels their handling. Entries waiting to be handled again are let go:
// they stay pending on this consumer and are taken over once its heartbeat
// is gone. It reports whether every handler returned.
func (l *readLoop) drain(abort context.CancelFunc) bool {
	r := l.r
	for _, e := range l.retries {
		l.drop(e)
	}
	l.retries = nil
	timeout := time.NewTimer(r.cfg.CloseTimeout)
	defer timeout.Stop()
	aborted := false
	for len(l.held) > 0 {
		select {
		case e := <-l.done:
			l.drop(e)
		case <-timeout.C:
			if aborted {
				r.cfg.Logger.Error(r.cfg.What+" entries still being handled after the reader stopped; they stay pending", "entries", len(l.held))
				return false
			}
			r.cfg.Logger.Warn(r.cfg.What+" entries not handled within the close timeout; cancelling them, they stay pending",
				"entries", len(l.held), "timeout", r.cfg.CloseTimeout)
			abort()
			aborted = true
			timeout.Reset(abortTimeout)
		}
	}
	return true
}

// leaveGroups removes this consumer from the group of each stream where
// nothing is pending on it (with something pending it stays, for the
// entries to be taken over).
func (r *Reader) leaveGroups(streams map[string]bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	me := r.Consumer()
	for stream := range streams {
		xps, err := r.cfg.Client.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: stream, Group: r.cfg.Group, Start: "-", End: "+", Count: 1, Consumer: me,
		}).Result()
		if err == nil && len(xps) == 0 {
			_ = r.cfg.Client.XGroupDelConsumer(ctx, stream, r.cfg.Group, me).Err()
		}
	}
}
