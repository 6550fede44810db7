package notifier

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// The batch consumer of the results outbox.
//
// One loop per process owns the reading: it keeps up to Config.Consumers
// entries held (being handled, or waiting to publish again) and, whenever
// some are free, reads that many new entries in one XREADGROUP, each
// handled in its own goroutine. Handled entries queue for acknowledgement;
// the next read (or claim round) sends one XACK for all of them in the same
// pipeline, and when the loop sits in a blocking read a flusher sends them
// after ackLinger. Per result that is a fraction of a round trip under load,
// where watermill-redisstream's subscriber made two (XREADGROUP COUNT 1 and
// XACK) and one goroutine hand-over per entry.
//
// Only this loop reads or claims for its consumer, so it knows which of its
// consumer's pending entries it holds: a claim round never takes one of
// those back, however long its sinks take.
const (
	// readBlock is how long a read waits for new entries (and so how late
	// a stop, a due retry or a claim round may be).
	readBlock = 500 * time.Millisecond
	// readLinger is the pause after a read that found entries, so that the
	// next read finds several: it adds at most this much to a result's
	// latency and bounds reads at a few hundred a second. When the last read
	// filled every free slot (a backlog), the next one starts early once
	// half the slots are free again.
	readLinger = 5 * time.Millisecond
	// ackLinger is how long handled entries may wait for a read to carry
	// their XACK before the flusher sends it alone.
	ackLinger = 20 * time.Millisecond
	// retryWait is the wait before publishing again after a failed
	// publish (as watermill's NackResendSleep was).
	retryWait = time.Second
	// errorWait is the pause after a failed Redis command.
	errorWait = 500 * time.Millisecond
	// claimMinIdle is how long an entry must have been pending to be taken
	// over. XCLAIM's MIN-IDLE makes two claimers of one entry safe: the
	// first resets its idle time, the second's XCLAIM skips it.
	claimMinIdle = time.Second
	// closeTimeout bounds the drain of held entries on stop (the router's
	// CloseTimeout was 30s); after it their handling is cancelled and they
	// stay pending, for abortTimeout more at most.
	closeTimeout = 30 * time.Second
	abortTimeout = 5 * time.Second
	// publishTimeout bounds one result publish.
	publishTimeout = 10 * time.Second
	// forgetEvery is how often consumers that left the group without
	// saying so (crashed, nothing pending any more) are removed, once idle
	// for forgetAfter.
	forgetEvery = 5 * time.Minute
	forgetAfter = 10 * time.Minute
)

// entry is one outbox entry this notifier holds.
type entry struct {
	id   string
	task contracts.Task
	// bad says why the entry cannot become a result; it is acknowledged
	// and logged.
	bad string
	// attempts counts result publishes; ok is handle's verdict and due the
	// time of the next publish after a failure. Written by the handling
	// goroutine or the loop, never both at once.
	attempts int
	ok       bool
	due      time.Time
}

func parseEntry(m redis.XMessage) *entry {
	e := &entry{id: m.ID}
	if len(m.Values) == 0 {
		e.bad = "outbox entry without fields"
		return e
	}
	e.task = ledger.RecordFromValues(m.Values)
	if e.task.ID == "" || !e.task.State.Terminal() {
		e.bad = fmt.Sprintf("outbox entry without a terminal task: %v", m.Values)
	}
	return e
}

// ackQueue holds the ids of handled entries until an XACK covers them.
type ackQueue struct {
	mu     sync.Mutex
	queued []string
	// owed is every id queued or being acknowledged.
	owed map[string]struct{}
	// kick wakes the flusher when ids are queued.
	kick chan struct{}
}

func newAckQueue() *ackQueue {
	return &ackQueue{owed: map[string]struct{}{}, kick: make(chan struct{}, 1)}
}

func (q *ackQueue) push(id string) {
	q.mu.Lock()
	q.queued = append(q.queued, id)
	q.owed[id] = struct{}{}
	q.mu.Unlock()
	q.wake()
}

