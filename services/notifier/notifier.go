// Package notifier turns terminal task transitions into result CloudEvents.
//
// The ledger appends every terminal transition to its results outbox (a
// Redis stream) in the same script that records it, so a result is never
// lost between "task finished" and "result sent". The notifier consumes the
// outbox with a consumer group, publishes each result to the results
// exchange (routing key <tenant>.<function>.<outcome>) and delivers it over
// HTTP, binary mode, to every subscription whose filter matches, with
// bounded retries. Delivery is at least once: a notifier that dies after
// sending and before acknowledging sends again; receivers dedup on the
// result event's id (<task id>.<outcome>).
//
// # Reading the outbox
//
// One read loop per process takes outbox entries in batches (XREADGROUP
// COUNT <free slots>), handles every entry of a batch concurrently (so many
// publisher confirms are in flight at once) and acknowledges handled entries
// together (one XACK for many ids, sent in the same round trip as the next
// read, or on its own shortly after when the loop is waiting for entries).
// An entry is acknowledged only after its result publish was confirmed and
// its sinks were attempted; an entry whose publish failed stays pending and
// is tried again after a second. Entries pending on a notifier whose
// heartbeat stopped are taken over (XPENDING + XCLAIM) every
// streamgroup.ClaimEvery. The reading is streamgroup.Reader's, as for the
// redisstream driver's lanes.
package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/cloudevent"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/streamgroup"
)

const (
	// ownEntriesAfter is how long an outbox entry may stay pending on its
	// own live notifier, without that notifier holding it, before the
	// notifier takes it again (an entry whose XREADGROUP reply was lost).
	ownEntriesAfter = 30 * time.Second
	// readLinger is the pause after a read that found entries, so that the
	// next read finds several: it adds at most this much to a result's
	// latency and bounds reads at a few hundred a second.
	readLinger = 5 * time.Millisecond
	// retryWait is the wait before publishing again after a failed
	// publish.
	retryWait = time.Second
	// publishTimeout bounds one result publish.
	publishTimeout = 10 * time.Second
)

// ConsumerGroup is the outbox consumer group of notifiers.
const ConsumerGroup = "tasklane-notifiers"

// Subscription is one configured result sink.
type Subscription struct {
	Name string
	Sink string
	// Types, Tenants and Functions filter results; empty matches all.
	Types, Tenants, Functions []string
}

// Matches reports whether the subscription wants this result.
func (s Subscription) Matches(t *contracts.Task) bool {
	return matchAny(s.Types, t.State.ResultType()) && matchAny(s.Tenants, t.Tenant) && matchAny(s.Functions, t.Function)
}

func matchAny(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }

// Config configures a Notifier.
type Config struct {
	// Ledger owns the results outbox. Required.
	Ledger *ledger.Ledger
	// Redis says where the ledger is. The notifier opens its own client for
	// consuming the outbox and closes it on Close. Required.
	Redis *redis.Options
	// ResultPublisher publishes result events; the topic is the routing
	// key. It must be safe for concurrent use: a batch's results are
	// published at once. Required.
	ResultPublisher message.Publisher
	Subscriptions   []Subscription
	Metrics         *metrics.Metrics
	Logger          *slog.Logger
	// Client delivers to sinks. Default: a client that does not follow
	// redirects, 10s timeout.
	Client *http.Client
	// Consumers is how many outbox entries the notifier holds at once:
	// results being published, being delivered to sinks, or waiting to
	// publish again after a failure. One read takes at most the free part
	// of it, so it is also the largest batch. Default 8.
	Consumers int
	// SinkAttempts bounds deliveries of one result to one sink. Default 6.
	SinkAttempts int
	// SinkBackoff is the first wait between sink attempts, doubled each
	// time. Default 200ms.
	SinkBackoff time.Duration
}

