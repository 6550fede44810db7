// Package bench is the load generator of `tasklane bench`: it submits
// events to a running Tasklane server and reads every task's result back
// from the results feed, or measures the broker itself (RabbitMQ or Redis
// streams, in a tuned or a lanes shape: --raw-broker, --raw-shape) with the
// same load, and reports throughput and latency percentiles, and with
// --count-ops the broker operations per task. It talks
// to a server only over the network (the HTTP API, the broker, Redis), so
// it imports no role and is not part of the production wiring.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/pkg/client"
)

// benchFlags configure `tasklane bench`.
type benchFlags struct {
	server      string
	apiKey      string
	typ         string
	count       int
	rate        float64
	concurrency int
	batch       int
	mode        string
	payload     int
	delay       int
	tenants     int
	keyTemplate string
	results     string
	// brokerPrefix is the server's broker.prefix ("": the default).
	brokerPrefix string
	timeout      time.Duration
	json         bool
	// submitOnly measures acceptance alone: no results feed, no waiting
	// for tasks to finish (raw broker: no consumers).
	submitOnly bool

	// rawBroker, when set, measures RabbitMQ (or Redis streams) directly
	// instead of Tasklane; compareRaw measures both, the raw broker first.
	rawBroker  string
	compareRaw string
	raw        rawFlags
	ops        opsFlags
}

// rawFlags shape the --raw-broker run: --raw-shape gives the defaults of
// the others (see rawShapes).
type rawFlags struct {
	shape     string
	queues    int
	consumers int
	prefetch  int
	channels  int
	// window is the most unconfirmed messages per publishing channel
	// (Redis: entries per XADD pipeline); 0: unbounded, each submitter's
	// batch.
	window    int
	queueType string
}

// Report is what `tasklane bench --json` prints for one target.
type Report struct {
	// Target is "tasklane" or "raw_broker".
	Target      string  `json:"target"`
	Events      int     `json:"events"`
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Tenants     int     `json:"tenants,omitempty"`
	DelaySecs   int     `json:"delay_seconds,omitempty"`
	PayloadSize int     `json:"payload_bytes"`
	Accepted    int     `json:"accepted"`
	Completed   int     `json:"completed"`
	// SubmitOnly: only acceptance was measured (--submit-only).
	SubmitOnly bool `json:"submit_only,omitempty"`
	// Duplicates counts deliveries seen more than once (raw broker only).
	Duplicates int `json:"duplicates,omitempty"`
	// RawShape is the raw broker's --raw-shape (tuned or lanes) and
	// RawShapeDetail its settings in words (raw broker only).
	RawShape       string `json:"raw_shape,omitempty"`
	RawShapeDetail string `json:"raw_shape_detail,omitempty"`
	// RawQueues names the raw broker's queues or streams (deleted at the end).
	RawQueues      []string       `json:"raw_queues,omitempty"`
	SubmitSeconds  float64        `json:"submit_seconds"`
	SubmitRate     float64        `json:"submit_rate"`
	CompletionRate float64        `json:"completion_rate"`
	SubmitToStart  Percentiles    `json:"submit_to_start_ms"`
	SubmitToFinish Percentiles    `json:"submit_to_finish_ms"`
	Errors         map[string]int `json:"errors"`
	States         map[string]int `json:"states,omitempty"`
	// Ops counts broker operations during the run (--count-ops).
	Ops *OpsCount `json:"ops,omitempty"`
}

// Comparison is what `tasklane bench --compare-raw URL --json` prints.
type Comparison struct {
	RawBroker *Report `json:"raw_broker"`
	Tasklane  *Report `json:"tasklane"`
	// RawShape names the raw broker shape the ratios divide by (tuned or
	// lanes).
	RawShape string `json:"raw_shape"`
	// CompletionRatio is Tasklane's end-to-end rate over the raw broker's.
	CompletionRatio float64 `json:"completion_ratio"`
	// SubmitRatio is Tasklane's submit rate over the raw broker's publish rate.
	SubmitRatio float64 `json:"submit_ratio"`
}

