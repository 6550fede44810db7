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
	"github.com/tasklane/tasklane/pkg/groupcommit"
	"github.com/tasklane/tasklane/pkg/streamgroup"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// ResultsMaxLen bounds the redisstream results stream (approximate trim).
// It is a feed for live consumers, not a store: the ledger keeps records.
const ResultsMaxLen = 100_000

// Redis stream entry fields written and read by streamMarshaler (the
// results stream has watermill-redisstream's: see marshalResult).
const (
	fieldUUID     = "uuid"
	fieldMetadata = "metadata"
	fieldPayload  = "payload"
	// FieldRoutingKey is set on entries of the results stream, as a field
	// and in the metadata.
	FieldRoutingKey = "routing_key"
)

// streamPoolSize is the connection pool of the redisstream driver's client:
// the reader's blocking read, its ack flusher and claim rounds, and the
// publisher's pipelines in flight.
const streamPoolSize = 32

// ownEntriesAfter is how long a lane entry may stay pending on its own
// live consumer before that consumer takes it again.
const ownEntriesAfter = 30 * time.Second

type redisStreamDriver struct {
	cfg   Config
	rdb   redis.UniversalClient
	live  *streamgroup.Liveness
	pub   *streamPublisher
	lanes *streamLanes
	// stopReader ends the lane reader's Run; readerDone is closed when it
	// has drained.
	stopReader context.CancelFunc
	readerDone chan struct{}
}

func newRedisStream(cfg Config) (*redisStreamDriver, error) {
	if cfg.Redis == nil && cfg.RedisCluster == nil {
		return nil, errors.New("redisstream driver needs Redis options")
	}
	if cfg.ConsumerGroup == "" {
		cfg.ConsumerGroup = "tasklane-dispatchers"
	}
	rdb := streamgroup.NewClient(cfg.Redis, cfg.RedisCluster, streamPoolSize)
	d := &redisStreamDriver{cfg: cfg, rdb: rdb}
	// Lanes are never trimmed by length: trimming deletes unprocessed work.
	d.pub = newStreamPublisher(rdb, map[string]int64{contracts.ResultsExchangeFor(cfg.Prefix): ResultsMaxLen})
	// A lane entry is pending on this consumer only until its claim in the
	// ledger (a running task is held by its lease, not its entry), so an
	// own entry idle for 30s was never seen; taking one that was (a long
	// task) again is harmless: the claim finds it busy and drops it.
	d.live = streamgroup.NewLiveness(rdb, cfg.ConsumerGroup, streamgroup.ConsumerName(), ownEntriesAfter)
	d.lanes = newStreamLanes()
	// Dispatchers share one group per lane, so each task goes to one. A
	// nacked entry is offered again after a second, so that an outage of
	// the ledger does not become a hot loop. No read linger: a task's
	// start waits for nothing, and reads batch what arrived during the
	// previous one.
	var err error
	if d.lanes.reader, err = streamgroup.NewReader(streamgroup.Config{
		Client: rdb, Group: cfg.ConsumerGroup, Live: d.live, Handle: d.lanes.handle,
		What: "lanes", Logger: cfg.Logger.With("component", "redisstream"), RetryWait: time.Second,
	}); err != nil {
		d.live.Close()
		_ = rdb.Close()
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
	for _, lane := range append(lanes, QuarantineTopicFor(d.cfg.Prefix)) {
		if err := streamgroup.EnsureGroup(ctx, d.rdb, lane, d.cfg.ConsumerGroup); err != nil {
			return fmt.Errorf("declaring lane %s: %w", lane, err)
		}
	}
	return nil
}

func (d *redisStreamDriver) Publisher() message.Publisher   { return sharedPublisher{d.pub} }
func (d *redisStreamDriver) Subscriber() message.Subscriber { return d.lanes }

func (d *redisStreamDriver) ResultPublisher() message.Publisher {
	return resultStreamPublisher{pub: d.pub, stream: contracts.ResultsExchangeFor(d.cfg.Prefix)}
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

// resultStreamPublisher puts every result on the one results stream, in
// watermill-redisstream's format (see marshalResult), with the routing key
// in the message metadata and as an entry field of its own.
type resultStreamPublisher struct {
	pub    *streamPublisher
	stream string
}

func (p resultStreamPublisher) Publish(routingKey string, msgs ...*message.Message) error {
	for _, m := range msgs {
		m.Metadata.Set(FieldRoutingKey, routingKey)
	}
	return p.pub.publish(p.stream, marshalResult, msgs...)
}

func (resultStreamPublisher) Close() error { return nil }

// marshalResult writes a result message as watermill-redisstream's
// DefaultMarshallerUnmarshaller does (fields _watermill_message_uuid,
// metadata as msgpack, payload), so that its stock Subscriber reads the
// results stream with the default unmarshaller: the result CloudEvent's
// attributes in the metadata (ce_*), its data as the payload. The routing
// key is also an entry field, for readers that XREAD the stream without
// decoding msgpack.
//
// Lane entries keep streamMarshaler's format: only Tasklane reads them,
// entries pending at an upgrade stay readable without a second format in
// the lane reader, and JSON metadata is readable with redis-cli.
func marshalResult(msg *message.Message) (map[string]any, error) {
	values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal("", msg) // the topic is unused
	if err != nil {
		return nil, err
	}
	if rk := msg.Metadata.Get(FieldRoutingKey); rk != "" {
		values[FieldRoutingKey] = rk
	}
	return values, nil
}

// ResultUnmarshaller reads results-stream entries of this release (written
// in watermill-redisstream's format) and of earlier ones (fields uuid,
// JSON metadata and payload), for readers that may meet entries written
// before an upgrade. It is a redisstream.Unmarshaller, so a Watermill
// subscriber can use it in place of the default during an upgrade.
type ResultUnmarshaller struct{}

// Unmarshal returns an error for an entry in neither format.
func (ResultUnmarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	if _, ok := values[redisstream.UUIDHeaderKey]; ok {
		return redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	}
	if _, ok := values[fieldUUID]; !ok {
		return nil, fmt.Errorf("results entry has neither a %s nor a %s field", redisstream.UUIDHeaderKey, fieldUUID)
	}
	msg, _ := streamMarshaler{}.Unmarshal(values)
	if why := msg.Metadata.Get(taskmsg.KeyUndecodable); why != "" {
		return nil, fmt.Errorf("reading a results entry of an earlier release: %s", why)
	}
	return msg, nil
}

// streamMarshaler is the lane entries' format (and the results stream's
// before it took watermill-redisstream's). It stores metadata as JSON
// (readable with redis-cli) and never
// fails to unmarshal: an entry it cannot read becomes a message flagged
// undecodable, which the dispatcher quarantines (an unmarshal error would
// leave the entry pending forever).
type streamMarshaler struct{}

func (streamMarshaler) Marshal(msg *message.Message) (map[string]any, error) {
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

// streamPublisher appends messages to Redis streams (XADD, with the
// entry ID chosen by Redis). Concurrent publishes share pipelines
// (groupcommit): under load a lane or result publish costs a fraction of a
// round trip, where watermill-redisstream's publisher sent one XADD per
// round trip. A pipeline whose reply was lost may be sent again by
// go-redis, so an entry can be appended twice: lane entries are
// deduplicated by the dispatcher's claim, result events by their id.
type streamPublisher struct {
	rdb     redis.UniversalClient
	maxLens map[string]int64
	q       *groupcommit.Batcher[*xadd]
}

type xadd struct {
	args *redis.XAddArgs
	size int
	cmd  *redis.StringCmd
}

// newStreamPublisher trims the streams in maxLens to about that length.
func newStreamPublisher(rdb redis.UniversalClient, maxLens map[string]int64) *streamPublisher {
	p := &streamPublisher{rdb: rdb, maxLens: maxLens}
	p.q = groupcommit.New(groupcommit.Limits{}, func(c *xadd) int { return c.size }, p.send)
	return p
}

func (p *streamPublisher) send(calls []*xadd) {
	// The callers' contexts may end while the pipeline is on the wire; it
	// runs under the client's timeouts instead.
	ctx := context.Background()
	_, _ = p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = pipe.XAdd(ctx, c.args)
		}
		return nil
	})
}

