package broker

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// StreamReader is one consumer of a Redis consumer group that reads many
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
type StreamReader struct {
	cfg  StreamReaderConfig
	acks *ackQueue
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

// StreamReaderConfig configures a StreamReader.
type StreamReaderConfig struct {
	// Client reads and acknowledges. A read blocks for up to ReadBlock in
	// a pipeline, which waits for the client's ReadTimeout: it must be
	// longer (NewStreamReader checks).
	Client *redis.Client
	Group  string
	// Live heartbeats the consumer and judges others'.
	Live *Liveness
	// Handle handles one entry. ctx ends only when a drain timed out.
	Handle func(ctx context.Context, stream string, m redis.XMessage) Outcome
	// What names the streams in logs ("results outbox", "lanes").
	What   string
	Logger *slog.Logger
	// ReadBlock is how long a read waits for new entries (and so how late a
	// stop, a due retry or a claim round may be). Default 500ms.
	ReadBlock time.Duration
	// ReadLinger is the pause after a read that found entries, so that the
	// next read finds several: it adds up to this much to an entry's
	// latency. When the last read filled the free slots of a stream (a
	// backlog), the next one starts early once half the slots are free
	// again. Zero reads again at once: reads then batch only what arrived
	// during the previous one's round trip.
	ReadLinger time.Duration
	// RetryWait is the wait before handling an entry again after Retry.
	// Default 1s.
	RetryWait time.Duration
	// CloseTimeout bounds the drain of held entries when Run's context
	// ends; after it their handling context is cancelled. Default 30s.
	CloseTimeout time.Duration
}

const (
	defaultReadBlock = 500 * time.Millisecond
	// ackLinger is how long handled entries may wait for a read to carry
	// their XACK before the flusher sends it alone.
	ackLinger = 20 * time.Millisecond
	// errorWait is the pause after a failed Redis command.
	errorWait = 500 * time.Millisecond
	// busyPoll is the first pause between reads that found nothing while
	// some stream has no free slot (doubling, up to ReadBlock, while they
	// keep finding nothing). Such reads do not block in Redis: a blocked
	// read cannot learn that a slot of the full stream freed, and under a
	// backlog that is when entries are waiting. A freed slot of a full
	// stream starts a read at once; new entries of the other streams wait
	// up to the pause.
	busyPoll = 20 * time.Millisecond
	// claimMinIdle is how long an entry must have been pending to be taken
	// over. XCLAIM's MIN-IDLE makes two claimers of one entry safe: the
	// first resets its idle time, the second's XCLAIM skips it.
	claimMinIdle = time.Second
	// abortTimeout bounds the wait for cancelled handlers after the close
	// timeout.
	abortTimeout = 5 * time.Second
	// forgetEvery is how often consumers that left the group without
	// saying so (crashed, nothing pending any more) are removed, once idle
	// for forgetAfter.
	forgetEvery = 5 * time.Minute
	forgetAfter = 10 * time.Minute
)

// NewStreamReader builds a reader; Run starts it. Its streams' groups must
// exist (EnsureGroup); a read that finds one missing creates it again.
func NewStreamReader(cfg StreamReaderConfig) (*StreamReader, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReadBlock <= 0 {
		cfg.ReadBlock = defaultReadBlock
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = time.Second
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 30 * time.Second
	}
	if rt := cfg.Client.Options().ReadTimeout; rt > 0 && rt < cfg.ReadBlock+time.Second {
		return nil, errors.New("stream reader: the client's ReadTimeout must exceed ReadBlock by a second")
	}
	return &StreamReader{cfg: cfg, acks: newAckQueue(), kick: make(chan struct{}, 1), slots: map[string]int{}}, nil
}

// EnsureGroup creates group on stream (and the stream), reading from its
// first entry, unless the group exists.
func EnsureGroup(ctx context.Context, rdb redis.Cmdable, stream, group string) error {
	err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return err
	}
	return nil
}

// ClientOptions adapts Redis options for a StreamReader's client: a read
// shares a pipeline with an XACK, and pipelines wait for replies for
// ReadTimeout, not for the read's BLOCK (the default ReadBlock).
func ClientOptions(opt redis.Options) *redis.Options {
	if opt.ReadTimeout > 0 && opt.ReadTimeout < defaultReadBlock+time.Second {
		opt.ReadTimeout = defaultReadBlock + time.Second
	}
	return &opt
}