func (q *ackQueue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// take returns the queued ids; the caller acknowledges them and settles.
func (q *ackQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := q.queued
	q.queued = nil
	return ids
}

// settle records the outcome of an XACK of ids: on success they are done,
// on failure queued again.
func (q *ackQueue) settle(ids []string, err error) {
	if len(ids) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		q.queued = append(q.queued, ids...)
		return
	}
	for _, id := range ids {
		delete(q.owed, id)
	}
}

func (q *ackQueue) owes(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.owed[id]
	return ok
}

func (q *ackQueue) size() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.owed)
}

// ack sends one XACK for ids and settles them.
func (n *Notifier) ack(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := n.rdb.XAck(ctx, n.stream, ConsumerGroup, ids...).Err()
	n.acks.settle(ids, err)
	return err
}

// withAcks sends the commands fill queues in one round trip with an XACK of
// the queued ids, and settles those.
func (n *Notifier) withAcks(ctx context.Context, fill func(redis.Pipeliner)) {
	ids := n.acks.take()
	pipe := n.rdb.Pipeline()
	var ack *redis.IntCmd
	if len(ids) > 0 {
		ack = pipe.XAck(ctx, n.stream, ConsumerGroup, ids...)
	}
	fill(pipe)
	_, _ = pipe.Exec(ctx)
	if ack != nil {
		n.acks.settle(ids, ack.Err())
	}
}

// flushAcks acknowledges queued ids that no read carried within ackLinger,
// until quit is closed.
func (n *Notifier) flushAcks(quit <-chan struct{}) {
	t := time.NewTimer(ackLinger)
	t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-n.acks.kick:
		}
		t.Reset(ackLinger)
		select {
		case <-quit:
			t.Stop()
			return
		case <-t.C:
		}
		if err := n.ack(context.Background(), n.acks.take()); err != nil {
			n.cfg.Logger.ErrorContext(context.Background(), "acknowledging outbox entries", "error", err)
			t.Reset(errorWait)
			select {
			case <-quit:
				t.Stop()
				return
			case <-t.C:
			}
			n.acks.wake()
		}
	}
}

// outboxLoop is the state of one Run's read loop. held, retries and the
// times are the loop goroutine's own.
type outboxLoop struct {
	n *Notifier
	// hctx is the handling context, cancelled only when a drain times out.
	hctx    context.Context
	held    map[string]*entry
	retries []*entry
	done    chan *entry
	wg      sync.WaitGroup
	// claimAt, readAt and forgetAt are when the next claim round, read and
	// forget round may start.
	claimAt, readAt, forgetAt time.Time
	// backlog says the last read took as many entries as it asked for.
	backlog bool
}

// consume runs the read loop until ctx ends, then drains.
func (n *Notifier) consume(ctx context.Context) {
	hctx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	quit, flusherDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flusherDone)
		n.flushAcks(quit)
	}()
	l := &outboxLoop{
		n: n, hctx: hctx, held: map[string]*entry{},
		// Every held entry's goroutine sends once: never blocks.
		done:     make(chan *entry, n.cfg.Consumers),
		forgetAt: time.Now().Add(forgetEvery),
	}
	l.run(ctx)
	l.drain(abort)
	close(quit)
	<-flusherDone
	n.finalAck()
	n.leaveGroup()
}

