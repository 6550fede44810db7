package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tasklane/tasklane/pkg/groupcommit"
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
	pubs, err := p.marshal(topic, msgs)
	if err != nil {
		return err
	}
	slot, ch, err := p.open()
	if err != nil {
		return err
	}
	dcs, err := p.send(ch, topic, msgs, pubs)
	if err != nil {
		return err
	}
	return p.wait(slot, topic, msgs, dcs)
}

// marshal measures and marshals msgs for topic. Every message is measured
// before any is sent: RabbitMQ answers an oversized frame by closing the
// whole connection.
func (p *confirmPublisher) marshal(topic string, msgs []*message.Message) ([]amqp.Publishing, error) {
	key := p.routingKey(topic)
	pubs := make([]amqp.Publishing, len(msgs))
	for i, msg := range msgs {
		var err error
		pubs[i], err = amqpMarshaler{}.Marshal(msg)
		if err != nil {
			return nil, fmt.Errorf("marshaling message %s: %w", msg.UUID, err)
		}
		if err := checkAMQPSize(pubs[i], p.exchange, key, p.frame.get(p.conn)); err != nil {
			return nil, fmt.Errorf("publishing message %s to %s: %w", msg.UUID, topic, err)
		}
	}
	return pubs, nil
}

// open picks the next channel slot and returns it with its open channel.
func (p *confirmPublisher) open() (*confirmChannel, *amqp.Channel, error) {
	slot := p.chans[p.next.Add(1)%uint64(len(p.chans))]
	ch, err := p.channel(slot)
	return slot, ch, err
}

// send publishes msgs (marshaled as pubs) to topic on ch without waiting
// for their confirms.
func (p *confirmPublisher) send(ch *amqp.Channel, topic string, msgs []*message.Message, pubs []amqp.Publishing) ([]*amqp.DeferredConfirmation, error) {
	key := p.routingKey(topic)
	dcs := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, msg := range msgs {
		var err error
		dcs[i], err = ch.PublishWithDeferredConfirmWithContext(msg.Context(), p.exchange, key, p.mandatory, false, pubs[i])
		if err != nil {
			return nil, fmt.Errorf("publishing message %s to %s: %w", msg.UUID, topic, err)
		}
	}
	return dcs, nil
}

// wait waits for the confirms of msgs sent on slot's channel, and returns
// the first failure: a nack, a closed channel, or (mandatory) a return.
func (p *confirmPublisher) wait(slot *confirmChannel, topic string, msgs []*message.Message, dcs []*amqp.DeferredConfirmation) error {
	slot.mu.Lock()
	returns := slot.returns
	slot.mu.Unlock()
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

// confirmBatcher publishes in confirm batches: Publish calls that arrive
// while earlier batches are on the wire go out together, all on one
// channel, and one flusher waits for the batch's confirms (RabbitMQ
// confirms them with a few multiple acks) before it answers every caller.
// A caller still returns only once its own messages were confirmed, or
// with their failure, so the notifier acknowledges an outbox entry only
// after its result's confirm. Result events go through it: the notifier
// publishes each entry of a read concurrently.
type confirmBatcher struct {
	p *confirmPublisher
	q *groupcommit.Batcher[*batchedPublish]
}

// batchedPublish is one Publish call in a batch, and its answer.
type batchedPublish struct {
	topic string
	msgs  []*message.Message
	err   error
}

func newConfirmBatcher(p *confirmPublisher) *confirmBatcher {
	b := &confirmBatcher{p: p}
	size := func(c *batchedPublish) int {
		n := 0
		for _, m := range c.msgs {
			n += len(m.Payload)
		}
		return n
	}
	// A flusher per channel: batches on the wire at once each use their own.
	b.q = groupcommit.New(groupcommit.Limits{Flushers: len(p.chans)}, size, b.send)
	return b
}

// Publish sends msgs to topic in the next batch and returns once the broker
// confirmed every one of them, or the first failure.
func (b *confirmBatcher) Publish(topic string, msgs ...*message.Message) error {
	// A message whose context is already done is not sent: its caller has
	// given up, and a confirm arriving before the wait looks would
	// otherwise make the answer depend on timing.
	for _, m := range msgs {
		if err := m.Context().Err(); err != nil {
			return fmt.Errorf("publishing to %s: %w", topic, err)
		}
	}
	c := &batchedPublish{topic: topic, msgs: msgs}
	// The batch's confirm waits are bounded by the messages' contexts; a
	// call queued behind stalled batches waits for them.
	if err := b.q.Do(context.Background(), c); err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	return c.err
}

// send publishes a batch of calls on one channel, then waits for all their
// confirms and records each call's answer.
func (b *confirmBatcher) send(calls []*batchedPublish) {
	slot, ch, err := b.p.open()
	dcs := make([][]*amqp.DeferredConfirmation, len(calls))
	for i, c := range calls {
		if err != nil {
			c.err = err
			continue
		}
		var pubs []amqp.Publishing
		if pubs, c.err = b.p.marshal(c.topic, c.msgs); c.err != nil {
			continue
		}
		// A channel that failed fails the rest of the batch too.
		dcs[i], c.err = b.p.send(ch, c.topic, c.msgs, pubs)
		if c.err != nil && ch.IsClosed() {
			err = c.err
		}
	}
	for i, c := range calls {
		if c.err == nil {
			c.err = b.p.wait(slot, c.topic, c.msgs, dcs[i])
		}
	}
}

// Close closes the publisher's channels (not the shared connection).
func (b *confirmBatcher) Close() error { return b.p.Close() }

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
