package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// laneWaitEvery is how often a consumer of a deleted lane checks whether
// the lane was declared again.
const laneWaitEvery = time.Second

// reconnectPause is how long a lane consumer whose channel failed waits
// before it opens another (the connection may be reconnecting).
const reconnectPause = 100 * time.Millisecond

// PrefetchDefault is the default Config.Prefetch.
const PrefetchDefault = 256

// laneSubscriber is the amqp driver's lane subscriber. It consumes each
// lane with one AMQP consumer per process, on a channel of its own with a
// prefetch window (Config.Prefetch unacknowledged deliveries), and fans the
// deliveries out in process: each Subscribe call is one slot that hands
// the router one message at a time, and the next once that one is acked
// or nacked. N Subscribe calls on a lane are N messages handled at once,
// over one channel and one consumer; each delivery is acked (or nacked
// and requeued) on its own, by delivery tag, in whatever order the
// handlers finish.
//
// Subscribe declares the lane; re-opening a consumer's channel (after a
// reconnect) only checks that the lane exists. RabbitMQ cancels the
// consumers of a deleted queue: the lane's consumer then waits, without
// consuming, until the lane is declared again (a tenant split off again),
// as the redisstream driver's consumers do, so it never re-creates a lane
// the controller deleted. The lane's consumer stops when its last
// Subscribe call's context ends; its channel closes and RabbitMQ offers
// what it prefetched to other consumers.
type laneSubscriber struct {
	conn     *amqpConn
	args     amqp.Table
	prefetch int
	logger   *slog.Logger

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu    sync.Mutex
	lanes map[string]*laneConsumer

	// channels and consumers count the open consumer channels and the
	// AMQP consumers (basic.consume) of the lanes.
	channels  atomic.Int64
	consumers atomic.Int64
}

// laneConsumer is a lane's AMQP consumer, shared by the lane's slots.
type laneConsumer struct {
	lane string
	// work carries deliveries from the consumer to an idle slot.
	work chan laneDelivery
	// slots counts the Subscribe calls on the lane; stop ends the
	// consumer when the last leaves.
	slots int
	stop  context.CancelFunc
	// left is closed when the last slot has left (every delivery a slot
	// took is settled).
	left chan struct{}
}

// laneDelivery is a delivery and the message made of it.
type laneDelivery struct {
	msg *message.Message
	d   amqp.Delivery
}

func newLaneSubscriber(conn *amqpConn, args amqp.Table, prefetch int, logger *slog.Logger) *laneSubscriber {
	if prefetch <= 0 {
		prefetch = PrefetchDefault
	}
	return &laneSubscriber{
		conn: conn, args: args, prefetch: prefetch, logger: logger.With("component", "amqp"),
		closing: make(chan struct{}), lanes: map[string]*laneConsumer{},
	}
}

func isNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// Subscribe declares lane and adds a slot of its consumer (starting the
// consumer if it is the lane's first). Its channel closes when ctx ends
// or the subscriber closes.
func (s *laneSubscriber) Subscribe(ctx context.Context, lane string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.isClosing() {
		s.mu.Unlock()
		return nil, fmt.Errorf("subscribing to lane %s: subscriber closed", lane)
	}
	s.wg.Add(1) // under mu, so that Close waits for it
	s.mu.Unlock()
	if err := s.declare(lane); err != nil {
		s.wg.Done()
		return nil, err
	}
	s.mu.Lock()
	lc := s.lanes[lane]
	if lc == nil {
		cctx, stop := context.WithCancel(context.Background())
		lc = &laneConsumer{lane: lane, work: make(chan laneDelivery), stop: stop, left: make(chan struct{})}
		s.lanes[lane] = lc
		s.wg.Add(1)
		go s.run(cctx, lc)
	}
	lc.slots++
	s.mu.Unlock()
	out := make(chan *message.Message)
	go s.serve(ctx, lc, out)
	return out, nil
}