func (l *outboxLoop) run(ctx context.Context) {
	n := l.n
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		for collected := true; collected; {
			select {
			case e := <-l.done:
				l.finish(e)
			default:
				collected = false
			}
		}
		now := time.Now()
		l.startDueRetries(now)
		free := n.cfg.Consumers - len(l.held)
		switch {
		case !now.Before(l.forgetAt):
			l.forgetConsumers(ctx)
			l.forgetAt = now.Add(forgetEvery)
			continue
		case free > 0 && !now.Before(l.claimAt):
			l.claimAt = now.Add(broker.ClaimEvery)
			if l.claim(ctx, free) {
				l.claimAt = now // there may be more: claim again once slots are free
			}
			continue
		case free > 0 && (!now.Before(l.readAt) || l.backlog && 2*free >= n.cfg.Consumers):
			l.read(ctx, free)
			continue
		}
		next := l.forgetAt
		if free > 0 {
			next = minTime(next, minTime(l.claimAt, l.readAt))
		}
		for _, e := range l.retries {
			next = minTime(next, e.due)
		}
		timer.Reset(time.Until(next))
		select {
		case e := <-l.done:
			l.finish(e)
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// start hands e to a goroutine of its own.
func (l *outboxLoop) start(e *entry) {
	if l.held[e.id] != nil {
		return
	}
	l.held[e.id] = e
	l.handle(e)
}

func (l *outboxLoop) handle(e *entry) {
	l.wg.Go(func() {
		e.ok = l.n.handle(l.hctx, e)
		if e.ok {
			// Queued before the loop lets go of it, so a claim round
			// always sees it as held or owed until the XACK is done.
			l.n.acks.push(e.id)
		}
		l.done <- e
	})
}

// finish takes a handled entry back: done, or due again in retryWait.
func (l *outboxLoop) finish(e *entry) {
	if e.ok {
		delete(l.held, e.id)
		return
	}
	e.due = time.Now().Add(retryWait)
	l.retries = append(l.retries, e)
}

func (l *outboxLoop) startDueRetries(now time.Time) {
	keep := l.retries[:0]
	for _, e := range l.retries {
		if e.due.After(now) {
			keep = append(keep, e)
			continue
		}
		l.handle(e)
	}
	clear(l.retries[len(keep):])
	l.retries = keep
}

// read takes up to count new entries, acknowledging queued ones in the
// same round trip.
func (l *outboxLoop) read(ctx context.Context, count int) {
	n := l.n
	var rd *redis.XStreamSliceCmd
	n.withAcks(ctx, func(p redis.Pipeliner) {
		rd = p.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: ConsumerGroup, Consumer: n.live.Consumer(),
			Streams: []string{n.stream, ">"}, Count: int64(count), Block: readBlock,
		})
	})
	streams, err := rd.Result()
	now := time.Now()
	switch {
	case errors.Is(err, redis.Nil):
		l.readAt, l.backlog = now, false // nothing came within readBlock
		return
	case err != nil:
		l.readAt, l.backlog = now.Add(errorWait), false
		if ctx.Err() != nil {
			return
		}
		if redis.HasErrorPrefix(err, "NOGROUP") {
			// The stream or group is gone (deleted, or a Redis without
			// persistence restarted): make it again.
			n.cfg.Logger.WarnContext(ctx, "results outbox consumer group missing, creating it", "stream", n.stream)
			if err := broker.EnsureGroup(ctx, n.rdb, n.stream, ConsumerGroup); err != nil {
				n.cfg.Logger.ErrorContext(ctx, "creating results outbox consumer group", "error", err)
			}
			return
		}
		n.cfg.Logger.ErrorContext(ctx, "reading the results outbox", "error", err)
		return
	}
	got := 0
	for _, s := range streams {
		for _, m := range s.Messages {
			l.start(parseEntry(m))
			got++
		}
	}
	l.readAt, l.backlog = now.Add(readLinger), got >= count
}

