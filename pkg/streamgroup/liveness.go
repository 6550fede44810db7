package streamgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// Consumer liveness for Redis-stream consumer groups. Every consumer
// heartbeats its name into a hash beside its group; a pending entry is
// claimed from another consumer only when that consumer's heartbeat is
// older than ConsumerDeadAfter (or it has none). A dead process's entries
// are thus taken over within seconds, while a live one's long-running
// entries are never stolen, however long they take. (watermill-redisstream's
// own rule, "idle for MaxIdleTime", can only trade one for the other.)
const (
	// HeartbeatEvery is how often a consumer says it is alive.
	HeartbeatEvery = time.Second
	// ConsumerDeadAfter is how stale a heartbeat must be to take over.
	ConsumerDeadAfter = 5 * time.Second
	// ClaimEvery is how often subscribers look for entries to take over.
	ClaimEvery = 2 * time.Second
	// heartbeatForget drops heartbeats of consumers gone this long.
	heartbeatForget = time.Hour
)

// ConsumerName is a consumer name unique to this process and call.
func ConsumerName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), watermill.NewShortUUID())
}

// Liveness heartbeats one consumer of a group and judges the others.
type Liveness struct {
	rdb      redis.UniversalClient
	key      string
	consumer string
	ownAfter time.Duration
	cancel   context.CancelFunc
	done     chan struct{}
}

// NewLiveness starts heartbeating consumer of group. ownAfter is how long
// one of the consumer's own entries may stay pending before it takes it
// again: Redis can record an entry as delivered while the reply is lost (a
// crash or a cut connection between serving XREADGROUP and answering), and
// such an entry is pending on a live consumer that never saw it. Pick
// ownAfter longer than handling an entry normally takes; if it is not, the
// entry is handled twice, which the caller must tolerate (the dispatcher's
// claim drops the second delivery; the notifier sends at least once).
func NewLiveness(rdb redis.UniversalClient, group, consumer string, ownAfter time.Duration) *Liveness {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Liveness{rdb: rdb, key: group + ":heartbeats", consumer: consumer, ownAfter: ownAfter, cancel: cancel, done: make(chan struct{})}
	l.beat(ctx)
	go l.run(ctx)
	return l
}

// Consumer is the heartbeating consumer's name.
func (l *Liveness) Consumer() string { return l.consumer }

func (l *Liveness) beat(ctx context.Context) {
	_ = l.rdb.HSet(ctx, l.key, l.consumer, time.Now().UnixMilli()).Err()
}

func (l *Liveness) run(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			// A clean stop says so at once: its pending entries (none after
			// a drain) need not wait for the heartbeat to go stale.
			_ = l.rdb.HDel(context.Background(), l.key, l.consumer).Err()
			return
		case <-t.C:
		}
		l.beat(ctx)
		if n%600 == 0 {
			l.forgetOld(ctx)
		}
	}
}

func (l *Liveness) forgetOld(ctx context.Context) {
	all, err := l.rdb.HGetAll(ctx, l.key).Result()
	if err != nil {
		return
	}
	for name, v := range all {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && time.Since(time.UnixMilli(ms)) > heartbeatForget {
			l.rdb.HDel(ctx, l.key, name)
		}
	}
}

// ShouldClaim decides whether a pending entry may be taken over: from
// another consumer whose heartbeat stopped (or that never had one), or one
// of this consumer's own that has been pending longer than ownAfter.
func (l *Liveness) ShouldClaim(xp redis.XPendingExt) bool {
	if xp.Consumer == l.consumer {
		return xp.Idle > l.ownAfter
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ms, err := l.rdb.HGet(ctx, l.key, xp.Consumer).Int64()
	if errors.Is(err, redis.Nil) {
		return true
	}
	if err != nil {
		return false // cannot tell; try again next round
	}
	return time.Since(time.UnixMilli(ms)) > ConsumerDeadAfter
}

// Close stops the heartbeat and removes it.
func (l *Liveness) Close() {
	l.cancel()
	<-l.done
}