// Notifier consumes the results outbox.
type Notifier struct {
	cfg    Config
	rdb    *redis.Client
	live   *streamgroup.Liveness
	stream string
	reader *streamgroup.Reader

	mu      sync.Mutex
	started bool
	closed  bool
	// stop is closed by Close; running once the group exists and the read
	// loop starts; stopped when Run returns.
	stop, running, stopped chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// New builds a notifier; Run starts consuming.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	if cfg.Ledger == nil {
		errs = append(errs, errors.New("missing Ledger"))
	}
	if cfg.Redis == nil {
		errs = append(errs, errors.New("missing Redis"))
	}
	if cfg.ResultPublisher == nil {
		errs = append(errs, errors.New("missing ResultPublisher"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configuring the notifier: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "notifier")
	if cfg.Consumers <= 0 {
		cfg.Consumers = 8
	}
	if cfg.SinkAttempts <= 0 {
		cfg.SinkAttempts = 6
	}
	if cfg.SinkBackoff <= 0 {
		cfg.SinkBackoff = 200 * time.Millisecond
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	opt := streamgroup.ClientOptions(*cfg.Redis)
	// The read loop, the ack flusher and the heartbeat each use one
	// connection at a time.
	opt.PoolSize = max(opt.PoolSize, 8)
	rdb := redis.NewClient(opt)
	stream := cfg.Ledger.OutboxStream()
	// A dead notifier's unacknowledged results are taken over within
	// seconds (heartbeats), a live one's never: however long its sinks
	// take, it holds the entry and acknowledges it when done.
	live := streamgroup.NewLiveness(rdb, stream+":"+ConsumerGroup, streamgroup.ConsumerName(), ownEntriesAfter)
	n := &Notifier{
		cfg: cfg, rdb: rdb, live: live, stream: stream,
		stop: make(chan struct{}), running: make(chan struct{}), stopped: make(chan struct{}),
	}
	var err error
	n.reader, err = streamgroup.NewReader(streamgroup.Config{
		Client: rdb, Group: ConsumerGroup, Live: live, Handle: n.handle,
		What: "results outbox", Logger: cfg.Logger, ReadLinger: readLinger, RetryWait: retryWait,
	})
	if err != nil {
		live.Close()
		_ = rdb.Close()
		return nil, err
	}
	return n, nil
}

// Run creates the outbox consumer group if it is missing (from the
// stream's first entry, so nothing written before the first notifier
// started is skipped) and consumes until ctx ends or Close is called. It
// then drains: entries being handled finish (within closeTimeout) and are
// acknowledged; the rest stay pending for whoever runs next.
func (n *Notifier) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.closed || n.started {
		n.mu.Unlock()
		return errors.New("running the notifier: already running or closed")
	}
	n.started = true
	n.mu.Unlock()
	defer close(n.stopped)

	if err := streamgroup.EnsureGroup(ctx, n.rdb, n.stream, ConsumerGroup); err != nil {
		return fmt.Errorf("creating consumer group %s of %s: %w", ConsumerGroup, n.stream, err)
	}
	close(n.running)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	n.reader.AddSlots(n.stream, n.cfg.Consumers)
	n.reader.Run(ctx)
	return nil
}

// Running is closed once the notifier consumes.
func (n *Notifier) Running() <-chan struct{} { return n.running }

// Close stops consuming, waits for Run to drain, and closes the Redis
// client. Safe to call more than once.
func (n *Notifier) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		started := n.started
		n.mu.Unlock()
		close(n.stop)
		if started {
			<-n.stopped
		}
		// After the last XACK: entries still pending here may be taken
		// over as soon as the heartbeat is gone.
		n.live.Close()
		n.closeErr = n.rdb.Close()
	})
	return n.closeErr
}

// ResultEvent builds the result CloudEvent of a terminal task record.
func ResultEvent(t *contracts.Task) (*event.Event, error) {
	e := event.New()
	e.SetID(ResultID(t))
	e.SetType(t.State.ResultType())
	e.SetSource(contracts.ResultSourcePrefix + t.Function)
	e.SetSubject(t.ID)
	if t.FinishedAt != nil {
		e.SetTime(*t.FinishedAt)
	}
	e.SetExtension(contracts.ExtTenantID, t.Tenant)
	if err := e.SetData(event.ApplicationJSON, t); err != nil {
		return nil, fmt.Errorf("encoding result of task %s: %w", t.ID, err)
	}
	return &e, nil
}

// ResultID is the id of a task's result event: "<task id>.<outcome>", and
// ".r<n>" after the n-th redrive, so that receivers deduplicating on it
// never drop the outcome of a redriven task.
func ResultID(t *contracts.Task) string {
	id := t.ID + "." + string(t.State)
	if t.Redrives > 0 {
		id += fmt.Sprintf(".r%d", t.Redrives)
	}
	return id
}

// RoutingKey is the results-exchange routing key of a task's result.
func RoutingKey(t *contracts.Task) string {
	return t.Tenant + "." + t.Function + "." + string(t.State)
}

// handle publishes the result event of an outbox entry and delivers it to
// the matching sinks. It is done with the entry (to be acknowledged) unless
// the publish failed (the entry is tried again) or ctx ended before the
// sinks were attempted (it stays pending). Entries that cannot become an
// event are logged and done.
func (n *Notifier) handle(ctx context.Context, _ string, m redis.XMessage) streamgroup.Outcome {
	if len(m.Values) == 0 {
		n.cfg.Logger.ErrorContext(ctx, "unreadable outbox entry dropped", "entry", m.ID, "reason", "no fields")
		return streamgroup.Done
	}
	task := ledger.RecordFromValues(m.Values)
	t := &task
	if t.ID == "" || !t.State.Terminal() {
		n.cfg.Logger.ErrorContext(ctx, "unreadable outbox entry dropped", "entry", m.ID, "reason", "no terminal task", "fields", m.Values)
		return streamgroup.Done
	}
	ev, err := ResultEvent(t)
	if err != nil {
		n.cfg.Logger.ErrorContext(ctx, "building result event", "task", t.ID, "error", err)
		return streamgroup.Done
	}
	out, err := cloudevent.ToMessage(ev.ID(), ev)
	if err != nil {
		n.cfg.Logger.ErrorContext(ctx, "building result message", "task", t.ID, "error", err)
		return streamgroup.Done
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	out.SetContext(pctx)
	err = n.cfg.ResultPublisher.Publish(RoutingKey(t), out)
	cancel()
	if err != nil {
		n.cfg.Metrics.ResultsPublished.WithLabelValues("error").Inc()
		n.cfg.Logger.WarnContext(ctx, "publishing result event, will try again", "task", t.ID, "retry_in", retryWait, "error", err)
		return streamgroup.Retry
	}
	n.cfg.Metrics.ResultsPublished.WithLabelValues("ok").Inc()
	var wg sync.WaitGroup
	for _, s := range n.cfg.Subscriptions {
		if s.Matches(t) {
			wg.Go(func() { n.deliver(ctx, s, ev) })
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return streamgroup.Leave
	}
	return streamgroup.Done
}