// Publish returns once Redis has appended every message, or the first
// error. The first message's context bounds the wait. Entries are in
// streamMarshaler's format.
func (p *streamPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.publish(topic, streamMarshaler{}.Marshal, msgs...)
}

// publish is Publish with the entries' fields made by marshal.
func (p *streamPublisher) publish(topic string, marshal func(*message.Message) (map[string]any, error), msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	maxLen, trimmed := p.maxLens[topic]
	calls := make([]*xadd, len(msgs))
	for i, m := range msgs {
		if err := checkStreamSize(m); err != nil {
			return fmt.Errorf("publishing message %s to %s: %w", m.UUID, topic, err)
		}
		values, err := marshal(m)
		if err != nil {
			return fmt.Errorf("publishing message %s to %s: %w", m.UUID, topic, err)
		}
		md, _ := values[fieldMetadata].([]byte)
		calls[i] = &xadd{
			// A lane (no maxLen entry) is never made by a publish: a stream
			// made by XADD has no consumer group, so nothing would read it.
			args: &redis.XAddArgs{Stream: topic, Values: values, MaxLen: maxLen, Approx: true, NoMkStream: !trimmed},
			size: len(m.Payload) + len(md),
		}
	}
	if err := p.q.Do(msgs[0].Context(), calls...); err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	for i, c := range calls {
		if err := c.cmd.Err(); errors.Is(err, redis.Nil) {
			// NOMKSTREAM on a stream that does not exist: a deleted lane.
			return fmt.Errorf("%w: %s to %s: no such lane", ErrUnroutable, msgs[i].UUID, topic)
		} else if err != nil {
			return fmt.Errorf("publishing message %s to %s: %w", msgs[i].UUID, topic, err)
		}
	}
	return nil
}

// CheckSize returns a *TooLargeError for a message whose metadata exceeds
// StreamMaxMetadataBytes.
func (p *streamPublisher) CheckSize(msg *message.Message) error { return checkStreamSize(msg) }

func (p *streamPublisher) Close() error { return nil }