func (s *laneSubscriber) declare(lane string) error {
	if !s.conn.IsConnected() {
		return fmt.Errorf("subscribing to lane %s: not connected to RabbitMQ", lane)
	}
	ch, err := s.conn.Connection().Channel()
	if err != nil {
		return fmt.Errorf("opening channel to declare lane %s: %w", lane, err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(lane, true, false, false, false, s.args); err != nil {
		return fmt.Errorf("declaring lane %s: %w", lane, err)
	}
	return nil
}

// serve is one slot: it hands the lane's deliveries to out, one at a time,
// and acks or nacks each as the router says, until ctx ends or the
// subscriber closes.
func (s *laneSubscriber) serve(ctx context.Context, lc *laneConsumer, out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	defer s.leave(lc)
	for {
		// Stopping wins over an offered delivery: select picks at random
		// among ready cases, and a stopped handler must not take another.
		if s.stopping(ctx) {
			return
		}
		var ld laneDelivery
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case ld = <-lc.work:
		}
		if s.stopping(ctx) {
			s.settle(ld, false)
			return
		}
		ld.msg.SetContext(ctx)
		select {
		case out <- ld.msg:
		case <-ctx.Done():
			s.settle(ld, false) // not taken: the broker offers it again
			return
		case <-s.closing:
			s.settle(ld, false)
			return
		}
		// A stopping router still finishes what it took: only Close stops
		// the wait.
		select {
		case <-ld.msg.Acked():
			s.settle(ld, true)
		case <-ld.msg.Nacked():
			s.settle(ld, false)
		case <-s.closing:
			// An ack that came with Close still counts.
			select {
			case <-ld.msg.Acked():
				s.settle(ld, true)
			default:
				s.settle(ld, false)
			}
			return
		}
	}
}

// settle acks ld's delivery, or nacks it back into the lane. It fails only
// when the delivery's channel is closed, and RabbitMQ has then requeued it.
func (s *laneSubscriber) settle(ld laneDelivery, ack bool) {
	var err error
	if ack {
		err = ld.d.Ack(false)
	} else {
		err = ld.d.Nack(false, true)
	}
	if err != nil {
		s.logger.Debug("settling a lane delivery on a closed channel; RabbitMQ requeued it",
			"message_uuid", ld.msg.UUID, "ack", ack, "error", err)
	}
}

// leave removes a slot; the lane's last stops its consumer.
func (s *laneSubscriber) leave(lc *laneConsumer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lc.slots--; lc.slots == 0 {
		close(lc.left)
		lc.stop()
		if s.lanes[lc.lane] == lc {
			delete(s.lanes, lc.lane)
		}
	}
}

// consumeEnd says why consume returned.
type consumeEnd int

const (
	// endStopped: the consumer's context ended or the subscriber closed.
	endStopped consumeEnd = iota
	// endGone: the lane does not exist (or RabbitMQ cancelled the consumer).
	endGone
	// endFailed: the channel closed or could not be opened.
	endFailed
)

// run is a lane's consumer: it consumes the lane until ctx ends or the
// subscriber closes, opening a channel again after a failure and waiting
// for a deleted lane to be declared again.
func (s *laneSubscriber) run(ctx context.Context, lc *laneConsumer) {
	defer s.wg.Done()
	for {
		end, err := s.consume(ctx, lc)
		switch end {
		case endStopped:
			return
		case endGone:
			s.logger.Info("lane deleted; its consumer waits for it to be declared again", "lane", lc.lane)
			if !s.waitForLane(ctx, lc.lane) {
				return
			}
			s.logger.Info("consuming a lane declared again", "lane", lc.lane)
		case endFailed:
			s.logger.Debug("lane consumer's channel failed; opening another", "lane", lc.lane, "error", err)
			if !s.pause(ctx) {
				return
			}
		}
	}
}

// pause waits reconnectPause, then for the connection; false if ctx ended
// or the subscriber closed first.
func (s *laneSubscriber) pause(ctx context.Context) bool {
	t := time.NewTimer(reconnectPause)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	case <-t.C:
	}
	select {
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	case <-s.conn.Connected():
		return true
	}
}

