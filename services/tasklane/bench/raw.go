package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tasklane/tasklane/contracts"
)

// Headers of a raw-broker bench message.
const (
	rawHeaderIndex = "bench_i"
	rawHeaderSent  = "bench_sent_ns"
)

// rawTarget publishes straight to RabbitMQ queues shaped like Tasklane's
// lanes and consumes them with manual acks: the ceiling Tasklane's amqp
// driver is measured against.
type rawTarget struct {
	f       *benchFlags
	queues  []string
	pubConn *amqp.Connection
	subConn *amqp.Connection
	pubChs  []*amqp.Channel
	next    atomic.Uint64
	body    []byte

	done    atomic.Int64
	dups    atomic.Int64
	mu      sync.Mutex
	results []benchResult
	seen    []bool
}

func (t *rawTarget) completed() int { return int(t.done.Load()) }

func (t *rawTarget) queueArgs() amqp.Table {
	switch t.f.raw.queueType {
	case "quorum":
		return amqp.Table{"x-queue-type": "quorum"}
	case "plain":
		return nil
	}
	return amqp.Table{"x-max-priority": int32(contracts.MaxPriority)}
}

// submit publishes messages [lo,hi) on one channel, all in flight at once,
// then waits for their confirms.
func (t *rawTarget) submit(ctx context.Context, lo, hi int) (int, string) {
	ch := t.pubChs[t.next.Add(1)%uint64(len(t.pubChs))]
	dcs := make([]*amqp.DeferredConfirmation, 0, hi-lo)
	kind := ""
	for i := lo; i < hi; i++ {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", t.queues[i%len(t.queues)], false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "application/json",
			Headers:      amqp.Table{rawHeaderIndex: int64(i), rawHeaderSent: time.Now().UnixNano()},
			Body:         t.body,
		})
		if err != nil {
			kind = "publish"
			break
		}
		dcs = append(dcs, dc)
	}
	ok := 0
	for _, dc := range dcs {
		acked, err := dc.WaitContext(ctx)
		switch {
		case err != nil:
			kind = "confirm_wait"
		case !acked:
			kind = "nack"
		default:
			ok++
		}
	}
	return ok, kind
}

func (t *rawTarget) consume(d amqp.Delivery) {
	started := time.Now()
	i, _ := d.Headers[rawHeaderIndex].(int64)
	sent, _ := d.Headers[rawHeaderSent].(int64)
	err := d.Ack(false)
	finished := time.Now()
	if err != nil || i < 0 || int(i) >= len(t.results) {
		return
	}
	t.mu.Lock()
	dup := t.seen[i]
	if !dup {
		t.seen[i] = true
		t.results[i] = benchResult{created: time.Unix(0, sent), started: started, finished: finished}
	}
	t.mu.Unlock()
	if dup {
		t.dups.Add(1)
		return
	}
	t.done.Add(1)
}

func runRawBench(ctx context.Context, f *benchFlags, url string, progress io.Writer) (*Report, error) {
	if !strings.HasPrefix(url, "amqp://") && !strings.HasPrefix(url, "amqps://") {
		return nil, fmt.Errorf("raw broker: want an amqp:// URL, got %q", url)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	t := &rawTarget{
		f:       f,
		body:    fmt.Appendf(nil, `{"p":"%s","i":0}`, bytes.Repeat([]byte("x"), max(f.payload-8, 0))),
		results: make([]benchResult, f.count),
		seen:    make([]bool, f.count),
	}
	var err error
	if t.pubConn, err = amqp.Dial(url); err != nil {
		return nil, fmt.Errorf("raw broker: connecting: %w", err)
	}
	defer t.pubConn.Close()
	if t.subConn, err = amqp.Dial(url); err != nil {
		return nil, fmt.Errorf("raw broker: connecting: %w", err)
	}
	defer t.subConn.Close()

	run := strings.ToLower(ulid.Make().String())
	admin, err := t.pubConn.Channel()
	if err != nil {
		return nil, fmt.Errorf("raw broker: opening channel: %w", err)
	}
	defer admin.Close()
	defer func() {
		// Delete the queues on a fresh channel: the admin channel may have
		// been closed by an error.
		ch, err := t.pubConn.Channel()
		if err != nil {
			fmt.Fprintf(progress, "raw broker: could not delete queues %s: %v\n", strings.Join(t.queues, " "), err)
			return
		}
		defer ch.Close()
		for _, q := range t.queues {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				fmt.Fprintf(progress, "raw broker: deleting queue %s: %v\n", q, err)
				return
			}
		}
	}()
	for i := range f.raw.queues {
		q := fmt.Sprintf("tasklane.bench.%s.%02d", run, i)
		if _, err := admin.QueueDeclare(q, true, false, false, false, t.queueArgs()); err != nil {
			return nil, fmt.Errorf("raw broker: declaring queue %s: %w", q, err)
		}
		t.queues = append(t.queues, q)
	}

	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	var consumers sync.WaitGroup
	var subChs []*amqp.Channel
	defer func() {
		for _, ch := range subChs {
			_ = ch.Close()
		}
		consumers.Wait()
	}()
	for _, q := range t.queues {
		if f.submitOnly {
			break // the messages stay queued until the queues are deleted
		}
		for range f.raw.consumers {
			ch, err := t.subConn.Channel()
			if err != nil {
				return nil, fmt.Errorf("raw broker: opening consumer channel: %w", err)
			}
			subChs = append(subChs, ch)
			if err := ch.Qos(f.raw.prefetch, 0, false); err != nil {
				return nil, fmt.Errorf("raw broker: setting prefetch: %w", err)
			}
			deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
			if err != nil {
				return nil, fmt.Errorf("raw broker: consuming %s: %w", q, err)
			}
			consumers.Add(1)
			go func() {
				defer consumers.Done()
				for d := range deliveries {
					t.consume(d)
				}
			}()
		}
	}
	closed := t.subConn.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		if e, ok := <-closed; ok && e != nil {
			fail(fmt.Errorf("consumer connection closed: %w", e))
		}
	}()

	for range f.raw.channels {
		ch, err := t.pubConn.Channel()
		if err != nil {
			return nil, fmt.Errorf("raw broker: opening publish channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			return nil, fmt.Errorf("raw broker: confirm mode: %w", err)
		}
		t.pubChs = append(t.pubChs, ch)
	}

	st, submitDur, err := runLoad(ctx, f, t, progress, failed)
	if err != nil {
		return nil, fmt.Errorf("raw broker: %w", err)
	}
	t.mu.Lock()
	results := make([]benchResult, 0, t.done.Load())
	for i, ok := range t.seen {
		if ok {
			results = append(results, t.results[i])
		}
	}
	t.mu.Unlock()
	r := benchReport(benchTargetRaw, f, st, submitDur, results)
	r.Duplicates = int(t.dups.Load())
	r.RawQueues = t.queues
	r.Tenants = 0
	return r, nil
}
