package streamgroup

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures a Reader.
type Config struct {
	// Client reads and acknowledges. A read blocks for up to ReadBlock in
	// a pipeline, which waits for the client's ReadTimeout: it must be
	// longer (NewReader checks). A *redis.ClusterClient reads each slot's
	// streams with a command of their own (see read).
	Client redis.UniversalClient
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
	// ClusterPoll is the pause between reads that found nothing on a Redis
	// Cluster when the streams are in several slots: there a read does not
	// block (one XREADGROUP cannot name streams of two slots, and blocking
	// reads of several slots would wait for each other on a node). Default
	// 50ms.
	ClusterPoll time.Duration
	// CloseTimeout bounds the drain of held entries when Run's context
	// ends; after it their handling context is cancelled. Default 30s.
	CloseTimeout time.Duration
}

const (
	defaultReadBlock   = 500 * time.Millisecond
	defaultClusterPoll = 50 * time.Millisecond
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

// NewReader builds a reader; Run starts it. Its streams' groups must
// exist (EnsureGroup); a read that finds one missing creates it again.
func NewReader(cfg Config) (*Reader, error) {
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
	if cfg.ClusterPoll <= 0 {
		cfg.ClusterPoll = defaultClusterPoll
	}
	var rt time.Duration
	_, cluster := cfg.Client.(*redis.ClusterClient)
	switch c := cfg.Client.(type) {
	case *redis.Client:
		rt = c.Options().ReadTimeout
	case *redis.ClusterClient:
		rt = c.Options().ReadTimeout
	}
	if rt > 0 && rt < cfg.ReadBlock+time.Second {
		return nil, errors.New("stream reader: the client's ReadTimeout must exceed ReadBlock by a second")
	}
	return &Reader{cfg: cfg, cluster: cluster, acks: newAckQueue(), kick: make(chan struct{}, 1), slots: map[string]int{}}, nil
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

// ClientOptions adapts Redis options for a Reader's client: a read
// shares a pipeline with an XACK, and pipelines wait for replies for
// ReadTimeout, not for the read's BLOCK (the default ReadBlock).
func ClientOptions(opt redis.Options) *redis.Options {
	opt.ReadTimeout = readTimeout(opt.ReadTimeout)
	return &opt
}

// NewClient is a Reader's client with at least minPool connections: on
// the Redis Cluster of cluster when it is not nil, else on the Redis of
// opt (both adapted as ClientOptions says).
func NewClient(opt *redis.Options, cluster *redis.ClusterOptions, minPool int) redis.UniversalClient {
	if cluster != nil {
		co := *cluster
		co.ReadTimeout = readTimeout(co.ReadTimeout)
		co.PoolSize = max(co.PoolSize, minPool)
		return redis.NewClusterClient(&co)
	}
	o := ClientOptions(*opt)
	o.PoolSize = max(o.PoolSize, minPool)
	return redis.NewClient(o)
}

func readTimeout(rt time.Duration) time.Duration {
	if rt > 0 && rt < defaultReadBlock+time.Second {
		return defaultReadBlock + time.Second
	}
	return rt
}