// AddSlots changes how many entries of stream the reader may hold by delta
// and returns the new count; at zero it stops reading stream (entries it
// holds are still handled).
func (r *StreamReader) AddSlots(stream string, delta int) int {
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

func (r *StreamReader) slotsOf(stream string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slots[stream]
}

func (r *StreamReader) slotsNow() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.slots)
}

// Consumer is the reader's consumer name.
func (r *StreamReader) Consumer() string { return r.cfg.Live.Consumer() }

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
func (r *StreamReader) withAcks(ctx context.Context, fill func(redis.Pipeliner)) error {
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
func (r *StreamReader) flushAcks(quit <-chan struct{}) {
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

// readLoop is the state of one Run. held, retries and the times are the
// loop goroutine's own.
type readLoop struct {
	r *StreamReader
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
}

// Run reads until ctx ends, then drains: entries being handled finish
// (within CloseTimeout) and are acknowledged; the rest stay pending for
// whoever reads next. Finally the consumer leaves the groups of streams
// where it has nothing pending.
func (r *StreamReader) Run(ctx context.Context) {
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
		halfFree = halfFree || 2*f >= n
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

// read takes new entries of every stream with free slots, up to its free
// count, acknowledging queued ones in the same round trip. No stream gives
// more than it has slots for: an entry read is pending on this consumer,
// which no other may take while it lives.
//
// XREADGROUP's COUNT is one number for all the streams of a command, so
// streams are grouped by free count, one command each, in one pipeline,
// without blocking. When such a round finds nothing (or all streams have the
// same free count), the next read is one command that blocks until any
// stream has entries, asking each for the smallest free count.
func (l *readLoop) read(ctx context.Context, free map[string]int, full bool) {
	r := l.r
	streams := slices.Sorted(maps.Keys(free))
	groups := map[int][]string{}
	least := 0
	for _, s := range streams {
		groups[free[s]] = append(groups[free[s]], s)
		if least == 0 || free[s] < least {
			least = free[s]
		}
	}
	block := time.Duration(-1) // no BLOCK
	if !full && (l.idle || len(groups) == 1) {
		groups = map[int][]string{least: streams}
		block = r.cfg.ReadBlock
	}
	var cmds []*redis.XStreamSliceCmd
	l.ackErr(ctx, r.withAcks(ctx, func(p redis.Pipeliner) {
		for count, group := range groups {
			args := make([]string, 0, 2*len(group))
			args = append(args, group...)
			for range group {
				args = append(args, ">")
			}
			cmds = append(cmds, p.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: r.cfg.Group, Consumer: r.Consumer(), Streams: args, Count: int64(count), Block: block,
			}))
		}
	}))
	now := time.Now()
	var failed error
	got := 0
	l.backlog = false
	for _, cmd := range cmds {
		res, err := cmd.Result()
		if err != nil {
			if !errors.Is(err, redis.Nil) && failed == nil {
				failed = err
			}
			continue
		}
		for _, s := range res {
			for _, m := range s.Messages {
				l.start(s.Stream, m)
				got++
			}
			l.backlog = l.backlog || len(s.Messages) >= free[s.Stream]
		}
	}
	// Block on the next read only when this one found nothing without
	// blocking.
	l.idle = got == 0 && block < 0
	switch {
	case failed != nil:
		l.readAt, l.backlog = now.Add(errorWait), false
		l.errorUntil = l.readAt
		if ctx.Err() != nil {
			return
		}
		if l.repair(ctx, streams) {
			l.readAt = now // read the others again at once
			return
		}
		r.cfg.Logger.ErrorContext(ctx, "reading "+r.cfg.What, "error", failed)
	case got == 0 && full:
		// A stream stays full as long as its consumers' tasks run (they
		// ack when done), which may be minutes: back off.
		l.pollWait = min(max(2*l.pollWait, busyPoll), r.cfg.ReadBlock)
		l.readAt = now.Add(l.pollWait)
	case got == 0:
		l.readAt = now // nothing came within the block, or read again blocking
	default:
		l.readAt = now.Add(r.cfg.ReadLinger)
	}
	if got > 0 || !full {
		l.pollWait = 0
	}
}

// claim takes over up to the free slots' worth of pending entries of each
// stream that Liveness says may be taken: those of consumers whose
// heartbeat stopped, and this consumer's own that it does not hold and
// that have been pending longer than the Liveness's ownAfter. It reports
// whether some stream gave as many as it had free slots for (there may be
// more).
func (l *readLoop) claim(ctx context.Context, free map[string]int) bool {
	r := l.r
	me := r.Consumer()
	streams := slices.Sorted(maps.Keys(free))
	summaries := make([]*redis.XPendingCmd, len(streams))
	l.ackErr(ctx, r.withAcks(ctx, func(p redis.Pipeliner) {
		for i, s := range streams {
			summaries[i] = p.XPending(ctx, s, r.cfg.Group)
		}
	}))
	// Whether each other consumer is dead, asked once per round.
	dead := map[string]bool{}
	more := false
	for i, stream := range streams {
		p, err := summaries[i].Result()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOGROUP") {
				r.cfg.Logger.ErrorContext(ctx, "reading pending "+r.cfg.What+" entries", "stream", stream, "error", err)
			}
			continue
		}
		if p.Count == 0 {
			continue
		}
		ids := l.claimable(ctx, stream, p, free[stream], dead)
		if len(ids) == 0 {
			continue
		}
		ms, err := r.cfg.Client.XClaim(ctx, &redis.XClaimArgs{
			Stream: stream, Group: r.cfg.Group, Consumer: me, MinIdle: claimMinIdle, Messages: ids,
		}).Result()
		if err != nil {
			if ctx.Err() == nil {
				r.cfg.Logger.ErrorContext(ctx, "taking over "+r.cfg.What+" entries", "stream", stream, "error", err)
			}
			continue
		}
		if len(ms) > 0 {
			r.cfg.Logger.InfoContext(ctx, "took over "+r.cfg.What+" entries", "stream", stream, "entries", len(ms))
		}
		for _, m := range ms {
			l.start(stream, m)
		}
		more = more || len(ms) >= free[stream]
	}
	return more
}

