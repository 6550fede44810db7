// Package broker builds the Watermill publishers and subscribers that carry
// lane traffic and result events, behind one interface with two drivers:
// "amqp" (RabbitMQ: laneSubscriber, one consumer per lane with a prefetch
// window fanned out in process, and confirmPublisher for publishes, on
// amqpConn, a connection that reconnects to the next node of a list of URLs) and "redisstream" (Redis
// Streams, read by a streamgroup.Reader and written with group-committed XADDs,
// also what the embedded dev mode runs on).
//
// # Contract
//
//   - Lanes are declared with DeclareLanes before anything is published to
//     them. A publish to a lane that does not exist fails with ErrUnroutable
//     on both drivers (RabbitMQ would confirm and drop it; an XADD would make
//     a stream without the consumer group, which nothing reads).
//   - Publisher().Publish returns only after the broker has durably accepted
//     the message (publisher confirm on RabbitMQ, XADD reply on Redis).
//   - Each Subscriber().Subscribe call is one slot that holds at most one
//     unacknowledged message; run N of them on a lane for N-way parallelism.
//     Slots do not cost broker resources: a process is one consumer of each
//     lane it consumes, however many slots it runs (amqp: one channel and
//     one consumer per lane with a window of Config.Prefetch deliveries,
//     each acked on its own as its slot finishes; redisstream: one consumer
//     group member for all lanes, whose reader reads no more entries of a
//     lane than it has idle slots, so none waits pending on a busy process).
//     A nacked message is redelivered, after a pause on Redis.
//   - Deliveries the driver cannot read are never dropped or looped: they come
//     out as messages that taskmsg.Parse rejects, for the dispatcher to
//     quarantine (the redisstream driver sets taskmsg.KeyUndecodable to the
//     reason; the amqp driver's marshaler reads any delivery, whatever its
//     headers).
//   - A deleted lane stays deleted: its consumers do not declare it again;
//     they wait and read it once it is declared again.
//   - Close of a publisher handed out here is a no-op: Watermill's router closes
//     a handler's publisher when the handler stops, and these are shared.
//     Driver.Close closes everything.
package broker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// Driver names.
const (
	DriverAMQP        = "amqp"
	DriverRedisStream = "redisstream"
)

// QuarantineTopic is the lane-side queue (or stream) where undecodable
// messages are moved, with the reason in metadata, under the default broker
// prefix; QuarantineTopicFor names it for any prefix.
const QuarantineTopic = "tasklane.quarantine"

// DefaultPrefix is the default Config.Prefix (config broker.prefix).
const DefaultPrefix = "tasklane"

// QuarantineTopicFor is the quarantine queue (or stream) under broker prefix
// prefix: "<prefix>.quarantine". An empty prefix means DefaultPrefix.
func QuarantineTopicFor(prefix string) string {
	if prefix == "" {
		return QuarantineTopic
	}
	return prefix + ".quarantine"
}

// Driver is one broker connection set.
type Driver interface {
	// Name is DriverAMQP or DriverRedisStream.
	Name() string
	// DeclareLanes makes the lanes (and the quarantine) exist. Idempotent.
	DeclareLanes(ctx context.Context, lanes ...string) error
	// Publisher publishes task messages; the topic is the lane name.
	Publisher() message.Publisher
	// Subscriber consumes lanes; the topic is the lane name.
	Subscriber() message.Subscriber
	// ResultPublisher publishes result events; the topic is the routing key
	// "<tenant>.<function>.<outcome>".
	ResultPublisher() message.Publisher
	// Ping reports whether the broker is reachable now.
	Ping(ctx context.Context) error
	// Depths reports each lane's backlog (messages not yet delivered, plus
	// delivered and unacknowledged ones on redisstream; RabbitMQ reports
	// no unacknowledged count, and they are at most Config.Prefetch per
	// consumer) and its consumers (one per process that consumes the lane,
	// whatever its Subscribe calls: an AMQP consumer, or a consumer group
	// member on redisstream). A lane that does not exist is left out.
	Depths(ctx context.Context, lanes ...string) (map[string]LaneDepth, error)
	// DeleteLane removes a lane if it is empty; it reports whether it did.
	// On amqp a delivered, unacknowledged message does not count (RabbitMQ's
	// if-empty counts ready messages): the ledger's lease brings it back.
	DeleteLane(ctx context.Context, lane string) (bool, error)
	// Trim frees what the lanes no longer need (the redisstream driver
	// deletes entries every dispatcher group acknowledged; RabbitMQ needs
	// nothing) and returns how many entries went.
	Trim(ctx context.Context, lanes ...string) (int64, error)
	// Close stops every publisher and subscriber and closes connections.
	Close() error
}

// Config selects and configures a driver.
type Config struct {
	// Driver is DriverAMQP or DriverRedisStream.
	Driver string
	// AMQPURL is the RabbitMQ URL (amqp driver), or several separated by
	// commas: the nodes of a cluster, dialed round-robin from a random
	// one, the next one whenever a connection is lost or a dial fails.
	AMQPURL string
	// Redis says where the redisstream driver connects. The driver opens its
	// own client (its reader blocks in reads, and Close closes it).
	Redis *redis.Options
	// RedisCluster, when set, replaces Redis: the driver's streams are on
	// this Redis Cluster (each lane is a key of its own slot).
	RedisCluster *redis.ClusterOptions
	// PublishChannels is the number of AMQP channels publishes are spread
	// over; each carries many unconfirmed publishes at once. Default 16.
	PublishChannels int
	// Prefetch is how many unacknowledged deliveries the amqp driver's
	// consumer of a lane may hold (its channel's basic.qos): the
	// deliveries its Subscribe calls are handling, and the next ones,
	// waiting in process for a free slot. Default PrefetchDefault.
	Prefetch int
	// QueueType is "classic" (default) or "quorum" for AMQP lanes.
	QueueType string
	// ConsumerGroup is the Redis consumer group of dispatchers. Default
	// "tasklane-dispatchers".
	ConsumerGroup string
	// Prefix starts the names the driver declares besides the lanes it is
	// given: the quarantine (QuarantineTopicFor) and the results exchange or
	// stream (contracts.ResultsExchangeFor). Default DefaultPrefix.
	Prefix string
	// Logger receives the driver's and Watermill's logs.
	Logger *slog.Logger
}

// New opens the driver cfg names.
func New(cfg Config) (Driver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	// A nil *driver in a Driver is not a nil Driver: return nil itself.
	switch cfg.Driver {
	case DriverAMQP, "":
		d, err := newAMQP(cfg)
		if err != nil {
			return nil, err
		}
		return d, nil
	case DriverRedisStream:
		d, err := newRedisStream(cfg)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("unknown broker driver %q (want %s or %s)", cfg.Driver, DriverAMQP, DriverRedisStream)
}

// LaneDepth is a lane's backlog and consumers.
type LaneDepth struct {
	Backlog   int64 `json:"backlog"`
	Consumers int   `json:"consumers"`
}

// sharedPublisher hides Close from Watermill's router, which closes a
// handler's publisher when the handler stops.
type sharedPublisher struct{ message.Publisher }

func (sharedPublisher) Close() error { return nil }

// WatermillLogger adapts l for Watermill, with Watermill's chatty Info lines
// (every subscribe, every handler start) demoted to Debug.
func WatermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(l, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
}
