package tasklane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
)

// benchFlags configure `tasklane bench`.
type benchFlags struct {
	client      clientFlags
	typ         string
	count       int
	rate        float64
	concurrency int
	batch       int
	mode        string
	payload     int
	results     string
	timeout     time.Duration
	json        bool
}

// BenchReport is what `tasklane bench --json` prints.
type BenchReport struct {
	Events         int            `json:"events"`
	Accepted       int            `json:"accepted"`
	Completed      int            `json:"completed"`
	SubmitSeconds  float64        `json:"submit_seconds"`
	SubmitRate     float64        `json:"submit_rate"`
	CompletionRate float64        `json:"completion_rate"`
	SubmitToStart  Percentiles    `json:"submit_to_start_ms"`
	SubmitToFinish Percentiles    `json:"submit_to_finish_ms"`
	Errors         map[string]int `json:"errors"`
	States         map[string]int `json:"states"`
}

// Percentiles of a latency, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func newBenchCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench --type TYPE [-n N] [--rate R] [--results URL]",
		Short: "Load a running server and measure throughput and latency",
		Long: `bench submits N events (each must make one task: point --type at a type one
function subscribes to, e.g. a builtin:noop function) and reads every
task's result event from the results feed (--results: the RabbitMQ URL for
the amqp driver, the Redis URL for redisstream). Latencies come from the task
records: submit = when the gateway durably accepted the task, start = when a
dispatcher claimed it, finish = when its outcome was recorded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := runBench(cmd.Context(), f, stderr)
			if err != nil {
				return err
			}
			if f.json {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			printBench(stdout, r)
			return nil
		},
	}
	f.client.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.typ, "type", "com.example.noop", "event type to submit")
	fl.IntVarP(&f.count, "count", "n", 10000, "events to submit")
	fl.Float64Var(&f.rate, "rate", 0, "events per second (0: as fast as possible)")
	fl.IntVar(&f.concurrency, "concurrency", 32, "parallel submitting connections")
	fl.IntVar(&f.batch, "batch", 1, "events per request (more than 1 uses batch mode)")
	fl.StringVar(&f.mode, "mode", "binary", "content mode for single events: binary or structured")
	fl.IntVar(&f.payload, "payload", 64, "bytes of event data")
	fl.StringVar(&f.results, "results", "amqp://guest:guest@127.0.0.1:5672/", "results feed: amqp:// URL or redis:// URL")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "give up waiting for results after this")
	fl.BoolVar(&f.json, "json", false, "print the report as JSON")
	return cmd
}

type benchResult struct {
	created, started, finished time.Time
	state                      contracts.State
}

func runBench(ctx context.Context, f *benchFlags, progress io.Writer) (*BenchReport, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if f.count < 1 || f.concurrency < 1 || f.batch < 1 {
		return nil, errors.New("--count, --concurrency and --batch must be at least 1")
	}
	if f.mode != "binary" && f.mode != "structured" {
		return nil, fmt.Errorf("--mode: want binary or structured, got %q", f.mode)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	run := strings.ToLower(ulid.Make().String())
	prefix := "bench-" + run + "-"

	var mu sync.Mutex
	results := map[string]benchResult{}
	feedReady := make(chan error, 1)
	feedDone := make(chan error, 1)
	go func() {
		feedDone <- readResults(ctx, f.results, feedReady, func(t contracts.Task) {
			if !strings.HasPrefix(t.Event.ID, prefix) {
				return
			}
			r := benchResult{created: t.CreatedAt, state: t.State}
			if t.StartedAt != nil {
				r.started = *t.StartedAt
			}
			if t.FinishedAt != nil {
				r.finished = *t.FinishedAt
			}
			mu.Lock()
			results[t.Event.ID] = r
			mu.Unlock()
		})
	}()
	if err := <-feedReady; err != nil {
		return nil, fmt.Errorf("reading results from %s: %w", f.results, err)
	}

	data := bytes.Repeat([]byte("x"), max(f.payload-8, 0))
	body := func(i int) []byte { return fmt.Appendf(nil, `{"p":"%s","i":%d}`, data, i) }
	var accepted, submitted atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	fail := func(kind string) { errMu.Lock(); errs[kind]++; errMu.Unlock() }
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: f.concurrency}}

	requests := (f.count + f.batch - 1) / f.batch
	work := make(chan int)
	start := time.Now()
	var wg sync.WaitGroup
	for range f.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for req := range work {
				lo, hi := req*f.batch, min((req+1)*f.batch, f.count)
				n, kind := submitBench(ctx, client, f, prefix, lo, hi, body)
				submitted.Add(int64(hi - lo))
				accepted.Add(int64(n))
				if kind != "" {
					fail(kind)
				}
			}
		}()
	}
	stopProgress := make(chan struct{})
	go benchProgress(progress, start, &submitted, &accepted, func() int { mu.Lock(); defer mu.Unlock(); return len(results) }, stopProgress)
	for req := range requests {
		if f.rate > 0 {
			due := start.Add(time.Duration(float64(req*f.batch) / f.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		select {
		case work <- req:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	submitDur := time.Since(start)

	// Wait for every accepted task's result.
	for ctx.Err() == nil {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if int64(n) >= accepted.Load() {
			break
		}
		select {
		case <-ctx.Done():
		case err := <-feedDone:
			if err != nil {
				return nil, fmt.Errorf("results feed: %w", err)
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(stopProgress)
	cancel()
	mu.Lock()
	defer mu.Unlock()
	return benchReport(f.count, int(accepted.Load()), submitDur, results, errs), nil
}

// submitBench sends events [lo,hi) in one request and returns how many were
// accepted and, on failure, an error kind.
func submitBench(ctx context.Context, c *http.Client, f *benchFlags, prefix string, lo, hi int, body func(int) []byte) (int, string) {
	var req *http.Request
	var err error
	url := f.client.server + "/v1/events"
	switch {
	case f.batch > 1:
		var b bytes.Buffer
		b.WriteByte('[')
		for i := lo; i < hi; i++ {
			if i > lo {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"specversion":"1.0","id":"%s%d","source":"/tasklane/bench","type":%q,"datacontenttype":"application/json","data":%s}`,
				prefix, i, f.typ, body(i))
		}
		b.WriteByte(']')
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, &b)
		if err == nil {
			req.Header.Set("Content-Type", "application/cloudevents-batch+json")
		}
	case f.mode == "structured":
		b := fmt.Appendf(nil, `{"specversion":"1.0","id":"%s%d","source":"/tasklane/bench","type":%q,"datacontenttype":"application/json","data":%s}`,
			prefix, lo, f.typ, body(lo))
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
		if err == nil {
			req.Header.Set("Content-Type", "application/cloudevents+json")
		}
	default:
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body(lo)))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Ce-Specversion", "1.0")
			req.Header.Set("Ce-Id", fmt.Sprintf("%s%d", prefix, lo))
			req.Header.Set("Ce-Source", "/tasklane/bench")
			req.Header.Set("Ce-Type", f.typ)
		}
	}
	if err != nil {
		return 0, "request"
	}
	if f.client.key != "" {
		req.Header.Set("Authorization", "Bearer "+f.client.key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "connection"
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Sprintf("http_%d", resp.StatusCode)
	}
	return hi - lo, ""
}