// claimable lists up to free pending entries of stream that may be taken.
func (l *readLoop) claimable(ctx context.Context, stream string, p *redis.XPending, free int, dead map[string]bool) []string {
	r := l.r
	me := r.Consumer()
	var ids []string
	for consumer, count := range p.Consumers {
		if len(ids) >= free {
			break
		}
		idle, limit := claimMinIdle, free-len(ids)
		if consumer == me {
			mine := l.perHeld[stream] + r.acks.owedOn(stream)
			if int(count) <= mine {
				continue // every one of them is held here
			}
			idle, limit = r.cfg.Live.ownAfter, limit+mine
		} else {
			isDead, asked := dead[consumer]
			if !asked {
				isDead = r.cfg.Live.ShouldClaim(redis.XPendingExt{Consumer: consumer})
				dead[consumer] = isDead
			}
			if !isDead {
				continue // alive
			}
		}
		xps, err := r.cfg.Client.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: stream, Group: r.cfg.Group, Idle: idle,
			Start: "-", End: "+", Count: int64(limit), Consumer: consumer,
		}).Result()
		if err != nil {
			if ctx.Err() == nil {
				r.cfg.Logger.ErrorContext(ctx, "reading pending "+r.cfg.What+" entries", "stream", stream, "consumer", consumer, "error", err)
			}
			continue
		}
		for _, xp := range xps {
			if len(ids) >= free {
				break
			}
			k := entryKey{stream, xp.ID}
			if consumer == me && (l.held[k] != nil || r.acks.owes(k) || !r.cfg.Live.ShouldClaim(xp)) {
				continue
			}
			ids = append(ids, xp.ID)
		}
	}
	return ids
}

// forgetConsumers removes consumers that have had nothing pending and have
// not read for forgetAfter (crashed consumers whose entries were taken
// over), as watermill-redisstream did.
func (l *readLoop) forgetConsumers(ctx context.Context, streams []string) {
	r := l.r
	for _, stream := range streams {
		cs, err := r.cfg.Client.XInfoConsumers(ctx, stream, r.cfg.Group).Result()
		if err != nil {
			continue
		}
		for _, c := range cs {
			// OrphanConsumer is never forgotten: another process may
			// release an entry to it between XINFO and XGROUP DELCONSUMER,
			// which would drop that entry from the group.
			if c.Name != r.Consumer() && c.Name != OrphanConsumer && c.Pending == 0 && c.Idle > forgetAfter {
				_ = r.cfg.Client.XGroupDelConsumer(ctx, stream, r.cfg.Group, c.Name).Err()
			}
		}
	}
}

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

// finalAck acknowledges what is still queued, trying a few times.
func (r *StreamReader) finalAck() {
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

// leaveGroups removes this consumer from the group of each stream where
// nothing is pending on it (with something pending it stays, for the
// entries to be taken over).
func (r *StreamReader) leaveGroups(streams map[string]bool) {
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

// releaseScript moves entry ARGV[3] of stream KEYS[1], group ARGV[1], to
// consumer ARGV[4] only if it is still pending on ARGV[2]: another reader
// may have taken it over meanwhile (this one's heartbeat stalled), and
// moving it then would have it handled a third time.
var releaseScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] and p[1][2] == ARGV[2] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[3], 'JUSTID')
  return 1
