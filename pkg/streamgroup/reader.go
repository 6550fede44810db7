// Package streamgroup consumes Redis streams as one member of a consumer
// group: a Reader reads many streams in batches, hands each entry to a
// handler, acknowledges in batches, takes over the entries of consumers
// whose heartbeat (Liveness) stopped, and releases entries it gives up.
// The redisstream broker driver's lanes and the notifier's results outbox
// run on it.
//
// Files: reader.go (the Reader and its loop), options.go (Config and
// defaults), read.go (XREADGROUP and repairing missing groups), acks.go
// (batched XACKs), claim.go (takeover), release.go, drain.go (stopping),
// liveness.go (heartbeats).
package streamgroup

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reader is one consumer of a Redis consumer group that reads many
// streams in batches: the redisstream driver's lanes and the notifier's
// results outbox.
//
// One loop owns the reading. Each stream has a number of slots (entries
// the reader may hold at once); whenever some are free, one pipeline of
// XREADGROUPs over the streams with free slots takes up to that many new
// entries of each, and every entry is handed to an idle long-lived worker
// (read describes the grouping). Handled entries
// queue for acknowledgement; the next read (or claim round) carries one
// XACK per stream for all of them in the same pipeline, and when the loop
// sits in a blocking read a flusher sends them after ackLinger. Under load
// a read and its acks are a fraction of a round trip per entry, where
// watermill-redisstream's subscriber made two (XREADGROUP COUNT 1 and
// XACK) per entry.
//
// Only this loop reads or claims for its consumer, so it knows which of its
// consumer's pending entries it holds: a claim round never takes one of
// those back, however long handling takes. Entries of consumers whose
// heartbeat stopped (Liveness) are taken over every ClaimEvery.
type Reader struct {
	cfg Config
	// cluster says the client is a Redis Cluster's: one command per slot.
	cluster bool
	acks    *ackQueue
	// kick wakes the loop when slots change.
	kick chan struct{}

	mu    sync.Mutex
	slots map[string]int
}

// Outcome is what a handler made of an entry.
type Outcome int

const (
	// Done: the entry is acknowledged.
	Done Outcome = iota
	// Retry: the entry is handled again after RetryWait.
	Retry
	// Leave: the reader lets go of the entry; it stays pending on this
	// consumer, to be taken again after the Liveness's ownAfter, or by
	// another consumer once this one's heartbeat is gone.
	Leave
	// Release: the reader gives the entry up to any consumer of the group:
	// it is moved to OrphanConsumer, which never heartbeats, so the next
	// claim round of any reader of the stream (this one included) takes it.
	Release
)

// OrphanConsumer holds released entries until a reader claims them.
const OrphanConsumer = "released"

// AddSlots changes how many entries of stream the reader may hold by delta
// and returns the new count; at zero it stops reading stream (entries it
// holds are still handled).
func (r *Reader) AddSlots(stream string, delta int) int {
	r.mu.Lock()
	n := max(r.slots[stream]+delta, 0)
	if n == 0 {
		delete(r.slots, stream)
	} else {
		r.slots[stream] = n
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return n
}

func (r *Reader) slotsOf(stream string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slots[stream]
}

func (r *Reader) slotsNow() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.slots)
}

// Consumer is the reader's consumer name.
func (r *Reader) Consumer() string { return r.cfg.Live.Consumer() }

// entryKey names an entry across streams.
type entryKey struct{ stream, id string }

// heldEntry is an entry the reader holds.
type heldEntry struct {
	entryKey
	msg redis.XMessage
	// outcome is the handler's verdict and due the time of the next
	// attempt after Retry. Written by the handling goroutine or the loop,
	// never both at once.
	outcome Outcome
	due     time.Time
}

// readLoop is the state of one Run. held, retries and the times are the
// loop goroutine's own.
type readLoop struct {
	r *Reader
	// hctx is the handling context, cancelled only when a drain times out.
	hctx    context.Context
	held    map[entryKey]*heldEntry
	perHeld map[string]int
	// missing holds streams left out of reads because a read could not
	// read them (deleted, or not readable); checked again every ClaimEvery
	// from recheckAt.
	missing   map[string]bool
	recheckAt time.Time
	retries   []*heldEntry
	done      chan *heldEntry
	// work hands an entry to an idle worker. Workers live until Run ends,
	// so that their stacks, grown by handling, are reused.
	work chan *heldEntry
	wg   sync.WaitGroup
	// claimAt, readAt and forgetAt are when the next claim round, read and
	// forget round may start.
	claimAt, readAt, forgetAt time.Time
	// backlog says the last read filled some stream's free slots; idle
	// that it found nothing without blocking, so the next one blocks.
	backlog, idle bool
	// pollWait is the pause before the next read while a stream is full
	// and reads find nothing: busyPoll, doubling up to ReadBlock.
	pollWait time.Duration
	// errorUntil ends the pause after a failed read.
	errorUntil time.Time
	// On a cluster (reads that do not block): hot are the streams the
	// last read found entries in, read again at once; the others are read
	// from sweepAt on, every ClusterPoll.
	hot     map[string]bool
	sweepAt time.Time
}