func benchProgress(w io.Writer, start time.Time, submitted, accepted *atomic.Int64, completed func() int, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			fmt.Fprintln(w)
			return
		case <-t.C:
			el := time.Since(start).Seconds()
			c := completed()
			fmt.Fprintf(w, "\r%5.0fs  submitted %d (%.0f/s)  accepted %d  completed %d (%.0f/s)  in flight %d   ",
				el, submitted.Load(), float64(submitted.Load())/el, accepted.Load(), c, float64(c)/el, accepted.Load()-int64(c))
		}
	}
}

func benchReport(events, accepted int, submitDur time.Duration, results map[string]benchResult, errs map[string]int) *BenchReport {
	r := &BenchReport{Events: events, Accepted: accepted, Completed: len(results), Errors: errs, States: map[string]int{},
		SubmitSeconds: submitDur.Seconds(), SubmitRate: float64(accepted) / submitDur.Seconds()}
	var toStart, toFinish []float64
	var first, last time.Time
	for _, res := range results {
		r.States[string(res.state)]++
		if first.IsZero() || res.created.Before(first) {
			first = res.created
		}
		if res.finished.After(last) {
			last = res.finished
		}
		if !res.started.IsZero() {
			toStart = append(toStart, float64(res.started.Sub(res.created))/float64(time.Millisecond))
		}
		toFinish = append(toFinish, float64(res.finished.Sub(res.created))/float64(time.Millisecond))
	}
	if span := last.Sub(first).Seconds(); span > 0 {
		r.CompletionRate = float64(len(results)) / span
	}
	r.SubmitToStart = percentiles(toStart)
	r.SubmitToFinish = percentiles(toFinish)
	return r
}

