package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// ResultsMaxLen bounds the redisstream results stream (approximate trim).
// It is a feed for live consumers, not a store: the ledger keeps records.
const ResultsMaxLen = 100_000

// Redis stream entry fields written and read by streamMarshaler.
const (
	fieldUUID     = "uuid"
	fieldMetadata = "metadata"
	fieldPayload  = "payload"
	// FieldRoutingKey is set on entries of the results stream.
	FieldRoutingKey = "routing_key"
)

// streamPoolSize is the connection pool of the redisstream driver's client:
// every consumer holds a connection in a blocking XREADGROUP.
const streamPoolSize = 512

// ownEntriesAfter is how long a lane entry may stay pending on its own
// live consumer before that consumer takes it again.
const ownEntriesAfter = 30 * time.Second

type redisStreamDriver struct {
	cfg    Config
	rdb    *redis.Client
	live   *Liveness
	pub    *redisstream.Publisher
	resPub *redisstream.Publisher
	lanes  *streamLanes
	// stopReader ends the lane reader's Run; readerDone is closed when it
	// has drained.
	stopReader context.CancelFunc
	readerDone chan struct{}
}

func newRedisStream(cfg Config) (*redisStreamDriver, error) {
	if cfg.Redis == nil {
		return nil, errors.New("redisstream driver needs Redis options")
	}
	if cfg.ConsumerGroup == "" {
		cfg.ConsumerGroup = "tasklane-dispatchers"
	}
	logger := WatermillLogger(cfg.Logger.With("component", "redisstream"))
	opt := ClientOptions(*cfg.Redis, 0)
	opt.PoolSize = max(opt.PoolSize, streamPoolSize)
	rdb := redis.NewClient(opt)
	d := &redisStreamDriver{cfg: cfg, rdb: rdb}
	var err error
	// Lanes are never trimmed by length: trimming deletes unprocessed work.
	if d.pub, err = redisstream.NewPublisher(redisstream.PublisherConfig{
		Client: rdb, Marshaller: streamMarshaler{},
	}, logger); err != nil {
		return nil, fmt.Errorf("creating lane publisher: %w", err)
	}
	if d.resPub, err = redisstream.NewPublisher(redisstream.PublisherConfig{
		Client: rdb, Marshaller: streamMarshaler{},
		Maxlens: map[string]int64{contracts.ResultsExchange: ResultsMaxLen},
	}, logger); err != nil {
		return nil, fmt.Errorf("creating result publisher: %w", err)
	}
	// A lane entry is pending on this consumer only until its claim in the
	// ledger (a running task is held by its lease, not its entry), so an
	// own entry idle for 30s was never seen; taking one that was (a long
	// task) again is harmless: the claim finds it busy and drops it.
	d.live = NewLiveness(rdb, cfg.ConsumerGroup, ConsumerName(), ownEntriesAfter)
	d.lanes = newStreamLanes()
	// Dispatchers share one group per lane, so each task goes to one. A
	// nacked entry is offered again after a second, so that an outage of
	// the ledger does not become a hot loop. No read linger: a task's
	// start waits for nothing, and reads batch what arrived during the
	// previous one.
	if d.lanes.reader, err = NewStreamReader(StreamReaderConfig{
		Client: rdb, Group: cfg.ConsumerGroup, Live: d.live, Handle: d.lanes.handle,
		What: "lanes", Logger: cfg.Logger.With("component", "redisstream"), RetryWait: time.Second,
	}); err != nil {
		d.live.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopReader, d.readerDone = cancel, make(chan struct{})
	go func() {
		defer close(d.readerDone)
		d.lanes.reader.Run(ctx)
	}()
	return d, nil
}

func (d *redisStreamDriver) Name() string { return DriverRedisStream }

// DeclareLanes creates each lane stream and the dispatchers' consumer group
// on it, so entries published before any dispatcher runs are kept for it.
func (d *redisStreamDriver) DeclareLanes(ctx context.Context, lanes ...string) error {
	for _, lane := range append(lanes, QuarantineTopic) {
		if err := EnsureGroup(ctx, d.rdb, lane, d.cfg.ConsumerGroup); err != nil {
			return fmt.Errorf("declaring lane %s: %w", lane, err)
		}
	}
	return nil
}

func (d *redisStreamDriver) Publisher() message.Publisher   { return sharedPublisher{d.pub} }
func (d *redisStreamDriver) Subscriber() message.Subscriber { return d.lanes }

func (d *redisStreamDriver) ResultPublisher() message.Publisher {
	return resultStreamPublisher{d.resPub}
}

func (d *redisStreamDriver) Ping(ctx context.Context) error {
	return d.rdb.Ping(ctx).Err()
}

// Depths reads the dispatchers group of each lane: entries not yet read
// (lag) plus entries read and not acknowledged (pending).
func (d *redisStreamDriver) Depths(ctx context.Context, lanes ...string) (map[string]LaneDepth, error) {
	out := make(map[string]LaneDepth, len(lanes))
	for _, lane := range lanes {
		groups, err := d.rdb.XInfoGroups(ctx, lane).Result()
		if err != nil {
			continue
		}
		for _, g := range groups {
			if g.Name == d.cfg.ConsumerGroup {
				out[lane] = LaneDepth{Backlog: g.Lag + g.Pending, Consumers: int(g.Consumers)}
			}
		}
	}
	return out, nil
}

// DeleteLane deletes lane's stream if the group has nothing left in it.
func (d *redisStreamDriver) DeleteLane(ctx context.Context, lane string) (bool, error) {
	depths, err := d.Depths(ctx, lane)
	if err != nil {
		return false, err
	}
	if depths[lane].Backlog > 0 {
		return false, nil
	}
	if err := d.rdb.Del(ctx, lane).Err(); err != nil {
		return false, fmt.Errorf("deleting lane %s: %w", lane, err)
	}
	return true, nil
}

// Trim deletes lane entries every group has acknowledged (and quarantine
// entries older than the quarantine's own consumers read, if any).
func (d *redisStreamDriver) Trim(ctx context.Context, lanes ...string) (int64, error) {
	var total int64
	for _, lane := range lanes {
		n, err := TrimAcked(ctx, d.rdb, lane)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// Close ends the lane consumers, drains the lane reader (acknowledging
// what the router acked), stops the heartbeat and closes the client.
func (d *redisStreamDriver) Close() error {
	_ = d.lanes.Close()
	d.stopReader()
	<-d.readerDone
	d.live.Close()
	return d.rdb.Close()
}

// resultStreamPublisher puts every result on the one results stream, with the
// routing key in the entry.
type resultStreamPublisher struct{ pub *redisstream.Publisher }

func (p resultStreamPublisher) Publish(routingKey string, msgs ...*message.Message) error {
	for _, m := range msgs {
		m.Metadata.Set(FieldRoutingKey, routingKey)
	}
	return p.pub.Publish(contracts.ResultsExchange, msgs...)
}

func (resultStreamPublisher) Close() error { return nil }

// streamMarshaler stores metadata as JSON (readable with redis-cli) and never
// fails to unmarshal: an entry it cannot read becomes a message flagged
// undecodable, which the dispatcher quarantines. watermill-redisstream's
// default unmarshaller returns an error instead, which stops the consumer.
type streamMarshaler struct{}

func (streamMarshaler) Marshal(_ string, msg *message.Message) (map[string]any, error) {
	md, err := json.Marshal(msg.Metadata)
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	return map[string]any{fieldUUID: msg.UUID, fieldMetadata: md, fieldPayload: []byte(msg.Payload)}, nil
}

func (streamMarshaler) Unmarshal(values map[string]any) (*message.Message, error) {
	uuid, _ := values[fieldUUID].(string)
	payload, _ := values[fieldPayload].(string)
	if uuid == "" {
		msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
		msg.Metadata.Set(taskmsg.KeyUndecodable, "stream entry has no uuid field")
		return msg, nil
	}
	msg := message.NewMessage(uuid, []byte(payload))
	if md, _ := values[fieldMetadata].(string); md != "" {
		if err := json.Unmarshal([]byte(md), &msg.Metadata); err != nil {
			msg.Metadata = message.Metadata{taskmsg.KeyUndecodable: "metadata is not a JSON object: " + err.Error()}
		}
	}
	return msg, nil
}
