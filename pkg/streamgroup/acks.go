package streamgroup

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ackQueue holds the ids of handled entries until an XACK covers them.
type ackQueue struct {
	mu     sync.Mutex
	queued map[string][]string
	// owed is every entry queued or being acknowledged.
	owed map[entryKey]struct{}
	// kick wakes the flusher when ids are queued.
	kick chan struct{}
}

func newAckQueue() *ackQueue {
	return &ackQueue{queued: map[string][]string{}, owed: map[entryKey]struct{}{}, kick: make(chan struct{}, 1)}
}

func (q *ackQueue) push(k entryKey) {
	q.mu.Lock()
	q.queued[k.stream] = append(q.queued[k.stream], k.id)
	q.owed[k] = struct{}{}
	q.mu.Unlock()
	q.wake()
}

func (q *ackQueue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// take returns the queued ids by stream; the caller acknowledges them and
// settles.
func (q *ackQueue) take() map[string][]string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queued) == 0 {
		return nil
	}
	ids := q.queued
	q.queued = map[string][]string{}
	return ids
}

// settle records the outcome of an XACK of stream's ids: on success they
// are done, on failure queued again.
func (q *ackQueue) settle(stream string, ids []string, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		q.queued[stream] = append(q.queued[stream], ids...)
		return
	}
	for _, id := range ids {
		delete(q.owed, entryKey{stream, id})
	}
}

func (q *ackQueue) owes(k entryKey) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.owed[k]
	return ok
}

// owedOn counts the entries of stream queued or being acknowledged.
func (q *ackQueue) owedOn(stream string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for k := range q.owed {
		if k.stream == stream {
			n++
		}
	}
	return n
}

// withAcks sends the commands fill queues in one round trip with an XACK
// of the queued ids of each stream, and settles those. It returns the
// first XACK error.
func (r *Reader) withAcks(ctx context.Context, fill func(redis.Pipeliner)) error {
	ids := r.acks.take()
	pipe := r.cfg.Client.Pipeline()
	acks := make(map[string]*redis.IntCmd, len(ids))
	for stream, list := range ids {
		acks[stream] = pipe.XAck(ctx, stream, r.cfg.Group, list...)
	}
	if fill != nil {
		fill(pipe)
	}
	if pipe.Len() == 0 {
		return nil
	}
	_, _ = pipe.Exec(ctx)
	var first error
	for stream, cmd := range acks {
		err := cmd.Err()
		r.acks.settle(stream, ids[stream], err)
		if first == nil {
			first = err
		}
	}
	return first
}

// flushAcks acknowledges queued ids that no read carried within ackLinger,
// until quit is closed.
func (r *Reader) flushAcks(quit <-chan struct{}) {
	t := time.NewTimer(ackLinger)
	t.Stop()
	wait := func(d time.Duration) bool {
		t.Reset(d)
		select {
		case <-quit:
			t.Stop()
			return false
		case <-t.C:
			return true
		}
	}
	for {
		select {
		case <-quit:
			return
		case <-r.acks.kick:
		}
		if !wait(ackLinger) {
			return
		}
		if err := r.withAcks(context.Background(), nil); err != nil {
			r.cfg.Logger.Error("acknowledging "+r.cfg.What+" entries", "error", err)
			if !wait(errorWait) {
				return
			}
			r.acks.wake()
		}
	}
}

// finalAck acknowledges what is still queued, trying a few times.
func (r *Reader) finalAck() {
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.withAcks(ctx, nil)
		cancel()
		if err == nil {
			return
		}
		r.cfg.Logger.Error("acknowledging "+r.cfg.What+" entries on stop; they will be handled again", "error", err)
		time.Sleep(errorWait) // a pause between attempts, not synchronisation
	}
}

// ackErr logs a failed XACK that a read or claim round carried (the ids
// are queued again).
func (l *readLoop) ackErr(ctx context.Context, err error) {
	if err != nil && ctx.Err() == nil {
		l.r.cfg.Logger.WarnContext(ctx, "acknowledging "+l.r.cfg.What+" entries; will try again", "error", err)
	}
}