func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: v[len(v)-1]}
}

func printBench(w io.Writer, r *BenchReport) {
	fmt.Fprintf(w, "events             %d (accepted %d, completed %d)\n", r.Events, r.Accepted, r.Completed)
	fmt.Fprintf(w, "submit rate        %.0f events/s over %.2fs\n", r.SubmitRate, r.SubmitSeconds)
	fmt.Fprintf(w, "completion rate    %.0f tasks/s (first accept to last finish)\n", r.CompletionRate)
	fmt.Fprintf(w, "                   p50       p90       p99       max\n")
	fmt.Fprintf(w, "submit->start ms   %-9.2f %-9.2f %-9.2f %.2f\n", r.SubmitToStart.P50, r.SubmitToStart.P90, r.SubmitToStart.P99, r.SubmitToStart.Max)
	fmt.Fprintf(w, "submit->finish ms  %-9.2f %-9.2f %-9.2f %.2f\n", r.SubmitToFinish.P50, r.SubmitToFinish.P90, r.SubmitToFinish.P99, r.SubmitToFinish.Max)
	fmt.Fprintf(w, "states             %v\n", r.States)
	if len(r.Errors) > 0 {
		fmt.Fprintf(w, "errors             %v\n", r.Errors)
	}
}

// readResults calls fn with every task record on the results feed until ctx
// ends. ready gets nil once the feed is attached (results published after
// that are seen), or the error that prevented it.
func readResults(ctx context.Context, url string, ready chan<- error, fn func(contracts.Task)) error {
	switch {
	case strings.HasPrefix(url, "amqp://"), strings.HasPrefix(url, "amqps://"):
		return readAMQPResults(ctx, url, ready, fn)
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		return readStreamResults(ctx, url, ready, fn)
	}
	err := fmt.Errorf("--results: want an amqp:// or redis:// URL, got %q", url)
	ready <- err
	return err
}

func readAMQPResults(ctx context.Context, url string, ready chan<- error, fn func(contracts.Task)) error {
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
		err = ch.QueueBind(q.Name, "#", contracts.ResultsExchange, false, nil)
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

func readStreamResults(ctx context.Context, url string, ready chan<- error, fn func(contracts.Task)) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		ready <- err
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	last := "0-0"
	if xs, err := c.XRevRangeN(ctx, contracts.ResultsExchange, "+", "-", 1).Result(); err != nil {
		ready <- err
		return err
	} else if len(xs) > 0 {
		last = xs[0].ID
	}
	ready <- nil
	for ctx.Err() == nil {
		streams, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{contracts.ResultsExchange, last}, Count: 1000, Block: 200 * time.Millisecond}).Result()
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
