package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v2/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// laneWaitEvery is how often a consumer of a deleted lane checks whether
// the lane was declared again.
const laneWaitEvery = time.Second

// laneSubscriber is the amqp driver's lane subscriber: watermill-amqp's
// subscriber, with one difference. watermill-amqp declares the queue again
// whenever a consumer's channel is re-opened, and RabbitMQ cancels the
// consumers of a deleted queue, so a consumer still on a lane when the
// controller deleted it would re-create the lane at once (an orphan queue
// that takes publishes nobody may consume). Here Subscribe declares the
// lane, re-opening a channel only checks that it exists, and a consumer
// whose lane is gone waits, without consuming, until the lane is declared
// again (a tenant split off again), as the redisstream driver's consumers
// do. Each Subscribe call stays one consumer with at most one unacked
// message.
type laneSubscriber struct {
	sub    *wamqp.Subscriber
	conn   *wamqp.ConnectionWrapper
	args   amqp.Table
	logger *slog.Logger

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu sync.Mutex
	// inner holds, per lane, the cancel functions of the watermill-amqp
	// subscriptions consuming it; they end when the lane is found gone.
	inner map[string]map[*context.CancelFunc]struct{}
}

func newLaneSubscriber(cfg wamqp.Config, wlog watermill.LoggerAdapter, conn *wamqp.ConnectionWrapper, logger *slog.Logger) (*laneSubscriber, error) {
	s := &laneSubscriber{
		conn: conn, args: cfg.Queue.Arguments, logger: logger.With("component", "amqp"),
		closing: make(chan struct{}), inner: map[string]map[*context.CancelFunc]struct{}{},
	}
	cfg.TopologyBuilder = laneTopology{s}
	var err error
	if s.sub, err = wamqp.NewSubscriberWithConnection(cfg, wlog, conn); err != nil {
		return nil, err
	}
	return s, nil
}

// laneTopology checks that a lane exists where watermill-amqp's
// DefaultTopologyBuilder would declare it.
type laneTopology struct{ s *laneSubscriber }

func (t laneTopology) BuildTopology(ch *amqp.Channel, queue, _ string, _ wamqp.Config, _ watermill.LoggerAdapter) error {
	_, err := ch.QueueDeclarePassive(queue, true, false, false, false, t.s.args)
	if isNotFound(err) {
		t.s.laneGone(queue)
	}
	return err
}

func (laneTopology) ExchangeDeclare(*amqp.Channel, string, wamqp.Config) error {
	return nil // lanes are on the default exchange
}

func isNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// Subscribe declares lane and adds a consumer of it. Its channel closes
// when ctx ends or the subscriber closes.
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
	in, done, err := s.subscribeInner(ctx, lane)
	if err != nil {
		s.wg.Done()
		return nil, err
	}
	out := make(chan *message.Message)
	go s.forward(ctx, lane, in, done, out)
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

// subscribeInner starts a watermill-amqp subscription of lane that ends
// with ctx or when the lane is found gone; done unregisters it.
func (s *laneSubscriber) subscribeInner(ctx context.Context, lane string) (<-chan *message.Message, func(), error) {
	ictx, cancel := context.WithCancel(ctx)
	key := &cancel
	s.mu.Lock()
	if s.inner[lane] == nil {
		s.inner[lane] = map[*context.CancelFunc]struct{}{}
	}
	s.inner[lane][key] = struct{}{}
	s.mu.Unlock()
	done := func() {
		cancel()
		s.mu.Lock()
		delete(s.inner[lane], key)
		if len(s.inner[lane]) == 0 {
			delete(s.inner, lane)
		}
		s.mu.Unlock()
	}
	in, err := s.sub.Subscribe(ictx, lane)
	if err != nil {
		done()
		return nil, nil, err
	}
	return in, done, nil
}

// laneGone ends the subscriptions of lane.
func (s *laneSubscriber) laneGone(lane string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for cancel := range s.inner[lane] {
		(*cancel)()
	}
}

// forward hands the messages of the inner subscription to out; when the
// lane is deleted it waits for the lane to exist again and subscribes
// again.
func (s *laneSubscriber) forward(ctx context.Context, lane string, in <-chan *message.Message, done func(), out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	for {
		for msg := range in {
			select {
			case out <- msg:
			case <-ctx.Done():
				msg.Nack() // not taken: the broker offers it again
			case <-s.closing:
				msg.Nack()
			}
		}
		done()
		if ctx.Err() != nil || s.isClosing() {
			return
		}
		s.logger.Info("lane deleted; its consumer waits for it to be declared again", "lane", lane)
		for {
			if !s.waitForLane(ctx, lane) {
				return
			}
			var err error
			if in, done, err = s.subscribeInner(ctx, lane); err == nil {
				break
			}
			s.logger.Warn("consuming a lane declared again; will retry", "lane", lane, "error", err)
		}
		s.logger.Info("consuming a lane declared again", "lane", lane)
	}
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

func (s *laneSubscriber) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// Close ends every consumer (a message a handler holds is nacked).
func (s *laneSubscriber) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.closing)
		s.mu.Unlock()
		err = s.sub.Close()
		s.wg.Wait()
	})
	return err
}
