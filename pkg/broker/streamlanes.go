package broker

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/streamgroup"
)

// streamLanes is the redisstream driver's lane subscriber: a Watermill
// Subscriber over one streamgroup.Reader. Each Subscribe call is one consumer
// of a lane, and one slot of the reader on that lane's stream; the
// reader reads every lane in one XREADGROUP and hands each entry to an
// idle consumer of its lane. An entry is acknowledged when the router
// acks its message and handled again after the reader's RetryWait when
// it nacks.
type streamLanes struct {
	reader *streamgroup.Reader

	// closing refuses new consumers and ends every consumer.
	closing   chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	feeds map[string]*laneFeed
}

// laneFeed carries a lane's entries from the reader's handlers to the
// lane's consumers. gone is closed when the lane's last consumer leaves.
type laneFeed struct {
	work      chan *message.Message
	consumers int
	gone      chan struct{}
}

func newStreamLanes() *streamLanes {
	return &streamLanes{feeds: map[string]*laneFeed{}, closing: make(chan struct{})}
}

// Subscribe adds a consumer of lane. Its channel closes when ctx ends or
// the subscriber closes; a message it delivered is still waited for.
func (s *streamLanes) Subscribe(ctx context.Context, lane string) (<-chan *message.Message, error) {
	if s.stopping(context.Background()) {
		return nil, errors.New("subscribing to lane " + lane + ": subscriber closed")
	}
	s.mu.Lock()
	f := s.feeds[lane]
	if f == nil {
		f = &laneFeed{work: make(chan *message.Message), gone: make(chan struct{})}
		s.feeds[lane] = f
	}
	f.consumers++
	s.mu.Unlock()
	s.reader.AddSlots(lane, 1)

	out := make(chan *message.Message)
	go s.consume(ctx, lane, f, out)
	return out, nil
}

// consume is one consumer: it hands the lane's entries to out, one at a
// time, until ctx ends or the subscriber closes.
func (s *streamLanes) consume(ctx context.Context, lane string, f *laneFeed, out chan<- *message.Message) {
	defer close(out)
	defer s.leave(lane, f)
	for {
		// Stopping wins over an offered message: select picks at random
		// among ready cases, and a stopped handler must not start another
		// task.
		if s.stopping(ctx) {
			return
		}
		var msg *message.Message
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case msg = <-f.work:
		}
		if s.stopping(ctx) {
			msg.Nack() // its handler offers it again, or releases it
			return
		}
		msg.SetContext(ctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			msg.Nack() // not taken: its handler offers it again
			return
		case <-s.closing:
			msg.Nack()
			return
		}
		// One message at a time: the router handles each in a goroutine
		// of its own, so the next is taken only once this one is acked or
		// nacked (a stopping router still finishes what it took).
		select {
		case <-msg.Acked():
		case <-msg.Nacked():
		case <-s.closing:
			return
		}
	}
}

func (s *streamLanes) stopping(ctx context.Context) bool {
	select {
	case <-s.closing:
		return true
	default:
		return ctx.Err() != nil
	}
}

// leave removes a consumer of lane; the last one closes the lane's feed,
// so that entries read for it are released to other consumers.
func (s *streamLanes) leave(lane string, f *laneFeed) {
	s.reader.AddSlots(lane, -1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.consumers--; f.consumers == 0 {
		close(f.gone)
		if s.feeds[lane] == f {
			delete(s.feeds, lane)
		}
	}
}

func (s *streamLanes) feed(lane string) *laneFeed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.feeds[lane]
}

// handle is the reader's handler: it offers the entry to a consumer of its
// lane and waits for the router's verdict. ctx ends only when the reader's
// drain timed out.
func (s *streamLanes) handle(ctx context.Context, lane string, m redis.XMessage) streamgroup.Outcome {
	f := s.feed(lane)
	if f == nil {
		return streamgroup.Release
	}
	msg, _ := streamMarshaler{}.Unmarshal(m.Values)
	select {
	case f.work <- msg:
	case <-f.gone:
		// The lane's consumers left (the lane is no longer consumed here,
		// or the driver is closing): another process, or this one when it
		// consumes the lane again, takes the entry.
		return streamgroup.Release
	case <-ctx.Done():
		return streamgroup.Leave
	}
	select {
	case <-msg.Acked():
		return streamgroup.Done
	case <-msg.Nacked():
		return streamgroup.Retry
	case <-ctx.Done():
		return streamgroup.Leave
	}
}

// Close refuses new subscriptions and ends every consumer (their channels
// close; a message already delivered is still waited for by its handler).
func (s *streamLanes) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	return nil
}
