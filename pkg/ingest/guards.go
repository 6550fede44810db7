package ingest

import (
	"context"
	"log/slog"
	"sync"

	"github.com/tasklane/tasklane/pkg/ledger"
)

// guardQueue bounds the guards waiting to be dropped; Submit waits when it
// is full, so a Redis that falls behind slows ingest instead of growing the
// queue.
const guardQueue = 8192

// guardBatch bounds the guards dropped in one round trip.
const guardBatch = 2048

// guardDropper drops the publish guards of confirmed tasks in the
// background, as many per round trip as have piled up since the last one.
// Submit does not wait for it: a guard that is never dropped (the process
// died first, or Redis did not answer) only makes the scheduler publish the
// task again once the guard passes, and the dispatcher's claim drops the
// extra copy. Most guards are gone before the drop arrives anyway: the claim
// replaces a task's guard with its lease.
type guardDropper struct {
	ledger *ledger.Ledger
	logger *slog.Logger

	mu     sync.RWMutex
	closed bool
	queue  chan ledger.Guard
	done   chan struct{}
}

func newGuardDropper(l *ledger.Ledger, logger *slog.Logger) *guardDropper {
	d := &guardDropper{ledger: l, logger: logger, queue: make(chan ledger.Guard, guardQueue), done: make(chan struct{})}
	go d.run()
	return d
}

// add queues guards to be dropped; after close it drops them itself.
func (d *guardDropper) add(ctx context.Context, guards []ledger.Guard) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.drop(ctx, guards)
		return
	}
	for _, g := range guards {
		d.queue <- g
	}
}

func (d *guardDropper) run() {
	defer close(d.done)
	batch := make([]ledger.Guard, 0, guardBatch)
	for g := range d.queue {
		batch = append(batch[:0], g)
	fill:
		for len(batch) < guardBatch {
			select {
			case g, ok := <-d.queue:
				if !ok {
					break fill
				}
				batch = append(batch, g)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		d.drop(ctx, batch)
		cancel()
	}
}

func (d *guardDropper) drop(ctx context.Context, guards []ledger.Guard) {
	if err := d.ledger.DropGuards(ctx, guards); err != nil {
		d.logger.WarnContext(ctx, "dropping publish guards; the scheduler republishes those tasks once their guards pass, and dispatchers drop the extra copy",
			"tasks", len(guards), "error", err)
	}
}

// close drops what is queued and stops; later adds drop synchronously.
func (d *guardDropper) close() {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		close(d.queue)
	}
	d.mu.Unlock()
	<-d.done
}
