package streamgroup

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/keyslot"
)

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
//
// On a Redis Cluster one command names the streams of one slot only
// (CROSSSLOT otherwise), so the groups are split by slot too, and the
// pipeline by node (go-redis). Such reads never block when the streams
// are in several slots: a node runs the blocking reads of a pipeline one
// after the other, each waiting out its BLOCK. A round that finds nothing
// reads again after ClusterPoll instead, and between two such polls of
// every stream a round reads only the streams the last one found entries
// in (hotStreams): under load, a few streams of many have entries, and
// reading all of them each round cost tens of XREADGROUPs per entry.
func (l *readLoop) read(ctx context.Context, free map[string]int, full bool) {
	r := l.r
	multi, narrowed := false, false
	if r.cluster {
		multi = spansSlots(free)
		free, narrowed = l.hotStreams(free)
		if len(free) == 0 {
			l.readAt = l.sweepAt
			return
		}
	}
	streams := slices.Sorted(maps.Keys(free))
	type group struct{ count, slot int }
	groups := map[group][]string{}
	least := 0
	for _, s := range streams {
		g := group{count: free[s]}
		if r.cluster {
			g.slot = keyslot.Of(s)
		}
		groups[g] = append(groups[g], s)
		if least == 0 || free[s] < least {
			least = free[s]
		}
	}
	block := time.Duration(-1) // no BLOCK
	if !full && (l.idle || len(groups) == 1) && !multi {
		groups = map[group][]string{{count: least}: streams}
		block = r.cfg.ReadBlock
	}
	var cmds []*redis.XStreamSliceCmd
	l.ackErr(ctx, r.withAcks(ctx, func(p redis.Pipeliner) {
		for g, group := range groups {
			args := make([]string, 0, 2*len(group))
			args = append(args, group...)
			for range group {
				args = append(args, ">")
			}
			cmds = append(cmds, p.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: r.cfg.Group, Consumer: r.Consumer(), Streams: args, Count: int64(g.count), Block: block,
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
			if r.cluster && len(s.Messages) > 0 {
				l.hot[s.Stream] = true
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
	case got == 0 && narrowed:
		// The hot streams ran dry: read every stream now.
		l.sweepAt, l.readAt = now, now
	case got == 0 && multi:
		l.readAt = now.Add(r.cfg.ClusterPoll) // a cluster's reads do not block
	case got == 0:
		l.readAt = now // nothing came within the block, or read again blocking
	default:
		l.readAt = now.Add(r.cfg.ReadLinger)
	}
	if got > 0 || !full {
		l.pollWait = 0
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

// hotStreams narrows a cluster read to the streams the last read found
// entries in, until the next poll of every stream (sweepAt, every
// ClusterPoll), and starts the set of this read's hot streams.
func (l *readLoop) hotStreams(free map[string]int) (map[string]int, bool) {
	now := time.Now()
	if now.Before(l.sweepAt) && len(l.hot) > 0 {
		narrow := map[string]int{}
		for s := range l.hot {
			if n, ok := free[s]; ok {
				narrow[s] = n
			}
		}
		if len(narrow) == 0 {
			// The hot streams have no free slot: wait for one (a read once
			// half of them are free) or for the poll of every stream.
			return narrow, true
		}
		if len(narrow) < len(free) {
			l.hot = map[string]bool{}
			return narrow, true
		}
	}
	l.hot = map[string]bool{}
	l.sweepAt = now.Add(l.r.cfg.ClusterPoll)
	return free, false
}

// spansSlots reports whether the streams of free are in more than one
// cluster slot.
func spansSlots(free map[string]int) bool {
	slot := -1
	for s := range free {
		switch k := keyslot.Of(s); {
		case slot < 0:
			slot = k
		case k != slot:
			return true
		}
	}
	return false
}
