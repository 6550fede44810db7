// Package groupcommit sends calls that arrive while earlier ones are on the
// wire together, in one batch (a Redis pipeline): alone, a call goes out at
// once; under load, calls share round trips. The ledger's script calls and
// the redisstream driver's XADDs go through it. On the machines measured a
// round trip is mostly system calls on both sides (a write and one or two
// reads here, the same in Redis), so sharing them is most of the win.
package groupcommit

import (
	"context"
	"errors"
	"sync"
)

// ErrFull is the answer to a call when Limits.Queue calls are waiting.
var ErrFull = errors.New("too many calls waiting for Redis")

// Limits bound a Batcher. Zero fields take the defaults.
type Limits struct {
	// Flushers bounds the batches in flight at once. Default 4.
	Flushers int
	// Calls and Bytes bound one batch: in calls, and in the sizes the
	// Size function gives them (payloads can be large). Defaults 256 and
	// 1 MiB.
	Calls, Bytes int
	// Queue bounds the calls waiting; past it a call fails at once with
	// ErrFull (Redis has fallen far behind). Default 16384.
	Queue int
}

// Batcher sends calls of type T in batches.
type Batcher[T any] struct {
	// send sends one batch and records each call's reply in the call.
	send func(calls []T)
	size func(T) int
	lim  Limits

	mu       sync.Mutex
	queue    []*waiting[T]
	flushers int
}

type waiting[T any] struct {
	ctx  context.Context
	call T
	size int
	// err is set when the call was not sent; done is closed once it was
	// sent or dropped.
	err  error
	done chan struct{}
}

// New makes a Batcher that sends batches with send (which records each
// call's reply in the call) and weighs calls with size (nil: all 1).
func New[T any](lim Limits, size func(T) int, send func(calls []T)) *Batcher[T] {
	if lim.Flushers <= 0 {
		lim.Flushers = 4
	}
	if lim.Calls <= 0 {
		lim.Calls = 256
	}
	if lim.Bytes <= 0 {
		lim.Bytes = 1 << 20
	}
	if lim.Queue <= 0 {
		lim.Queue = 16384
	}
	if size == nil {
		size = func(T) int { return 1 }
	}
	return &Batcher[T]{send: send, size: size, lim: lim}
}

// Do sends calls (in one batch when they fit, in order) and waits until
// each was sent. It returns nil when every call went out (its reply is in
// the call), ErrFull when they could not be queued, and ctx's error when
// ctx ended first: calls not yet sent then are dropped, and calls already
// on the wire may have run (as when a reply is lost).
//
// A caller whose ctx cannot end (ctx.Done() == nil) and that finds a
// flusher slot free sends the batch itself, sparing a lone call the hand-
// over to a goroutine; a caller that can give up waits for a flusher, so
// that it returns when ctx ends even while Redis stalls.
func (b *Batcher[T]) Do(ctx context.Context, calls ...T) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ws := make([]*waiting[T], len(calls))
	for i, c := range calls {
		ws[i] = &waiting[T]{ctx: ctx, call: c, size: b.size(c), done: make(chan struct{})}
	}
	b.mu.Lock()
	if len(b.queue)+len(ws) > b.lim.Queue {
		b.mu.Unlock()
		return ErrFull
	}
	b.queue = append(b.queue, ws...)
	start := b.flushers < b.lim.Flushers
	if start {
		b.flushers++
	}
	b.mu.Unlock()
	switch {
	case start && ctx.Done() == nil:
		if b.flushOnce() {
			go b.flush()
		}
	case start:
		go b.flush()
	}
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			select {
			case <-w.done: // both ready: the answer wins
			default:
				return ctx.Err()
			}
		}
		if w.err != nil {
			return w.err
		}
	}
	return nil
}

// flush sends queued calls until the queue is empty.
func (b *Batcher[T]) flush() {
	for b.flushOnce() {
	}
}

// flushOnce sends up to one batch of queued calls. It reports whether more
// are queued; when none are, it has given up its flusher slot.
func (b *Batcher[T]) flushOnce() bool {
	b.mu.Lock()
	n, size := 0, 0
	for n < len(b.queue) && n < b.lim.Calls && (n == 0 || size+b.queue[n].size <= b.lim.Bytes) {
		size += b.queue[n].size
		n++
	}
	ws := make([]*waiting[T], n)
	copy(ws, b.queue)
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil // let the backing array go
	}
	b.mu.Unlock()

	// A call whose caller gave up before it went out is not sent.
	live := make([]T, 0, len(ws))
	for _, w := range ws {
		if w.err = w.ctx.Err(); w.err == nil {
			live = append(live, w.call)
		}
	}
	if len(live) > 0 {
		b.send(live)
	}
	for _, w := range ws {
		close(w.done)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.flushers--
		return false
	}
	return true
}
