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

// rawDriver is the raw broker an URL names: "amqp" (RabbitMQ), "redis"
// (Redis streams) or "" (neither).
func rawDriver(url string) string {
	switch {
	case strings.HasPrefix(url, "amqp://"), strings.HasPrefix(url, "amqps://"):
		return "amqp"
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		return "redis"
	}
	return ""
}

// runRaw measures the raw broker at url in f's --raw-shape, counting
// operations when --count-ops asks.
func runRaw(ctx context.Context, f *benchFlags, url string, progress io.Writer) (*Report, error) {
	rf := *f
	rf.concurrency = f.rawPublishers()
	driver := rawDriver(url)
	run := func() (*Report, error) {
		if driver == "redis" {
			return runRawStreams(ctx, &rf, url, progress)
		}
		return runRawBench(ctx, &rf, url, progress)
	}
	r, err := withOps(ctx, f, url, progress, run)
	if err != nil {
		return nil, err
	}
	r.RawShape = f.raw.shape
	r.RawShapeDetail = rf.rawShapeSummary(driver == "redis")
	r.Tenants = 0
	return r, nil
}

// rawResults records each raw message's times once, by index.
type rawResults struct {
	done    atomic.Int64
	dups    atomic.Int64
	mu      sync.Mutex
	results []benchResult
	seen    []bool
}

func newRawResults(n int) *rawResults {
	return &rawResults{results: make([]benchResult, n), seen: make([]bool, n)}
}

func (r *rawResults) completed() int { return int(r.done.Load()) }

// record notes message i, published at sent (Unix ns), as delivered at
// started and acked at finished; a second delivery counts as a duplicate.
func (r *rawResults) record(i, sent int64, started, finished time.Time) {
	if i < 0 || int(i) >= len(r.results) {
		return
	}
	r.mu.Lock()
	dup := r.seen[i]
	if !dup {
		r.seen[i] = true
		r.results[i] = benchResult{created: time.Unix(0, sent), started: started, finished: finished}
	}
	r.mu.Unlock()
	if dup {
		r.dups.Add(1)
		return
	}
	r.done.Add(1)
}

// report builds the raw run's report.
func (r *rawResults) report(f *benchFlags, st *loadStats, submitDur time.Duration, queues []string) *Report {
	r.mu.Lock()
	results := make([]benchResult, 0, r.done.Load())
	for i, ok := range r.seen {
		if ok {
			results = append(results, r.results[i])
		}
	}
	r.mu.Unlock()
	rep := benchReport(benchTargetRaw, f, st, submitDur, results)
	rep.Duplicates = int(r.dups.Load())
	rep.RawQueues = queues
	return rep
}

// rawTarget publishes straight to RabbitMQ queues and consumes them with
// manual acks: the ceiling Tasklane's amqp driver is measured against.
type rawTarget struct {
	*rawResults
	f       *benchFlags
	queues  []string
	pubConn *amqp.Connection
	subConn *amqp.Connection
	pubChs  []*rawChannel
	next    atomic.Uint64
	body    []byte
}

// rawChannel is a confirm-mode publishing channel with, when the shape has
// a confirm window, at most that many unconfirmed messages.
type rawChannel struct {
	ch *amqp.Channel
	// window holds a token per unconfirmed message (nil: unbounded);
	// acquire takes a submitter's tokens all at once, so two submitters
	// never wait on each other's half-taken windows.
	window  chan struct{}
	acquire sync.Mutex
}

// take reserves n unconfirmed slots (at most the whole window) and returns
// how many to give back.
func (c *rawChannel) take(ctx context.Context, n int) (int, error) {
	if c.window == nil {
		return 0, nil
	}
	n = min(n, cap(c.window))
	c.acquire.Lock()
	defer c.acquire.Unlock()
	for i := range n {
		select {
		case c.window <- struct{}{}:
		case <-ctx.Done():
			c.give(i)
			return 0, ctx.Err()
		}
	}
	return n, nil
}

func (c *rawChannel) give(n int) {
	for range n {
		<-c.window
	}
}

func (t *rawTarget) queueArgs() amqp.Table {
	switch t.f.raw.queueType {
	case "quorum":
		return amqp.Table{"x-queue-type": "quorum"}
	case "plain":
		return nil
	}
	return amqp.Table{"x-max-priority": int32(contracts.MaxPriority)}
}

// submit publishes messages [lo,hi) on one channel, all in flight at once
// (within the channel's confirm window), then waits for their confirms.
func (t *rawTarget) submit(ctx context.Context, lo, hi int) (int, string) {
	pc := t.pubChs[t.next.Add(1)%uint64(len(t.pubChs))]
	held, err := pc.take(ctx, hi-lo)
	if err != nil {
		return 0, "cancelled"
	}
	defer pc.give(held)
	ch := pc.ch
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
	if err := d.Ack(false); err != nil {
		return
	}
	t.record(i, sent, started, time.Now())
}

func runRawBench(ctx context.Context, f *benchFlags, url string, progress io.Writer) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	t := &rawTarget{
		rawResults: newRawResults(f.count),
		f:          f,
		body:       rawBody(f),
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
		pc := &rawChannel{ch: ch}
		if f.raw.window > 0 {
			pc.window = make(chan struct{}, f.raw.window)
		}
		t.pubChs = append(t.pubChs, pc)
	}

	st, submitDur, err := runLoad(ctx, f, t, progress, failed)
	if err != nil {
		return nil, fmt.Errorf("raw broker: %w", err)
	}
	return t.report(f, st, submitDur, t.queues), nil
}

// rawBody is the raw messages' body: f.payload bytes of JSON.
func rawBody(f *benchFlags) []byte {
	return fmt.Appendf(nil, `{"p":"%s","i":0}`, bytes.Repeat([]byte("x"), max(f.payload-8, 0)))
}
