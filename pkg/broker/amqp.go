package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tasklane/tasklane/contracts"
)

// laneMaxPriority is x-max-priority on classic lanes. Task priorities are 0-9.
const laneMaxPriority = contracts.MaxPriority

type amqpDriver struct {
	cfg      Config
	pubConn  *amqpConn
	subConn  *amqpConn
	pub      *confirmPublisher
	resPub   *confirmPublisher
	resBatch *confirmBatcher
	sub      *laneSubscriber
	closeOne sync.Once
}

func newAMQP(cfg Config) (*amqpDriver, error) {
	if cfg.AMQPURL == "" {
		return nil, errors.New("amqp driver needs a broker URL")
	}
	urls := splitURLs(cfg.AMQPURL)
	for i, u := range urls {
		if _, err := amqp.ParseURI(u); err != nil {
			return nil, fmt.Errorf("broker URL %d of %d (%s): %w", i+1, len(urls), redactURL(u), err)
		}
	}
	if cfg.PublishChannels <= 0 {
		cfg.PublishChannels = 16
	}
	logger := cfg.Logger.With("component", "amqp")
	d := &amqpDriver{cfg: cfg}

	var err error
	// Publishing and consuming use separate connections: RabbitMQ's flow
	// control blocks a publishing connection, and that must not stall acks.
	// Each connection starts at a random URL of the list (processes spread
	// over a cluster's nodes) and moves to the next one when its node goes
	// away.
	if d.pubConn, err = newAMQPConn(urls, rand.IntN(len(urls)), "tasklane publish", logger); err != nil {
		return nil, err
	}
	if d.subConn, err = newAMQPConn(urls, rand.IntN(len(urls)), "tasklane consume", logger); err != nil {
		_ = d.pubConn.Close()
		return nil, err
	}
	// Lanes are on the default exchange, the routing key is the lane.
	d.pub = newConfirmPublisher(d.pubConn, cfg.PublishChannels, "", func(topic string) string { return topic }, true)
	d.sub = newLaneSubscriber(d.subConn, d.laneArgs(), cfg.Prefetch, cfg.Logger)
	// Results go to the topic exchange declared with the lanes; the topic
	// is the routing key.
	// Not mandatory: a results exchange nobody has bound a queue to is fine.
	d.resPub = newConfirmPublisher(d.pubConn, 8, contracts.ResultsExchangeFor(cfg.Prefix), func(topic string) string { return topic }, false)
	// Result events go out in confirm batches (the notifier publishes each
	// entry of a read at once).
	d.resBatch = newConfirmBatcher(d.resPub)
	return d, nil
}

func (d *amqpDriver) laneArgs() amqp.Table {
	if d.cfg.QueueType == "quorum" {
		return amqp.Table{"x-queue-type": "quorum"}
	}
	return amqp.Table{"x-max-priority": int32(laneMaxPriority)}
}

func (d *amqpDriver) Name() string { return DriverAMQP }

func (d *amqpDriver) DeclareLanes(ctx context.Context, lanes ...string) error {
	if !d.pubConn.IsConnected() {
		return errors.New("declaring lanes: not connected to RabbitMQ")
	}
	ch, err := d.pubConn.Connection().Channel()
	if err != nil {
		return fmt.Errorf("opening channel to declare lanes: %w", err)
	}
	defer ch.Close()
	for _, lane := range lanes {
		if _, err := ch.QueueDeclare(lane, true, false, false, false, d.laneArgs()); err != nil {
			return fmt.Errorf("declaring lane %s: %w", lane, err)
		}
	}
	quarantine := QuarantineTopicFor(d.cfg.Prefix)
	if _, err := ch.QueueDeclare(quarantine, true, false, false, false, d.laneArgs()); err != nil {
		return fmt.Errorf("declaring %s: %w", quarantine, err)
	}
	results := contracts.ResultsExchangeFor(d.cfg.Prefix)
	if err := ch.ExchangeDeclare(results, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring exchange %s: %w", results, err)
	}
	return ctx.Err()
}

func (d *amqpDriver) Publisher() message.Publisher       { return sharedPublisher{d.pub} }
func (d *amqpDriver) Subscriber() message.Subscriber     { return d.sub }
func (d *amqpDriver) ResultPublisher() message.Publisher { return sharedPublisher{d.resBatch} }

func (d *amqpDriver) Ping(context.Context) error {
	if !d.pubConn.IsConnected() || !d.subConn.IsConnected() {
		return errors.New("not connected to RabbitMQ")
	}
	return nil
}

// Depths asks RabbitMQ for each lane's ready messages and consumers (a
// passive declare per lane on one channel). Unacknowledged deliveries are
// not counted: they are at most Config.Prefetch per consumer, and a
// dispatcher process is one consumer of each lane it consumes.
func (d *amqpDriver) Depths(_ context.Context, lanes ...string) (map[string]LaneDepth, error) {
	if !d.pubConn.IsConnected() {
		return nil, errors.New("reading lane depths: not connected to RabbitMQ")
	}
	out := make(map[string]LaneDepth, len(lanes))
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for _, lane := range lanes {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = d.pubConn.Connection().Channel(); err != nil {
				return out, fmt.Errorf("opening channel to read depths: %w", err)
			}
		}
		q, err := ch.QueueDeclarePassive(lane, true, false, false, false, d.laneArgs())
		if err != nil {
			continue // a missing lane closes the channel; the next opens another
		}
		out[lane] = LaneDepth{Backlog: int64(q.Messages), Consumers: q.Consumers}
	}
	return out, nil
}

// DeleteLane deletes lane if it holds no message.
func (d *amqpDriver) DeleteLane(_ context.Context, lane string) (bool, error) {
	if !d.pubConn.IsConnected() {
		return false, errors.New("deleting lane: not connected to RabbitMQ")
	}
	ch, err := d.pubConn.Connection().Channel()
	if err != nil {
		return false, fmt.Errorf("opening channel to delete lane: %w", err)
	}
	defer ch.Close()
	if _, err := ch.QueueDelete(lane, false, true, false); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return false, nil // not empty
		}
		return false, fmt.Errorf("deleting lane %s: %w", lane, err)
	}
	return true, nil
}

// Trim has nothing to do: RabbitMQ deletes a message when it is acked.
func (d *amqpDriver) Trim(context.Context, ...string) (int64, error) { return 0, nil }

// Close closes what newAMQP opened; a nil driver has nothing to close.
func (d *amqpDriver) Close() error {
	if d == nil {
		return nil
	}
	var errs []error
	d.closeOne.Do(func() {
		if d.sub != nil {
			errs = append(errs, d.sub.Close())
		}
		for _, p := range []*confirmPublisher{d.pub, d.resPub} {
			if p != nil {
				errs = append(errs, p.Close())
			}
		}
		for _, c := range []*amqpConn{d.subConn, d.pubConn} {
			if c != nil {
				errs = append(errs, c.Close())
			}
		}
	})
	return errors.Join(errs...)
}
