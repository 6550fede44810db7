package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmPublisher publishes with publisher confirms and many confirms in
// flight per channel. watermill-amqp's publisher waits for each message's
// confirm before its channel takes the next one, so throughput is bounded
// by channels / confirm latency; RabbitMQ confirms persistent messages
// after a batched fsync (milliseconds to hundreds of them under load), which
// capped ingest near 1k/s on one machine. Here every Publish call sends on a
// shared channel and waits only for its own confirms, so concurrent callers'
// messages are confirmed together.
//
// It rides on the driver's reconnecting connection (amqpConn): a channel
// found closed is reopened on the next publish, on whichever node the
// connection reached.
type confirmPublisher struct {
	conn       *amqpConn
	exchange   string
	routingKey func(topic string) string
	// mandatory makes a publish that no queue takes fail instead of being
	// confirmed and dropped (RabbitMQ confirms unroutable messages).
	mandatory bool
	chans     []*confirmChannel
	next      atomic.Uint64
	frame     frameMax
}

type confirmChannel struct {
	mu sync.Mutex
	ch *amqp.Channel
	// returns receives mandatory publishes no queue took. RabbitMQ sends
	// basic.return before the confirm, and amqp091 hands both over from one
	// reader goroutine, so a return is in this buffer before its confirm
	// arrives; waiters drain it into returned after their confirms.
	returns  chan amqp.Return
	retMu    sync.Mutex
	returned map[string]string
}

// returnBuffer bounds returns not yet drained on one channel.
const returnBuffer = 4096

func newConfirmPublisher(conn *amqpConn, channels int, exchange string, routingKey func(string) string, mandatory bool) *confirmPublisher {
	p := &confirmPublisher{conn: conn, exchange: exchange, routingKey: routingKey, mandatory: mandatory, chans: make([]*confirmChannel, channels)}
	for i := range p.chans {
		p.chans[i] = &confirmChannel{}
	}
	return p
}

// channel returns an open confirm-mode channel of slot c.
func (p *confirmPublisher) channel(c *confirmChannel) (*amqp.Channel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil && !c.ch.IsClosed() {
		return c.ch, nil
	}
	if !p.conn.IsConnected() {
		return nil, errors.New("not connected to RabbitMQ")
	}
	ch, err := p.conn.Connection().Channel()
	if err != nil {
		return nil, fmt.Errorf("opening publish channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enabling publisher confirms: %w", err)
	}
	if p.mandatory {
		c.returns = ch.NotifyReturn(make(chan amqp.Return, returnBuffer))
		c.returned = map[string]string{}
	}
	c.ch = ch
	return ch, nil
}

// takeReturn reports whether the message with id was returned unroutable,
// and why.
func (c *confirmChannel) takeReturn(id string) (string, bool) {
	c.retMu.Lock()
	defer c.retMu.Unlock()
	for {
		select {
		case r, ok := <-c.returns:
			if ok {
				c.returned[r.MessageId] = r.ReplyText
				continue
			}
		default:
		}
		break
	}
	why, ok := c.returned[id]
	delete(c.returned, id)
	return why, ok
}

// Publish sends msgs to topic and returns once the broker confirmed every
// one of them, or the first failure.
func (p *confirmPublisher) Publish(topic string, msgs ...*message.Message) error {
	key := p.routingKey(topic)
	// Every message is measured before any is sent: RabbitMQ answers an
	// oversized frame by closing the whole connection.
	pubs := make([]amqp.Publishing, len(msgs))
	for i, msg := range msgs {
		var err error
		pubs[i], err = amqpMarshaler{}.Marshal(msg)
		if err != nil {
			return fmt.Errorf("marshaling message %s: %w", msg.UUID, err)
		}
		if err := checkAMQPSize(pubs[i], p.exchange, key, p.frame.get(p.conn)); err != nil {
			return fmt.Errorf("publishing message %s to %s: %w", msg.UUID, topic, err)
		}
	}
	slot := p.chans[p.next.Add(1)%uint64(len(p.chans))]
	ch, err := p.channel(slot)
	slot.mu.Lock()
	returns := slot.returns
	slot.mu.Unlock()
	if err != nil {
		return err
	}
	dcs := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, msg := range msgs {
		dcs[i], err = ch.PublishWithDeferredConfirmWithContext(msg.Context(), p.exchange, key, p.mandatory, false, pubs[i])
		if err != nil {
			return fmt.Errorf("publishing message %s to %s: %w", msg.UUID, topic, err)
		}
	}
	for i, dc := range dcs {
		ok, err := dc.WaitContext(waitContext(msgs[i]))
		if err != nil {
			return fmt.Errorf("waiting for the confirm of %s: %w", msgs[i].UUID, err)
		}
		if !ok {
			return fmt.Errorf("broker did not confirm message %s (nack or channel closed)", msgs[i].UUID)
		}
		if returns != nil {
			if why, ok := slot.takeReturn(msgs[i].UUID); ok {
				return fmt.Errorf("%w: %s to %s: %s", ErrUnroutable, msgs[i].UUID, topic, why)
			}
		}
	}
	return nil
}

// CheckSize returns a *TooLargeError when RabbitMQ would refuse msg for its
// size on this publisher's connection (its routing key not counted).
func (p *confirmPublisher) CheckSize(msg *message.Message) error {
	pub, err := amqpMarshaler{}.Marshal(msg)
	if err != nil {
		return fmt.Errorf("marshaling message %s: %w", msg.UUID, err)
	}
	return checkAMQPSize(pub, p.exchange, "", p.frame.get(p.conn))
}

// ErrUnroutable is returned for a publish no queue took (a lane that does
// not exist, or no longer does).
var ErrUnroutable = errors.New("broker returned the message unroutable")

func waitContext(m *message.Message) context.Context {
	if ctx := m.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// Close closes the publisher's channels (not the shared connection).
func (p *confirmPublisher) Close() error {
	var errs []error
	for _, c := range p.chans {
		c.mu.Lock()
		if c.ch != nil && !c.ch.IsClosed() {
			errs = append(errs, c.ch.Close())
		}
		c.ch = nil
		c.mu.Unlock()
	}
	return errors.Join(errs...)
}
