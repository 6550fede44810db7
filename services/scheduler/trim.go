package scheduler

import (
	"context"
	"sync"
	"time"

	"github.com/tasklane/tasklane/pkg/broker"
)

// TrimEveryDefault is how often acknowledged stream entries are trimmed.
const TrimEveryDefault = 30 * time.Second

// LaneTrimmer frees what lanes no longer need (broker.Driver).
type LaneTrimmer interface {
	Trim(ctx context.Context, lanes ...string) (int64, error)
}

// Trim configures the trimming of Redis streams: the scheduler deletes
// the entries every consumer group is done with, of the lanes (the
// redisstream driver's; RabbitMQ needs nothing) and of the ledger's results
// outbox. Lanes are never trimmed by length: that would delete work nobody
// has done.
type Trim struct {
	// Broker trims the lanes.
	Broker LaneTrimmer
	// Lanes returns the lanes to trim: the routing table's, retiring ones
	// included.
	Lanes func() []string
	// Every is the time between trims. Default TrimEveryDefault.
	Every time.Duration
}

// startTrimming trims every Trim.Every until ctx ends, when configured;
// the function it returns waits for that.
func (s *Scheduler) startTrimming(ctx context.Context) (wait func()) {
	cfg := s.cfg.Trim
	if cfg == nil {
		return func() {}
	}
	every := cfg.Every
	if every <= 0 {
		every = TrimEveryDefault
	}
	return tick(ctx, every, func() { s.trim(ctx, cfg) })
}

// tick runs f every interval until ctx ends, in a goroutine of its own;
// the function it returns waits for that.
func tick(ctx context.Context, every time.Duration, f func()) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			f()
		}
	})
	return wg.Wait
}

// trim trims the lanes and the results outbox (every partition's stream)
// once.
func (s *Scheduler) trim(ctx context.Context, cfg *Trim) {
	if _, err := cfg.Broker.Trim(ctx, cfg.Lanes()...); err != nil {
		s.cfg.Logger.Warn("trimming lanes", "error", err)
	}
	for _, stream := range s.cfg.Ledger.OutboxStreams() {
		if ctx.Err() != nil {
			return
		}
		if _, err := broker.TrimAcked(ctx, s.cfg.Ledger.Redis(), stream); err != nil {
			s.cfg.Logger.Warn("trimming the results outbox", "stream", stream, "error", err)
		}
	}
}