// Run reads until ctx ends, then drains: entries being handled finish
// (within CloseTimeout) and are acknowledged; the rest stay pending for
// whoever reads next. Finally the consumer leaves the groups of streams
// where it has nothing pending.
func (r *Reader) Run(ctx context.Context) {
	hctx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	quit, flusherDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flusherDone)
		r.flushAcks(quit)
	}()
	l := &readLoop{
		r: r, hctx: hctx, held: map[entryKey]*heldEntry{}, perHeld: map[string]int{}, missing: map[string]bool{},
		done:     make(chan *heldEntry, 1024),
		work:     make(chan *heldEntry),
		forgetAt: time.Now().Add(forgetEvery),
	}
	seen := l.run(ctx)
	drained := l.drain(abort)
	close(l.work) // the workers end
	if drained {
		l.wg.Wait()
	}
	close(quit)
	<-flusherDone
	r.finalAck()
	r.leaveGroups(seen)
}

// free is how many more entries of each stream the loop may take; full
// says some stream has none free, and halfFree that some has at least half
// of its slots free.
func (l *readLoop) free() (free map[string]int, full, halfFree bool) {
	slots := l.r.slotsNow()
	free = make(map[string]int, len(slots))
	// Between a cluster's polls of every stream only the hot ones are read
	// (hotStreams): only they make a read due early.
	hotOnly := l.r.cluster && len(l.hot) > 0 && time.Now().Before(l.sweepAt)
	for s, n := range slots {
		if l.missing[s] {
			continue
		}
		f := n - l.perHeld[s]
		if f > 0 {
			free[s] = f
		} else {
			full = true
		}
		if !hotOnly || l.hot[s] {
			halfFree = halfFree || 2*f >= n
		}
	}
	return free, full, halfFree
}

// run loops until ctx ends and returns every stream it read.
func (l *readLoop) run(ctx context.Context) map[string]bool {
	r := l.r
	seen := map[string]bool{}
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
		free, full, halfFree := l.free()
		for s := range free {
			seen[s] = true
		}
		switch {
		case len(l.missing) > 0 && !now.Before(l.recheckAt):
			l.recheck(ctx)
			l.recheckAt = now.Add(ClaimEvery)
			continue
		case !now.Before(l.forgetAt):
			l.forgetConsumers(ctx, slices.Collect(maps.Keys(seen)))
			l.forgetAt = now.Add(forgetEvery)
			continue
		case len(free) > 0 && !now.Before(l.claimAt):
			l.claimAt = now.Add(ClaimEvery)
			if l.claim(ctx, free) {
				l.claimAt = now // there may be more: claim again once slots are free
			}
			continue
		case len(free) > 0 && (!now.Before(l.readAt) || l.backlog && halfFree):
			l.read(ctx, free, full)
			continue
		}
		next := l.forgetAt
		if len(l.missing) > 0 {
			next = minTime(next, l.recheckAt)
		}
		if len(free) > 0 {
			next = minTime(next, minTime(l.claimAt, l.readAt))
		}
		for _, e := range l.retries {
			next = minTime(next, e.due)
		}
		timer.Reset(time.Until(next))
		select {
		case e := <-l.done:
			l.finish(e)
		case <-r.kick:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	return seen
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// start hands m to a worker, unless the loop holds it already.
func (l *readLoop) start(stream string, m redis.XMessage) {
	k := entryKey{stream, m.ID}
	if l.held[k] != nil {
		return
	}
	e := &heldEntry{entryKey: k, msg: m}
	l.held[k] = e
	l.perHeld[stream]++
	l.handle(e)
}

// handle hands e to an idle worker, or to a new one.
func (l *readLoop) handle(e *heldEntry) {
	select {
	case l.work <- e:
	default:
		l.wg.Go(func() { l.worker(e) })
	}
}

func (l *readLoop) worker(e *heldEntry) {
	for ok := true; ok; e, ok = <-l.work {
		e.outcome = l.r.cfg.Handle(l.hctx, e.stream, e.msg)
		if e.outcome == Release {
			l.r.release(e.entryKey)
		}
		if e.outcome == Done {
			// Queued before the loop lets go of it, so a claim round
			// always sees it as held or owed until the XACK is done.
			l.r.acks.push(e.entryKey)
		}
		l.done <- e
	}
}

// finish takes a handled entry back: done, let go, or due again.
func (l *readLoop) finish(e *heldEntry) {
	if e.outcome == Retry {
		e.due = time.Now().Add(l.r.cfg.RetryWait)
		l.retries = append(l.retries, e)
		return
	}
	l.drop(e)
}

// drop forgets a held entry: its slot is free.
func (l *readLoop) drop(e *heldEntry) {
	delete(l.held, e.entryKey)
	if l.perHeld[e.stream] >= l.r.slotsOf(e.stream) {
		// A full stream has a free slot: read after the linger (and
		// not before the pause after a failed read).
		soon := time.Now().Add(l.r.cfg.ReadLinger)
		if soon.Before(l.errorUntil) {
			soon = l.errorUntil
		}
		l.readAt = minTime(l.readAt, soon)
	}
	if l.perHeld[e.stream]--; l.perHeld[e.stream] <= 0 {
		delete(l.perHeld, e.stream)
	}
}

func (l *readLoop) startDueRetries(now time.Time) {
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
