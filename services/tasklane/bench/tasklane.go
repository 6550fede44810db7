package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

const (
	benchTargetTasklane = "tasklane"
	benchTargetRaw      = "raw_broker"
)

// tasklaneTarget submits events to Tasklane's HTTP API and collects the
// task records from the results feed.
type tasklaneTarget struct {
	f      *benchFlags
	client *http.Client
	prefix string
	keys   []string
	data   []byte

	mu      sync.Mutex
	results map[string]benchResult
}

func (t *tasklaneTarget) completed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.results)
}

func (t *tasklaneTarget) record(task contracts.Task) {
	if !strings.HasPrefix(task.Event.ID, t.prefix) {
		return
	}
	r := benchResult{created: task.CreatedAt, state: string(task.State)}
	if task.StartedAt != nil {
		r.started = *task.StartedAt
	}
	if task.FinishedAt != nil {
		r.finished = *task.FinishedAt
	}
	t.mu.Lock()
	t.results[task.Event.ID] = r
	t.mu.Unlock()
}

func (t *tasklaneTarget) body(i int) []byte { return fmt.Appendf(nil, `{"p":"%s","i":%d}`, t.data, i) }

// structured is event i in structured JSON form.
func (t *tasklaneTarget) structured(b *bytes.Buffer, i int) {
	fmt.Fprintf(b, `{"specversion":"1.0","id":"%s%d","source":"/tasklane/bench","type":%q,"datacontenttype":"application/json"`,
		t.prefix, i, t.f.typ)
	if t.f.delay > 0 {
		fmt.Fprintf(b, `,"%s":%d`, contracts.ExtDelay, t.f.delay)
	}
	b.WriteString(`,"data":`)
	b.Write(t.body(i))
	b.WriteByte('}')
}

// submit sends events [lo,hi) in one request, as tenant (lo/batch) mod tenants.
func (t *tasklaneTarget) submit(ctx context.Context, lo, hi int) (int, string) {
	f := t.f
	url := f.server + "/v1/events"
	var b bytes.Buffer
	var header http.Header
	switch {
	case f.batch > 1:
		b.WriteByte('[')
		for i := lo; i < hi; i++ {
			if i > lo {
				b.WriteByte(',')
			}
			t.structured(&b, i)
		}
		b.WriteByte(']')
		header = http.Header{"Content-Type": {"application/cloudevents-batch+json"}}
	case f.mode == "structured":
		t.structured(&b, lo)
		header = http.Header{"Content-Type": {"application/cloudevents+json"}}
	default:
		b.Write(t.body(lo))
		header = http.Header{
			"Content-Type":   {"application/json"},
			"Ce-Specversion": {"1.0"},
			"Ce-Id":          {t.prefix + strconv.Itoa(lo)},
			"Ce-Source":      {"/tasklane/bench"},
			"Ce-Type":        {f.typ},
		}
		if f.delay > 0 {
			header.Set("Ce-"+contracts.ExtDelay, strconv.Itoa(f.delay))
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &b)
	if err != nil {
		return 0, "request"
	}
	req.Header = header
	if key := t.keys[(lo/f.batch)%len(t.keys)]; key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, "cancelled"
		}
		return 0, "connection"
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Sprintf("http_%d", resp.StatusCode)
	}
	return hi - lo, ""
}

func runBench(ctx context.Context, f *benchFlags, progress io.Writer) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	t := &tasklaneTarget{
		f:       f,
		client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: f.concurrency}},
		prefix:  "bench-" + strings.ToLower(ulid.Make().String()) + "-",
		data:    bytes.Repeat([]byte("x"), max(f.payload-8, 0)),
		results: map[string]benchResult{},
	}
	for i := range f.tenants {
		t.keys = append(t.keys, f.key(i))
	}

	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	feedDone := make(chan error, 1)
	if !f.submitOnly {
		feedReady := make(chan error, 1)
		go func() {
			feedDone <- readResults(feedCtx, f.results, contracts.ResultsExchangeFor(f.brokerPrefix), feedReady, t.record)
		}()
		if err := <-feedReady; err != nil {
			return nil, fmt.Errorf("reading results from %s: %w", f.results, err)
		}
	}

	st, submitDur, err := runLoad(ctx, f, t, progress, feedDone)
	if err != nil {
		return nil, fmt.Errorf("results feed: %w", err)
	}
	stopFeed()
	t.mu.Lock()
	defer t.mu.Unlock()
	results := make([]benchResult, 0, len(t.results))
	for _, r := range t.results {
		results = append(results, r)
	}
	return benchReport(benchTargetTasklane, f, st, submitDur, results), nil
}

// readResults calls fn with every task record on the results feed until ctx
// ends: the results exchange, or stream, named results. ready gets nil
// once the feed is attached (results published after that are seen), or
// the error that prevented it.
func readResults(ctx context.Context, url, results string, ready chan<- error, fn func(contracts.Task)) error {
	switch {
	case strings.HasPrefix(url, "amqp://"), strings.HasPrefix(url, "amqps://"):
		return readAMQPResults(ctx, url, results, ready, fn)
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		return readStreamResults(ctx, url, results, ready, fn)
	}
	err := fmt.Errorf("--results: want an amqp:// or redis:// URL, got %q", url)
	ready <- err
	return err
}

func readAMQPResults(ctx context.Context, url, results string, ready chan<- error, fn func(contracts.Task)) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		ready <- err
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		ready <- err
		return err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, "#", results, false, nil)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	ready <- err
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("results channel closed")
			}
			var t contracts.Task
			if json.Unmarshal(d.Body, &t) == nil {
				fn(t)
			}
		}
	}
}

func readStreamResults(ctx context.Context, url, results string, ready chan<- error, fn func(contracts.Task)) error {
	c, err := redisClient(url, 10)
	if err != nil {
		ready <- err
		return err
	}
	defer c.Close()
	last := "0-0"
	if xs, err := c.XRevRangeN(ctx, results, "+", "-", 1).Result(); err != nil {
		ready <- err
		return err
	} else if len(xs) > 0 {
		last = xs[0].ID
	}
	ready <- nil
	for ctx.Err() == nil {
		streams, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{results, last}, Count: 1000, Block: 200 * time.Millisecond}).Result()
		if errors.Is(err, redis.Nil) || ctx.Err() != nil {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "reading results:", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for _, m := range streams[0].Messages {
			last = m.ID
			p, _ := m.Values["payload"].(string)
			var t contracts.Task
			if json.Unmarshal([]byte(p), &t) == nil {
				fn(t)
			}
		}
	}
	return nil
}
