// Package notifier turns terminal task transitions into result CloudEvents.
//
// The ledger appends every terminal transition to its results outbox (a
// Redis stream) in the same script that records it, so a result is never
// lost between "task finished" and "result sent". The notifier consumes the
// outbox with a consumer group, publishes each result to the results
// exchange (routing key <tenant>.<function>.<outcome>) and delivers it over
// HTTP, binary mode, to every subscription whose filter matches. Delivery
// is at least once: a notifier that dies after sending and before
// recording it sends again; receivers dedup on the result event's id
// (<task id>.<outcome>).
//
// # Sinks
//
// A sink never holds an outbox entry. Each subscription has a durable
// queue in Redis (a sorted set of outbox entry ids by due time, with the
// entries' fields beside it, in one hash slot under the outbox stream's
// key); an outbox entry is acknowledged once every matching sink's queue
// has it and its publish was confirmed. Attempts run apart from the outbox
// slots: at most SinkConcurrency per sink and process, each within
// SinkTimeout, behind a circuit breaker per sink (open after
// SinkBreakerFailures consecutive failures, one probe after the cooldown).
// A delivery being attempted stays in its queue, due at the end of a lease
// (SinkTimeout + 5s), so a notifier that dies mid-attempt loses nothing; a
// failed attempt makes it due again after a backoff, holding nothing
// meanwhile. After SinkAttempts attempts it is logged ("giving up on sink
// delivery") and dropped. A sink's queue holds at most SinkBacklog
// deliveries; a result that finds it full is logged and not sent there.
// A slow or dead sink so delays only its own deliveries.
//
// # Reading the outbox
//
// One read loop per process takes outbox entries in batches (XREADGROUP
// COUNT <free slots>), handles every entry of a batch concurrently (so many
// publisher confirms are in flight at once) and acknowledges handled entries
// together (one XACK for many ids, sent in the same round trip as the next
// read, or on its own shortly after when the loop is waiting for entries).
// An entry is acknowledged only after its result publish was confirmed and
// it was queued for its sinks; an entry whose publish or queueing failed
// stays pending and is tried again after a second (a delivery already
// queued is not queued twice, and after a failed publish the entry is not
// queued again, so a sink is not sent it once per publish attempt).
// Entries pending on a notifier whose
// heartbeat stopped are taken over (XPENDING + XCLAIM) every
// streamgroup.ClaimEvery. The reading is streamgroup.Reader's, as for the
// redisstream driver's lanes.
//
// In the ledger's partitioned layout the outbox is one stream per
// partition (ledger.OutboxStreams): every notifier reads every partition's
// stream in the same reads (one XREADGROUP over all of them when it waits
// for entries), Consumers split between them (at least
// minSlotsPerPartition each).
package notifier

import (
	"cmp"
	"context"
	"encoding/json"
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
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/cloudevent"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/streamgroup"
	"github.com/tasklane/tasklane/pkg/telemetry"
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
	// minSlotsPerPartition is the least outbox entries a notifier holds
	// of one partition's stream, however many partitions share Consumers.
	minSlotsPerPartition = 4
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
	// RedisCluster, when set, replaces Redis: the ledger is on this Redis
	// Cluster, and its outbox streams (one per partition) are read one
	// slot per command (streamgroup).
	RedisCluster *redis.ClusterOptions
	// ResultPublisher publishes result events; the topic is the routing
	// key. It must be safe for concurrent use: a batch's results are
	// published at once. Required.
	ResultPublisher message.Publisher
	// ResultsExchange names where ResultPublisher publishes (the results
	// exchange or stream, contracts.ResultsExchangeFor the broker prefix),
	// for traces. Default contracts.ResultsExchange.
	ResultsExchange string
	Subscriptions   []Subscription
	Metrics         *metrics.Metrics
	Logger          *slog.Logger
	// Client delivers to sinks. Default: a client that does not follow
	// redirects (each attempt is bounded by SinkTimeout).
	Client *http.Client
	// Consumers is how many outbox entries the notifier holds at once:
	// results being published and queued for their sinks, or waiting to
	// publish again after a failure. One read takes at most the free part
	// of it, so it is also the largest batch. Default
	// config.NotifierConsumersDefault.
	Consumers int
	// SinkAttempts bounds attempts of one result to one sink; the last
	// failure is logged ("giving up on sink delivery") and counted as
	// dropped. Default config.SinkAttemptsDefault.
	SinkAttempts int
	// SinkBackoff is the first wait between sink attempts, doubled each
	// time up to 5m (a Retry-After answer replaces it). Default
	// SinkBackoffDefault.
	SinkBackoff time.Duration
	// SinkTimeout bounds one attempt. Default config.SinkTimeoutDefault.
	SinkTimeout time.Duration
	// SinkConcurrency bounds the attempts to one sink in flight in this
	// process. Default config.SinkConcurrencyDefault.
	SinkConcurrency int
	// SinkBreakerFailures consecutive failed attempts open a sink's
	// circuit: no attempts for SinkBreakerCooldown (doubling while the
	// probe that follows fails, up to 5m). Defaults
	// SinkBreakerFailuresDefault and SinkBreakerCooldownDefault.
	SinkBreakerFailures int
	SinkBreakerCooldown time.Duration
	// SinkBacklog bounds the deliveries queued for one sink (waiting for a
	// retry or for a free attempt); a result that finds its sink's queue
	// full is not sent to that sink (logged, counted as dropped). Default
	// config.SinkBacklogDefault.
	SinkBacklog int
}