// consume opens a channel with the prefetch window, consumes the lane on
// it and hands each delivery to an idle slot, until the channel or the
// consumer ends. Stopped, it closes the channel only once every slot has
// left, so that what the slots took is acked or nacked on it first.
func (s *laneSubscriber) consume(ctx context.Context, lc *laneConsumer) (consumeEnd, error) {
	if !s.conn.IsConnected() {
		return endFailed, errors.New("not connected to RabbitMQ")
	}
	ch, err := s.conn.Connection().Channel()
	if err != nil {
		return endFailed, fmt.Errorf("opening channel: %w", err)
	}
	s.channels.Add(1)
	defer func() {
		// Closing requeues every delivery of the channel not yet acked.
		_ = ch.Close()
		s.channels.Add(-1)
	}()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return endFailed, fmt.Errorf("setting prefetch: %w", err)
	}
	if _, err := ch.QueueDeclarePassive(lc.lane, true, false, false, false, s.args); err != nil {
		if isNotFound(err) {
			return endGone, err
		}
		return endFailed, fmt.Errorf("checking lane: %w", err)
	}
	deliveries, err := ch.Consume(lc.lane, "tasklane-"+watermill.NewShortUUID(), false, false, false, false, nil)
	if err != nil {
		if isNotFound(err) {
			return endGone, err
		}
		return endFailed, fmt.Errorf("consuming: %w", err)
	}
	s.consumers.Add(1)
	defer s.consumers.Add(-1)
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				// amqp091-go closes deliveries when RabbitMQ cancels the
				// consumer (its queue was deleted), after handing over
				// what it had buffered; or when the channel closes.
				if ch.IsClosed() {
					return endFailed, errors.New("channel closed")
				}
				return endGone, nil
			}
			// The marshaler reads any delivery; a task it cannot parse is
			// for the dispatcher to quarantine.
			msg, err := amqpMarshaler{}.Unmarshal(d)
			if err != nil {
				s.logger.Warn("reading a lane delivery", "lane", lc.lane, "error", err)
				_ = d.Nack(false, true)
				continue
			}
			select {
			case lc.work <- laneDelivery{msg: msg, d: d}:
			case <-ctx.Done():
				return s.stopped(lc)
			case <-s.closing:
				return s.stopped(lc)
			}
		case err := <-closed:
			return endFailed, fmt.Errorf("channel closed: %w", err)
		case <-ctx.Done():
			return s.stopped(lc)
		case <-s.closing:
			return s.stopped(lc)
		}
	}
}

// stopped waits for lc's slots to settle what they took and leave (on
// Close, or once the last has left) and reports endStopped.
func (s *laneSubscriber) stopped(lc *laneConsumer) (consumeEnd, error) {
	<-lc.left
	return endStopped, nil
}

// waitForLane checks every laneWaitEvery whether lane exists; false if ctx
// ended or the subscriber closed first.
func (s *laneSubscriber) waitForLane(ctx context.Context, lane string) bool {
	t := time.NewTicker(laneWaitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		case <-t.C:
		}
		if s.laneExists(lane) {
			return true
		}
	}
}

func (s *laneSubscriber) laneExists(lane string) bool {
	if !s.conn.IsConnected() {
		return false
	}
	ch, err := s.conn.Connection().Channel()
	if err != nil {
		return false
	}
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(lane, true, false, false, false, s.args)
	return err == nil
}

func (s *laneSubscriber) stopping(ctx context.Context) bool {
	select {
	case <-s.closing:
		return true
	default:
		return ctx.Err() != nil
	}
}

func (s *laneSubscriber) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// Close ends every consumer and slot (a message a handler holds is
// nacked back into its lane).
func (s *laneSubscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.closing)
		s.mu.Unlock()
		s.wg.Wait()
	})
	return nil
}
