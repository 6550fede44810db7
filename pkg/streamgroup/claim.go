package streamgroup

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/redis/go-redis/v9"
)

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