// Notifier consumes the results outbox.
type Notifier struct {
	cfg  Config
	rdb  redis.UniversalClient
	live *streamgroup.Liveness
	// streams are the outbox's streams (one per ledger partition); base
	// names what belongs to the outbox as a whole (ledger.OutboxBase).
	streams []string
	base    string
	// parts names each stream's partition in delivery ids ("" with one
	// stream): entry ids are unique within a stream only.
	parts  map[string]string
	reader *streamgroup.Reader
	// qdb holds the sinks' queues (the ledger's client).
	qdb   redis.UniversalClient
	sinks []*sinkQueue
	// dctx bounds sink attempts: cancelled when Run stops, after a grace.
	dctx       context.Context
	dcancel    context.CancelFunc
	deliveries sync.WaitGroup
	// queued holds the outbox entries, handled again after a failed
	// publish, that their sinks' queues already have: queueing them again
	// would send a delivery made meanwhile once more. At most Consumers.
	queuedMu sync.Mutex
	queued   map[string]struct{}

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
	if cfg.Redis == nil && cfg.RedisCluster == nil {
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
	cfg.ResultsExchange = cmp.Or(cfg.ResultsExchange, contracts.ResultsExchange)
	cfg.Consumers = cmp.Or(max(cfg.Consumers, 0), config.NotifierConsumersDefault)
	cfg.SinkAttempts = cmp.Or(max(cfg.SinkAttempts, 0), config.SinkAttemptsDefault)
	cfg.SinkBackoff = cmp.Or(max(cfg.SinkBackoff, 0), SinkBackoffDefault)
	cfg.SinkTimeout = cmp.Or(max(cfg.SinkTimeout, 0), config.SinkTimeoutDefault.Std())
	cfg.SinkConcurrency = cmp.Or(max(cfg.SinkConcurrency, 0), config.SinkConcurrencyDefault)
	cfg.SinkBreakerFailures = cmp.Or(max(cfg.SinkBreakerFailures, 0), SinkBreakerFailuresDefault)
	cfg.SinkBreakerCooldown = cmp.Or(max(cfg.SinkBreakerCooldown, 0), SinkBreakerCooldownDefault)
	cfg.SinkBacklog = cmp.Or(max(cfg.SinkBacklog, 0), config.SinkBacklogDefault)
	if cfg.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.SinkConcurrency
		cfg.Client = &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	names := map[string]bool{}
	for i, s := range cfg.Subscriptions {
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("configuring the notifier: subscription %d has no name", i)
		case names[s.Name]:
			return nil, fmt.Errorf("configuring the notifier: subscription name %q used twice", s.Name)
		case !validSink(s.Sink):
			// The URL is not repeated: it may hold a token.
			return nil, fmt.Errorf("configuring the notifier: subscription %q: sink is not an http:// or https:// URL with a host", s.Name)
		}
		names[s.Name] = true
	}
	// The read loop, the ack flusher and the heartbeat each use one
	// connection at a time.
	rdb := streamgroup.NewClient(cfg.Redis, cfg.RedisCluster, 8)
	streams, base := cfg.Ledger.OutboxStreams(), cfg.Ledger.OutboxBase()
	parts := map[string]string{}
	if len(streams) > 1 {
		for k, s := range streams {
			parts[s] = fmt.Sprintf("p%d:", k)
		}
	}
	// A dead notifier's unacknowledged results are taken over within
	// seconds (heartbeats), a live one's never: however long its sinks
	// take, it holds the entry and acknowledges it when done.
	live := streamgroup.NewLiveness(rdb, base+":"+ConsumerGroup, streamgroup.ConsumerName(), ownEntriesAfter)
	n := &Notifier{
		cfg: cfg, rdb: rdb, live: live, streams: streams, base: base, parts: parts, qdb: cfg.Ledger.Redis(),
		stop: make(chan struct{}), running: make(chan struct{}), stopped: make(chan struct{}),
		queued: map[string]struct{}{},
	}
	n.dctx, n.dcancel = context.WithCancel(context.Background())
	for _, s := range cfg.Subscriptions {
		n.sinks = append(n.sinks, newSinkQueue(n, s))
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

	for _, stream := range n.streams {
		if err := streamgroup.EnsureGroup(ctx, n.rdb, stream, ConsumerGroup); err != nil {
			return fmt.Errorf("creating consumer group %s of %s: %w", ConsumerGroup, stream, err)
		}
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
	var pollers sync.WaitGroup
	pctx, stopPolling := context.WithCancel(context.Background())
	for _, q := range n.sinks {
		pollers.Go(func() { q.run(pctx) })
	}
	for _, stream := range n.streams {
		n.reader.AddSlots(stream, n.slotsPerStream())
	}
	n.reader.Run(ctx)
	// The outbox is drained; sink attempts in flight get a grace, then are
	// cancelled (and due again at once in their queues).
	stopPolling()
	pollers.Wait()
	done := make(chan struct{})
	go func() { n.deliveries.Wait(); close(done) }()
	grace := time.NewTimer(min(sinkDrainGrace, n.cfg.SinkTimeout))
	select {
	case <-done:
	case <-grace.C:
	}
	grace.Stop()
	n.dcancel()
	<-done
	return nil
}

// slotsPerStream is how many entries of each outbox stream the notifier
// holds at most: Consumers split between the streams, at least
// minSlotsPerPartition (and at most Consumers) each.
func (n *Notifier) slotsPerStream() int {
	k := len(n.streams)
	return min(max((n.cfg.Consumers+k-1)/k, minSlotsPerPartition), n.cfg.Consumers)
}

// deliveryID names an outbox entry of stream in the sinks' queues and the
// queued set: the entry id, and the partition in front of it when there
// are several streams.
func (n *Notifier) deliveryID(stream, id string) string { return n.parts[stream] + id }

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
		n.dcancel()
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

// handle queues the result of an outbox entry for its matching sinks and
// publishes its result event. Sinks never hold the entry: each matching
// sink's durable queue gets the delivery (one round trip for all of them),
// and the sink's first attempt starts at once when its circuit is closed
// and it has a free attempt, else its queue's loop starts it later. The
// entry is done (to be acknowledged) once every matching sink has it
// queued and the publish was confirmed; if either failed it is handled
// again (a delivery already queued is not queued twice; once queued, the
// entry is not queued again while only its publish fails). Entries that
// cannot become an event are logged and done.
func (n *Notifier) handle(ctx context.Context, stream string, m redis.XMessage) streamgroup.Outcome {
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
	tp, _ := m.Values[ledger.FieldTraceParent].(string)
	setTraceParent(ev, tp)
	pub := ev
	var span trace.Span
	if telemetry.Enabled() && tp != "" {
		ctx, span = startResultSpan(ctx, n.cfg.ResultsExchange, t, tp)
		defer span.End()
		pub = withSpanContext(ctx, ev)
	}
	out, err := cloudevent.ToMessage(pub.ID(), pub)
	if err != nil {
		n.cfg.Logger.ErrorContext(ctx, "building result message", "task", t.ID, "error", err)
		return streamgroup.Done
	}
	id := n.deliveryID(stream, m.ID)
	n.queuedMu.Lock()
	_, queued := n.queued[id]
	n.queuedMu.Unlock()
	if !queued {
		if err := n.queueForSinks(ctx, id, m, t, ev); err != nil {
			n.cfg.Logger.WarnContext(ctx, "queueing result for sinks, will try again", "task", t.ID, "retry_in", retryWait, "error", err)
			return streamgroup.Retry
		}
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	out.SetContext(pctx)
	err = n.cfg.ResultPublisher.Publish(RoutingKey(t), out)
	cancel()
	n.queuedMu.Lock()
	if err != nil {
		n.queued[id] = struct{}{}
	} else {
		delete(n.queued, id)
	}
	n.queuedMu.Unlock()
	if err != nil {
		if span != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		n.cfg.Metrics.ResultsPublished.WithLabelValues("error").Inc()
		n.cfg.Logger.WarnContext(ctx, "publishing result event, will try again", "task", t.ID, "retry_in", retryWait, "error", err)
		return streamgroup.Retry
	}
	// Counted, not written to the task's log: an append per task was one
	// more script call and 100-odd bytes per task for the one delivery
	// every task has (the log keeps the sinks' deliveries, which can fail).
	n.cfg.Metrics.ResultsPublished.WithLabelValues("ok").Inc()
	return streamgroup.Done
}

// logDelivery appends a delivered entry (a sink's delivery) to the log of
// the result event's task (best effort: a failure is logged at debug level, the log is not
// the delivery's record).
func (n *Notifier) logDelivery(ev *event.Event, msg string) {
	tenant, _ := ev.Extensions()[contracts.ExtTenantID].(string)
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	err := n.cfg.Ledger.AppendLog(ctx, tenant, ev.Subject(), contracts.LogEntry{Kind: contracts.LogDelivered, Message: msg})
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		n.cfg.Logger.Debug("recording a delivery in the task log", "task", ev.Subject(), "error", err)
	}
}

// queueForSinks puts the result (delivery id, outbox entry m) in the queue
// of every matching sink and starts the first attempts that may start now.
func (n *Notifier) queueForSinks(ctx context.Context, id string, m redis.XMessage, t *contracts.Task, ev *event.Event) error {
	var match []*sinkQueue
	for _, q := range n.sinks {
		if q.sub.Matches(t) {
			match = append(match, q)
		}
	}
	if len(match) == 0 {
		return nil
	}
	fields := make(map[string]string, len(m.Values))
	for k, v := range m.Values {
		if s, ok := v.(string); ok {
			fields[k] = s
		}
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	now := time.Now()
	leased := make([]bool, len(match))
	cmds := make([]*redis.Cmd, len(match))
	qctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	pipe := n.qdb.Pipeline()
	for i, q := range match {
		due, now1 := now, "0"
		if q.br.closed() && q.tryToken() {
			leased[i], due, now1 = true, now.Add(n.cfg.SinkTimeout+leaseMargin), "1"
		}
		cmds[i] = enqueueScript.Eval(qctx, pipe, q.keys(), id, due.UnixMilli(), body, n.cfg.SinkBacklog, now1)
	}
	_, err = pipe.Exec(qctx)
	for i, q := range match {
		r, cerr := cmds[i].Int()
		switch {
		case cerr == nil && r == 1 && leased[i]:
			n.deliveries.Go(func() { q.attempt(job{id: id, attempts: 1, ev: ev}) })
			continue
		case cerr == nil && r == 1:
			q.kick()
		case cerr == nil && r == -1:
			n.cfg.Metrics.SinkDeliveries.WithLabelValues(q.sub.Name, "dropped").Inc()
			n.cfg.Logger.ErrorContext(ctx, "sink queue full, result not sent to this sink", "subscription", q.sub.Name, "event", ev.ID(), "queued", n.cfg.SinkBacklog)
		}
		if leased[i] {
			<-q.tokens
		}
	}
	return err
}