// Percentiles of a latency, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// NewCommand builds `tasklane bench`: it writes its report to stdout and
// a progress line to stderr once a second.
func NewCommand(stdout, stderr io.Writer) *cobra.Command {
	cmd, _ := benchCommand(stdout, stderr)
	return cmd
}

// benchCommand builds `tasklane bench` and returns the flags it fills.
func benchCommand(stdout, stderr io.Writer) (*cobra.Command, *benchFlags) {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench [--type TYPE] [-n N] [--rate R] [--results URL] [--raw-broker URL | --compare-raw URL] [--raw-shape tuned|lanes] [--count-ops]",
		Short: "Load a running server (or the broker itself) and measure throughput and latency",
		Example: `  tasklane bench --type com.example.noop -n 10000 --results amqp://guest:guest@127.0.0.1:5672/
  tasklane bench --type com.example.noop -n 5000 --rate 1000 --batch 50 --submit-only --json
  tasklane bench --raw-broker amqp://guest:guest@127.0.0.1:5672/ -n 20000 --raw-shape lanes
  tasklane bench --raw-broker redis://127.0.0.1:6379/2 -n 200000 --count-ops`,
		Long: `bench submits N events (each must make one task: point --type at a type one
function subscribes to, e.g. a builtin:noop function) and reads every
task's result event from the results feed (--results: the RabbitMQ URL for
the amqp driver, the Redis URL for redisstream). Latencies come from the task
records: submit = when the gateway durably accepted the task, start = when a
dispatcher claimed it, finish = when its outcome was recorded. With --delay
the submit->start figures include the delay.

--tenants N submits as N tenants, round robin by request: tenant i's API key
is --key-template with %d replaced by i (0..N-1), e.g.
--key-template 'bench-key-%d' for a config with tenants whose api_keys are
bench-key-0, bench-key-1, ...

--raw-broker URL measures the broker straight, without Tasklane: RabbitMQ
for an amqp:// URL, Redis streams for a redis:// URL. --raw-shape picks how:

  tuned (default)  the way a competent user would use the broker directly:
                   4 durable queues without priorities, persistent messages,
                   4 confirm-mode channels with up to 256 unconfirmed
                   messages each, 2 consumers per queue on their own
                   channels with prefetch 200, an ack per message as it
                   completes. Redis: 4 streams, XADD pipelined (up to 256
                   per round trip) from 4 publishers, 2 consumers per stream
                   reading XREADGROUP COUNT 200 and acking each read's
                   entries with one XACK.
  lanes            shaped like Tasklane's lanes: 16 priority queues, 16
                   confirm channels, 16 consumers per queue with prefetch 1.
                   Redis: 16 streams, 16 consumers each reading one entry
                   and acking it, one pipeline of XADDs per submit request.

The --raw-* flags override single settings of the shape. With a confirm
window the run has enough submitters to fill every window (channels x
window / batch, at least --concurrency); without one each of --concurrency
submitters keeps its --batch in flight. --rate paces either. submit = the
publish, start = the delivery, finish = the ack. Its queues or streams are
deleted at the end. --compare-raw URL runs the raw broker first and then
Tasklane with the same load and prints Tasklane's rates as a ratio of the
raw broker's, naming the shape it divides by.

--count-ops reads Redis INFO commandstats (--ops-redis) before and after
each run and prints commands per task, in total and the 10 most called; it
also reads publishes, deliveries and acks from the RabbitMQ management API
(--ops-management) when it answers, and says so when it does not. Both are
server-wide: whatever else uses the servers meanwhile is counted too.

A progress line (rates over the last second, in flight, errors) goes to
stderr once a second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			f.applyShape(cmd.Flags().Changed)
			if err := f.validate(); err != nil {
				return err
			}
			if f.compareRaw != "" {
				if f.ops.enabled {
					fmt.Fprintln(stderr, "count-ops: counting each run separately")
				}
				c, err := runComparison(ctx, f, stderr)
				if err != nil {
					return err
				}
				if f.json {
					return writeJSON(stdout, c)
				}
				printComparison(stdout, c)
				return nil
			}
			var r *Report
			var err error
			if f.rawBroker != "" {
				r, err = runRaw(ctx, f, f.rawBroker, stderr)
			} else {
				r, err = runTasklane(ctx, f, stderr)
			}
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(stdout, r)
			}
			printBench(stdout, r)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", envOr("TASKLANE_SERVER", client.ServerDefault), "server URL (env TASKLANE_SERVER)")
	fl.StringVar(&f.apiKey, "key", os.Getenv("TASKLANE_KEY"), "API key (env TASKLANE_KEY)")
	fl.StringVar(&f.typ, "type", "com.example.noop", "event type to submit")
	fl.IntVarP(&f.count, "count", "n", 10000, "events to submit")
	fl.Float64Var(&f.rate, "rate", 0, "events per second (0: as fast as possible)")
	fl.IntVar(&f.concurrency, "concurrency", 32, "parallel submitters (HTTP connections; raw broker: publishers)")
	fl.IntVar(&f.batch, "batch", 1, "events per request (more than 1 uses batch mode)")
	fl.StringVar(&f.mode, "mode", "binary", "content mode for single events: binary or structured")
	fl.IntVar(&f.payload, "payload", 64, "bytes of event data")
	fl.IntVar(&f.delay, "delay", 0, "delay attribute in seconds (the tasks wait in the delay set first)")
	fl.IntVar(&f.tenants, "tenants", 1, "submit as this many tenants (needs --key-template when more than 1)")
	fl.StringVar(&f.keyTemplate, "key-template", "", "API key of tenant i: this with %d replaced by i (e.g. 'bench-key-%d')")
	fl.StringVar(&f.results, "results", "amqp://guest:guest@127.0.0.1:5672/", "results feed: amqp:// URL or redis:// URL")
	fl.StringVar(&f.brokerPrefix, "broker-prefix", "", "the server's broker.prefix: the results feed is <prefix>.results (default tasklane)")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "give up waiting for results after this")
	fl.BoolVar(&f.json, "json", false, "print the report as JSON")
	fl.BoolVar(&f.submitOnly, "submit-only", false, "measure durable acceptance only: do not wait for tasks to run (raw broker: no consumers)")
	fl.StringVar(&f.rawBroker, "raw-broker", "", "measure the broker at this amqp:// (RabbitMQ) or redis:// (Redis streams) URL directly instead of Tasklane")
	fl.StringVar(&f.compareRaw, "compare-raw", "", "measure the broker at this amqp:// or redis:// URL, then Tasklane, and print the ratio")
	fl.StringVar(&f.raw.shape, "raw-shape", shapeTuned, "raw broker: tuned (confirm window, prefetch 200, a few consumers per queue) or lanes (Tasklane's lanes: prefetch 1, 16 consumers per queue); sets the defaults of the --raw-* flags below")
	fl.IntVar(&f.raw.queues, "raw-queues", 0, "raw broker: queues or streams (default: tuned 4, lanes 16 = Tasklane's shared lanes)")
	fl.IntVar(&f.raw.consumers, "raw-consumers", 0, "raw broker: consumers per queue, each on its own channel (default: tuned 2, lanes 16 = consumers_per_lane)")
	fl.IntVar(&f.raw.prefetch, "raw-prefetch", 0, "raw broker: prefetch per consumer; Redis: XREADGROUP COUNT (default: tuned 200, lanes 1)")
	fl.IntVar(&f.raw.channels, "raw-channels", 0, "raw broker: publishing channels; Redis: publishers (default: tuned 4, lanes 16 = broker.publish_channels)")
	fl.IntVar(&f.raw.window, "raw-confirm-window", 0, "raw broker: most unconfirmed messages per publishing channel, 0 = each submitter's --batch; Redis: most XADDs per pipeline (default: tuned 256, lanes 0)")
	fl.StringVar(&f.raw.queueType, "raw-queue-type", "", "raw broker: classic (with priorities, like Tasklane's lanes), plain (classic, no priorities) or quorum (default: tuned plain, lanes classic)")
	fl.BoolVar(&f.ops.enabled, "count-ops", false, "count broker operations during each run: Redis INFO commandstats, RabbitMQ management API message stats")
	fl.StringVar(&f.ops.redis, "ops-redis", "", "--count-ops: the Redis to read INFO commandstats from (default: the redis:// URL of --raw-broker/--compare-raw or --results, else redis://127.0.0.1:6379/)")
	fl.StringVar(&f.ops.management, "ops-management", "http://guest:guest@127.0.0.1:15672", "--count-ops: RabbitMQ management API (skipped with a note when unreachable)")
	return cmd, f
}

func (f *benchFlags) validate() error {
	var errs []error
	if f.count < 1 || f.concurrency < 1 || f.batch < 1 {
		errs = append(errs, errors.New("--count, --concurrency and --batch must be at least 1"))
	}
	if f.mode != "binary" && f.mode != "structured" {
		errs = append(errs, fmt.Errorf("--mode: want binary or structured, got %q", f.mode))
	}
	if f.delay < 0 {
		errs = append(errs, errors.New("--delay must not be negative"))
	}
	if f.tenants < 1 {
		errs = append(errs, errors.New("--tenants must be at least 1"))
	}
	if f.tenants > 1 && !strings.Contains(f.keyTemplate, "%d") {
		errs = append(errs, errors.New("--tenants above 1 needs --key-template with a %d (tenant i's key)"))
	}
	if f.rawBroker != "" && f.compareRaw != "" {
		errs = append(errs, errors.New("--raw-broker and --compare-raw: use one"))
	}
	for _, u := range []string{f.rawBroker, f.compareRaw} {
		if u != "" && rawDriver(u) == "" {
			errs = append(errs, fmt.Errorf("raw broker: want an amqp:// or redis:// URL, got %q", u))
		}
	}
	if f.rawBroker != "" || f.compareRaw != "" {
		if _, ok := rawShapes[f.raw.shape]; !ok {
			errs = append(errs, fmt.Errorf("--raw-shape: want tuned or lanes, got %q", f.raw.shape))
		}
		if f.raw.queues < 1 || f.raw.consumers < 1 || f.raw.prefetch < 0 || f.raw.channels < 1 || f.raw.window < 0 {
			errs = append(errs, errors.New("--raw-queues, --raw-consumers and --raw-channels must be at least 1, --raw-prefetch and --raw-confirm-window at least 0"))
		}
		if !slices.Contains([]string{"classic", "plain", "quorum"}, f.raw.queueType) {
			errs = append(errs, fmt.Errorf("--raw-queue-type: want classic, plain or quorum, got %q", f.raw.queueType))
		}
	}
	return errors.Join(errs...)
}

// key returns the API key of tenant i.
func (f *benchFlags) key(i int) string {
	if f.keyTemplate == "" {
		return f.apiKey
	}
	return fmt.Sprintf(f.keyTemplate, i)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// benchResult is one task's (or raw message's) times.
type benchResult struct {
	created, started, finished time.Time
	state                      string
}

// loadTarget is what the load loop drives: Tasklane's HTTP API or RabbitMQ.
type loadTarget interface {
	// submit sends events [lo,hi) and returns how many were durably
	// accepted and, when some were not, an error kind ("http_503", ...).
	submit(ctx context.Context, lo, hi int) (int, string)
	// completed counts the events seen finished so far.
	completed() int
}

// loadStats are the submit loop's counters.
type loadStats struct {
	submitted, accepted, inRequests atomic.Int64
	mu                              sync.Mutex
	errs                            map[string]int
}

func (s *loadStats) fail(kind string, n int) {
	s.mu.Lock()
	s.errs[kind] += n
	s.mu.Unlock()
}

func (s *loadStats) errors() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.errs)
}

func (s *loadStats) errorCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.errs {
		n += v
	}
	return n
}

// runLoad submits f.count events to t, at f.rate or as fast as f.concurrency
// submitters go, then waits until every accepted event completed, ctx ends or
// failed says the target broke. It prints progress to w once a second.
func runLoad(ctx context.Context, f *benchFlags, t loadTarget, w io.Writer, failed <-chan error) (*loadStats, time.Duration, error) {
	st := &loadStats{errs: map[string]int{}}
	requests := (f.count + f.batch - 1) / f.batch
	work := make(chan int)
	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		benchProgress(w, start, st, t.completed, stopProgress)
	}()
	defer func() { close(stopProgress); <-progressDone }()

	var wg sync.WaitGroup
	for range f.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for req := range work {
				lo, hi := req*f.batch, min((req+1)*f.batch, f.count)
				st.inRequests.Add(int64(hi - lo))
				n, kind := t.submit(ctx, lo, hi)
				st.inRequests.Add(-int64(hi - lo))
				st.submitted.Add(int64(hi - lo))
				st.accepted.Add(int64(n))
				if kind != "" {
					st.fail(kind, hi-lo-n)
				}
			}
		}()
	}
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
	if f.submitOnly {
		return st, submitDur, nil
	}

	for ctx.Err() == nil && int64(t.completed()) < st.accepted.Load() {
		select {
		case <-ctx.Done():
		case err := <-failed:
			if err != nil {
				return nil, 0, err
			}
			failed = nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	if missing := int(st.accepted.Load()) - t.completed(); missing > 0 {
		st.fail("no_result_before_timeout", missing)
	}
	return st, submitDur, nil
}

// benchProgress prints one line a second: rates over the last second, events
// in flight (submitted to the target but not yet answered, plus accepted but
// not yet finished) and errors so far.
func benchProgress(w io.Writer, start time.Time, st *loadStats, completed func() int, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastSub, lastDone int64
	last := start
	for {
		select {
		case <-stop:
			fmt.Fprintln(w)
			return
		case now := <-t.C:
			sub, done := st.submitted.Load(), int64(completed())
			dt := now.Sub(last).Seconds()
			fmt.Fprintf(w, "\r%4.0fs  submitted %d (%.0f/s)  completed %d (%.0f/s)  in flight %d  errors %d   ",
				now.Sub(start).Seconds(), sub, float64(sub-lastSub)/dt, done, float64(done-lastDone)/dt,
				st.inRequests.Load()+st.accepted.Load()-done, st.errorCount())
			lastSub, lastDone, last = sub, done, now
		}
	}
}

func benchReport(target string, f *benchFlags, st *loadStats, submitDur time.Duration, results []benchResult) *Report {
	accepted := int(st.accepted.Load())
	r := &Report{
		Target: target, Events: f.count, Batch: f.batch, Concurrency: f.concurrency, Rate: f.rate,
		Tenants: f.tenants, DelaySecs: f.delay, PayloadSize: f.payload, SubmitOnly: f.submitOnly,
		Accepted: accepted, Completed: len(results), Errors: st.errors(),
		SubmitSeconds: submitDur.Seconds(), SubmitRate: float64(accepted) / submitDur.Seconds(),
	}
	var toStart, toFinish []float64
	var first, last time.Time
	for _, res := range results {
		if res.state != "" {
			if r.States == nil {
				r.States = map[string]int{}
			}
			r.States[res.state]++
		}
		if first.IsZero() || res.created.Before(first) {
			first = res.created
		}
		if res.finished.After(last) {
			last = res.finished
		}
		if !res.started.IsZero() {
			toStart = append(toStart, ms(res.started.Sub(res.created)))
		}
		toFinish = append(toFinish, ms(res.finished.Sub(res.created)))
	}
	if span := last.Sub(first).Seconds(); span > 0 {
		r.CompletionRate = float64(len(results)) / span
	}
	r.SubmitToStart = percentiles(toStart)
	r.SubmitToFinish = percentiles(toFinish)
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: v[len(v)-1]}
}

func printBench(w io.Writer, r *Report) {
	start, finish := "submit->start ms", "submit->finish ms"
	if r.Target == benchTargetRaw {
		start, finish = "publish->deliver ms", "publish->ack ms"
	}
	fmt.Fprintf(w, "target             %s\n", r.Target)
	if r.RawShapeDetail != "" {
		fmt.Fprintf(w, "raw shape          %s\n", r.RawShapeDetail)
	}
	fmt.Fprintf(w, "events             %d (accepted %d, completed %d)\n", r.Events, r.Accepted, r.Completed)
	fmt.Fprintf(w, "submit rate        %.0f events/s over %.2fs\n", r.SubmitRate, r.SubmitSeconds)
	if r.SubmitOnly {
		fmt.Fprintf(w, "completion rate    not measured (--submit-only)\n")
	} else {
		fmt.Fprintf(w, "completion rate    %.0f /s (first submit to last finish)\n", r.CompletionRate)
		fmt.Fprintf(w, "%-20s p50       p90       p99       max\n", "")
		fmt.Fprintf(w, "%-20s %-9.2f %-9.2f %-9.2f %.2f\n", start, r.SubmitToStart.P50, r.SubmitToStart.P90, r.SubmitToStart.P99, r.SubmitToStart.Max)
		fmt.Fprintf(w, "%-20s %-9.2f %-9.2f %-9.2f %.2f\n", finish, r.SubmitToFinish.P50, r.SubmitToFinish.P90, r.SubmitToFinish.P99, r.SubmitToFinish.Max)
	}
	if r.DelaySecs > 0 {
		fmt.Fprintf(w, "                   (includes the %ds delay)\n", r.DelaySecs)
	}
	if len(r.States) > 0 {
		fmt.Fprintf(w, "states             %v\n", r.States)
	}
	if r.Duplicates > 0 {
		fmt.Fprintf(w, "duplicates         %d\n", r.Duplicates)
	}
	if len(r.Errors) == 0 {
		fmt.Fprintf(w, "errors             none\n")
	} else {
		fmt.Fprintf(w, "errors\n")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(w, "  %-17s%d\n", k, r.Errors[k])
		}
	}
	if r.Ops != nil {
		printOps(w, r.Ops)
	}
}

func runComparison(ctx context.Context, f *benchFlags, progress io.Writer) (*Comparison, error) {
	fmt.Fprintln(progress, "raw broker:")
	raw, err := runRaw(ctx, f, f.compareRaw, progress)
	if err != nil {
		return nil, fmt.Errorf("raw broker run: %w", err)
	}
	fmt.Fprintln(progress, "tasklane:")
	tl, err := runTasklane(ctx, f, progress)
	if err != nil {
		return nil, fmt.Errorf("tasklane run: %w", err)
	}
	c := &Comparison{RawBroker: raw, Tasklane: tl, RawShape: raw.RawShape}
	if raw.CompletionRate > 0 {
		c.CompletionRatio = tl.CompletionRate / raw.CompletionRate
	}
	if raw.SubmitRate > 0 {
		c.SubmitRatio = tl.SubmitRate / raw.SubmitRate
	}
	return c, nil
}

func printComparison(w io.Writer, c *Comparison) {
	printBench(w, c.RawBroker)
	fmt.Fprintln(w)
	printBench(w, c.Tasklane)
	fmt.Fprintln(w)
	label := fmt.Sprintf("tasklane / raw %s shape", c.RawShape)
	if c.Tasklane.SubmitOnly {
		fmt.Fprintf(w, "%s: submit %.2fx\n", label, c.SubmitRatio)
		return
	}
	fmt.Fprintf(w, "%s: completion %.2fx, submit %.2fx\n", label, c.CompletionRatio, c.SubmitRatio)
}