end
return 0`)

// release moves an entry this consumer holds to OrphanConsumer (see
// Release). If that fails the entry stays pending here, as after Leave.
func (r *StreamReader) release(k entryKey) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := releaseScript.Run(ctx, r.cfg.Client, []string{k.stream}, r.cfg.Group, r.Consumer(), k.id, OrphanConsumer).Err()
	if err != nil {
		r.cfg.Logger.Warn("releasing a "+r.cfg.What+" entry; it stays pending here", "stream", k.stream, "entry", k.id, "error", err)
	}
}

// repair finds the streams that made a read fail, and reports whether it
// found any. A stream that exists without the group gets the group again
// (from its first entry, so nothing written meanwhile is skipped; a Redis
// without persistence restarted, or the group was destroyed). A stream
// that does not exist (deleted: a retired lane; or gone with a restart) or
// cannot be read is left out of reads until recheck finds it readable:
// one such stream must not stop the others, and the reader must not
// create a stream that was deleted on purpose.
func (l *readLoop) repair(ctx context.Context, streams []string) bool {
	unreadable, fixed := l.inspect(ctx, streams)
	for _, s := range unreadable {
		l.missing[s] = true
	}
	return fixed || len(unreadable) > 0
}

// recheck takes streams that became readable back into reads and forgets
// those without slots.
func (l *readLoop) recheck(ctx context.Context) {
	slots := l.r.slotsNow()
	var streams []string
	for s := range l.missing {
		if slots[s] == 0 {
			delete(l.missing, s)
			continue
		}
		streams = append(streams, s)
	}
	unreadable, _ := l.inspect(ctx, streams)
	for _, s := range streams {
		if !slices.Contains(unreadable, s) {
			l.r.cfg.Logger.InfoContext(ctx, "reading a "+l.r.cfg.What+" stream again", "stream", s)
			delete(l.missing, s)
		}
	}
}

// inspect creates the group on streams that exist without it (fixed says
// it did) and returns the streams Redis says cannot be read now. A stream
// it could not ask about (Redis unreachable) is neither.
func (l *readLoop) inspect(ctx context.Context, streams []string) (unreadable []string, fixed bool) {
	r := l.r
	if len(streams) == 0 {
		return nil, false
	}
	cmds := make([]*redis.XInfoGroupsCmd, len(streams))
	_, _ = r.cfg.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range streams {
			cmds[i] = p.XInfoGroups(ctx, s)
		}
		return nil
	})
	for i, s := range streams {
		groups, err := cmds[i].Result()
		switch {
		case err != nil && strings.Contains(err.Error(), "no such key"):
			if !l.missing[s] {
				r.cfg.Logger.InfoContext(ctx, r.cfg.What+" stream gone; it is read again once it exists", "stream", s)
			}
			unreadable = append(unreadable, s)
		case err != nil && redis.HasErrorPrefix(err, "WRONGTYPE"):
			if !l.missing[s] {
				r.cfg.Logger.ErrorContext(ctx, "a "+r.cfg.What+" key is not a stream; leaving it out of reads", "stream", s, "error", err)
			}
			unreadable = append(unreadable, s)
		case err != nil:
			// No answer about this stream (Redis unreachable, LOADING,
			// BUSY...): not the stream's fault.
			if l.missing[s] {
				unreadable = append(unreadable, s)
			}
		case !slices.ContainsFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == r.cfg.Group }):
			r.cfg.Logger.WarnContext(ctx, r.cfg.What+" consumer group missing, creating it", "stream", s)
			err := r.cfg.Client.XGroupCreate(ctx, s, r.cfg.Group, "0").Err()
			if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
				r.cfg.Logger.ErrorContext(ctx, "creating "+r.cfg.What+" consumer group", "stream", s, "error", err)
				unreadable = append(unreadable, s)
				continue
			}
			fixed = true
		}
	}
	return unreadable, fixed
}

// ackErr logs a failed XACK that a read or claim round carried (the ids
// are queued again).
func (l *readLoop) ackErr(ctx context.Context, err error) {
	if err != nil && ctx.Err() == nil {
		l.r.cfg.Logger.WarnContext(ctx, "acknowledging "+l.r.cfg.What+" entries; will try again", "error", err)
	}
}