// claim takes over up to free pending entries that broker.Liveness says
// may be taken: those of consumers whose heartbeat stopped, and this
// consumer's own that it does not hold and that have been pending longer
// than ownEntriesAfter. It reports whether it took as many as it had free
// slots for (there may be more).
func (l *outboxLoop) claim(ctx context.Context, free int) bool {
	n := l.n
	me := n.live.Consumer()
	var summary *redis.XPendingCmd
	n.withAcks(ctx, func(p redis.Pipeliner) { summary = p.XPending(ctx, n.stream, ConsumerGroup) })
	p, err := summary.Result()
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, redis.Nil) {
			n.cfg.Logger.ErrorContext(ctx, "reading pending results outbox entries", "error", err)
		}
		return false
	}
	var ids []string
	for consumer, count := range p.Consumers {
		if len(ids) >= free {
			break
		}
		idle, limit := claimMinIdle, free-len(ids)
		if consumer == me {
			mine := len(l.held) + n.acks.size()
			if int(count) <= mine {
				continue // every one of them is held here
			}
			idle, limit = ownEntriesAfter, limit+mine
		} else if !n.live.ShouldClaim(redis.XPendingExt{Consumer: consumer}) {
			continue // alive
		}
		xps, err := n.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: n.stream, Group: ConsumerGroup, Idle: idle,
			Start: "-", End: "+", Count: int64(limit), Consumer: consumer,
		}).Result()
		if err != nil {
			if ctx.Err() == nil {
				n.cfg.Logger.ErrorContext(ctx, "reading pending results outbox entries", "consumer", consumer, "error", err)
			}
			continue
		}
		for _, xp := range xps {
			if len(ids) >= free {
				break
			}
			if consumer == me && (l.held[xp.ID] != nil || n.acks.owes(xp.ID) || !n.live.ShouldClaim(xp)) {
				continue
			}
			ids = append(ids, xp.ID)
		}
	}
	if len(ids) == 0 {
		return false
	}
	ms, err := n.rdb.XClaim(ctx, &redis.XClaimArgs{
		Stream: n.stream, Group: ConsumerGroup, Consumer: me, MinIdle: claimMinIdle, Messages: ids,
	}).Result()
	if err != nil {
		if ctx.Err() == nil {
			n.cfg.Logger.ErrorContext(ctx, "taking over results outbox entries", "error", err)
		}
		return false
	}
	if len(ms) > 0 {
		n.cfg.Logger.InfoContext(ctx, "took over results outbox entries", "entries", len(ms))
	}
	for _, m := range ms {
		l.start(parseEntry(m))
	}
	return len(ms) >= free
}

// forgetConsumers removes consumers that have had nothing pending and have
// not read for forgetAfter (crashed notifiers whose entries were taken
// over), as watermill-redisstream did.
func (l *outboxLoop) forgetConsumers(ctx context.Context) {
	n := l.n
	cs, err := n.rdb.XInfoConsumers(ctx, n.stream, ConsumerGroup).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name != n.live.Consumer() && c.Pending == 0 && c.Idle > forgetAfter {
			_ = n.rdb.XGroupDelConsumer(ctx, n.stream, ConsumerGroup, c.Name).Err()
		}
	}
}

// drain waits for the held entries being handled, up to closeTimeout, then
// cancels their handling. Entries waiting to publish again are let go:
// they stay pending on this consumer and are taken over once its heartbeat
// is gone.
func (l *outboxLoop) drain(abort context.CancelFunc) {
	for _, e := range l.retries {
		delete(l.held, e.id)
	}
	l.retries = nil
	timeout := time.NewTimer(closeTimeout)
	defer timeout.Stop()
	aborted := false
	for len(l.held) > 0 {
		select {
		case e := <-l.done:
			delete(l.held, e.id)
		case <-timeout.C:
			if aborted {
				l.n.cfg.Logger.ErrorContext(context.Background(), "results still being handled after the notifier stopped; they stay pending", "entries", len(l.held))
				return
			}
			l.n.cfg.Logger.WarnContext(context.Background(), "results not handled within the close timeout; cancelling them, they stay pending",
				"entries", len(l.held), "timeout", closeTimeout)
			abort()
			aborted = true
			timeout.Reset(abortTimeout)
		}
	}
	l.wg.Wait()
}

// finalAck acknowledges what is still queued, trying a few times.
func (n *Notifier) finalAck() {
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := n.ack(ctx, n.acks.take())
		cancel()
		if err == nil {
			return
		}
		n.cfg.Logger.ErrorContext(context.Background(), "acknowledging outbox entries on stop; they will be sent again", "error", err)
		time.Sleep(errorWait) // a pause between attempts, not synchronisation
	}
}

// leaveGroup removes this consumer from the group if nothing is pending on
// it (with something pending it stays, for the entries to be taken over).
func (n *Notifier) leaveGroup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	me := n.live.Consumer()
	xps, err := n.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: n.stream, Group: ConsumerGroup, Start: "-", End: "+", Count: 1, Consumer: me,
	}).Result()
	if err == nil && len(xps) == 0 {
		_ = n.rdb.XGroupDelConsumer(ctx, n.stream, ConsumerGroup, me).Err()
	}
}
