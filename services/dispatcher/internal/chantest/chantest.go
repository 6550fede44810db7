// Package chantest runs the dispatcher's Watermill router over Watermill's
// in-process gochannel pub/sub in unit tests, and records what the router
// did with each delivery: acked or nacked, and when.
//
// A PubSub is a broker.Driver, so a Dispatcher runs on it unchanged.
// Gochannel differs from the real brokers in ways tests must keep in mind:
// every subscription of a topic receives every message (so a dispatcher
// under test runs one consumer per lane), and a nacked message is sent
// again at once, to the same subscription.
package chantest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/tasklane/tasklane/pkg/broker"
)

// Delivery is one delivery of a message to a subscription.
type Delivery struct {
	UUID  string
	Topic string
	// At is when the subscription handed the message to the router.
	At time.Time
	// Acked or Nacked is set once the router settled the delivery, at
	// SettledAt.
	Acked, Nacked bool
	SettledAt     time.Time
}

// PubSub is a gochannel pub/sub whose subscriptions record deliveries.
// Publishes are kept (gochannel's Persistent mode), so a test may subscribe
// to an output topic after the message reached it.
type PubSub struct {
	gc      *gochannel.GoChannel
	closing chan struct{}

	mu         sync.Mutex
	deliveries []*Delivery
	ended      map[string]int
}

var _ broker.Driver = (*PubSub)(nil)

// New returns a PubSub that is closed when the test ends.
func New(t testing.TB) *PubSub {
	p := &PubSub{
		gc:      gochannel.NewGoChannel(gochannel.Config{Persistent: true}, nil),
		closing: make(chan struct{}),
		ended:   map[string]int{},
	}
	t.Cleanup(func() {
		close(p.closing)
		_ = p.gc.Close()
	})
	return p
}

// Publish publishes to the gochannel.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	return p.gc.Publish(topic, msgs...)
}

// Subscribe subscribes to topic, recording every delivery and how the
// router settled it.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := p.gc.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for msg := range in {
			d := &Delivery{UUID: msg.UUID, Topic: topic, At: time.Now()}
			p.mu.Lock()
			p.deliveries = append(p.deliveries, d)
			p.mu.Unlock()
			go p.watch(msg, d)
			select {
			case out <- msg:
			case <-p.closing:
				return
			}
		}
		p.mu.Lock()
		p.ended[topic]++
		p.mu.Unlock()
	}()
	return out, nil
}

func (p *PubSub) watch(msg *message.Message, d *Delivery) {
	var acked bool
	select {
	case <-msg.Acked():
		acked = true
	case <-msg.Nacked():
	case <-p.closing:
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d.Acked, d.Nacked, d.SettledAt = acked, !acked, time.Now()
}

// Close does nothing: Watermill's router closes a handler's subscriber
// when it stops, and the PubSub is shared; the test's cleanup closes it.
func (p *PubSub) Close() error { return nil }

// Deliveries returns the deliveries of message uuid so far, in order.
func (p *PubSub) Deliveries(uuid string) []Delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Delivery
	for _, d := range p.deliveries {
		if d.UUID == uuid {
			out = append(out, *d)
		}
	}
	return out
}

// Ended reports how many subscriptions of topic have ended.
func (p *PubSub) Ended(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended[topic]
}

// WaitSettled waits until the first n deliveries of uuid are settled and
// returns them.
func (p *PubSub) WaitSettled(t testing.TB, uuid string, n int, within time.Duration) []Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ds := p.Deliveries(uuid)
		if len(ds) >= n && settled(ds[:n]) {
			return ds[:n]
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %d settled deliveries of message %s (have %s)", within, n, uuid, describe(ds))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func settled(ds []Delivery) bool {
	for _, d := range ds {
		if !d.Acked && !d.Nacked {
			return false
		}
	}
	return true
}

func describe(ds []Delivery) string {
	s := "["
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		switch {
		case d.Acked:
			s += "ack"
		case d.Nacked:
			s += "nack"
		default:
			s += "pending"
		}
	}
	return s + "]"
}

// Read reads n messages published to topic (acking them), or fails the
// test after within.
func (p *PubSub) Read(t testing.TB, topic string, n int, within time.Duration) []*message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := p.gc.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribing to %s: %v", topic, err)
	}
	timeout := time.After(within)
	var out []*message.Message
	for len(out) < n {
		select {
		case msg := <-ch:
			msg.Ack()
			out = append(out, msg)
		case <-timeout:
			t.Fatalf("not within %s: %d messages on %s (got %d)", within, n, topic, len(out))
		}
	}
	return out
}

// Name is the driver's name.
func (p *PubSub) Name() string { return "gochannel" }

// DeclareLanes does nothing: gochannel topics need no declaring.
func (p *PubSub) DeclareLanes(context.Context, ...string) error { return nil }

// Publisher returns p.
func (p *PubSub) Publisher() message.Publisher { return p }

// Subscriber returns p.
func (p *PubSub) Subscriber() message.Subscriber { return p }

// ResultPublisher returns p.
func (p *PubSub) ResultPublisher() message.Publisher { return p }

// Ping reports that the gochannel is reachable.
func (p *PubSub) Ping(context.Context) error { return nil }

// Depths reports every lane empty (gochannel keeps no backlog to count).
func (p *PubSub) Depths(_ context.Context, lanes ...string) (map[string]broker.LaneDepth, error) {
	out := make(map[string]broker.LaneDepth, len(lanes))
	for _, l := range lanes {
		out[l] = broker.LaneDepth{}
	}
	return out, nil
}

// DeleteLane reports the lane deleted.
func (p *PubSub) DeleteLane(context.Context, string) (bool, error) { return true, nil }

// Trim has nothing to trim.
func (p *PubSub) Trim(context.Context, ...string) (int64, error) { return 0, nil }
